//! Workspace teams: the members of a workspace's roles, from the mapping's `team` section.
//!
//! Each run computes who should hold each role (4ALLPORTAL fields naming logins, e-mails or
//! groups, plus fixed users and groups), resolves them to OpenText members (member search,
//! cached for a short time by the client), reads the roles and each role's members from
//! OpenText (what OpenText holds is the truth), then:
//!
//! - adds the members that are missing; each addition is recorded in the store
//!   (`team_memberships`) *before* the call, so a crash between the two leaves a record that
//!   the next run completes instead of an untracked member;
//! - removes only memberships the bridge recorded that no longer apply (a product manager who
//!   changed), then forgets the record; members added by hand have no record and stay;
//! - sets a role's permissions when the mapping names them and they differ, and its Assigned
//!   Access on the folders the mapping names (`folders`), added or replaced when it differs.
//!
//! A role's permissions are compared with the names OpenText lists when it lists them; the
//! roles answer of the Business Workspaces API carries only an integer `perms`, so the link's
//! state keeps what the bridge set and the `perms` read back afterwards, and the role is set
//! again only when the mapping or that integer changed (someone edited the role).
//!
//! A member OpenText does not know is logged, counted (`xecm_team_unresolved_total`) and
//! reported in the run's result; the run goes on unless the team is `strict`.
//!
//! A rerun with nothing changed writes nothing. It reads the workspace's roles once, the
//! members of each team role (and of each role holding a recorded membership) once, the
//! store's records once, and searches once per member name not looked up in the last
//! [`crate::clients::opentext::members::LOOKUP_TTL`].
//!
//! Creation-time team import is not used: the Business Workspaces API's `roles.importteam`
//! copies the team of another workspace, and `bo_roles_users` (bulk upsert) replaces a role's
//! users, which would drop members added by hand; neither adds named members to a new
//! workspace without that cost.

use std::collections::{BTreeMap, BTreeSet};

use super::engine::MappedFlow;
use super::error::{FlowError, FlowResult};
use super::fields::{FieldRef, Scope, value_text};
use super::mapping::{MemberBy, PartnerMode, TeamConfig, TeamMemberConfig};
use super::run::{Run, System, is_planned};
use super::state::{LinkState, RolePermissions};
use crate::clients::UpstreamError;
use crate::clients::allportal::ModuleObject;
use crate::clients::opentext::members::MemberKey;
use crate::clients::opentext::{Member, MemberType, NodeId, Role};
use crate::store::{TeamMembership, now_millis};

/// One member the team wants in one role.
#[derive(Debug, Clone)]
struct Wanted {
    role: String,
    key: MemberKey,
    /// As the mapping or the field names it.
    name: String,
}

/// Who should hold which role, resolved to OpenText members: role name → member id → wanted.
type Resolved = BTreeMap<String, BTreeMap<i64, (Member, Wanted)>>;

/// Keeps the team of workspace `ws`, whose link key is `key` and whose content subjects are
/// `items` (the engine and the change flow call this once the workspace exists, before the
/// flow's last steps, so archival's read-only rule comes after the team). `state` is the
/// link's, saved by the caller.
pub(crate) async fn ensure(
    flow: &MappedFlow,
    run: &mut Run<'_>,
    scope: &Scope<'_>,
    key: &str,
    items: &[&ModuleObject],
    ws: NodeId,
    state: &mut LinkState,
) -> FlowResult<()> {
    let Some(team) = &flow.mapping.team else {
        return Ok(());
    };
    let scope = match items {
        [item] if flow.mapping.mode == Some(PartnerMode::PerPartnerProduct) => {
            scope.with_item(item)
        }
        _ => scope.clone(),
    };
    let wanted = wanted(team, &scope)?;
    let resolved = resolve(flow, run, team, wanted).await?;
    if is_planned(ws) {
        for (role, members) in &resolved {
            let config = team.roles.get(role);
            if let Some(permissions) = config.and_then(|r| r.permissions.as_ref()) {
                run.write(
                    System::Opentext,
                    "set_role_permissions",
                    permissions_text(role, permissions),
                );
            }
            for (path, permissions) in config.map(|c| &c.folders).into_iter().flatten() {
                run.write(
                    System::Opentext,
                    "set_folder_permissions",
                    folder_text(role, path, permissions),
                );
            }
            for (member, _) in members.values() {
                run.write(System::Opentext, "add_team_member", add_text(member, role));
            }
        }
        return Ok(());
    }
    let roles = run.env.opentext.workspace_roles(ws).await?;
    let records = run.env.store.team_memberships(ws).await?;
    ensure_role_permissions(flow, run, ws, &roles, state).await?;
    for (name, config) in &team.roles {
        let role = role_named(&roles, name, flow.name, ws)?;
        for (path, permissions) in &config.folders {
            ensure_folder_permissions(run, ws, role, name, path, permissions).await?;
        }
    }
    // Every role the team names or the bridge made a member in (a role dropped from the
    // mapping loses the bridge's members too).
    let mut role_ids: BTreeSet<i64> = records.iter().map(|r| r.role_id).collect();
    for name in team.roles.keys() {
        role_ids.insert(role_named(&roles, name, flow.name, ws)?.id);
    }
    for role_id in role_ids {
        let role_name = roles
            .iter()
            .find(|r| r.id == role_id)
            .and_then(|r| r.name.clone());
        let Some(role_name) = role_name else {
            // The role is gone from the workspace, and the memberships with it.
            for record in records.iter().filter(|r| r.role_id == role_id) {
                forget(run, record).await?;
            }
            continue;
        };
        let empty = BTreeMap::new();
        let wanted = resolved.get(&role_name).unwrap_or(&empty);
        let made: Vec<&TeamMembership> = records.iter().filter(|r| r.role_id == role_id).collect();
        keep_role(run, key, ws, role_id, &role_name, wanted, &made).await?;
    }
    Ok(())
}

