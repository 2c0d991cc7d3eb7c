//! OpenText configuration the simulator starts with: users and groups, OAuth clients,
//! categories, workspace types with their templates (and the roles those define), workflow
//! maps, RM classifications and holds.

use serde::{Deserialize, Serialize};

/// Everything an xECM administrator would have configured before the bridge runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OpentextSeed {
    /// Folder under the Enterprise Workspace (2000) where workspaces are created by default.
    pub enterprise_folder_id: i64,
    /// The first user is the administrator: no permission check applies to it.
    pub users: Vec<SeedUser>,
    pub groups: Vec<SeedGroup>,
    pub oauth_clients: Vec<SeedOauthClient>,
    pub categories: Vec<SeedCategory>,
    pub workspace_types: Vec<SeedWorkspaceType>,
    pub workflow_maps: Vec<SeedWorkflowMap>,
    pub rm_classifications: Vec<SeedRmClassification>,
    pub holds: Vec<SeedHold>,
}

/// A Content Server user; `Debug` hides the password.
#[derive(Clone, Serialize, Deserialize)]
pub struct SeedUser {
    pub id: i64,
    /// Login name.
    pub name: String,
    pub password: String,
    /// Business e-mail (`business_email`), searchable by `where_business_email`.
    #[serde(default)]
    pub email: Option<String>,
}

/// A Content Server group (member type 1) and the ids of its users.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedGroup {
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub members: Vec<i64>,
}

impl std::fmt::Debug for SeedUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedUser")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("email", &self.email)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// An OTDS OAuth client (client credentials grant) acting as `user`; `Debug` hides the secret.
#[derive(Clone, Serialize, Deserialize)]
pub struct SeedOauthClient {
    pub client_id: String,
    pub client_secret: String,
    pub user: String,
}

impl std::fmt::Debug for SeedOauthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedOauthClient")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("user", &self.user)
            .finish()
    }
}

/// A category (node type 131); attribute keys are `{id}_{attribute.id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedCategory {
    pub id: i64,
    pub name: String,
    pub attributes: Vec<SeedAttribute>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedAttribute {
    /// Attribute id; the first user attribute is conventionally 2.
    pub id: i64,
    pub name: String,
    /// `String`, `Integer`, `Real`, `Date`, `Boolean`, `User`.
    pub type_name: String,
    /// Takes several values: stored and returned as a JSON array.
    #[serde(default)]
    pub multi_value: bool,
}

