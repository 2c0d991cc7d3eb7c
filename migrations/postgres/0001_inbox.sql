-- The event inbox: every verified inbound event, kept with its raw body.
-- (source, source_event_id) is unique so that a duplicate delivery is detected atomically.
CREATE TABLE events (
    id               TEXT    PRIMARY KEY,              -- UUIDv7, time-ordered
    source           TEXT    NOT NULL,                 -- 'allportal' | 'opentext'
    source_event_id  TEXT    NOT NULL,                 -- identity as DESIGN §4 defines it
    kind             TEXT    NOT NULL,                 -- normalized event kind
    module           TEXT,
    object_id        TEXT,
    object_key       TEXT,                             -- e.g. 'product/4711'
    payload          JSONB   NOT NULL,                 -- this event's JSON
    raw_body         BYTEA   NOT NULL,                 -- the request body exactly as signed
    headers          JSONB   NOT NULL,                 -- the headers that matter
    received_at      BIGINT  NOT NULL,                 -- unix milliseconds
    state            TEXT    NOT NULL DEFAULT 'pending',
    attempts         BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT  NOT NULL,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    last_error       TEXT,
    updated_at       BIGINT  NOT NULL,
    UNIQUE (source, source_event_id)
);

CREATE INDEX events_due ON events (state, next_attempt_at);
CREATE INDEX events_object ON events (object_key);
