//! Users by id: OpenText reports who acted as a numeric user id (workflow activities, some
//! callbacks); 4ALLPORTAL gets the login (`GET /api/v1/members/{id}` → `data.name`). Answers are
//! cached for [`MEMBER_TTL`], since a workflow's approvers are few and asked about repeatedly.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::OpentextClient;
use super::routes::MEMBER;
use crate::clients::error::UpstreamError;

/// How long a looked-up login is reused before it is asked again.
pub const MEMBER_TTL: Duration = Duration::from_secs(600);

/// Logins by user id, each with the time it was looked up.
#[derive(Debug, Default)]
pub(super) struct MemberCache(Mutex<HashMap<i64, (String, Instant)>>);

impl MemberCache {
    fn get(&self, id: i64) -> Option<String> {
        let map = self.0.lock().expect("member cache poisoned");
        map.get(&id)
            .filter(|(_, at)| at.elapsed() < MEMBER_TTL)
            .map(|(name, _)| name.clone())
    }

    fn put(&self, id: i64, name: &str) {
        let mut map = self.0.lock().expect("member cache poisoned");
        map.retain(|_, (_, at)| at.elapsed() < MEMBER_TTL);
        map.insert(id, (name.to_string(), Instant::now()));
    }
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
        cache.0.lock().unwrap().get_mut(&1).unwrap().1 = Instant::now() - MEMBER_TTL;
        assert_eq!(cache.get(1), None);
    }
}
