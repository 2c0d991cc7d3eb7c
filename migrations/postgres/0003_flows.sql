-- State the business flows keep between runs: which OpenText workspace belongs to which
-- business object, which documents they uploaded (with content hashes, so unchanged content
-- causes no call), and the bridge's own write-backs to 4ALLPORTAL (echo suppression).

-- One business object's workspace per flow, with the state last applied (JSON).
CREATE TABLE links (
    flow         TEXT    NOT NULL,
    object_key   TEXT    NOT NULL,
    workspace_id BIGINT,
    state        JSONB   NOT NULL DEFAULT '{}',
    updated_at   BIGINT  NOT NULL,
    PRIMARY KEY (flow, object_key)
);

-- Documents a flow keeps current, by a logical name stable across runs.
CREATE TABLE documents (
    flow           TEXT    NOT NULL,
    object_key     TEXT    NOT NULL,
    logical_name   TEXT    NOT NULL,
    node_id        BIGINT  NOT NULL,
    content_hash   TEXT    NOT NULL,                  -- SHA-256 hex of the last uploaded bytes
    source_version TEXT,                              -- e.g. the source object's mod_time
    meta_hash      TEXT,                              -- hash of the category values applied
    version        BIGINT  NOT NULL,
    updated_at     BIGINT  NOT NULL,
    PRIMARY KEY (flow, object_key, logical_name)
);

-- Values the bridge wrote to 4ALLPORTAL; a later change event showing exactly this state is an
-- echo of the bridge's own write.
CREATE TABLE writebacks (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    module         TEXT    NOT NULL,
    object_id      TEXT    NOT NULL,
    fields         JSONB   NOT NULL,                  -- array of field names
    values_hash    TEXT    NOT NULL,
    mod_time_after TEXT,
    at             BIGINT  NOT NULL
);
CREATE INDEX writebacks_object ON writebacks (module, object_id, id);
