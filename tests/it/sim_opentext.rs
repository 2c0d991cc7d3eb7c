//! The OpenText simulator over real HTTP: auth and ticket refresh/expiry, workspaces, nodes,
//! documents and versions, categories, large file upload, workflows with signed callbacks, RM and
//! holds, roles, faults and the request log.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use xecm_bridge::sim::opentext::{
    self, OpentextSimOptions, SAMPLE_ADMIN_PASSWORD, SAMPLE_ADMIN_USER, SAMPLE_OAUTH_CLIENT_ID,
    SAMPLE_OAUTH_CLIENT_SECRET, sample_ids,
};
use xecm_bridge::sim::{FaultSettings, SimHandle};

const SECRET: &str = "whsec_b3BlbnRleHQtY2FsbGJhY2stc2VjcmV0";

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn start(callback_url: Option<String>) -> SimHandle {
    let opts = OpentextSimOptions {
        callback_url: callback_url.map(|u| u.parse().unwrap()),
        callback_secret: Some(SECRET.into()),
        multipart_part_size: 64 * 1024,
        ..Default::default()
    };
    opentext::spawn(any_port(), opts).await.unwrap()
}

/// A minimal client: logs in, sends the current ticket, keeps the refreshed one.
struct Ot {
    http: reqwest::Client,
    base: String,
    ticket: String,
}

