//! The `Store` contract, run against SQLite and PostgreSQL.

use crate::backend_tests;
use crate::common;

use std::collections::HashSet;
use std::ops::Range;

use bytes::Bytes;
use common::{TestDb, event, insert};
use serde_json::{Value, json};
use xecm_bridge::store::{
    AttemptResult, DocumentRecord, EventFilter, InsertOutcome, IntentRecord, JobTransition,
    NewEvent, Page, Routing, Source, StoreError, WorkflowRecord, WritebackRecord, intent_state,
    outcome, state, workflow_state,
};

backend_tests!(
    concurrent_duplicates_store_one_event,
    duplicates_within_one_batch_are_flagged,
    get_list_filter_and_paginate,
    routing_creates_jobs_or_ignores_visibly,
    cursors_and_workflows_round_trip,
    resync_needs_a_module_and_id,
    any_valid_json_text_round_trips_exactly,
    a_batch_body_is_stored_once,
    single_event_requests_take_under_2_kib_each,
    routed_at_ingest_with_jobs_in_the_same_transaction,
    the_disk_guard_refuses_events_near_the_budget,
    retention_keeps_the_store_under_its_budget,
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
    assert_eq!(
        stored.payload,
        serde_json::json!({ "module": "product", "object_id": "odd" })
    );
    assert_eq!(stored.raw_body, stored.payload.to_string().as_bytes());
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

/// An event of a request whose body is `body`, at `span` of it.
fn event_of(id: &str, key: &str, body: &Bytes, span: Range<usize>) -> NewEvent {
    let (module, object_id) = key.split_once('/').expect("module/id");
    NewEvent {
        source: Source::Allportal,
        source_event_id: id.to_string(),
        kind: "moduleobject_modify".into(),
        module: Some(module.into()),
        object_id: Some(object_id.into()),
        object_key: Some(key.into()),
        raw_body: body.clone(),
        span,
        headers: json!({
            "content-type": "application/json",
            "user-agent": "4ALLPORTAL-Webhook/1.0",
            "webhook-id": id,
            "webhook-timestamp": "1764630000",
        }),
        received_at: 1_000,
        routing: None,
        dead_letter: None,
    }
}

/// `len` hex digits that do not repeat, so that compression cannot flatter the figures.
fn noise(len: usize) -> String {
    let mut out = String::new();
    while out.len() < len {
        out.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    out.truncate(len);
    out
}

/// `len` bytes of product text, different for each `seed`: compressible like real field values
/// (PostgreSQL compresses large bodies; SQLite stores them as they are).
fn prose(len: usize, seed: u64) -> String {
    const WORDS: [&str; 16] = [
        "valve",
        "stainless",
        "steel",
        "pressure",
        "rated",
        "bar",
        "thread",
        "seal",
        "EPDM",
        "DN25",
        "certified",
        "food-grade",
        "housing",
        "brass",
        "coating",
        "torque",
    ];
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = String::new();
    while out.len() < len {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.push_str(WORDS[(state >> 60) as usize]);
        out.push_str(&format!(" {} ", (state >> 40) % 1000));
    }
    out.truncate(len);
    out
}

/// A body holding `events` (JSON texts) as a JSON array, with each event's range in it.
fn batch(events: &[String]) -> (Bytes, Vec<Range<usize>>) {
    let mut body = String::from("[");
    let mut spans = Vec::new();
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            body.push_str(",\n ");
        }
        spans.push(body.len()..body.len() + event.len());
        body.push_str(event);
    }
    body.push(']');
    (Bytes::from(body), spans)
}