/// The members each role should have, as the mapping names them for this object.
fn wanted(team: &TeamConfig, scope: &Scope<'_>) -> FlowResult<Vec<Wanted>> {
    let mut out = Vec::new();
    for (role, config) in &team.roles {
        for member in &config.members {
            for (key, name) in sources(member, scope)? {
                out.push(Wanted {
                    role: role.clone(),
                    key,
                    name,
                });
            }
        }
    }
    Ok(out)
}

/// The names one member source gives: a fixed one, or every value of a field (a list field
/// names several; an empty field none).
fn sources(member: &TeamMemberConfig, scope: &Scope<'_>) -> FlowResult<Vec<(MemberKey, String)>> {
    let fixed = [
        (MemberKey::Login, &member.user),
        (MemberKey::Email, &member.email),
        (MemberKey::Group, &member.group),
    ];
    if let Some((key, Some(name))) = fixed.into_iter().find(|(_, v)| v.is_some()) {
        return Ok(vec![(key, name.trim().to_string())]);
    }
    let Some(field) = &member.field else {
        return Ok(Vec::new());
    };
    let key = match member.by.unwrap_or(MemberBy::Login) {
        MemberBy::Login => MemberKey::Login,
        MemberBy::Email => MemberKey::Email,
        MemberBy::Group => MemberKey::Group,
    };
    let field = FieldRef::parse(field).map_err(FlowError::Mapping)?;
    let values = match scope.value(&field) {
        Some(serde_json::Value::Array(items)) => items.iter().filter_map(value_text).collect(),
        Some(one) => value_text(&one).into_iter().collect(),
        None => Vec::new(),
    };
    Ok(values
        .into_iter()
        .map(|v: String| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .map(|v| (key, v))
        .collect())
}

/// Resolves every wanted member; reports (or, `strict`, fails on) those OpenText does not know.
async fn resolve(
    flow: &MappedFlow,
    run: &mut Run<'_>,
    team: &TeamConfig,
    wanted: Vec<Wanted>,
) -> FlowResult<Resolved> {
    let mut resolved: Resolved = team
        .roles
        .keys()
        .map(|r| (r.clone(), BTreeMap::new()))
        .collect();
    let mut unknown = Vec::new();
    for w in wanted {
        match run.env.opentext.find_member(w.key, &w.name).await? {
            Some(member) => {
                let role = resolved.entry(w.role.clone()).or_default();
                role.entry(member.id).or_insert((member, w));
            }
            None => unknown.push(w),
        }
    }
    if unknown.is_empty() {
        return Ok(resolved);
    }
    let described: Vec<String> = unknown
        .iter()
        .map(|w| format!("{} `{}` (role `{}`)", w.key.as_str(), w.name, w.role))
        .collect();
    if team.strict {
        return Err(FlowError::mapping(format!(
            "team of {}: OpenText has no member {} (`flows.{}.team.strict` is true)",
            run.object_key,
            described.join(", "),
            flow.name
        )));
    }
    metrics::counter!("xecm_team_unresolved_total", "flow" => flow.name.to_string())
        .increment(unknown.len() as u64);
    for text in described {
        tracing::warn!(flow = flow.name, object_key = %run.object_key, member = %text,
                       "team member not found in OpenText; the rest of the team is kept");
        run.warn(format!("team member not found in OpenText: {text}"));
    }
    Ok(resolved)
}

fn role_named<'r>(roles: &'r [Role], name: &str, flow: &str, ws: NodeId) -> FlowResult<&'r Role> {
    roles
        .iter()
        .find(|r| r.name.as_deref() == Some(name))
        .ok_or_else(|| {
            let known: Vec<&str> = roles.iter().filter_map(|r| r.name.as_deref()).collect();
            FlowError::mapping(format!(
                "`flows.{flow}.team.roles.\"{name}\"`: workspace {ws} has no role of that name \
                 (its roles: {})",
                known.join(", ")
            ))
        })
}

