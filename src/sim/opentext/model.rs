//! OpenText state: a node tree (folders, documents with versions, business workspaces),
//! category values, RM data and holds, workflows, and large-file upload sessions.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::seed::{OpentextSeed, SeedWorkspaceType, sample_ids};
use crate::sim::blob::Blob;

pub(crate) const TYPE_FOLDER: i64 = 0;
pub(crate) const TYPE_WORKFLOW_MAP: i64 = 128;
pub(crate) const TYPE_CATEGORY: i64 = 131;
pub(crate) const TYPE_ENTERPRISE: i64 = 141;
pub(crate) const TYPE_DOCUMENT: i64 = 144;
pub(crate) const TYPE_WORKSPACE: i64 = 848;
pub(crate) const TYPE_RM_CLASSIFICATION: i64 = 551;
/// Volume holding the workspace templates (a template is a workspace node with its folders).
pub(crate) const TEMPLATES_VOLUME: i64 = 2300;
/// Volume holding the RM classifications.
pub(crate) const CLASSIFICATIONS_VOLUME: i64 = 2400;

pub(crate) fn type_name(node_type: i64) -> &'static str {
    match node_type {
        TYPE_FOLDER => "Folder",
        TYPE_WORKFLOW_MAP => "Workflow Map",
        TYPE_CATEGORY => "Category",
        TYPE_ENTERPRISE => "Enterprise Workspace",
        TYPE_DOCUMENT => "Document",
        TYPE_WORKSPACE => "Business Workspace",
        TYPE_RM_CLASSIFICATION => "RM Classification",
        _ => "Item",
    }
}

