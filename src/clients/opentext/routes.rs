//! Every request the OpenText client can send, in one table that the contract test checks
//! against OpenText's own OpenAPI documents, so client and specs cannot drift apart.

/// One route: HTTP method and path template under the Content Server base URL. The specs
/// list paths relative to `/api`; templates here include it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
}

const fn route(method: &'static str, path: &'static str) -> Route {
    Route { method, path }
}

// Authentication.
pub const AUTH: Route = route("POST", "/api/v1/auth");
/// Current user; used to check (and so refresh) the session before a streamed upload.
pub const AUTH_INFO: Route = route("GET", "/api/v1/auth");

// Business workspaces.
pub const WORKSPACES_SEARCH: Route = route("GET", "/api/v2/businessworkspaces");
pub const WORKSPACE_CREATE: Route = route("POST", "/api/v2/businessworkspaces");
pub const WORKSPACES_UPSERT: Route = route("PUT", "/api/v2/businessworkspaces");
pub const RELATED_LIST: Route = route("GET", "/api/v2/businessworkspaces/{bw_id}/relateditems");
pub const RELATED_ADD: Route = route("POST", "/api/v2/businessworkspaces/{bw_id}/relateditems");
pub const ROLES_LIST: Route = route("GET", "/api/v2/businessworkspaces/{bw_id}/roles");
pub const ROLE_UPDATE: Route = route("PUT", "/api/v2/businessworkspaces/{bw_id}/roles/{role_id}");
pub const ROLE_MEMBERS: Route = route(
    "GET",
    "/api/v2/businessworkspaces/{bw_id}/roles/{role_id}/members",
);
pub const ROLE_MEMBER_ADD: Route = route(
    "POST",
    "/api/v2/businessworkspaces/{bw_id}/roles/{role_id}/members",
);
pub const ROLE_MEMBER_REMOVE: Route = route(
    "DELETE",
    "/api/v2/businessworkspaces/{bw_id}/roles/{role_id}/members/{member_id}",
);

// Nodes, folders, documents, versions.
pub const NODE: Route = route("GET", "/api/v2/nodes/{id}");
pub const NODE_CREATE: Route = route("POST", "/api/v2/nodes");
pub const NODE_CHILDREN: Route = route("GET", "/api/v2/nodes/{id}/nodes");
pub const NAMES_VALIDATE: Route = route("POST", "/api/v1/validation/nodes/names");
pub const VERSIONS_LIST: Route = route("GET", "/api/v2/nodes/{id}/versions");
pub const VERSION_ADD: Route = route("POST", "/api/v2/nodes/{id}/versions");
/// v1 on purpose: OpenText's own client streams downloads through v1 ("V2 has issues").
pub const CONTENT: Route = route("GET", "/api/v1/nodes/{id}/content");

// Assigned Access of a node (a workspace role is a right too, inside its workspace).
pub const NODE_PERMISSIONS: Route = route("GET", "/api/v2/nodes/{id}/permissions");
pub const NODE_PERMISSION_ADD: Route = route("POST", "/api/v2/nodes/{id}/permissions/custom");
pub const NODE_PERMISSION_UPDATE: Route =
    route("PUT", "/api/v2/nodes/{id}/permissions/custom/{right_id}");

// Categories.
pub const CATEGORIES: Route = route("GET", "/api/v2/nodes/{id}/categories");
pub const CATEGORY_APPLY: Route = route("POST", "/api/v2/nodes/{id}/categories");
/// The trailing slash is how the spec writes it.
pub const CATEGORY_UPDATE: Route = route("PUT", "/api/v2/nodes/{id}/categories/{category_id}/");
/// A category's definition (attribute types), as the form for applying it to a node.
pub const CATEGORY_CREATE_FORM: Route = route("GET", "/api/v1/forms/nodes/categories/create");

// Configuration read to check a mapping.
pub const WORKSPACE_TYPES: Route = route("GET", "/api/v2/businessworkspacetypes");
pub const HOLDS: Route = route("GET", "/api/v1/holds");

// Large File Upload.
pub const MULTIPART_START: Route = route("POST", "/api/v2/multipart");
pub const MULTIPART_PART: Route = route("POST", "/api/v2/multipart/{upload_key}/{part_number}");
pub const MULTIPART_COMPLETE: Route = route("POST", "/api/v2/multipart/{upload_key}");
pub const MULTIPART_CANCEL: Route = route("DELETE", "/api/v2/multipart/{upload_key}");

