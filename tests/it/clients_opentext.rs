//! The OpenText client against a real HTTP server on loopback (wiremock): login modes, ticket
//! refresh, single-flight re-login, typed errors, and the exact shape of every kind of request
//! (form `body` field, multipart parts, headers, Large File Upload sequence).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use secrecy::SecretString;
use serde_json::{Value, json};
use url::Url;
use wiremock::matchers::{body_string_contains, header, method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};
use xecm_bridge::clients::UpstreamError;
use xecm_bridge::clients::config::{OpentextAuth, OpentextConfig, TransportConfig};
use xecm_bridge::clients::file::FileUpload;
use xecm_bridge::clients::opentext::{
    BusinessObject, DocumentCreate, OpentextClient, RelationType, VersionCreate, WorkspaceCreate,
    WorkspaceRoles,
};

const PASSWORD: &str = "s#cret pw";
const BASE: &str = "/otcs/cs";

fn config(server: &MockServer, auth: OpentextAuth) -> OpentextConfig {
    OpentextConfig {
        base_url: Url::parse(&format!("{}{BASE}", server.uri())).unwrap(),
        auth,
        username: "svc-bridge".into(),
        password: SecretString::from(PASSWORD),
        domain: None,
        otds_url: Some(Url::parse(&server.uri()).unwrap()),
        client_id: Some("bridge".into()),
        client_secret: Some(SecretString::from("client-secret-value")),
        ext_system_id: "4AP".into(),
        multipart_threshold_bytes: 1 << 20,
        multipart_part_bytes: 1 << 20,
        ca_file: None,
        client_cert_file: None,
        client_key_file: None,
        max_requests_per_sec: 0.0,
        max_concurrent_requests: 0,
        rate_limit_replicas: 1,
        transport: TransportConfig {
            connect_timeout_secs: 2,
            request_timeout_secs: 10,
            max_retries: 0,
            backoff_base_ms: 1,
            backoff_max_ms: 10,
            circuit_failure_rate: 0.5,
            circuit_min_requests: 1000,
            circuit_window_secs: 30,
            circuit_open_secs: 30,
        },
    }
}

fn api(p: &str) -> String {
    format!("{BASE}/api{p}")
}

fn node_answer(id: i64, name: &str) -> Value {
    json!({"results": {"data": {"properties": {"id": id, "name": name, "type": 0}}}})
}

async fn mount_login(server: &MockServer, ticket: &str) {
    Mock::given(method("POST"))
        .and(path(api("/v1/auth")))
        .and(body_string_contains("username=svc-bridge"))
        .and(body_string_contains("password=s%23cret+pw"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "ticket": ticket })))
        .mount(server)
        .await;
}

/// The `body` form field of a urlencoded request, parsed as JSON.
fn form_body(request: &Request) -> Option<Value> {
    form_fields(request)
        .remove("body")
        .and_then(|b| serde_json::from_str(&b).ok())
}

fn form_fields(request: &Request) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(&request.body)
        .into_owned()
        .collect()
}

async fn requests_to(server: &MockServer, p: &str) -> Vec<Request> {
    let full = api(p);
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == full)
        .collect()
}

