//! `openapi.yaml` and the router list the same routes, both ways; and every route in the table
//! really answers its method (not the 404 fallback, not 405).

use crate::common;

use std::collections::BTreeSet;

use xecm_bridge::http::routes;

fn spec_routes() -> BTreeSet<(String, String)> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    let spec: serde_json::Value = serde_yaml_ng::from_str(&text).expect("openapi.yaml parses");
    let mut found = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
            if item.get(method).is_some() {
                found.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    found
}

fn router_routes() -> BTreeSet<(String, String)> {
    routes()
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect()
}

#[test]
fn every_router_route_is_in_the_spec_and_back() {
    let spec = spec_routes();
    let router = router_routes();
    let undocumented: Vec<_> = router.difference(&spec).collect();
    let unimplemented: Vec<_> = spec.difference(&router).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.yaml: {undocumented:?}"
    );
    assert!(
        unimplemented.is_empty(),
        "openapi.yaml routes the router lacks: {unimplemented:?}"
    );
}

#[tokio::test]
async fn every_route_answers_its_method() {
    let app = common::spawn_app("").await;
    let client = reqwest::Client::new();
    for route in routes() {
        // Path parameters get a placeholder value; the handler may then say 404 for the resource,
        // which is a problem of type not-found but never the fallback's "no route".
        let path = route.path.replace(['{', '}'], "");
        let response = client
            .request(route.method.clone(), app.url(&path))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_ne!(
            status,
            reqwest::StatusCode::METHOD_NOT_ALLOWED,
            "{} {}",
            route.method,
            route.path
        );
        assert!(
            !body.contains("no route for"),
            "{} {} reached the fallback",
            route.method,
            route.path
        );
    }
    app.stop().await;
}
