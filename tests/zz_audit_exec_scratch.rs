//! Scratch audit tests (to be deleted).

use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use chrono::{Duration, Utc};
use runwarden::simulator::{self, NewProject, NewRun, SimConfig, SimHandle};

const PROJECT: &str = "bAYZ4a";

struct Env {
    sim: SimHandle,
    dir: tempfile::TempDir,
    store: String,
}

async fn setup(rules: &str) -> Env {
    let sim = simulator::spawn(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        SimConfig::default(),
    )
    .await
    .unwrap();
    sim.add_project(NewProject {
        project_id: Some(PROJECT.into()),
        repo: Some("acme/web".into()),
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("rw.db").display());
    let text = format!(
        "[currents]\napi_url = \"{}\"\nprojects = [\"{PROJECT}\"]\nmax_requests_per_second = 0\n[store]\nurl = \"{store}\"\n\n{rules}",
        sim.currents_url(),
    );
    std::fs::write(dir.path().join("rules.toml"), text).unwrap();
    Env { sim, dir, store }
}

impl Env {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_runwarden"))
            .arg("--config")
            .arg(self.dir.path().join("rules.toml"))
            .args(args)
            .env("CURRENTS_API_KEY", "sim-key")
            .env_remove("RUST_LOG")
            .env_remove("GITHUB_TOKEN")
            .env_remove("GITHUB_APP_ID")
            .output()
            .unwrap()
    }
    async fn run_async(self, args: &[&str]) -> (Output, Env) {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            (self.run(&args), self)
        })
        .await
        .unwrap()
    }
    fn add(&self, branch: &str, sha: &str, age: Duration, state: &str) -> String {
        self.sim
            .add_run(NewRun {
                project: Some(PROJECT.into()),
                branch: Some(branch.into()),
                sha: Some(sha.into()),
                created_at: Some(Utc::now() - age),
                state: Some(state.into()),
                emit: Some(false),
                ..Default::default()
            })
            .unwrap()
            .run_id
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn queue_action(env: &Env, (rule, kind, action): (&str, &str, &str), run: &str, key: &str) {
    let store = runwarden::store::Store::connect(&env.store).await.unwrap();
    store
        .record_decisions(&[runwarden::store::NewDecision {
            at: Utc::now() - Duration::minutes(1),
            rule: rule.into(),
            kind: kind.into(),
            action: action.into(),
            run_id: run.into(),
            project_id: PROJECT.into(),
            branch: Some("feat/a".into()),
            sha: Some("a1".into()),
            reason: format!("{rule} decided so"),
            dry_run: false,
            not_before: None,
            action_key: key.into(),
            payload: None,
            skip: None,
        }])
        .await
        .unwrap();
    store.close().await;
}

/// A cancel queued by `serve` that the sweep carries out and that fails for good: the
/// sweep exits 0 and reports 0 decisions.
#[tokio::test(flavor = "multi_thread")]
async fn audit_sweep_exit_0_after_carrying_out_a_queued_action_that_failed_for_good() {
    let env = setup("[[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\n").await;
    let run = env.add("feat/a", "a1", Duration::minutes(20), "running");
    queue_action(&env, ("cancel-superseded", "supersede", "cancel"), &run, &format!("cancel:{run}")).await;
    env.sim.inject_fault(
        runwarden::simulator::Fault::status(403).on("PUT", format!("/v1/runs/{run}/cancel")),
    );
    let (out, env) = env.run_async(&["sweep"]).await;
    eprintln!("SWEEP exit={:?}\n{}", out.status.code(), text(&out));
    let audit = env.run(&["audit", "--format", "json", "--since", "1h"]);
    eprintln!("AUDIT {}", String::from_utf8_lossy(&audit.stdout));
    let mutations: Vec<_> = env.sim.mutation_log().iter().map(|e| (e.method.clone(), e.status)).collect();
    eprintln!("MUTATIONS {mutations:?}");
    assert_eq!(out.status.code(), Some(0), "bug not reproduced");
}

/// A summary queued by `serve` (which has GitHub credentials) is finalised `skipped` by
/// a sweep that runs without them.
#[tokio::test(flavor = "multi_thread")]
async fn audit_sweep_without_github_credentials_skips_serves_queued_summary_for_good() {
    let env = setup("[[rules]]\nname = \"pr-summary\"\nkind = \"summary\"\n").await;
    let run = env.add("feat/a", "a1", Duration::minutes(20), "passed");
    queue_action(
        &env,
        ("pr-summary", "summary", "summarize"),
        &run,
        &format!("summarize:pr-summary:{run}:RUN_FINISH"),
    )
    .await;
    let (out, env) = env.run_async(&["sweep"]).await;
    eprintln!("SWEEP exit={:?}\n{}", out.status.code(), text(&out));
    let audit = env.run(&["audit", "--format", "json", "--since", "1h"]);
    let a = String::from_utf8_lossy(&audit.stdout).to_string();
    eprintln!("AUDIT {a}");
    let store = runwarden::store::Store::connect(&env.store).await.unwrap();
    let row = store
        .action_by_key(&format!("summarize:pr-summary:{run}:RUN_FINISH"))
        .await
        .unwrap()
        .unwrap();
    eprintln!("ACTION state={:?} detail={:?}", row.state, row.detail);
    assert_eq!(row.state, runwarden::store::ActionState::Skipped, "bug not reproduced");
}

/// Requests that already reserved a rate slot go out during another request's 429
/// `Retry-After` pause.
#[tokio::test(flavor = "multi_thread")]
async fn audit_requests_queued_for_a_rate_slot_ignore_a_later_429_pause() {
    use axum::Router;
    let hits: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let h2 = hits.clone();
    let app = Router::new().fallback(move |uri: axum::http::Uri| {
        let hits = h2.clone();
        async move {
            let mut v = hits.lock().unwrap();
            let n = v.len();
            let id = uri.path().rsplit('/').next().unwrap().to_string();
            v.push((Instant::now(), id.clone()));
            drop(v);
            if n == 0 {
                axum::response::Response::builder()
                    .status(429)
                    .header("retry-after", "3")
                    .body(axum::body::Body::from("{\"status\":\"FAILED\",\"error\":\"slow\"}"))
                    .unwrap()
            } else {
                let body = serde_json::json!({"status":"OK","data":{"runId": id, "createdAt":"2026-01-01T00:00:00Z"}});
                axum::response::Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(body.to_string()))
                    .unwrap()
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let c = runwarden::currents::client::CurrentsClient::new(runwarden::currents::client::ClientOptions {
        base_url: url::Url::parse(&format!("http://{addr}/v1")).unwrap(),
        api_key: runwarden::secret::Secret::new("k-123456"),
        max_requests_per_second: 2,
        ..Default::default()
    })
    .unwrap();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move { c.get_run(&format!("r{i}")).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let v = hits.lock().unwrap().clone();
    let t0 = v[0].0;
    let rel: Vec<_> = v.iter().map(|(t, id)| (id.clone(), t.duration_since(t0).as_millis())).collect();
    eprintln!("HITS (ms after the 429): {rel:?}");
    let during = v[1..]
        .iter()
        .filter(|(t, _)| t.duration_since(t0) < StdDuration::from_millis(2900))
        .count();
    assert!(during > 0, "bug not reproduced");
}
