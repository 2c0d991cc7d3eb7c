//! The webhook endpoints over the real HTTP server: every bad input gets its documented status as
//! `application/problem+json` with the request id, and leaves the store unchanged.

use crate::common;

use common::*;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Case {
    name: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: StatusCode,
    problem: &'static str,
}

fn std_headers(secret: &str, id: &str, ts: i64, signed_body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json".into()),
        ("webhook-id", id.into()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", sign(secret, id, ts, signed_body)),
    ]
}

fn cases() -> Vec<Case> {
    let body = product_event("4711");
    let ts = now();
    let ok = |id: &str| std_headers(ALLPORTAL_SECRET, id, ts, &body);
    let without = |id: &str, drop: &str| {
        let mut h = ok(id);
        h.retain(|(name, _)| *name != drop);
        h
    };
    let replace = |id: &str, name: &'static str, value: &str| {
        let mut h = without(id, name);
        h.push((name, value.to_string()));
        h
    };
    let truncated = &body[..body.len() - 5];
    let signed_body = |b: &[u8]| std_headers(ALLPORTAL_SECRET, "msg_t", ts, b);
    let case = |name, path, headers, body: &[u8], status, problem| Case {
        name,
        path,
        headers,
        body: body.to_vec(),
        status,
        problem,
    };
    let unauthorized = StatusCode::UNAUTHORIZED;
    vec![
        case(
            "missing signature",
            "/webhooks/allportal",
            without("m1", "webhook-signature"),
            &body,
            unauthorized,
            "invalid-signature",
        ),
        case(
            "missing timestamp",
            "/webhooks/allportal",
            without("m2", "webhook-timestamp"),
            &body,
            unauthorized,
            "invalid-signature",
        ),
        case(
            "missing id",
            "/webhooks/allportal",
            without("m3", "webhook-id"),
            &body,
            unauthorized,
            "invalid-signature",
        ),
        case(
            "malformed signature",
            "/webhooks/allportal",
            replace("m4", "webhook-signature", "garbage"),
            &body,
            unauthorized,
            "invalid-signature",
        ),
        case(
            "wrong signature",
            "/webhooks/allportal",
            replace(
                "m5",
                "webhook-signature",
                "v1,dGhpcyBpcyBub3QgdGhlIHJpZ2h0IHNpZ25hdHVyZSE=",
            ),
            &body,
            unauthorized,
            "invalid-signature",
        ),
        case(
            "wrong secret",
            "/webhooks/allportal",
            std_headers(OTHER_SECRET, "m6", ts, &body),
            &body,
            unauthorized,
            "invalid-signature",
        ),
        case(
            "other source's secret",
            "/webhooks/allportal",
            std_headers(OPENTEXT_SECRET, "m7", ts, &body),
            &body,
            unauthorized,
            "invalid-signature",
        ),
        case(
            "stale timestamp",
            "/webhooks/allportal",
            std_headers(ALLPORTAL_SECRET, "m8", ts - 3600, &body),
            &body,
            unauthorized,
            "invalid-signature",
        ),
        case(
            "future timestamp",
            "/webhooks/allportal",
            std_headers(ALLPORTAL_SECRET, "m9", ts + 3600, &body),
            &body,
            unauthorized,
            "invalid-signature",
        ),
        case(
            "body changed after signing",
            "/webhooks/allportal",
            ok("m10"),
            &product_event("4712"),
            unauthorized,
            "invalid-signature",
        ),
        case(
            "truncated after signing",
            "/webhooks/allportal",
            ok("m11"),
            truncated,
            unauthorized,
            "invalid-signature",
        ),
        case(
            "truncated JSON, signed",
            "/webhooks/allportal",
            signed_body(truncated),
            truncated,
            StatusCode::BAD_REQUEST,
            "invalid-payload",
        ),
        case(
            "malformed JSON, signed",
            "/webhooks/allportal",
            signed_body(b"{not json"),
            b"{not json",
            StatusCode::BAD_REQUEST,
            "invalid-payload",
        ),
        case(
            "empty body, signed",
            "/webhooks/allportal",
            signed_body(b""),
            b"",
            StatusCode::BAD_REQUEST,
            "invalid-payload",
        ),
        case(
            "event without object id",
            "/webhooks/allportal",
            signed_body(br#"{"event":"moduleobject_modify","module":"product"}"#),
            br#"{"event":"moduleobject_modify","module":"product"}"#,
            StatusCode::BAD_REQUEST,
            "invalid-payload",
        ),
        case(
            "unknown event kind",
            "/webhooks/allportal",
            signed_body(br#"{"event":"explode","module":"product","object_id":"1"}"#),
            br#"{"event":"explode","module":"product","object_id":"1"}"#,
            StatusCode::BAD_REQUEST,
            "invalid-payload",
        ),
        case(
            "wrong content type",
            "/webhooks/allportal",
            replace("m12", "content-type", "text/plain"),
            &body,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
        ),
        case(
            "no content type",
            "/webhooks/allportal",
            without("m13", "content-type"),
            &body,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
        ),
        case(
            "oversized body",
            "/webhooks/allportal",
            std_headers(ALLPORTAL_SECRET, "m14", ts, &vec![b' '; 5000]),
            &vec![b' '; 5000],
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
        ),
        case(
            "unknown source",
            "/webhooks/salesforce",
            ok("m15"),
            &body,
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        case(
            "opentext: allportal's secret",
            "/webhooks/opentext",
            ok("m16"),
            &body,
            unauthorized,
            "invalid-signature",
        ),
        case(
            "opentext: malformed callback",
            "/webhooks/opentext",
            std_headers(
                OPENTEXT_SECRET,
                "m17",
                ts,
                br#"{"type":"workflow.decision"}"#,
            ),
            br#"{"type":"workflow.decision"}"#,
            StatusCode::BAD_REQUEST,
            "invalid-payload",
        ),
    ]
}

#[tokio::test]
async fn bad_input_is_rejected_and_stores_nothing() {
    let app = spawn_app("[server]\nmax_body_bytes = 4096").await;
    let client = reqwest::Client::new();
    for case in cases() {
        let mut request = client.post(app.url(case.path)).body(case.body.clone());
        for (name, value) in &case.headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let request_id = response.headers().get("x-request-id").cloned();
        let content_type = response.headers().get("content-type").cloned();
        let problem: serde_json::Value = response.json().await.expect("problem body");
        assert_eq!(status, case.status, "{}: {problem}", case.name);
        assert_eq!(
            content_type.unwrap(),
            "application/problem+json",
            "{}",
            case.name
        );
        let kind = problem["type"].as_str().unwrap_or_default();
        assert!(kind.ends_with(case.problem), "{}: type {kind}", case.name);
        assert_eq!(problem["status"], case.status.as_u16(), "{}", case.name);
        assert_eq!(
            problem["request_id"].as_str(),
            request_id.as_ref().and_then(|v| v.to_str().ok()),
            "{}: request id in body and header",
            case.name
        );
        assert!(
            !problem["detail"].as_str().unwrap_or_default().is_empty(),
            "{}",
            case.name
        );
        assert_eq!(
            app.store.count_events().await.unwrap(),
            0,
            "{}: nothing stored",
            case.name
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn replayed_event_id_is_a_duplicate_with_the_same_stored_id() {
    let app = spawn_app("").await;
    let client = reqwest::Client::new();
    let body = product_event("4711");
    let first: serde_json::Value = signed(
        &client,
        &app.url("/webhooks/allportal"),
        ALLPORTAL_SECRET,
        "msg_replay",
        &body,
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let response = signed(
        &client,
        &app.url("/webhooks/allportal"),
        ALLPORTAL_SECRET,
        "msg_replay",
        &body,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let second: serde_json::Value = response.json().await.unwrap();
    assert_eq!(first["accepted"].as_array().unwrap().len(), 1);
    assert_eq!(second["accepted"], serde_json::json!([]));
    assert_eq!(second["duplicates"], first["accepted"]);
    assert_eq!(app.store.count_events().await.unwrap(), 1);
    app.stop().await;
}

#[tokio::test]
async fn rotated_secrets_are_all_accepted_while_configured() {
    let extra =
        format!("[sources.allportal]\nsecrets = [\"{ALLPORTAL_SECRET}\", \"{OTHER_SECRET}\"]");
    let app = spawn_app(&extra).await;
    let client = reqwest::Client::new();
    for (i, secret) in [ALLPORTAL_SECRET, OTHER_SECRET].into_iter().enumerate() {
        let response = signed(
            &client,
            &app.url("/webhooks/allportal"),
            secret,
            &format!("msg_rot{i}"),
            &product_event("1"),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED, "secret {i}");
    }
    let stranger = signed(
        &client,
        &app.url("/webhooks/allportal"),
        OPENTEXT_SECRET,
        "msg_rot3",
        &product_event("1"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(stranger.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.store.count_events().await.unwrap(), 2);
    app.stop().await;
}

#[tokio::test]
async fn accepted_event_is_stored_with_raw_body_and_kept_headers() {
    let app = spawn_app("").await;
    let client = reqwest::Client::new();
    let body = br#"{"events":[{"event":"moduleobject_create","module":"product","object_id":"7"},{"event":"moduleobject_delete","module":"product","object_id":"8"}]}"#;
    let response = signed(
        &client,
        &app.url("/webhooks/allportal"),
        ALLPORTAL_SECRET,
        "msg_batch",
        body,
    )
    .header("x-request-id", "req-batch-1")
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.headers()["x-request-id"], "req-batch-1");
    let receipt: serde_json::Value = response.json().await.unwrap();
    let ids = receipt["accepted"].as_array().unwrap();
    assert_eq!(ids.len(), 2);
    let event = app
        .store
        .get_event(ids[1].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.kind, "moduleobject_delete");
    assert_eq!(event.object_key.as_deref(), Some("product/8"));
    assert_eq!(event.raw_body, body.to_vec());
    assert_eq!(event.headers["webhook-id"], "msg_batch");
    assert_eq!(event.headers["x-request-id"], "req-batch-1");
    assert!(
        event.headers.get("webhook-signature").is_none(),
        "signatures are not kept"
    );
    // The worker may already have routed it (no flow is configured here: `ignored`).
    assert!(
        ["pending", "ignored"].contains(&event.state.as_str()),
        "{}",
        event.state
    );
    app.stop().await;
}

#[tokio::test]
async fn opentext_callback_is_accepted() {
    let app = spawn_app("").await;
    let client = reqwest::Client::new();
    let body = serde_json::json!({
        "type": "workflow.decision",
        "business_object": {"ext_system_id": "4ALLPORTAL", "bo_type": "product", "bo_id": "4711"},
        "workflow": {"process_id": 9001, "decision": "approved", "comment": "fine", "approver": "reviewer"}
    }).to_string();
    let response = signed(
        &client,
        &app.url("/webhooks/opentext"),
        OPENTEXT_SECRET,
        "cb_1",
        body.as_bytes(),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let receipt: serde_json::Value = response.json().await.unwrap();
    let event = app
        .store
        .get_event(receipt["accepted"][0].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.source, "opentext");
    assert_eq!(event.kind, "workflow_decision");
    assert_eq!(event.object_key.as_deref(), Some("product/4711"));
    app.stop().await;
}

/// A body shorter than its Content-Length (the sender hung up) is unreadable: 400, nothing stored.
#[tokio::test]
async fn body_cut_off_mid_request_is_rejected() {
    let app = spawn_app("").await;
    let body = product_event("4711");
    let ts = now();
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /webhooks/allportal HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\nwebhook-id: cut\r\nwebhook-timestamp: {ts}\r\nwebhook-signature: {}\r\ncontent-length: {}\r\n\r\n",
        sign(ALLPORTAL_SECRET, "cut", ts, &body),
        body.len() + 100
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("application/problem+json"), "{response}");
    assert_eq!(app.store.count_events().await.unwrap(), 0);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_requests_are_all_acknowledged_and_stored() {
    let app = spawn_app("").await;
    let client = reqwest::Client::new();
    let url = app.url("/webhooks/allportal");
    let mut tasks = Vec::new();
    for i in 0..200 {
        let request = signed(
            &client,
            &url,
            ALLPORTAL_SECRET,
            &format!("msg_c{i}"),
            &product_event(&i.to_string()),
        );
        tasks.push(tokio::spawn(async move {
            request.send().await.unwrap().status()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::ACCEPTED);
    }
    assert_eq!(app.store.count_events().await.unwrap(), 200);
    app.stop().await;
}

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app("").await;
    let client = reqwest::Client::new();
    let health = client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready: serde_json::Value = client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["store"], "sqlite");
    let method = client.delete(app.url("/healthz")).send().await.unwrap();
    assert_eq!(method.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(method.headers()["content-type"], "application/problem+json");
    app.stop().await;
}

#[tokio::test]
async fn readiness_fails_until_migrations_are_applied() {
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(&dir, "[store]\nmigrate_on_start = false");
    let app = spawn_with(settings, dir).await;
    let client = reqwest::Client::new();
    let response = client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let problem: serde_json::Value = response.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("migrat"),
        "{problem}"
    );
    app.store.migrate().await.unwrap();
    let response = client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    app.stop().await;
}

/// `hex(HMAC-SHA256(secret, content))`, written here with `hmac` directly, independent of the
/// bridge's verifier.
fn hmac_hex(secret: &str, content: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(content);
    hex::encode(mac.finalize().into_bytes())
}

async fn receipt(response: reqwest::Response) -> serde_json::Value {
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    response.json().await.expect("receipt")
}

const HMAC_SECRET: &str = "hmac-secret-0123456789";
const TOKEN: &str = "token-secret-0123456789";

/// A request captured and sent again with only its unsigned delivery id changed is the same
/// event; a fresh signature over another signed timestamp is a new one.
#[tokio::test]
async fn hmac_replay_with_another_delivery_id_is_a_duplicate() {
    let app = spawn_app(&format!(
        r#"
[sources.allportal]
scheme = "hmac-sha256"
secrets = ["{HMAC_SECRET}"]
header = "x-signature"
prefix = "sha256="
id_header = "x-delivery-id"
[sources.opentext]
scheme = "hmac-sha256"
secrets = ["{HMAC_SECRET}"]
header = "x-signature"
timestamp_header = "x-timestamp"
signed_content = "timestamp-dot-body"
id_header = "x-delivery-id"
"#
    ))
    .await;
    let client = reqwest::Client::new();
    let body = product_event("4711");
    let send = |id: &str| {
        client
            .post(app.url("/webhooks/allportal"))
            .header("content-type", "application/json")
            .header(
                "x-signature",
                format!("sha256={}", hmac_hex(HMAC_SECRET, &body)),
            )
            .header("x-delivery-id", id)
            .body(body.clone())
            .send()
    };
    let first = receipt(send("d-1").await.unwrap()).await;
    let replay = receipt(send("d-2").await.unwrap()).await;
    assert_eq!(first["accepted"].as_array().unwrap().len(), 1);
    assert_eq!(replay["duplicates"], first["accepted"], "{replay}");

    let callback = serde_json::json!({
        "type": "workflow.decision",
        "business_object": {"ext_system_id": "4ALLPORTAL", "bo_type": "product", "bo_id": "4711"},
        "workflow": {"process_id": 9001, "decision": "approved"}
    })
    .to_string();
    let send_at = |ts: i64, id: &str| {
        let content = format!("{ts}.{callback}");
        client
            .post(app.url("/webhooks/opentext"))
            .header("content-type", "application/json")
            .header("x-signature", hmac_hex(HMAC_SECRET, content.as_bytes()))
            .header("x-timestamp", ts.to_string())
            .header("x-delivery-id", id)
            .body(callback.clone())
            .send()
    };
    let ts = now();
    let first = receipt(send_at(ts, "c-1").await.unwrap()).await;
    let replay = receipt(send_at(ts, "c-2").await.unwrap()).await;
    assert_eq!(replay["duplicates"], first["accepted"], "{replay}");
    let resigned = receipt(send_at(ts - 1, "c-1").await.unwrap()).await;
    assert_eq!(
        resigned["accepted"].as_array().unwrap().len(),
        1,
        "{resigned}"
    );
    assert_eq!(app.store.count_events().await.unwrap(), 3);
    app.stop().await;
}

/// The `token` scheme in `Authorization`: the `Bearer` scheme name in any case, and an unsigned
/// delivery id that cannot make a resent body a new event.
#[tokio::test]
async fn token_in_authorization_and_replay_with_another_delivery_id() {
    let app = spawn_app(&format!(
        r#"
[sources.allportal]
scheme = "token"
secrets = ["{TOKEN}"]
header = "authorization"
id_header = "x-delivery-id"
"#
    ))
    .await;
    let client = reqwest::Client::new();
    let body = product_event("42");
    let send = |auth: String, id: &str| {
        client
            .post(app.url("/webhooks/allportal"))
            .header("content-type", "application/json")
            .header("authorization", auth)
            .header("x-delivery-id", id)
            .body(body.clone())
            .send()
    };
    let first = receipt(send(format!("Bearer {TOKEN}"), "d-1").await.unwrap()).await;
    for (i, scheme) in ["bearer", "BEARER", "bEaReR"].into_iter().enumerate() {
        let again = receipt(
            send(format!("{scheme} {TOKEN}"), &format!("d-{}", i + 2))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(again["duplicates"], first["accepted"], "{scheme}: {again}");
    }
    for auth in [
        format!("Basic {TOKEN}"),
        TOKEN.to_string(),
        "Bearer wrong-token-0123456789".into(),
    ] {
        let response = send(auth.clone(), "d-x").await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{auth}");
    }
    assert_eq!(app.store.count_events().await.unwrap(), 1);
    app.stop().await;
}

/// With standard-webhooks, the event's own id in the signed body wins over `webhook-id`.
#[tokio::test]
async fn the_events_own_id_wins_over_the_webhook_id() {
    let app = spawn_app("").await;
    let client = reqwest::Client::new();
    let body =
        br#"{"event_id":"evt-1","event":"moduleobject_modify","module":"product","object_id":"1"}"#;
    let url = app.url("/webhooks/allportal");
    let first = receipt(
        signed(&client, &url, ALLPORTAL_SECRET, "msg_a", body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let second = receipt(
        signed(&client, &url, ALLPORTAL_SECRET, "msg_b", body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(second["duplicates"], first["accepted"], "{second}");
    assert_eq!(app.store.count_events().await.unwrap(), 1);
    app.stop().await;
}

#[tokio::test]
async fn admin_bearer_scheme_is_case_insensitive() {
    let app = spawn_app("").await;
    let client = reqwest::Client::new();
    for (auth, status) in [
        (format!("Bearer {ADMIN_TOKEN}"), StatusCode::OK),
        (format!("bearer {ADMIN_TOKEN}"), StatusCode::OK),
        (format!("BEARER  {ADMIN_TOKEN}"), StatusCode::OK),
        (format!("Basic {ADMIN_TOKEN}"), StatusCode::UNAUTHORIZED),
        (ADMIN_TOKEN.to_string(), StatusCode::UNAUTHORIZED),
        ("Bearer".to_string(), StatusCode::UNAUTHORIZED),
    ] {
        let response = client
            .get(app.url("/api/v1/status"))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{auth}");
    }
    app.stop().await;
}