#[tokio::test]
async fn logs_in_with_a_form_and_follows_refreshed_tickets() {
    let server = MockServer::start().await;
    mount_login(&server, "T1").await;
    Mock::given(method("GET"))
        .and(path(api("/v2/nodes/5")))
        .and(header("otcsticket", "T1"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("OTCSTicket", "T2")
                .set_body_json(node_answer(5, "a")),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api("/v2/nodes/6")))
        .and(header("otcsticket", "T2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(node_answer(6, "b")))
        .expect(1)
        .mount(&server)
        .await;
    let client = OpentextClient::new(&config(&server, OpentextAuth::Otcs)).unwrap();

    assert_eq!(client.node(5).await.unwrap().name, "a");
    assert_eq!(client.node(6).await.unwrap().name, "b");
    assert_eq!(client.logins(), 1);
    let login = &requests_to(&server, "/v1/auth").await[0];
    assert_eq!(
        login.headers.get("content-type").unwrap(),
        "application/x-www-form-urlencoded"
    );
}

#[tokio::test]
async fn fifty_concurrent_calls_on_an_expired_ticket_log_in_once() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("/v1/auth")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ticket": "T1"})))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(api("/v1/auth")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ticket": "T2"})))
        .mount(&server)
        .await;
    Mock::given(path(api("/v2/nodes/1")))
        .respond_with(ResponseTemplate::new(200).set_body_json(node_answer(1, "warm-up")))
        .mount(&server)
        .await;
    Mock::given(path(api("/v2/nodes/7")))
        .and(header("otcsticket", "T1"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    Mock::given(path(api("/v2/nodes/7")))
        .and(header("otcsticket", "T2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(node_answer(7, "x")))
        .mount(&server)
        .await;
    let client = OpentextClient::new(&config(&server, OpentextAuth::Otcs)).unwrap();
    client.node(1).await.unwrap();

    let calls = (0..50).map(|_| {
        let c = client.clone();
        tokio::spawn(async move { c.node(7).await })
    });
    for call in futures::future::join_all(calls).await {
        assert_eq!(call.unwrap().unwrap().id, 7);
    }
    assert_eq!(
        client.logins(),
        2,
        "one login at start, exactly one re-login"
    );
    assert_eq!(requests_to(&server, "/v1/auth").await.len(), 2);
}

#[tokio::test]
async fn persistent_401_is_unauthorized_after_one_relogin() {
    let server = MockServer::start().await;
    mount_login(&server, "T1").await;
    Mock::given(path(api("/v2/nodes/3")))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    let client = OpentextClient::new(&config(&server, OpentextAuth::Otcs)).unwrap();
    let error = client.node(3).await.unwrap_err();
    assert!(
        matches!(error, UpstreamError::Unauthorized { .. }),
        "{error:?}"
    );
    assert_eq!(client.logins(), 2);
    assert_eq!(requests_to(&server, "/v2/nodes/3").await.len(), 2);
}

#[tokio::test]
async fn wrong_password_is_unauthorized() {
    let server = MockServer::start().await;
    Mock::given(path(api("/v1/auth")))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"error": "Invalid username/password specified."})),
        )
        .mount(&server)
        .await;
    let client = OpentextClient::new(&config(&server, OpentextAuth::Otcs)).unwrap();
    let error = client.node(1).await.unwrap_err();
    assert!(
        matches!(error, UpstreamError::Unauthorized { .. }),
        "{error:?}"
    );
    assert!(!error.to_string().contains(PASSWORD));
}

