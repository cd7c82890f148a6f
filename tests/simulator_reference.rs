//! The simulator's Currents API held to the reference where an audit found it wrong
//! (`shared/reference/currents-openapi-2026-01.json`, `runs-api.txt`,
//! `currents-notes.md`): the run feed's enum filters, the `authors[]` filter, the times
//! of an instance, and per-group webhooks as each group finishes.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::{Duration as ChronoDuration, Utc};
use runwarden::currents::models::{CompletionState, Run};
use runwarden::simulator::{
    self, Advance, GroupsSpec, NewProject, NewRun, Outcome, SimConfig, SimHandle,
};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const KEY: &str = "sim-key";
const PROJECT: &str = "bAYZ4a";

async fn sim_with(cfg: SimConfig) -> SimHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let s = simulator::spawn(listener, cfg)
        .await
        .expect("spawn simulator");
    s.add_project(NewProject {
        project_id: Some(PROJECT.into()),
        repo: Some("acme/web".into()),
        ..Default::default()
    })
    .unwrap();
    s
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// `method {base}{path}` with the API key; status and JSON body.
async fn call(s: &SimHandle, method: reqwest::Method, path: &str) -> (u16, Value) {
    let r = http()
        .request(method, format!("{}{}", s.base_url, path))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json body"))
}

async fn get(s: &SimHandle, path: &str) -> (u16, Value) {
    call(s, reqwest::Method::GET, path).await
}

fn ids_of(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .expect("data array")
        .iter()
        .map(|r| r["runId"].as_str().expect("runId").to_string())
        .collect()
}

// -------------------------------------------------------------------------------------
// Run feed filters
// -------------------------------------------------------------------------------------

