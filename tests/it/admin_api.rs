//! The admin API over the real HTTP server: bearer auth, status, listing with filters and cursor
//! pagination, event detail with routing, replay (one and by filter), resync, and clear 400s.

use crate::common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn admin(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
) -> reqwest::RequestBuilder {
    client.request(method, url).bearer_auth(ADMIN_TOKEN)
}

async fn send_events(app: &TestApp, client: &reqwest::Client, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..count {
        let receipt: Value = signed(
            client,
            &app.url("/webhooks/allportal"),
            ALLPORTAL_SECRET,
            &format!("msg_admin_{i}"),
            &product_event(&format!("p{i}")),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        ids.push(receipt["accepted"][0].as_str().unwrap().to_string());
    }
    ids
}

/// Waits until the worker has finished routing every event (no flows here: all `ignored`).
async fn wait_all_finished(app: &TestApp, client: &reqwest::Client) {
    for _ in 0..200 {
        let status: Value = admin(client, reqwest::Method::GET, app.url("/api/v1/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["backlog"]["events"] == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("events were not routed");
}

#[tokio::test]
async fn admin_routes_require_the_bearer_token() {
    let app = spawn_app("").await;
    let client = reqwest::Client::new();
    let routes = [
        (reqwest::Method::GET, "/api/v1/status"),
        (reqwest::Method::GET, "/api/v1/events"),
        (reqwest::Method::GET, "/api/v1/events/x"),
        (reqwest::Method::POST, "/api/v1/events/x/replay"),
        (reqwest::Method::POST, "/api/v1/events/replay"),
        (reqwest::Method::POST, "/api/v1/resync"),
    ];
    for (method, path) in routes {
        for auth in [
            None,
            Some("Bearer wrong-token-0123456789"),
            Some("Basic dXNlcjpwYXNz"),
        ] {
            let mut request = client
                .request(method.clone(), app.url(path))
                .json(&json!({}));
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {auth:?}"
            );
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn without_a_configured_token_the_admin_api_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(&dir, "");
    settings.admin.token = None;
    let app = spawn_with(settings, dir).await;
    let response = reqwest::Client::new()
        .get(app.url("/api/v1/status"))
        .bearer_auth("")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("admin.token"),
        "{problem}"
    );
    app.stop().await;
}

#[tokio::test]
async fn status_reports_store_backlog_flows_upstreams_and_worker() {
    let app = spawn_app("").await;
    let client = reqwest::Client::new();
    send_events(&app, &client, 3).await;
    wait_all_finished(&app, &client).await;
    let status: Value = admin(&client, reqwest::Method::GET, app.url("/api/v1/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["store"], "sqlite");
    assert_eq!(status["backlog"]["events"], 0);
    assert_eq!(status["dead_letters"], 0);
    assert_eq!(
        status["upstreams"],
        json!({"opentext": "closed", "allportal": "closed"})
    );
    assert_eq!(status["worker"]["enabled"], true);
    assert_eq!(status["worker"]["alive"], true);
    app.stop().await;
}

#[tokio::test]
async fn events_are_listed_filtered_and_paginated() {
    let app = spawn_app("").await;
    let client = reqwest::Client::new();
    let ids = send_events(&app, &client, 5).await;
    wait_all_finished(&app, &client).await;

    // Two pages of two and a last page of one, newest first, with no overlap.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = app.url("/api/v1/events?limit=2&source=allportal");
        if let Some(cursor) = &after {
            url.push_str(&format!("&after={cursor}"));
        }
        let page: Value = admin(&client, reqwest::Method::GET, url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        seen.extend(
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => after = Some(cursor.to_string()),
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(seen, expected);

    let one: Value = admin(
        &client,
        reqwest::Method::GET,
        app.url("/api/v1/events?object_key=product/p3"),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(one["events"].as_array().unwrap().len(), 1);
    assert_eq!(one["events"][0]["id"], ids[3]);
    let ignored: Value = admin(
        &client,
        reqwest::Method::GET,
        app.url("/api/v1/events?state=ignored"),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(ignored["events"].as_array().unwrap().len(), 5);
    let future: Value = admin(
        &client,
        reqwest::Method::GET,
        app.url("/api/v1/events?from=2999-01-01T00:00:00Z"),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(future["events"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn bad_parameters_are_400_naming_the_parameter() {
    let app = spawn_app("").await;
    let client = reqwest::Client::new();
    for (query, named) in [
        ("state=sleeping", "sleeping"),
        ("source=sap", "sap"),
        ("limit=0", "limit"),
        ("limit=99999", "limit"),
        ("from=yesterday", "from"),
        ("colour=red", "colour"),
    ] {
        let response = admin(
            &client,
            reqwest::Method::GET,
            app.url(&format!("/api/v1/events?{query}")),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let problem: Value = response.json().await.unwrap();
        assert!(
            problem["detail"].as_str().unwrap().contains(named),
            "{query}: {problem}"
        );
    }
    let bad_key = admin(&client, reqwest::Method::POST, app.url("/api/v1/resync"))
        .json(&json!({"object_key": "no-slash"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_key.status(), StatusCode::BAD_REQUEST);
    let not_json = admin(
        &client,
        reqwest::Method::POST,
        app.url("/api/v1/events/replay"),
    )
    .header("content-type", "application/json")
    .body("{")
    .send()
    .await
    .unwrap();
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    let wrong_state = admin(
        &client,
        reqwest::Method::POST,
        app.url("/api/v1/events/replay"),
    )
    .json(&json!({"state": "pending"}))
    .send()
    .await
    .unwrap();
    assert_eq!(wrong_state.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        app.store.count_events().await.unwrap(),
        0,
        "nothing stored by bad requests"
    );
    app.stop().await;
}

#[tokio::test]
async fn event_detail_replay_and_resync() {
    let app = spawn_app("").await;
    let client = reqwest::Client::new();
    let ids = send_events(&app, &client, 2).await;
    wait_all_finished(&app, &client).await;

    let detail: Value = admin(
        &client,
        reqwest::Method::GET,
        app.url(&format!("/api/v1/events/{}", ids[0])),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(detail["event"]["id"], ids[0]);
    assert_eq!(detail["event"]["state"], "ignored");
    assert_eq!(detail["event"]["payload"]["object_id"], "p0");

    let missing = admin(
        &client,
        reqwest::Method::GET,
        app.url("/api/v1/events/nope"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let dry: Value = admin(
        &client,
        reqwest::Method::POST,
        app.url("/api/v1/events/replay"),
    )
    .json(&json!({"state": "ignored", "dry_run": true}))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(dry, json!({"dry_run": true, "matched": 2}));

    let replay = admin(
        &client,
        reqwest::Method::POST,
        app.url(&format!("/api/v1/events/{}/replay", ids[0])),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(replay.status(), StatusCode::ACCEPTED);
    wait_all_finished(&app, &client).await;
    let detail: Value = admin(
        &client,
        reqwest::Method::GET,
        app.url(&format!("/api/v1/events/{}", ids[0])),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert!(
        !detail["notes"].as_array().unwrap().is_empty(),
        "replay leaves a note: {detail}"
    );

    let resync = admin(&client, reqwest::Method::POST, app.url("/api/v1/resync"))
        .json(&json!({"object_key": "product/p1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resync.status(), StatusCode::ACCEPTED);
    let body: Value = resync.json().await.unwrap();
    let event = app
        .store
        .get_event(body["event_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.kind, "resync");
    assert_eq!(event.object_key.as_deref(), Some("product/p1"));
    app.stop().await;
}

#[tokio::test]
async fn plan_and_flows_endpoints_validate_and_answer() {
    let app = spawn_app("").await;
    let client = reqwest::Client::new();
    let flows: Value = admin(&client, reqwest::Method::GET, app.url("/api/v1/flows"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        flows,
        json!({"flows": []}),
        "no flow is configured in this test"
    );
    let unknown = admin(&client, reqwest::Method::POST, app.url("/api/v1/plan"))
        .json(&json!({"object_key": "product/1", "flow": "launch"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let problem: Value = unknown.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("launch"),
        "{problem}"
    );
    let bad_source = admin(&client, reqwest::Method::POST, app.url("/api/v1/plan"))
        .json(&json!({"object_key": "product/1", "source": "sap"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_source.status(), StatusCode::BAD_REQUEST);
    let none: Value = admin(&client, reqwest::Method::POST, app.url("/api/v1/plan"))
        .json(&json!({"object_key": "product/1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(none, json!({"plans": []}), "no flow wants the object");
    app.stop().await;
}
