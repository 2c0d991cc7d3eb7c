//! Users and groups.
//!
//! By id: OpenText reports who acted as a numeric user id (workflow activities, some
//! callbacks); 4ALLPORTAL gets the login (`GET /api/v1/members/{id}` → `data.name`). Answers are
//! cached for [`MEMBER_TTL`], since a workflow's approvers are few and asked about repeatedly.
//!
//! By login, e-mail or group name: workspace teams name people as 4ALLPORTAL knows them;
//! `GET /api/v2/members` (Content Server spec, `SearchMember2`) finds the member. Answers, "no
//! such member" included, are cached for [`LOOKUP_TTL`]: a team names the same people in many
//! workspaces, and a short lifetime lets a newly created user or a renamed group count soon.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::OpentextClient;
use super::routes::{MEMBER, MEMBERS_SEARCH};
use super::types::{Member, MemberType, list_items};
use crate::clients::error::UpstreamError;

/// How long a looked-up login is reused before it is asked again.
pub const MEMBER_TTL: Duration = Duration::from_secs(600);

/// How long a member found (or not found) by login, e-mail or group name is reused.
pub const LOOKUP_TTL: Duration = Duration::from_secs(60);

/// How a team names a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemberKey {
    /// A user by login name.
    Login,
    /// A user by business e-mail.
    Email,
    /// A group by name.
    Group,
}

impl MemberKey {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberKey::Login => "login",
            MemberKey::Email => "e-mail",
            MemberKey::Group => "group",
        }
    }
}

type Lookups = HashMap<(MemberKey, String), (Option<Member>, Instant)>;

/// Logins by user id and members by how a team names them, each with the time it was looked up.
#[derive(Debug, Default)]
pub(super) struct MemberCache {
    logins: Mutex<HashMap<i64, (String, Instant)>>,
    lookups: Mutex<Lookups>,
}

impl MemberCache {
    fn get(&self, id: i64) -> Option<String> {
        let map = self.logins.lock().expect("member cache poisoned");
        map.get(&id)
            .filter(|(_, at)| at.elapsed() < MEMBER_TTL)
            .map(|(name, _)| name.clone())
    }

    fn put(&self, id: i64, name: &str) {
        let mut map = self.logins.lock().expect("member cache poisoned");
        map.retain(|_, (_, at)| at.elapsed() < MEMBER_TTL);
        map.insert(id, (name.to_string(), Instant::now()));
    }

    /// `Some(answer)` when looked up within [`LOOKUP_TTL`]; the answer may be "none".
    fn lookup(&self, key: MemberKey, value: &str) -> Option<Option<Member>> {
        let map = self.lookups.lock().expect("member cache poisoned");
        map.get(&(key, value.to_lowercase()))
            .filter(|(_, at)| at.elapsed() < LOOKUP_TTL)
            .map(|(member, _)| member.clone())
    }

    fn remember(&self, key: MemberKey, value: &str, member: Option<Member>) {
        let mut map = self.lookups.lock().expect("member cache poisoned");
        map.retain(|_, (_, at)| at.elapsed() < LOOKUP_TTL);
        map.insert((key, value.to_lowercase()), (member, Instant::now()));
    }
}

/// The member among search results that `value` names exactly (the search matches parts of
/// names; logins, e-mails and group names compare without case).
pub fn exact_match(found: Vec<Member>, key: MemberKey, value: &str) -> Option<Member> {
    let wanted = value.trim();
    found.into_iter().find(|m| {
        let (kind, text) = match key {
            MemberKey::Login => (MemberType::User, Some(m.name.as_str())),
            MemberKey::Email => (MemberType::User, m.business_email.as_deref()),
            MemberKey::Group => (MemberType::Group, Some(m.name.as_str())),
        };
        m.member_type == kind && text.is_some_and(|t| t.trim().eq_ignore_ascii_case(wanted))
    })
}