async fn any_valid_json_text_round_trips_exactly(db: &TestDb) {
    // NUL and the escape character the store uses, in the body and in the columns derived
    // from it (PostgreSQL's text and jsonb reject NUL).
    let odd = "a\u{0}b\u{10}c\u{10}0d\u{0}";
    let payload = json!({ "module": "pro\u{0}duct", "object_id": odd, "note": "\u{0}\u{10}é😀" });
    let text = payload.to_string();
    assert!(text.contains("\\u0000"), "JSON escapes NUL: {text}");
    let body = Bytes::from(format!("  {text}\n"));
    let key = format!("pro\u{0}duct/{odd}");
    let mut new = event_of(&format!("id-{odd}"), &key, &body, 2..2 + text.len());
    new.kind = format!("kind{odd}");
    let id = insert(db.store.as_ref(), vec![new]).await.remove(0);

    let stored = db.store.get_event(&id).await.unwrap().expect("stored");
    assert_eq!(stored.payload, payload);
    assert_eq!(
        stored.raw_body,
        body.as_ref(),
        "the body exactly as received"
    );
    assert_eq!(stored.source_event_id, format!("id-{odd}"));
    assert_eq!(stored.kind, format!("kind{odd}"));
    assert_eq!(stored.module.as_deref(), Some("pro\u{0}duct"));
    assert_eq!(stored.object_id.as_deref(), Some(odd));
    assert_eq!(stored.object_key.as_deref(), Some(key.as_str()));

    // The same identity again is a duplicate; filters find the event by its exact key.
    let again = event_of(&format!("id-{odd}"), &key, &body, 2..2 + text.len());
    assert_eq!(
        db.store.insert_events(vec![again]).await.unwrap(),
        vec![InsertOutcome::Duplicate(id.clone())]
    );
    let filter = EventFilter {
        object_key: Some(key.clone()),
        ..EventFilter::default()
    };
    let page = Page {
        after: None,
        limit: 10,
    };
    let found = db.store.list_events(&filter, &page).await.unwrap();
    assert_eq!(found.events.len(), 1);
    assert_eq!(found.events[0].payload, payload);

    // Routed and claimed, the worker sees the same key.
    let routing = Routing {
        event_id: id.clone(),
        object_key: key.clone(),
        flows: vec!["test".into()],
    };
    db.store.route_events(&[routing], 2_000).await.unwrap();
    let work = db
        .store
        .claim(&xecm_bridge::store::ClaimRequest {
            owner: "w/1".into(),
            now: 2_000,
            lease_until: 60_000,
            max_jobs: 10,
            max_attempts: 3,
        })
        .await
        .unwrap()
        .expect("claimed");
    assert_eq!(work.object_key, key);
    assert_eq!(work.jobs[0].event.payload, payload);
    assert!(db.store.renew_lease(&work, 90_000, 3_000).await.unwrap());

    // An intent of the run, keyed by the same text and a target made of it, round-trips.
    let intent = IntentRecord {
        flow: "test".into(),
        object_key: key.clone(),
        action: "add_version".into(),
        target: format!("node:{odd}"),
        token: "xb-1".into(),
        state: intent_state::PENDING.into(),
        detail: json!({ "note": odd }),
        created_at: 3_000,
        updated_at: 3_000,
    };
    db.store.put_intent(&intent).await.unwrap();
    let found = db
        .store
        .get_intent("test", &key, "add_version", &intent.target)
        .await
        .unwrap()
        .expect("the intent is found by its exact key and target");
    assert_eq!(found.object_key, key);
    assert_eq!(found.target, intent.target);

    // An event of the key that arrives during the run joins the run's retry.
    let mut during = event_of("id-during", &key, &body, 2..2 + text.len());
    during.routing = Some(vec!["test".into()]);
    let during = insert(db.store.as_ref(), vec![during]).await.remove(0);
    // The run's error and summary may quote the same text.
    let error = format!("upstream 503 for {odd}");
    let retry = JobTransition {
        job_id: work.jobs[0].job_id,
        attempt_id: work.jobs[0].attempt_id,
        state: state::PENDING,
        next_attempt_at: 50_000,
        last_error: Some(error.clone()),
        refund_attempt: false,
    };
    let summary = json!({ odd: [odd, 1, { "name": odd }] });
    let result = AttemptResult {
        outcome: outcome::RETRYABLE,
        error: Some(error.clone()),
        summary: Some(summary.clone()),
        finished_at: 4_000,
    };
    db.store
        .finish_work(&work, &result, &[retry])
        .await
        .unwrap();
    let joined = db
        .store
        .event_detail(&during)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(joined.jobs[0].next_attempt_at, 50_000, "{:?}", joined.jobs);
    let retried = db.store.event_detail(&id).await.unwrap().expect("stored");
    assert_eq!(retried.event.last_error.as_deref(), Some(error.as_str()));
    let job = &retried.jobs[0];
    assert_eq!(job.last_error.as_deref(), Some(error.as_str()));
    assert_eq!(job.history[0].error.as_deref(), Some(error.as_str()));
    assert_eq!(job.history[0].summary.as_ref(), Some(&summary));

    // A write-back of fields named by the same text round-trips.
    let writeback = WritebackRecord {
        module: "pro\u{0}duct".into(),
        object_id: odd.into(),
        fields: vec![format!("field{odd}")],
        values_hash: "h".into(),
        mod_time_after: Some(format!("t{odd}")),
        at: 5_000,
    };
    db.store.record_writeback(&writeback).await.unwrap();
    let last = db
        .store
        .last_writeback("pro\u{0}duct", odd)
        .await
        .unwrap()
        .expect("recorded");
    assert_eq!(last.fields, writeback.fields);
    assert_eq!(last.mod_time_after, writeback.mod_time_after);

    // So may what 4ALLPORTAL answers: a document's name and version, a paging cursor.
    let document = DocumentRecord {
        flow: "family".into(),
        object_key: key.clone(),
        logical_name: format!("sheet{odd}.pdf"),
        node_id: 42,
        content_hash: "c".into(),
        source_version: Some(format!("v{odd}")),
        meta_hash: None,
        version: 1,
        updated_at: 5_000,
    };
    db.store.put_document(&document).await.unwrap();
    let kept = db
        .store
        .get_document("family", &key, &document.logical_name)
        .await
        .unwrap()
        .expect("kept by its exact name");
    assert_eq!(kept, document);
    db.store.set_cursor("odd", odd, 5_000).await.unwrap();
    assert_eq!(
        db.store.get_cursor("odd").await.unwrap().as_deref(),
        Some(odd)
    );

    // An operator's replay note may hold it too.
    let ignored = event_of("id-ignored", &key, &body, 2..2 + text.len());
    let ignored = insert(db.store.as_ref(), vec![ignored]).await.remove(0);
    let nobody = Routing {
        event_id: ignored.clone(),
        object_key: key.clone(),
        flows: vec![],
    };
    db.store.route_events(&[nobody], 6_000).await.unwrap();
    let note = format!("replayed: {odd}");
    db.store.replay_event(&ignored, &note, 7_000).await.unwrap();
    let replayed = db
        .store
        .event_detail(&ignored)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(replayed.notes[0].note, note);

    // A workflow decided by a callback whose comment quotes it; an unknown process id holding
    // it is simply not found.
    let workflow = WorkflowRecord {
        process_id: "4711".into(),
        flow: "change".into(),
        object_key: key.clone(),
        started_at: 8_000,
        state: workflow_state::RUNNING.into(),
        decision: None,
        updated_at: 8_000,
    };
    db.store.record_workflow(&workflow).await.unwrap();
    let decision = json!({ "decision": "approved", "comment": odd });
    assert!(
        db.store
            .decide_workflow("4711", &decision, 9_000)
            .await
            .unwrap()
    );
    let decided = db
        .store
        .get_workflow("4711")
        .await
        .unwrap()
        .expect("recorded");
    assert_eq!(decided.decision, Some(decision));
    assert_eq!(decided.object_key, key);
    assert!(db.store.get_workflow(odd).await.unwrap().is_none());
    assert!(
        !db.store
            .decide_workflow(odd, &json!({}), 9_000)
            .await
            .unwrap()
    );
}