#[tokio::test]
async fn otds_ticket_login_then_follows_the_content_server_ticket() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/otdsws/rest/authentication/credentials"))
        .and(wiremock::matchers::body_json(
            json!({"userName": "svc-bridge", "password": PASSWORD}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ticket": "*OTDSSSO*abc"})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path(api("/v2/nodes/1")))
        .and(header("otdsticket", "*OTDSSSO*abc"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("OTCSTicket", "CS1")
                .set_body_json(node_answer(1, "a")),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path(api("/v2/nodes/2")))
        .and(header("otcsticket", "CS1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(node_answer(2, "b")))
        .expect(1)
        .mount(&server)
        .await;
    let client = OpentextClient::new(&config(&server, OpentextAuth::Otds)).unwrap();
    client.node(1).await.unwrap();
    client.node(2).await.unwrap();
}

#[tokio::test]
async fn oauth2_client_credentials_become_a_bearer_token() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/otdsws/oauth2/token"))
        .and(body_string_contains("grant_type=client_credentials"))
        .and(body_string_contains("client_id=bridge"))
        .and(body_string_contains("client_secret=client-secret-value"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"access_token": "AT-1"})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path(api("/v2/nodes/1")))
        .and(header("authorization", "Bearer AT-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(node_answer(1, "a")))
        .expect(1)
        .mount(&server)
        .await;
    let client = OpentextClient::new(&config(&server, OpentextAuth::Oauth2)).unwrap();
    client.node(1).await.unwrap();
}

#[tokio::test]
async fn finds_the_workspace_of_a_business_object() {
    let server = MockServer::start().await;
    mount_login(&server, "T").await;
    Mock::given(method("GET"))
        .and(path(api("/v2/businessworkspaces")))
        .and(query_param("expanded_view", "true"))
        .and(query_param("where_ext_system_id", "4AP"))
        .and(query_param("where_bo_type", "product"))
        .and(query_param("where_bo_id", "P-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "paging": {"limit": 10, "page": 1, "page_total": 1, "total_count": 1},
            "results": [{"data": {"properties": {"id": 8291, "parent_id": 6129,
                         "name": "P-1 Pump", "type": 848, "wnf_wksp_type_id": 16}}}]
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api("/v2/businessworkspaces")))
        .and(query_param("where_bo_id", "P-2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": []})))
        .mount(&server)
        .await;
    let client = OpentextClient::new(&config(&server, OpentextAuth::Otcs)).unwrap();
    let bo = |id: &str| BusinessObject {
        ext_system_id: "4AP".into(),
        bo_type: "product".into(),
        bo_id: id.into(),
    };
    let found = client.find_workspace(&bo("P-1")).await.unwrap().unwrap();
    assert_eq!((found.id, found.wnf_wksp_type_id), (8291, Some(16)));
    assert_eq!(client.find_workspace(&bo("P-2")).await.unwrap(), None);
}

#[tokio::test]
async fn create_workspace_sends_a_body_field_and_maps_duplicates_to_conflict() {
    let server = MockServer::start().await;
    mount_login(&server, "T").await;
    Mock::given(method("POST"))
        .and(path(api("/v2/businessworkspaces")))
        .and(|r: &Request| form_body(r).is_some_and(|b| b["name"] == "P-1 Pump"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"results": {"id": 224082, "direct_open": true, "sub_folder_id": 0}}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(api("/v2/businessworkspaces")))
        .respond_with(
            ResponseTemplate::new(500)
                .set_body_json(json!({"error": "An item with the name 'P-1' already exists."})),
        )
        .mount(&server)
        .await;
    let client = OpentextClient::new(&config(&server, OpentextAuth::Otcs)).unwrap();
    let bo = BusinessObject {
        ext_system_id: "4AP".into(),
        bo_type: "product".into(),
        bo_id: "P-1".into(),
    };
    let create = WorkspaceCreate {
        template_id: Some(607403),
        parent_id: Some(2000),
        name: "P-1 Pump".into(),
        roles: Some(WorkspaceRoles {
            categories: [(
                "23228".to_string(),
                [("23228_2".to_string(), json!("DE"))].into(),
            )]
            .into(),
            rmclassifications: None,
        }),
        ..WorkspaceCreate::default()
    }
    .with_business_object(&bo);
    assert_eq!(client.create_workspace(&create).await.unwrap(), 224082);

    let sent = &requests_to(&server, "/v2/businessworkspaces").await[0];
    assert_eq!(
        sent.headers.get("content-type").unwrap(),
        "application/x-www-form-urlencoded"
    );
    assert_eq!(
        form_body(sent).unwrap(),
        json!({"template_id": 607403, "parent_id": 2000, "name": "P-1 Pump",
               "ext_system_id": "4AP", "bo_type": "product", "bo_id": "P-1",
               "roles": {"categories": {"23228": {"23228_2": "DE"}}}})
    );

    let duplicate = WorkspaceCreate {
        name: "P-1".into(),
        ..WorkspaceCreate::default()
    };
    let error = client.create_workspace(&duplicate).await.unwrap_err();
    assert!(matches!(error, UpstreamError::Conflict { .. }), "{error:?}");
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn bulk_upsert_sends_bws_infos_and_reads_per_entry_results() {
    let server = MockServer::start().await;
    mount_login(&server, "T").await;
    Mock::given(method("PUT"))
        .and(path(api("/v2/businessworkspaces")))
        .and(|r: &Request| form_body(r).is_some_and(|b| b["bws_infos"][1]["bo_id"] == "P-2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            {"id": 11, "error_message": ""},
            {"id": null, "error_message": "Template not found"}
        ])))
        .expect(1)
        .mount(&server)
        .await;
    let client = OpentextClient::new(&config(&server, OpentextAuth::Otcs)).unwrap();
    let entry = |id: &str| WorkspaceCreate {
        name: id.into(),
        ext_system_id: Some("4AP".into()),
        bo_type: Some("product".into()),
        bo_id: Some(id.into()),
        ..WorkspaceCreate::default()
    };
    let results = client
        .upsert_workspaces(&[entry("P-1"), entry("P-2")])
        .await
        .unwrap();
    assert_eq!(results[0].id, Some(11));
    assert_eq!(
        results[1].error_message.as_deref(),
        Some("Template not found")
    );
}

#[tokio::test]
async fn errors_are_typed_for_flows() {
    let server = MockServer::start().await;
    mount_login(&server, "T").await;
    Mock::given(path(api("/v2/nodes/404")))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error":
            "Sorry, the item you requested could not be accessed. Either it does not exist or you do not have permission to access it."})))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path(api("/v2/nodes/9/categories/9830/")))
        .respond_with(
            ResponseTemplate::new(409)
                .set_body_json(json!({"error": "Could not update metadata (edit conflict)."})),
        )
        .mount(&server)
        .await;
    let client = OpentextClient::new(&config(&server, OpentextAuth::Otcs)).unwrap();
    let error = client.node(404).await.unwrap_err();
    assert!(matches!(error, UpstreamError::NotFound { .. }), "{error:?}");

    let values: BTreeMap<String, Value> = [("9830_2".to_string(), json!("new"))].into();
    let error = client
        .update_category(9, 9830, &values, Some("tok-1"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, UpstreamError::EditConflict { .. }),
        "{error:?}"
    );
    let sent = &requests_to(&server, "/v2/nodes/9/categories/9830/").await[0];
    assert_eq!(
        form_body(sent).unwrap(),
        json!({"9830_2": "new", "9830_1": {"metadata_token": "tok-1"}})
    );
}

