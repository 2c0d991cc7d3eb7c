//! The worker engine against SQLite and PostgreSQL, with a scriptable test flow.

use crate::backend_tests;
use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use common::{TestDb, TestFlow, event, insert, wait_for, wait_for_state};
use tokio_util::sync::CancellationToken;
use xecm_bridge::config::Settings;
use xecm_bridge::store::{
    ClaimRequest, EventFilter, JobRecord, ReplayOutcome, Routing, Store, WorkflowRecord, outcome,
    state, workflow_state,
};
use xecm_bridge::worker::WorkerConfig;
use xecm_bridge::worker::maintenance::prune;
use xecm_bridge::worker::reconcile::{
    ALLPORTAL_CURSOR, WORKFLOW_DECISION_KIND, reconcile_allportal, reconcile_opentext,
};
use xecm_bridge::worker::{
    ChangeBatch, ChangeFeed, Clock, Flow, FlowOutcome, ManualClock, ObjectChange, SystemClock,
    Worker, WorkerHandle, WorkflowStatus, WorkflowStatusFeed,
};

backend_tests!(
    coalescing_merges_pending_events_per_object,
    two_workers_share_a_burst_without_overlap,
    two_flows_never_run_for_one_object_at_once,
    retries_follow_the_schedule_then_repeat_its_last_delay,
    new_events_join_a_waiting_retry_instead_of_pulling_it_forward,
    an_upstream_recovery_resumes_work_waiting_for_a_retry,
    an_open_circuit_parks_work_without_spending_attempts,
    retry_after_wins_when_longer,
    max_age_makes_a_retryable_failure_dead,
    permanent_failure_is_dead_at_once,
    skipped_is_ignored_with_its_reason,
    replay_brings_dead_and_ignored_events_back,
    expired_lease_makes_work_claimable_again,
    retention_prunes_finished_events_only,
    shutdown_releases_unfinished_work,
    resync_runs_one_flow_or_all,
    reconciliation_enqueues_missed_changes_and_decisions,
    worker_runs_the_reconciliation_loops,
);

const T0: i64 = 1_700_000_000_000;

fn cfg() -> WorkerConfig {
    WorkerConfig {
        poll_interval_ms: 20,
        concurrency: 4,
        retry_schedule_secs: vec![5, 30, 120],
        shutdown_grace_secs: 10,
        reconcile_allportal_interval_secs: 0,
        reconcile_opentext_interval_secs: 0,
        ..WorkerConfig::default()
    }
}

struct Running {
    handle: WorkerHandle,
    shutdown: CancellationToken,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        self.handle.join().await;
    }
}

fn start(
    store: &Arc<dyn Store>,
    flows: Vec<Arc<dyn Flow>>,
    cfg: WorkerConfig,
    clock: Arc<dyn Clock>,
) -> Running {
    let shutdown = CancellationToken::new();
    let handle = Worker::spawn(store.clone(), flows, cfg, clock, shutdown.clone());
    Running { handle, shutdown }
}

async fn job(store: &dyn Store, event_id: &str) -> JobRecord {
    let detail = store.event_detail(event_id).await.unwrap().expect("event");
    assert_eq!(detail.jobs.len(), 1, "one job expected");
    detail.jobs[0].clone()
}

/// Waits until the event's only job has made `attempts` attempts and is not running.
async fn wait_for_attempts(store: &dyn Store, event_id: &str, attempts: i64) -> JobRecord {
    wait_for(&format!("{attempts} attempts"), || async {
        let detail = store.event_detail(event_id).await.unwrap()?;
        let job = detail.jobs.first()?.clone();
        (job.attempts == attempts && job.state != state::RUNNING).then_some(job)
    })
    .await
}

fn retryable(error: &str) -> FlowOutcome {
    FlowOutcome::Retryable {
        error: error.into(),
        retry_after: None,
    }
}

