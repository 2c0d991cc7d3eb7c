//! The 4ALLPORTAL client against a real HTTP server on loopback: request shapes (paths, query,
//! headers, JSON and multipart bodies), typed answers, error mapping, streamed renditions.

use bytes::Bytes;
use futures::StreamExt;
use secrecy::SecretString;
use serde_json::{Value, json};
use url::Url;
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};
use xecm_bridge::clients::UpstreamError;
use xecm_bridge::clients::allportal::{
    AllportalClient, DimensionedValue, Instruction, ListQuery, ObjectQuery, ObjectWrite,
};
use xecm_bridge::clients::config::{AllportalConfig, TransportConfig};
use xecm_bridge::clients::file::FileUpload;

const KEY: &str = "75d6a19f-7e44-4ae5-b81f-7292bc9f774d";

fn transport_config() -> TransportConfig {
    TransportConfig {
        connect_timeout_secs: 2,
        request_timeout_secs: 10,
        max_retries: 0,
        backoff_base_ms: 1,
        backoff_max_ms: 10,
        circuit_failure_rate: 0.5,
        circuit_min_requests: 100,
        circuit_window_secs: 30,
        circuit_open_secs: 30,
    }
}

fn client(server: &MockServer) -> AllportalClient {
    AllportalClient::new(&AllportalConfig {
        base_url: Url::parse(&server.uri()).unwrap(),
        api_key: SecretString::from(KEY),
        ca_file: None,
        client_cert_file: None,
        client_key_file: None,
        max_requests_per_sec: 0.0,
        max_concurrent_requests: 0,
        rate_limit_replicas: 1,
        transport: transport_config(),
    })
    .unwrap()
}

fn bearer() -> wiremock::matchers::HeaderExactMatcher {
    header("authorization", format!("Bearer {KEY}").as_str())
}

#[tokio::test]
async fn reads_one_object_with_fields_and_embed() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/modules/product/objects/p-1"))
        .and(bearer())
        .and(query_param("fields", "name,files"))
        .and(query_param("embed", "files"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "p-1", "module": "product", "mod_time": "2024-05-01T00:00:00.000Z",
            "name": [{"value": "Pumpe", "dimensions": {"locale": "de_DE", "channel": "erp"}}],
            "files": [{"value": ["f-1"], "dimensions": null}]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let query = ObjectQuery {
        fields: vec!["name".into(), "files".into()],
        embed: vec!["files".into()],
    };
    let object = client(&server)
        .get_object("product", "p-1", &query)
        .await
        .unwrap();
    assert_eq!(
        object
            .text_for("name", Some("de_DE"), Some("erp"))
            .as_deref(),
        Some("Pumpe")
    );
    assert_eq!(object.related_ids("files"), vec!["f-1"]);
}

#[tokio::test]
async fn lists_modified_objects_with_paging_and_total_count() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/modules/product/objects"))
        .and(bearer())
        .and(query_param(
            "query",
            "mod_time > '2024-01-01T00:00:00.000Z'",
        ))
        .and(query_param("offset", "100"))
        .and(query_param("limit", "50"))
        .and(query_param("totalCount", "true"))
        .and(query_param("sort", "mod_time"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "total_count": 151,
            "result": [{"id": "p-9", "mod_time": "2024-02-01T00:00:00.000Z"}]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let cursor = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let page = client(&server)
        .modified_since("product", cursor, &[], 100, 50)
        .await
        .unwrap();
    assert_eq!(page.total_count, Some(151));
    assert_eq!(page.result[0].id, "p-9");
}

#[tokio::test]
async fn reads_module_schema_and_audit() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/modules/product"))
        .and(query_param("groups", "fields"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "name": "product", "labelSingular": "Product",
            "fields": [{"name": "name", "type": "CEVarchar", "dimensions": ["locale", "channel"]},
                       {"name": "files", "type": "CEExternalIdList", "modules": ["file"]}],
            "dimensions": [{"name": "locale", "type": "CEVarchar"}]
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/modules/product/objects/p-1/audit"))
        .and(query_param("offset", "0"))
        .and(query_param("count", "20"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "totalCount": 1, "count": 1,
            "audit": [{"id": 7, "type": "field", "objectId": "p-1", "createBy": "u-1",
                       "createTime": "2024-05-01T10:00:00Z", "fieldName": "packaging",
                       "valueOld": {"value": "box"}, "valueNew": {"value": "bag"},
                       "dimensions": {"locale": "de_DE"}}]
        })))
        .mount(&server)
        .await;
    let c = client(&server);
    let schema = c.module_schema("product").await.unwrap();
    assert_eq!(schema.fields[0].dimensions, vec!["locale", "channel"]);
    assert_eq!(schema.fields[1].modules, vec!["file"]);
    let audit = c.audit("product", "p-1", 0, 20, None).await.unwrap();
    assert_eq!(audit.audit[0].field_name.as_deref(), Some("packaging"));
    assert_eq!(audit.audit[0].value_new, Some(json!({"value": "bag"})));
}

#[tokio::test]
async fn upserts_with_dimensioned_values_and_instructions() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path("/api/modules/product/objects"))
        .and(bearer())
        .and(body_json(json!([{
            "id": "p-1",
            "approval_status": [{"value": "approved", "dimensions": null}],
            "approval_comment": [{"value": "ok", "dimensions": {"locale": "en_US"}}],
            "files": [{"value": ["f-2"], "dimensions": null, "instruction": "list_add"}]
        }])))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!(["p-1"])))
        .expect(1)
        .mount(&server)
        .await;
    let write = ObjectWrite::new(Some("p-1"))
        .set("approval_status", vec![DimensionedValue::plain("approved")])
        .set(
            "approval_comment",
            vec![DimensionedValue::dimensioned("ok", &[("locale", "en_US")])],
        )
        .set(
            "files",
            vec![DimensionedValue::plain(json!(["f-2"])).with_instruction(Instruction::ListAdd)],
        );
    let ids = client(&server)
        .upsert_objects("product", &[write])
        .await
        .unwrap();
    assert_eq!(ids, vec!["p-1"]);
}