/// Sets each team role's permissions the mapping names when they differ (module docs), then
/// reads the roles once more to record the `perms` each role set now has.
async fn ensure_role_permissions(
    flow: &MappedFlow,
    run: &mut Run<'_>,
    ws: NodeId,
    roles: &[Role],
    state: &mut LinkState,
) -> FlowResult<()> {
    let Some(team) = &flow.mapping.team else {
        return Ok(());
    };
    let mut set = BTreeMap::new();
    for (name, config) in &team.roles {
        let Some(permissions) = &config.permissions else {
            continue;
        };
        let role = role_named(roles, name, flow.name, ws)?;
        let wanted = name_set(permissions);
        let done = match &role.permissions {
            Some(listed) => name_set(listed) == wanted,
            None => state.role_permissions.get(&role.id).is_some_and(|r| {
                r.apply_to == config.apply_to
                    && r.set.iter().map(String::as_str).eq(wanted.iter().copied())
                    && role.perms.as_ref() == Some(&r.perms)
            }),
        };
        if done
            || !run.write(
                System::Opentext,
                "set_role_permissions",
                permissions_text(name, permissions),
            )
        {
            continue;
        }
        let list: Vec<&str> = wanted.into_iter().collect();
        run.env
            .opentext
            .update_role_permissions(ws, role.id, &list, config.apply_to)
            .await?;
        let names = list.iter().map(|p| (*p).to_string()).collect();
        set.insert(role.id, (names, config.apply_to));
    }
    if set.is_empty() {
        return Ok(());
    }
    for role in run.env.opentext.workspace_roles(ws).await? {
        if let (Some((set, apply_to)), Some(perms)) = (set.remove(&role.id), role.perms) {
            let record = RolePermissions {
                set,
                apply_to,
                perms,
            };
            state.role_permissions.insert(role.id, record);
        }
    }
    Ok(())
}

/// Gives `role` the `permissions` on the workspace's folder `path` (and everything in it) as
/// an Assigned Access entry: added when the folder has none for the role, replaced when its
/// permissions differ.
async fn ensure_folder_permissions(
    run: &mut Run<'_>,
    ws: NodeId,
    role: &Role,
    name: &str,
    path: &str,
    permissions: &[String],
) -> FlowResult<()> {
    let folder = run.ensure_folder_path(ws, path).await?;
    let wanted = name_set(permissions);
    let current = if is_planned(folder) {
        None
    } else {
        run.env
            .opentext
            .node_permissions(folder)
            .await?
            .into_iter()
            .find(|a| a.kind == "custom" && a.right_id == Some(role.id))
    };
    if current
        .as_ref()
        .is_some_and(|a| name_set(&a.permissions) == wanted)
        || !run.write(
            System::Opentext,
            "set_folder_permissions",
            folder_text(name, path, permissions),
        )
    {
        return Ok(());
    }
    let list: Vec<&str> = wanted.into_iter().collect();
    let ot = &run.env.opentext;
    if current.is_some() {
        ot.update_node_permission(folder, role.id, &list, APPLY_TO_FOLDER_AND_CONTENT)
            .await?;
    } else {
        ot.add_node_permission(folder, role.id, &list, APPLY_TO_FOLDER_AND_CONTENT)
            .await?;
    }
    Ok(())
}

