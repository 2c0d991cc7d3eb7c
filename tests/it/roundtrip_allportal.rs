//! Round trips: the real 4ALLPORTAL client against the real 4ALLPORTAL simulator (sample
//! catalogue) over loopback. Each operation is checked by the client's typed answer and by the
//! simulator's state (`SimHandle::state()`, once also `GET /_sim/state` over HTTP). Fault
//! injection goes through the client: an outage window with `Retry-After`, and an error rate
//! that opens the circuit breaker. Waits are bounded; nothing asserts timings.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use secrecy::SecretString;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;
use xecm_bridge::clients::allportal::{
    AllportalClient, DimensionedValue, Instruction, ListQuery, ObjectQuery, ObjectWrite,
};
use xecm_bridge::clients::config::{AllportalConfig, TransportConfig};
use xecm_bridge::clients::file::FileUpload;
use xecm_bridge::clients::{CircuitState, UpstreamError};
use xecm_bridge::sim::allportal::{self, AllportalSimOptions, ids, sample_catalogue};
use xecm_bridge::sim::{FaultSettings, SimHandle};

const API_KEY: &str = "roundtrip-api-key";
const API_USER: &str = "api_bridge";

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("socket address")
}

async fn start() -> SimHandle {
    let opts = AllportalSimOptions {
        api_key: API_KEY.into(),
        api_user: API_USER.into(),
        seed: Some(sample_catalogue()),
        ..Default::default()
    };
    allportal::spawn(any_port(), opts)
        .await
        .expect("simulator starts")
}

/// Short deadlines, quick backoff that still honours a `Retry-After` of up to 2 s, and a
/// circuit that opens after four failures and probes again after one second.
fn transport() -> TransportConfig {
    TransportConfig {
        connect_timeout_secs: 2,
        request_timeout_secs: 10,
        max_retries: 4,
        backoff_base_ms: 10,
        backoff_max_ms: 2_000,
        circuit_failure_rate: 0.5,
        circuit_min_requests: 4,
        circuit_window_secs: 60,
        circuit_open_secs: 1,
    }
}

fn client(sim: &SimHandle) -> AllportalClient {
    AllportalClient::new(&AllportalConfig {
        base_url: Url::parse(&sim.base_url()).expect("base URL"),
        api_key: SecretString::from(API_KEY),
        ca_file: None,
        client_cert_file: None,
        client_key_file: None,
        max_requests_per_sec: 0.0,
        max_concurrent_requests: 0,
        rate_limit_replicas: 1,
        transport: transport(),
    })
    .expect("client")
}

/// The simulator's view of one object (values plus `_media` and `_audit_count`).
fn object_state(sim: &SimHandle, module: &str, id: &str) -> Value {
    let state = sim.state();
    let object = &state["objects"][module][id];
    assert!(
        object.is_object(),
        "{module}/{id} not in the simulator state"
    );
    object.clone()
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| (*s).to_string()).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn read_all(stream: xecm_bridge::clients::transport::ByteStream) -> Vec<u8> {
    let chunks: Vec<Bytes> = stream.map(|c| c.expect("chunk")).collect().await;
    chunks.concat()
}