/// `status`, `completion_state` and `tag_operator` take exactly the reference's values
/// (`RunFeedStatusQuery`: PASSED, FAILED, RUNNING, FAILING; `RunFeedCompletionStateQuery`:
/// COMPLETE, IN_PROGRESS, CANCELED, TIMEOUT; `RunFeedTagOperatorQuery`: AND, OR). Another
/// spelling (`CANCELLED`, the Run schema's lowercase `incomplete`, `failing`, `or`) is a
/// 400, as a validator with those enums answers: a client that sent one would otherwise
/// pass here and fail against Currents.
#[tokio::test]
async fn feed_enum_filters_take_only_the_references_values() {
    let s = sim_with(SimConfig::default()).await;
    let mk = |state: &str, tags: &[&str]| NewRun {
        project: Some(PROJECT.into()),
        state: Some(state.into()),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        emit: Some(false),
        ..Default::default()
    };
    let canceled = s.add_run(mk("canceled", &["a"])).unwrap();
    let running = s.add_run(mk("running", &["b"])).unwrap();
    let failing = s.add_run(mk("failing", &[])).unwrap();

    for (query, want) in [
        ("completion_state=CANCELED", vec![&canceled]),
        ("completion_state=IN_PROGRESS", vec![&failing, &running]),
        ("status=FAILING", vec![&failing]),
        ("status=RUNNING", vec![&running]),
        (
            "tags[]=a&tags[]=b&tag_operator=OR",
            vec![&running, &canceled],
        ),
        ("tags[]=a&tags[]=b&tag_operator=AND", vec![]),
    ] {
        let (st, body) = get(&s, &format!("/v1/projects/{PROJECT}/runs?{query}")).await;
        assert_eq!(st, 200, "{query}: {body}");
        let want: Vec<String> = want.iter().map(|r: &&Run| r.run_id.clone()).collect();
        assert_eq!(ids_of(&body), want, "{query}");
    }

    for (query, field) in [
        ("completion_state=CANCELLED", "completion_state"),
        ("completion_state=canceled", "completion_state"),
        ("completion_state=incomplete", "completion_state"),
        ("completion_state=INCOMPLETE", "completion_state"),
        ("completion_state=TIMEDOUT", "completion_state"),
        ("completion_state=in_progress", "completion_state"),
        ("status=failing", "status"),
        ("status=Passed", "status"),
        ("status=CANCELLED", "status"),
        ("tag_operator=or", "tag_operator"),
        ("tag_operator=And", "tag_operator"),
    ] {
        let (st, body) = get(&s, &format!("/v1/projects/{PROJECT}/runs?{query}")).await;
        assert_eq!(st, 400, "{query}: {body}");
        assert_eq!(body["status"], "FAILED", "{query}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(field), "{query}: {error}");
    }
    s.shutdown().await;
}

/// `authors[]` filters by git author **name** (`RunFeedAuthorQuery`: "Filter runs by
/// git commit author name"): an author's e-mail address matches nothing.
#[tokio::test]
async fn authors_filter_matches_names_not_emails() {
    let s = sim_with(SimConfig::default()).await;
    let ada = s
        .add_run(NewRun {
            project: Some(PROJECT.into()),
            author: Some("Ada Lovelace".into()),
            author_email: Some("ada@example.com".into()),
            state: Some("passed".into()),
            emit: Some(false),
            ..Default::default()
        })
        .unwrap();
    s.add_run(NewRun {
        project: Some(PROJECT.into()),
        author: Some("Grace Hopper".into()),
        author_email: Some("grace@example.com".into()),
        state: Some("passed".into()),
        emit: Some(false),
        ..Default::default()
    })
    .unwrap();
    let (st, body) = get(
        &s,
        &format!("/v1/projects/{PROJECT}/runs?authors[]=Ada%20Lovelace"),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(ids_of(&body), vec![ada.run_id.clone()]);
    for query in ["authors[]=ada%40example.com", "author=ada%40example.com"] {
        let (st, body) = get(&s, &format!("/v1/projects/{PROJECT}/runs?{query}")).await;
        assert_eq!(st, 200, "{query}: {body}");
        assert_eq!(ids_of(&body), Vec::<String>::new(), "{query}");
    }
    s.shutdown().await;
}

// -------------------------------------------------------------------------------------
// Times
// -------------------------------------------------------------------------------------

/// A spec-file instance (`GET /v1/instances/{id}`) writes its times as the API does,
/// RFC 3339 in UTC to the millisecond (`"claimedAt": "2022-07-06T08:37:58.317Z"`), like
/// the run it belongs to: never with nanoseconds.
#[tokio::test]
async fn instance_times_are_written_to_the_millisecond() {
    let s = sim_with(SimConfig::default()).await;
    let created =
        Utc::now() - ChronoDuration::minutes(20) - ChronoDuration::nanoseconds(123_456_789);
    let run = s
        .add_run(NewRun {
            project: Some(PROJECT.into()),
            created_at: Some(created),
            specs: Some(3),
            completed: Some(1),
            claimed: Some(1),
            emit: Some(false),
            ..Default::default()
        })
        .unwrap();
    // A spec completed now, at a time with sub-millisecond digits.
    let run = s
        .advance(
            &run.run_id,
            Advance {
                complete: 1,
                at: Some(Utc::now() - ChronoDuration::nanoseconds(987_654_321)),
                ..Default::default()
            },
        )
        .unwrap();
    let done: Vec<String> = run
        .specs
        .iter()
        .filter(|sp| sp.completed_at.is_some())
        .filter_map(|sp| sp.instance_id.clone())
        .collect();
    assert_eq!(done.len(), 2);
    let is_ms = |t: &str| {
        t.len() == "2022-07-06T08:37:58.317Z".len() && t.ends_with('Z') && t.as_bytes()[19] == b'.'
    };
    for id in done {
        let (st, body) = get(&s, &format!("/v1/instances/{id}")).await;
        assert_eq!(st, 200, "{body}");
        let data = &body["data"];
        for field in ["createdAt", "claimedAt", "completedAt"] {
            let t = data[field]
                .as_str()
                .unwrap_or_else(|| panic!("{field}: {data}"));
            assert!(is_ms(t), "{field} = {t:?}");
        }
        let stats = &data["results"]["stats"];
        for field in ["wallClockStartedAt", "wallClockEndedAt"] {
            let t = stats[field]
                .as_str()
                .unwrap_or_else(|| panic!("{field}: {stats}"));
            assert!(is_ms(t), "{field} = {t:?}");
        }
    }
    s.shutdown().await;
}

// -------------------------------------------------------------------------------------
// Per-group webhooks
// -------------------------------------------------------------------------------------

type Received = (HeaderMap, Value);

/// A webhook receiver: every POST goes to the channel and is answered 202.
async fn receiver() -> (String, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let _ = tx.send((headers, v));
                StatusCode::ACCEPTED
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), rx)
}