/// A workspace type with its single template, bound to a business object type (each business
/// object type has one workspace type, so the sample binds one per flow).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedWorkspaceType {
    pub id: i64,
    pub name: String,
    pub ext_system_id: String,
    pub bo_type: String,
    pub bo_type_id: i64,
    pub template_id: i64,
    pub template_name: String,
    /// Category the template applies to every new workspace.
    pub category_id: Option<i64>,
    /// Folders the template creates inside every new workspace.
    pub folders: Vec<String>,
    pub rm_enabled: bool,
    /// Roles the template defines besides `Business Workspace Owner`, `Members` and `Viewers`;
    /// each starts with see and see contents.
    #[serde(default)]
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedWorkflowMap {
    pub id: i64,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedRmClassification {
    pub id: i64,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedHold {
    pub id: i64,
    pub name: String,
    pub hold_type: String,
}

/// Ids of the sample configuration ([`OpentextSeed::sample`]).
pub mod sample_ids {
    pub const ENTERPRISE_WORKSPACE: i64 = 2000;
    pub const WORKSPACES_FOLDER: i64 = 2100;
    pub const ADMIN_USER_ID: i64 = 1000;
    pub const APPROVER_USER_ID: i64 = 1001;
    pub const PARTNER_USER_ID: i64 = 2001;
    /// A second user of the sample partner, outside its group until someone adds them.
    pub const PARTNER_GUEST_USER_ID: i64 = 2002;
    /// Product managers (the sample products name them in `product_manager`).
    pub const PM_SCHMIDT_USER_ID: i64 = 1002;
    pub const PM_WEBER_USER_ID: i64 = 1003;
    /// The account manager of the sample customer (by e-mail).
    pub const ACCOUNT_MANAGER_USER_ID: i64 = 1004;
    pub const QUALITY_USER_ID: i64 = 1005;
    pub const GROUP_LEGAL: i64 = 3001;
    pub const GROUP_REGULATORY: i64 = 3002;
    pub const GROUP_SALES_NORDICS: i64 = 3003;
    pub const GROUP_MARKETING: i64 = 3004;
    pub const GROUP_ENGINEERING: i64 = 3005;
    pub const GROUP_RECORDS: i64 = 3006;
    /// The sample partner's external group (its users upload into partner workspaces).
    pub const GROUP_PARTNER_NORDIC: i64 = 3101;
    pub const CATEGORY_PRODUCT: i64 = 9830;
    pub const CATEGORY_DOCUMENT: i64 = 9840;
    pub const TYPE_PRODUCT_LAUNCH: i64 = 101;
    pub const TYPE_CUSTOMER: i64 = 102;
    pub const TYPE_OPPORTUNITY: i64 = 103;
    pub const TYPE_CHANGE_REVIEW: i64 = 104;
    pub const TYPE_COMPLIANCE: i64 = 105;
    pub const TYPE_PARTNER: i64 = 106;
    pub const TYPE_PRODUCT_FAMILY: i64 = 107;
    pub const TYPE_ARCHIVE: i64 = 108;
    /// Template id of a workspace type in the sample: 20000 + type id.
    pub const fn template_of(type_id: i64) -> i64 {
        20_000 + type_id
    }
    pub const WORKFLOW_CHANGE_APPROVAL: i64 = 6686;
    pub const WORKFLOW_COMPLIANCE_REVIEW: i64 = 6687;
    pub const RM_CLASS_PRODUCT_RECORDS: i64 = 276_653;
    pub const RM_CLASS_ARCHIVE: i64 = 276_654;
    pub const HOLD_PRODUCT_LIABILITY: i64 = 5001;
    /// Folder of partner workspaces that partners upload into.
    pub const PARTNER_UPLOAD_FOLDER: &str = "Partner Uploads";
}

/// Sample credentials (simulator only).
pub const SAMPLE_ADMIN_USER: &str = "otadmin";
pub const SAMPLE_ADMIN_PASSWORD: &str = "sim-otadmin-password";
pub const SAMPLE_OAUTH_CLIENT_ID: &str = "xecm-bridge";
pub const SAMPLE_OAUTH_CLIENT_SECRET: &str = "sim-oauth-client-secret";

fn attr(id: i64, name: &str, type_name: &str) -> SeedAttribute {
    SeedAttribute {
        id,
        name: name.into(),
        type_name: type_name.into(),
        multi_value: false,
    }
}

fn multi_attr(id: i64, name: &str, type_name: &str) -> SeedAttribute {
    SeedAttribute {
        multi_value: true,
        ..attr(id, name, type_name)
    }
}

fn user(id: i64, name: &str, email: &str) -> SeedUser {
    SeedUser {
        id,
        name: name.into(),
        password: format!("sim-{name}-password"),
        email: Some(email.into()),
    }
}

fn group(id: i64, name: &str, members: &[i64]) -> SeedGroup {
    SeedGroup {
        id,
        name: name.into(),
        members: members.to_vec(),
    }
}

fn wtype(
    id: i64,
    name: &str,
    bo_type: &str,
    category: Option<i64>,
    folders: &[&str],
    rm_enabled: bool,
    roles: &[&str],
) -> SeedWorkspaceType {
    SeedWorkspaceType {
        id,
        name: name.into(),
        ext_system_id: "4ALLPORTAL".into(),
        bo_type: bo_type.into(),
        bo_type_id: 300 + id,
        template_id: sample_ids::template_of(id),
        template_name: format!("{name} Template"),
        category_id: category,
        folders: folders.iter().map(|f| (*f).to_owned()).collect(),
        rm_enabled,
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
    }
}

impl OpentextSeed {
    /// The configuration `demo` and the flow tests use; one workspace type per flow.
    pub fn sample() -> Self {
        use sample_ids::*;
        let product = Some(CATEGORY_PRODUCT);
        Self {
            enterprise_folder_id: WORKSPACES_FOLDER,
            users: vec![
                SeedUser {
                    id: ADMIN_USER_ID,
                    name: SAMPLE_ADMIN_USER.into(),
                    password: SAMPLE_ADMIN_PASSWORD.into(),
                    email: None,
                },
                user(APPROVER_USER_ID, "jdoe", "john.doe@example.com"),
                user(
                    PARTNER_USER_ID,
                    "partner",
                    "orders@nordic-distribution.example",
                ),
                user(
                    PARTNER_GUEST_USER_ID,
                    "nd.guest",
                    "guest@nordic-distribution.example",
                ),
                user(PM_SCHMIDT_USER_ID, "mschmidt", "maria.schmidt@example.com"),
                user(PM_WEBER_USER_ID, "lweber", "lukas.weber@example.com"),
                user(ACCOUNT_MANAGER_USER_ID, "akoch", "anna.koch@example.com"),
                user(QUALITY_USER_ID, "pfischer", "paul.fischer@example.com"),
            ],
            groups: vec![
                group(GROUP_LEGAL, "Legal", &[APPROVER_USER_ID]),
                group(GROUP_REGULATORY, "Regulatory Affairs", &[QUALITY_USER_ID]),
                group(
                    GROUP_SALES_NORDICS,
                    "Sales Nordics",
                    &[ACCOUNT_MANAGER_USER_ID],
                ),
                group(GROUP_MARKETING, "Marketing", &[PM_WEBER_USER_ID]),
                group(GROUP_ENGINEERING, "Engineering", &[QUALITY_USER_ID]),
                group(GROUP_RECORDS, "Records Management", &[APPROVER_USER_ID]),
                group(
                    GROUP_PARTNER_NORDIC,
                    "Partner - Nordic Distribution AB",
                    &[PARTNER_USER_ID],
                ),
            ],
            oauth_clients: vec![SeedOauthClient {
                client_id: SAMPLE_OAUTH_CLIENT_ID.into(),
                client_secret: SAMPLE_OAUTH_CLIENT_SECRET.into(),
                user: SAMPLE_ADMIN_USER.into(),
            }],
            categories: vec![
                SeedCategory {
                    id: CATEGORY_PRODUCT,
                    name: "Product Data".into(),
                    attributes: vec![
                        attr(2, "Article Number", "String"),
                        attr(3, "Status", "String"),
                        attr(4, "Product Family", "String"),
                        attr(5, "Name (en)", "String"),
                        attr(6, "Name (de)", "String"),
                        attr(7, "Packaging", "String"),
                        attr(8, "Compliance Class", "String"),
                        attr(9, "Approval Decision", "String"),
                        multi_attr(10, "Claims", "String"),
                        attr(11, "Launch Date", "Date"),
                        attr(12, "Product Owner", "User"),
                    ],
                },
                SeedCategory {
                    id: CATEGORY_DOCUMENT,
                    name: "Document Data".into(),
                    attributes: vec![
                        attr(2, "Source Object Id", "String"),
                        attr(3, "Source Module", "String"),
                        attr(4, "Product Data Version", "String"),
                        attr(5, "Content Hash", "String"),
                        attr(6, "Asset Type", "String"),
                    ],
                },
            ],
            workspace_types: vec![
                wtype(
                    TYPE_PRODUCT_LAUNCH,
                    "Product Launch",
                    "product",
                    product,
                    &[
                        "Master Data",
                        "Technical Specifications",
                        "Pricing",
                        "Marketing Assets",
                    ],
                    false,
                    &["Product Management", "Legal", "Sales"],
                ),
                wtype(
                    TYPE_CUSTOMER,
                    "Customer",
                    "customer",
                    None,
                    &["Products", "Images", "Brochures", "Configurations"],
                    false,
                    &["Account Team"],
                ),
                wtype(
                    TYPE_OPPORTUNITY,
                    "Opportunity",
                    "opportunity",
                    None,
                    &["Products", "Images", "Brochures", "Configurations"],
                    false,
                    &["Account Team"],
                ),
                wtype(
                    TYPE_CHANGE_REVIEW,
                    "Change Review",
                    "product_change",
                    product,
                    &["Change Documents", "Supporting Documents"],
                    false,
                    &["Change Owner", "Reviewers"],
                ),
                wtype(
                    TYPE_COMPLIANCE,
                    "Compliance Review",
                    "product_compliance",
                    product,
                    &["Claims", "Labels", "Images", "Brochures"],
                    false,
                    &["Product Management", "Reviewers"],
                ),
                wtype(
                    TYPE_PARTNER,
                    "Partner Collaboration",
                    "partner_product",
                    None,
                    &[
                        "Specifications",
                        "Media",
                        "Channel Content",
                        PARTNER_UPLOAD_FOLDER,
                    ],
                    false,
                    &["Product Management", "Partners"],
                ),
                wtype(
                    TYPE_PRODUCT_FAMILY,
                    "Product Family",
                    "product_family",
                    None,
                    &[
                        "Datasheets",
                        "Manuals",
                        "Safety Sheets",
                        "Packaging Artwork",
                    ],
                    false,
                    &["Product Management", "Authors"],
                ),
                wtype(
                    TYPE_ARCHIVE,
                    "Product Archive",
                    "product_archive",
                    product,
                    &[
                        "Final Data",
                        "Final Assets",
                        "Release Documentation",
                        "Approval History",
                    ],
                    true,
                    &["Records Managers"],
                ),
            ],
            workflow_maps: vec![
                SeedWorkflowMap {
                    id: WORKFLOW_CHANGE_APPROVAL,
                    name: "Change Approval".into(),
                },
                SeedWorkflowMap {
                    id: WORKFLOW_COMPLIANCE_REVIEW,
                    name: "Compliance Review".into(),
                },
            ],
            rm_classifications: vec![
                SeedRmClassification {
                    id: RM_CLASS_PRODUCT_RECORDS,
                    name: "Product Records".into(),
                },
                SeedRmClassification {
                    id: RM_CLASS_ARCHIVE,
                    name: "Product Records - Archive".into(),
                },
            ],
            holds: vec![SeedHold {
                id: HOLD_PRODUCT_LIABILITY,
                name: "Product Liability Hold".into(),
                hold_type: "Legal".into(),
            }],
        }
    }
}
