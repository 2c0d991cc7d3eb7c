//! The console's event list on a large store: a SQLite store filled with `BENCH_EVENTS`
//! events (default 1,000,000; half routed to a flow, half ignored, one in a thousand a dead
//! letter, 50,000 business objects), then each query the Events, Dead letters, Overview and
//! timeline pages make, timed as the median of `BENCH_ROUNDS` runs (default 20). All events
//! are stored within the hour, which is the worst case of the overview's per-minute count. The baseline
//! is the same queries on a 10,000-event store in the same run: a page that does not grow
//! with the store reads the same there.
//!
//! `cargo bench --bench console` (release) or `cargo bench --profile dev --bench console`.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use support::env_usize;
use xecm_bridge::store::{self, EventFilter, NewEvent, Page, Source, Store, StoreConfig};

const OBJECTS: usize = 50_000;

fn event(i: usize, now: i64) -> NewEvent {
    let object = format!("{}", i % OBJECTS);
    let body = Bytes::from(format!(
        r#"{{"event":"moduleobject_modify","module":"product","object_id":"{object}","n":{i}}}"#
    ));
    let span = 0..body.len();
    NewEvent {
        source: if i.is_multiple_of(10) {
            Source::Opentext
        } else {
            Source::Allportal
        },
        source_event_id: format!("bench-{i}"),
        kind: "moduleobject_modify".into(),
        module: Some("product".into()),
        object_id: Some(object.clone()),
        object_key: Some(format!("product/{object}")),
        raw_body: body,
        span,
        headers: serde_json::json!({ "webhook-id": format!("bench-{i}") }),
        // One event every 3 ms within the last hour. The store is filled within the hour too, so
        // the per-minute count reads every event: its worst case.
        received_at: now - 3_600_000 + i as i64 * 3,
        routing: Some(if i.is_multiple_of(2) {
            vec!["launch".into()]
        } else {
            Vec::new()
        }),
        dead_letter: (i % 1000 == 7).then(|| "bench dead letter".to_string()),
    }
}

async fn fill(store: &dyn Store, count: usize) -> Duration {
    let now = store::now_millis();
    let started = Instant::now();
    let batch = 2_000;
    for start in (0..count).step_by(batch) {
        let events = (start..(start + batch).min(count))
            .map(|i| event(i, now))
            .collect();
        store.insert_events(events).await.expect("insert");
    }
    started.elapsed()
}

async fn median<F, Fut>(rounds: usize, mut run: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        run().await;
        times.push(started.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

fn page(after: Option<String>) -> Page {
    Page { after, limit: 50 }
}

/// (name, median) of each query the console's pages make.
async fn queries(store: &dyn Store, rounds: usize) -> Vec<(&'static str, Duration)> {
    let filters: [(&'static str, EventFilter); 6] = [
        ("events, no filter, first page", EventFilter::default()),
        (
            "events, state = dead (dead letters page)",
            EventFilter {
                state: Some("dead".into()),
                ..EventFilter::default()
            },
        ),
        (
            "events, flow = launch",
            EventFilter {
                flow: Some("launch".into()),
                ..EventFilter::default()
            },
        ),
        (
            "events, source = opentext",
            EventFilter {
                source: Some("opentext".into()),
                ..EventFilter::default()
            },
        ),
        (
            "events, object = product/4711",
            EventFilter {
                object_key: Some("product/4711".into()),
                ..EventFilter::default()
            },
        ),
        (
            "events, state = done",
            EventFilter {
                state: Some("done".into()),
                ..EventFilter::default()
            },
        ),
    ];
    let mut out = Vec::new();
    for (name, filter) in &filters {
        let time = median(rounds, || async {
            store.list_events(filter, &page(None)).await.expect("list");
        })
        .await;
        out.push((*name, time));
    }
    // A page deep in the list: keyset paging continues after the last id seen.
    let mut after = None;
    for _ in 0..100 {
        let found = store
            .list_events(&EventFilter::default(), &page(after.clone()))
            .await
            .expect("list");
        after = found.next_cursor;
    }
    let time = median(rounds, || async {
        store
            .list_events(&EventFilter::default(), &page(after.clone()))
            .await
            .expect("list");
    })
    .await;
    out.push(("events, page 101 (after 5,000)", time));
    let now = store::now_millis();
    let time = median(rounds, || async {
        store
            .events_per_minute(now - 3_600_000)
            .await
            .expect("per minute");
    })
    .await;
    out.push(("overview: events per minute, last hour", time));
    let time = median(rounds, || async {
        store.backlog(now).await.expect("backlog");
        store.flow_stats().await.expect("flow stats");
    })
    .await;
    out.push(("overview: backlog and flow counts", time));
    let time = median(rounds, || async {
        store.object_runs("product/4711", 200).await.expect("runs");
    })
    .await;
    out.push(("timeline: runs of product/4711", time));
    out
}

async fn measured(count: usize, rounds: usize) -> (Duration, Vec<(&'static str, Duration)>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}/bench.db", dir.path().display());
    let config = StoreConfig {
        url,
        max_connections: 8,
        group_commit_max_events: 2_000,
        migrate_on_start: true,
        max_bytes: 0,
        min_free_bytes: 0,
    };
    let store = store::open(&config).await.expect("store");
    store.migrate().await.expect("migrate");
    let filled = fill(store.as_ref(), count).await;
    let times = queries(store.as_ref(), rounds).await;
    store.close().await;
    (filled, times)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let events = env_usize("BENCH_EVENTS", 1_000_000);
    let rounds = env_usize("BENCH_ROUNDS", 20);
    let (_, baseline) = measured(10_000, rounds).await;
    let (filled, large) = measured(events, rounds).await;
    println!(
        "SQLite store of {events} events filled in {:.1} s; median of {rounds} runs each",
        filled.as_secs_f64()
    );
    println!("| query | {events} events | 10000 events (baseline) |");
    println!("|---|---|---|");
    for ((name, time), (_, base)) in large.iter().zip(&baseline) {
        println!("| {name} | {} | {} |", ms(*time), ms(*base));
    }
}