/// The next webhook body, within 10 s.
async fn next_event(rx: &mut mpsc::UnboundedReceiver<Received>) -> Value {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a webhook in time")
        .expect("receiver alive")
        .1
}

/// (event, groupId) of a webhook body; `-` when it has no `groupId`.
fn kind(v: &Value) -> (String, String) {
    (
        v["event"].as_str().unwrap_or_default().to_string(),
        v["groupId"].as_str().unwrap_or("-").to_string(),
    )
}

fn pair(event: &str, group: &str) -> (String, String) {
    (event.to_string(), group.to_string())
}

/// A running run of two groups (`chromium`, `firefox`) of one spec file each, both
/// claimed: completing one spec file completes the `chromium` group.
fn two_groups() -> NewRun {
    NewRun {
        project: Some(PROJECT.into()),
        groups: Some(GroupsSpec::Count(2)),
        specs: Some(1),
        ..Default::default()
    }
}

/// Adds a run that only emits `RUN_START` (one group) and waits for it: every event
/// before it has been delivered, so one that was due and did not come never will.
async fn marker(s: &SimHandle, rx: &mut mpsc::UnboundedReceiver<Received>) {
    s.add_run(NewRun {
        project: Some(PROJECT.into()),
        ci_build_id: Some("marker".into()),
        ..Default::default()
    })
    .unwrap();
    let v = next_event(rx).await;
    assert_eq!(
        (kind(&v), v["buildId"].as_str()),
        (pair("RUN_START", "-"), Some("marker")),
        "an event nobody expected came first: {v}"
    );
}

