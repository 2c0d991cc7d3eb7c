-- Intents: a create without a natural key (workflow, hold, finalization, version) is recorded
-- here before the call is made. A run that finds its intent still `pending` was cut short after
-- (or during) the call, so it looks the outcome up by `token` before it creates anything again.
CREATE TABLE intents (
    flow       TEXT   NOT NULL,
    object_key TEXT   NOT NULL,
    action     TEXT   NOT NULL,                   -- start_workflow | add_version | finalize_records | apply_hold
    target     TEXT   NOT NULL,                   -- what the call acts on (workspace, node, …)
    token      TEXT   NOT NULL,                   -- identity the outcome carries, for the lookup
    state      TEXT   NOT NULL,                   -- pending | done
    detail     JSONB  NOT NULL DEFAULT '{}',      -- what the call produced, once done
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (flow, object_key, action, target)
);