#[tokio::test]
async fn finds_a_child_by_exact_name_across_pages() {
    let server = MockServer::start().await;
    mount_login(&server, "T").await;
    let page = |n: u64, names: &[(i64, &str)]| {
        json!({
            "collection": {"paging": {"page": n, "page_total": 2, "limit": 100}},
            "results": names.iter().map(|(id, name)| json!({"data": {"properties":
                {"id": id, "name": name, "type": 0}}})).collect::<Vec<_>>()
        })
    };
    Mock::given(path(api("/v2/nodes/50/nodes")))
        .and(query_param("page", "1"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(page(1, &[(1, "Specs old"), (2, "specs")])),
        )
        .mount(&server)
        .await;
    Mock::given(path(api("/v2/nodes/50/nodes")))
        .and(query_param("page", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(2, &[(3, "Specs")])))
        .mount(&server)
        .await;
    let client = OpentextClient::new(&config(&server, OpentextAuth::Otcs)).unwrap();
    assert_eq!(client.find_child(50, "Specs").await.unwrap().unwrap().id, 3);
    assert_eq!(client.find_child(50, "Nope").await.unwrap(), None);
    let first = &requests_to(&server, "/v2/nodes/50/nodes").await[0];
    assert!(
        first
            .url
            .query_pairs()
            .any(|(k, v)| k == "where_name" && v == "Specs")
    );
}

#[tokio::test]
async fn validates_names_and_creates_folders() {
    let server = MockServer::start().await;
    mount_login(&server, "T").await;
    Mock::given(method("POST"))
        .and(path(api("/v1/validation/nodes/names")))
        .and(|r: &Request| {
            form_body(r) == Some(json!({"parent_id": 2000, "names": ["a.pdf", "b.pdf"]}))
        })
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"results": [{"name": "a.pdf", "id": 87221}]})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(api("/v2/nodes")))
        .and(|r: &Request| {
            form_body(r) == Some(json!({"type": 0, "parent_id": 2000, "name": "Specs"}))
        })
        .respond_with(ResponseTemplate::new(200).set_body_json(node_answer(77, "Specs")))
        .mount(&server)
        .await;
    let client = OpentextClient::new(&config(&server, OpentextAuth::Otcs)).unwrap();
    let taken = client
        .validate_names(2000, &["a.pdf", "b.pdf"])
        .await
        .unwrap();
    assert_eq!((taken.len(), taken[0].id), (1, 87221));
    assert_eq!(client.create_folder(2000, "Specs").await.unwrap(), 77);
}