/// Permission names as a set: OpenText's order and repetitions carry no meaning.
fn name_set(names: &[String]) -> BTreeSet<&str> {
    names.iter().map(String::as_str).collect()
}

/// A folder's Assigned Access covers the folder and everything in it.
const APPLY_TO_FOLDER_AND_CONTENT: u8 = 2;

/// Adds the wanted members of one role that OpenText does not list, removes the members the
/// bridge made that are no longer wanted, and forgets records OpenText no longer shows.
async fn keep_role(
    run: &mut Run<'_>,
    key: &str,
    ws: NodeId,
    role_id: i64,
    role: &str,
    wanted: &BTreeMap<i64, (Member, Wanted)>,
    made: &[&TeamMembership],
) -> FlowResult<()> {
    let current: BTreeSet<i64> = run
        .env
        .opentext
        .role_members(ws, role_id)
        .await?
        .iter()
        .map(|m| m.id)
        .collect();
    for (id, (member, w)) in wanted {
        if current.contains(id) {
            continue;
        }
        if !run.write(System::Opentext, "add_team_member", add_text(member, role)) {
            continue;
        }
        let record = TeamMembership {
            workspace_id: ws,
            role_id,
            member_id: *id,
            flow: run.flow.to_string(),
            object_key: key.to_string(),
            role_name: role.to_string(),
            member_name: w.name.clone(),
            created_at: now_millis(),
        };
        run.env.store.record_team_membership(&record).await?;
        run.env.opentext.add_role_member(ws, role_id, *id).await?;
    }
    for record in made.iter().filter(|r| !wanted.contains_key(&r.member_id)) {
        if current.contains(&record.member_id) {
            let text = format!(
                "remove `{}` from role `{role}` (no longer in the team)",
                record.member_name
            );
            if !run.write(System::Opentext, "remove_team_member", text) {
                continue;
            }
            match run
                .env
                .opentext
                .remove_role_member(ws, role_id, record.member_id)
                .await
            {
                Ok(()) | Err(UpstreamError::NotFound { .. }) => {}
                Err(other) => return Err(other.into()),
            }
        }
        forget(run, record).await?;
    }
    Ok(())
}

/// Forgets a record (apply mode only): the membership is gone from OpenText.
async fn forget(run: &Run<'_>, record: &TeamMembership) -> FlowResult<()> {
    if run.applying() {
        run.env
            .store
            .forget_team_membership(record.workspace_id, record.role_id, record.member_id)
            .await?;
    }
    Ok(())
}

fn add_text(member: &Member, role: &str) -> String {
    let kind = match member.member_type {
        MemberType::User => "user",
        MemberType::Group => "group",
    };
    format!("add {kind} `{}` to role `{role}`", member.name)
}

fn folder_text(role: &str, path: &str, permissions: &[String]) -> String {
    format!(
        "give role `{role}` {} on folder `{path}`",
        permissions.join(", ")
    )
}

fn permissions_text(role: &str, permissions: &[String]) -> String {
    format!(
        "set the permissions of role `{role}` to {}",
        permissions.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn product() -> ModuleObject {
        serde_json::from_value(json!({
            "id": "p1", "module": "product",
            "product_manager": [{"value": "mschmidt", "dimensions": null}],
            "reviewers": [{"value": ["a@example.com", " ", "b@example.com"], "dimensions": null}],
        }))
        .unwrap()
    }

    fn source(field: &str, by: Option<MemberBy>) -> TeamMemberConfig {
        TeamMemberConfig {
            field: Some(field.into()),
            by,
            ..TeamMemberConfig::default()
        }
    }

    #[test]
    fn a_field_names_one_member_per_value_and_fixed_members_name_themselves() {
        let p = product();
        let scope = Scope::of(&p);
        let names = |m: &TeamMemberConfig| sources(m, &scope).unwrap();
        assert_eq!(
            names(&source("product_manager", None)),
            [(MemberKey::Login, "mschmidt".to_string())]
        );
        assert_eq!(
            names(&source("reviewers", Some(MemberBy::Email))),
            [
                (MemberKey::Email, "a@example.com".to_string()),
                (MemberKey::Email, "b@example.com".to_string())
            ]
        );
        assert!(names(&source("missing", None)).is_empty());
        let legal = TeamMemberConfig {
            group: Some("Legal".into()),
            ..TeamMemberConfig::default()
        };
        assert_eq!(names(&legal), [(MemberKey::Group, "Legal".to_string())]);
    }
}
