-- Workspace role memberships the bridge made (workspace teams). Recorded before the member is
-- added in OpenText, removed after the member is removed there, so a crash in between leaves
-- a record the next run checks against OpenText. Members someone added by hand have no row
-- and are never removed.
CREATE TABLE team_memberships (
    workspace_id BIGINT NOT NULL,
    role_id      BIGINT NOT NULL,
    member_id    BIGINT NOT NULL,
    flow         TEXT NOT NULL,
    object_key   TEXT NOT NULL,                       -- the workspace's `bo_type/bo_id`
    role_name    TEXT NOT NULL,
    member_name  TEXT NOT NULL,                       -- as the mapping named it
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, role_id, member_id)
);
