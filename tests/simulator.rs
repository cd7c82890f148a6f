//! End-to-end tests of the built-in simulator (SPEC §7): the Currents API under `/v1`,
//! the GitHub endpoints under `/github` (also through octocrab), webhooks, faults and
//! control endpoints, against a simulator spawned on 127.0.0.1:0.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use runwarden::currents::models::{
    CompletionState, CurrentsWebhookPayload, Project, Run, RunStatus, Webhook,
};
use runwarden::simulator::{
    self, Advance, Fault, FaultKind, GenerateSpec, GroupsSpec, NewPr, NewProject, NewRun, Outcome,
    SimConfig, SimHandle,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const KEY: &str = "sim-key";

async fn sim_with(cfg: SimConfig) -> SimHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    simulator::spawn(listener, cfg)
        .await
        .expect("spawn simulator")
}

async fn sim() -> SimHandle {
    sim_with(SimConfig::default()).await
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// GET `{base}{path}` with the API key; status and JSON body.
async fn get(s: &SimHandle, path: &str) -> (u16, Value) {
    let r = http()
        .get(format!("{}{}", s.base_url, path))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json body"))
}

async fn send(
    s: &SimHandle,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http()
        .request(method, format!("{}{}", s.base_url, path))
        .bearer_auth(KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn project(id: &str) -> NewProject {
    NewProject {
        project_id: Some(id.into()),
        repo: Some("acme/web".into()),
        ..Default::default()
    }
}

fn run_at(project: &str, minutes_ago: i64, now: DateTime<Utc>) -> NewRun {
    NewRun {
        project: Some(project.into()),
        created_at: Some(now - ChronoDuration::minutes(minutes_ago)),
        state: Some("passed".into()),
        emit: Some(false),
        ..Default::default()
    }
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
// Envelope and auth
// -------------------------------------------------------------------------------------

#[tokio::test]
async fn envelope_auth_and_not_found_errors() {
    let s = sim_with(SimConfig {
        read_only_api_key: Some("ro-key".into()),
        ..SimConfig::default()
    })
    .await;
    s.add_project(project("bAYZ4a")).unwrap();
    let run = s
        .add_run(NewRun {
            project: Some("bAYZ4a".into()),
            ..Default::default()
        })
        .unwrap();

    // Missing and wrong key.
    let r = http()
        .get(format!("{}/v1/projects", s.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"status": "FAILED", "error": "Invalid API key provided"})
    );
    let r = http()
        .get(format!("{}/v1/projects", s.base_url))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // OK envelope with has_more and per-item cursor.
    let (st, body) = get(&s, "/v1/projects").await;
    assert_eq!(st, 200);
    assert_eq!(body["status"], "OK");
    assert_eq!(body["has_more"], false);
    let projects: Vec<Project> = serde_json::from_value(body["data"].clone()).unwrap();
    assert_eq!(projects.len(), 1);
    assert_eq!(projects[0].project_id, "bAYZ4a");
    assert_eq!(projects[0].cursor.as_ref().map(|c| c.len()), Some(24));

    let (st, body) = get(&s, "/v1/projects/bAYZ4a").await;
    assert_eq!(st, 200);
    assert!(body["data"].get("cursor").is_none());

    // Not found, with the reference's messages.
    let (st, body) = get(&s, "/v1/runs/ffffffffffffffff").await;
    assert_eq!(
        (st, body),
        (404, json!({"status": "FAILED", "error": "Run not found"}))
    );
    let (st, body) = get(&s, "/v1/projects/nope42").await;
    assert_eq!(
        (st, body),
        (
            404,
            json!({"status": "FAILED", "error": "Project not found"})
        )
    );
    let (st, body) = get(&s, "/v1/projects/nope42/runs").await;
    assert_eq!(
        (st, body["error"].clone()),
        (404, json!("Project not found"))
    );
    let (st, body) = get(&s, "/v1/no/such/route").await;
    assert_eq!(st, 404);
    assert_eq!(body["status"], "FAILED");
    let (st, body) = send(&s, reqwest::Method::POST, "/v1/projects", None).await;
    assert_eq!(st, 405);
    assert_eq!(body["status"], "FAILED");

    // A read-only key reads but cannot write.
    let r = http()
        .get(format!("{}/v1/runs/{}", s.base_url, run.run_id))
        .bearer_auth("ro-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http()
        .put(format!("{}/v1/runs/{}/cancel", s.base_url, run.run_id))
        .bearer_auth("ro-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(s.run(&run.run_id).unwrap().is_in_progress());
    s.shutdown().await;
}

// -------------------------------------------------------------------------------------
// Pagination
// -------------------------------------------------------------------------------------

#[tokio::test]
async fn pagination_walks_newest_first_with_cursors() {
    let s = sim().await;
    s.add_project(project("bAYZ4a")).unwrap();
    let now = Utc::now();
    // 23 runs, one minute apart; added in shuffled order.
    let mut order: Vec<i64> = (0..23).collect();
    order.reverse();
    order.swap(3, 17);
    let mut expected: Vec<(i64, String)> = Vec::new();
    for m in order {
        let r = s.add_run(run_at("bAYZ4a", m, now)).unwrap();
        expected.push((m, r.run_id));
    }
    expected.sort_by_key(|(m, _)| *m); // newest (fewest minutes ago) first
    let expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();

    // Default limit is 10.
    let (st, first) = get(&s, "/v1/projects/bAYZ4a/runs").await;
    assert_eq!(st, 200);
    assert_eq!(ids_of(&first), expected[..10].to_vec());
    assert_eq!(first["has_more"], true);
    let item = &first["data"][0];
    assert!(item.get("specs").is_none(), "feed items carry no specs");
    let cursor = item["cursor"].as_str().unwrap();
    assert!(cursor.len() == 24 && cursor.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(item["durationMs"].as_u64().unwrap() > 0);

    // Walk with starting_after = last cursor until has_more is false.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            Some(c) => format!("/v1/projects/bAYZ4a/runs?limit=10&starting_after={c}"),
            None => "/v1/projects/bAYZ4a/runs?limit=10".to_string(),
        };
        let (st, page) = get(&s, &path).await;
        assert_eq!(st, 200);
        pages += 1;
        let data = page["data"].as_array().unwrap();
        seen.extend(ids_of(&page));
        after = data
            .last()
            .map(|r| r["cursor"].as_str().unwrap().to_string());
        if page["has_more"] == false {
            break;
        }
        assert!(pages < 10, "runaway pagination");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, expected);

    // ending_before returns the newer neighbours, still newest first.
    let (_, page2) = get(&s, "/v1/projects/bAYZ4a/runs?limit=10&starting_after=").await;
    assert_eq!(
        ids_of(&page2),
        expected[..10].to_vec(),
        "empty cursor = first page"
    );
    let c10 = first["data"][9]["cursor"].as_str().unwrap().to_string();
    let (_, second) = get(
        &s,
        &format!("/v1/projects/bAYZ4a/runs?limit=10&starting_after={c10}"),
    )
    .await;
    assert_eq!(ids_of(&second), expected[10..20].to_vec());
    let c11 = second["data"][0]["cursor"].as_str().unwrap().to_string();
    let (_, back) = get(
        &s,
        &format!("/v1/projects/bAYZ4a/runs?limit=10&ending_before={c11}"),
    )
    .await;
    assert_eq!(ids_of(&back), expected[..10].to_vec());
    assert_eq!(back["has_more"], false);
    let (_, back3) = get(
        &s,
        &format!("/v1/projects/bAYZ4a/runs?limit=3&ending_before={c11}"),
    )
    .await;
    assert_eq!(ids_of(&back3), expected[7..10].to_vec());
    assert_eq!(back3["has_more"], true);

    // A cursor stays valid after its run is deleted (keyset pagination).
    s.delete_run(&expected[9]).unwrap();
    let (_, again) = get(
        &s,
        &format!("/v1/projects/bAYZ4a/runs?limit=10&starting_after={c10}"),
    )
    .await;
    assert_eq!(ids_of(&again), expected[10..20].to_vec());

    // Limit bounds and cursor errors.
    for bad in ["0", "51", "-1", "abc", "10.5"] {
        let (st, body) = get(&s, &format!("/v1/projects/bAYZ4a/runs?limit={bad}")).await;
        assert_eq!(st, 400, "limit={bad}");
        assert_eq!(
            body["error"],
            "Invalid limit parameter. Must be between 1 and 50"
        );
    }
    let (st, body) = get(&s, "/v1/projects/bAYZ4a/runs?limit=50").await;
    assert_eq!((st, body["data"].as_array().unwrap().len()), (200, 22));
    let (st, _) = get(
        &s,
        &format!("/v1/projects/bAYZ4a/runs?starting_after={c10}&ending_before={c11}"),
    )
    .await;
    assert_eq!(st, 400);
    let (st, _) = get(&s, "/v1/projects/bAYZ4a/runs?starting_after=not-a-cursor").await;
    assert_eq!(st, 400);
    let (st, body) = get(&s, "/v1/projects?limit=99").await;
    assert_eq!(
        (st, body["error"].clone()),
        (
            400,
            json!("Invalid limit parameter. Must be between 1 and 50")
        )
    );
    s.shutdown().await;
}

#[tokio::test]
async fn projects_are_paginated() {
    let s = sim().await;
    let now = Utc::now();
    for i in 0..5 {
        s.add_project(NewProject {
            project_id: Some(format!("proj0{i}")),
            created_at: Some(now - ChronoDuration::days(10 - i)),
            ..Default::default()
        })
        .unwrap();
    }
    let (_, p1) = get(&s, "/v1/projects?limit=2").await;
    let ids: Vec<&str> = p1["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["projectId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["proj04", "proj03"]);
    assert_eq!(p1["has_more"], true);
    let c = p1["data"][1]["cursor"].as_str().unwrap();
    let (_, p2) = get(&s, &format!("/v1/projects?limit=5&starting_after={c}")).await;
    let ids: Vec<&str> = p2["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["projectId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["proj02", "proj01", "proj00"]);
    assert_eq!(p2["has_more"], false);
}

// -------------------------------------------------------------------------------------
// Filters
// -------------------------------------------------------------------------------------

#[tokio::test]
async fn run_feed_filters() {
    let s = sim().await;
    s.add_project(project("bAYZ4a")).unwrap();
    let now = Utc::now();
    let mk =
        |m: i64, branch: &str, tags: &[&str], author: &str, msg: &str, ci: &str, state: &str| {
            NewRun {
                project: Some("bAYZ4a".into()),
                created_at: Some(now - ChronoDuration::minutes(m)),
                branch: Some(branch.into()),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                author: Some(author.into()),
                message: Some(msg.into()),
                ci_build_id: Some(ci.into()),
                state: Some(state.into()),
                completed: Some(1),
                emit: Some(false),
                ..Default::default()
            }
        };
    let a = s
        .add_run(mk(
            50,
            "main",
            &["nightly", "smoke"],
            "Ada Lovelace",
            "Fix Login bug",
            "web-100-1",
            "passed",
        ))
        .unwrap();
    let b = s
        .add_run(mk(
            40,
            "feat/x",
            &["smoke"],
            "Grace Hopper",
            "feat: coupons",
            "web-101-1",
            "failed",
        ))
        .unwrap();
    let c = s
        .add_run(mk(
            30,
            "feat/y",
            &["nightly"],
            "Ada Lovelace",
            "chore: deps",
            "pw:web-LOGIN-7",
            "running",
        ))
        .unwrap();
    let d = s
        .add_run(mk(
            20,
            "main",
            &[],
            "Alan Kay",
            "docs",
            "web-103-1",
            "canceled",
        ))
        .unwrap();
    let e = s
        .add_run(mk(
            10,
            "feat/x",
            &["smoke", "nightly"],
            "Grace Hopper",
            "more",
            "web-104-1",
            "failing",
        ))
        .unwrap();
    assert_eq!(e.status, RunStatus::Failing);
    let f = s
        .add_run(mk(
            5,
            "main",
            &[],
            "Alan Kay",
            "slow",
            "web-105-1",
            "timeout",
        ))
        .unwrap();
    let q = |query: &str| {
        let s = &s;
        let query = query.to_string();
        async move {
            let (st, body) = get(s, &format!("/v1/projects/bAYZ4a/runs?limit=50&{query}")).await;
            assert_eq!(st, 200, "{query}: {body}");
            let mut ids = ids_of(&body);
            ids.sort();
            ids
        }
    };
    let set = |runs: &[&Run]| {
        let mut v: Vec<String> = runs.iter().map(|r| r.run_id.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(q("branches[]=main").await, set(&[&a, &d, &f]));
    assert_eq!(
        q("branches[]=feat/x&branches[]=feat/y").await,
        set(&[&b, &c, &e])
    );
    assert_eq!(q("branch=feat/y").await, set(&[&c]), "deprecated branch");
    assert_eq!(
        q("tags[]=smoke&tags[]=nightly").await,
        set(&[&a, &e]),
        "AND is the default"
    );
    assert_eq!(
        q("tags[]=smoke&tags[]=nightly&tag_operator=AND").await,
        set(&[&a, &e])
    );
    assert_eq!(
        q("tags[]=smoke&tags[]=nightly&tag_operator=OR").await,
        set(&[&a, &b, &c, &e])
    );
    assert_eq!(q("tag=nightly").await, set(&[&a, &c, &e]), "deprecated tag");
    assert_eq!(q("authors[]=Ada%20Lovelace").await, set(&[&a, &c]));
    assert_eq!(
        q("authors[]=Alan+Kay&authors[]=Grace+Hopper").await,
        set(&[&b, &d, &e, &f])
    );
    assert_eq!(
        q("search=login").await,
        set(&[&a, &c]),
        "message or ciBuildId, any case"
    );
    assert_eq!(q("search=WEB-101").await, set(&[&b]));
    assert_eq!(
        q("status=PASSED&status=FAILED").await,
        set(&[&a, &b, &d, &f])
    );
    assert_eq!(q("status=FAILING").await, set(&[&e]));
    assert_eq!(q("completion_state=IN_PROGRESS").await, set(&[&c, &e]));
    assert_eq!(
        q("completion_state=CANCELED&completion_state=TIMEOUT").await,
        set(&[&d, &f])
    );
    assert_eq!(
        q("completion_state=IN_PROGRESS&branches[]=feat/x").await,
        set(&[&e])
    );
    // date_start is inclusive, date_end exclusive.
    let at = |r: &Run| urlencode(&r.created_at.to_rfc3339());
    assert_eq!(
        q(&format!("date_start={}", at(&d))).await,
        set(&[&d, &e, &f])
    );
    assert_eq!(q(&format!("date_end={}", at(&d))).await, set(&[&a, &b, &c]));
    assert_eq!(
        q(&format!("date_start={}&date_end={}", at(&b), at(&e))).await,
        set(&[&b, &c, &d])
    );

    // Invalid filters are 400s.
    for bad in [
        "status=DONE",
        "status=failing",
        "completion_state=FINISHED",
        "completion_state=CANCELLED",
        "tag_operator=XOR",
        "date_start=yesterday",
    ] {
        let (st, body) = get(&s, &format!("/v1/projects/bAYZ4a/runs?{bad}")).await;
        assert_eq!(st, 400, "{bad}");
        assert_eq!(body["status"], "FAILED");
    }
    let long = "x".repeat(201);
    let (st, _) = get(&s, &format!("/v1/projects/bAYZ4a/runs?search={long}")).await;
    assert_eq!(st, 400);
    let (st, _) = get(
        &s,
        &format!("/v1/projects/bAYZ4a/runs?search={}", "x".repeat(200)),
    )
    .await;
    assert_eq!(st, 200);
    // Filters combine with pagination: has_more reflects the filtered feed.
    let (_, body) = get(&s, "/v1/projects/bAYZ4a/runs?limit=2&branches[]=main").await;
    assert_eq!(ids_of(&body), vec![f.run_id.clone(), d.run_id.clone()]);
    assert_eq!(body["has_more"], true);
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

// -------------------------------------------------------------------------------------
// Run states and their failures
// -------------------------------------------------------------------------------------

/// Spec files that have reported (completedAt set) and how many of them failed.
fn reported_and_failed(run: &Run) -> (usize, usize) {
    let done: Vec<_> = run
        .specs
        .iter()
        .filter(|s| s.completed_at.is_some())
        .collect();
    let failed = done
        .iter()
        .filter(|s| s.results.as_ref().is_some_and(|r| r.stats.failures > 0))
        .count();
    (done.len(), failed)
}

/// Spec files planned to fail that have not reported yet (read through the run's end).
fn failures_planned(s: &SimHandle, run: &Run) -> usize {
    let done = s
        .advance(
            &run.run_id,
            Advance {
                finish: None,
                complete: u32::MAX,
                ..Default::default()
            },
        )
        .unwrap();
    reported_and_failed(&done).1
}

/// A run of project `bAYZ4a` in `state`: 2 groups of 4 spec files.
fn run_in(state: &str, failed: Option<u32>, completed: Option<u32>) -> NewRun {
    NewRun {
        project: Some("bAYZ4a".into()),
        state: Some(state.into()),
        groups: Some(GroupsSpec::Count(2)),
        specs: Some(4),
        failed,
        completed,
        emit: Some(false),
        ..Default::default()
    }
}

#[tokio::test]
async fn failing_runs_are_in_progress_with_a_reported_failure() {
    let s = sim().await;
    s.add_project(project("bAYZ4a")).unwrap();
    // `failing` alone: in progress, FAILING, with a completed spec that failed. Many runs,
    // since which specs fail is random.
    for _ in 0..20 {
        let r = s.add_run(run_in("failing", None, None)).unwrap();
        assert_eq!(
            (&r.completion_state, &r.status),
            (&CompletionState::InProgress, &RunStatus::Failing),
            "{r:?}"
        );
        assert_eq!(reported_and_failed(&r), (1, 1));
        assert!(r.test_counts().failures >= 1);
        assert_eq!(r.instance_counts().failures, 1);
    }
    // With counts: the failures are among the completed specs.
    for _ in 0..20 {
        let r = s.add_run(run_in("failing", Some(2), Some(5))).unwrap();
        assert_eq!(r.status, RunStatus::Failing);
        assert_eq!(reported_and_failed(&r), (5, 2));
        let r = s.add_run(run_in("failing", Some(3), None)).unwrap();
        assert_eq!(r.status, RunStatus::Failing);
        assert_eq!(
            reported_and_failed(&r),
            (3, 3),
            "completed defaults to failed"
        );
    }
    // Through the control endpoint too.
    let r = http()
        .post(format!("{}/_sim/runs", s.base_url))
        .json(&json!({"project": "bAYZ4a", "state": "failing", "emit": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r: Run = r.json().await.unwrap();
    assert_eq!(
        (r.completion_state, r.status),
        (CompletionState::InProgress, RunStatus::Failing)
    );
    let (st, body) = get(&s, "/v1/projects/bAYZ4a/runs?status=FAILING&limit=1").await;
    assert_eq!(st, 200);
    assert_eq!(ids_of(&body), vec![r.run_id.clone()]);

    // Contradictions are refused.
    for (failed, completed) in [
        (Some(0), None),    // failing without a failure
        (Some(3), Some(2)), // failures not reported yet
        (None, Some(8)),    // every spec reported: the run would be complete
        (Some(8), None),
    ] {
        let e = s.add_run(run_in("failing", failed, completed)).unwrap_err();
        assert_eq!(e.status(), 400, "{failed:?} {completed:?}: {e}");
    }
    let e = s.add_run(run_in("failed", Some(0), None)).unwrap_err();
    assert_eq!(e.status(), 400, "{e}");

    // `running` with planned failures reads RUNNING: its failing specs have not reported.
    for _ in 0..10 {
        let r = s.add_run(run_in("running", Some(2), Some(4))).unwrap();
        assert_eq!(r.status, RunStatus::Running);
        assert_eq!(reported_and_failed(&r), (4, 0));
        assert_eq!(failures_planned(&s, &r), 2);
        assert_eq!(s.run(&r.run_id).unwrap().status, RunStatus::Failed);
    }
}

#[tokio::test]
async fn failed_canceled_and_timed_out_runs_keep_their_failures() {
    let s = sim().await;
    s.add_project(project("bAYZ4a")).unwrap();
    for _ in 0..20 {
        let r = s.add_run(run_in("failed", Some(3), None)).unwrap();
        assert_eq!(
            (&r.completion_state, &r.status),
            (&CompletionState::Complete, &RunStatus::Failed)
        );
        assert_eq!(reported_and_failed(&r), (8, 3));

        // Canceled: half the specs reported by default, the failures among them.
        let r = s.add_run(run_in("canceled", Some(2), None)).unwrap();
        assert_eq!(
            (&r.completion_state, &r.status),
            (&CompletionState::Canceled, &RunStatus::Failed),
            "{r:?}"
        );
        assert_eq!(reported_and_failed(&r), (4, 2));
        assert_eq!(r.instance_counts().failures, 2);
        // More failures than the default half: as many specs reported.
        let r = s.add_run(run_in("canceled", Some(6), None)).unwrap();
        assert_eq!(reported_and_failed(&r), (6, 6));
        let r = s.add_run(run_in("canceled", Some(1), Some(2))).unwrap();
        assert_eq!(r.status, RunStatus::Failed);
        assert_eq!(reported_and_failed(&r), (2, 1));
        // Without failures a canceled run passed.
        let r = s.add_run(run_in("canceled", None, None)).unwrap();
        assert_eq!(r.status, RunStatus::Passed);

        let r = s.add_run(run_in("timeout", Some(2), None)).unwrap();
        assert_eq!(
            (&r.completion_state, &r.status),
            (&CompletionState::Timeout, &RunStatus::Failed)
        );
        assert_eq!(reported_and_failed(&r), (4, 2));
        assert!(r.test_counts().failures >= 2);
    }
    // Failures that could never be reported are refused.
    for state in ["canceled", "timeout"] {
        let e = s.add_run(run_in(state, Some(3), Some(1))).unwrap_err();
        assert_eq!(e.status(), 400, "{state}: {e}");
    }
}

#[tokio::test]
async fn projects_time_out_after_30_minutes_by_default() {
    let s = sim().await;
    let p = s
        .add_project(NewProject {
            project_id: Some("bAYZ4a".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(p.inactivity_timeout_seconds, Some(1800));
    let (_, body) = get(&s, "/v1/projects/bAYZ4a").await;
    assert_eq!(body["data"]["inactivityTimeoutSeconds"], 1800);
    // A project created by its first run, and a timed-out run's timeout value.
    let r = s
        .add_run(NewRun {
            project: Some("emdaGd".into()),
            state: Some("timeout".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        s.project("emdaGd").unwrap().inactivity_timeout_seconds,
        Some(1800)
    );
    assert_eq!(r.timeout.unwrap().timeout_value_ms, Some(1_800_000));
    let r = s
        .add_run(NewRun {
            project: Some("bAYZ4a".into()),
            ..Default::default()
        })
        .unwrap();
    let t = s
        .advance(
            &r.run_id,
            Advance {
                timeout: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(t.timeout.unwrap().timeout_value_ms, Some(1_800_000));
    // An explicit value is kept; the sample world keeps its 2 h.
    let p = s
        .add_project(NewProject {
            project_id: Some("custom".into()),
            inactivity_timeout_seconds: Some(180),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(p.inactivity_timeout_seconds, Some(180));
    let fresh = sim().await;
    simulator::seed_sample(&fresh, Utc::now()).unwrap();
    for id in ["bAYZ4a", "emdaGd", "DgTfZV"] {
        assert_eq!(
            fresh.project(id).unwrap().inactivity_timeout_seconds,
            Some(7200),
            "{id}"
        );
    }
    assert_eq!(simulator::DEFAULT_INACTIVITY_TIMEOUT_SECS, 1800);
}

#[tokio::test]
async fn runs_carry_a_null_cancellation_unless_cancelled() {
    let s = sim().await;
    s.add_project(project("bAYZ4a")).unwrap();
    let passed = s
        .add_run(NewRun {
            project: Some("bAYZ4a".into()),
            ci_build_id: Some("web-1-1".into()),
            state: Some("passed".into()),
            emit: Some(false),
            ..Default::default()
        })
        .unwrap();
    let running = s
        .add_run(NewRun {
            project: Some("bAYZ4a".into()),
            emit: Some(false),
            ..Default::default()
        })
        .unwrap();
    let canceled = s
        .add_run(NewRun {
            project: Some("bAYZ4a".into()),
            state: Some("canceled".into()),
            actor: Some("api:ci".into()),
            emit: Some(false),
            ..Default::default()
        })
        .unwrap();
    for id in [&passed.run_id, &running.run_id] {
        let (st, body) = get(&s, &format!("/v1/runs/{id}")).await;
        assert_eq!(st, 200);
        assert_eq!(
            body["data"].get("cancellation"),
            Some(&Value::Null),
            "{body}"
        );
    }
    let (_, body) = get(&s, &format!("/v1/runs/{}", canceled.run_id)).await;
    assert_eq!(body["data"]["cancellation"]["actor"], "api:ci");
    assert_eq!(body["data"]["cancellation"]["reason"], "apiRequest");
    let (_, body) = get(&s, "/v1/runs/find?projectId=bAYZ4a&ciBuildId=web-1-1").await;
    assert_eq!(body["data"]["runId"], json!(passed.run_id));
    assert_eq!(body["data"].get("cancellation"), Some(&Value::Null));
    let (_, body) = get(&s, "/v1/projects/bAYZ4a/runs?limit=50").await;
    let items = body["data"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    for item in items {
        let c = item
            .get("cancellation")
            .expect("cancellation on every item");
        assert_eq!(
            c.is_null(),
            item["runId"] != json!(canceled.run_id),
            "{item}"
        );
    }
    // The client's model reads both forms.
    for item in items {
        let run: Run = serde_json::from_value(item.clone()).unwrap();
        assert_eq!(run.cancellation.is_some(), run.run_id == canceled.run_id);
    }
}

// -------------------------------------------------------------------------------------
// Get, find, cancel, delete, instances
// -------------------------------------------------------------------------------------

#[tokio::test]
async fn get_find_cancel_delete() {
    let s = sim().await;
    s.add_project(project("bAYZ4a")).unwrap();
    let now = Utc::now();
    let running = s
        .add_run(NewRun {
            project: Some("bAYZ4a".into()),
            branch: Some("main".into()),
            ci_build_id: Some("acme/web-1-1".into()),
            groups: Some(GroupsSpec::Names(vec!["chromium".into(), "firefox".into()])),
            specs: Some(3),
            completed: Some(2),
            claimed: Some(1),
            ..Default::default()
        })
        .unwrap();

    // Full run with specs, consistent counters.
    let (st, body) = get(&s, &format!("/v1/runs/{}", running.run_id)).await;
    assert_eq!(st, 200);
    let run: Run = serde_json::from_value(body["data"].clone()).unwrap();
    assert_eq!(run.run_id.len(), 16);
    assert!(run.run_id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(run.completion_state, CompletionState::InProgress);
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.specs.len(), 6);
    assert_eq!(run.groups.len(), 2);
    let counts = run.instance_counts();
    assert_eq!((counts.overall, counts.complete, counts.claimed), (6, 2, 3));
    assert_eq!(
        run.specs
            .iter()
            .filter(|sp| sp.completed_at.is_none())
            .count(),
        4
    );
    assert!(
        run.specs
            .iter()
            .filter(|sp| sp.completed_at.is_none())
            .all(|sp| sp.results.is_none())
    );
    assert_eq!(run.framework(), Some("pw"));
    assert_eq!(
        run.meta.commit.remote_origin.as_deref(),
        Some("https://github.com/acme/web")
    );
    assert!(body["data"].get("cursor").is_none());
    assert_eq!(body["data"]["durationMs"], Value::Null);

    // Instance of a completed spec.
    let done = run
        .specs
        .iter()
        .find(|sp| sp.completed_at.is_some())
        .unwrap();
    let iid = done.instance_id.clone().unwrap();
    let (st, inst) = get(&s, &format!("/v1/instances/{iid}")).await;
    assert_eq!(st, 200);
    assert_eq!(inst["data"]["runId"], json!(run.run_id));
    assert_eq!(inst["data"]["spec"], json!(done.spec));
    assert!(
        !inst["data"]["results"]["tests"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let (st, _) = get(&s, "/v1/instances/0123456789abcdef").await;
    assert_eq!(st, 404);

    // find: most recent COMPLETE run.
    let old = s
        .add_run(NewRun {
            ci_build_id: Some("acme/web-9-1".into()),
            tags: vec!["nightly".into()],
            ..run_at("bAYZ4a", 60, now)
        })
        .unwrap();
    let newer = s
        .add_run(NewRun {
            ci_build_id: Some("acme/web-9-1".into()),
            ..run_at("bAYZ4a", 30, now)
        })
        .unwrap();
    let (st, body) = get(&s, "/v1/runs/find?projectId=bAYZ4a&ciBuildId=acme/web-9-1").await;
    assert_eq!(st, 200);
    assert_eq!(body["data"]["runId"], json!(newer.run_id));
    assert!(
        body["data"]["specs"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    );
    let (_, body) = get(
        &s,
        "/v1/runs/find?projectId=bAYZ4a&branch=main&tags[]=nightly",
    )
    .await;
    assert_eq!(body["data"]["runId"], json!(old.run_id));
    let (st, body) = get(&s, "/v1/runs/find?projectId=bAYZ4a&ciBuildId=acme/web-1-1").await;
    assert_eq!(
        (st, body["error"].clone()),
        (404, json!("Run not found")),
        "in progress is not completed"
    );
    let (st, _) = get(&s, "/v1/runs/find?ciBuildId=x").await;
    assert_eq!(st, 400);

    // Cancel, then 422 on repeat and on a finished run.
    let (st, body) = send(
        &s,
        reqwest::Method::PUT,
        &format!("/v1/runs/{}/cancel", running.run_id),
        None,
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["data"]["actor"], "api:sim");
    assert_eq!(body["data"]["reason"], "apiRequest");
    assert_eq!(body["data"]["runId"], json!(running.run_id));
    assert!(
        body["data"]["canceledAt"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .is_ok()
    );
    let after = s.run(&running.run_id).unwrap();
    assert_eq!(after.completion_state, CompletionState::Canceled);
    assert_eq!(
        after.cancellation.as_ref().unwrap().actor.as_deref(),
        Some("api:sim")
    );
    assert_eq!(
        after.status,
        RunStatus::Passed,
        "no failures recorded before the cancel"
    );
    let (st, body) = send(
        &s,
        reqwest::Method::PUT,
        &format!("/v1/runs/{}/cancel", running.run_id),
        None,
    )
    .await;
    assert_eq!(
        (st, body),
        (
            422,
            json!({"status": "FAILED", "error": "Run already cancelled"})
        )
    );
    let (st, _) = send(
        &s,
        reqwest::Method::PUT,
        &format!("/v1/runs/{}/cancel", old.run_id),
        None,
    )
    .await;
    assert_eq!(st, 422);
    let (st, _) = send(
        &s,
        reqwest::Method::PUT,
        "/v1/runs/ffffffff00000000/cancel",
        None,
    )
    .await;
    assert_eq!(st, 404);

    // Delete, then 404.
    let (st, body) = send(
        &s,
        reqwest::Method::DELETE,
        &format!("/v1/runs/{}", old.run_id),
        None,
    )
    .await;
    assert_eq!(
        (st, body),
        (
            200,
            json!({"status": "OK", "data": {"runId": old.run_id, "actor": "API Request"}})
        )
    );
    let (st, _) = send(
        &s,
        reqwest::Method::DELETE,
        &format!("/v1/runs/{}", old.run_id),
        None,
    )
    .await;
    assert_eq!(st, 404);
    let (st, _) = get(&s, &format!("/v1/runs/{}", old.run_id)).await;
    assert_eq!(st, 404);
    let (_, feed) = get(&s, "/v1/projects/bAYZ4a/runs?limit=50").await;
    assert!(!ids_of(&feed).contains(&old.run_id));

    // The mutation log saw the writes, with their statuses.
    let log = s.mutation_log();
    let summary: Vec<(String, u16)> = log.iter().map(|e| (e.method.clone(), e.status)).collect();
    assert_eq!(
        summary,
        vec![
            ("PUT".into(), 200),
            ("PUT".into(), 422),
            ("PUT".into(), 422),
            ("PUT".into(), 404),
            ("DELETE".into(), 200),
            ("DELETE".into(), 404)
        ]
    );
    assert_eq!(log[0].path, format!("/v1/runs/{}/cancel", running.run_id));
    assert!(log.iter().all(|e| e.api == "currents"));
}

#[tokio::test]
async fn cypress_runs_have_long_ids_and_uuid_instances() {
    let s = sim().await;
    let run = s
        .add_run(NewRun {
            project: Some("emdaGd".into()),
            framework: Some("cypress".into()),
            state: Some("failed".into()),
            specs: Some(5),
            failed: Some(2),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(run.run_id.len(), 32);
    assert_eq!(run.project_id.len(), 6);
    assert_eq!(run.completion_state, CompletionState::Complete);
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.cypress_version.as_deref(), Some("14.3.2"));
    assert_eq!(run.instance_counts().failures, 2);
    assert!(run.test_counts().failures >= 2);
    let iid = run.specs[0].instance_id.clone().unwrap();
    assert!(uuid::Uuid::parse_str(&iid).is_ok(), "{iid}");
    assert!(s.instance(&iid).is_some());
    assert!(
        run.specs
            .iter()
            .all(|sp| sp.completed_at.is_some() && sp.claimed_at.is_some())
    );
    assert!(run.duration_ms.unwrap() > 0);
}

// -------------------------------------------------------------------------------------
// Webhooks API and emission
// -------------------------------------------------------------------------------------

#[tokio::test]
async fn webhooks_crud() {
    let s = sim().await;
    s.add_project(project("bAYZ4a")).unwrap();
    let body = json!({
        "url": "https://bot.example/webhooks/currents",
        "hookEvents": ["RUN_FINISH", "RUN_CANCELED"],
        "headers": "{\"x-webhook-secret\":\"abc\"}",
        "label": "runwarden",
    });
    let (st, created) = send(
        &s,
        reqwest::Method::POST,
        "/v1/webhooks?projectId=bAYZ4a",
        Some(body),
    )
    .await;
    assert_eq!(st, 201, "{created}");
    let hook: Webhook = serde_json::from_value(created["data"].clone()).unwrap();
    assert!(uuid::Uuid::parse_str(&hook.hook_id).is_ok());
    assert_eq!(hook.project_id, "bAYZ4a");
    assert_eq!(hook.hook_events, vec!["RUN_FINISH", "RUN_CANCELED"]);
    assert_eq!(
        hook.headers.as_deref(),
        Some("{\"x-webhook-secret\":\"abc\"}")
    );

    let (_, list) = get(&s, "/v1/webhooks?projectId=bAYZ4a").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let (st, one) = get(&s, &format!("/v1/webhooks/{}", hook.hook_id)).await;
    assert_eq!(
        (st, one["data"]["label"].clone()),
        (200, json!("runwarden"))
    );

    let (st, upd) = send(
        &s,
        reqwest::Method::PUT,
        &format!("/v1/webhooks/{}", hook.hook_id),
        Some(json!({"label": "renamed", "hookEvents": ["RUN_START"]})),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(upd["data"]["label"], "renamed");
    assert_eq!(upd["data"]["hookEvents"], json!(["RUN_START"]));
    assert_eq!(upd["data"]["url"], "https://bot.example/webhooks/currents");

    let (st, _) = send(
        &s,
        reqwest::Method::DELETE,
        &format!("/v1/webhooks/{}", hook.hook_id),
        None,
    )
    .await;
    assert_eq!(st, 200);
    let (st, _) = get(&s, &format!("/v1/webhooks/{}", hook.hook_id)).await;
    assert_eq!(st, 404);
    let (_, list) = get(&s, "/v1/webhooks?projectId=bAYZ4a").await;
    assert_eq!(list["data"], json!([]));

    // Validation.
    let cases = [
        ("/v1/webhooks?projectId=bAYZ4a", json!({"label": "x"}), 400),
        (
            "/v1/webhooks?projectId=bAYZ4a",
            json!({"url": "https://x.example", "headers": "not json"}),
            400,
        ),
        (
            "/v1/webhooks?projectId=bAYZ4a",
            json!({"url": "https://x.example", "hookEvents": ["RUN_EXPLODED"]}),
            400,
        ),
        (
            "/v1/webhooks?projectId=bAYZ4a",
            json!({"url": "ftp://x.example"}),
            400,
        ),
        ("/v1/webhooks", json!({"url": "https://x.example"}), 400),
        (
            "/v1/webhooks?projectId=nope42",
            json!({"url": "https://x.example"}),
            404,
        ),
    ];
    for (path, body, want) in cases {
        let (st, resp) = send(&s, reqwest::Method::POST, path, Some(body.clone())).await;
        assert_eq!(st, want, "{path} {body}");
        assert_eq!(resp["status"], "FAILED");
    }
    let r = http()
        .post(format!("{}/v1/webhooks?projectId=bAYZ4a", s.base_url))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "FAILED");
}

type Received = (HeaderMap, Value);

/// A tiny webhook receiver: every POST is forwarded to the channel and answered 202.
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

async fn next_event(rx: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a webhook in time")
        .expect("receiver alive")
}

#[tokio::test]
async fn emits_webhooks_as_runs_change() {
    let (url, mut rx) = receiver().await;
    let s = sim_with(SimConfig {
        webhook_url: Some(url.clone()),
        webhook_headers: vec![("x-webhook-secret".into(), "s3cret".into())],
        dashboard_url: "https://dash.example".into(),
        ..SimConfig::default()
    })
    .await;
    s.add_project(project("bAYZ4a")).unwrap();

    let run = s
        .add_run(NewRun {
            project: Some("bAYZ4a".into()),
            branch: Some("feat/x".into()),
            ci_build_id: Some("acme/web-77-1".into()),
            tags: vec!["smoke".into()],
            specs: Some(2),
            ..Default::default()
        })
        .unwrap();
    let (headers, body) = next_event(&mut rx).await;
    assert_eq!(headers["x-webhook-secret"], "s3cret");
    assert_eq!(headers["content-type"], "application/json");
    let ts: i64 = headers["x-timestamp"].to_str().unwrap().parse().unwrap();
    assert!(
        (Utc::now().timestamp_millis() - ts).abs() < 10_000,
        "x-timestamp is epoch ms"
    );
    let payload: CurrentsWebhookPayload = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(payload.event, "RUN_START");
    assert_eq!(
        payload.run_url,
        format!("https://dash.example/run/{}", run.run_id)
    );
    assert_eq!(payload.run_id().as_deref(), Some(run.run_id.as_str()));
    assert_eq!(payload.build_id.as_deref(), Some("acme/web-77-1"));
    assert_eq!(payload.tags, vec!["smoke"]);
    assert_eq!(
        payload.commit.as_ref().unwrap().branch.as_deref(),
        Some("feat/x")
    );
    assert!(body.get("runId").is_none(), "no separate runId field");
    assert!(
        body.get("groupId").is_none(),
        "groupId only for multigroup runs, not null: {body}"
    );

    // Progress without finishing emits nothing; finishing emits RUN_FINISH.
    s.advance(
        &run.run_id,
        Advance {
            complete: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let finished = s
        .advance(
            &run.run_id,
            Advance {
                finish: Some(Outcome::Failed),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(finished.status, RunStatus::Failed);
    let (_, body) = next_event(&mut rx).await;
    assert_eq!(body["event"], "RUN_FINISH");
    assert!(body["failures"].as_u64().unwrap() >= 1);
    assert_eq!(
        body["overall"].as_u64(),
        Some(finished.test_counts().overall)
    );

    // A webhook registered through the API, for RUN_CANCELED only, with its headers.
    let (hook_url, mut hook_rx) = receiver().await;
    s.create_webhook(
        "bAYZ4a",
        runwarden::currents::models::WebhookSpec {
            url: Some(hook_url),
            headers: Some("{\"x-api-hook\":\"yes\"}".into()),
            hook_events: Some(vec!["RUN_CANCELED".into()]),
            label: Some("t".into()),
        },
    )
    .unwrap();
    let r2 = s
        .add_run(NewRun {
            project: Some("bAYZ4a".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(next_event(&mut rx).await.1["event"], "RUN_START");
    let (st, _) = send(
        &s,
        reqwest::Method::PUT,
        &format!("/v1/runs/{}/cancel", r2.run_id),
        None,
    )
    .await;
    assert_eq!(st, 200);
    let (_, body) = next_event(&mut rx).await;
    assert_eq!(body["event"], "RUN_CANCELED");
    let (h, body) = next_event(&mut hook_rx).await;
    assert_eq!(
        body["event"], "RUN_CANCELED",
        "RUN_START was filtered out by hookEvents"
    );
    assert_eq!(h["x-api-hook"], "yes");
    assert!(h.get("x-webhook-secret").is_none());

    // Timeout.
    let r3 = s
        .add_run(NewRun {
            project: Some("bAYZ4a".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(next_event(&mut rx).await.1["event"], "RUN_START");
    let t = s
        .advance(
            &r3.run_id,
            Advance {
                timeout: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(t.completion_state, CompletionState::Timeout);
    assert!(t.timeout.as_ref().unwrap().is_timeout);
    assert_eq!(next_event(&mut rx).await.1["event"], "RUN_TIMEOUT");
    assert!(
        s.advance(
            &r3.run_id,
            Advance {
                complete: 1,
                ..Default::default()
            }
        )
        .is_err()
    );

    // Deliveries are recorded (events are delivered in order, so the RUN_CANCELED ones
    // are on record once RUN_TIMEOUT has arrived).
    let d = s.deliveries();
    let canceled: Vec<_> = d.iter().filter(|d| d.event == "RUN_CANCELED").collect();
    assert_eq!(canceled.len(), 2, "{d:?}");
    assert!(
        canceled
            .iter()
            .all(|d| d.status == Some(202) && d.run_id == r2.run_id)
    );
    assert!(
        canceled
            .iter()
            .any(|d| d.url == url && d.source == "config")
    );
    assert!(canceled.iter().any(|d| d.source.starts_with("webhook:")));
    // History added without emit sends nothing.
    s.add_run(run_at("bAYZ4a", 90, Utc::now())).unwrap();
    s.add_run(NewRun {
        project: Some("bAYZ4a".into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(next_event(&mut rx).await.1["event"], "RUN_START");
}

#[tokio::test]
async fn per_group_webhooks_and_ticks() {
    let (url, mut rx) = receiver().await;
    let s = sim_with(SimConfig {
        webhook_url: Some(url),
        webhook_per_group: true,
        enforce_inactivity_timeout: true,
        ..SimConfig::default()
    })
    .await;
    s.add_project(NewProject {
        project_id: Some("bAYZ4a".into()),
        inactivity_timeout_seconds: Some(600),
        ..Default::default()
    })
    .unwrap();
    let run = s
        .add_run(NewRun {
            project: Some("bAYZ4a".into()),
            groups: Some(GroupsSpec::Count(2)),
            specs: Some(1),
            auto: true,
            ..Default::default()
        })
        .unwrap();
    let mut groups = HashSet::new();
    for _ in 0..2 {
        let (_, b) = next_event(&mut rx).await;
        assert_eq!(b["event"], "RUN_START");
        groups.insert(b["groupId"].as_str().unwrap().to_string());
    }
    assert_eq!(
        groups,
        HashSet::from(["chromium".to_string(), "firefox".to_string()])
    );
    // Two ticks complete the two specs of the auto run.
    s.tick(Utc::now());
    assert!(s.run(&run.run_id).unwrap().is_in_progress());
    s.tick(Utc::now());
    assert_eq!(
        s.run(&run.run_id).unwrap().completion_state,
        CompletionState::Complete
    );
    assert_eq!(next_event(&mut rx).await.1["event"], "RUN_FINISH");
    assert_eq!(next_event(&mut rx).await.1["event"], "RUN_FINISH");

    // An idle run times out on tick.
    let idle = s
        .add_run(NewRun {
            project: Some("bAYZ4a".into()),
            created_at: Some(Utc::now() - ChronoDuration::minutes(30)),
            completed: Some(1),
            last_progress_at: Some(Utc::now() - ChronoDuration::minutes(11)),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(next_event(&mut rx).await.1["event"], "RUN_START");
    s.tick(Utc::now());
    let after = s.run(&idle.run_id).unwrap();
    assert_eq!(after.completion_state, CompletionState::Timeout);
    assert_eq!(after.timeout.unwrap().timeout_value_ms, Some(600_000));
    assert_eq!(next_event(&mut rx).await.1["event"], "RUN_TIMEOUT");
}

// -------------------------------------------------------------------------------------
// Faults
// -------------------------------------------------------------------------------------

#[tokio::test]
async fn faults_5xx_then_ok_and_rate_limits() {
    let s = sim().await;
    s.add_project(project("bAYZ4a")).unwrap();
    // Through the control endpoint.
    let r = http()
        .post(format!("{}/_sim/faults", s.base_url))
        .json(&json!({"method": "GET", "path": "/v1/projects", "kind": "status", "status": 503, "times": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for _ in 0..2 {
        let (st, body) = get(&s, "/v1/projects").await;
        assert_eq!((st, body["status"].clone()), (503, json!("FAILED")));
    }
    let (st, _) = get(&s, "/v1/projects").await;
    assert_eq!(st, 200, "the fault fired exactly twice");

    // 429 with and without Retry-After.
    s.inject_fault(
        Fault::new(FaultKind::RateLimit {
            status: 429,
            retry_after: Some(3),
            reset_after: None,
        })
        .path("/v1/runs"),
    );
    let r = http()
        .get(format!("{}/v1/runs/abc", s.base_url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "3");
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "FAILED");
    s.inject_fault(
        serde_json::from_value(json!({"path": "/v1/runs", "kind": "rate_limit"})).unwrap(),
    );
    let r = http()
        .get(format!("{}/v1/runs/abc", s.base_url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_none());
    let r = http()
        .get(format!("{}/v1/runs/abc", s.base_url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // GitHub secondary rate limit: 403 with x-ratelimit-* headers.
    s.inject_fault(
        serde_json::from_value(
            json!({"path": "/github", "kind": "rate_limit", "status": 403, "reset_after": 60}),
        )
        .unwrap(),
    );
    let r = gh(&s, reqwest::Method::GET, "/repos/acme/web/pulls")
        .send()
        .await
        .unwrap();
    let reset = rate_limited_until(&r);
    assert!(reset > Utc::now().timestamp());
    assert!(
        r.json::<Value>().await.unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("secondary rate limit")
    );
    // Currents documents no rate-limit headers: the same fault there sends none.
    s.inject_fault(
        serde_json::from_value(
            json!({"path": "/v1", "kind": "rate_limit", "retry_after": 2, "reset_after": 60}),
        )
        .unwrap(),
    );
    let r = http()
        .get(format!("{}/v1/runs/abc", s.base_url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "2");
    let ratelimit: Vec<_> = r
        .headers()
        .keys()
        .filter(|k| k.as_str().starts_with("x-ratelimit"))
        .collect();
    assert!(ratelimit.is_empty(), "{ratelimit:?}");
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "FAILED");

    // `after` lets requests through first; faults are listed until exhausted.
    s.inject_fault(
        serde_json::from_value(
            json!({"path": "/v1/projects", "kind": "status", "status": 500, "after": 1}),
        )
        .unwrap(),
    );
    assert_eq!(s.faults().len(), 1);
    assert_eq!(get(&s, "/v1/projects").await.0, 200);
    assert_eq!(get(&s, "/v1/projects").await.0, 500);
    assert_eq!(get(&s, "/v1/projects").await.0, 200);
    assert!(s.faults().is_empty());

    // Unlimited until cleared.
    s.inject_fault(
        serde_json::from_value(
            json!({"path": "/v1", "kind": "status", "status": 502, "times": null}),
        )
        .unwrap(),
    );
    for _ in 0..3 {
        assert_eq!(get(&s, "/v1/projects").await.0, 502);
    }
    let r = http()
        .delete(format!("{}/_sim/faults", s.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(&s, "/v1/projects").await.0, 200);
}

#[tokio::test]
async fn faults_drop_malformed_html_latency_and_ambiguous_writes() {
    let s = sim().await;
    s.add_project(project("bAYZ4a")).unwrap();
    let client = http();

    // Dropped connection: a transport error, then the next request works.
    s.inject_fault(
        serde_json::from_value(json!({"method": "GET", "path": "/v1/projects", "kind": "drop"}))
            .unwrap(),
    );
    let err = client
        .get(format!("{}/v1/projects", s.base_url))
        .bearer_auth(KEY)
        .send()
        .await
        .expect_err("connection dropped");
    assert!(err.status().is_none());
    let ok = client
        .get(format!("{}/v1/projects", s.base_url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    // Malformed JSON with 200.
    s.inject_fault(
        serde_json::from_value(json!({"path": "/v1/projects", "kind": "malformed_json"})).unwrap(),
    );
    let r = client
        .get(format!("{}/v1/projects", s.base_url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.is_err());

    // HTML error page.
    s.inject_fault(
        serde_json::from_value(json!({"path": "/v1", "kind": "html", "status": 504})).unwrap(),
    );
    let r = client
        .get(format!("{}/v1/projects", s.base_url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(r.text().await.unwrap().contains("<html>"));

    // Latency.
    s.inject_fault(
        serde_json::from_value(json!({"path": "/v1/projects", "kind": "latency", "ms": 300}))
            .unwrap(),
    );
    let t = Instant::now();
    let r = client
        .get(format!("{}/v1/projects", s.base_url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(300));

    // Ambiguous write: the cancel happens, the answer is lost.
    let run = s
        .add_run(NewRun {
            project: Some("bAYZ4a".into()),
            ..Default::default()
        })
        .unwrap();
    s.inject_fault(
        serde_json::from_value(
            json!({"method": "PUT", "path": "/v1/runs/", "kind": "drop", "apply": true}),
        )
        .unwrap(),
    );
    let res = client
        .put(format!("{}/v1/runs/{}/cancel", s.base_url, run.run_id))
        .bearer_auth(KEY)
        .send()
        .await;
    assert!(res.is_err(), "the client saw no answer");
    assert_eq!(
        s.run(&run.run_id).unwrap().completion_state,
        CompletionState::Canceled
    );
    let r = client
        .put(format!("{}/v1/runs/{}/cancel", s.base_url, run.run_id))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "a retry finds it already cancelled");

    // The same on GitHub: the comment is created but the client gets a 502.
    s.add_pr(NewPr {
        repo: "acme/web".into(),
        number: Some(1),
        head_ref: Some("feat/x".into()),
        ..Default::default()
    })
    .unwrap();
    s.inject_fault(
        serde_json::from_value(json!({"method": "POST", "path": "/github/repos/acme/web/issues", "kind": "status", "status": 502, "apply": true}))
            .unwrap(),
    );
    let r = client
        .post(format!(
            "{}/github/repos/acme/web/issues/1/comments",
            s.base_url
        ))
        .header("authorization", "token t")
        .json(&json!({"body": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(s.comments(Some("acme/web"), Some(1)).len(), 1);

    // The log records faulted writes; drops as status 0.
    let log = s.mutation_log();
    let cancel = log.iter().find(|e| e.method == "PUT").unwrap();
    assert_eq!((cancel.status, cancel.fault.as_deref()), (0, Some("drop")));
    let gh = log.iter().find(|e| e.api == "github").unwrap();
    assert_eq!((gh.status, gh.fault.as_deref()), (502, Some("status 502")));
    // Control endpoints are never faulted.
    s.inject_fault(
        serde_json::from_value(json!({"kind": "status", "status": 500, "times": null})).unwrap(),
    );
    let r = client
        .get(format!("{}/_sim/stats", s.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

// -------------------------------------------------------------------------------------
// GitHub
// -------------------------------------------------------------------------------------

/// `GET {path}` of the GitHub API as JSON.
async fn gh_get(s: &SimHandle, path: &str) -> Value {
    gh(s, reqwest::Method::GET, path)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Checks that `r` is GitHub's rate-limit refusal (403, nothing remaining) and gives its
/// `x-ratelimit-reset` (Unix seconds).
fn rate_limited_until(r: &reqwest::Response) -> i64 {
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    r.headers()["x-ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn gh(s: &SimHandle, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    http()
        .request(method, format!("{}/github{}", s.base_url, path))
        .header("authorization", "token ghp_test")
}

#[tokio::test]
async fn github_endpoints_over_http() {
    let s = sim().await;
    let sha1 = "a".repeat(40);
    let sha2 = "b".repeat(40);
    s.add_pr(NewPr {
        repo: "acme/web".into(),
        number: Some(12),
        head_ref: Some("feat/x".into()),
        head_sha: Some(sha1.clone()),
        ..Default::default()
    })
    .unwrap();
    s.add_pr(NewPr {
        repo: "acme/web".into(),
        number: Some(12),
        head_sha: Some(sha2.clone()),
        ..Default::default()
    })
    .unwrap();
    s.add_pr(NewPr {
        repo: "acme/web".into(),
        number: Some(13),
        head_ref: Some("feat/old".into()),
        state: Some("closed".into()),
        ..Default::default()
    })
    .unwrap();

    // Auth is required.
    let r = http()
        .get(format!("{}/github/repos/acme/web/pulls", s.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["message"],
        "Requires authentication"
    );

    // PRs of a commit: the open PR that had it as head (a closed one only when merged
    // into the default branch with a merge commit: `simulator_faithful`).
    let prs: Value = gh_get(&s, &format!("/repos/acme/web/commits/{sha1}/pulls")).await;
    assert_eq!(prs.as_array().unwrap().len(), 1);
    assert_eq!(prs[0]["number"], 12);
    assert_eq!(
        prs[0]["head"]["sha"],
        json!(sha2),
        "head is the latest push"
    );
    assert_eq!(prs[0]["head"]["ref"], "feat/x");
    assert_eq!(prs[0]["head"]["label"], "acme:feat/x");
    // An abbreviated sha names the same commit.
    let short: Value = gh_get(&s, &format!("/repos/acme/web/commits/{}/pulls", &sha1[..7])).await;
    assert_eq!(short[0]["number"], 12);
    // (A commit GitHub never saw: `commit_pulls_of_an_unknown_commit_are_422`.)

    // PR list with state and head filters.
    let list: Value = gh_get(&s, "/repos/acme/web/pulls?state=open&head=acme:feat/x").await;
    assert_eq!(
        list.as_array()
            .unwrap()
            .iter()
            .map(|p| p["number"].clone())
            .collect::<Vec<_>>(),
        vec![json!(12)]
    );
    let all: Value = gh(&s, reqwest::Method::GET, "/repos/acme/web/pulls?state=all")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all.as_array().unwrap().len(), 2);
    let closed: Value = gh_get(&s, "/repos/acme/web/pulls?state=closed").await;
    assert_eq!(closed[0]["number"], 13);
    assert_eq!(closed[0]["state"], "closed");
    let r = gh(&s, reqwest::Method::GET, "/repos/acme/web/pulls/99")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Comments: create, list (paged, with Link), get, patch, delete.
    for i in 0..3 {
        let r = gh(
            &s,
            reqwest::Method::POST,
            "/repos/acme/web/issues/12/comments",
        )
        .json(&json!({"body": format!("c{i}")}))
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), 201);
        assert!(r.headers().contains_key("location"));
    }
    let r = gh(
        &s,
        reqwest::Method::GET,
        "/repos/acme/web/issues/12/comments?per_page=2&page=1",
    )
    .send()
    .await
    .unwrap();
    let link = r.headers()["link"].to_str().unwrap().to_string();
    assert!(
        link.contains("rel=\"next\"") && link.contains("page=2"),
        "{link}"
    );
    let page1: Value = r.json().await.unwrap();
    assert_eq!(
        page1
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["body"].clone())
            .collect::<Vec<_>>(),
        vec![json!("c0"), json!("c1")]
    );
    let page2: Value = gh_get(&s, "/repos/acme/web/issues/12/comments?per_page=2&page=2").await;
    assert_eq!(page2[0]["body"], "c2");
    let id = page2[0]["id"].as_u64().unwrap();
    let r = gh(
        &s,
        reqwest::Method::PATCH,
        &format!("/repos/acme/web/issues/comments/{id}"),
    )
    .json(&json!({"body": "edited"}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let got: Value = gh_get(&s, &format!("/repos/acme/web/issues/comments/{id}")).await;
    assert_eq!(got["body"], "edited");
    assert_eq!(got["user"]["login"], "runwarden[bot]");
    assert_eq!(
        s.comments(Some("acme/web"), Some(12))
            .iter()
            .find(|c| c.id == id)
            .unwrap()
            .edits,
        1
    );
    let r = gh(
        &s,
        reqwest::Method::DELETE,
        &format!("/repos/acme/web/issues/comments/{id}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(s.comments(None, None).len(), 2);
    // Errors: unknown PR, empty or oversized body, bad JSON.
    let r = gh(
        &s,
        reqwest::Method::POST,
        "/repos/acme/web/issues/77/comments",
    )
    .json(&json!({"body": "x"}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    let r = gh(
        &s,
        reqwest::Method::POST,
        "/repos/acme/web/issues/12/comments",
    )
    .json(&json!({"body": ""}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 422);
    let r = gh(
        &s,
        reqwest::Method::POST,
        "/repos/acme/web/issues/12/comments",
    )
    .json(&json!({"body": "x".repeat(65_537)}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 422);
    let r = gh(
        &s,
        reqwest::Method::POST,
        "/repos/acme/web/issues/12/comments",
    )
    .body("{oops")
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["message"],
        "Problems parsing JSON"
    );

    // Statuses: create, list newest first, combined; description limit.
    for (state, ctx) in [
        ("pending", "runwarden/bAYZ4a"),
        ("failure", "runwarden/bAYZ4a"),
        ("success", "other"),
    ] {
        let r = gh(&s, reqwest::Method::POST, &format!("/repos/acme/web/statuses/{sha2}"))
            .json(&json!({"state": state, "context": ctx, "description": "3 failed", "target_url": "https://dash.example/run/1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let list: Value = gh_get(&s, &format!("/repos/acme/web/commits/{sha2}/statuses")).await;
    assert_eq!(
        list.as_array()
            .unwrap()
            .iter()
            .map(|s| s["state"].clone())
            .collect::<Vec<_>>(),
        vec![json!("success"), json!("failure"), json!("pending")]
    );
    let combined: Value = gh_get(&s, "/repos/acme/web/commits/feat%2Fx/status").await;
    assert_eq!(combined["state"], "failure");
    assert_eq!(combined["total_count"], 2);
    assert_eq!(
        combined["sha"],
        json!(sha2),
        "a branch resolves to its PR head"
    );
    let r = gh(
        &s,
        reqwest::Method::POST,
        &format!("/repos/acme/web/statuses/{sha2}"),
    )
    .json(&json!({"state": "success", "description": "x".repeat(141)}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 422);
    let r = gh(
        &s,
        reqwest::Method::POST,
        &format!("/repos/acme/web/statuses/{sha2}"),
    )
    .json(&json!({"state": "great"}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(s.statuses(Some("acme/web"), Some(&sha2)).len(), 3);

    // The log has the GitHub writes.
    let writes: Vec<(String, String)> = s
        .mutation_log()
        .into_iter()
        .filter(|e| e.api == "github" && e.status < 300)
        .map(|e| (e.method, e.path))
        .collect();
    assert_eq!(writes.len(), 3 + 1 + 1 + 3);
    assert!(writes.contains(&(
        "PATCH".into(),
        format!("/github/repos/acme/web/issues/comments/{id}")
    )));
}

/// GitHub's primary rate limit: once a window's requests are used up, requests are
/// answered 403 "API rate limit exceeded" with `x-ratelimit-remaining: 0`, until the
/// window resets.
#[tokio::test]
async fn the_github_quota_runs_out_and_resets() {
    let s = sim().await;
    // Set through the control API, as a `simulate` user would.
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/github/quota", s.base_url))
        .json(&json!({"limit": 2, "windowSeconds": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for bad in [
        json!({"limit": 2, "windowSeconds": 0}),
        json!({"limit": 2, "windowSeconds": 1_000_000_000_000_000u64}),
        json!({"limit": -1}),
    ] {
        let r = reqwest::Client::new()
            .post(format!("{}/_sim/github/quota", s.base_url))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    let get = || async {
        let r = gh(&s, reqwest::Method::GET, "/repos/acme/web/pulls")
            .send()
            .await
            .unwrap();
        let h = |n: &str| r.headers()[n].to_str().unwrap().to_string();
        (
            r.status().as_u16(),
            h("x-ratelimit-remaining"),
            h("x-ratelimit-used"),
        )
    };
    assert_eq!(get().await, (200, "1".into(), "1".into()));
    assert_eq!(get().await, (200, "0".into(), "2".into()));
    let r = gh(&s, reqwest::Method::GET, "/repos/acme/web/pulls")
        .send()
        .await
        .unwrap();
    let reset = rate_limited_until(&r);
    assert!(reset >= chrono::Utc::now().timestamp(), "{reset}");
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("API rate limit exceeded"),
        "{body}"
    );
    // After the window, a new one starts.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, remaining, _) = get().await;
        if status == 200 {
            assert_eq!(remaining, "1");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the quota never reset"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn commit_pulls_of_an_unknown_commit_are_422() {
    let s = sim().await;
    let pr_sha = "a".repeat(40);
    let pushed_sha = "b".repeat(40);
    for sha in [&pr_sha, &pushed_sha] {
        s.add_pr(NewPr {
            repo: "acme/web".into(),
            number: Some(12),
            head_ref: Some("feat/x".into()),
            head_sha: Some(sha.clone()),
            ..Default::default()
        })
        .unwrap();
    }
    // A commit GitHub never saw: 422, as GitHub answers.
    let unknown = "c".repeat(40);
    let r = gh(
        &s,
        reqwest::Method::GET,
        &format!("/repos/acme/web/commits/{unknown}/pulls"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["message"],
        json!(format!("No commit found for SHA: {unknown}"))
    );
    assert!(
        body["documentation_url"]
            .as_str()
            .unwrap()
            .starts_with("https://docs.github.com/rest/commits/")
    );
    // Known commits without a PR: a run's, a status's.
    let run_sha = "d".repeat(40);
    s.add_run(NewRun {
        project: Some("bAYZ4a".into()),
        sha: Some(run_sha.clone()),
        emit: Some(false),
        ..Default::default()
    })
    .unwrap();
    let status_sha = "e".repeat(40);
    let r = gh(
        &s,
        reqwest::Method::POST,
        &format!("/repos/acme/web/statuses/{status_sha}"),
    )
    .json(&json!({"state": "pending", "context": "ci"}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    for sha in [&run_sha, &status_sha] {
        let r = gh(
            &s,
            reqwest::Method::GET,
            &format!("/repos/acme/web/commits/{sha}/pulls"),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), 200, "{sha}");
        assert_eq!(r.json::<Value>().await.unwrap(), json!([]), "{sha}");
    }
    // PR heads, current and former, list their PR.
    for sha in [&pr_sha, &pushed_sha] {
        let prs: Value = gh_get(&s, &format!("/repos/acme/web/commits/{sha}/pulls")).await;
        assert_eq!(prs[0]["number"], 12, "{sha}");
    }
}

#[tokio::test]
async fn github_shapes_deserialize_through_octocrab() {
    let s = sim().await;
    let sha = "d".repeat(40);
    s.add_pr(NewPr {
        repo: "acme/web".into(),
        number: Some(1),
        head_ref: Some("feat/x".into()),
        head_sha: Some(sha.clone()),
        ..Default::default()
    })
    .unwrap();
    let octo = octocrab::Octocrab::builder()
        .base_uri(format!("{}/github", s.base_url))
        .unwrap()
        .personal_token("t".to_string())
        .build()
        .unwrap();

    let c = octo
        .issues("acme", "web")
        .create_comment(1, "x <!-- runwarden:summary -->")
        .await
        .unwrap();
    assert_eq!(c.body.as_deref(), Some("x <!-- runwarden:summary -->"));
    assert_eq!(c.user.login, "runwarden[bot]");
    let c2 = octo
        .issues("acme", "web")
        .update_comment(c.id, "y")
        .await
        .unwrap();
    assert_eq!((c2.id, c2.body.as_deref()), (c.id, Some("y")));
    let again = octo.issues("acme", "web").get_comment(c.id).await.unwrap();
    assert_eq!(again.body.as_deref(), Some("y"));
    for i in 0..4 {
        octo.issues("acme", "web")
            .create_comment(1, format!("n{i}"))
            .await
            .unwrap();
    }
    let page = octo
        .issues("acme", "web")
        .list_comments(1)
        .per_page(2)
        .send()
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2);
    assert!(page.next.is_some(), "Link header parsed");
    let all = octo.all_pages(page).await.unwrap();
    assert_eq!(all.len(), 5);

    let pr = octo.pulls("acme", "web").get(1).await.unwrap();
    assert_eq!(pr.number, 1);
    assert_eq!(pr.head.sha, sha);
    assert_eq!(pr.head.ref_field, "feat/x");
    let open = octo
        .pulls("acme", "web")
        .list()
        .state(octocrab::params::State::Open)
        .head("acme:feat/x")
        .send()
        .await
        .unwrap();
    assert_eq!(open.items.len(), 1);
    let assoc = octo
        .commits("acme", "web")
        .associated_pull_requests(octocrab::commits::PullRequestTarget::Sha(sha.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        assoc.items.iter().map(|p| p.number).collect::<Vec<_>>(),
        vec![1]
    );

    let st = octo
        .repos("acme", "web")
        .create_status(sha.clone(), octocrab::models::StatusState::Failure)
        .context("runwarden/bAYZ4a".to_string())
        .description("2 failed".to_string())
        .target("https://app.currents.dev/run/abc".to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(st.state, octocrab::models::StatusState::Failure);
    let listed = octo
        .repos("acme", "web")
        .list_statuses(sha.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].context.as_deref(), Some("runwarden/bAYZ4a"));
    let combined = octo
        .repos("acme", "web")
        .combined_status_for_ref(&octocrab::params::repos::Reference::Branch("feat/x".into()))
        .await
        .unwrap();
    assert_eq!(combined.state, octocrab::models::StatusState::Failure);
    assert_eq!(combined.sha, sha, "heads/feat/x resolves to the PR head");

    // 404s surface as GitHub errors.
    let err = octo.pulls("acme", "web").get(404).await.unwrap_err();
    match err {
        octocrab::Error::GitHub { source, .. } => assert_eq!(source.status_code.as_u16(), 404),
        other => panic!("unexpected error {other:?}"),
    }
}

#[tokio::test]
async fn github_app_installation_endpoints() {
    let s = sim().await;
    let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOjF9.c2ln";
    // The /app endpoints want a JWT.
    let r = gh(&s, reqwest::Method::GET, "/app/installations")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http()
        .get(format!("{}/github/repos/acme/web/installation", s.base_url))
        .bearer_auth(jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let inst: octocrab::models::Installation = r.json().await.unwrap();
    assert_eq!(inst.account.login, "acme");
    let list: Vec<octocrab::models::Installation> = http()
        .get(format!("{}/github/app/installations", s.base_url))
        .bearer_auth(jwt)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.len(), 1);
    let r = http()
        .post(format!(
            "{}/github/app/installations/{}/access_tokens",
            s.base_url, inst.id
        ))
        .bearer_auth(jwt)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let token: octocrab::models::InstallationToken = r.json().await.unwrap();
    assert!(token.token.starts_with("ghs_"));
    let expires: DateTime<Utc> = token.expires_at.as_deref().unwrap().parse().unwrap();
    assert!(expires > Utc::now());
    // The installation token works until expired.
    s.add_pr(NewPr {
        repo: "acme/web".into(),
        number: Some(3),
        head_ref: Some("b".into()),
        ..Default::default()
    })
    .unwrap();
    let with_token = |t: &str| {
        http()
            .get(format!("{}/github/repos/acme/web/pulls/3", s.base_url))
            .header("authorization", format!("token {t}"))
    };
    assert_eq!(with_token(&token.token).send().await.unwrap().status(), 200);
    assert_eq!(s.expire_installation_tokens(), 1);
    let r = with_token(&token.token).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["message"],
        "Bad credentials"
    );
    let r = http()
        .post(format!(
            "{}/github/app/installations/999/access_tokens",
            s.base_url
        ))
        .bearer_auth(jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn github_token_can_be_enforced() {
    let s = sim_with(SimConfig {
        github_token: Some("right".into()),
        ..SimConfig::default()
    })
    .await;
    let get = |t: &str| {
        http()
            .get(format!("{}/github/repos/acme/web/pulls", s.base_url))
            .header("authorization", format!("Bearer {t}"))
            .send()
    };
    assert_eq!(get("wrong").await.unwrap().status(), 401);
    assert_eq!(get("right").await.unwrap().status(), 200);
}

// -------------------------------------------------------------------------------------
// Control endpoints, robustness, sample data, scale
// -------------------------------------------------------------------------------------

#[tokio::test]
async fn control_endpoints_over_http() {
    let (url, mut rx) = receiver().await;
    let s = sim().await;
    let c = http();
    let post = |path: &str, body: Value| {
        c.post(format!("{}/_sim{}", s.base_url, path))
            .json(&body)
            .send()
    };

    let r = post(
        "/webhook-target",
        json!({"url": url, "headers": {"x-webhook-secret": "k"}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let r = post(
        "/projects",
        json!({"projectId": "bAYZ4a", "repo": "acme/web", "framework": "pw"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let r = post(
        "/runs",
        json!({"project": "bAYZ4a", "branch": "feat/x", "sha": "e".repeat(40), "tags": ["a"], "ciBuildId": "b-1",
               "author": "Ada Lovelace", "message": "m", "groups": ["g1", "g2"], "specs": 2,
               "createdAt": "2026-01-01T00:00:00Z"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let run: Run = r.json().await.unwrap();
    assert_eq!(run.created_at.to_rfc3339(), "2026-01-01T00:00:00+00:00");
    assert_eq!(
        run.groups
            .iter()
            .map(|g| g.group_id.as_str())
            .collect::<Vec<_>>(),
        ["g1", "g2"]
    );
    let (h, body) = next_event(&mut rx).await;
    assert_eq!(
        (
            h["x-webhook-secret"].to_str().unwrap(),
            body["event"].as_str().unwrap()
        ),
        ("k", "RUN_START")
    );

    let r = post(
        &format!("/runs/{}/advance", run.run_id),
        json!({"complete": 2, "fail": 1}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let adv: Run = r.json().await.unwrap();
    assert_eq!(adv.status, RunStatus::Failing);
    assert_eq!(adv.instance_counts().complete, 2);
    let r = post(
        &format!("/runs/{}/advance", run.run_id),
        json!({"finish": "passed"}),
    )
    .await
    .unwrap();
    let fin: Run = r.json().await.unwrap();
    assert_eq!(
        (fin.completion_state, fin.status),
        (CompletionState::Complete, RunStatus::Failed)
    );
    assert_eq!(next_event(&mut rx).await.1["event"], "RUN_FINISH");
    let r = post(
        &format!("/runs/{}/advance", run.run_id),
        json!({"complete": 1}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 409);
    let r = post("/runs/nope/advance", json!({})).await.unwrap();
    assert_eq!(r.status(), 404);

    // Bulk add.
    let r = post(
        "/runs",
        json!([{"project": "bAYZ4a", "state": "passed"}, {"project": "bAYZ4a", "state": "failed"}]),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.json::<Value>().await.unwrap()["runIds"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Dashboard-style cancel through advance.
    let r = post("/runs", json!({"project": "bAYZ4a"})).await.unwrap();
    let r3: Run = r.json().await.unwrap();
    let _ = next_event(&mut rx).await;
    let r = post(
        &format!("/runs/{}/advance", r3.run_id),
        json!({"cancel": true, "actor": "user:Jane"}),
    )
    .await
    .unwrap();
    let canc: Run = r.json().await.unwrap();
    assert_eq!(
        canc.cancellation.unwrap().actor.as_deref(),
        Some("user:Jane")
    );
    assert_eq!(next_event(&mut rx).await.1["event"], "RUN_CANCELED");

    // PRs and what the bot wrote.
    let r = post(
        "/prs",
        json!({"repo": "acme/web", "branch": "feat/x", "sha": "e".repeat(40)}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let pr: Value = r.json().await.unwrap();
    assert_eq!(pr["number"], 1);
    gh(
        &s,
        reqwest::Method::POST,
        "/repos/acme/web/issues/1/comments",
    )
    .json(&json!({"body": "hi"}))
    .send()
    .await
    .unwrap();
    let comments: Value = c
        .get(format!(
            "{}/_sim/github/comments?repo=acme/web&number=1",
            s.base_url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(comments[0]["body"], "hi");
    let prs: Value = c
        .get(format!("{}/_sim/prs", s.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(prs.as_array().unwrap().len(), 1);

    // Log and stats.
    send(
        &s,
        reqwest::Method::PUT,
        &format!("/v1/runs/{}/cancel", run.run_id),
        None,
    )
    .await;
    let log: Value = c
        .get(format!("{}/_sim/log", s.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = log.as_array().unwrap();
    assert_eq!(entries.len(), 2, "{log}");
    assert_eq!(entries[1]["method"], "PUT");
    assert_eq!(entries[1]["status"], 422);
    let since = entries[0]["seq"].as_u64().unwrap();
    let later: Value = c
        .get(format!("{}/_sim/log?since={since}", s.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(later.as_array().unwrap().len(), 1);
    let stats: Value = c
        .get(format!("{}/_sim/stats", s.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["runs"], 4);
    assert_eq!(stats["requests"]["currents PUT"], 1);

    // Bad control input is a 400, not a crash.
    let r = c
        .post(format!("{}/_sim/runs", s.base_url))
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = post("/runs", json!({"state": "exploded"})).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = post("/runs", json!({"specs": 0})).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = post("/faults", json!({"kind": "meteor"})).await.unwrap();
    assert_eq!(r.status(), 400);

    // Reset empties the world.
    let r = post("/reset", json!({})).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.run_count(), 0);
    assert!(s.mutation_log().is_empty());
    assert!(s.prs().is_empty());
}

#[tokio::test]
async fn hostile_input_gets_json_errors_not_panics() {
    let s = sim().await;
    s.add_project(project("bAYZ4a")).unwrap();
    let paths = [
        "/v1/runs/%FF%FE",
        "/v1/projects/bAYZ4a/runs?limit=%FF",
        "/v1/projects/bAYZ4a/runs?date_start=%zz",
        "/v1/projects/bAYZ4a/runs?starting_after=ZZZZZZZZZZZZZZZZZZZZZZZZ",
        "/v1/instances/----",
        "/v1/webhooks/%00",
        "/v1/runs/find?projectId=bAYZ4a&tags[]=%E2%82",
        "/github/repos/a/b/pulls/abc",
        "/github/repos/a/b/issues/comments/-1",
        "/github/repos/..%2F..%2Fetc/passwd/pulls",
    ];
    for p in paths {
        let auth = if p.starts_with("/github") {
            "token t"
        } else {
            "Bearer sim-key"
        };
        let r = http()
            .get(format!("{}{}", s.base_url, p))
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert!(
            (400..500).contains(&status) || status == 200,
            "{p}: {status}"
        );
        let body: Value = r.json().await.unwrap_or_else(|_| panic!("{p}: JSON body"));
        assert!(body.is_object() || body.is_array(), "{p}");
    }
    // Oversized body.
    let r = http()
        .post(format!("{}/v1/webhooks?projectId=bAYZ4a", s.base_url))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(vec![b' '; 3 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "FAILED");
    // Still alive.
    assert_eq!(get(&s, "/v1/projects").await.0, 200);
}

#[tokio::test]
async fn sample_world_is_realistic() {
    let s = sim().await;
    let now = Utc::now();
    let sample = simulator::seed_sample(&s, now).unwrap();
    assert_eq!(sample.projects, ["bAYZ4a", "emdaGd", "DgTfZV"]);
    assert!(sample.runs > 100);
    let old = s.run(&sample.superseded).unwrap();
    let new = s.run(&sample.superseding).unwrap();
    assert!(old.is_in_progress() && new.is_in_progress());
    assert_eq!(old.branch(), new.branch());
    assert_ne!(old.sha(), new.sha());
    assert!(old.created_at < new.created_at);
    let stuck = s.run(&sample.stuck).unwrap();
    assert!(now - stuck.created_at >= ChronoDuration::hours(3));
    let orphan = s.run(&sample.orphan).unwrap();
    assert_eq!(
        orphan.meta.ci_build_id.as_deref(),
        Some("acme/api-14523678-1")
    );
    assert_eq!(orphan.framework(), Some("cypress"));
    // The PR of the superseding commit is found from either commit.
    let pr = sample.prs.iter().find(|p| p.number == 101).unwrap();
    assert_eq!(Some(pr.head_sha.as_str()), new.sha());
    let (_, feed) = get(
        &s,
        "/v1/projects/bAYZ4a/runs?limit=50&completion_state=IN_PROGRESS",
    )
    .await;
    let ids = ids_of(&feed);
    assert!(ids.contains(&sample.superseded) && ids.contains(&sample.stuck));
    // Old runs exist for retention.
    let (_, old_runs) = get(
        &s,
        &format!(
            "/v1/projects/bAYZ4a/runs?limit=50&date_end={}",
            urlencode(&(now - ChronoDuration::days(90)).to_rfc3339())
        ),
    )
    .await;
    assert!(!ids_of(&old_runs).is_empty());
    // Statuses are consistent with completion states.
    for r in s.runs("bAYZ4a") {
        match r.completion_state {
            CompletionState::InProgress => {
                assert!(matches!(r.status, RunStatus::Running | RunStatus::Failing))
            }
            CompletionState::Complete => {
                assert!(matches!(r.status, RunStatus::Passed | RunStatus::Failed))
            }
            CompletionState::Timeout => assert_eq!(r.status, RunStatus::Failed),
            _ => {}
        }
        let c = r.instance_counts();
        assert!(c.complete <= c.claimed && c.claimed <= c.overall, "{c:?}");
    }
}

#[tokio::test]
async fn large_worlds_page_quickly() {
    let s = sim().await;
    let spec = GenerateSpec {
        projects: vec!["big1".into(), "big2".into(), "big3".into()],
        runs_per_project: 20_000,
        in_progress: 25,
        ..GenerateSpec::default()
    };
    assert_eq!(s.generate(&spec).unwrap(), 60_000);
    assert_eq!(s.run_count(), 60_000);
    let t = Instant::now();
    let mut after: Option<String> = None;
    let mut n = 0;
    for _ in 0..100 {
        let path = match &after {
            Some(c) => format!("/v1/projects/big1/runs?limit=50&starting_after={c}"),
            None => "/v1/projects/big1/runs?limit=50".into(),
        };
        let (st, body) = get(&s, &path).await;
        assert_eq!(st, 200);
        n += body["data"].as_array().unwrap().len();
        after = body["data"]
            .as_array()
            .unwrap()
            .last()
            .map(|r| r["cursor"].as_str().unwrap().to_string());
    }
    assert_eq!(n, 5_000);
    let (_, body) = get(
        &s,
        "/v1/projects/big2/runs?limit=50&completion_state=IN_PROGRESS",
    )
    .await;
    assert_eq!(body["data"].as_array().unwrap().len(), 25);
    assert_eq!(body["has_more"], false);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "100 pages took {:?}",
        t.elapsed()
    );
}

/// Times are written as the Currents API writes them: RFC 3339 in UTC to the
/// millisecond (`2026-01-12T10:00:00.123Z`), never with nanoseconds, in a run and in
/// its specs' instances (a client that only read nanosecond times would pass here and
/// fail against Currents).
#[tokio::test]
async fn run_times_are_written_to_the_millisecond() {
    let s = sim().await;
    s.add_project(project("p1")).unwrap();
    let now = Utc::now();
    let mut r = run_at("p1", 5, now);
    r.created_at = Some(now - ChronoDuration::nanoseconds(123_456_789));
    let id = s.add_run(r).unwrap().run_id;
    let (status, v) = get(&s, &format!("/v1/runs/{id}")).await;
    assert_eq!(status, 200, "{v}");
    let mut times = Vec::new();
    fn walk(v: &Value, key: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    walk(x, k, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, key, out)),
            Value::String(t) if key.ends_with("At") => out.push((key.to_string(), t.clone())),
            _ => {}
        }
    }
    walk(&v, "", &mut times);
    assert!(times.iter().any(|(k, _)| k == "createdAt"), "{v}");
    for (k, t) in &times {
        let ok = t.len() == "2026-01-12T10:00:00.123Z".len()
            && t.ends_with('Z')
            && t.as_bytes()[19] == b'.';
        assert!(ok, "{k} = {t:?}");
    }
}

// -------------------------------------------------------------------------------------
// Held to the reference
// -------------------------------------------------------------------------------------
//
// The simulator's Currents API held to the reference where an audit found it wrong
// (`shared/reference/currents-openapi-2026-01.json`, `runs-api.txt`,
// `currents-notes.md`): the run feed's enum filters, the `authors[]` filter, the times
// of an instance, and per-group webhooks as each group finishes.

const PROJECT: &str = "bAYZ4a";

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

// Run feed filters

/// `status`, `completion_state` and `tag_operator` take exactly the reference's values
/// (`RunFeedStatusQuery`: PASSED, FAILED, RUNNING, FAILING; `RunFeedCompletionStateQuery`:
/// COMPLETE, IN_PROGRESS, CANCELED, TIMEOUT; `RunFeedTagOperatorQuery`: AND, OR). Another
/// spelling (`CANCELLED`, the Run schema's lowercase `incomplete`, `failing`, `or`) is a
/// 400, as a validator with those enums answers: a client that sent one would otherwise
/// pass here and fail against Currents.
#[tokio::test]
async fn feed_enum_filters_take_only_the_references_values() {
    let s = sim().await;
    s.add_project(project(PROJECT)).unwrap();
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
    let s = sim().await;
    s.add_project(project(PROJECT)).unwrap();
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

// Times

/// A spec-file instance (`GET /v1/instances/{id}`) writes its times as the API does,
/// RFC 3339 in UTC to the millisecond (`"claimedAt": "2022-07-06T08:37:58.317Z"`), like
/// the run it belongs to: never with nanoseconds.
#[tokio::test]
async fn instance_times_are_written_to_the_millisecond() {
    let s = sim().await;
    s.add_project(project(PROJECT)).unwrap();
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

// Per-group webhooks

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
    let v = next_event(rx).await.1;
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
    s.add_project(project(PROJECT)).unwrap();

    // Finish: chromium first, firefox later.
    let run = s.add_run(two_groups()).unwrap();
    let mut starts = vec![
        kind(&next_event(&mut rx).await.1),
        kind(&next_event(&mut rx).await.1),
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
    let v = next_event(&mut rx).await.1;
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
    let v = next_event(&mut rx).await.1;
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
        kind(&next_event(&mut rx).await.1),
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
        kind(&next_event(&mut rx).await.1),
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
        kind(&next_event(&mut rx).await.1),
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
        kind(&next_event(&mut rx).await.1),
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
        kind(&next_event(&mut rx).await.1),
        kind(&next_event(&mut rx).await.1),
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
    s.add_project(project(PROJECT)).unwrap();
    let run = s.add_run(two_groups()).unwrap();
    assert_eq!(kind(&next_event(&mut rx).await.1), pair("RUN_START", "-"));
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
    let v = next_event(&mut rx).await.1;
    assert_eq!(kind(&v), pair("RUN_FINISH", "-"), "{v}");
    let all = s.run(&run.run_id).unwrap().test_counts();
    assert_eq!(v["overall"].as_u64(), Some(all.overall));
    marker(&s, &mut rx).await;
    s.shutdown().await;
}

// -------------------------------------------------------------------------------------
// Fidelity: GitHub's status cap and name comparison, all-or-nothing batches, find-run
// -------------------------------------------------------------------------------------

/// GitHub keeps at most 1,000 statuses per sha and context of a repository: one more is
/// a 422 "This SHA and context has reached the maximum number of statuses."
/// (`anchors-features.md` §4.6). The sha is one commit whatever its case, and the
/// repository one whatever the case of its name. Reaching 1,000 takes more than GitHub's
/// content-creation rate allows in a test, so its secondary limit is off here.
#[tokio::test]
async fn github_statuses_stop_at_1000_per_sha_and_context() {
    let s = sim_with(SimConfig {
        github_content_limits: None,
        ..SimConfig::default()
    })
    .await;
    let sha = "89e6c98d92887913cadf06b2adb97f26cde4849b";
    let post = |repo: &'static str, sha: String, context: &'static str| {
        gh(
            &s,
            reqwest::Method::POST,
            &format!("/repos/{repo}/statuses/{sha}"),
        )
        .json(&json!({"state": "pending", "context": context}))
        .send()
    };
    for i in 0..simulator::MAX_STATUSES_PER_CONTEXT {
        let r = post("acme/web", sha.into(), "ci").await.unwrap();
        assert_eq!(r.status(), 201, "status {i}");
    }
    let full = json!({
        "message": "Validation Failed",
        "errors": [{
            "resource": "Status",
            "code": "custom",
            "message": "This SHA and context has reached the maximum number of statuses.",
        }],
        "documentation_url": "https://docs.github.com/rest",
        "status": "422",
    });
    for (repo, sha) in [
        ("acme/web", sha.to_string()),
        ("acme/web", sha.to_ascii_uppercase()),
        ("Acme/Web", sha.to_string()),
    ] {
        let r = post(repo, sha.clone(), "ci").await.unwrap();
        assert_eq!(r.status(), 422, "{repo} {sha}");
        assert_eq!(r.json::<Value>().await.unwrap(), full);
    }
    assert_eq!(s.statuses(Some("acme/web"), Some(sha)).len(), 1000);
    // Another context, another commit, another repository: room.
    let other_sha = "a".repeat(40);
    for (repo, sha, context) in [
        ("acme/web", sha.to_string(), "lint"),
        ("acme/web", other_sha, "ci"),
        ("acme/api", sha.to_string(), "ci"),
    ] {
        let r = post(repo, sha.clone(), context).await.unwrap();
        assert_eq!(r.status(), 201, "{repo} {sha} {context}");
    }
    let combined = gh_get(&s, &format!("/repos/acme/web/commits/{sha}/status")).await;
    assert_eq!(combined["total_count"], 2);
}

/// GitHub compares owner and repository names case-insensitively: the PRs, comments,
/// statuses and installation of `acme/web` are found under `Acme/Web`, what is written
/// under `ACME/web` is stored with them, and answers spell the repository as it is.
#[tokio::test]
async fn github_owner_and_repo_names_are_case_insensitive() {
    let s = sim().await;
    let sha = "c".repeat(40);
    s.add_pr(NewPr {
        repo: "acme/web".into(),
        number: Some(5),
        head_ref: Some("feat/x".into()),
        head_sha: Some(sha.clone()),
        ..Default::default()
    })
    .unwrap();
    let prs = gh_get(&s, &format!("/repos/Acme/Web/commits/{sha}/pulls")).await;
    let numbers: Vec<u64> = prs
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [5], "{prs}");
    assert_eq!(prs[0]["base"]["repo"]["full_name"], "acme/web");
    let listed = gh_get(&s, "/repos/ACME/web/pulls?head=Acme:feat/x").await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let listed = gh_get(&s, "/repos/acme/web/pulls?head=acme:FEAT/X").await;
    assert!(
        listed.as_array().unwrap().is_empty(),
        "branch names are exact"
    );
    let pr = gh_get(&s, "/repos/Acme/WEB/pulls/5").await;
    assert_eq!(pr["number"], 5);

    // A comment posted under one spelling is the repository's.
    let r = gh(
        &s,
        reqwest::Method::POST,
        "/repos/Acme/Web/issues/5/comments",
    )
    .json(&json!({"body": "hi"}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let c: Value = r.json().await.unwrap();
    assert!(
        c["url"]
            .as_str()
            .unwrap()
            .contains("/repos/acme/web/issues/comments/"),
        "{c}"
    );
    let id = c["id"].as_u64().unwrap();
    let listed = gh_get(&s, "/repos/acme/web/issues/5/comments").await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(s.comments(Some("acme/web"), Some(5)).len(), 1);
    assert_eq!(s.comments(Some("ACME/WEB"), Some(5)).len(), 1);
    assert_eq!(s.comments(None, None)[0].repo, "acme/web");
    let got = gh_get(&s, &format!("/repos/ACME/WEB/issues/comments/{id}")).await;
    assert_eq!(got["id"], id);
    let r = gh(
        &s,
        reqwest::Method::PATCH,
        &format!("/repos/acme/WEB/issues/comments/{id}"),
    )
    .json(&json!({"body": "edited"}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);

    // Statuses under two spellings: one commit of one repository.
    for (repo, context) in [("ACME/web", "a"), ("acme/web", "b")] {
        let r = gh(
            &s,
            reqwest::Method::POST,
            &format!("/repos/{repo}/statuses/{sha}"),
        )
        .json(&json!({"state": "success", "context": context}))
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), 201, "{repo}");
    }
    let combined = gh_get(&s, &format!("/repos/Acme/Web/commits/{sha}/status")).await;
    assert_eq!(combined["total_count"], 2, "{combined}");
    assert_eq!(combined["repository"]["full_name"], "acme/web");
    let all = gh_get(&s, &format!("/repos/acme/web/commits/{sha}/statuses")).await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert!(
        s.statuses(None, None)
            .iter()
            .all(|st| st.repo == "acme/web")
    );

    // One installation per owner, whatever the spelling.
    let a = gh_get(&s, "/repos/acme/web/installation").await;
    let b = gh_get(&s, "/repos/ACME/Web/installation").await;
    assert_eq!(a["id"], b["id"]);
    assert_eq!(b["account"]["login"], "acme");

    let r = gh(
        &s,
        reqwest::Method::DELETE,
        &format!("/repos/Acme/Web/issues/comments/{id}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 204);
    assert!(s.comments(None, None).is_empty());
}

/// `POST /_sim/runs` with a batch is all or nothing: a bad run anywhere in it is a 400
/// naming it, and nothing of the batch is kept, neither the runs before it nor the
/// project one of them made, and no webhook goes out for them.
#[tokio::test]
async fn a_rejected_batch_of_runs_adds_nothing_and_emits_nothing() {
    let (url, mut rx) = receiver().await;
    let s = sim_with(SimConfig {
        webhook_url: Some(url),
        ..SimConfig::default()
    })
    .await;
    s.add_project(project(PROJECT)).unwrap();
    let post_runs = |body: Value| {
        http()
            .post(format!("{}/_sim/runs", s.base_url))
            .json(&body)
            .send()
    };
    let r = post_runs(json!([
        {"project": PROJECT, "ciBuildId": "batch-1", "emit": true},
        {"project": "newproj", "ciBuildId": "batch-2", "emit": true},
        {"project": PROJECT, "state": "exploded"},
    ]))
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().starts_with("runs[2]: "),
        "{body}"
    );
    assert_eq!(s.run_count(), 0);
    assert_eq!(get(&s, "/v1/projects/newproj").await.0, 404);
    let (_, feed) = get(&s, &format!("/v1/projects/{PROJECT}/runs")).await;
    assert!(ids_of(&feed).is_empty());
    // A duplicate id within the batch is refused the same way.
    let r = post_runs(json!([
        {"project": PROJECT, "runId": "abc123", "emit": true},
        {"project": PROJECT, "runId": "abc123"},
    ]))
    .await
    .unwrap();
    assert_eq!(r.status(), 409);
    assert!(s.run("abc123").is_none());
    // No webhook of the rejected batches came before this one.
    marker(&s, &mut rx).await;

    // The same batch, fixed, is added whole.
    let r = post_runs(json!([
        {"project": PROJECT, "ciBuildId": "batch-1", "emit": true},
        {"project": "newproj", "ciBuildId": "batch-2", "emit": true},
        {"project": PROJECT},
    ]))
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let ids: Value = r.json().await.unwrap();
    assert_eq!(ids["runIds"].as_array().unwrap().len(), 3);
    assert_eq!(s.run_count(), 4);
    let mut builds = vec![
        next_event(&mut rx).await.1["buildId"].clone(),
        next_event(&mut rx).await.1["buildId"].clone(),
    ];
    builds.sort_by_key(|b| b.to_string());
    assert_eq!(builds, [json!("batch-1"), json!("batch-2")]);
}

/// `GET /runs/find` takes `projectId` and then `ciBuildId`, or `branch` with optional
/// `tags[]` (`currents-notes.md` §1.6): without either selector it is a 400 in the API's
/// error shape. `pwLastRun=true` adds `data.pwLastRun`, Playwright's `.last-run.json`:
/// `status` and the ids of the failed tests (Playwright runs only).
#[tokio::test]
async fn find_run_needs_a_selector_and_answers_pw_last_run() {
    let s = sim().await;
    s.add_project(project(PROJECT)).unwrap();
    let failed = s
        .add_run(NewRun {
            project: Some(PROJECT.into()),
            ci_build_id: Some("build-7".into()),
            tags: vec!["nightly".into()],
            state: Some("failed".into()),
            failed: Some(2),
            specs: Some(4),
            tests_per_spec: Some(3),
            ..Default::default()
        })
        .unwrap();
    let selector_required = json!({
        "status": "FAILED",
        "error": "\"ciBuildId\" or \"branch\" is required",
    });
    for q in [
        format!("projectId={PROJECT}"),
        format!("projectId={PROJECT}&tags[]=nightly"),
        format!("projectId={PROJECT}&ciBuildId=&branch="),
        format!("projectId={PROJECT}&pwLastRun=true"),
    ] {
        let (st, body) = get(&s, &format!("/v1/runs/find?{q}")).await;
        assert_eq!((st, body), (400, selector_required.clone()), "{q}");
    }
    let (st, body) = get(
        &s,
        &format!("/v1/runs/find?projectId={PROJECT}&ciBuildId=build-7&pwLastRun=maybe"),
    )
    .await;
    assert_eq!(
        (st, body),
        (
            400,
            json!({"status": "FAILED", "error": "\"pwLastRun\" must be a boolean"})
        )
    );

    // Without pwLastRun (or with false), no `pwLastRun`.
    for q in ["", "&pwLastRun=false"] {
        let (st, body) = get(
            &s,
            &format!("/v1/runs/find?projectId={PROJECT}&ciBuildId=build-7{q}"),
        )
        .await;
        assert_eq!(st, 200);
        assert_eq!(body["data"]["runId"], json!(failed.run_id));
        assert!(body["data"].get("pwLastRun").is_none(), "{q}");
    }
    // With it, by ciBuildId or by branch and tags.
    let failures: u64 = failed.groups.iter().map(|g| g.tests.failures).sum();
    assert!(failures >= 2);
    for q in [
        "ciBuildId=build-7&pwLastRun=true",
        "branch=main&tags[]=nightly&pwLastRun=true",
    ] {
        let (st, body) = get(&s, &format!("/v1/runs/find?projectId={PROJECT}&{q}")).await;
        assert_eq!(st, 200, "{q}: {body}");
        assert_eq!(body["data"]["runId"], json!(failed.run_id));
        let last = &body["data"]["pwLastRun"];
        assert_eq!(last["status"], "failed", "{q}: {last}");
        let tests = last["failedTests"].as_array().unwrap();
        assert_eq!(tests.len() as u64, failures, "{last}");
        assert!(
            tests
                .iter()
                .all(|t| t.as_str().is_some_and(|t| t.len() == 41))
        );
    }
    // A passed run: nothing to re-run.
    s.add_run(NewRun {
        project: Some(PROJECT.into()),
        ci_build_id: Some("build-8".into()),
        state: Some("passed".into()),
        ..Default::default()
    })
    .unwrap();
    let (_, body) = get(
        &s,
        &format!("/v1/runs/find?projectId={PROJECT}&ciBuildId=build-8&pwLastRun=true"),
    )
    .await;
    assert_eq!(
        body["data"]["pwLastRun"],
        json!({"status": "passed", "failedTests": []})
    );
    // Playwright only: a Cypress run has none.
    s.add_run(NewRun {
        project: Some(PROJECT.into()),
        ci_build_id: Some("build-cy".into()),
        framework: Some("cypress".into()),
        state: Some("failed".into()),
        ..Default::default()
    })
    .unwrap();
    let (st, body) = get(
        &s,
        &format!("/v1/runs/find?projectId={PROJECT}&ciBuildId=build-cy&pwLastRun=true"),
    )
    .await;
    assert_eq!(st, 200);
    assert!(body["data"].get("pwLastRun").is_none(), "{body}");
}