async fn a_batch_body_is_stored_once(db: &TestDb) {
    // 1,000 events of ~890 bytes in one 0.89 MB request.
    let events: Vec<String> = (0..1000u64)
        .map(|i| {
            let pad = prose(800, i);
            json!({ "event": "moduleobject_modify", "module": "product",
                    "object_id": i.to_string(), "event_id": format!("evt-{i}"), "pad": pad })
            .to_string()
        })
        .collect();
    let (body, spans) = batch(&events);
    let before = db.store.used_bytes().await.unwrap();
    let news = spans
        .into_iter()
        .enumerate()
        .map(|(i, span)| event_of(&format!("evt-{i}"), &format!("product/{i}"), &body, span))
        .collect();
    let ids = insert(db.store.as_ref(), news).await;
    let used = db.store.used_bytes().await.unwrap() - before;
    let ratio = used as f64 / body.len() as f64;
    eprintln!(
        "{}: 1,000-event batch of {} bytes took {used} bytes ({ratio:.2}x)",
        db.store.backend(),
        body.len()
    );
    assert!(ratio <= 1.5, "{ratio:.2}x the body");
    for i in [0, 1, 499, 999] {
        let stored = db.store.get_event(&ids[i]).await.unwrap().unwrap();
        let expected: Value = serde_json::from_str(&events[i]).unwrap();
        assert_eq!(stored.payload, expected, "event {i} is its own slice");
        assert_eq!(stored.raw_body, body.as_ref());
    }

    // Retention removes the body with the last of its events, not before.
    let routings: Vec<Routing> = ids
        .iter()
        .map(|id| Routing {
            event_id: id.clone(),
            object_key: format!("event/{id}"),
            flows: Vec::new(),
        })
        .collect();
    db.store.route_events(&routings, 2_000).await.unwrap();
    assert_eq!(db.store.prune_finished(3_000, 999).await.unwrap(), 999);
    let page = Page {
        after: None,
        limit: 10,
    };
    let left = db
        .store
        .list_events(&EventFilter::default(), &page)
        .await
        .unwrap();
    assert_eq!(left.events.len(), 1);
    let i = ids.iter().position(|id| *id == left.events[0].id).unwrap();
    let last = db.store.get_event(&ids[i]).await.unwrap().expect("kept");
    assert_eq!(
        last.payload,
        serde_json::from_str::<Value>(&events[i]).unwrap()
    );
    assert_eq!(
        last.raw_body,
        body.as_ref(),
        "the body stays while an event uses it"
    );
    assert_eq!(db.store.prune_finished(3_000, 999).await.unwrap(), 1);
    assert_eq!(db.store.count_events().await.unwrap(), 0);
}