fn multipart_file_part(request: &Request) -> (String, Vec<u8>) {
    let content_type = request
        .headers
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap();
    let boundary = content_type.split("boundary=").nth(1).unwrap().to_string();
    let body = &request.body;
    let marker = format!("--{boundary}\r\n");
    let start = find(body, marker.as_bytes()).unwrap() + marker.len();
    let head_end = start + find(&body[start..], b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&body[start..head_end]).to_string();
    let content_start = head_end + 4;
    let end_marker = format!("\r\n--{boundary}");
    let content_end = content_start + find(&body[content_start..], end_marker.as_bytes()).unwrap();
    (head, body[content_start..content_end].to_vec())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn creates_a_file_object_uploads_its_content_and_links_it() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path("/api/modules/file/objects"))
        .and(body_json(
            json!([{"id": "f-9", "name": [{"value": "cert.pdf", "dimensions": null}]}]),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!(["f-9"])))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/api/modules/file/objects/f-9/media"))
        .and(bearer())
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/api/modules/product/objects"))
        .and(body_json(json!([{"id": "p-1",
            "certificates": [{"value": ["f-9"], "dimensions": null, "instruction": "list_add"}]}])))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!(["p-1"])))
        .expect(1)
        .mount(&server)
        .await;

    let content = Bytes::from_static(b"%PDF-1.7 certificate");
    let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(content.clone())]);
    let upload = FileUpload::new(stream, content.len() as u64, "cert.pdf", "application/pdf");
    let c = client(&server);
    let object =
        ObjectWrite::new(Some("f-9")).set("name", vec![DimensionedValue::plain("cert.pdf")]);
    let id = c.create_file_object("file", object, upload).await.unwrap();
    c.link("product", "p-1", "certificates", &[&id])
        .await
        .unwrap();

    let put = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.method.as_str() == "PUT")
        .unwrap();
    assert_eq!(
        put.headers.get("content-length").unwrap().to_str().unwrap(),
        put.body.len().to_string(),
        "the streamed multipart body has a known length"
    );
    let (head, bytes) = multipart_file_part(&put);
    assert!(head.contains(r#"name="file""#), "{head}");
    assert!(head.contains(r#"filename="cert.pdf""#), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/pdf"),
        "{head}"
    );
    assert_eq!(bytes, content.to_vec());
}

#[tokio::test]
async fn streams_renditions_with_their_metadata() {
    let server = MockServer::start().await;
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    Mock::given(method("GET"))
        .and(path("/api/modules/file/objects/f-1/media/Original"))
        .and(bearer())
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header(
                    "content-disposition",
                    r#"attachment; filename="Datenblatt Pumpe.pdf""#,
                )
                .set_body_raw(content.clone(), "application/pdf"),
        )
        .mount(&server)
        .await;
    let download = client(&server)
        .download_rendition("file", "f-1", "Original")
        .await
        .unwrap();
    assert_eq!(download.file_name.as_deref(), Some("Datenblatt Pumpe.pdf"));
    assert_eq!(download.length, Some(content.len() as u64));
    assert_eq!(download.content_type.as_deref(), Some("application/pdf"));
    let mut received = Vec::new();
    let mut stream = download.stream;
    while let Some(chunk) = stream.next().await {
        received.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(received, content);
}

#[tokio::test]
async fn errors_are_typed() {
    let server = MockServer::start().await;
    Mock::given(path("/api/modules/product/objects/missing"))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(json!({"message": "no such object"})),
        )
        .mount(&server)
        .await;
    Mock::given(path("/api/modules/product/objects/secret"))
        .respond_with(ResponseTemplate::new(403))
        .mount(&server)
        .await;
    Mock::given(path("/api/modules/product/objects/bad"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>"))
        .mount(&server)
        .await;
    let c = client(&server);
    let q = ObjectQuery::default();
    let e = c.get_object("product", "missing", &q).await.unwrap_err();
    assert!(
        matches!(&e, UpstreamError::NotFound { message } if message == "no such object"),
        "{e:?}"
    );
    let e = c.get_object("product", "secret", &q).await.unwrap_err();
    assert!(matches!(e, UpstreamError::Forbidden { .. }), "{e:?}");
    let e = c.get_object("product", "bad", &q).await.unwrap_err();
    assert!(matches!(e, UpstreamError::Decode { .. }), "{e:?}");
    let list = ListQuery {
        limit: 10,
        ..ListQuery::default()
    };
    let e = c.list_objects("nomodule", &list).await.unwrap_err();
    assert!(
        matches!(e, UpstreamError::NotFound { .. }),
        "unmatched path is 404: {e:?}"
    );
}

#[tokio::test]
async fn debug_output_never_shows_the_api_key() {
    let server = MockServer::start().await;
    let c = client(&server);
    let debug = format!("{c:?}");
    assert!(!debug.contains(KEY), "{debug}");
    assert!(debug.contains("<redacted>"));
    let value: Value = json!(format!("{:?}", c.transport()));
    assert!(!value.to_string().contains(KEY));
}