impl Ot {
    async fn login(sim: &SimHandle) -> Self {
        let http = reqwest::Client::new();
        let base = sim.base_url();
        let resp = http
            .post(format!("{base}/api/v1/auth"))
            .form(&[
                ("username", SAMPLE_ADMIN_USER),
                ("password", SAMPLE_ADMIN_PASSWORD),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        let ticket = body["ticket"].as_str().unwrap().to_owned();
        Self { http, base, ticket }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.header("OTCSTicket", &self.ticket).send().await.unwrap();
        if let Some(t) = resp.headers().get("OTCSTicket") {
            self.ticket = t.to_str().unwrap().to_owned();
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&mut self, path: &str) -> (u16, Value) {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    /// A write with the `body` form field holding JSON, as clients send it.
    async fn body(&mut self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .form(&[("body", body.to_string())]);
        self.send(req).await
    }

    async fn form(
        &mut self,
        method: reqwest::Method,
        path: &str,
        fields: &[(&str, &str)],
    ) -> (u16, Value) {
        let req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .form(fields);
        self.send(req).await
    }

    async fn upload(
        &mut self,
        path: &str,
        body: Option<Value>,
        file: &[u8],
        name: &str,
    ) -> (u16, Value) {
        let mut form = reqwest::multipart::Form::new();
        if let Some(body) = body {
            form = form.text("body", body.to_string());
        }
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(file.to_vec())
                .file_name(name.to_owned())
                .mime_str("application/pdf")
                .unwrap(),
        );
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .multipart(form);
        self.send(req).await
    }
}

type Received = Arc<Mutex<Vec<(axum::http::HeaderMap, bytes::Bytes)>>>;

async fn receiver() -> (String, Received, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let received: Received = Arc::default();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let store = received.clone();
    let app = axum::Router::new().route(
        "/callback",
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
    (format!("http://{addr}/callback"), received, rx)
}

/// Checks `webhook-signature` with HMAC directly, independent of the simulator's signing code.
fn verify_signature(headers: &axum::http::HeaderMap, body: &[u8]) {
    let id = headers["webhook-id"].to_str().unwrap();
    let ts = headers["webhook-timestamp"].to_str().unwrap();
    let key = STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(headers["webhook-signature"].to_str().unwrap(), expected);
}

async fn create_launch_workspace(ot: &mut Ot, bo_id: &str, name: &str) -> i64 {
    let (status, body) = ot
        .body(
            reqwest::Method::POST,
            "/api/v2/businessworkspaces",
            json!({
                "template_id": sample_ids::template_of(sample_ids::TYPE_PRODUCT_LAUNCH),
                "name": name, "parent_id": sample_ids::WORKSPACES_FOLDER,
                "ext_system_id": "4ALLPORTAL", "bo_type": "product", "bo_id": bo_id,
                "roles": {"categories": {"9830": {"9830_2": "4711", "9830_3": "launch_ready"}}},
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["results"]["id"].as_i64().unwrap()
}

fn find_child(listing: &Value, name: &str) -> i64 {
    listing["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["data"]["properties"]["name"] == name)
        .unwrap()["data"]["properties"]["id"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn login_errors_ticket_refresh_and_expiry_with_relogin() {
    let sim = start(None).await;
    let http = reqwest::Client::new();
    let base = sim.base_url();
    let bad = http
        .post(format!("{base}/api/v1/auth"))
        .form(&[("username", SAMPLE_ADMIN_USER), ("password", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    assert!(bad.json::<Value>().await.unwrap()["error"].is_string());
    let missing = http
        .post(format!("{base}/api/v1/auth"))
        .form(&[("password", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 500);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["error"],
        "Argument username is required"
    );
    let anonymous = http
        .get(format!("{base}/api/v2/nodes/2000"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.json::<Value>().await.unwrap()["error"].is_string());

    let mut ot = Ot::login(&sim).await;
    let first = ot.ticket.clone();
    let (status, node) = ot.get("/api/v2/nodes/2000").await;
    assert_eq!(status, 200);
    assert_eq!(node["results"]["data"]["properties"]["id"], 2000);
    assert_ne!(ot.ticket, first, "every response carries a fresh ticket");
    assert_eq!(
        ot.get("/api/v2/nodes/2000").await.0,
        200,
        "the refreshed ticket works"
    );

    sim.set_faults(FaultSettings {
        expire_tickets: true,
        ..Default::default()
    });
    let (status, body) = ot.get("/api/v2/nodes/2000").await;
    assert_eq!(status, 401);
    assert!(body["error"].is_string());
    let mut again = Ot::login(&sim).await;
    assert_eq!(again.get("/api/v2/nodes/2000").await.0, 200);
}

#[tokio::test]
async fn otds_ticket_and_oauth_bearer_authenticate_and_exchange_for_otcs_ticket() {
    let sim = start(None).await;
    let http = reqwest::Client::new();
    let origin = format!("http://{}", sim.addr);
    let otds: Value = http
        .post(format!("{origin}/otdsws/rest/authentication/credentials"))
        .json(&json!({"userName": SAMPLE_ADMIN_USER, "password": SAMPLE_ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let otds_ticket = otds["ticket"].as_str().unwrap();
    let resp = http
        .get(format!("{}/api/v1/auth", sim.base_url()))
        .header("OTDSTicket", otds_ticket)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let exchanged = resp.headers()["OTCSTicket"].to_str().unwrap().to_owned();
    let with_exchanged = http
        .get(format!("{}/api/v2/nodes/2000", sim.base_url()))
        .header("OTCSTicket", exchanged)
        .send()
        .await
        .unwrap();
    assert_eq!(with_exchanged.status(), 200);

    // Client credentials in the form, and as HTTP Basic.
    let token: Value = http
        .post(format!("{origin}/otdsws/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", SAMPLE_OAUTH_CLIENT_ID),
            ("client_secret", SAMPLE_OAUTH_CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(token["token_type"], "Bearer");
    let bearer = http
        .get(format!("{}/api/v2/nodes/2000", sim.base_url()))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    let basic = http
        .post(format!("{origin}/otdsws/oauth2/token"))
        .basic_auth(SAMPLE_OAUTH_CLIENT_ID, Some("wrong"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
}

#[tokio::test]
async fn workspace_lookup_create_duplicate_read_and_bulk_upsert() {
    let sim = start(None).await;
    let mut ot = Ot::login(&sim).await;
    let lookup = "/api/v2/businessworkspaces?expanded_view=true&where_ext_system_id=4ALLPORTAL&where_bo_type=product&where_bo_id=4711";
    let (status, empty) = ot.get(lookup).await;
    assert_eq!(status, 200);
    assert_eq!(empty["paging"]["total_count"], 0);

    let id = create_launch_workspace(&mut ot, "4711", "Pump A100 Launch").await;
    let (_, found) = ot.get(lookup).await;
    assert_eq!(found["paging"]["total_count"], 1);
    assert_eq!(found["results"][0]["data"]["properties"]["id"], id);
    assert_eq!(found["results"][0]["data"]["properties"]["type"], 848);

    let (status, dup) = ot
        .body(
            reqwest::Method::POST,
            "/api/v2/businessworkspaces",
            json!({"template_id": sample_ids::template_of(sample_ids::TYPE_PRODUCT_LAUNCH), "name": "Pump A100 Launch",
                   "parent_id": sample_ids::WORKSPACES_FOLDER, "ext_system_id": "4ALLPORTAL", "bo_type": "product", "bo_id": "4711"}),
        )
        .await;
    assert_eq!(status, 500);
    assert_eq!(
        dup["error"],
        "An item with the name 'Pump A100 Launch' already exists."
    );

    let (_, ws) = ot.get(&format!("/api/v2/businessworkspaces/{id}")).await;
    let data = &ws["results"]["data"];
    assert_eq!(data["properties"]["name"], "Pump A100 Launch");
    assert_eq!(data["business_properties"]["business_object_id"], "4711");
    assert_eq!(
        data["workspace_references"][0]["external_system_id"],
        "4ALLPORTAL"
    );
    let (_, folders) = ot.get(&format!("/api/v2/nodes/{id}/nodes")).await;
    assert_eq!(folders["collection"]["paging"]["total_count"], 4);
    find_child(&folders, "Marketing Assets");
    let (_, cats) = ot.get(&format!("/api/v2/nodes/{id}/categories")).await;
    assert_eq!(cats["results"][0]["data"]["categories"]["9830_2"], "4711");

    // Bulk upsert: the existing BO is updated in place, a new BO is created.
    let template = sample_ids::template_of(sample_ids::TYPE_PRODUCT_LAUNCH);
    let (status, results) = ot
        .body(
            reqwest::Method::PUT,
            "/api/v2/businessworkspaces",
            json!({"bws_infos": [
                {"template_id": template, "ext_system_id": "4ALLPORTAL", "bo_type": "product", "bo_id": "4711",
                 "name": "Pump A100 Launch", "roles": {"categories": {"9830": {"9830_3": "released"}}}},
                {"template_id": template, "ext_system_id": "4ALLPORTAL", "bo_type": "product", "bo_id": "4712", "name": "Pump A200 Launch"},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{results}");
    assert_eq!(results[0]["id"], id);
    assert_eq!(results[0]["error_message"], "");
    assert!(results[1]["id"].as_i64().unwrap() > 0);
    let (_, cats) = ot.get(&format!("/api/v2/nodes/{id}/categories/9830")).await;
    assert_eq!(cats["results"]["data"]["categories"]["9830_3"], "released");
    assert_eq!(cats["results"]["data"]["categories"]["9830_2"], "4711");
}

#[tokio::test]
async fn related_workspaces_are_two_way() {
    let sim = start(None).await;
    let mut ot = Ot::login(&sim).await;
    let a = create_launch_workspace(&mut ot, "1", "A").await;
    let b = create_launch_workspace(&mut ot, "2", "B").await;
    let (status, _) = ot
        .form(
            reqwest::Method::POST,
            &format!("/api/v2/businessworkspaces/{a}/relateditems"),
            &[("rel_bw_id", &b.to_string()), ("rel_type", "child")],
        )
        .await;
    assert_eq!(status, 200);
    let (_, rel) = ot
        .get(&format!("/api/v2/businessworkspaces/{b}/relateditems"))
        .await;
    assert_eq!(rel["results"][0]["data"]["properties"]["id"], a);
    assert_eq!(
        rel["results"][0]["data"]["properties"]["rel_type"],
        "parent"
    );
    assert_eq!(rel["paging"]["total_count"], 1);
}

#[tokio::test]
async fn folders_documents_versions_content_and_name_validation() {
    let sim = start(None).await;
    let mut ot = Ot::login(&sim).await;
    let ws = create_launch_workspace(&mut ot, "4711", "Pump").await;
    let (status, folder) = ot
        .body(
            reqwest::Method::POST,
            "/api/v2/nodes",
            json!({"type": 0, "parent_id": ws, "name": "Drafts"}),
        )
        .await;
    assert_eq!(status, 200);
    let folder_id = folder["results"]["data"]["properties"]["id"]
        .as_i64()
        .unwrap();

    let pdf = b"%PDF-1.4 first".to_vec();
    let (status, doc) = ot
        .upload(
            "/api/v2/nodes",
            Some(
                json!({"type": 144, "parent_id": folder_id, "name": "spec.pdf",
                   "roles": {"categories": {"9840_1": {}, "9840_5": "abc"}}}),
            ),
            &pdf,
            "spec.pdf",
        )
        .await;
    assert_eq!(status, 200, "{doc}");
    let doc_id = doc["results"]["data"]["properties"]["id"].as_i64().unwrap();
    assert_eq!(doc["results"]["data"]["properties"]["size"], pdf.len());

    let (status, dup) = ot
        .upload(
            "/api/v2/nodes",
            Some(json!({"type": 144, "parent_id": folder_id, "name": "spec.pdf"})),
            &pdf,
            "spec.pdf",
        )
        .await;
    assert_eq!(status, 500);
    assert_eq!(
        dup["error"],
        "An item with the name 'spec.pdf' already exists."
    );

    let (_, names) = ot
        .body(
            reqwest::Method::POST,
            "/api/v1/validation/nodes/names",
            json!({"parent_id": folder_id, "names": ["spec.pdf", "free.pdf"]}),
        )
        .await;
    assert_eq!(
        names["results"],
        json!([{"name": "spec.pdf", "id": doc_id, "type": 144}])
    );

    // Add a version with flat form fields (description) + file.
    let v2 = b"%PDF-1.4 second".to_vec();
    let form = reqwest::multipart::Form::new()
        .text("description", "updated")
        .part(
            "file",
            reqwest::multipart::Part::bytes(v2.clone()).file_name("spec.pdf"),
        );
    let req = ot
        .http
        .post(format!("{}/api/v2/nodes/{doc_id}/versions", ot.base))
        .multipart(form);
    let (status, added) = ot.send(req).await;
    assert_eq!(status, 200, "{added}");
    assert_eq!(added["results"]["data"]["versions"][0]["version_number"], 2);
    let (_, versions) = ot.get(&format!("/api/v2/nodes/{doc_id}/versions")).await;
    let list = versions["results"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["data"]["versions"]["file_size"], v2.len());

    let resp = ot
        .http
        .get(format!("{}/api/v2/nodes/{doc_id}/content", ot.base))
        .header("OTCSTicket", &ot.ticket)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-length"],
        v2.len().to_string().as_str()
    );
    assert!(
        resp.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("spec.pdf")
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), v2.as_slice());
    let old = ot
        .http
        .get(format!(
            "{}/api/v1/nodes/{doc_id}/versions/1/content",
            ot.base
        ))
        .header("OTCSTicket", &ot.ticket)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(old.as_ref(), pdf.as_slice());

    // where_name filters loosely; the exact match is the client's job.
    let (_, listing) = ot
        .get(&format!(
            "/api/v2/nodes/{folder_id}/nodes?where_name=spec&limit=1&page=1"
        ))
        .await;
    assert_eq!(listing["collection"]["paging"]["total_count"], 1);

    let state = sim.state();
    let node = state["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == doc_id)
        .unwrap();
    assert_eq!(
        node["versions"][1]["sha256"],
        hex::encode(Sha256::digest(&v2))
    );
}

#[tokio::test]
async fn a_moved_or_deleted_node_leaves_its_folders_listing() {
    let sim = start(None).await;
    let mut ot = Ot::login(&sim).await;
    let ws = create_launch_workspace(&mut ot, "4712", "Valve").await;
    let mut ids = Vec::new();
    for name in ["From", "To"] {
        let folder = json!({"type": 0, "parent_id": ws, "name": name});
        let (status, made) = ot
            .body(reqwest::Method::POST, "/api/v2/nodes", folder)
            .await;
        assert_eq!(status, 200, "{made}");
        ids.push(
            made["results"]["data"]["properties"]["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let (from, to) = (ids[0], ids[1]);
    let child = json!({"type": 0, "parent_id": from, "name": "Moving"});
    let (_, moving) = ot.body(reqwest::Method::POST, "/api/v2/nodes", child).await;
    let moving = moving["results"]["data"]["properties"]["id"]
        .as_i64()
        .unwrap();
    let names = |listing: &Value| -> Vec<String> {
        listing["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                n["data"]["properties"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let (status, _) = ot
        .body(
            reqwest::Method::PUT,
            &format!("/api/v2/nodes/{moving}"),
            json!({"parent_id": to}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, listing) = ot.get(&format!("/api/v2/nodes/{from}/nodes")).await;
    assert!(names(&listing).is_empty(), "{listing}");
    let (_, listing) = ot.get(&format!("/api/v2/nodes/{to}/nodes")).await;
    assert_eq!(names(&listing), ["Moving"]);
    let (status, _) = ot
        .body(
            reqwest::Method::DELETE,
            &format!("/api/v2/nodes/{to}"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, listing) = ot.get(&format!("/api/v2/nodes/{ws}/nodes")).await;
    assert!(!names(&listing).contains(&"To".to_string()), "{listing}");
    let (status, _) = ot.get(&format!("/api/v2/nodes/{moving}")).await;
    assert_ne!(status, 200, "a deleted folder's child is gone too");
}

#[tokio::test]
async fn category_update_with_metadata_token_and_conflict() {
    let sim = start(None).await;
    let mut ot = Ot::login(&sim).await;
    let ws = create_launch_workspace(&mut ot, "4711", "Pump").await;
    let (_, node) = ot.get(&format!("/api/v2/nodes/{ws}?state")).await;
    let token = node["results"]["state"]["categories"]["9830"]["metadata_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/v2/nodes/{ws}/categories/9830/");
    let (status, _) = ot
        .body(
            reqwest::Method::PUT,
            &path,
            json!({"9830_3": "eol", "9830_1": {"metadata_token": token}}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, conflict) = ot
        .body(
            reqwest::Method::PUT,
            &path,
            json!({"9830_3": "draft", "9830_1": {"metadata_token": token}}),
        )
        .await;
    assert_eq!(status, 409);
    assert!(
        conflict["error"]
            .as_str()
            .unwrap()
            .contains("edit conflict")
    );
    // Flat form fields work too (one client library sends them so).
    let (status, _) = ot
        .form(
            reqwest::Method::PUT,
            &format!("/api/v2/nodes/{ws}/categories/9830"),
            &[("9830_7", "pallet")],
        )
        .await;
    assert_eq!(status, 200);
    let (_, cat) = ot.get(&format!("/api/v2/nodes/{ws}/categories/9830")).await;
    assert_eq!(cat["results"]["data"]["categories"]["9830_3"], "eol");
    assert_eq!(cat["results"]["data"]["categories"]["9830_7"], "pallet");
    let (status, applied) = ot
        .form(
            reqwest::Method::POST,
            &format!("/api/v2/nodes/{ws}/categories"),
            &[("category_id", "9830")],
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        applied["error"]
            .as_str()
            .unwrap()
            .contains("already exists")
    );
}

#[tokio::test]
async fn large_file_upload_sessions_create_a_document() {
    let sim = start(None).await;
    let mut ot = Ot::login(&sim).await;
    let ws = create_launch_workspace(&mut ot, "4711", "Pump").await;
    let (_, settings) = ot.get("/api/v2/multipart/settings").await;
    assert_eq!(settings["is_enabled"], true);
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let (status, too_small) = ot
        .form(
            reqwest::Method::POST,
            "/api/v2/multipart",
            &[
                ("file_name", "a.bin"),
                ("file_size", "10"),
                ("mime_type", "application/octet-stream"),
            ],
        )
        .await;
    assert_eq!(status, 500);
    assert!(
        too_small["error"]
            .as_str()
            .unwrap()
            .starts_with("Invalid block size")
    );
    let size = content.len().to_string();
    let (status, session) = ot
        .form(
            reqwest::Method::POST,
            "/api/v2/multipart",
            &[
                ("file_name", "big.bin"),
                ("file_size", &size),
                ("mime_type", "application/octet-stream"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    let key = session["upload_key"].as_str().unwrap().to_owned();
    let part_size = session["part_size"].as_u64().unwrap() as usize;
    assert_eq!(
        session["num_parts"].as_u64().unwrap() as usize,
        content.len().div_ceil(part_size)
    );
    for (i, chunk) in content.chunks(part_size).enumerate() {
        let form = reqwest::multipart::Form::new().part(
            "part_content",
            reqwest::multipart::Part::bytes(chunk.to_vec()).file_name("part"),
        );
        let req = ot
            .http
            .post(format!("{}/api/v2/multipart/{key}/{}", ot.base, i + 1))
            .multipart(form);
        let (status, body) = ot.send(req).await;
        assert_eq!(status, 200, "{body}");
    }
    let again = reqwest::multipart::Form::new().part(
        "part_content",
        reqwest::multipart::Part::bytes(vec![1]).file_name("p"),
    );
    let req = ot
        .http
        .post(format!("{}/api/v2/multipart/{key}/1", ot.base))
        .multipart(again);
    assert_eq!(ot.send(req).await.0, 500);
    let (status, _) = ot
        .form(
            reqwest::Method::POST,
            &format!("/api/v2/multipart/{key}"),
            &[],
        )
        .await;
    assert_eq!(status, 200);
    let (status, doc) = ot
        .body(
            reqwest::Method::POST,
            "/api/v2/nodes",
            json!({"type": 144, "parent_id": ws, "name": "big.bin", "upload_key": key}),
        )
        .await;
    assert_eq!(status, 200, "{doc}");
    let id = doc["results"]["data"]["properties"]["id"].as_i64().unwrap();
    let state = sim.state();
    let node = state["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id)
        .unwrap();
    assert_eq!(
        node["versions"][0]["sha256"],
        hex::encode(Sha256::digest(&content))
    );
    assert_eq!(node["versions"][0]["size"], content.len());
}

#[tokio::test]
async fn workflow_draft_initiate_status_and_signed_decision_callback() {
    let (url, received, mut rx) = receiver().await;
    let sim = start(Some(url)).await;
    let mut ot = Ot::login(&sim).await;
    let ws = create_launch_workspace(&mut ot, "4711", "Pump").await;
    let (status, draft) = ot
        .body(reqwest::Method::POST, "/api/v2/draftprocesses",
              json!({"workflow_id": sample_ids::WORKFLOW_CHANGE_APPROVAL, "doc_ids": ws.to_string(), "AttachDocuments": "TRUE"}))
        .await;
    assert_eq!(status, 200, "{draft}");
    let draft_id = draft["results"]["draftprocess_id"].as_i64().unwrap();
    let (status, _) = ot
        .body(
            reqwest::Method::PUT,
            &format!("/api/v2/draftprocesses/{draft_id}"),
            json!({"action": "formUpdate", "values": {"WorkflowForm_Title": "Change 4711"}}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, started) = ot
        .body(
            reqwest::Method::PUT,
            &format!("/api/v2/draftprocesses/{draft_id}"),
            json!({"action": "Initiate", "comment": "start"}),
        )
        .await;
    assert_eq!(status, 200);
    let pid = started["results"]["process_id"].as_i64().unwrap();
    let (_, st) = ot
        .get(&format!("/api/v2/workflows/status/processes/{pid}"))
        .await;
    assert_eq!(st["results"]["wf_details"]["status"], "ontime");
    assert_eq!(st["results"]["wf_details"]["wf_name"], "Change 4711");

    // The running-workflow list filters by map, a part of the title and the business workspace
    // (content-server-rest-api-2.0.2: getWorkflowRunning_v2, `workflow_active_properties`).
    let map = sample_ids::WORKFLOW_CHANGE_APPROVAL;
    let (status, active) = ot
        .get(&format!(
            "/api/v2/workflows/status/active?mapObjId={map}&search_name=change%204711&businessWorkspaceID={ws}"
        ))
        .await;
    assert_eq!(status, 200, "{active}");
    let found = active["results"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{active}");
    assert_eq!(found[0]["Work_WorkID"], pid);
    assert_eq!(found[0]["SubWork_Title"], "Change 4711");
    assert_eq!(found[0]["Map_MapObjID"], map);
    for miss in [
        format!("mapObjId={}", map + 1),
        "search_name=other".to_string(),
        format!("businessWorkspaceID={}", ws + 1),
    ] {
        let (_, none) = ot
            .get(&format!("/api/v2/workflows/status/active?{miss}"))
            .await;
        assert_eq!(none["results"], json!([]), "{miss}: {none}");
    }
    let (status, initiated) = ot.get("/api/v2/workflows/status?Kind=Initiated").await;
    assert_eq!(status, 200);
    assert_eq!(
        initiated["results"][0]["data"]["wfstatus"]["process_id"],
        pid
    );
    assert_eq!(
        initiated["results"][0]["data"]["wfstatus"]["wf_name"],
        "Change 4711"
    );
    let (status, _) = ot.get("/api/v2/workflows/status?Kind=Everything").await;
    assert_eq!(status, 400);

    let (status, bad) = ot
        .body(
            reqwest::Method::POST,
            "/api/v2/draftprocesses",
            json!({"workflow_id": 1, "doc_ids": ws.to_string()}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(bad["error"].is_string());

    let done: Value = reqwest::Client::new()
        .post(format!("{}/workflows/{pid}/complete", sim.control_url()))
        .json(&json!({"decision": "approved", "comment": "ok", "approver": "jdoe"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(done["callback"]["status"], 202);
    rx.recv().await.unwrap();
    let (headers, body) = received.lock().unwrap()[0].clone();
    verify_signature(&headers, &body);
    let event: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["type"], "workflow.decision");
    assert_eq!(
        event["business_object"],
        json!({"ext_system_id": "4ALLPORTAL", "bo_type": "product", "bo_id": "4711"})
    );
    assert_eq!(event["workspace_id"], ws);
    assert_eq!(event["workflow"]["process_id"], pid);
    assert_eq!(event["workflow"]["decision"], "approved");
    assert_eq!(event["workflow"]["approver"], "jdoe");
    assert!(event["event_id"].is_string() && event["occurred_at"].is_string());

    let (_, st) = ot
        .get(&format!("/api/v2/workflows/status/processes/{pid}"))
        .await;
    assert_eq!(st["results"]["wf_details"]["status"], "completed");
    // A decided workflow is no longer running, but still listed as initiated.
    let (_, active) = ot
        .get(&format!("/api/v2/workflows/status/active?mapObjId={map}"))
        .await;
    assert_eq!(active["results"], json!([]));
    let (_, initiated) = ot.get("/api/v2/workflows/status?Kind=Initiated").await;
    assert_eq!(
        initiated["results"][0]["data"]["wfstatus"]["status_key"],
        "completed"
    );
    let (_, acts) = ot
        .get(&format!(
            "/api/v2/processes/{pid}/subprocesses/{pid}/activities"
        ))
        .await;
    assert_eq!(acts["results"]["data"][0]["action"], "Approve");
    assert_eq!(acts["results"]["data"][0]["comment"], "ok");
}

#[tokio::test]
async fn partner_upload_and_approval_send_partner_document_callback() {
    let (url, received, mut rx) = receiver().await;
    let sim = start(Some(url)).await;
    let ws: Value = reqwest::Client::new()
        .post(format!("{}/workspaces", sim.control_url()))
        .json(&json!({"wksp_type_id": sample_ids::TYPE_PARTNER, "name": "Nordic", "bo_id": "d-1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ws_id = ws["id"].as_i64().unwrap();
    let upload = || async {
        reqwest::Client::new()
            .post(format!("{}/partner/upload", sim.control_url()))
            .json(&json!({"workspace_id": ws_id, "name": "cert-de.pdf", "content": "%PDF-1.4 cert", "mime_type": "application/pdf"}))
            .send()
            .await
            .unwrap()
    };
    // The partner user is no member of the workspace yet: refused as the API refuses it.
    let refused = upload().await;
    assert_eq!(refused.status(), 400);
    // An administrator puts the partner's group into the Partners role, which may add items.
    let mut ot = Ot::login(&sim).await;
    let (_, roles) = ot
        .get(&format!("/api/v2/businessworkspaces/{ws_id}/roles"))
        .await;
    let partners = roles["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["data"]["properties"]["name"] == "Partners")
        .unwrap()["data"]["properties"]["id"]
        .as_i64()
        .unwrap();
    let role = format!("/api/v2/businessworkspaces/{ws_id}/roles/{partners}");
    let perms = json!({"permissions": ["see", "see_contents", "add_items"], "apply_to": 2});
    assert_eq!(ot.body(reqwest::Method::PUT, &role, perms).await.0, 200);
    let member = json!({"id": sample_ids::GROUP_PARTNER_NORDIC});
    let members = format!("{role}/members");
    assert_eq!(
        ot.body(reqwest::Method::POST, &members, member).await.0,
        200
    );
    let up: Value = upload().await.json().await.unwrap();
    let node_id = up["node_id"].as_i64().unwrap();
    reqwest::Client::new()
        .post(format!("{}/partner/approve", sim.control_url()))
        .json(&json!({"node_id": node_id}))
        .send()
        .await
        .unwrap();
    rx.recv().await.unwrap();
    let (headers, body) = received.lock().unwrap()[0].clone();
    verify_signature(&headers, &body);
    let event: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["type"], "partner_document.approved");
    assert_eq!(
        event["document"],
        json!({"node_id": node_id, "version": 1, "name": "cert-de.pdf"})
    );
    assert_eq!(event["business_object"]["bo_type"], "partner_product");
    assert_eq!(event["workspace_id"], ws_id);
}

#[tokio::test]
async fn records_management_classify_finalize_and_holds() {
    let sim = start(None).await;
    let mut ot = Ot::login(&sim).await;
    let ws = create_launch_workspace(&mut ot, "4711", "Pump").await;
    let path = format!("/api/v1/nodes/{ws}/rmclassifications");
    let (_, before) = ot.get(&path).await;
    let token = before["rm_metadataToken"].as_str().unwrap().to_owned();
    let (status, _) = ot
        .body(reqwest::Method::POST, &path,
              json!({"class_id": sample_ids::RM_CLASS_PRODUCT_RECORDS, "rm_metadataToken": token, "apply_to_sub_items": true}))
        .await;
    assert_eq!(status, 200);
    let (_, after) = ot.get(&path).await;
    assert_eq!(
        after["data"][0]["rmclassification_id"],
        sample_ids::RM_CLASS_PRODUCT_RECORDS
    );
    let token = after["rm_metadataToken"].as_str().unwrap().to_owned();
    let (status, _) = ot
        .body(
            reqwest::Method::PUT,
            &path,
            json!({"rm_metadataToken": token, "status": "CLOSED", "official": true}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, stale) = ot
        .body(
            reqwest::Method::PUT,
            &path,
            json!({"rm_metadataToken": token, "status": "X"}),
        )
        .await;
    assert_eq!(status, 409, "{stale}");

    let (status, missing) = ot
        .form(
            reqwest::Method::PUT,
            "/api/v1/rmclassifications/finalizerecords",
            &[],
        )
        .await;
    assert_eq!(status, 404, "{missing}");
    let (status, _) = ot
        .form(
            reqwest::Method::PUT,
            "/api/v1/rmclassifications/finalizerecords",
            &[("ids", &format!("[{ws}]"))],
        )
        .await;
    assert_eq!(status, 200);
    let (_, fin) = ot.get(&path).await;
    assert_eq!(fin["data"][0]["finalized"], true);
    assert_eq!(fin["data"][0]["status"], "CLOSED");

    // hold_id in the query (RM-SPEC) and in the body (client libraries).
    let hold = sample_ids::HOLD_PRODUCT_LIABILITY;
    let (status, _) = ot
        .form(
            reqwest::Method::POST,
            &format!("/api/v1/nodes/{ws}/holds?hold_id={hold}"),
            &[],
        )
        .await;
    assert_eq!(status, 200);
    // Query and form field at once, as a cautious client sends it.
    let hold_s = hold.to_string();
    let query = format!("/api/v1/nodes/{ws}/holds?hold_id={hold}");
    let (status, both) = ot
        .form(reqwest::Method::POST, &query, &[("hold_id", &hold_s)])
        .await;
    assert_eq!(status, 200, "{both}");
    let (_, folders) = ot.get(&format!("/api/v2/nodes/{ws}/nodes")).await;
    let folder = find_child(&folders, "Pricing");
    let (status, _) = ot
        .body(
            reqwest::Method::POST,
            &format!("/api/v1/nodes/{folder}/holds"),
            json!({"hold_id": hold}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, none) = ot
        .form(
            reqwest::Method::POST,
            &format!("/api/v1/nodes/{folder}/holds"),
            &[],
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(none["error"], "Missing LLPARAMS_LIST");
    let (_, holds) = ot.get(&format!("/api/v1/nodes/{ws}/holds")).await;
    assert_eq!(holds["data"][0]["hold_id"], hold);
    let (status, _) = ot
        .send(
            ot.http
                .delete(format!("{}/api/v1/nodes/{ws}/holds/999", ot.base)),
        )
        .await;
    assert_eq!(status, 400);
    let (_, all) = ot.get("/api/v2/holds").await;
    assert_eq!(all["results"]["ok"], true);
}

#[tokio::test]
async fn roles_made_read_only_and_members_by_id_or_member_id() {
    let sim = start(None).await;
    let mut ot = Ot::login(&sim).await;
    let ws = create_launch_workspace(&mut ot, "4711", "Pump").await;
    let (_, roles) = ot
        .get(&format!("/api/v2/businessworkspaces/{ws}/roles"))
        .await;
    let role_ids: Vec<i64> = roles["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["data"]["properties"]["id"].as_i64().unwrap())
        .collect();
    // Owner, Members, Viewers, and the three the launch template defines.
    assert_eq!(role_ids.len(), 6);
    for role in &role_ids {
        let (status, updated) = ot
            .body(
                reqwest::Method::PUT,
                &format!("/api/v2/businessworkspaces/{ws}/roles/{role}"),
                json!({"permissions": ["see", "see_contents"], "apply_to": 2}),
            )
            .await;
        assert_eq!(status, 200);
        // The roles answer carries the `perms` integer only, as the reference shows: the
        // simulator's bits follow the spec's order of names (see 1, see_contents 2).
        let properties = &updated["results"]["data"]["properties"];
        assert_eq!(properties["perms"], 3, "{properties}");
        assert!(properties.get("permissions").is_none(), "{properties}");
    }
    let members = format!(
        "/api/v2/businessworkspaces/{ws}/roles/{}/members",
        role_ids[1]
    );
    assert_eq!(
        ot.body(reqwest::Method::POST, &members, json!({"id": 1001}))
            .await
            .0,
        200
    );
    assert_eq!(
        ot.form(reqwest::Method::POST, &members, &[("member_id", "2001")])
            .await
            .0,
        200
    );
    let (_, list) = ot.get(&members).await;
    let ids: Vec<i64> = list["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"]["properties"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1001, 2001]);
}

#[tokio::test]
async fn faults_outage_retry_after_error_rate_and_request_log() {
    let sim = start(None).await;
    let mut ot = Ot::login(&sim).await;
    sim.clear_requests();
    ot.get("/api/v2/nodes/2000").await;
    assert!(sim.requests().iter().all(|r| !r.is_write()));
    assert_eq!(sim.requests().len(), 1);

    let set = reqwest::Client::new()
        .put(format!("{}/faults", sim.control_url()))
        .json(&json!({"outage_secs": 60, "retry_after_secs": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let resp = ot
        .http
        .get(format!("{}/api/v2/nodes/2000", ot.base))
        .header("OTCSTicket", &ot.ticket)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "3");
    let control = reqwest::Client::new()
        .get(format!("{}/state", sim.control_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(control.status(), 200);

    sim.set_faults(FaultSettings {
        error_rate: 1.0,
        ..Default::default()
    });
    assert_eq!(ot.get("/api/v2/nodes/2000").await.0, 503);
    sim.set_faults(FaultSettings::default());
    assert_eq!(ot.get("/api/v2/nodes/2000").await.0, 200);
    let log: Vec<Value> = reqwest::Client::new()
        .get(format!("{}/requests", sim.control_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let statuses: Vec<u64> = log.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [200, 503, 503, 200]);
}

#[tokio::test]
async fn injected_duplicate_create_is_carried_out_and_answered_with_500() {
    let sim = start(None).await;
    let mut ot = Ot::login(&sim).await;
    sim.set_faults(FaultSettings {
        duplicate_creates: 1,
        ..Default::default()
    });
    let (status, body) = ot
        .body(
            reqwest::Method::POST,
            "/api/v2/nodes",
            json!({"type": 0, "parent_id": sample_ids::WORKSPACES_FOLDER, "name": "Lost"}),
        )
        .await;
    assert_eq!(status, 500);
    assert_eq!(
        body["error"],
        "An item with the name 'Lost' already exists."
    );
    // The folder exists: a lookup by name finds it, and the next create is answered normally.
    let (_, listing) = ot
        .get(&format!(
            "/api/v2/nodes/{}/nodes?where_name=Lost",
            sample_ids::WORKSPACES_FOLDER
        ))
        .await;
    find_child(&listing, "Lost");
    let (status, _) = ot
        .body(
            reqwest::Method::POST,
            "/api/v2/nodes",
            json!({"type": 0, "parent_id": sample_ids::WORKSPACES_FOLDER, "name": "Other"}),
        )
        .await;
    assert_eq!(status, 200);
}