// Workflows.
pub const DRAFT_CREATE: Route = route("POST", "/api/v2/draftprocesses");
pub const DRAFT_UPDATE: Route = route("PUT", "/api/v2/draftprocesses/{draftprocess_id}");
pub const WORKFLOW_STATUS: Route = route("GET", "/api/v2/workflows/status/processes/{process_id}");
pub const WORKFLOWS_ACTIVE: Route = route("GET", "/api/v2/workflows/status/active");
pub const WORKFLOWS_BY_STATUS: Route = route("GET", "/api/v2/workflows/status");
pub const ACTIVITIES: Route = route(
    "GET",
    "/api/v2/processes/{process_id}/subprocesses/{subprocess_id}/activities",
);

// Members.
/// A user by id (`data.name` is the login).
pub const MEMBER: Route = route("GET", "/api/v1/members/{id}");
/// Users and groups by login, e-mail or group name (`where_type`, `where_name`,
/// `where_business_email`).
pub const MEMBERS_SEARCH: Route = route("GET", "/api/v2/members");

// Records management.
pub const RM_CLASSIFICATIONS: Route = route("GET", "/api/v1/nodes/{id}/rmclassifications");
pub const RM_CLASSIFY: Route = route("POST", "/api/v1/nodes/{id}/rmclassifications");
pub const RM_UPDATE: Route = route("PUT", "/api/v1/nodes/{id}/rmclassifications");
pub const RM_FINALIZE: Route = route("PUT", "/api/v1/rmclassifications/finalizerecords");
pub const NODE_HOLDS: Route = route("GET", "/api/v1/nodes/{id}/holds");
pub const HOLD_APPLY: Route = route("POST", "/api/v1/nodes/{id}/holds");

/// Every Content Server route the client sends; checked against the specs.
pub const ROUTES: &[Route] = &[
    AUTH,
    AUTH_INFO,
    WORKSPACES_SEARCH,
    WORKSPACE_CREATE,
    WORKSPACES_UPSERT,
    RELATED_LIST,
    RELATED_ADD,
    ROLES_LIST,
    ROLE_UPDATE,
    ROLE_MEMBERS,
    ROLE_MEMBER_ADD,
    ROLE_MEMBER_REMOVE,
    NODE,
    NODE_CREATE,
    NODE_CHILDREN,
    NAMES_VALIDATE,
    VERSIONS_LIST,
    VERSION_ADD,
    CONTENT,
    NODE_PERMISSIONS,
    NODE_PERMISSION_ADD,
    NODE_PERMISSION_UPDATE,
    CATEGORIES,
    CATEGORY_APPLY,
    CATEGORY_UPDATE,
    CATEGORY_CREATE_FORM,
    WORKSPACE_TYPES,
    HOLDS,
    MULTIPART_START,
    MULTIPART_PART,
    MULTIPART_COMPLETE,
    MULTIPART_CANCEL,
    DRAFT_CREATE,
    DRAFT_UPDATE,
    WORKFLOW_STATUS,
    WORKFLOWS_ACTIVE,
    WORKFLOWS_BY_STATUS,
    ACTIVITIES,
    MEMBER,
    MEMBERS_SEARCH,
    RM_CLASSIFICATIONS,
    RM_CLASSIFY,
    RM_UPDATE,
    RM_FINALIZE,
    NODE_HOLDS,
    HOLD_APPLY,
];

// OTDS, called on the OTDS base URL (not the Content Server), for the `otds` / `oauth2`
// login modes.
pub const OTDS_CREDENTIALS: Route = route("POST", "/otdsws/rest/authentication/credentials");
pub const OTDS_TOKEN: Route = route("POST", "/otdsws/oauth2/token");

/// Routes that are in none of the Content Server, Business Workspaces or Records Management
/// specs, with the reason they are still sent.
pub const SPEC_EXCEPTIONS: &[(Route, &str)] = &[
    (
        OTDS_CREDENTIALS,
        "OTDS authentication service, not part of the Content Server REST API; shape from \
         OpenText's pyxecm otds.py",
    ),
    (
        OTDS_TOKEN,
        "OTDS OAuth2 token endpoint (client credentials), not part of the Content Server REST \
         API; shape from OpenText's pyxecm otds.py",
    ),
];