/// The member's name in an answer of `GET /api/v1/members/{id}`. The Content Server spec
/// declares `data` as an array of members; servers answer with one object: both are read.
pub fn member_name(answer: &Value) -> Option<String> {
    let data = answer.get("data")?;
    let member = match data {
        Value::Array(items) => items.first()?,
        other => other,
    };
    member
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

impl OpentextClient {
    /// The login (member name) of user `id`, cached for [`MEMBER_TTL`].
    pub async fn member_login(&self, id: i64) -> Result<String, UpstreamError> {
        if let Some(name) = self.inner.members.get(id) {
            return Ok(name);
        }
        let answer = self.call_json(MEMBER, &[&id.to_string()], |r| r).await?;
        let name = member_name(&answer)
            .ok_or_else(|| UpstreamError::decode(format!("member {id} came without a name")))?;
        self.inner.members.put(id, &name);
        Ok(name)
    }

    /// The user or group a team names (`Ok(None)`: OpenText has no such member), cached for
    /// [`LOOKUP_TTL`].
    pub async fn find_member(
        &self,
        key: MemberKey,
        value: &str,
    ) -> Result<Option<Member>, UpstreamError> {
        if let Some(answer) = self.inner.members.lookup(key, value) {
            return Ok(answer);
        }
        let (kind, field) = match key {
            MemberKey::Login => ("0", "where_name"),
            MemberKey::Email => ("0", "where_business_email"),
            MemberKey::Group => ("1", "where_name"),
        };
        let query = [
            ("where_type", kind),
            (field, value.trim()),
            ("limit", "100"),
        ];
        let answer = self
            .call_json(MEMBERS_SEARCH, &[], |r| r.query(&query))
            .await?;
        let found = list_items(&answer)
            .into_iter()
            .map(Member::from_item)
            .collect::<Result<Vec<_>, _>>()?;
        let member = exact_match(found, key, value);
        self.inner.members.remember(key, value, member.clone());
        Ok(member)
    }

    /// `user` as a login: a numeric user id is looked up; anything else is a login already.
    /// A failed lookup keeps the id (and logs at warn): who decided is worth less than the
    /// decision, which must still be written.
    pub async fn login_of(&self, user: &str) -> String {
        let Ok(id) = user.trim().parse::<i64>() else {
            return user.to_string();
        };
        match self.member_login(id).await {
            Ok(login) => login,
            Err(error) => {
                tracing::warn!(user_id = id, %error, "OpenText user id not resolved to a login; the id is kept");
                user.to_string()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_name_is_read_from_an_object_or_the_specs_array() {
        assert_eq!(
            member_name(&json!({"data": {"id": 1001, "name": "jdoe"}})).as_deref(),
            Some("jdoe")
        );
        assert_eq!(
            member_name(&json!({"data": [{"id": 1001, "name": "jdoe"}]})).as_deref(),
            Some("jdoe")
        );
        assert_eq!(member_name(&json!({"data": {"id": 1001}})), None);
        assert_eq!(member_name(&json!({"data": []})), None);
        assert_eq!(member_name(&json!({})), None);
    }

    #[test]
    fn cached_logins_expire() {
        let cache = MemberCache::default();
        cache.put(1, "a");
        assert_eq!(cache.get(1).as_deref(), Some("a"));
        cache.logins.lock().unwrap().get_mut(&1).unwrap().1 = Instant::now() - MEMBER_TTL;
        assert_eq!(cache.get(1), None);
    }

    fn member(id: i64, name: &str, group: bool, email: Option<&str>) -> Member {
        Member {
            id,
            name: name.into(),
            member_type: if group {
                MemberType::Group
            } else {
                MemberType::User
            },
            business_email: email.map(str::to_string),
        }
    }

    #[test]
    fn a_search_result_counts_only_when_it_names_the_member_exactly() {
        let found = || {
            vec![
                member(1, "mschmidt2", false, Some("m2@example.com")),
                member(2, "MSchmidt", false, Some("maria@example.com")),
                member(3, "Legal", true, None),
            ]
        };
        assert_eq!(
            exact_match(found(), MemberKey::Login, "mschmidt").map(|m| m.id),
            Some(2)
        );
        assert_eq!(
            exact_match(found(), MemberKey::Email, "Maria@example.com").map(|m| m.id),
            Some(2)
        );
        assert_eq!(
            exact_match(found(), MemberKey::Group, "legal").map(|m| m.id),
            Some(3)
        );
        // A user is no group and a group no user.
        assert_eq!(exact_match(found(), MemberKey::Login, "Legal"), None);
        assert_eq!(exact_match(found(), MemberKey::Group, "MSchmidt"), None);
    }

    #[test]
    fn lookups_and_misses_are_cached_for_a_short_time() {
        let cache = MemberCache::default();
        cache.remember(MemberKey::Login, "ghost", None);
        assert_eq!(cache.lookup(MemberKey::Login, "GHOST"), Some(None));
        assert_eq!(cache.lookup(MemberKey::Group, "ghost"), None);
        for (_, at) in cache.lookups.lock().unwrap().values_mut() {
            *at = Instant::now() - LOOKUP_TTL;
        }
        assert_eq!(cache.lookup(MemberKey::Login, "ghost"), None);
    }
}