async fn single_event_requests_take_under_2_kib_each(db: &TestDb) {
    // Enough requests that fixed costs (PostgreSQL's autovacuum adds free-space and visibility
    // map forks of a few pages per table when it happens to run) do not decide the figure.
    const REQUESTS: usize = 10_000;
    let before = db.store.used_bytes().await.unwrap();
    let mut tasks = Vec::new();
    let mut body_bytes = 0;
    // As many requests in flight as a busy sender's connections, not all 10,000 at once: they
    // would wait for the PostgreSQL pool longer than its acquire timeout on a loaded machine.
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    for i in 0..REQUESTS {
        let mut text = json!({ "event": "moduleobject_modify", "module": "product",
                               "object_id": i.to_string(), "mod_time": "2026-12-01 10:00:00",
                               "pad": "" })
        .to_string();
        let pad = noise(1024 - text.len());
        text = text.replace("\"pad\":\"\"", &format!("\"pad\":\"{pad}\""));
        assert_eq!(text.len(), 1024);
        body_bytes += text.len();
        let body = Bytes::from(text);
        let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        let mut new = event_of(&id, &format!("product/{i}"), &body, 0..body.len());
        // As ingest stores an event no flow wants.
        new.routing = Some(Vec::new());
        let (store, in_flight) = (db.store.clone(), in_flight.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = in_flight.acquire().await.expect("semaphore open");
            store.insert_events(vec![new]).await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let used = db.store.used_bytes().await.unwrap() - before;
    let per_request = used as f64 / REQUESTS as f64;
    eprintln!(
        "{}: {REQUESTS} single-event requests of 1 KiB ({body_bytes} bytes) took {used} bytes, \
         {per_request:.0} per request",
        db.store.backend()
    );
    assert!(
        per_request <= 2048.0,
        "{per_request:.0} bytes per 1 KiB request"
    );
}

async fn routed_at_ingest_with_jobs_in_the_same_transaction(db: &TestDb) {
    let (body, span) = NewEvent::synthetic_body(&json!({ "module": "product", "object_id": "1" }));
    let mut wanted = event_of("wanted", "product/1", &body, span.clone());
    wanted.routing = Some(vec!["launch".into(), "change".into()]);
    let mut unwanted = event_of("unwanted", "product/2", &body, span);
    unwanted.routing = Some(Vec::new());
    let ids = insert(db.store.as_ref(), vec![wanted, unwanted]).await;

    let wanted = db.store.event_detail(&ids[0]).await.unwrap().unwrap();
    assert_eq!(wanted.event.state, state::ROUTED);
    let mut flows: Vec<&str> = wanted.jobs.iter().map(|j| j.flow.as_str()).collect();
    flows.sort();
    assert_eq!(flows, ["change", "launch"]);
    assert!(
        wanted
            .jobs
            .iter()
            .all(|j| j.object_key == "product/1" && j.state == state::PENDING)
    );
    let unwanted = db.store.event_detail(&ids[1]).await.unwrap().unwrap();
    assert_eq!(unwanted.event.state, state::IGNORED);
    assert!(unwanted.jobs.is_empty());
    assert!(
        db.store.unrouted_events(10).await.unwrap().is_empty(),
        "nothing left for the worker to route"
    );
    // A duplicate delivery creates no second set of jobs.
    let (body, span) = NewEvent::synthetic_body(&json!({}));
    let mut again = event_of("wanted", "product/1", &body, span);
    again.routing = Some(vec!["launch".into()]);
    db.store.insert_events(vec![again]).await.unwrap();
    assert_eq!(
        db.store
            .event_detail(&ids[0])
            .await
            .unwrap()
            .unwrap()
            .jobs
            .len(),
        2
    );
}

async fn the_disk_guard_refuses_events_near_the_budget(db: &TestDb) {
    let used = db.store.used_bytes().await.unwrap();
    assert!(used > 0);
    // The same database under a budget it already exceeds (95 % of it is the limit).
    let mut cfg = common::config(db.url());
    cfg.max_bytes = used;
    let full = xecm_bridge::store::open(&cfg).await.unwrap();
    match full
        .insert_events(vec![event("refused", "product/1", 1)])
        .await
    {
        Err(StoreError::Full(reason)) => assert!(reason.contains("store.max_bytes"), "{reason}"),
        other => panic!("expected Full, got {other:?}"),
    }
    match full.readiness().await {
        Err(StoreError::Full(_)) => {}
        other => panic!("readiness: expected Full, got {other:?}"),
    }
    assert_eq!(
        db.store.count_events().await.unwrap(),
        0,
        "nothing was stored"
    );
    // Room to spare: accepted.
    cfg.max_bytes = used * 10;
    let roomy = xecm_bridge::store::open(&cfg).await.unwrap();
    roomy
        .insert_events(vec![event("kept", "product/1", 1)])
        .await
        .unwrap();
    roomy.readiness().await.unwrap();
    full.close().await;
    roomy.close().await;
}

/// Over 80 % of its budget, the store deletes the oldest finished events until it is under it
/// again, whatever their age; unfinished work and dead letters stay. PostgreSQL measures the
/// database size, which deletes do not shrink, so there the budget is the guard's alone.
async fn retention_keeps_the_store_under_its_budget(db: &TestDb) {
    const FINISHED: usize = 2_000;
    let mut events = Vec::new();
    for i in 0..FINISHED {
        let body =
            Bytes::from(json!({ "object_id": i.to_string(), "pad": noise(4096) }).to_string());
        let mut new = event_of(
            &format!("old-{i}"),
            &format!("product/{i}"),
            &body,
            0..body.len(),
        );
        new.received_at = 1_000 + i as i64;
        new.routing = Some(Vec::new());
        events.push(new);
    }
    for chunk in events.chunks(200) {
        db.store.insert_events(chunk.to_vec()).await.unwrap();
    }
    let mut pending = event("pending", "product/p", 9_000);
    pending.routing = None;
    let mut dead = event("dead", "product/d", 9_001);
    dead.dead_letter = Some("no flow takes it".into());
    insert(db.store.as_ref(), vec![pending, dead]).await;
    let used = db.store.used_bytes().await.unwrap();

    // A budget the store already uses all of: retention brings it under 80 %.
    let mut cfg = common::config(db.url());
    cfg.max_bytes = used;
    let budgeted = xecm_bridge::store::open(&cfg).await.unwrap();
    let pruned = budgeted.prune_to_budget(100).await.unwrap();
    let after = budgeted.used_bytes().await.unwrap();
    let left = db.store.count_events().await.unwrap();
    eprintln!(
        "{}: {used} bytes, budget {used}: pruned {pruned} finished events, {after} bytes, {left} \
         events left",
        db.store.backend()
    );
    let events_of = |key: &str| {
        let filter = EventFilter {
            object_key: Some(key.into()),
            ..EventFilter::default()
        };
        let store = db.store.clone();
        async move {
            let page = Page {
                after: None,
                limit: 10,
            };
            let page = store.list_events(&filter, &page).await.unwrap();
            page.events.len()
        }
    };
    let dead_and_pending = events_of("product/p").await + events_of("product/d").await;
    if db.store.backend() == "sqlite" {
        assert!(pruned > 0 && pruned < FINISHED as u64, "pruned {pruned}");
        assert!(
            after * 100 <= used * 80,
            "{after} of {used} bytes after pruning"
        );
        // The oldest went first.
        assert_eq!(events_of("product/0").await, 0);
        assert_eq!(events_of(&format!("product/{}", FINISHED - 1)).await, 1);
    } else {
        assert_eq!(pruned, 0);
        assert_eq!(left, FINISHED as i64 + 2);
    }
    assert_eq!(dead_and_pending, 2, "unfinished work and dead letters stay");
    // Under the budget: nothing more to do.
    assert_eq!(budgeted.prune_to_budget(100).await.unwrap(), 0);
    // Without a budget, nothing is pruned by size.
    assert_eq!(db.store.prune_to_budget(100).await.unwrap(), 0);
    budgeted.close().await;
}

/// An installation from before migration 0004 (payload, raw body and headers on each event)
/// migrates forward: its events read as before and new events go in beside them.
async fn check_migration_forward(db: TestDb) {
    let backend = if db.url().starts_with("sqlite") {
        "sqlite"
    } else {
        "postgres"
    };
    let old = tempfile::tempdir().unwrap();
    for name in ["0001_inbox.sql", "0002_worker.sql", "0003_flows.sql"] {
        let from = format!("{}/migrations/{backend}/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::copy(from, old.path().join(name)).unwrap();
    }
    let migrator = sqlx::migrate::Migrator::new(old.path()).await.unwrap();
    let raw_body = if backend == "sqlite" {
        "X'5b7b7d5d'"
    } else {
        "'\\x5b7b7d5d'::bytea"
    };
    let old_event = format!(
        "INSERT INTO events (id, source, source_event_id, kind, module, object_id, object_key,
                             payload, raw_body, headers, received_at, state, next_attempt_at,
                             updated_at)
         VALUES ('old-1', 'allportal', 'e1', 'moduleobject_modify', 'product', '1', 'product/1',
                 '{{\"module\":\"product\",\"object_id\":\"1\",\"note\":\"é\"}}', {raw_body},
                 '{{\"webhook-id\":\"e1\"}}', 5, 'routed', 5, 5)"
    );
    let job = "INSERT INTO jobs (event_id, flow, object_key, state, age_from, next_attempt_at,
                                 created_at, updated_at)
               VALUES ('old-1', 'launch', 'product/1', 'pending', 5, 5, 5, 5)";
    if backend == "sqlite" {
        let pool = sqlx::SqlitePool::connect(db.url()).await.unwrap();
        migrator.run(&pool).await.unwrap();
        sqlx::query(&old_event).execute(&pool).await.unwrap();
        sqlx::query(job).execute(&pool).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
        migrator.run(&pool).await.unwrap();
        sqlx::query(&old_event).execute(&pool).await.unwrap();
        sqlx::query(job).execute(&pool).await.unwrap();
        pool.close().await;
    }

    db.store.migrate().await.expect("migrates forward");
    db.store.readiness().await.expect("ready");
    let detail = db.store.event_detail("old-1").await.unwrap().expect("kept");
    assert_eq!(
        detail.event.payload,
        json!({ "module": "product", "object_id": "1", "note": "é" })
    );
    assert_eq!(detail.event.headers, json!({ "webhook-id": "e1" }));
    assert_eq!(detail.event.state, state::ROUTED);
    assert_eq!(detail.jobs.len(), 1);
    let new = insert(db.store.as_ref(), vec![event("e2", "product/2", 6)]).await;
    let stored = db.store.get_event(&new[0]).await.unwrap().unwrap();
    assert_eq!(stored.object_key.as_deref(), Some("product/2"));
    assert_eq!(db.store.count_events().await.unwrap(), 2);
    db.teardown().await;
}

#[tokio::test]
async fn sqlite_existing_events_migrate_forward() {
    check_migration_forward(TestDb::sqlite(false).await).await;
}

#[tokio::test]
async fn postgres_existing_events_migrate_forward() {
    if let Some(db) = TestDb::postgres(false).await {
        check_migration_forward(db).await;
    }
}
