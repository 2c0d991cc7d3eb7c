-- Backfills: the enumeration of the 4ALLPORTAL objects a flow's trigger matches, one resync
-- event enqueued per object (source_event_id `backfill:<id>:<object_key>`, so a page enqueued
-- twice after a crash is stored once). `cursor` is the last object id enqueued (objects are
-- read in id order): a backfill resumes after it. The lease keeps one process enumerating.
CREATE TABLE backfills (
    id               TEXT    PRIMARY KEY,              -- UUIDv7
    flow             TEXT    NOT NULL,
    condition        TEXT,                             -- the operator's 4APQL `--where`
    query            TEXT,                             -- the full 4APQL query sent
    rate             REAL,                             -- objects enqueued per second; NULL: no limit
    state            TEXT    NOT NULL,                 -- running | enumerated | cancelled | failed
    cursor           TEXT,                             -- last object id enqueued
    found            INTEGER NOT NULL DEFAULT 0,       -- objects enumerated (and enqueued)
    total            INTEGER,                          -- 4ALLPORTAL's count for the query at the start
    error            TEXT,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX backfills_state ON backfills (state, flow);
