-- The worker's tables: one job per (event, flow), the attempt history, per-key leases,
-- audit notes, reconciliation cursors and the workflows the bridge started.

-- One flow's work for one event. Jobs of one (flow, object_key) run together under one lease.
CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT    NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    flow             TEXT    NOT NULL,
    object_key       TEXT    NOT NULL,
    state            TEXT    NOT NULL,                 -- pending | running | done | dead | ignored
    attempts         INTEGER NOT NULL DEFAULT 0,       -- over the job's whole life
    attempts_base    INTEGER NOT NULL DEFAULT 0,       -- `attempts` when the retry budget restarted
    age_from         INTEGER NOT NULL,                 -- when the retry budget started (unix ms)
    next_attempt_at  INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    UNIQUE (event_id, flow)
);
CREATE INDEX jobs_due ON jobs (state, next_attempt_at);
CREATE INDEX jobs_key ON jobs (flow, object_key, state);
CREATE INDEX jobs_running ON jobs (state, lease_expires_at);

-- Every run of a job: opened at claim, closed with the outcome.
CREATE TABLE attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    owner       TEXT    NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    outcome     TEXT,
    error       TEXT,
    summary     TEXT                                    -- JSON: what the flow changed
);
CREATE INDEX attempts_job ON attempts (job_id);

-- The per-key guard: at most one live lease per (flow, object_key), across processes.
CREATE TABLE leases (
    flow       TEXT    NOT NULL,
    object_key TEXT    NOT NULL,
    owner      TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (flow, object_key)
);

-- Audit notes on events (replays).
CREATE TABLE event_notes (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT    NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    at       INTEGER NOT NULL,
    note     TEXT    NOT NULL
);
CREATE INDEX event_notes_event ON event_notes (event_id);

-- Reconciliation cursors (e.g. the last 4ALLPORTAL modification time seen).
CREATE TABLE cursors (
    name       TEXT    PRIMARY KEY,
    value      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Workflows the bridge started in OpenText, polled until their decision is known.
CREATE TABLE workflows (
    process_id TEXT    PRIMARY KEY,
    flow       TEXT    NOT NULL,
    object_key TEXT    NOT NULL,
    started_at INTEGER NOT NULL,
    state      TEXT    NOT NULL,                        -- running | decided
    decision   TEXT,                                    -- JSON
    updated_at INTEGER NOT NULL
);
CREATE INDEX workflows_state ON workflows (state);

CREATE INDEX events_finished ON events (state, updated_at);
