-- Each request's body is stored once, in `bodies`, with the headers kept for audit; every event
-- refers to its own bytes in it (a lone event: the whole body). The event's parsed payload is
-- derived from those bytes on read, so it is not stored a second time, and bytes keep any valid
-- JSON content (NUL included) exactly.
CREATE TABLE bodies (
    id      INTEGER PRIMARY KEY,
    body    BLOB    NOT NULL,                          -- the request body exactly as signed
    headers BLOB    NOT NULL                           -- JSON object of the headers kept
);

ALTER TABLE events ADD COLUMN body_id INTEGER REFERENCES bodies (id);
ALTER TABLE events ADD COLUMN body_start INTEGER NOT NULL DEFAULT 0;  -- byte offsets in the body
ALTER TABLE events ADD COLUMN body_end INTEGER NOT NULL DEFAULT 0;

-- Events stored before this migration keep exactly what the worker reads: their parsed payload
-- becomes their body. (Their request bytes, copied once per event of a batch, are not kept.)
INSERT INTO bodies (id, body, headers)
    SELECT rowid, CAST(payload AS BLOB), CAST(headers AS BLOB) FROM events;
UPDATE events SET body_id = rowid, body_end = length(CAST(payload AS BLOB));

ALTER TABLE events DROP COLUMN payload;
ALTER TABLE events DROP COLUMN raw_body;
ALTER TABLE events DROP COLUMN headers;
-- Never used: leases live on jobs and in `leases`.
ALTER TABLE events DROP COLUMN lease_owner;
ALTER TABLE events DROP COLUMN lease_expires_at;

CREATE INDEX events_body ON events (body_id);

-- The worker's indexes cover the live states only (and dead letters, which wait for an
-- operator); retention's covers the finished events it may delete.
DROP INDEX events_due;
DROP INDEX events_finished;
CREATE INDEX events_live ON events (state, id) WHERE state IN ('pending', 'routed');
CREATE INDEX events_dead ON events (id) WHERE state = 'dead';
CREATE INDEX events_finished ON events (updated_at) WHERE state IN ('done', 'ignored');

DROP INDEX jobs_due;
DROP INDEX jobs_key;
DROP INDEX jobs_running;
CREATE INDEX jobs_due ON jobs (next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX jobs_key ON jobs (flow, object_key, id) WHERE state = 'pending';
CREATE INDEX jobs_running ON jobs (lease_expires_at) WHERE state = 'running';