#[tokio::test]
async fn reads_an_object_with_chosen_fields_and_embedded_relations() {
    let sim = start().await;
    let ap = client(&sim);
    let product = ap
        .get_object(
            "product",
            ids::PRODUCT_PUMP_A100,
            &ObjectQuery {
                fields: strings(&["name", "article_number", "family"]),
                embed: strings(&["family"]),
            },
        )
        .await
        .expect("object");
    assert_eq!(product.id, ids::PRODUCT_PUMP_A100);
    assert_eq!(product.module.as_deref(), Some("product"));
    assert!(product.mod_time.is_some());
    assert_eq!(
        product.text_for("name", Some("de_DE"), None).as_deref(),
        Some("Pumpe A100")
    );
    assert_eq!(
        product
            .text_for("name", Some("en_US"), Some("erp"))
            .as_deref(),
        Some("Pump A100")
    );
    assert_eq!(
        product.text_for("article_number", None, None).as_deref(),
        Some("4711")
    );
    assert_eq!(product.related_ids("family"), [ids::FAMILY_PUMPS]);
    assert!(
        !product.fields.contains_key("status"),
        "only the requested fields: {:?}",
        product.fields.keys()
    );
    assert_eq!(
        product.extra["_embedded"]["family"][0]["id"],
        ids::FAMILY_PUMPS
    );

    let state = object_state(&sim, "product", ids::PRODUCT_PUMP_A100);
    let stored: Vec<DimensionedValue> =
        serde_json::from_value(state["name"].clone()).expect("stored values");
    assert_eq!(product.values("name"), stored.as_slice());

    let missing = ap
        .get_object("product", "no-such-id", &ObjectQuery::default())
        .await;
    assert!(
        matches!(missing, Err(UpstreamError::NotFound { .. })),
        "{missing:?}"
    );
}

#[tokio::test]
async fn lists_by_4apql_query_one_page_at_a_time_with_the_total() {
    let sim = start().await;
    let ap = client(&sim);
    let state = sim.state();
    let launch_ready: BTreeSet<String> = state["objects"]["product"]
        .as_object()
        .expect("products")
        .iter()
        .filter(|(_, o)| o["status"][0]["value"] == "launch_ready")
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(launch_ready.len(), 2, "sample data changed?");

    let mut seen = BTreeSet::new();
    for offset in 0..3 {
        let page = ap
            .list_objects(
                "product",
                &ListQuery {
                    query: Some("status = 'launch_ready' AND article_number LIKE '%'".into()),
                    fields: strings(&["status"]),
                    offset,
                    limit: 1,
                    total_count: true,
                    ..ListQuery::default()
                },
            )
            .await
            .expect("page");
        assert_eq!(page.total_count, Some(2));
        assert!(page.result.len() <= 1);
        for object in page.result {
            assert_eq!(
                object.text_for("status", None, None).as_deref(),
                Some("launch_ready")
            );
            assert!(seen.insert(object.id), "pages do not overlap");
        }
    }
    assert_eq!(seen, launch_ready);

    let rejected = ap
        .list_objects(
            "product",
            &ListQuery {
                query: Some("status = ".into()),
                limit: 10,
                ..ListQuery::default()
            },
        )
        .await;
    assert!(
        matches!(rejected, Err(UpstreamError::BadRequest { status: 400, .. })),
        "{rejected:?}"
    );
}

#[tokio::test]
async fn modified_since_returns_only_objects_changed_after_the_cursor() {
    let sim = start().await;
    let ap = client(&sim);
    let state = sim.state();
    let latest_seeded = state["objects"]["product"]
        .as_object()
        .expect("products")
        .values()
        .filter_map(|o| o["mod_time"].as_str())
        .max()
        .expect("seeded products")
        .to_string();
    let cursor = chrono::DateTime::parse_from_rfc3339(&latest_seeded)
        .expect("mod_time is RFC 3339")
        .with_timezone(&chrono::Utc);
    // The store keeps milliseconds: make sure the change lands in a later one.
    tokio::time::sleep(Duration::from_millis(5)).await;

    let unchanged = ap
        .modified_since("product", cursor, &[], 0, 10)
        .await
        .expect("poll");
    assert_eq!(unchanged.total_count, Some(0));
    assert!(unchanged.result.is_empty());

    let write = ObjectWrite::new(Some(ids::PRODUCT_PUMP_A200))
        .set("status", vec![DimensionedValue::plain("launch_ready")]);
    ap.upsert_objects("product", &[write]).await.expect("patch");
    let changed = ap
        .modified_since("product", cursor, &strings(&["status"]), 0, 10)
        .await
        .expect("poll");
    assert_eq!(changed.total_count, Some(1));
    assert_eq!(changed.result.len(), 1);
    assert_eq!(changed.result[0].id, ids::PRODUCT_PUMP_A200);
    assert_eq!(
        changed.result[0].mod_time.as_deref(),
        object_state(&sim, "product", ids::PRODUCT_PUMP_A200)["mod_time"].as_str()
    );
}

