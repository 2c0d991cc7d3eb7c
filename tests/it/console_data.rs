//! What the operator console reads besides the admin API's queries, on SQLite and PostgreSQL:
//! an object's flow runs, events per minute, and the timeline endpoint built from them; and the
//! console's absence unless enabled.

use crate::backend_tests;
use crate::common;

use common::{ADMIN_TOKEN, TestDb, event, insert};
use serde_json::json;
use xecm_bridge::store::{
    AttemptResult, ClaimRequest, JobTransition, MinuteCount, Routing, now_millis, outcome, state,
};

backend_tests!(
    object_runs_list_the_attempts_of_one_object_newest_first,
    events_per_minute_counts_the_last_hours_events_by_minute,
);

/// Routes one event of `key` to flow `test`, claims it and finishes it with `result`.
async fn run_once(db: &TestDb, id: &str, key: &str, now: i64, result: AttemptResult) {
    let routing = Routing {
        event_id: id.to_string(),
        object_key: key.to_string(),
        flows: vec!["test".into()],
    };
    db.store.route_events(&[routing], now).await.unwrap();
    let work = db
        .store
        .claim(&ClaimRequest {
            owner: format!("w/{now}"),
            now,
            lease_until: now + 60_000,
            max_jobs: 10,
            max_attempts: 5,
        })
        .await
        .unwrap()
        .expect("claimed");
    let transitions: Vec<JobTransition> = work
        .jobs
        .iter()
        .map(|job| JobTransition {
            job_id: job.job_id,
            attempt_id: job.attempt_id,
            state: if result.error.is_some() {
                state::DEAD
            } else {
                state::DONE
            },
            next_attempt_at: now,
            last_error: result.error.clone(),
            refund_attempt: false,
        })
        .collect();
    assert!(
        db.store
            .finish_work(&work, &result, &transitions)
            .await
            .unwrap()
    );
}