/// Name, headers and content of each part of a multipart body.
fn multipart_parts(request: &Request) -> Vec<(String, Vec<u8>)> {
    let content_type = request
        .headers
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        content_type.starts_with("multipart/form-data"),
        "{content_type}"
    );
    let boundary = format!("--{}", content_type.split("boundary=").nth(1).unwrap());
    let body = &request.body;
    let mut parts = Vec::new();
    let mut rest: &[u8] = body;
    while let Some(start) = find(rest, boundary.as_bytes()) {
        rest = &rest[start + boundary.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        rest = &rest[2..];
        let head_end = find(rest, b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&rest[..head_end]).to_string();
        let content = &rest[head_end + 4..];
        let end = find(content, format!("\r\n{boundary}").as_bytes()).unwrap();
        parts.push((head, content[..end].to_vec()));
        rest = &content[end + 2..];
    }
    parts
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn part<'a>(parts: &'a [(String, Vec<u8>)], name: &str) -> &'a (String, Vec<u8>) {
    parts
        .iter()
        .find(|(h, _)| h.contains(&format!("name=\"{name}\"")))
        .unwrap_or_else(|| panic!("no part {name}"))
}

fn upload(content: &'static [u8], name: &str) -> FileUpload {
    let chunks: Vec<Result<Bytes, std::io::Error>> = content
        .chunks(1000)
        .map(|c| Ok(Bytes::from_static(c)))
        .collect();
    FileUpload::new(
        futures::stream::iter(chunks),
        content.len() as u64,
        name,
        "application/pdf",
    )
}