async fn coalescing_merges_pending_events_per_object(db: &TestDb) {
    let mut events = Vec::new();
    for i in 0..100 {
        events.push(event(
            &format!("c{i}"),
            &format!("product/{}", i % 5),
            T0 + i,
        ));
    }
    let ids = insert(db.store.as_ref(), events).await;
    let flow = Arc::new(TestFlow::new("test"));
    let worker = start(&db.store, vec![flow.clone()], cfg(), Arc::new(SystemClock));
    for id in &ids {
        wait_for_state(db.store.as_ref(), id, state::DONE).await;
    }
    worker.stop().await;

    let mut calls_per_key: HashMap<String, usize> = HashMap::new();
    for call in flow.calls() {
        *calls_per_key.entry(call.key).or_default() += 1;
    }
    assert_eq!(calls_per_key.len(), 5);
    for (key, calls) in calls_per_key {
        assert!(calls <= 3, "{key} reconciled {calls} times for 20 events");
    }
    let runs = flow.runs_per_event();
    assert_eq!(runs.len(), 100);
    assert!(
        runs.values().all(|n| *n == 1),
        "every event in exactly one run"
    );
    assert_eq!(flow.overlaps.load(Ordering::SeqCst), 0);
}

async fn two_workers_share_a_burst_without_overlap(db: &TestDb) {
    // Two stores with their own pools on one database, as two replicas would have.
    let second = db.open_another().await;
    let flow = Arc::new(TestFlow::new("test").delay(Duration::from_millis(5)));
    let one = start(&db.store, vec![flow.clone()], cfg(), Arc::new(SystemClock));
    let two = start(&second, vec![flow.clone()], cfg(), Arc::new(SystemClock));
    let mut ids = Vec::new();
    for wave in 0..10 {
        let events = (0..20)
            .map(|i| event(&format!("b{wave}-{i}"), &format!("product/{}", i % 5), T0))
            .collect();
        let store = if wave % 2 == 0 { &db.store } else { &second };
        ids.extend(insert(store.as_ref(), events).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for id in &ids {
        wait_for_state(db.store.as_ref(), id, state::DONE).await;
    }
    one.stop().await;
    two.stop().await;
    assert_eq!(
        flow.overlaps.load(Ordering::SeqCst),
        0,
        "a key ran twice at once"
    );
    let runs = flow.runs_per_event();
    assert_eq!(runs.len(), 200);
    assert!(
        runs.values().all(|n| *n == 1),
        "every event's effect happened exactly once"
    );
}

async fn two_flows_never_run_for_one_object_at_once(db: &TestDb) {
    // Two replicas, two flows wanting every event: the object is the unit of exclusion.
    let second = db.open_another().await;
    let launch = Arc::new(TestFlow::new("launch").delay(Duration::from_millis(5)));
    let compliance = Arc::new(
        TestFlow::new("compliance")
            .delay(Duration::from_millis(5))
            .same_objects_as(&launch),
    );
    let flows = || vec![launch.clone() as Arc<dyn Flow>, compliance.clone()];
    let one = start(&db.store, flows(), cfg(), Arc::new(SystemClock));
    let two = start(&second, flows(), cfg(), Arc::new(SystemClock));
    let mut ids = Vec::new();
    for wave in 0..5 {
        let events = (0..10)
            .map(|i| event(&format!("x{wave}-{i}"), &format!("product/{}", i % 3), T0))
            .collect();
        let store = if wave % 2 == 0 { &db.store } else { &second };
        ids.extend(insert(store.as_ref(), events).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for id in &ids {
        wait_for_state(db.store.as_ref(), id, state::DONE).await;
    }
    one.stop().await;
    two.stop().await;
    let overlaps =
        launch.overlaps.load(Ordering::SeqCst) + compliance.overlaps.load(Ordering::SeqCst);
    assert_eq!(overlaps, 0, "two flows ran for one object at once");
    assert_eq!(launch.runs_per_event().len(), 50);
    assert_eq!(compliance.runs_per_event().len(), 50);
}

async fn retries_follow_the_schedule_then_repeat_its_last_delay(db: &TestDb) {
    let clock = Arc::new(ManualClock::new(T0));
    let flow = Arc::new(TestFlow::new("test").always(retryable("upstream 503")));
    let worker = start(&db.store, vec![flow.clone()], cfg(), clock.clone());
    let id = insert(db.store.as_ref(), vec![event("r", "product/1", T0)]).await[0].clone();

    // Schedule [5, 30, 120] s, ±20 %: each retry is due within its band after the failure;
    // once the schedule is spent, its last delay repeats (only the maximum age ends retries).
    for (attempt, base_secs) in [(1, 5), (2, 30), (3, 120), (4, 120), (5, 120)] {
        let job = wait_for_attempts(db.store.as_ref(), &id, attempt).await;
        assert_eq!(job.state, state::PENDING, "attempt {attempt}");
        assert_eq!(job.last_error.as_deref(), Some("upstream 503"));
        let delay = job.next_attempt_at - clock.now_millis();
        let base = base_secs * 1000;
        assert!(
            (base * 8 / 10..=base * 12 / 10).contains(&delay),
            "attempt {attempt}: delay {delay} ms outside {base} ms ± 20 %"
        );
        let event = db.store.get_event(&id).await.unwrap().unwrap();
        assert_eq!(event.state, state::ROUTED);
        assert_eq!(event.next_attempt_at, job.next_attempt_at);
        clock.set(job.next_attempt_at);
    }
    wait_for_attempts(db.store.as_ref(), &id, 6).await;
    worker.stop().await;

    let detail = db.store.event_detail(&id).await.unwrap().unwrap();
    assert_eq!(detail.event.state, state::ROUTED, "still waiting, not dead");
    let outcomes: Vec<_> = detail.jobs[0]
        .history
        .iter()
        .map(|a| a.outcome.clone().unwrap())
        .collect();
    assert_eq!(outcomes, vec![outcome::RETRYABLE; 6]);
    assert_eq!(
        db.store
            .backlog(clock.now_millis())
            .await
            .unwrap()
            .dead_letters,
        0
    );
    let stats = db.store.flow_stats().await.unwrap();
    assert_eq!(stats[0].last_error.as_deref(), Some("upstream 503"));
}

async fn new_events_join_a_waiting_retry_instead_of_pulling_it_forward(db: &TestDb) {
    let clock = Arc::new(ManualClock::new(T0));
    let flow = Arc::new(TestFlow::new("test").then(retryable("upstream 503")));
    let worker = start(&db.store, vec![flow.clone()], cfg(), clock.clone());
    let first = insert(db.store.as_ref(), vec![event("j1", "product/1", T0)]).await[0].clone();
    let waiting = wait_for_attempts(db.store.as_ref(), &first, 1).await;
    assert_eq!(waiting.state, state::PENDING);

    // Traffic for the same object while its retry waits: ten more events, half of them routed
    // at ingest (as webhooks are), half by the worker.
    let more: Vec<_> = (0..10)
        .map(|i| {
            let mut e = event(&format!("j2-{i}"), "product/1", T0 + 1 + i);
            if i % 2 == 0 {
                e.routing = Some(vec!["test".to_string()]);
            }
            e
        })
        .collect();
    let later = insert(db.store.as_ref(), more).await;
    for id in &later {
        let joined = wait_for(&format!("{id} routed"), || async {
            let detail = db.store.event_detail(id).await.unwrap()?;
            detail.jobs.first().cloned()
        })
        .await;
        assert_eq!(joined.state, state::PENDING);
        assert_eq!(
            joined.next_attempt_at, waiting.next_attempt_at,
            "a new event waits for the retry of its object"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(flow.calls().len(), 1, "the retry was pulled forward");
    assert_eq!(job(db.store.as_ref(), &first).await.attempts, 1);

    // When the retry is due, one run serves all of them.
    clock.set(waiting.next_attempt_at);
    for id in later.iter().chain([&first]) {
        wait_for_state(db.store.as_ref(), id, state::DONE).await;
    }
    worker.stop().await;
    let calls = flow.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].event_ids.len(), 11);
    assert_eq!(job(db.store.as_ref(), &first).await.attempts, 2);
}

async fn an_upstream_recovery_resumes_work_waiting_for_a_retry(db: &TestDb) {
    let clock = Arc::new(ManualClock::new(T0));
    let flow = Arc::new(TestFlow::new("test").then(retryable("upstream 503")));
    let recoveries = tokio::sync::watch::Sender::new(0u64);
    let shutdown = CancellationToken::new();
    let cfg = WorkerConfig {
        retry_schedule_secs: vec![1800],
        ..cfg()
    };
    let handle = Worker::builder(db.store.clone(), vec![flow.clone()], cfg)
        .clock(clock.clone())
        .recoveries(vec![recoveries.subscribe()])
        .spawn(shutdown.clone());
    let id = insert(db.store.as_ref(), vec![event("r1", "product/1", T0)]).await[0].clone();
    let waiting = wait_for_attempts(db.store.as_ref(), &id, 1).await;
    assert!(
        waiting.next_attempt_at >= T0 + 1_440_000,
        "waits ~30 min: {waiting:?}"
    );

    // The upstream answers again: the job is due within the ten 500 ms steps, not in 30 min.
    recoveries.send_modify(|n| *n += 1);
    let resumed = wait_for("the retry moved forward", || async {
        let job = job(db.store.as_ref(), &id).await;
        (job.next_attempt_at < waiting.next_attempt_at).then_some(job)
    })
    .await;
    assert!(resumed.next_attempt_at <= T0 + 5_000, "{resumed:?}");
    assert_eq!(resumed.attempts, 1, "resuming spends no attempt");
    clock.set(T0 + 5_000);
    wait_for_state(db.store.as_ref(), &id, state::DONE).await;
    shutdown.cancel();
    handle.join().await;
    assert_eq!(flow.calls().len(), 2);
}

async fn an_open_circuit_parks_work_without_spending_attempts(db: &TestDb) {
    let clock = Arc::new(ManualClock::new(T0));
    let parked = FlowOutcome::Parked {
        reason: "circuit open for opentext, retry in 30s".into(),
        resume_after: Duration::from_secs(30),
    };
    let flow = Arc::new(
        TestFlow::new("test")
            .then(parked.clone())
            .then(parked.clone())
            .then(parked),
    );
    let cfg = WorkerConfig {
        max_retry_age_secs: 3600,
        ..cfg()
    };
    let worker = start(&db.store, vec![flow.clone()], cfg, clock.clone());
    let id = insert(db.store.as_ref(), vec![event("pk", "product/1", T0)]).await[0].clone();
    for round in 1..=3 {
        let job = wait_for(&format!("parked run {round}"), || async {
            let detail = db.store.event_detail(&id).await.unwrap()?;
            let job = detail.jobs.first()?.clone();
            // Jobs and attempts are read one after the other: wait for a consistent picture.
            let recorded = job.history.len() == round
                && job.history.iter().all(|a| a.finished_at.is_some())
                && job.last_error.is_some();
            (recorded && job.state == state::PENDING).then_some(job)
        })
        .await;
        assert_eq!(job.attempts, 0, "a parked run spends no attempt");
        assert!(
            job.last_error
                .as_deref()
                .unwrap()
                .starts_with("parked: circuit open")
        );
        // Resumes once the circuit lets a probe through (30 s), spread by up to +40 %.
        let wait = job.next_attempt_at - clock.now_millis();
        assert!((30_000..=42_000).contains(&wait), "resumes after {wait} ms");
        clock.set(job.next_attempt_at);
    }
    let done = wait_for_state(db.store.as_ref(), &id, state::DONE).await;
    worker.stop().await;
    assert_eq!(done.attempts, 1);
    let outcomes: Vec<_> = db.store.event_detail(&id).await.unwrap().unwrap().jobs[0]
        .history
        .iter()
        .map(|a| a.outcome.clone().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            outcome::PARKED,
            outcome::PARKED,
            outcome::PARKED,
            outcome::SUCCESS
        ]
    );
}

async fn retry_after_wins_when_longer(db: &TestDb) {
    let clock = Arc::new(ManualClock::new(T0));
    let flow = Arc::new(TestFlow::new("test").then(FlowOutcome::Retryable {
        error: "429".into(),
        retry_after: Some(Duration::from_secs(600)),
    }));
    let worker = start(&db.store, vec![flow.clone()], cfg(), clock.clone());
    let id = insert(db.store.as_ref(), vec![event("ra", "product/1", T0)]).await[0].clone();
    let job = wait_for_attempts(db.store.as_ref(), &id, 1).await;
    assert_eq!(job.next_attempt_at, T0 + 600_000);
    clock.set(job.next_attempt_at);
    wait_for_state(db.store.as_ref(), &id, state::DONE).await;
    worker.stop().await;
}

async fn max_age_makes_a_retryable_failure_dead(db: &TestDb) {
    let clock = Arc::new(ManualClock::new(T0));
    let cfg = WorkerConfig {
        retry_schedule_secs: vec![5; 10],
        max_retry_age_secs: 8,
        ..cfg()
    };
    let flow = Arc::new(TestFlow::new("test").always(retryable("timeout")));
    let worker = start(&db.store, vec![flow.clone()], cfg, clock.clone());
    let id = insert(db.store.as_ref(), vec![event("ma", "product/1", T0)]).await[0].clone();
    let job = wait_for_attempts(db.store.as_ref(), &id, 1).await;
    assert_eq!(job.state, state::PENDING);
    clock.advance(Duration::from_secs(10));
    let job = wait_for_attempts(db.store.as_ref(), &id, 2).await;
    assert_eq!(job.state, state::DEAD);
    assert!(job.last_error.unwrap().contains("maximum retry age"));
    worker.stop().await;
}

async fn permanent_failure_is_dead_at_once(db: &TestDb) {
    let flow = Arc::new(TestFlow::new("test").always(FlowOutcome::Permanent {
        error: "422 invalid category".into(),
    }));
    let worker = start(&db.store, vec![flow.clone()], cfg(), Arc::new(SystemClock));
    let id = insert(db.store.as_ref(), vec![event("p", "product/1", T0)]).await[0].clone();
    let dead = wait_for_state(db.store.as_ref(), &id, state::DEAD).await;
    worker.stop().await;
    assert_eq!(dead.attempts, 1);
    assert_eq!(dead.last_error.as_deref(), Some("422 invalid category"));
    assert_eq!(flow.calls().len(), 1);
}

async fn skipped_is_ignored_with_its_reason(db: &TestDb) {
    let flow = Arc::new(TestFlow::new("test").always(FlowOutcome::Skipped {
        reason: "not launch-ready".into(),
    }));
    let worker = start(&db.store, vec![flow.clone()], cfg(), Arc::new(SystemClock));
    let ids = insert(
        db.store.as_ref(),
        vec![event("s", "product/1", T0), event("n", "asset/1", T0)],
    )
    .await;
    let skipped = wait_for_state(db.store.as_ref(), &ids[0], state::IGNORED).await;
    assert_eq!(skipped.last_error.as_deref(), Some("not launch-ready"));
    let unwanted = wait_for_state(db.store.as_ref(), &ids[1], state::IGNORED).await;
    assert_eq!(unwanted.last_error.as_deref(), Some("no flow wants it"));
    worker.stop().await;
    let detail = db.store.event_detail(&ids[0]).await.unwrap().unwrap();
    assert_eq!(
        detail.jobs[0].history[0].outcome.as_deref(),
        Some(outcome::SKIPPED)
    );
}

async fn replay_brings_dead_and_ignored_events_back(db: &TestDb) {
    let flow = Arc::new(TestFlow::new("test").then(FlowOutcome::Permanent {
        error: "mapping error".into(),
    }));
    let worker = start(&db.store, vec![flow.clone()], cfg(), Arc::new(SystemClock));
    let ids = insert(
        db.store.as_ref(),
        vec![event("d", "product/1", T0), event("u", "asset/1", T0)],
    )
    .await;
    wait_for_state(db.store.as_ref(), &ids[0], state::DEAD).await;
    wait_for_state(db.store.as_ref(), &ids[1], state::IGNORED).await;

    let dead_only = EventFilter::default();
    assert_eq!(
        db.store
            .replay_by_filter(&dead_only, true, T0)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        db.store.replay_event("missing", "x", T0).await.unwrap(),
        ReplayOutcome::NotFound
    );
    let now = xecm_bridge::store::now_millis();
    assert_eq!(
        db.store
            .replay_event(&ids[0], "operator replay", now)
            .await
            .unwrap(),
        ReplayOutcome::Replayed
    );
    wait_for_state(db.store.as_ref(), &ids[0], state::DONE).await;
    let ignored = EventFilter {
        state: Some(state::IGNORED.into()),
        ..Default::default()
    };
    assert_eq!(
        db.store
            .replay_by_filter(&ignored, false, now)
            .await
            .unwrap(),
        1
    );
    let again = wait_for(
        "the unwanted event ignored again after its replay",
        || async {
            let d = db.store.event_detail(&ids[1]).await.unwrap()?;
            (d.event.state == state::IGNORED && !d.notes.is_empty()).then_some(d)
        },
    )
    .await;
    assert_eq!(again.notes[0].note, "bulk replay");
    worker.stop().await;

    let detail = db.store.event_detail(&ids[0]).await.unwrap().unwrap();
    let history: Vec<_> = detail.jobs[0]
        .history
        .iter()
        .map(|a| (a.attempt, a.outcome.clone().unwrap()))
        .collect();
    assert_eq!(
        history,
        vec![
            (1, outcome::PERMANENT.to_string()),
            (2, outcome::SUCCESS.to_string())
        ]
    );
    assert_eq!(detail.notes.len(), 1);
    assert_eq!(detail.notes[0].note, "operator replay");
    assert!(
        db.store
            .replay_by_filter(
                &EventFilter {
                    state: Some(state::PENDING.into()),
                    ..Default::default()
                },
                true,
                now
            )
            .await
            .is_err()
    );
}

async fn expired_lease_makes_work_claimable_again(db: &TestDb) {
    let clock = Arc::new(ManualClock::new(T0));
    let id = insert(db.store.as_ref(), vec![event("l", "product/1", T0)]).await[0].clone();
    let routing = Routing {
        event_id: id.clone(),
        object_key: "product/1".into(),
        flows: vec!["test".into()],
    };
    db.store.route_events(&[routing], T0).await.unwrap();
    // A replica claims the work and dies without finishing it.
    let dead_owner = ClaimRequest {
        owner: "dead-replica/1".into(),
        now: T0,
        lease_until: T0 + 30_000,
        max_jobs: 10,
        max_attempts: 4,
    };
    let claimed = db.store.claim(&dead_owner).await.unwrap().expect("claimed");
    assert_eq!(claimed.jobs.len(), 1);
    let live = ClaimRequest {
        owner: "other/1".into(),
        ..dead_owner.clone()
    };
    assert!(
        db.store.claim(&live).await.unwrap().is_none(),
        "the lease is live"
    );

    let flow = Arc::new(TestFlow::new("test"));
    let worker = start(&db.store, vec![flow.clone()], cfg(), clock.clone());
    clock.advance(Duration::from_secs(31));
    wait_for_state(db.store.as_ref(), &id, state::DONE).await;
    worker.stop().await;
    let history = &db.store.event_detail(&id).await.unwrap().unwrap().jobs[0].history;
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].owner, "dead-replica/1");
    assert_eq!(history[0].outcome.as_deref(), Some(outcome::ABANDONED));
    assert!(
        history[0]
            .error
            .as_deref()
            .unwrap()
            .contains("lease expired")
    );
    assert_eq!(history[1].outcome.as_deref(), Some(outcome::SUCCESS));
    // The dead owner's late result changes nothing.
    let result = xecm_bridge::store::AttemptResult {
        outcome: outcome::SUCCESS,
        error: None,
        summary: None,
        finished_at: T0 + 40_000,
    };
    assert!(!db.store.finish_work(&claimed, &result, &[]).await.unwrap());
}

async fn retention_prunes_finished_events_only(db: &TestDb) {
    let clock = Arc::new(ManualClock::new(T0));
    let flow = Arc::new(TestFlow::new("test").then(FlowOutcome::Permanent {
        error: "bad".into(),
    }));
    let worker = start(&db.store, vec![flow.clone()], cfg(), clock.clone());
    let dead = insert(db.store.as_ref(), vec![event("x", "product/0", T0)]).await[0].clone();
    wait_for_state(db.store.as_ref(), &dead, state::DEAD).await;
    let mut finished = Vec::new();
    for i in 0..7 {
        let key = if i == 0 {
            "asset/1".to_string()
        } else {
            format!("product/{i}")
        };
        finished.extend(insert(db.store.as_ref(), vec![event(&format!("f{i}"), &key, T0)]).await);
    }
    for id in &finished {
        wait_for(&format!("{id} finished"), || async {
            let e = db.store.get_event(id).await.unwrap()?;
            (e.state == state::DONE || e.state == state::IGNORED).then_some(())
        })
        .await;
    }
    worker.stop().await;
    let pending = insert(db.store.as_ref(), vec![event("later", "product/9", T0)]).await[0].clone();

    assert_eq!(
        prune(db.store.as_ref(), T0, 3).await.unwrap(),
        0,
        "nothing is old yet"
    );
    assert_eq!(prune(db.store.as_ref(), T0 + 1, 3).await.unwrap(), 7);
    for id in &finished {
        assert!(db.store.event_detail(id).await.unwrap().is_none());
    }
    assert!(
        db.store.get_event(&dead).await.unwrap().is_some(),
        "dead letters stay"
    );
    assert!(db.store.get_event(&pending).await.unwrap().is_some());
    assert_eq!(db.store.count_events().await.unwrap(), 2);
}

async fn shutdown_releases_unfinished_work(db: &TestDb) {
    let blocked = Arc::new(TestFlow::new("test").blocking());
    let cfg = WorkerConfig {
        concurrency: 1,
        shutdown_grace_secs: 0,
        ..cfg()
    };
    let worker = start(
        &db.store,
        vec![blocked.clone()],
        cfg.clone(),
        Arc::new(SystemClock),
    );
    let ids = insert(
        db.store.as_ref(),
        vec![event("a", "product/a", T0), event("b", "product/b", T0)],
    )
    .await;
    wait_for("the first run to start", || async {
        (blocked.started.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    worker.stop().await;

    let mut released = 0;
    for id in &ids {
        let job = job(db.store.as_ref(), id).await;
        assert_eq!(job.state, state::PENDING);
        assert_eq!(job.attempts, 0, "a released run does not count");
        assert!(job.lease_owner.is_none());
        if let Some(attempt) = job.history.first() {
            assert_eq!(attempt.outcome.as_deref(), Some(outcome::RELEASED));
            released += 1;
        }
    }
    assert_eq!(released, 1, "only the running unit had started");

    let flow = Arc::new(TestFlow::new("test"));
    let worker = start(&db.store, vec![flow.clone()], cfg, Arc::new(SystemClock));
    for id in &ids {
        wait_for_state(db.store.as_ref(), id, state::DONE).await;
    }
    worker.stop().await;
}

async fn resync_runs_one_flow_or_all(db: &TestDb) {
    let a = Arc::new(TestFlow::new("a"));
    let b = Arc::new(TestFlow::new("b"));
    let worker = start(
        &db.store,
        vec![a.clone(), b.clone()],
        cfg(),
        Arc::new(SystemClock),
    );
    let one = db.store.resync(Some("b"), "product/1", T0).await.unwrap();
    wait_for_state(db.store.as_ref(), &one, state::DONE).await;
    assert!(a.calls().is_empty());
    assert_eq!(b.calls().len(), 1);
    let all = db.store.resync(None, "product/1", T0).await.unwrap();
    wait_for_state(db.store.as_ref(), &all, state::DONE).await;
    let unknown = db
        .store
        .resync(Some("nope"), "product/1", T0)
        .await
        .unwrap();
    wait_for_state(db.store.as_ref(), &unknown, state::IGNORED).await;
    worker.stop().await;
    assert_eq!(a.calls().len(), 1);
    assert_eq!(b.calls().len(), 2);
}

/// A change feed that reports a fixed set of changes once per cursor value.
struct Changes(Vec<ObjectChange>);

#[async_trait]
impl ChangeFeed for Changes {
    async fn changed_since(
        &self,
        cursor: Option<&str>,
        _also: &[String],
    ) -> Result<ChangeBatch, String> {
        let changes: Vec<ObjectChange> = self
            .0
            .iter()
            .filter(|c| cursor.is_none_or(|cur| c.mod_time.as_str() > cur))
            .cloned()
            .collect();
        let next_cursor = changes.iter().map(|c| c.mod_time.clone()).max();
        Ok(ChangeBatch {
            changes,
            next_cursor,
        })
    }
}

struct Decided;

#[async_trait]
impl WorkflowStatusFeed for Decided {
    async fn status(&self, process_id: &str) -> Result<WorkflowStatus, String> {
        Ok(match process_id {
            "wf-running" => WorkflowStatus::Running,
            _ => WorkflowStatus::Decided {
                decision: serde_json::json!({ "approved": false, "comment": "wrong label" }),
            },
        })
    }
}

fn change(id: &str, mod_time: &str) -> ObjectChange {
    ObjectChange {
        module: "product".into(),
        object_id: id.into(),
        mod_time: mod_time.into(),
    }
}

async fn reconciliation_enqueues_missed_changes_and_decisions(db: &TestDb) {
    let feed = Changes(vec![
        change("1", "2024-05-01T10:00:00Z"),
        change("2", "2024-05-01T11:00:00Z"),
    ]);
    let store = db.store.as_ref();
    assert_eq!(reconcile_allportal(store, &feed, T0).await.unwrap(), 2);
    assert_eq!(
        store.get_cursor(ALLPORTAL_CURSOR).await.unwrap().as_deref(),
        Some("2024-05-01T11:00:00Z")
    );
    assert_eq!(
        reconcile_allportal(store, &feed, T0).await.unwrap(),
        0,
        "cursor moved on"
    );
    store
        .set_cursor(ALLPORTAL_CURSOR, "2024-01-01", T0)
        .await
        .unwrap();
    assert_eq!(
        reconcile_allportal(store, &feed, T0).await.unwrap(),
        0,
        "ids deduplicate"
    );

    for id in ["wf-running", "wf-done"] {
        store
            .record_workflow(&WorkflowRecord {
                process_id: id.into(),
                flow: "change".into(),
                object_key: "product/1".into(),
                started_at: T0,
                state: workflow_state::RUNNING.into(),
                decision: None,
                updated_at: T0,
            })
            .await
            .unwrap();
    }
    assert_eq!(reconcile_opentext(store, &Decided, T0).await.unwrap(), 1);
    assert_eq!(reconcile_opentext(store, &Decided, T0).await.unwrap(), 0);
    let running: Vec<_> = store
        .running_workflows(10)
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.process_id)
        .collect();
    assert_eq!(running, vec!["wf-running"]);
    let decisions = store
        .list_events(
            &EventFilter {
                kind: Some(WORKFLOW_DECISION_KIND.into()),
                ..Default::default()
            },
            &xecm_bridge::store::Page {
                after: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(decisions.events.len(), 1);
    let decision = &decisions.events[0];
    assert_eq!(decision.object_key.as_deref(), Some("product/1"));
    assert_eq!(decision.payload["decision"]["approved"], false);
}

async fn worker_runs_the_reconciliation_loops(db: &TestDb) {
    let flow = Arc::new(TestFlow::new("test"));
    let shutdown = CancellationToken::new();
    let cfg = WorkerConfig {
        reconcile_allportal_interval_secs: 3600,
        ..cfg()
    };
    let handle = Worker::builder(db.store.clone(), vec![flow.clone()], cfg)
        .change_feed(Arc::new(Changes(vec![change("77", "2024-05-02")])))
        .spawn(shutdown.clone());
    wait_for("the missed change to be reconciled", || async {
        flow.calls()
            .iter()
            .any(|c| c.key == "product/77")
            .then_some(())
    })
    .await;
    shutdown.cancel();
    handle.join().await;
}

#[test]
fn leases_are_short_and_renewed_by_a_heartbeat() {
    let secrets = r#"
        [sources.allportal]
        secrets = ["whsec_MDEyMzQ1Njc4OWFiY2RlZg=="]
        [sources.opentext]
        secrets = ["whsec_MDEyMzQ1Njc4OWFiY2RlZg=="]
    "#;
    let ok = Settings::from_toml(&[secrets]).expect("defaults are valid");
    assert_eq!(
        ok.worker.retry_schedule_secs,
        vec![5, 30, 120, 600, 1800, 3600]
    );
    assert_eq!((ok.worker.lease_secs, ok.worker.lease_renew_secs), (30, 10));
    assert_eq!(ok.worker.max_retry_age(), Duration::from_secs(86_400));
    let slow = format!("{secrets}\n[worker]\nlease_secs = 20\n");
    let error = Settings::from_toml(&[&slow]).unwrap_err().to_string();
    assert!(error.contains("worker.lease_renew_secs"), "{error}");
    let zero = format!("{secrets}\n[worker]\nretry_schedule_secs = [5, 0]\n");
    let error = Settings::from_toml(&[&zero]).unwrap_err().to_string();
    assert!(error.contains("worker.retry_schedule_secs"), "{error}");
    // The former name of the maximum retry age is still accepted.
    let old = format!("{secrets}\n[worker]\nmax_age_secs = 600\n");
    let settings = Settings::from_toml(&[&old]).expect("max_age_secs is accepted");
    assert_eq!(settings.worker.max_retry_age(), Duration::from_secs(600));
}