/// With one webhook per group, a group's `RUN_FINISH` comes when that group finishes,
/// with its own counters, while the run still runs (sorry-cypress, Currents'
/// predecessor, emits `emitGroupFinish` per group; Currents' payload has `groupId`
/// "only for multigroup runs"). Cancelling or timing out the run then reaches only the
/// groups still running.
#[tokio::test]
async fn per_group_run_finish_comes_as_each_group_finishes() {
    let (url, mut rx) = receiver().await;
    let s = sim_with(SimConfig {
        webhook_url: Some(url),
        webhook_per_group: true,
        ..SimConfig::default()
    })
    .await;

    // Finish: chromium first, firefox later.
    let run = s.add_run(two_groups()).unwrap();
    let mut starts = vec![
        kind(&next_event(&mut rx).await),
        kind(&next_event(&mut rx).await),
    ];
    starts.sort();
    assert_eq!(
        starts,
        vec![pair("RUN_START", "chromium"), pair("RUN_START", "firefox")]
    );
    let after = s
        .advance(
            &run.run_id,
            Advance {
                complete: 1,
                fail: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(after.completion_state, CompletionState::InProgress);
    let chromium = after
        .groups
        .iter()
        .find(|g| g.group_id == "chromium")
        .unwrap();
    assert_eq!(chromium.instances.complete, chromium.instances.overall);
    let v = next_event(&mut rx).await;
    assert_eq!(kind(&v), pair("RUN_FINISH", "chromium"), "{v}");
    assert_eq!(v["overall"].as_u64(), Some(chromium.tests.overall));
    assert_eq!(v["failures"].as_u64(), Some(chromium.tests.failures));
    assert!(v["failures"].as_u64().unwrap() >= 1, "{v}");
    // The API still shows the run in progress when its first group has finished.
    let (st, body) = get(&s, &format!("/v1/runs/{}", run.run_id)).await;
    assert_eq!(
        (st, body["data"]["completionState"].as_str()),
        (200, Some("IN_PROGRESS"))
    );
    let done = s
        .advance(
            &run.run_id,
            Advance {
                finish: Some(Outcome::Passed),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(done.completion_state, CompletionState::Complete);
    let v = next_event(&mut rx).await;
    assert_eq!(kind(&v), pair("RUN_FINISH", "firefox"), "{v}");
    marker(&s, &mut rx).await;

    // Cancel after one group finished: RUN_CANCELED for the other group only.
    let run = s.add_run(two_groups()).unwrap();
    next_event(&mut rx).await;
    next_event(&mut rx).await;
    s.advance(
        &run.run_id,
        Advance {
            complete: 1,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        kind(&next_event(&mut rx).await),
        pair("RUN_FINISH", "chromium")
    );
    let (st, body) = call(
        &s,
        reqwest::Method::PUT,
        &format!("/v1/runs/{}/cancel", run.run_id),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        kind(&next_event(&mut rx).await),
        pair("RUN_CANCELED", "firefox")
    );
    marker(&s, &mut rx).await;

    // Time out after one group finished: RUN_TIMEOUT for the other group only.
    let run = s.add_run(two_groups()).unwrap();
    next_event(&mut rx).await;
    next_event(&mut rx).await;
    s.advance(
        &run.run_id,
        Advance {
            complete: 1,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        kind(&next_event(&mut rx).await),
        pair("RUN_FINISH", "chromium")
    );
    s.advance(
        &run.run_id,
        Advance {
            timeout: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        kind(&next_event(&mut rx).await),
        pair("RUN_TIMEOUT", "firefox")
    );
    marker(&s, &mut rx).await;

    // Cancel with no group finished: one RUN_CANCELED per group.
    let run = s.add_run(two_groups()).unwrap();
    next_event(&mut rx).await;
    next_event(&mut rx).await;
    let (st, _) = call(
        &s,
        reqwest::Method::PUT,
        &format!("/v1/runs/{}/cancel", run.run_id),
    )
    .await;
    assert_eq!(st, 200);
    let mut canceled = vec![
        kind(&next_event(&mut rx).await),
        kind(&next_event(&mut rx).await),
    ];
    canceled.sort();
    assert_eq!(
        canceled,
        vec![
            pair("RUN_CANCELED", "chromium"),
            pair("RUN_CANCELED", "firefox")
        ]
    );
    marker(&s, &mut rx).await;
    s.shutdown().await;
}

/// Without per-group webhooks (the default) a multi-group run has one event of each
/// kind, without `groupId`: a group that finishes first sends nothing.
#[tokio::test]
async fn whole_run_webhooks_wait_for_the_run() {
    let (url, mut rx) = receiver().await;
    let s = sim_with(SimConfig {
        webhook_url: Some(url),
        ..SimConfig::default()
    })
    .await;
    let run = s.add_run(two_groups()).unwrap();
    assert_eq!(kind(&next_event(&mut rx).await), pair("RUN_START", "-"));
    s.advance(
        &run.run_id,
        Advance {
            complete: 1,
            ..Default::default()
        },
    )
    .unwrap();
    marker(&s, &mut rx).await;
    s.advance(
        &run.run_id,
        Advance {
            finish: Some(Outcome::Passed),
            ..Default::default()
        },
    )
    .unwrap();
    let v = next_event(&mut rx).await;
    assert_eq!(kind(&v), pair("RUN_FINISH", "-"), "{v}");
    let all = s.run(&run.run_id).unwrap().test_counts();
    assert_eq!(v["overall"].as_u64(), Some(all.overall));
    marker(&s, &mut rx).await;
    s.shutdown().await;
}
