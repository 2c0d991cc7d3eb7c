//! Member search, `GET /api/v2/members` (Content Server spec, `SearchMember2`): users and groups
//! filtered by `where_type` (0 user, 1 group), `where_name` (login or group name),
//! `where_business_email`, or `query` (contained in login, e-mail or group name; not combined
//! with the `where_*` filters, as the spec says). Results are `results[].data.properties`
//! (`members_V2PropertiesMembersSearch`) with paging under `collection.paging`.

use axum::extract::State;
use axum::response::Response;
use serde_json::{Value, json};

use super::Sim;
use super::params::Params;
use super::respond::{ok, ot_error, page_and_limit, paging};

pub(crate) async fn search(State(sim): State<Sim>, params: Params) -> Response {
    let query = params.str("query");
    let name = params.str("where_name");
    let email = params.str("where_business_email");
    if query.is_some() && (name.is_some() || email.is_some()) {
        return ot_error(
            400,
            "The parameter(s) 'query' cannot be used together with parameter(s) \
             'where_business_email, where_name, where_first_name, where_last_name '",
        );
    }
    let kind = match params.get("where_type") {
        None => None,
        Some(_) => match params.i64("where_type") {
            Some(k @ (0 | 1)) => Some(k),
            _ => return ot_error(400, "Invalid datatype specified for argument 'where_type'"),
        },
    };
    let (page, limit) = page_and_limit(&params, 20);
    let store = sim.store.read().expect("store poisoned");
    let users = store.seed.users.iter().map(|u| u.id);
    let groups = store.seed.groups.iter().map(|g| g.id);
    let found: Vec<Value> = users
        .chain(groups)
        .filter_map(|id| store.member_json(id))
        .filter(|m| kind.is_none_or(|k| m["type"].as_i64() == Some(k)))
        .filter(|m| {
            let field = |key: &str| m[key].as_str().unwrap_or_default().to_lowercase();
            let contains = |key: &str, wanted: &str| field(key).contains(&wanted.to_lowercase());
            name.as_deref().is_none_or(|n| contains("name", n))
                && email
                    .as_deref()
                    .is_none_or(|e| contains("business_email", e))
                && query
                    .as_deref()
                    .is_none_or(|q| contains("name", q) || contains("business_email", q))
        })
        .collect();
    let total = found.len();
    let results: Vec<Value> = found
        .into_iter()
        .skip((page - 1) * limit)
        .take(limit)
        .map(|m| json!({"data": {"properties": m}}))
        .collect();
    ok(json!({"collection": {"paging": paging(page, limit, total)}, "results": results}))
}