async fn mount_session_check(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path(api("/v1/auth")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": {"id": 1000}})))
        .mount(server)
        .await;
}

#[tokio::test]
async fn uploads_documents_and_versions_as_multipart_body_and_file() {
    static CONTENT: [u8; 5000] = [42u8; 5000];
    let server = MockServer::start().await;
    mount_login(&server, "T").await;
    mount_session_check(&server).await;
    Mock::given(method("POST"))
        .and(path(api("/v2/nodes")))
        .and(header("otcsticket", "T"))
        .respond_with(ResponseTemplate::new(200).set_body_json(node_answer(4242, "spec.pdf")))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(api("/v2/nodes/4242/versions")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": {}})))
        .mount(&server)
        .await;
    let client = OpentextClient::new(&config(&server, OpentextAuth::Otcs)).unwrap();
    let document = DocumentCreate {
        parent_id: 77,
        name: "spec.pdf".into(),
        description: Some("Technical specification".into()),
        categories: [("9830_2".to_string(), json!("v1"))].into(),
        ..DocumentCreate::default()
    };
    let id = client
        .upload_document(&document, upload(&CONTENT, "spec.pdf"))
        .await
        .unwrap();
    assert_eq!(id, 4242);
    let sent = &requests_to(&server, "/v2/nodes").await[0];
    let parts = multipart_parts(sent);
    let body: Value = serde_json::from_slice(&part(&parts, "body").1).unwrap();
    assert_eq!(
        body,
        json!({"type": 144, "parent_id": 77, "name": "spec.pdf",
               "description": "Technical specification",
               "roles": {"categories": {"9830_2": "v1"}}})
    );
    let (head, content) = part(&parts, "file");
    assert!(head.contains("filename=\"spec.pdf\""), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/pdf")
    );
    assert_eq!(content.as_slice(), CONTENT.as_slice());

    let long = "x".repeat(300);
    let version = VersionCreate {
        description: Some(long),
        add_major_version: true,
    };
    client
        .upload_version(4242, &version, upload(&CONTENT, "spec.pdf"))
        .await
        .unwrap();
    let sent = &requests_to(&server, "/v2/nodes/4242/versions").await[0];
    let parts = multipart_parts(sent);
    assert_eq!(part(&parts, "description").1.len(), 255);
    assert_eq!(part(&parts, "add_major_version").1, b"true");
    assert_eq!(part(&parts, "file").1.as_slice(), CONTENT.as_slice());
}

#[tokio::test]
async fn large_files_go_through_the_multipart_upload_api() {
    static CONTENT: std::sync::LazyLock<Vec<u8>> =
        std::sync::LazyLock::new(|| (0..10_000u32).map(|i| (i % 253) as u8).collect());
    let server = MockServer::start().await;
    mount_login(&server, "T").await;
    mount_session_check(&server).await;
    Mock::given(method("POST"))
        .and(path(api("/v2/multipart")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results":
            {"upload_key": "K1", "num_parts": 3, "part_size": 4096, "max_retries": 3}})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(format!("^{BASE}/api/v2/multipart/K1/[0-9]+$")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(3)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(api("/v2/multipart/K1")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(api("/v2/nodes")))
        .and(|r: &Request| form_body(r).is_some_and(|b| b["upload_key"] == "K1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(node_answer(99, "big.bin")))
        .expect(1)
        .mount(&server)
        .await;
    let mut cfg = config(&server, OpentextAuth::Otcs);
    cfg.multipart_threshold_bytes = 1000;
    let client = OpentextClient::new(&cfg).unwrap();
    let document = DocumentCreate {
        parent_id: 77,
        name: "big.bin".into(),
        ..DocumentCreate::default()
    };
    let id = client
        .upload_document(&document, upload(CONTENT.as_slice(), "big.bin"))
        .await
        .unwrap();
    assert_eq!(id, 99);

    let start = form_fields(&requests_to(&server, "/v2/multipart").await[0]);
    assert_eq!(start["file_name"], "big.bin");
    assert_eq!(start["file_size"], "10000");
    assert_eq!(start["mime_type"], "application/pdf");
    let mut assembled = Vec::new();
    for n in 1..=3 {
        let sent = &requests_to(&server, &format!("/v2/multipart/K1/{n}")).await;
        assert_eq!(sent.len(), 1, "part {n} sent once");
        let parts = multipart_parts(&sent[0]);
        let content = &part(&parts, "part_content").1;
        assert_eq!(content.len(), if n < 3 { 4096 } else { 10_000 - 2 * 4096 });
        assembled.extend_from_slice(content);
    }
    assert_eq!(assembled, *CONTENT);
}

#[tokio::test]
async fn workflow_draft_initiate_and_status() {
    let server = MockServer::start().await;
    mount_login(&server, "T").await;
    Mock::given(method("POST"))
        .and(path(api("/v2/draftprocesses")))
        .and(|r: &Request| {
            form_body(r)
                == Some(
                    json!({"workflow_id": 6686, "doc_ids": "384,9684", "AttachDocuments": "TRUE"}),
                )
        })
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"results": {"draftprocess_id": 157555, "workflow_type": "1_1"}}),
            ),
        )
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path(api("/v2/draftprocesses/157555")))
        .and(|r: &Request| form_body(r).is_some_and(|b| b["action"] == "formUpdate"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": {}})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path(api("/v2/draftprocesses/157555")))
        .and(|r: &Request| form_body(r) == Some(json!({"action": "Initiate", "comment": "start"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"results": {"custom_message": "initiated", "process_id": 165496}}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api("/v2/workflows/status/processes/165496")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": {
            "wf_details": {"status": "ontime", "wf_name": "Change review"},
            "step_list": {"completed": [], "current": [{"process_id": 165496,
                "subprocess_id": 165496, "task_id": 3, "task_name": "Approve"}], "next": []}}})))
        .mount(&server)
        .await;
    let client = OpentextClient::new(&config(&server, OpentextAuth::Otcs)).unwrap();
    let draft = client
        .create_draft_process(6686, &[384, 9684])
        .await
        .unwrap();
    let mut values = serde_json::Map::new();
    values.insert("WorkflowForm_Title".into(), json!("Packaging change P-1"));
    client
        .update_draft_form(draft.draftprocess_id, &values)
        .await
        .unwrap();
    let started = client
        .initiate_draft(draft.draftprocess_id, "start")
        .await
        .unwrap();
    let status = client.workflow_status(started.process_id).await.unwrap();
    assert!(!status.state.is_finished());
    assert_eq!(status.current[0].task_name.as_deref(), Some("Approve"));
}