async fn object_runs_list_the_attempts_of_one_object_newest_first(db: &TestDb) {
    let ids = insert(
        db.store.as_ref(),
        vec![
            event("e-1", "product/1", 1_000),
            event("e-2", "product/2", 1_000),
        ],
    )
    .await;
    let summary = json!({"operations": 1, "changes": ["create workspace"],
        "writes": [{"system": "opentext", "action": "create_workspace", "description": "create workspace"}]});
    run_once(
        db,
        &ids[0],
        "product/1",
        2_000,
        AttemptResult {
            outcome: outcome::PERMANENT,
            error: Some("boom".into()),
            summary: None,
            finished_at: 2_500,
        },
    )
    .await;
    db.store
        .replay_event(&ids[0], "again", 3_000)
        .await
        .unwrap();
    let work = db
        .store
        .claim(&ClaimRequest {
            owner: "w/again".into(),
            now: 3_000,
            lease_until: 60_000,
            max_jobs: 10,
            max_attempts: 5,
        })
        .await
        .unwrap()
        .expect("the replayed job");
    let transitions: Vec<JobTransition> = work
        .jobs
        .iter()
        .map(|job| JobTransition {
            job_id: job.job_id,
            attempt_id: job.attempt_id,
            state: state::DONE,
            next_attempt_at: 3_000,
            last_error: None,
            refund_attempt: false,
        })
        .collect();
    let success = AttemptResult {
        outcome: outcome::SUCCESS,
        error: None,
        summary: Some(summary.clone()),
        finished_at: 3_500,
    };
    assert!(
        db.store
            .finish_work(&work, &success, &transitions)
            .await
            .unwrap()
    );
    // Another object's run is not listed.
    run_once(
        db,
        &ids[1],
        "product/2",
        4_000,
        AttemptResult {
            outcome: outcome::SUCCESS,
            error: None,
            summary: None,
            finished_at: 4_500,
        },
    )
    .await;

    let runs = db.store.object_runs("product/1", 10).await.unwrap();
    let seen: Vec<(i64, Option<&str>, Option<&str>)> = runs
        .iter()
        .map(|r| {
            (
                r.attempt.attempt,
                r.attempt.outcome.as_deref(),
                r.attempt.error.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (2, Some(outcome::SUCCESS), None),
            (1, Some(outcome::PERMANENT), Some("boom")),
        ]
    );
    assert!(
        runs.iter()
            .all(|r| r.flow == "test" && r.event_id == ids[0])
    );
    assert_eq!(runs[0].job_state, state::DONE);
    assert_eq!(runs[0].attempt.summary.as_ref(), Some(&summary));
    assert_eq!(db.store.object_runs("product/1", 1).await.unwrap().len(), 1);
    assert!(
        db.store
            .object_runs("product/3", 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn events_per_minute_counts_the_last_hours_events_by_minute(db: &TestDb) {
    let now = now_millis();
    let minute = now / 60_000 * 60_000 - 120_000;
    insert(
        db.store.as_ref(),
        vec![
            event("m-1", "product/1", minute + 1_000),
            event("m-2", "product/2", minute + 59_999),
            event("m-3", "product/3", minute + 60_000),
            // Stored now but received two hours ago: outside the hour asked for.
            event("m-4", "product/4", now - 7_200_000),
        ],
    )
    .await;
    let counts = db.store.events_per_minute(now - 3_600_000).await.unwrap();
    assert_eq!(
        counts,
        vec![
            MinuteCount { minute, events: 2 },
            MinuteCount {
                minute: minute + 60_000,
                events: 1
            },
        ]
    );
    // Nothing is stored after a minute from now.
    let later = db.store.events_per_minute(now + 60_000).await.unwrap();
    assert!(later.is_empty(), "{later:?}");
}

#[test]
fn the_first_id_of_an_instant_orders_before_ids_made_then() {
    let now = now_millis();
    let id = xecm_bridge::store::new_event_id();
    assert!(xecm_bridge::store::first_event_id_at(now).as_str() <= id.as_str());
    assert!(xecm_bridge::store::first_event_id_at(now + 1_000).as_str() > id.as_str());
}

#[tokio::test]
async fn the_timeline_endpoint_lists_an_objects_events() {
    let app = common::spawn_app("").await;
    let client = reqwest::Client::new();
    let body = common::product_event("4711");
    let response = common::signed(
        &client,
        &app.url("/webhooks/allportal"),
        common::ALLPORTAL_SECRET,
        "timeline-1",
        &body,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 202);
    let timeline: serde_json::Value = client
        .get(app.url("/api/v1/objects/product/4711"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(timeline["object_key"], "product/4711");
    let entries = timeline["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{timeline}");
    assert_eq!(entries[0]["kind"], "event");
    let status = client
        .get(app.url("/api/v1/objects/product/4711"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
    app.stop().await;
}

#[tokio::test]
async fn the_console_is_not_served_unless_enabled() {
    let app = common::spawn_app("").await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client.get(app.url("/ui/")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    app.stop().await;

    let app = common::spawn_app("[console]\nenabled = true\n").await;
    let response = client.get(app.url("/ui/")).send().await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/ui/sign-in");
    let page = client.get(app.url("/ui/sign-in")).send().await.unwrap();
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert!(
        page.text()
            .await
            .unwrap()
            .contains(r#"<label for="token">"#)
    );
    // A reverse proxy's bearer header signs in without the form; a wrong one does not.
    let page = client
        .get(app.url("/ui/"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(html.contains("<h1>Overview</h1>"), "{html}");
    assert!(!html.contains(ADMIN_TOKEN), "a page shows the admin token");
    let page = client
        .get(app.url("/ui/"))
        .bearer_auth("not-the-admin-token-0123")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 303);
    app.stop().await;
}

/// The session cookie and CSRF token of a sign-in over plain HTTP.
async fn signed_in(client: &reqwest::Client, app: &common::TestApp) -> (String, String) {
    let response = client
        .post(app.url("/ui/sign-in"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let page = client
        .get(app.url("/ui/dead-letters"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split(r#"name="csrf" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF field on the page")
        .to_string();
    (cookie, csrf)
}

#[tokio::test]
async fn replaying_all_matching_dead_letters_shows_the_count_first() {
    let app = common::spawn_app("[console]\nenabled = true\ncookie_secure = false\n").await;
    let mut dead = event("dead-1", "product/1", now_millis());
    dead.dead_letter = Some("no flow can handle it".into());
    let ids = insert(
        app.store.as_ref(),
        vec![dead, event("live-1", "product/2", now_millis())],
    )
    .await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (cookie, csrf) = signed_in(&client, &app).await;
    let post = |form: Vec<(&'static str, String)>| {
        client
            .post(app.url("/ui/dead-letters/replay"))
            .header("cookie", &cookie)
            .form(&form)
            .send()
    };

    // Without the CSRF token: refused, nothing replayed.
    let response = post(vec![("confirm", "1".into())]).await.unwrap();
    assert_eq!(response.status(), 403);
    let stored = app.store.get_event(&ids[0]).await.unwrap().unwrap();
    assert_eq!(stored.state, state::DEAD);

    // First the dry-run count, with a button that confirms it.
    let page = post(vec![
        ("csrf", csrf.clone()),
        ("object_key", "product/1".into()),
    ])
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(
        page.contains("<strong>1</strong> dead letters match"),
        "{page}"
    );
    assert!(page.contains(r#"name="confirm" value="1""#), "{page}");
    let stored = app.store.get_event(&ids[0]).await.unwrap().unwrap();
    assert_eq!(stored.state, state::DEAD, "the count replays nothing");

    // Then the replay.
    let page = post(vec![
        ("csrf", csrf),
        ("object_key", "product/1".into()),
        ("confirm", "1".into()),
    ])
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(page.contains("1 dead letters replayed"), "{page}");
    let stored = app.store.get_event(&ids[0]).await.unwrap().unwrap();
    assert_ne!(stored.state, state::DEAD);
    app.stop().await;
}
