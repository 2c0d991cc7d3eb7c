//! The `Store` contract, run against SQLite and PostgreSQL.

mod common;

use std::collections::HashSet;

use common::{TestDb, event, insert};
use xecm_bridge::store::{
    EventFilter, InsertOutcome, Page, Routing, StoreError, WorkflowRecord, state, workflow_state,
};

backend_tests!(
    concurrent_duplicates_store_one_event,
    duplicates_within_one_batch_are_flagged,
    get_list_filter_and_paginate,
    routing_creates_jobs_or_ignores_visibly,
    cursors_and_workflows_round_trip,
    resync_needs_a_module_and_id,
);

async fn check_readiness(db: TestDb) {
    match db.store.readiness().await {
        Err(StoreError::NotReady(message)) => assert!(message.contains("migrat"), "{message}"),
        other => panic!("expected NotReady before migrate, got {other:?}"),
    }
    db.store.migrate().await.expect("migrate");
    db.store.readiness().await.expect("ready after migrate");
    // Migrating again is a no-op.
    db.store.migrate().await.expect("migrate twice");
    db.teardown().await;
}

#[tokio::test]
async fn sqlite_readiness_before_and_after_migrate() {
    check_readiness(TestDb::sqlite(false).await).await;
}

#[tokio::test]
async fn postgres_readiness_before_and_after_migrate() {
    if let Some(db) = TestDb::postgres(false).await {
        check_readiness(db).await;
    }
}

async fn concurrent_duplicates_store_one_event(db: &TestDb) {
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let store = db.store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .insert_events(vec![event("same-id", "product/1", 1_000)])
                .await
                .expect("insert")
                .remove(0)
        }));
    }
    let mut accepted = Vec::new();
    let mut ids = HashSet::new();
    for task in tasks {
        match task.await.unwrap() {
            InsertOutcome::Accepted(id) => {
                ids.insert(id.clone());
                accepted.push(id);
            }
            InsertOutcome::Duplicate(id) => {
                ids.insert(id);
            }
        }
    }
    assert_eq!(accepted.len(), 1, "exactly one insert wins");
    assert_eq!(ids.len(), 1, "every duplicate names the stored id");
    assert_eq!(db.store.count_events().await.unwrap(), 1);
}

async fn duplicates_within_one_batch_are_flagged(db: &TestDb) {
    let outcomes = db
        .store
        .insert_events(vec![
            event("a", "product/1", 1),
            event("b", "product/2", 2),
            event("a", "product/1", 3),
        ])
        .await
        .unwrap();
    let (InsertOutcome::Accepted(a), InsertOutcome::Accepted(_), InsertOutcome::Duplicate(again)) =
        (&outcomes[0], &outcomes[1], &outcomes[2])
    else {
        panic!("unexpected outcomes {outcomes:?}");
    };
    assert_eq!(a, again);
    assert_eq!(db.store.count_events().await.unwrap(), 2);
}

