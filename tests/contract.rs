//! Contract tests: the real Currents client against the built-in simulator, endpoint by
//! endpoint — pagination over several pages, every filter, every error class, retries on
//! 503 and 429 (with `Retry-After` checked against time), no retry on 400/401/403.

use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use runwarden::currents::client::{
    CancelOutcome, ClientOptions, CurrentsClient, CurrentsError, DeleteOutcome, FindBy, RunFilter,
    TagOperator,
};
use runwarden::currents::{CompletionState, RunStatus, WebhookSpec};
use runwarden::secret::Secret;
use runwarden::simulator::{self, Fault, NewProject, NewRun, SimConfig, SimHandle};

const P: &str = "bAYZ4a";

async fn sim() -> SimHandle {
    let s = simulator::spawn(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        SimConfig::default(),
    )
    .await
    .unwrap();
    s.add_project(NewProject {
        project_id: Some(P.into()),
        repo: Some("acme/web".into()),
        ..Default::default()
    })
    .unwrap();
    s
}

fn client(s: &SimHandle, key: &str) -> CurrentsClient {
    CurrentsClient::new(ClientOptions {
        base_url: url::Url::parse(&s.currents_url()).unwrap(),
        api_key: Secret::new(key),
        request_timeout: Duration::from_secs(5),
        max_requests_per_second: 0,
        max_attempts: 4,
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        ..ClientOptions::default()
    })
    .unwrap()
}

fn nr(branch: &str, minutes_ago: i64, state: &str) -> NewRun {
    NewRun {
        project: Some(P.into()),
        branch: Some(branch.into()),
        sha: Some(format!("sha{minutes_ago}")),
        created_at: Some(Utc::now() - chrono::Duration::minutes(minutes_ago)),
        state: Some(state.into()),
        emit: Some(false),
        ..Default::default()
    }
}

#[tokio::test]
async fn projects_runs_and_pagination_across_pages() {
    let s = sim().await;
    let ids = s
        .add_runs(
            (0..120)
                .map(|i| nr(if i % 2 == 0 { "main" } else { "feat/x" }, i + 1, "passed"))
                .collect(),
        )
        .unwrap();
    let c = client(&s, "sim-key");
    let projects: Vec<_> = c.list_projects().collect::<Vec<_>>().await;
    assert_eq!(projects.len(), 1);
    assert_eq!(c.get_project(P).await.unwrap().project_id, P);
    let before = c.request_count();
    let all: Vec<_> = c
        .list_runs(P, &RunFilter::default())
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(all.len(), 120);
    assert_eq!(c.request_count() - before, 3, "120 runs = 3 pages of 50");
    assert!(
        all.windows(2).all(|w| w[0].created_at >= w[1].created_at),
        "newest first"
    );
    assert!(
        all.iter().all(|r| r.specs.is_empty() && r.cursor.is_some()),
        "list items carry cursors, no specs"
    );
    let mut got: Vec<_> = all.iter().map(|r| r.run_id.clone()).collect();
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want);
    let full = c.get_run(&ids[0]).await.unwrap();
    assert!(!full.specs.is_empty(), "get returns specs");
}

#[tokio::test]
async fn every_list_filter_is_honoured_by_the_simulator() {
    let s = sim().await;
    let mut a = nr("main", 10, "passed");
    a.tags = vec!["nightly".into(), "chrome".into()];
    a.author = Some("Ann".into());
    a.message = Some("fix: login".into());
    a.ci_build_id = Some("build-777".into());
    let a = s.add_run(a).unwrap().run_id;
    let mut b = nr("feat/y", 20, "running");
    b.tags = vec!["chrome".into()];
    b.author = Some("Bob".into());
    let b = s.add_run(b).unwrap().run_id;
    let old = s
        .add_run(nr("main", 60 * 24 * 10, "failed"))
        .unwrap()
        .run_id;
    let c = client(&s, "sim-key");
    let ids = |f: RunFilter| {
        let c = c.clone();
        async move {
            let mut v: Vec<String> = c
                .list_runs(P, &f)
                .map(|r| r.unwrap().run_id)
                .collect()
                .await;
            v.sort();
            v
        }
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        ids(RunFilter {
            branches: vec!["main".into()],
            ..Default::default()
        })
        .await,
        sorted(vec![a.clone(), old.clone()])
    );
    assert_eq!(
        ids(RunFilter {
            tags: vec!["nightly".into(), "chrome".into()],
            ..Default::default()
        })
        .await,
        vec![a.clone()]
    );
    assert_eq!(
        ids(RunFilter {
            tags: vec!["nightly".into(), "chrome".into()],
            tag_operator: Some(TagOperator::Or),
            ..Default::default()
        })
        .await,
        sorted(vec![a.clone(), b.clone()])
    );
    assert_eq!(
        ids(RunFilter {
            authors: vec!["Bob".into()],
            ..Default::default()
        })
        .await,
        vec![b.clone()]
    );
    assert_eq!(
        ids(RunFilter {
            search: Some("BUILD-777".into()),
            ..Default::default()
        })
        .await,
        vec![a.clone()]
    );
    assert_eq!(
        ids(RunFilter {
            search: Some("login".into()),
            ..Default::default()
        })
        .await,
        vec![a.clone()]
    );
    assert_eq!(
        ids(RunFilter {
            status: vec![RunStatus::Failed],
            ..Default::default()
        })
        .await,
        vec![old.clone()]
    );
    assert_eq!(
        ids(RunFilter {
            completion_state: vec![CompletionState::InProgress],
            ..Default::default()
        })
        .await,
        vec![b.clone()]
    );
    let cutoff = Utc::now() - chrono::Duration::days(1);
    assert_eq!(
        ids(RunFilter {
            date_end: Some(cutoff),
            ..Default::default()
        })
        .await,
        vec![old.clone()]
    );
    assert_eq!(
        ids(RunFilter {
            date_start: Some(cutoff),
            ..Default::default()
        })
        .await,
        sorted(vec![a.clone(), b.clone()])
    );
}

