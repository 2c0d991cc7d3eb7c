//! SQLite group commit: concurrent inserts share transactions (fewer commits than requests), each
//! caller is answered with its own outcome, and duplicates inside one group are still detected.

use std::sync::Arc;

use xecm_bridge::config::Settings;
use xecm_bridge::store::sqlite::SqliteStore;
use xecm_bridge::store::{InsertOutcome, NewEvent, Source, Store};

fn event(id: &str) -> NewEvent {
    let (raw_body, span) = NewEvent::synthetic_body(&serde_json::json!({"object_id": id}));
    NewEvent {
        source: Source::Allportal,
        source_event_id: id.to_string(),
        kind: "moduleobject_modify".into(),
        module: Some("product".into()),
        object_id: Some(id.into()),
        object_key: Some(format!("product/{id}")),
        raw_body,
        span,
        headers: serde_json::json!({}),
        received_at: 1,
        routing: None,
        dead_letter: None,
    }
}

async fn open(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
    let toml = format!(
        "[store]\nurl = \"sqlite://{}/g.db\"\n[sources.allportal]\nsecrets=[\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\n[sources.opentext]\nsecrets=[\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]",
        dir.path().display()
    );
    let settings = Settings::from_toml(&[&toml]).unwrap();
    let store = SqliteStore::open(&settings.store).await.unwrap();
    store.migrate().await.unwrap();
    Arc::new(store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inserts_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let mut tasks = Vec::new();
    for i in 0..400 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.insert_events(vec![event(&format!("e{i}"))]).await
        }));
    }
    for task in tasks {
        let outcomes = task.await.unwrap().unwrap();
        assert!(matches!(outcomes.as_slice(), [InsertOutcome::Accepted(_)]));
    }
    assert_eq!(store.count_events().await.unwrap(), 400);
    let commits = store.commits();
    assert!(
        commits < 400,
        "400 concurrent requests took {commits} commits: no grouping"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_from_many_callers_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.insert_events(vec![event("same")]).await
        }));
    }
    let mut accepted = Vec::new();
    let mut duplicates = Vec::new();
    for task in tasks {
        match task.await.unwrap().unwrap().remove(0) {
            InsertOutcome::Accepted(id) => accepted.push(id),
            InsertOutcome::Duplicate(id) => duplicates.push(id),
        }
    }
    assert_eq!(accepted.len(), 1);
    assert_eq!(duplicates.len(), 49);
    assert!(duplicates.iter().all(|id| *id == accepted[0]));
    assert_eq!(store.count_events().await.unwrap(), 1);
    store.close().await;
}

#[tokio::test]
async fn close_flushes_then_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    store.insert_events(vec![event("before")]).await.unwrap();
    store.close().await;
    assert!(store.insert_events(vec![event("after")]).await.is_err());
    let reopened = open(&dir).await;
    assert_eq!(reopened.count_events().await.unwrap(), 1);
    reopened.close().await;
}

/// A request the store refuses (here: an event whose offsets do not fit) is answered with its
/// error; the requests committed with it are stored all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_does_not_fail_its_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut event = event(&format!("n{i}"));
            if i % 50 == 25 {
                event.span = 0..(3usize << 30);
            }
            (i, store.insert_events(vec![event]).await)
        }));
    }
    for task in tasks {
        match task.await.unwrap() {
            (i, Err(error)) if i % 50 == 25 => {
                assert!(error.to_string().contains("2 GiB"), "{error}")
            }
            (i, Ok(outcomes)) if i % 50 != 25 => {
                assert!(matches!(outcomes.as_slice(), [InsertOutcome::Accepted(_)]))
            }
            (i, other) => panic!("request {i}: {other:?}"),
        }
    }
    assert_eq!(store.count_events().await.unwrap(), 196);
    assert!(store.commits() < 200, "no request shared a commit");
    store.close().await;
}

/// The writer's commits do not checkpoint (the checkpointer thread does, beside them), and
/// nothing is left only in the WAL: a few hundred events, whose commits stay far below the
/// 20,000 WAL pages at which a commit would checkpoint by itself, reach the database file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_events_reach_the_database_file_without_a_commit_checkpointing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let file = dir.path().join("g.db");
    // Settle what the migrations left in the WAL, so that only the inserts are measured.
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(store.pool())
        .await
        .unwrap();
    let before = std::fs::metadata(&file).unwrap().len();
    for i in 0..300 {
        store
            .insert_events(vec![event(&format!("c{i}"))])
            .await
            .unwrap();
    }
    let logical: i64 = sqlx::query_scalar(
        "SELECT p.page_count * s.page_size FROM pragma_page_count() p, pragma_page_size() s",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert!(logical as u64 > before, "300 events did not grow the store");
    // The checkpointer runs every 50 ms; a few seconds is plenty on a slow machine.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::metadata(&file).unwrap().len() < logical as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the database file holds {} of {logical} bytes 10 s after the last commit: \
             nothing checkpoints the WAL",
            std::fs::metadata(&file).unwrap().len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    store.close().await;
}