async fn get_list_filter_and_paginate(db: &TestDb) {
    let mut ids = Vec::new();
    for i in 0..25 {
        let key = if i % 2 == 0 {
            "product/even"
        } else {
            "product/odd"
        };
        ids.extend(
            insert(
                db.store.as_ref(),
                vec![event(&format!("e{i}"), key, 1_000 + i)],
            )
            .await,
        );
    }
    let stored = db.store.get_event(&ids[3]).await.unwrap().expect("stored");
    assert_eq!(stored.source_event_id, "e3");
    assert_eq!(stored.raw_body, b"{\"id\":\"e3\"}");
    assert_eq!(stored.state, state::PENDING);
    assert!(db.store.get_event("no-such-id").await.unwrap().is_none());

    // Three pages of 10, newest first, no overlap, no gap.
    let mut seen = Vec::new();
    let mut page = Page {
        after: None,
        limit: 10,
    };
    let mut pages = 0;
    loop {
        let found = db
            .store
            .list_events(&EventFilter::default(), &page)
            .await
            .unwrap();
        pages += 1;
        assert!(
            found.events.iter().all(|e| e.raw_body.is_empty()),
            "lists omit raw bodies"
        );
        seen.extend(found.events.into_iter().map(|e| e.id));
        match found.next_cursor {
            Some(cursor) => page.after = Some(cursor),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);

    let by_key = EventFilter {
        object_key: Some("product/even".into()),
        ..Default::default()
    };
    let all = Page {
        after: None,
        limit: 100,
    };
    let even = db.store.list_events(&by_key, &all).await.unwrap();
    assert_eq!(even.events.len(), 13);
    assert!(even.next_cursor.is_none());

    let window = EventFilter {
        received_from: Some(1_005),
        received_to: Some(1_010),
        source: Some("allportal".into()),
        ..Default::default()
    };
    let found = db.store.list_events(&window, &all).await.unwrap();
    let received: Vec<i64> = found.events.iter().map(|e| e.received_at).collect();
    assert_eq!(received, vec![1_009, 1_008, 1_007, 1_006, 1_005]);

    let other_source = EventFilter {
        source: Some("opentext".into()),
        ..Default::default()
    };
    assert!(
        db.store
            .list_events(&other_source, &all)
            .await
            .unwrap()
            .events
            .is_empty()
    );
}

async fn routing_creates_jobs_or_ignores_visibly(db: &TestDb) {
    let ids = insert(
        db.store.as_ref(),
        vec![event("r1", "product/1", 10), event("r2", "asset/9", 11)],
    )
    .await;
    let unrouted = db.store.unrouted_events(10).await.unwrap();
    assert_eq!(unrouted.len(), 2);
    let routings = vec![
        Routing {
            event_id: ids[0].clone(),
            object_key: "product/1".into(),
            flows: vec!["launch".into(), "change".into()],
        },
        Routing {
            event_id: ids[1].clone(),
            object_key: "asset/9".into(),
            flows: vec![],
        },
    ];
    assert_eq!(db.store.route_events(&routings, 20).await.unwrap(), 2);
    // A second router (another replica) finds nothing left to do.
    assert_eq!(db.store.route_events(&routings, 21).await.unwrap(), 0);
    assert!(db.store.unrouted_events(10).await.unwrap().is_empty());

    let routed = db.store.event_detail(&ids[0]).await.unwrap().unwrap();
    assert_eq!(routed.event.state, state::ROUTED);
    let flows: Vec<&str> = routed.jobs.iter().map(|j| j.flow.as_str()).collect();
    assert_eq!(flows, vec!["launch", "change"]);
    assert!(routed.jobs.iter().all(|j| j.state == state::PENDING));

    let ignored = db.store.get_event(&ids[1]).await.unwrap().unwrap();
    assert_eq!(ignored.state, state::IGNORED);
    assert_eq!(ignored.last_error.as_deref(), Some("no flow wants it"));

    let backlog = db.store.backlog(1_010).await.unwrap();
    assert_eq!(backlog.events, 1);
    assert_eq!(backlog.jobs, 2);
    assert_eq!(backlog.oldest_pending_age_ms, 1_000);
    assert_eq!(backlog.dead_letters, 0);
    let stats = db.store.flow_stats().await.unwrap();
    let names: Vec<&str> = stats.iter().map(|s| s.flow.as_str()).collect();
    assert_eq!(names, vec!["change", "launch"]);
    assert_eq!(stats[0].states.get("pending"), Some(&1));
}

async fn cursors_and_workflows_round_trip(db: &TestDb) {
    assert_eq!(db.store.get_cursor("c").await.unwrap(), None);
    db.store
        .set_cursor("c", "2024-01-01T00:00:00Z", 1)
        .await
        .unwrap();
    db.store
        .set_cursor("c", "2024-02-01T00:00:00Z", 2)
        .await
        .unwrap();
    assert_eq!(
        db.store.get_cursor("c").await.unwrap().as_deref(),
        Some("2024-02-01T00:00:00Z")
    );

    let workflow = WorkflowRecord {
        process_id: "wf-1".into(),
        flow: "change".into(),
        object_key: "product/1".into(),
        started_at: 5,
        state: workflow_state::RUNNING.into(),
        decision: None,
        updated_at: 5,
    };
    db.store.record_workflow(&workflow).await.unwrap();
    assert_eq!(
        db.store.running_workflows(10).await.unwrap(),
        vec![workflow]
    );
    let decision = serde_json::json!({ "approved": true });
    assert!(
        db.store
            .decide_workflow("wf-1", &decision, 9)
            .await
            .unwrap()
    );
    assert!(
        !db.store
            .decide_workflow("wf-1", &decision, 10)
            .await
            .unwrap(),
        "decided once"
    );
    assert!(db.store.running_workflows(10).await.unwrap().is_empty());
}

async fn resync_needs_a_module_and_id(db: &TestDb) {
    let id = db
        .store
        .resync(Some("launch"), "product/7", 50)
        .await
        .unwrap();
    let stored = db.store.get_event(&id).await.unwrap().unwrap();
    assert_eq!(stored.kind, "resync");
    assert_eq!(stored.object_key.as_deref(), Some("product/7"));
    assert_eq!(stored.payload["flow"], "launch");
    assert!(matches!(
        db.store.resync(None, "no-slash", 50).await,
        Err(StoreError::Invalid(_))
    ));
}