#[tokio::test]
async fn schema_patch_with_dimensions_and_instructions_and_its_audit_trail() {
    let sim = start().await;
    let ap = client(&sim);
    let schema = ap.module_schema("product").await.expect("schema");
    assert_eq!(schema.name, "product");
    let field = |name: &str| {
        schema
            .fields
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("field {name}"))
    };
    assert_eq!(field("name").dimensions, ["locale"]);
    assert_eq!(field("family").modules, ["product_family"]);
    assert_eq!(
        field("assets").field_type.as_deref(),
        Some("CEExternalIdList")
    );
    assert!(schema.dimensions.iter().any(|d| d.name == "locale"));

    let write = ObjectWrite::new(Some(ids::PRODUCT_PUMP_A100))
        .set("packaging", vec![DimensionedValue::plain("pallet")])
        .set(
            "name",
            vec![DimensionedValue::dimensioned(
                "Pumpe A100 neu",
                &[("locale", "de_DE")],
            )],
        )
        .set(
            "claims",
            vec![
                DimensionedValue::plain(json!(["recyclable"]))
                    .with_instruction(Instruction::ListAdd),
            ],
        )
        .set(
            "approval_comment",
            vec![DimensionedValue::plain("first").with_instruction(Instruction::IfEmpty)],
        )
        .clear("compliance_class");
    let created = ObjectWrite::new(None).set(
        "name",
        vec![DimensionedValue::dimensioned(
            "Pump A300",
            &[("locale", "en_US")],
        )],
    );
    let written = ap
        .upsert_objects("product", &[write, created])
        .await
        .expect("patch");
    assert_eq!(written.len(), 2);
    assert_eq!(written[0], ids::PRODUCT_PUMP_A100);

    let state = object_state(&sim, "product", ids::PRODUCT_PUMP_A100);
    assert_eq!(
        state["packaging"],
        json!([{"value": "pallet", "dimensions": null}])
    );
    let names: Vec<DimensionedValue> =
        serde_json::from_value(state["name"].clone()).expect("names");
    assert!(names.contains(&DimensionedValue::dimensioned(
        "Pumpe A100 neu",
        &[("locale", "de_DE")]
    )));
    assert!(
        names.contains(&DimensionedValue::dimensioned(
            "Pump A100",
            &[("locale", "en_US")]
        )),
        "other dimension values stay: {names:?}"
    );
    assert_eq!(
        state["claims"][0]["value"],
        json!(["energy efficient", "recyclable"])
    );
    assert_eq!(state["approval_comment"][0]["value"], "first");
    assert!(
        state["compliance_class"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{}",
        state["compliance_class"]
    );
    let new_one = object_state(&sim, "product", &written[1]);
    assert_eq!(new_one["name"][0]["value"], "Pump A300");

    // `if_empty` leaves a value that is already there.
    let again = ObjectWrite::new(Some(ids::PRODUCT_PUMP_A100)).set(
        "approval_comment",
        vec![DimensionedValue::plain("second").with_instruction(Instruction::IfEmpty)],
    );
    ap.upsert_objects("product", &[again]).await.expect("patch");
    assert_eq!(
        object_state(&sim, "product", ids::PRODUCT_PUMP_A100)["approval_comment"][0]["value"],
        "first"
    );

    let audit = ap
        .audit("product", ids::PRODUCT_PUMP_A100, 0, 100, None)
        .await
        .expect("audit");
    let stored = object_state(&sim, "product", ids::PRODUCT_PUMP_A100);
    assert_eq!(audit.total_count, stored["_audit_count"].as_u64());
    let packaging = audit
        .audit
        .iter()
        .find(|e| e.field_name.as_deref() == Some("packaging"))
        .expect("packaging change audited");
    assert_eq!(packaging.create_by.as_deref(), Some(API_USER));
    assert_eq!(packaging.object_id.as_deref(), Some(ids::PRODUCT_PUMP_A100));
    assert_eq!(
        packaging.value_old.as_ref().map(|v| v["value"].clone()),
        Some(json!("carton"))
    );
    assert_eq!(
        packaging.value_new.as_ref().map(|v| v["value"].clone()),
        Some(json!("pallet"))
    );
    let first_page = ap
        .audit("product", ids::PRODUCT_PUMP_A100, 0, 2, None)
        .await
        .expect("audit page");
    assert_eq!(first_page.audit.len(), 2);
    assert_eq!(first_page.total_count, audit.total_count);
}