#[tokio::test]
async fn find_cancel_delete_instances_and_webhooks() {
    let s = sim().await;
    let mut done = nr("main", 30, "passed");
    done.ci_build_id = Some("ci-1".into());
    let done = s.add_run(done).unwrap();
    let running = s.add_run(nr("main", 5, "running")).unwrap();
    let c = client(&s, "sim-key");
    let found = c
        .find_run(P, FindBy::CiBuildId("ci-1".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.run_id, done.run_id);
    assert!(
        c.find_run(P, FindBy::CiBuildId("nope".into()))
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        c.cancel_run(&running.run_id).await.unwrap(),
        CancelOutcome::Cancelled(_)
    ));
    assert!(matches!(
        c.cancel_run(&running.run_id).await.unwrap(),
        CancelOutcome::AlreadyDone { status: 422, .. }
    ));
    assert!(matches!(
        c.cancel_run("0000000000000000").await.unwrap(),
        CancelOutcome::AlreadyDone { status: 404, .. }
    ));
    assert!(matches!(
        c.delete_run(&done.run_id).await.unwrap(),
        DeleteOutcome::Deleted(_)
    ));
    assert!(matches!(
        c.delete_run(&done.run_id).await.unwrap(),
        DeleteOutcome::AlreadyGone { status: 404, .. }
    ));
    let full = c.get_run(&running.run_id).await.unwrap();
    let inst = full.specs[0].instance_id.clone().unwrap();
    assert_eq!(
        c.get_instance(&inst).await.unwrap().instance_id.as_deref(),
        Some(inst.as_str())
    );
    let spec = WebhookSpec {
        url: Some("https://bot.example.com/hook".into()),
        headers: Some("{\"x-webhook-secret\":\"s\"}".into()),
        hook_events: Some(vec!["RUN_FINISH".into()]),
        label: Some("runwarden".into()),
    };
    let h = c.create_webhook(P, &spec).await.unwrap();
    assert_eq!(c.list_webhooks(P).await.unwrap().len(), 1);
    let upd = c
        .update_webhook(
            &h.hook_id,
            &WebhookSpec {
                hook_events: Some(vec!["RUN_START".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(upd.hook_events, ["RUN_START"]);
    assert!(c.delete_webhook(&h.hook_id).await.unwrap());
    assert!(!c.delete_webhook(&h.hook_id).await.unwrap());
}

#[tokio::test]
async fn errors_map_to_typed_errors_and_4xx_are_not_retried() {
    let s = sim().await;
    let bad = client(&s, "wrong-key");
    let e = bad.get_run("abc").await.unwrap_err();
    assert!(
        matches!(&e, CurrentsError::Api { status: 401, message } if message.contains("Invalid API key")),
        "{e}"
    );
    assert_eq!(bad.request_count(), 1, "401 is not retried");
    let c = client(&s, "sim-key");
    let e = c.get_run("ffffffffffffffff").await.unwrap_err();
    assert!(
        matches!(&e, CurrentsError::Api { status: 404, message } if message == "Run not found"),
        "{e}"
    );
    let e = c.get_project("nope00").await.unwrap_err();
    assert!(
        matches!(&e, CurrentsError::Api { status: 404, message } if message == "Project not found"),
        "{e}"
    );
    let before = c.request_count();
    s.inject_fault(
        serde_json::from_value::<Fault>(
            serde_json::json!({"path": "/v1/runs", "kind": "status", "status": 403, "times": 1}),
        )
        .unwrap(),
    );
    assert!(matches!(
        c.get_run("x").await.unwrap_err(),
        CurrentsError::Api { status: 403, .. }
    ));
    assert_eq!(c.request_count() - before, 1, "403 is not retried");
    let before = c.request_count();
    s.inject_fault(
        serde_json::from_value::<Fault>(
            serde_json::json!({"path": "/v1/runs", "kind": "status", "status": 400, "times": 1}),
        )
        .unwrap(),
    );
    assert!(matches!(
        c.get_run("x").await.unwrap_err(),
        CurrentsError::Api { status: 400, .. }
    ));
    assert_eq!(c.request_count() - before, 1, "400 is not retried");
}

#[tokio::test]
async fn a_503_burst_and_a_429_with_retry_after_are_retried_and_respected() {
    let s = sim().await;
    let r = s.add_run(nr("main", 3, "running")).unwrap();
    let c = client(&s, "sim-key");
    s.inject_fault(
        serde_json::from_value::<Fault>(
            serde_json::json!({"path": "/v1/runs", "kind": "status", "status": 503, "times": 2}),
        )
        .unwrap(),
    );
    let before = c.request_count();
    assert_eq!(c.get_run(&r.run_id).await.unwrap().run_id, r.run_id);
    assert_eq!(c.request_count() - before, 3, "two 503s, then success");
    s.inject_fault(serde_json::from_value::<Fault>(serde_json::json!({"path": "/v1/runs", "kind": "rate_limit", "status": 429, "retry_after": 1, "times": 1})).unwrap());
    let t = Instant::now();
    assert!(matches!(
        c.cancel_run(&r.run_id).await.unwrap(),
        CancelOutcome::Cancelled(_)
    ));
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "Retry-After: 1 was honoured ({:?})",
        t.elapsed()
    );
    let cancels = s
        .mutation_log()
        .iter()
        .filter(|e| e.method == "PUT")
        .count();
    assert_eq!(cancels, 2, "one 429, one success");
}