/// Content Server's timestamp format in v2 responses.
pub(crate) fn format_date(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[derive(Debug, Clone)]
pub(crate) struct Version {
    pub(crate) number: i64,
    pub(crate) version_id: i64,
    pub(crate) file_name: String,
    pub(crate) mime_type: String,
    pub(crate) blob: Blob,
    pub(crate) description: String,
    pub(crate) create_date: DateTime<Utc>,
    pub(crate) owner_id: i64,
}

impl Version {
    /// `VersionInfo` as in `GET /v2/nodes/{id}/versions`.
    pub(crate) fn to_json(&self, node_id: i64) -> Value {
        json!({
            "id": node_id,
            "version_id": self.version_id,
            "version_number": self.number,
            "version_number_major": self.number,
            "version_number_minor": 0,
            "version_major_number": self.number,
            "version_minor_number": 0,
            "file_name": self.file_name,
            "file_size": self.blob.size,
            "file_type": self.file_name.rsplit_once('.').map(|(_, e)| e).unwrap_or(""),
            "mime_type": self.mime_type,
            "description": self.description,
            "create_date": format_date(self.create_date),
            "modify_date": format_date(self.create_date),
            "owner_id": self.owner_id,
            "locked": false,
            "provider_name": "sim",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct BoRef {
    pub(crate) ext_system_id: String,
    pub(crate) bo_type: String,
    pub(crate) bo_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Role {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) leader: bool,
    pub(crate) permissions: Vec<String>,
    pub(crate) apply_to: i64,
    pub(crate) members: Vec<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct WorkspaceData {
    pub(crate) wksp_type_id: i64,
    pub(crate) template_id: i64,
    pub(crate) references: Vec<BoRef>,
    /// (related workspace id, `child` | `parent`).
    pub(crate) related: Vec<(i64, String)>,
    pub(crate) roles: Vec<Role>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct RmData {
    pub(crate) class_id: i64,
    pub(crate) fields: Map<String, Value>,
    pub(crate) revision: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct CategoryValues {
    pub(crate) values: BTreeMap<String, Value>,
    pub(crate) revision: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) id: i64,
    pub(crate) parent_id: i64,
    pub(crate) name: String,
    pub(crate) node_type: i64,
    pub(crate) description: String,
    pub(crate) create_date: DateTime<Utc>,
    pub(crate) modify_date: DateTime<Utc>,
    pub(crate) owner_id: i64,
    pub(crate) versions: Vec<Version>,
    pub(crate) categories: BTreeMap<i64, CategoryValues>,
    pub(crate) workspace: Option<WorkspaceData>,
    pub(crate) rm: Option<RmData>,
    pub(crate) holds: BTreeSet<i64>,
    pub(crate) finalized: bool,
    pub(crate) revision: u64,
    /// Assigned Access: users, groups or (inside a workspace) workspace roles, with their
    /// permissions on this node and, as `apply_to` says, on what is below it.
    pub(crate) acl: Vec<AssignedAccess>,
}

/// One Assigned Access entry of a node.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AssignedAccess {
    pub(crate) right_id: i64,
    pub(crate) permissions: Vec<String>,
    /// 0 this item, 1 sub-items, 2 both, 3 this item and its immediate sub-items.
    pub(crate) apply_to: i64,
}

impl AssignedAccess {
    /// Whether the entry, set on a node `depth` levels above the one asked about (0: on it),
    /// covers that node.
    fn covers(&self, depth: usize) -> bool {
        match depth {
            0 => self.apply_to != 1,
            1 => self.apply_to != 0,
            _ => matches!(self.apply_to, 1 | 2),
        }
    }
}

impl Node {
    pub(crate) fn is_container(&self) -> bool {
        !matches!(
            self.node_type,
            TYPE_DOCUMENT | TYPE_CATEGORY | TYPE_WORKFLOW_MAP
        )
    }

    pub(crate) fn latest(&self) -> Option<&Version> {
        self.versions.last()
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Draft {
    pub(crate) id: i64,
    pub(crate) workflow_id: i64,
    pub(crate) doc_ids: Vec<i64>,
    pub(crate) values: Map<String, Value>,
    pub(crate) initiator_id: i64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Decision {
    pub(crate) decision: String,
    pub(crate) comment: String,
    pub(crate) approver: String,
    pub(crate) approver_id: i64,
    pub(crate) decided_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Process {
    pub(crate) id: i64,
    pub(crate) workflow_id: i64,
    pub(crate) name: String,
    pub(crate) doc_ids: Vec<i64>,
    pub(crate) workspace_id: Option<i64>,
    pub(crate) values: Map<String, Value>,
    pub(crate) initiator_id: i64,
    pub(crate) initiated_at: DateTime<Utc>,
    /// `ontime` while the approval step is open, then `completed`.
    pub(crate) status: String,
    pub(crate) decision: Option<Decision>,
}

#[derive(Debug, Clone)]
pub(crate) struct UploadSession {
    pub(crate) file_name: String,
    pub(crate) file_size: u64,
    pub(crate) mime_type: String,
    pub(crate) part_size: u64,
    pub(crate) num_parts: u64,
    pub(crate) parts: BTreeMap<u64, Blob>,
    pub(crate) completed: Option<Blob>,
}

/// The whole OpenText state.
#[derive(Debug)]
pub(crate) struct Store {
    pub(crate) seed: OpentextSeed,
    pub(crate) nodes: BTreeMap<i64, Node>,
    /// Child ids by parent, in id order: a listing reads its folder's children, not every
    /// node (a catalogue of 50,000 workspaces holds about a million nodes).
    children: HashMap<i64, BTreeSet<i64>>,
    /// The ids of the business workspaces, for the workspace search.
    pub(crate) workspace_ids: BTreeSet<i64>,
    next_id: i64,
    pub(crate) drafts: BTreeMap<i64, Draft>,
    pub(crate) processes: BTreeMap<i64, Process>,
    pub(crate) uploads: BTreeMap<String, UploadSession>,
    /// Workspaces most recently read or created (what `expanded_view=false` lists).
    pub(crate) recent: VecDeque<i64>,
    pub(crate) callbacks: Vec<Value>,
}

/// A rejected operation: HTTP status and the `error` text Content Server would send.
#[derive(Debug)]
pub(crate) struct OtError(pub(crate) u16, pub(crate) String);

pub(crate) fn not_accessible() -> OtError {
    OtError(
        400,
        "Sorry, the item you requested could not be accessed. Either it does not exist or you do not have permission to access it.".into(),
    )
}

pub(crate) fn duplicate_name(name: &str) -> OtError {
    OtError(
        500,
        format!("An item with the name '{name}' already exists."),
    )
}

impl Store {
    pub(crate) fn new(seed: OpentextSeed) -> Self {
        let mut store = Self {
            seed,
            nodes: BTreeMap::new(),
            children: HashMap::new(),
            workspace_ids: BTreeSet::new(),
            next_id: 100_000,
            drafts: BTreeMap::new(),
            processes: BTreeMap::new(),
            uploads: BTreeMap::new(),
            recent: VecDeque::new(),
            callbacks: Vec::new(),
        };
        let admin = store.user_id_or_admin(None);
        store.insert_raw(
            sample_ids::ENTERPRISE_WORKSPACE,
            0,
            "Enterprise Workspace",
            TYPE_ENTERPRISE,
            admin,
        );
        let folder = store.seed.enterprise_folder_id;
        if folder != 0 && folder != sample_ids::ENTERPRISE_WORKSPACE {
            store.insert_raw(
                folder,
                sample_ids::ENTERPRISE_WORKSPACE,
                "4ALLPORTAL Workspaces",
                TYPE_FOLDER,
                admin,
            );
        }
        let categories: Vec<(i64, String)> = store
            .seed
            .categories
            .iter()
            .map(|c| (c.id, c.name.clone()))
            .collect();
        for (id, name) in categories {
            store.insert_raw(
                id,
                sample_ids::ENTERPRISE_WORKSPACE,
                &name,
                TYPE_CATEGORY,
                admin,
            );
        }
        let maps: Vec<(i64, String)> = store
            .seed
            .workflow_maps
            .iter()
            .map(|m| (m.id, m.name.clone()))
            .collect();
        for (id, name) in maps {
            store.insert_raw(
                id,
                sample_ids::ENTERPRISE_WORKSPACE,
                &name,
                TYPE_WORKFLOW_MAP,
                admin,
            );
        }
        store.insert_configuration_nodes(admin);
        store
    }

    /// Templates with their folders, and RM classifications, as the nodes they are in Content
    /// Server. Their ids are far above the ids the store hands out.
    fn insert_configuration_nodes(&mut self, admin: i64) {
        let templates: Vec<(i64, String, Vec<String>)> = self
            .seed
            .workspace_types
            .iter()
            .map(|t| (t.template_id, t.template_name.clone(), t.folders.clone()))
            .collect();
        if !templates.is_empty() {
            let volume = TEMPLATES_VOLUME;
            self.insert_raw(
                volume,
                0,
                "Business Workspace Templates",
                TYPE_FOLDER,
                admin,
            );
        }
        for (id, name, folders) in templates {
            self.insert_raw(id, TEMPLATES_VOLUME, &name, TYPE_WORKSPACE, admin);
            for (i, folder) in (1..).zip(folders) {
                self.insert_raw(id * 100 + i, id, &folder, TYPE_FOLDER, admin);
            }
        }
        let classes: Vec<(i64, String)> = self
            .seed
            .rm_classifications
            .iter()
            .map(|c| (c.id, c.name.clone()))
            .collect();
        if !classes.is_empty() {
            let volume = CLASSIFICATIONS_VOLUME;
            self.insert_raw(volume, 0, "Classifications", TYPE_FOLDER, admin);
        }
        for (id, name) in classes {
            let parent = CLASSIFICATIONS_VOLUME;
            self.insert_raw(id, parent, &name, TYPE_RM_CLASSIFICATION, admin);
        }
    }

    fn insert_raw(&mut self, id: i64, parent_id: i64, name: &str, node_type: i64, owner_id: i64) {
        let now = Utc::now();
        self.children.entry(parent_id).or_default().insert(id);
        self.nodes.insert(
            id,
            Node {
                id,
                parent_id,
                name: name.into(),
                node_type,
                description: String::new(),
                create_date: now,
                modify_date: now,
                owner_id,
                versions: Vec::new(),
                categories: BTreeMap::new(),
                workspace: None,
                rm: None,
                holds: BTreeSet::new(),
                finalized: false,
                revision: 1,
                acl: Vec::new(),
            },
        );
    }

    pub(crate) fn next_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    /// The id of a user by name, or the first seeded user (the administrator).
    pub(crate) fn user_id_or_admin(&self, name: Option<&str>) -> i64 {
        name.and_then(|n| self.seed.users.iter().find(|u| u.name == n))
            .or_else(|| self.seed.users.first())
            .map(|u| u.id)
            .unwrap_or(sample_ids::ADMIN_USER_ID)
    }

    /// The administrator (the first seeded user): Content Server checks no permission of it.
    /// The bridge's service user is this one in the sample, so its writes are never refused.
    pub(crate) fn is_admin(&self, user_id: i64) -> bool {
        self.seed.users.first().is_some_and(|u| u.id == user_id)
    }

    /// Whether `user_id` may do `permission` (`add_items`, `modify`, …) on `node_id`: outside
    /// business workspaces always (the simulator keeps no other access control lists); inside
    /// one, when the user, a group of theirs or a workspace role they hold has it, from the
    /// role's workspace permissions or from an Assigned Access entry on the node or above it
    /// that covers the node.
    pub(crate) fn permitted(&self, user_id: i64, node_id: i64, permission: &str) -> bool {
        if self.is_admin(user_id) {
            return true;
        }
        let Some(ws) = self.enclosing_workspace(node_id) else {
            return true;
        };
        let mut rights: Vec<i64> = self
            .seed
            .groups
            .iter()
            .filter(|g| g.members.contains(&user_id))
            .map(|g| g.id)
            .collect();
        rights.push(user_id);
        let roles: Vec<&Role> = ws
            .roles
            .iter()
            .filter(|role| role.members.iter().any(|m| rights.contains(m)))
            .collect();
        if roles
            .iter()
            .any(|role| role.permissions.iter().any(|p| p == permission))
        {
            return true;
        }
        rights.extend(roles.iter().map(|role| role.id));
        self.ancestry(node_id).enumerate().any(|(depth, node)| {
            node.acl.iter().any(|entry| {
                entry.covers(depth)
                    && rights.contains(&entry.right_id)
                    && entry.permissions.iter().any(|p| p == permission)
            })
        })
    }

    /// `node_id` and the nodes above it, up to and including its business workspace.
    fn ancestry(&self, node_id: i64) -> impl Iterator<Item = &Node> {
        let mut next = Some(node_id);
        std::iter::from_fn(move || {
            let node = self.nodes.get(&next?)?;
            let top = node.workspace.is_some() || node.parent_id == node.id || node.parent_id == 0;
            next = (!top).then_some(node.parent_id);
            Some(node)
        })
    }

    /// The business workspace `node_id` is in (or is).
    fn enclosing_workspace(&self, node_id: i64) -> Option<&WorkspaceData> {
        let mut id = node_id;
        while let Some(node) = self.nodes.get(&id) {
            if let Some(ws) = &node.workspace {
                return Some(ws);
            }
            if node.parent_id == id || node.parent_id == 0 {
                return None;
            }
            id = node.parent_id;
        }
        None
    }

    /// A member (user or group) as Content Server lists it: `type` 0 user, 1 group.
    pub(crate) fn member_json(&self, id: i64) -> Option<Value> {
        if let Some(u) = self.seed.users.iter().find(|u| u.id == id) {
            return Some(json!({
                "id": u.id, "name": u.name, "display_name": u.name, "type": 0,
                "type_name": "User", "business_email": u.email, "deleted": false,
            }));
        }
        self.seed.groups.iter().find(|g| g.id == id).map(|g| {
            json!({
                "id": g.id, "name": g.name, "display_name": g.name, "type": 1,
                "type_name": "Group", "deleted": false,
            })
        })
    }

    pub(crate) fn user_name(&self, id: i64) -> String {
        self.seed
            .users
            .iter()
            .find(|u| u.id == id)
            .map(|u| u.name.clone())
            .or_else(|| {
                let group = self.seed.groups.iter().find(|g| g.id == id);
                group.map(|g| g.name.clone())
            })
            .unwrap_or_else(|| format!("user{id}"))
    }

    pub(crate) fn node(&self, id: i64) -> Result<&Node, OtError> {
        self.nodes.get(&id).ok_or_else(not_accessible)
    }

    pub(crate) fn node_mut(&mut self, id: i64) -> Result<&mut Node, OtError> {
        self.nodes.get_mut(&id).ok_or_else(not_accessible)
    }

    pub(crate) fn children(&self, parent: i64) -> impl Iterator<Item = &Node> {
        let ids = self.children.get(&parent).into_iter().flatten();
        ids.filter_map(|id| self.nodes.get(id))
    }

    /// Removes one node (its children are the caller's to remove) from the nodes and the
    /// indexes.
    pub(crate) fn remove_node(&mut self, id: i64) {
        if let Some(node) = self.nodes.remove(&id)
            && let Some(siblings) = self.children.get_mut(&node.parent_id)
        {
            siblings.remove(&id);
        }
        self.children.remove(&id);
        self.workspace_ids.remove(&id);
        self.recent.retain(|r| *r != id);
    }

    /// Moves node `id` below `parent`.
    pub(crate) fn move_node(&mut self, id: i64, parent: i64) -> Result<(), OtError> {
        let node = self.node_mut(id)?;
        let old = std::mem::replace(&mut node.parent_id, parent);
        if let Some(siblings) = self.children.get_mut(&old) {
            siblings.remove(&id);
        }
        self.children.entry(parent).or_default().insert(id);
        Ok(())
    }

    pub(crate) fn child_named(&self, parent: i64, name: &str) -> Option<&Node> {
        self.children(parent).find(|n| n.name == name)
    }

    /// Creates a node under a container, refusing duplicate names like Content Server does.
    pub(crate) fn create_node(
        &mut self,
        parent_id: i64,
        name: &str,
        node_type: i64,
        owner_id: i64,
    ) -> Result<i64, OtError> {
        let parent = self.node(parent_id)?;
        if !parent.is_container() {
            return Err(OtError(
                400,
                format!("Could not create a new [{}]", type_name(node_type)),
            ));
        }
        if name.trim().is_empty() {
            return Err(OtError(400, "Missing required parameter 'name'".into()));
        }
        if self.child_named(parent_id, name).is_some() {
            return Err(duplicate_name(name));
        }
        let id = self.next_id();
        self.insert_raw(id, parent_id, name, node_type, owner_id);
        self.touch(parent_id);
        Ok(id)
    }

    pub(crate) fn touch(&mut self, id: i64) {
        if let Some(node) = self.nodes.get_mut(&id) {
            node.modify_date = Utc::now();
            node.revision += 1;
        }
    }

    pub(crate) fn add_version(
        &mut self,
        node_id: i64,
        file_name: &str,
        mime_type: &str,
        blob: Blob,
        description: &str,
        owner_id: i64,
    ) -> Result<i64, OtError> {
        let version_id = self.next_id();
        let node = self.node_mut(node_id)?;
        if node.node_type != TYPE_DOCUMENT {
            return Err(OtError(
                400,
                "Could not set feature Versioning for this item".into(),
            ));
        }
        if node.finalized {
            return Err(OtError(
                500,
                format!(
                    "'{}' is a finalized record and cannot be modified.",
                    node.name
                ),
            ));
        }
        let number = node.versions.len() as i64 + 1;
        node.versions.push(Version {
            number,
            version_id,
            file_name: file_name.into(),
            mime_type: mime_type.into(),
            blob,
            // Content Server limits version descriptions to 255 characters.
            description: description.chars().take(255).collect(),
            create_date: Utc::now(),
            owner_id,
        });
        self.touch(node_id);
        Ok(number)
    }

    /// The business workspace a node lies in (itself included).
    pub(crate) fn workspace_of(&self, mut id: i64) -> Option<i64> {
        for _ in 0..64 {
            let node = self.nodes.get(&id)?;
            if node.workspace.is_some() {
                return Some(id);
            }
            id = node.parent_id;
        }
        None
    }

    pub(crate) fn descendants(&self, id: i64) -> Vec<i64> {
        let mut out = Vec::new();
        let mut stack = vec![id];
        while let Some(current) = stack.pop() {
            for child in self.children(current) {
                out.push(child.id);
                stack.push(child.id);
            }
        }
        out
    }

    pub(crate) fn workspace_type(&self, id: i64) -> Option<&SeedWorkspaceType> {
        self.seed.workspace_types.iter().find(|t| t.id == id)
    }

    pub(crate) fn remember_recent(&mut self, id: i64) {
        self.recent.retain(|r| *r != id);
        self.recent.push_front(id);
        self.recent.truncate(20);
    }

    /// Applies category values given as `{"<cat>": {"<cat>_<attr>": v}}` (workspace create) or
    /// flat `{"<cat>_<attr>": v, "<cat>_1": {}}` (nodes); both shapes appear in the references.
    pub(crate) fn apply_category_values(
        &mut self,
        node_id: i64,
        values: &Map<String, Value>,
    ) -> Result<(), OtError> {
        let mut flat: Vec<(String, Value)> = Vec::new();
        for (key, value) in values {
            match (key.parse::<i64>(), value) {
                (Ok(_), Value::Object(inner)) => {
                    flat.extend(inner.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                _ => flat.push((key.clone(), value.clone())),
            }
        }
        let mut by_cat: BTreeMap<i64, Vec<(String, Value)>> = BTreeMap::new();
        for (key, value) in flat {
            let cat = key
                .split('_')
                .next()
                .and_then(|c| c.parse::<i64>().ok())
                .ok_or_else(|| OtError(400, format!("Invalid attribute key '{key}'")))?;
            by_cat.entry(cat).or_default().push((key, value));
        }
        for (cat, entries) in by_cat {
            self.set_category(node_id, cat, entries, true)?;
        }
        Ok(())
    }

    /// Writes attribute values of one category; `{cat}_1` (the category itself) is not stored.
    pub(crate) fn set_category(
        &mut self,
        node_id: i64,
        cat: i64,
        entries: Vec<(String, Value)>,
        apply_if_missing: bool,
    ) -> Result<(), OtError> {
        let definition = self
            .seed
            .categories
            .iter()
            .find(|c| c.id == cat)
            .cloned()
            .ok_or_else(|| OtError(400, format!("Category {cat} does not exist")))?;
        let node = self.node_mut(node_id)?;
        if !apply_if_missing && !node.categories.contains_key(&cat) {
            return Err(OtError(
                400,
                format!("Category '{}' is not applied to this item", definition.name),
            ));
        }
        let applied = node
            .categories
            .entry(cat)
            .or_insert_with(|| CategoryValues {
                values: definition
                    .attributes
                    .iter()
                    .map(|a| {
                        let empty = if a.multi_value {
                            json!([])
                        } else {
                            Value::Null
                        };
                        (format!("{cat}_{}", a.id), empty)
                    })
                    .collect(),
                revision: 0,
            });
        for (key, value) in entries {
            if key == format!("{cat}_1") {
                continue;
            }
            let attr_id = key.split('_').nth(1).and_then(|a| a.parse::<i64>().ok());
            let known = attr_id.is_some_and(|a| definition.attributes.iter().any(|d| d.id == a));
            if !known {
                return Err(OtError(
                    400,
                    format!(
                        "Attribute '{key}' does not exist in category '{}'",
                        definition.name
                    ),
                ));
            }
            let attribute = attr_id.and_then(|a| definition.attributes.iter().find(|d| d.id == a));
            let value = match attribute {
                Some(attribute) => typed_value(&key, attribute, value)?,
                None => value,
            };
            applied.values.insert(key, value);
        }
        applied.revision += 1;
        self.touch(node_id);
        Ok(())
    }

    pub(crate) fn category_token(node: &Node, cat: i64) -> Option<String> {
        node.categories
            .get(&cat)
            .map(|c| format!("{}.{}.{}", node.id, cat, c.revision))
    }

    pub(crate) fn rm_token(node: &Node) -> String {
        format!(
            "rm.{}.{}",
            node.id,
            node.rm.as_ref().map(|r| r.revision).unwrap_or(0)
        )
    }

    /// Creates a business workspace (node, template folders, roles, categories, BO reference).
    pub(crate) fn create_workspace(
        &mut self,
        wtype: &SeedWorkspaceType,
        parent_id: i64,
        name: &str,
        bo: Option<BoRef>,
        owner_id: i64,
    ) -> Result<i64, OtError> {
        let id = self.create_node(parent_id, name, TYPE_WORKSPACE, owner_id)?;
        let mut roles = Vec::new();
        for (name, leader, perms, members) in [
            (
                "Business Workspace Owner",
                true,
                FULL_PERMISSIONS.as_slice(),
                vec![owner_id],
            ),
            ("Members", false, MEMBER_PERMISSIONS.as_slice(), vec![]),
            ("Viewers", false, READ_PERMISSIONS.as_slice(), vec![]),
        ]
        .into_iter()
        .chain(
            wtype
                .roles
                .iter()
                .map(|r| (r.as_str(), false, READ_PERMISSIONS.as_slice(), vec![])),
        ) {
            roles.push(Role {
                id: self.next_id(),
                name: name.into(),
                description: String::new(),
                leader,
                permissions: perms.iter().map(|p| (*p).to_owned()).collect(),
                apply_to: 2,
                members,
            });
        }
        for folder in &wtype.folders {
            self.create_node(id, folder, TYPE_FOLDER, owner_id)?;
        }
        let node = self.node_mut(id)?;
        node.workspace = Some(WorkspaceData {
            wksp_type_id: wtype.id,
            template_id: wtype.template_id,
            references: bo.into_iter().collect(),
            related: Vec::new(),
            roles,
        });
        self.workspace_ids.insert(id);
        if let Some(cat) = wtype.category_id {
            self.set_category(id, cat, Vec::new(), true)?;
        }
        self.remember_recent(id);
        Ok(id)
    }
}

pub(crate) const READ_PERMISSIONS: [&str; 2] = ["see", "see_contents"];
pub(crate) const MEMBER_PERMISSIONS: [&str; 9] = [
    "see",
    "see_contents",
    "modify",
    "edit_attributes",
    "add_items",
    "reserve",
    "add_major_version",
    "delete_versions",
    "delete",
];
pub(crate) const FULL_PERMISSIONS: [&str; 10] = [
    "see",
    "see_contents",
    "modify",
    "edit_attributes",
    "add_items",
    "reserve",
    "add_major_version",
    "delete_versions",
    "delete",
    "edit",
];

/// A value as Content Server stores it for the attribute: a multi-value attribute holds an
/// array (a single value given becomes one entry), a single-value attribute refuses an array
/// of more than one value, and each value must parse as the attribute's type.
fn typed_value(
    key: &str,
    attribute: &super::seed::SeedAttribute,
    value: Value,
) -> Result<Value, OtError> {
    let check = |v: Value| -> Result<Value, OtError> {
        let text = match &v {
            Value::String(s) => s.trim().to_owned(),
            Value::Null => return Ok(v),
            other => other.to_string(),
        };
        if text.is_empty() {
            return Ok(if attribute.type_name == "String" {
                v
            } else {
                Value::Null
            });
        }
        let fits = match attribute.type_name.as_str() {
            "Integer" | "User" => text.parse::<i64>().is_ok(),
            "Real" => text.parse::<f64>().is_ok(),
            "Boolean" => matches!(text.as_str(), "true" | "false"),
            "Date" => {
                chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d").is_ok()
                    || chrono::NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S").is_ok()
                    || DateTime::parse_from_rfc3339(&text).is_ok()
            }
            _ => true,
        };
        if fits {
            Ok(v)
        } else {
            Err(OtError(
                400,
                format!(
                    "Invalid value '{text}' for attribute '{}' ({key})",
                    attribute.name
                ),
            ))
        }
    };
    match (attribute.multi_value, value) {
        (true, Value::Array(items)) => items
            .into_iter()
            .map(check)
            .filter(|v| !matches!(v, Ok(Value::Null)))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        (true, Value::Null) => Ok(json!([])),
        (true, one) => {
            check(one).map(|v| Value::Array(v.is_null().then(Vec::new).unwrap_or_else(|| vec![v])))
        }
        (false, Value::Array(mut items)) if items.len() <= 1 => {
            check(items.pop().unwrap_or(Value::Null))
        }
        (false, Value::Array(_)) => Err(OtError(
            400,
            format!(
                "Attribute '{}' ({key}) takes a single value",
                attribute.name
            ),
        )),
        (false, one) => check(one),
    }
}