#[tokio::test]
async fn file_objects_are_created_uploaded_linked_and_downloaded() {
    let sim = start().await;
    let ap = client(&sim);
    let content: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<Result<Bytes, std::io::Error>> = content
        .chunks(4096)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let file = FileUpload::new(
        futures::stream::iter(chunks),
        content.len() as u64,
        "translation-de.pdf",
        "application/pdf",
    );
    let object = ObjectWrite::new(Some("a0000000-0000-4000-8000-00000000f001"))
        .set("name", vec![DimensionedValue::plain("translation-de.pdf")])
        .set("asset_type", vec![DimensionedValue::plain("translation")]);
    let id = ap
        .create_file_object("file", object, file)
        .await
        .expect("file object");
    assert_eq!(id, "a0000000-0000-4000-8000-00000000f001");
    let state = object_state(&sim, "file", &id);
    assert_eq!(state["asset_type"][0]["value"], "translation");
    assert_eq!(state["_media"]["Original"]["size"], content.len());
    assert_eq!(state["_media"]["Original"]["sha256"], sha256_hex(&content));
    assert_eq!(
        state["_media"]["Original"]["file_name"],
        "translation-de.pdf"
    );

    // `list_add` keeps what the relation held.
    ap.link(
        "product",
        ids::PRODUCT_PUMP_A100,
        "partner_documents",
        &[&id],
    )
    .await
    .expect("link");
    ap.link(
        "product",
        ids::PRODUCT_PUMP_A100,
        "partner_documents",
        &[ids::FILE_A100_IMAGE],
    )
    .await
    .expect("second link");
    let product = ap
        .get_object(
            "product",
            ids::PRODUCT_PUMP_A100,
            &ObjectQuery {
                fields: strings(&["partner_documents"]),
                embed: Vec::new(),
            },
        )
        .await
        .expect("product");
    assert_eq!(
        product.related_ids("partner_documents"),
        [id.as_str(), ids::FILE_A100_IMAGE]
    );
    assert_eq!(
        object_state(&sim, "product", ids::PRODUCT_PUMP_A100)["partner_documents"][0]["value"],
        json!([id, ids::FILE_A100_IMAGE])
    );

    let download = ap
        .download_rendition("file", &id, "Original")
        .await
        .expect("rendition");
    assert_eq!(download.file_name.as_deref(), Some("translation-de.pdf"));
    assert_eq!(download.length, Some(content.len() as u64));
    assert_eq!(download.content_type.as_deref(), Some("application/pdf"));
    assert_eq!(read_all(download.stream).await, content);

    // A named rendition type is stored beside the original.
    let thumb = b"tiny".to_vec();
    ap.upload_media(
        "file",
        &id,
        Some("thumbnail"),
        FileUpload::new(
            futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(thumb.clone()))]),
            thumb.len() as u64,
            "thumb.png",
            "image/png",
        ),
    )
    .await
    .expect("typed media");
    let media = object_state(&sim, "file", &id)["_media"].clone();
    assert_eq!(media["thumbnail"]["size"], thumb.len());
    assert_eq!(media["Original"]["sha256"], sha256_hex(&content));
}

