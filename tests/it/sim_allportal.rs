//! The 4ALLPORTAL simulator over real HTTP: envelopes, auth, PATCH semantics and audit, media
//! streaming, signed webhooks, faults and the request log.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use xecm_bridge::sim::allportal::{self, AllportalSimOptions, ids, sample_catalogue};
use xecm_bridge::sim::{FaultSettings, SimHandle};

const KEY: &str = "test-api-key";
const SECRET: &str = "whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM=";

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn start(webhook_url: Option<String>) -> SimHandle {
    let opts = AllportalSimOptions {
        api_key: KEY.into(),
        api_user: "api_bridge".into(),
        webhook_url: webhook_url.map(|u| u.parse().unwrap()),
        webhook_secret: Some(SECRET.into()),
        seed: Some(sample_catalogue()),
        ..Default::default()
    };
    allportal::spawn(any_port(), opts).await.unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn get(sim: &SimHandle, path: &str) -> reqwest::Response {
    client()
        .get(format!("{}{path}", sim.base_url()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
}

async fn patch(sim: &SimHandle, module: &str, body: Value) -> reqwest::Response {
    client()
        .patch(format!("{}/api/modules/{module}/objects", sim.base_url()))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A webhook receiver: records every request's headers and body.
type Received = Arc<Mutex<Vec<(axum::http::HeaderMap, bytes::Bytes)>>>;

async fn receiver() -> (String, Received, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let received: Received = Arc::default();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let store = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
            let store = store.clone();
            let tx = tx.clone();
            async move {
                store.lock().unwrap().push((headers, body));
                let _ = tx.send(());
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(any_port()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), received, rx)
}

/// Verifies a Standard Webhooks signature with HMAC directly (independent of the simulator's code).
fn assert_signed(headers: &axum::http::HeaderMap, body: &[u8]) {
    let id = headers["webhook-id"].to_str().unwrap();
    let ts = headers["webhook-timestamp"].to_str().unwrap();
    let sig = headers["webhook-signature"].to_str().unwrap();
    let key = STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(sig, expected);
    let age = chrono::Utc::now().timestamp() - ts.parse::<i64>().unwrap();
    assert!(age.abs() < 60);
}

#[tokio::test]
async fn wrong_or_missing_api_key_is_401_with_error_body() {
    let sim = start(None).await;
    let url = format!(
        "{}/api/modules/product/objects/{}",
        sim.base_url(),
        ids::PRODUCT_PUMP_A100
    );
    let wrong = client().get(&url).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let body: Value = wrong.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("API key"));
    let missing = client().get(&url).send().await.unwrap();
    assert_eq!(missing.status(), 401);
}

#[tokio::test]
async fn object_read_has_dimensioned_values_fields_filter_and_embed() {
    let sim = start(None).await;
    let obj: Value = get(
        &sim,
        &format!("/api/modules/product/objects/{}", ids::PRODUCT_PUMP_A100),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(obj["id"], ids::PRODUCT_PUMP_A100);
    assert_eq!(obj["module"], "product");
    assert!(obj["mod_time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        obj["article_number"],
        json!([{"value": "4711", "dimensions": null}])
    );
    let names = obj["name"].as_array().unwrap();
    assert!(names.contains(&json!({"value": "Pumpe A100", "dimensions": {"locale": "de_DE"}})));

    let path = format!(
        "/api/modules/product/objects/{}?fields=name&fields=family&embed=family",
        ids::PRODUCT_PUMP_A100
    );
    let filtered: Value = get(&sim, &path).await.json().await.unwrap();
    assert!(filtered.get("article_number").is_none());
    assert!(filtered.get("name").is_some());
    assert_eq!(filtered["_embedded"]["family"][0]["id"], ids::FAMILY_PUMPS);

    let missing = get(&sim, "/api/modules/product/objects/does-not-exist").await;
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn list_supports_4apql_subset_paging_and_total_count() {
    let sim = start(None).await;
    let q = "/api/modules/product/objects?query=status%20%3D%20%27launch_ready%27&totalCount=true&fields=id,status";
    let page: Value = get(&sim, q).await.json().await.unwrap();
    assert_eq!(page["total_count"], 2);
    let got: Vec<&str> = page["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert!(got.contains(&ids::PRODUCT_PUMP_A100) && got.contains(&ids::PRODUCT_VALVE_V20));

    let first: Value = get(
        &sim,
        "/api/modules/product/objects?offset=0&limit=3&totalCount=true",
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(first["total_count"], 4);
    assert_eq!(first["result"].as_array().unwrap().len(), 3);
    let rest: Value = get(&sim, "/api/modules/product/objects?offset=3&limit=3")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["result"].as_array().unwrap().len(), 1);

    // Modified since a cursor, combined with AND.
    let cursor = first["result"][0]["mod_time"].as_str().unwrap().to_owned();
    patch(
        &sim,
        "product",
        json!([{"id": ids::PRODUCT_PUMP_A200, "status": [{"value": "launch_ready"}]}]),
    )
    .await;
    let query = format!("mod_time > '{cursor}' and status = 'launch_ready'");
    let url = format!("{}/api/modules/product/objects", sim.base_url());
    let changed: Value = client()
        .get(url)
        .bearer_auth(KEY)
        .query(&[("query", query.as_str()), ("totalCount", "true")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let changed_ids: Vec<&str> = changed["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert!(changed_ids.contains(&ids::PRODUCT_PUMP_A200), "{changed}");

    let bad = get(&sim, "/api/modules/product/objects?query=status%20%3D").await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn module_schema_lists_fields_with_dimensions_and_relations() {
    let sim = start(None).await;
    let schema: Value = get(&sim, "/api/modules/product?groups=fields")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(schema["name"], "product");
    let fields = schema["fields"].as_array().unwrap();
    let name = fields.iter().find(|f| f["name"] == "name").unwrap();
    assert_eq!(name["dimensions"], json!(["locale"]));
    let family = fields.iter().find(|f| f["name"] == "family").unwrap();
    assert_eq!(family["type"], "CEExternalId");
    assert_eq!(family["modules"], json!(["product_family"]));
}

#[tokio::test]
async fn patch_writes_values_and_audit_records_old_new_user() {
    let sim = start(None).await;
    let before: Value = get(
        &sim,
        &format!("/api/modules/product/objects/{}", ids::PRODUCT_PUMP_A100),
    )
    .await
    .json()
    .await
    .unwrap();
    let res = patch(
        &sim,
        "product",
        json!([{"id": ids::PRODUCT_PUMP_A100,
                "packaging": [{"value": "wooden crate", "dimensions": null}],
                "name": [{"value": "Pumpe A100 neu", "dimensions": {"locale": "de_DE"}}]}]),
    )
    .await;
    assert_eq!(res.status(), 200);
    let ids_back: Vec<String> = res.json().await.unwrap();
    assert_eq!(ids_back, [ids::PRODUCT_PUMP_A100]);

    let after: Value = get(
        &sim,
        &format!("/api/modules/product/objects/{}", ids::PRODUCT_PUMP_A100),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(after["packaging"][0]["value"], "wooden crate");
    assert!(after["mod_time"].as_str().unwrap() > before["mod_time"].as_str().unwrap());
    // The en_US name is untouched.
    assert!(
        after["name"]
            .as_array()
            .unwrap()
            .contains(&json!({"value": "Pump A100", "dimensions": {"locale": "en_US"}}))
    );

    let audit: Value = get(
        &sim,
        &format!(
            "/api/modules/product/objects/{}/audit",
            ids::PRODUCT_PUMP_A100
        ),
    )
    .await
    .json()
    .await
    .unwrap();
    let entries = audit["audit"].as_array().unwrap();
    let packaging = entries
        .iter()
        .find(|e| e["fieldName"] == "packaging")
        .unwrap();
    assert_eq!(packaging["valueOld"]["value"], "carton");
    assert_eq!(packaging["valueNew"]["value"], "wooden crate");
    assert_eq!(packaging["createBy"], "api_bridge");
    assert_eq!(packaging["objectId"], ids::PRODUCT_PUMP_A100);
    assert_eq!(packaging["type"], "field");
    let name = entries.iter().find(|e| e["fieldName"] == "name").unwrap();
    assert_eq!(name["dimensions"], json!({"locale": "de_DE"}));
    assert_eq!(audit["totalCount"], entries.len());

    // Creating without an id returns a new UUID.
    let created: Vec<String> = patch(
        &sim,
        "product",
        json!([{"article_number": [{"value": "9999"}]}]),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(created[0].len(), 36);
}

#[tokio::test]
async fn patch_rejects_unknown_fields_partial_dimensions_and_missing_relation_targets() {
    let sim = start(None).await;
    let unknown = patch(
        &sim,
        "product",
        json!([{"id": ids::PRODUCT_PUMP_A100, "nope": [{"value": 1}]}]),
    )
    .await;
    assert_eq!(unknown.status(), 400);
    let body: Value = unknown.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("nope"));
    let partial = patch(
        &sim,
        "product",
        json!([{"id": ids::PRODUCT_PUMP_A100, "name": [{"value": "x", "dimensions": {"channel": "erp"}}]}]),
    )
    .await;
    assert_eq!(partial.status(), 400);
    let dangling = patch(
        &sim,
        "product",
        json!([{"id": ids::PRODUCT_PUMP_A100, "family": [{"value": "missing-id"}]}]),
    )
    .await;
    assert_eq!(dangling.status(), 400);
}

#[tokio::test]
async fn file_upload_download_and_relation_via_list_add() {
    let sim = start(None).await;
    let created: Vec<String> = patch(&sim, "file", json!([{"name": [{"value": "cert.pdf"}]}]))
        .await
        .json()
        .await
        .unwrap();
    let file_id = &created[0];
    let content = allportal::sample_pdf("Certificate");
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(content.clone())
            .file_name("cert.pdf")
            .mime_str("application/pdf")
            .unwrap(),
    );
    let up = client()
        .put(format!(
            "{}/api/modules/file/objects/{file_id}/media",
            sim.base_url()
        ))
        .bearer_auth(KEY)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(up.status(), 200);

    let down = get(
        &sim,
        &format!("/api/modules/file/objects/{file_id}/media/Original"),
    )
    .await;
    assert_eq!(down.status(), 200);
    assert_eq!(down.headers()["content-type"], "application/pdf");
    assert_eq!(
        down.headers()["content-length"],
        content.len().to_string().as_str()
    );
    assert_eq!(
        down.headers()["content-disposition"],
        "attachment; filename=\"cert.pdf\""
    );
    assert_eq!(down.bytes().await.unwrap().as_ref(), content.as_slice());

    let link = patch(
        &sim,
        "product",
        json!([{"id": ids::PRODUCT_PUMP_A100, "partner_documents": [{"value": [file_id], "instruction": "list_add"}]}]),
    )
    .await;
    assert_eq!(link.status(), 200);
    let obj: Value = get(
        &sim,
        &format!(
            "/api/modules/product/objects/{}?embed=partner_documents",
            ids::PRODUCT_PUMP_A100
        ),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(obj["partner_documents"][0]["value"], json!([file_id]));
    assert_eq!(
        obj["_embedded"]["partner_documents"][0]["mimetype"][0]["value"],
        "application/pdf"
    );

    let file_obj: Value = get(&sim, &format!("/api/modules/file/objects/{file_id}/audit"))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        file_obj["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "object_image_upload")
    );
}

#[tokio::test]
async fn generated_large_file_streams_deterministically() {
    let sim = start(None).await;
    let size = 5 * 1024 * 1024 + 123;
    let made: Value = client()
        .post(format!("{}/files/generate", sim.control_url()))
        .json(&json!({"size": size, "name": "big.bin"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = made["id"].as_str().unwrap();
    let mut hashes = Vec::new();
    for _ in 0..2 {
        let resp = get(
            &sim,
            &format!("/api/modules/file/objects/{id}/media/Original"),
        )
        .await;
        assert_eq!(resp.headers()["content-length"], size.to_string().as_str());
        let body = resp.bytes().await.unwrap();
        assert_eq!(body.len(), size);
        hashes.push(hex::encode(Sha256::digest(&body)));
    }
    assert_eq!(hashes[0], hashes[1]);
}

#[tokio::test]
async fn webhook_send_is_standard_webhooks_signed() {
    let (url, received, mut rx) = receiver().await;
    let sim = start(Some(url)).await;
    let delivery: Value = client()
        .post(format!("{}/webhooks/send", sim.control_url()))
        .json(&json!({"module": "product", "object_id": ids::PRODUCT_PUMP_A100}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(delivery["status"], 202);
    rx.recv().await.unwrap();
    let (headers, body) = received.lock().unwrap()[0].clone();
    assert_signed(&headers, &body);
    let event: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["event"], "moduleobject_modify");
    assert_eq!(event["module"], "product");
    assert_eq!(event["object_id"], ids::PRODUCT_PUMP_A100);
    assert!(event["mod_time"].is_string());
}

#[tokio::test]
async fn ui_change_through_control_endpoint_is_audited_as_that_user_and_notifies() {
    let (url, received, mut rx) = receiver().await;
    let sim = start(Some(url)).await;
    let res: Value = client()
        .post(format!(
            "{}/objects/product/{}?user=mmuster&webhook=true",
            sim.control_url(),
            ids::PRODUCT_VALVE_V10
        ))
        .json(&json!({"compliance_class": [{"value": "ATEX"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(res["object"]["compliance_class"][0]["value"], "ATEX");
    rx.recv().await.unwrap();
    let (headers, body) = received.lock().unwrap()[0].clone();
    assert_signed(&headers, &body);
    let audit: Value = get(
        &sim,
        &format!(
            "/api/modules/product/objects/{}/audit",
            ids::PRODUCT_VALVE_V10
        ),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(audit["audit"][0]["createBy"], "mmuster");
    assert_eq!(audit["audit"][0]["valueNew"]["value"], "ATEX");
}

#[tokio::test]
async fn faults_outage_with_retry_after_and_error_rate_spare_control_paths() {
    let sim = start(None).await;
    let set = client()
        .put(format!("{}/faults", sim.control_url()))
        .json(&json!({"outage_secs": 30, "retry_after_secs": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let down = get(&sim, "/api/modules/product/objects").await;
    assert_eq!(down.status(), 503);
    assert_eq!(down.headers()["retry-after"], "7");
    let state = client()
        .get(format!("{}/state", sim.control_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(state.status(), 200);

    sim.set_faults(FaultSettings {
        error_rate: 1.0,
        ..Default::default()
    });
    for _ in 0..5 {
        assert_eq!(
            get(&sim, "/api/modules/product/objects").await.status(),
            503
        );
    }
    sim.set_faults(FaultSettings::default());
    assert_eq!(
        get(&sim, "/api/modules/product/objects").await.status(),
        200
    );
}

#[tokio::test]
async fn request_log_shows_reads_only_when_nothing_was_written() {
    let sim = start(None).await;
    get(&sim, "/api/modules/product/objects").await;
    get(
        &sim,
        &format!("/api/modules/product/objects/{}", ids::PRODUCT_PUMP_A100),
    )
    .await;
    let log: Vec<Value> = client()
        .get(format!("{}/requests", sim.control_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log.len(), 2);
    assert!(
        log.iter()
            .all(|r| r["method"] == "GET" && r["status"] == 200)
    );
    assert_eq!(sim.requests().iter().filter(|r| r.is_write()).count(), 0);
    patch(
        &sim,
        "product",
        json!([{"id": ids::PRODUCT_PUMP_A100, "status": [{"value": "eol"}]}]),
    )
    .await;
    assert_eq!(sim.requests().iter().filter(|r| r.is_write()).count(), 1);
    let state = sim.state();
    assert_eq!(
        state["objects"]["product"][ids::PRODUCT_PUMP_A100]["status"][0]["value"],
        "eol"
    );
}
