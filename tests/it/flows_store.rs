//! The flows' state in the store (links, documents, write-backs, workflow lookups) over SQLite
//! and PostgreSQL alike.

use crate::backend_tests;
use crate::common;

use serde_json::json;
use xecm_bridge::store::{DocumentRecord, LinkRecord, WorkflowRecord, WritebackRecord};

use common::TestDb;

backend_tests!(
    links_are_created_and_replaced,
    documents_are_kept_by_logical_name,
    the_last_writeback_wins,
    workflows_are_found_by_id_and_key_prefix,
);

async fn links_are_created_and_replaced(db: &TestDb) {
    let store = &db.store;
    assert_eq!(store.get_link("launch", "product/1").await.unwrap(), None);
    let mut link = LinkRecord {
        flow: "launch".into(),
        object_key: "product/1".into(),
        workspace_id: Some(42),
        state: json!({"categories": "abc", "related": [7]}),
        updated_at: 10,
    };
    store.put_link(&link).await.unwrap();
    assert_eq!(
        store.get_link("launch", "product/1").await.unwrap(),
        Some(link.clone())
    );
    link.state = json!({"seen": {"status": "x"}});
    link.workspace_id = None;
    link.updated_at = 11;
    store.put_link(&link).await.unwrap();
    assert_eq!(
        store.get_link("launch", "product/1").await.unwrap(),
        Some(link)
    );
    assert_eq!(store.get_link("family", "product/1").await.unwrap(), None);
}

fn document(name: &str, hash: &str, version: i64) -> DocumentRecord {
    DocumentRecord {
        flow: "family".into(),
        object_key: "product_family/f".into(),
        logical_name: name.into(),
        node_id: 100 + version,
        content_hash: hash.into(),
        source_version: Some("2025-01-01T00:00:00.000Z".into()),
        meta_hash: None,
        version,
        updated_at: version,
    }
}

async fn documents_are_kept_by_logical_name(db: &TestDb) {
    let store = &db.store;
    store.put_document(&document("b", "h1", 1)).await.unwrap();
    store.put_document(&document("a", "h1", 1)).await.unwrap();
    store.put_document(&document("a", "h2", 2)).await.unwrap();
    let a = store
        .get_document("family", "product_family/f", "a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((a.content_hash.as_str(), a.version), ("h2", 2));
    let all = store
        .list_documents("family", "product_family/f")
        .await
        .unwrap();
    let names: Vec<&str> = all.iter().map(|d| d.logical_name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(
        store
            .get_document("launch", "product_family/f", "a")
            .await
            .unwrap()
            .is_none()
    );
}

async fn the_last_writeback_wins(db: &TestDb) {
    let store = &db.store;
    assert_eq!(store.last_writeback("product", "p").await.unwrap(), None);
    for (i, mod_time) in ["t1", "t2"].iter().enumerate() {
        store
            .record_writeback(&WritebackRecord {
                module: "product".into(),
                object_id: "p".into(),
                fields: vec!["approval_status".into(), "approved_by".into()],
                values_hash: format!("h{i}"),
                mod_time_after: Some(mod_time.to_string()),
                at: i as i64,
            })
            .await
            .unwrap();
    }
    let last = store.last_writeback("product", "p").await.unwrap().unwrap();
    assert_eq!(last.mod_time_after.as_deref(), Some("t2"));
    assert_eq!(last.fields, ["approval_status", "approved_by"]);
    assert_eq!(store.last_writeback("product", "q").await.unwrap(), None);
}

async fn workflows_are_found_by_id_and_key_prefix(db: &TestDb) {
    let store = &db.store;
    for (pid, flow, key, at) in [
        ("1", "change", "product_change/p:1", 1),
        ("2", "change", "product_change/p:2", 2),
        ("3", "compliance", "product_compliance/p", 3),
        ("4", "change", "product_change/q:1", 4),
    ] {
        store
            .record_workflow(&WorkflowRecord {
                process_id: pid.into(),
                flow: flow.into(),
                object_key: key.into(),
                started_at: at,
                state: "running".into(),
                decision: None,
                updated_at: at,
            })
            .await
            .unwrap();
    }
    let one = store.get_workflow("3").await.unwrap().unwrap();
    assert_eq!(one.flow, "compliance");
    assert!(store.get_workflow("9").await.unwrap().is_none());
    let of_p: Vec<String> = store
        .workflows_of("change", "product_change/p:")
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.process_id)
        .collect();
    assert_eq!(of_p, ["1", "2"]);
}