#[tokio::test]
async fn seeded_renditions_download_with_name_length_and_exact_bytes() {
    let sim = start().await;
    let ap = client(&sim);
    let stored = object_state(&sim, "file", ids::FILE_A100_DATASHEET)["_media"]["Original"].clone();
    // `WebAll` is not computed by the simulator; it serves the original, as a fallback.
    for kind in ["Original", "WebAll"] {
        let download = ap
            .download_rendition("file", ids::FILE_A100_DATASHEET, kind)
            .await
            .expect("rendition");
        assert_eq!(
            download.file_name.as_deref(),
            Some("pump-a100-datasheet.pdf")
        );
        assert_eq!(download.length, stored["size"].as_u64());
        let bytes = read_all(download.stream).await;
        assert_eq!(Some(bytes.len() as u64), stored["size"].as_u64());
        assert_eq!(sha256_hex(&bytes), stored["sha256"].as_str().expect("hash"));
        assert!(bytes.starts_with(b"%PDF"), "a real PDF");
    }
    let upload = FileUpload::from_download(
        ap.download_rendition("file", ids::FILE_A100_IMAGE, "Original")
            .await
            .expect("rendition"),
        "fallback.bin",
        "application/octet-stream",
    )
    .expect("length announced");
    assert_eq!(upload.file_name, "pump-a100.png");
    assert_eq!(upload.mime_type, "image/png");
}

#[tokio::test]
async fn an_outage_with_retry_after_is_waited_out() {
    let sim = start().await;
    let ap = client(&sim);
    sim.set_faults(FaultSettings {
        outage_secs: Some(1),
        retry_after_secs: Some(1),
        ..FaultSettings::default()
    });
    let product = ap
        .get_object("product", ids::PRODUCT_VALVE_V10, &ObjectQuery::default())
        .await
        .expect("answered once the window closed");
    assert_eq!(product.id, ids::PRODUCT_VALVE_V10);
    let statuses: Vec<u16> = sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses.first(), Some(&503), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&200), "{statuses:?}");
    assert_eq!(ap.circuit_state(), CircuitState::Closed);
}

#[tokio::test]
async fn a_failing_upstream_opens_the_circuit_which_closes_once_it_recovers() {
    let sim = start().await;
    let ap = client(&sim);
    let put_faults = |body: Value| {
        let url = format!("{}/faults", sim.control_url());
        async move {
            let answer = reqwest::Client::new()
                .put(url)
                .json(&body)
                .send()
                .await
                .expect("control call");
            assert!(answer.status().is_success());
        }
    };
    put_faults(json!({"error_rate": 1.0})).await;
    let state: Value = reqwest::get(format!("{}/state", sim.control_url()))
        .await
        .expect("state call")
        .json()
        .await
        .expect("state");
    assert_eq!(state["faults"]["error_rate"], 1.0);

    let failed = ap.module_schema("product").await;
    assert!(
        failed.as_ref().is_err_and(UpstreamError::is_retryable),
        "{failed:?}"
    );
    assert_eq!(ap.circuit_state(), CircuitState::Open);
    sim.clear_requests();
    let fast = ap.module_schema("product").await;
    assert!(
        matches!(fast, Err(UpstreamError::CircuitOpen { .. })),
        "{fast:?}"
    );
    assert!(sim.requests().is_empty(), "no request while open");

    put_faults(json!({})).await;
    for _ in 0..100 {
        if ap.circuit_state() == CircuitState::HalfOpen {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ap.circuit_state(), CircuitState::HalfOpen);
    let schema = ap
        .module_schema("product")
        .await
        .expect("the probe succeeds");
    assert_eq!(schema.name, "product");
    assert_eq!(ap.circuit_state(), CircuitState::Closed);
}