#[tokio::test]
async fn records_holds_roles_and_relations_send_every_documented_form() {
    let server = MockServer::start().await;
    mount_login(&server, "T").await;
    let ok = || ResponseTemplate::new(200).set_body_json(json!({"results": {}}));
    Mock::given(method("POST"))
        .and(path(api("/v1/nodes/5/holds")))
        .and(query_param("hold_id", "9"))
        .respond_with(ok())
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path(api("/v1/rmclassifications/finalizerecords")))
        .respond_with(ok())
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(api("/v2/businessworkspaces/5/roles/3/members")))
        .respond_with(ok())
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(api("/v2/businessworkspaces/5/relateditems")))
        .respond_with(ok())
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api("/v2/businessworkspaces/5/roles")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": [
            {"data": {"properties": {"id": 3, "name": "Editors"}}},
            {"data": {"properties": {"id": 4, "name": "Readers"}}}]})))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path_regex(format!(
            "^{BASE}/api/v2/businessworkspaces/5/roles/[34]$"
        )))
        .and(|r: &Request| {
            form_body(r) == Some(json!({"permissions": ["see", "see_contents"], "apply_to": 2}))
        })
        .respond_with(ok())
        .expect(2)
        .mount(&server)
        .await;
    let client = OpentextClient::new(&config(&server, OpentextAuth::Otcs)).unwrap();

    client.apply_hold(5, 9).await.unwrap();
    let hold = form_fields(&requests_to(&server, "/v1/nodes/5/holds").await[0]);
    assert_eq!(hold["hold_id"], "9");
    assert_eq!(hold["body"], r#"{"hold_id":9}"#);

    client.finalize_records(&[5, 6]).await.unwrap();
    let fin = form_fields(&requests_to(&server, "/v1/rmclassifications/finalizerecords").await[0]);
    assert_eq!(fin["ids"], "5,6");
    assert_eq!(fin["body"], r#"{"ids":[5,6]}"#);

    client.add_role_member(5, 3, 1001).await.unwrap();
    let member =
        form_fields(&requests_to(&server, "/v2/businessworkspaces/5/roles/3/members").await[0]);
    assert_eq!(
        (member["id"].as_str(), member["member_id"].as_str()),
        ("1001", "1001")
    );

    client
        .add_related_workspace(5, 8, RelationType::Child)
        .await
        .unwrap();
    let rel = form_fields(&requests_to(&server, "/v2/businessworkspaces/5/relateditems").await[0]);
    assert_eq!(
        (rel["rel_bw_id"].as_str(), rel["rel_type"].as_str()),
        ("8", "child")
    );

    client.make_workspace_read_only(5).await.unwrap();
}

#[tokio::test]
async fn ticket_never_follows_a_redirect_to_another_origin() {
    let elsewhere = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&elsewhere)
        .await;
    let server = MockServer::start().await;
    mount_login(&server, "SECRET-TICKET").await;
    Mock::given(path(api("/v2/nodes/1")))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("Location", format!("{}/grab", elsewhere.uri()).as_str()),
        )
        .mount(&server)
        .await;
    let client = OpentextClient::new(&config(&server, OpentextAuth::Otcs)).unwrap();
    let error = client.node(1).await.unwrap_err();
    assert!(
        matches!(error, UpstreamError::OriginViolation { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn debug_output_hides_password_and_ticket() {
    let server = MockServer::start().await;
    mount_login(&server, "SECRET-TICKET").await;
    Mock::given(path(api("/v2/nodes/1")))
        .respond_with(ResponseTemplate::new(200).set_body_json(node_answer(1, "a")))
        .mount(&server)
        .await;
    let client = Arc::new(OpentextClient::new(&config(&server, OpentextAuth::Oauth2)).unwrap());
    let before = format!("{client:?}");
    let client = OpentextClient::new(&config(&server, OpentextAuth::Otcs)).unwrap();
    client.node(1).await.unwrap();
    let after = format!("{client:?}");
    for debug in [before, after] {
        for secret in [PASSWORD, "SECRET-TICKET", "client-secret-value"] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }
    }
}
