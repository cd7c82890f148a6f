//! The subcommands as users run them — `plan`, `sweep`, `explain`, `audit`,
//! `webhooks install` — as child processes against an in-process simulator. Their store is
//! a SQLite file, or a fresh PostgreSQL database with `RUNWARDEN_TEST_STORE=postgres`.

#[path = "support/postgres.rs"]
mod postgres;

use std::process::{Command, Output};

use chrono::{Duration, Utc};
use runwarden::simulator::{self, NewProject, NewRun, SimConfig, SimHandle};

const PROJECT: &str = "bAYZ4a";

struct Env {
    sim: SimHandle,
    dir: tempfile::TempDir,
    /// The URL of the store the config names.
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
    let store = match postgres::selected_database().await {
        Some(url) => url,
        None => format!("sqlite://{}", dir.path().join("rw.db").display()),
    };
    let text = format!(
        "[currents]\napi_url = \"{}\"\nprojects = [\"{PROJECT}\"]\nmax_requests_per_second = 0\n[store]\nurl = \"{store}\"\n\n{rules}",
        sim.currents_url(),
    );
    std::fs::write(dir.path().join("rules.toml"), text).unwrap();
    Env { sim, dir, store }
}

impl Env {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_runwarden"));
        c.arg("--config")
            .arg(self.dir.path().join("rules.toml"))
            .args(args)
            .env("CURRENTS_API_KEY", "sim-key")
            .env("RUNWARDEN_CURRENTS_WEBHOOK_SECRET", "hook-secret")
            .env_remove("RUST_LOG")
            .env_remove("GITHUB_TOKEN");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs the command with its stdout a pipe whose reader is gone before the child
    /// writes (as `runwarden audit | head -0` leaves it); its stdin is closed.
    fn run_with_closed_stdout(&self, args: &[&str]) -> Output {
        let mut child = self
            .command(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        child.wait_with_output().unwrap()
    }

    /// [`Env::run`] on a blocking thread, so that the in-process simulator keeps serving
    /// the child meanwhile; gives the environment back.
    async fn run_async(self, args: &[&str]) -> (Output, Env) {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            (self.run(&args), self)
        })
        .await
        .unwrap()
    }

    /// The next `method path` request is answered 400, which is final: its action fails
    /// for good.
    fn fail_once(&self, method: &str, path: &str) {
        self.sim
            .inject_fault(runwarden::simulator::Fault::status(400).on(method, path));
    }

    fn add(&self, branch: &str, sha: &str, age: Duration, state: &str, tags: &[&str]) -> String {
        self.sim
            .add_run(NewRun {
                project: Some(PROJECT.into()),
                branch: Some(branch.into()),
                sha: Some(sha.into()),
                created_at: Some(Utc::now() - age),
                state: Some(state.into()),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                emit: Some(false),
                ..Default::default()
            })
            .unwrap()
            .run_id
    }
}

/// A new directory holding a `rules.toml` with `text`.
fn config_dir(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.toml"), text).unwrap();
    dir
}

/// The binary with `--config DIR/rules.toml` and no `RUST_LOG`.
fn bin_in(dir: &tempfile::TempDir) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runwarden"));
    c.arg("--config")
        .arg(dir.path().join("rules.toml"))
        .env_remove("RUST_LOG");
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const RULES: &str = "[[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\n\n[[rules]]\nname = \"retention\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"30d\"\nkeep_latest = 1\npin_tags = [\"keep\"]\n";

#[tokio::test(flavor = "multi_thread")]
async fn plan_prints_what_would_be_done_as_json_and_mutates_nothing() {
    let env = setup(RULES).await;
    let old = env.add("feat/a", "a1", Duration::minutes(20), "running", &[]);
    let _new = env.add("feat/a", "a2", Duration::minutes(2), "running", &[]);
    let kept = env.add("feat/b", "b1", Duration::days(40), "passed", &[]);
    let expired = env.add("feat/b", "b0", Duration::days(50), "passed", &[]);
    let pinned = env.add("feat/b", "b9", Duration::days(60), "passed", &["keep"]);
    let out = env.run_async(&["plan", "--format", "json"]).await;
    let (out, env) = out;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = plan.as_array().unwrap();
    let find = |id: &str| items.iter().find(|i| i["run_id"] == id).cloned();
    let c = find(&old).expect("the superseded run is planned");
    assert_eq!(
        (c["rule"].as_str(), c["kind"].as_str(), c["action"].as_str()),
        (Some("cancel-superseded"), Some("supersede"), Some("cancel"))
    );
    let mut keys: Vec<_> = c.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "action",
            "branch",
            "kind",
            "project_id",
            "reason",
            "rule",
            "run_id",
            "sha"
        ]
    );
    assert_eq!(find(&expired).unwrap()["action"], "delete");
    assert!(find(&kept).is_none() && find(&pinned).is_none(), "{plan:#}");
    assert!(env.sim.mutation_log().is_empty(), "plan mutates nothing");
}

/// `plan --rule` of a supersede rule lists what that rule needs (the runs in progress,
/// and the finished ones newer than them), not every run of the project because another
/// rule of the config is a retention rule.
#[tokio::test(flavor = "multi_thread")]
async fn plan_of_a_supersede_rule_does_not_list_the_whole_history_for_a_retention_rule() {
    let env = setup(RULES).await;
    let old = env.add("feat/a", "a1", Duration::minutes(20), "running", &[]);
    env.add("feat/a", "a2", Duration::minutes(2), "running", &[]);
    // History the retention rule would list: three pages of it.
    for i in 0..120 {
        env.add(
            "feat/b",
            &format!("h{i}"),
            Duration::days(40) + Duration::minutes(i),
            "passed",
            &[],
        );
    }
    let gets = |env: &Env| {
        env.sim
            .request_counts()
            .get("currents GET")
            .copied()
            .unwrap_or(0)
    };
    let before = gets(&env);
    let (out, env) = env
        .run_async(&["plan", "--rule", "cancel-superseded"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&old),
        "{}",
        text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let read: u64 = err
        .split_once(" runs read")
        .and_then(|(n, _)| n.rsplit(char::is_whitespace).next()?.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(read < 120, "the history was not listed: {err}");
    let requests = gets(&env) - before;
    assert!(
        requests <= 2,
        "{requests} listing requests: the in-progress runs, the finished newer ones"
    );
    // The whole plan still lists the history, for the retention rule.
    let (out, _env) = env.run_async(&["plan"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("122 runs read"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_and_sweep_agree_that_a_finished_newer_run_supersedes() {
    let rules = "[[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\n";
    let env = setup(rules).await;
    let old = env.add("feat/a", "a1", Duration::minutes(20), "running", &[]);
    let newer = env.add("feat/a", "a2", Duration::minutes(2), "passed", &[]);
    let (out, env) = env.run_async(&["plan", "--format", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = plan.as_array().unwrap();
    assert_eq!(items.len(), 1, "{plan:#}");
    assert_eq!(items[0]["run_id"], old.as_str(), "{plan:#}");
    assert!(
        items[0]["reason"].as_str().unwrap().contains(&newer),
        "{plan:#}"
    );
    let (out, env) = env.run_async(&["sweep", "--dry-run"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("sweep: 1 decision(s): 0 done, 1 dry run"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains(&old), "{}", text(&out));
    assert!(env.sim.mutation_log().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn sweep_executes_once_records_an_audit_and_dry_run_touches_nothing() {
    let env = setup(RULES).await;
    let old = env.add("feat/a", "a1", Duration::minutes(20), "running", &[]);
    let expired = env.add("feat/b", "b0", Duration::days(50), "passed", &[]);
    env.add("feat/b", "b1", Duration::days(40), "passed", &[]);
    env.add("feat/a", "a2", Duration::minutes(2), "running", &[]);
    let (dry, env) = env.run_async(&["sweep", "--dry-run"]).await;
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry));
    assert!(text(&dry).contains("2 dry run"), "{}", text(&dry));
    assert!(env.sim.mutation_log().is_empty());
    let (out, env) = env.run_async(&["sweep"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("2 done"), "{}", text(&out));
    let muts: Vec<String> = env
        .sim
        .mutation_log()
        .iter()
        .map(|e| format!("{} {}", e.method, e.path))
        .collect();
    assert_eq!(muts.len(), 2, "{muts:?}");
    assert!(muts.contains(&format!("PUT /v1/runs/{old}/cancel")));
    assert!(muts.contains(&format!("DELETE /v1/runs/{expired}")));
    let (audit, _env) = env
        .run_async(&["audit", "--format", "json", "--since", "1h"])
        .await;
    assert_eq!(audit.status.code(), Some(0), "{}", text(&audit));
    let entries: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    let outcomes: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "done").count(),
        2,
        "{entries:#}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| **o == "dry_run").count(),
        2,
        "{entries:#}"
    );
}

/// One project the poll cannot list (an id Currents does not know: 404) does not keep
/// the poll from the others: the stuck run of the good project is cancelled. With no
/// project left to list, `sweep` exits 1 and says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_project_that_cannot_be_listed_does_not_stop_the_poll_of_the_others_and_none_is_exit_1() {
    let rules = "[[rules]]\nname = \"stuck\"\nkind = \"timeout\"\nmax_duration = \"45m\"\n";
    let env = setup(rules).await;
    let file = env.dir.path().join("rules.toml");
    let text_now = std::fs::read_to_string(&file).unwrap();
    let both = text_now.replace(
        &format!("projects = [\"{PROJECT}\"]"),
        &format!("projects = [\"ghost\", \"{PROJECT}\"]"),
    );
    assert_ne!(both, text_now);
    std::fs::write(&file, both).unwrap();
    let stuck = env.add("feat/a", "a1", Duration::minutes(60), "running", &[]);
    let (out, env) = env.run_async(&["sweep"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let muts: Vec<String> = env
        .sim
        .mutation_log()
        .iter()
        .map(|e| format!("{} {}", e.method, e.path))
        .collect();
    assert_eq!(muts, [format!("PUT /v1/runs/{stuck}/cancel")]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("cannot poll the project") && log.contains("ghost"),
        "{log}"
    );

    // When no project can be listed, the sweep evaluated nothing: it says why, exit 1.
    let file = env.dir.path().join("rules.toml");
    let text_now = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text_now.replace(&format!("\"ghost\", \"{PROJECT}\""), "\"ghost\""),
    )
    .unwrap();
    let (out, _env) = env.run_async(&["sweep"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("could not evaluate the rules") && err.contains("Project not found"),
        "{err}"
    );
}

/// A cancel the API refuses with 400 (what it documents for a cancel it will not do) for
/// a run that finished in the meantime is done, not failed: the run is read, and it is
/// over.
#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_refused_for_a_run_that_has_finished_meanwhile_is_done() {
    let env = setup(RULES).await;
    let run = env.add("feat/a", "a1", Duration::minutes(20), "failed", &[]);
    queue_cancel(&env, &run).await;
    env.fail_once("PUT", &format!("/v1/runs/{run}/cancel"));
    let (out, env) = env.run_async(&["sweep"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("nothing to cancel: run is COMPLETE"), "{log}");
    let audit = env.run(&["audit", "--format", "json", "--since", "1h"]);
    let entries: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert_eq!(entries[0]["run_id"], run.as_str(), "{entries:#}");
    assert_eq!(entries[0]["outcome"], "done", "{entries:#}");
    // The refused cancel was the only request that could mutate.
    assert_eq!(
        env.sim
            .mutation_log()
            .iter()
            .map(|e| (e.method.clone(), e.status))
            .collect::<Vec<_>>(),
        [("PUT".to_string(), 400)]
    );
}

/// A cancel refused with 400 whose run cannot be read just then (503) is retried, not
/// failed for good: the next attempt finds the run over.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_cancel_whose_run_cannot_be_read_now_is_retried() {
    let env = setup(RULES).await;
    let run = env.add("feat/a", "a1", Duration::minutes(20), "failed", &[]);
    queue_cancel(&env, &run).await;
    env.fail_once("PUT", &format!("/v1/runs/{run}/cancel"));
    env.sim.inject_fault(
        runwarden::simulator::Fault::status(503)
            .on("GET", format!("/v1/runs/{run}"))
            // The client's own attempts at the read, all refused.
            .times(Some(10)),
    );
    let (out, env) = env.run_async(&["sweep"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let audit = env.run(&["audit", "--format", "json", "--since", "1h"]);
    let entries: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert_eq!(entries[0]["outcome"], "done", "{entries:#}");
}

/// Queues a real (not dry-run) cancel of `run`, as `serve` would have decided it.
async fn queue_cancel(env: &Env, run: &str) {
    queue_action(
        env,
        ("cancel-superseded", "supersede", "cancel"),
        run,
        &format!("cancel:{run}"),
    )
    .await;
}

/// Queues a real (not dry-run) action of `(rule, kind, action)` on `run` under
/// `action_key`, decided a minute ago (by `serve`, say) and not carried out yet.
async fn queue_action(
    env: &Env,
    (rule, kind, action): (&str, &str, &str),
    run: &str,
    action_key: &str,
) {
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
            action_key: action_key.into(),
            payload: None,
            skip: None,
        }])
        .await
        .unwrap();
    store.close().await;
}

/// SPEC §6: a dry run mutates nothing anywhere, including actions queued before it
/// (by `serve`, or before `dry_run = true` was set as an emergency stop).
#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_never_carries_out_an_action_queued_before_it() {
    let env = setup(RULES).await;
    let run = env.add("feat/a", "a1", Duration::minutes(20), "running", &[]);
    // A real (not dry-run) cancel that `serve` decided and queued but did not carry out.
    queue_cancel(&env, &run).await;
    let state = |env: &Env| {
        let out = env.run(&["audit", "--format", "json", "--since", "1h"]);
        let entries: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        entries
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["run_id"] == run.as_str())
            .map(|e| e["outcome"].as_str().unwrap().to_string())
            .expect("the queued cancel is in the audit")
    };

    // `sweep --dry-run` neither carries it out nor ends it: it stays queued.
    let (dry, env) = env.run_async(&["sweep", "--dry-run"]).await;
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry));
    assert!(
        env.sim.mutation_log().is_empty(),
        "{:?}",
        env.sim.mutation_log()
    );
    assert_eq!(state(&env), "planned");

    // The emergency stop: `dry_run = true` in the config. The queued cancel of a rule now
    // in dry-run mode ends skipped, with the reason, and nothing reaches Currents.
    let file = env.dir.path().join("rules.toml");
    let text_now = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("dry_run = true\n{text_now}")).unwrap();
    // A summary queued before too (its rule since removed: the global dry_run decides).
    queue_action(
        &env,
        ("pr-summary", "summary", "summarize"),
        &run,
        &format!("summarize:{run}:RUN_FINISH"),
    )
    .await;
    let (out, env) = env.run_async(&["sweep"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        env.sim.mutation_log().is_empty(),
        "{:?}",
        env.sim.mutation_log()
    );
    assert_eq!(state(&env), "skipped");
    let summary_held = String::from_utf8_lossy(&out.stderr).lines().any(|l| {
        serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| {
            v["fields"]["action"] == "summarize"
                && v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("dry_run is on"))
        })
    });
    assert!(summary_held, "{}", String::from_utf8_lossy(&out.stderr));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("action skipped") && log.contains("dry_run is on"),
        "the log says why: {log}"
    );
}

// ---- what a sweep leaves to `serve`, and a report it cannot read ------------------------

/// The action under `key` in `env`'s store.
/// Runs `sql` on the test's store, on a connection of its own (a row or a trigger the
/// bot's own statements would never write).
async fn run_sql(env: &Env, sql: &str) {
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&env.store)
        .await
        .unwrap();
    sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    sqlx::Connection::close(conn).await.unwrap();
}

async fn stored_action(env: &Env, key: &str) -> runwarden::store::ActionRow {
    let store = runwarden::store::Store::connect(&env.store).await.unwrap();
    let a = store.action_by_key(key).await.unwrap().expect("the action");
    store.close().await;
    a
}

/// SPEC §1: `sweep` needs only `CURRENTS_API_KEY`; SPEC §6: an accepted action is
/// carried out at least once. A sweep without GitHub credentials does not claim the
/// summary `serve` queued (nor end it `skipped`, a final state): it stays queued,
/// untouched, for `serve`; the sweep still does the rest of its work, says what it left,
/// and exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_without_github_credentials_leaves_a_queued_summary_to_serve() {
    let rules = format!("{RULES}\n[[rules]]\nname = \"pr-summary\"\nkind = \"summary\"\n");
    let env = setup(&rules).await;
    let finished = env.add("feat/a", "a1", Duration::minutes(20), "failed", &[]);
    let key = format!("summarize:pr-summary:{finished}:RUN_FINISH");
    queue_action(
        &env,
        ("pr-summary", "summary", "summarize"),
        &finished,
        &key,
    )
    .await;
    // A cancel queued beside it is the sweep's to carry out.
    let running = env.add("feat/b", "b1", Duration::minutes(20), "running", &[]);
    queue_cancel(&env, &running).await;
    // `Env::command` removes GITHUB_TOKEN.
    let (out, env) = env.run_async(&["sweep"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let a = stored_action(&env, &key).await;
    assert_eq!(a.state, runwarden::store::ActionState::Pending, "{a:#?}");
    assert_eq!((a.attempts, a.claims), (0, 0), "{a:#?}");
    assert_eq!(a.detail, None, "{a:#?}");
    assert_eq!(
        env.sim.run(&running).unwrap().completion_state.as_str(),
        "CANCELED"
    );
    // The summary of the run it cancelled, which the sweep decided itself, is left for
    // `serve` too (and not waited for).
    let own = stored_action(
        &env,
        &format!("summarize:pr-summary:{running}:RUN_CANCELED"),
    )
    .await;
    assert_eq!(
        own.state,
        runwarden::store::ActionState::Pending,
        "{own:#?}"
    );
    assert_eq!((own.attempts, own.claims), (0, 0), "{own:#?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("left 2 summaries for `serve`"),
        "{}",
        text(&out)
    );
    let audit = env.run(&["audit", "--format", "json", "--since", "1h"]);
    let entries: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    let summary = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "summarize")
        .expect("the summary in the audit");
    assert_eq!(summary["outcome"], "planned", "{entries:#}");
}

/// A sweep run with a rules file of its own, which lacks the summary rule `serve`
/// queued a summary for, leaves that summary queued for `serve` (rather than ending it
/// `skipped` as of a rule that "no longer exists"), even with GitHub credentials.
#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_whose_rules_file_lacks_the_summary_rule_leaves_its_summary_to_serve() {
    let env = setup(RULES).await;
    let file = env.dir.path().join("rules.toml");
    let text_now = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        format!(
            "[github]\napi_url = \"{}\"\n\n{text_now}",
            env.sim.github_url()
        ),
    )
    .unwrap();
    let finished = env.add("feat/a", "a1", Duration::minutes(20), "failed", &[]);
    let key = format!("summarize:pr-summary:{finished}:RUN_FINISH");
    queue_action(
        &env,
        ("pr-summary", "summary", "summarize"),
        &finished,
        &key,
    )
    .await;
    let mut sweep = env.command(&["sweep"]);
    sweep.env("GITHUB_TOKEN", "gh-token");
    let out = tokio::task::spawn_blocking(move || sweep.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let a = stored_action(&env, &key).await;
    assert_eq!(a.state, runwarden::store::ActionState::Pending, "{a:#?}");
    assert_eq!((a.attempts, a.claims), (0, 0), "{a:#?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("left 1 summary for `serve`"),
        "{}",
        text(&out)
    );
}

/// A sweep whose decisions cannot be read back from the store at the end (here its own
/// decision, whose time a trigger puts out of range as it is recorded) does not print an
/// empty report and exit 0 as if nothing had happened: it says so and exits 1.
#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_whose_report_cannot_be_read_from_the_store_exits_1() {
    let env = setup(RULES).await;
    // The sweep decides one cancel.
    env.add("feat/a", "a1", Duration::minutes(20), "running", &[]);
    env.add("feat/a", "a2", Duration::minutes(2), "running", &[]);
    // The store's tables exist once it has been opened.
    runwarden::store::Store::connect(&env.store)
        .await
        .unwrap()
        .close()
        .await;
    if env.store.starts_with("sqlite:") {
        run_sql(
            &env,
            "CREATE TRIGGER spoil_decisions AFTER INSERT ON decisions \
             BEGIN UPDATE decisions SET at = 9223372036854775807 WHERE id = NEW.id; END",
        )
        .await;
    } else {
        run_sql(
            &env,
            "CREATE FUNCTION spoil_decision() RETURNS trigger AS $$ \
             BEGIN NEW.at := 9223372036854775807; RETURN NEW; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER spoil_decisions BEFORE INSERT ON decisions \
             FOR EACH ROW EXECUTE FUNCTION spoil_decision();",
        )
        .await;
    }
    let (out, _env) = env.run_async(&["sweep", "--dry-run"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read the decisions and actions of this sweep from the store"),
        "{err}"
    );
}

/// The same when the sweep's own events cannot be read back at the end (whether the
/// rules were evaluated): exit 1, not a clean sweep. SQLite only (a trigger spoils the
/// row once it is processed).
#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_whose_own_event_cannot_be_read_back_exits_1() {
    let rules = "[[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\n";
    let env = setup(rules).await;
    if !env.store.starts_with("sqlite:") {
        return;
    }
    // The store's tables exist once it has been opened.
    runwarden::store::Store::connect(&env.store)
        .await
        .unwrap()
        .close()
        .await;
    run_sql(
        &env,
        "CREATE TRIGGER spoil_sweep_events AFTER UPDATE OF processed_at ON deliveries \
         WHEN NEW.processed_at IS NOT NULL AND NEW.delivery_id LIKE 'sweep%' \
         BEGIN UPDATE deliveries SET received_at = 9223372036854775807 WHERE id = NEW.id; END",
    )
    .await;
    let (out, _env) = env.run_async(&["sweep"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read whether the rules were evaluated from the store"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_next_sweep_reports_and_retries_a_delete_that_failed_for_good() {
    let rules = "[[rules]]\nname = \"retention\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"30d\"\n";
    let env = setup(rules).await;
    let expired = env.add("feat/b", "b0", Duration::days(50), "passed", &[]);
    // A 400 is final: the first sweep's delete fails for good.
    env.fail_once("DELETE", &format!("/v1/runs/{expired}"));
    let (out, env) = env.run_async(&["sweep"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("1 failed"), "{}", text(&out));
    assert!(env.sim.run(&expired).is_some());
    // The next sweep decides the same delete: the store keeps the first decision, and
    // the sweep still reports it and tries its action again.
    let (out, env) = env.run_async(&["sweep"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("sweep: 1 decision(s): 1 done"),
        "{}",
        text(&out)
    );
    assert!(env.sim.run(&expired).is_none(), "deleted on the retry");
    // A third sweep has nothing left to do.
    let (out, _env) = env.run_async(&["sweep"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("sweep: 0 decision(s)"),
        "{}",
        text(&out)
    );
}

/// A retention rule without `schedule` (SPEC §4 requires only `older_than`) is valid:
/// `check` says it runs on demand, and `sweep --rule` runs it.
#[tokio::test(flavor = "multi_thread")]
async fn a_retention_rule_without_schedule_is_swept_on_demand() {
    let rules = "[[rules]]\nname = \"cleanup\"\nkind = \"retention\"\nolder_than = \"30d\"\n";
    let env = setup(rules).await;
    let expired = env.add("feat/b", "b0", Duration::days(50), "passed", &[]);
    let recent = env.add("feat/b", "b1", Duration::days(2), "passed", &[]);
    let (check, env) = env.run_async(&["check"]).await;
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    assert!(
        text(&check).contains("on demand (no schedule) delete runs older than 30d"),
        "{}",
        text(&check)
    );
    // The circuit breaker as it works: all or nothing, not "at most N".
    assert!(
        text(&check).contains("a sweep that would delete more than 500 deletes none"),
        "{}",
        text(&check)
    );
    assert!(
        text(&check).contains("runwarden sweep --rule cleanup"),
        "{}",
        text(&check)
    );
    let (out, env) = env.run_async(&["sweep", "--rule", "cleanup"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("1 done"), "{}", text(&out));
    assert!(
        env.sim.run(&expired).is_none(),
        "the expired run is deleted"
    );
    assert!(env.sim.run(&recent).is_some(), "the recent run is kept");
}

/// `sweep --rule` of an orphan rule (it acts on GitHub `workflow_run` events only) has
/// nothing to sweep: rather than a silent exit 0 that did nothing, a usage error that
/// says what the rule acts on (as `plan`'s note does), before any request.
#[tokio::test(flavor = "multi_thread")]
async fn sweep_of_an_orphan_rule_is_a_usage_error_that_says_what_it_acts_on() {
    let rules = "[[rules]]\nname = \"orphans\"\nkind = \"orphan\"\n";
    let env = setup(rules).await;
    let (out, env) = env.run_async(&["sweep", "--rule", "orphans"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("runwarden sweep: ")
            && err
                .contains("rule \"orphans\" (orphan) acts on GitHub workflow_run completed events")
            && err.contains("not on a sweep"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "{}", text(&out));
    assert!(env.sim.request_counts().is_empty(), "no request was made");
}

/// Finding: `sweep --rule` of a summary rule did nothing (later: was refused as bad
/// usage), while `POST /api/sweep/{rule}` of one polls and keeps that rule's decisions:
/// the summaries of runs that ended unseen (a `RUN_FINISH` webhook missed). The CLI now
/// does the same. Without GitHub credentials here, the summary is decided and left for
/// `serve`, and the sweep says so.
#[tokio::test(flavor = "multi_thread")]
async fn sweep_of_a_summary_rule_summarises_a_run_that_ended_unseen() {
    let rules = "[[rules]]\nname = \"pr\"\nkind = \"summary\"\n";
    let env = setup(rules).await;
    let id = env.add("feat/a", "a1", Duration::minutes(20), "running", &[]);
    // The first sweep sees the run in progress: nothing to summarise yet.
    let (out, env) = env.run_async(&["sweep", "--rule", "pr"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains("summarize"), "{}", text(&out));
    env.sim
        .advance(
            &id,
            runwarden::simulator::Advance {
                finish: Some(runwarden::simulator::Outcome::Failed),
                ..Default::default()
            },
        )
        .unwrap();
    let (out, _env) = env.run_async(&["sweep", "--rule", "pr"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.lines()
            .any(|l| l.contains("summarize") && l.contains(&id) && l.contains("pr")),
        "{all}"
    );
    assert!(
        all.contains("left 1 summary for `serve`") && all.contains("no GitHub credentials"),
        "{all}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_next_sweep_retries_a_cancel_that_failed_for_good() {
    let rules = "[[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\n";
    let env = setup(rules).await;
    let old = env.add("feat/a", "a1", Duration::minutes(20), "running", &[]);
    env.add("feat/a", "a2", Duration::minutes(2), "running", &[]);
    env.fail_once("PUT", &format!("/v1/runs/{old}/cancel"));
    let (out, env) = env.run_async(&["sweep"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("1 failed"), "{}", text(&out));
    let (out, env) = env.run_async(&["sweep"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("sweep: 1 decision(s): 1 done"),
        "{}",
        text(&out)
    );
    assert_eq!(
        env.sim.run(&old).unwrap().completion_state.as_str(),
        "CANCELED"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sweep_exits_1_when_the_retention_circuit_breaker_trips() {
    let rules = "[[rules]]\nname = \"retention\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"30d\"\nmax_deletions = 2\n";
    let env = setup(rules).await;
    for i in 0..3 {
        env.add(
            "feat/b",
            &format!("s{i}"),
            Duration::days(40 + i),
            "passed",
            &[],
        );
    }
    let (out, env) = env.run_async(&["sweep"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("circuit breaker"), "{}", text(&out));
    assert!(env.sim.mutation_log().is_empty(), "nothing deleted");
    // The audit records the breach as a live rule that did nothing: `skipped`, not a dry
    // run; nothing is left queued.
    let (audit, env) = env
        .run_async(&["audit", "--format", "json", "--since", "1h"])
        .await;
    assert_eq!(audit.status.code(), Some(0), "{}", text(&audit));
    let entries: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    let entries = entries.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0]["outcome"], "skipped", "{entries:#?}");
    assert!(
        entries[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("circuit breaker: this sweep would delete 3 runs > max_deletions 2"),
        "{entries:#?}"
    );
    // A second sweep trips again and still deletes nothing.
    let (out, env) = env.run_async(&["sweep"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(env.sim.mutation_log().is_empty(), "nothing deleted");
}

/// A rule in dry-run mode (its own `dry_run`, or the global one) only records what it
/// decides: `explain` says "(dry run)" on its line, as `plan` does, and not on the
/// line of a live rule.
#[tokio::test(flavor = "multi_thread")]
async fn explain_says_when_a_rule_that_applies_is_in_dry_run() {
    let rules = "[[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\ndry_run = true\n\n[[rules]]\nname = \"stuck\"\nkind = \"timeout\"\nmax_duration = \"10m\"\n";
    let env = setup(rules).await;
    let old = env.add("feat/a", "a1", Duration::minutes(20), "running", &[]);
    env.add("feat/a", "a2", Duration::minutes(2), "running", &[]);
    let (out, env) = env.run_async(&["explain", &old]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout).to_string();
    let line = |rule: &str| {
        t.lines()
            .find(|l| l.contains(rule))
            .unwrap_or_else(|| panic!("{t}"))
            .to_string()
    };
    let dry = line("cancel-superseded");
    assert!(
        dry.starts_with("✔ applies") && dry.ends_with(" (dry run)"),
        "{t}"
    );
    let live = line("stuck");
    assert!(
        live.starts_with("✔ applies") && !live.contains("dry run"),
        "{t}"
    );
    // `plan` says the same of the same rule.
    let (out, _env) = env.run_async(&["plan"]).await;
    let plan = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        plan.lines()
            .any(|l| l.starts_with("cancel-superseded") && l.ends_with(" (dry run)")),
        "{plan}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_says_for_each_rule_whether_it_applies_and_why_not() {
    let env = setup(RULES).await;
    let old = env.add("feat/a", "a1", Duration::minutes(20), "running", &[]);
    env.add("feat/a", "a2", Duration::minutes(2), "running", &[]);
    let young = env.add("feat/c", "c1", Duration::days(2), "passed", &[]);
    env.add("feat/d", "d1", Duration::days(40), "passed", &[]);
    let expired = env.add("feat/d", "d0", Duration::days(50), "passed", &[]);
    let (out, env) = env.run_async(&["explain", &old]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.lines()
            .any(|l| l.contains("applies") && l.contains("cancel-superseded")),
        "{t}"
    );
    assert!(!t.contains("max_deletions counts"), "{t}");
    // A run retention would delete: judged over the whole sweep, which stays under its
    // breaker.
    let (out, env) = env.run_async(&["explain", &expired]).await;
    let t = text(&out);
    assert!(
        t.lines().any(|l| l.contains("applies")
            && l.contains("retention")
            && l.contains("(on schedule \"0 3 * * *\")")),
        "{t}"
    );
    let (out, _env) = env.run_async(&["explain", &young]).await;
    let t = text(&out);
    assert!(
        t.lines()
            .any(|l| l.contains("no") && l.contains("retention") && l.contains("older_than")),
        "{t}"
    );
    assert!(
        t.lines()
            .any(|l| l.contains("no") && l.contains("cancel-superseded")),
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_install_is_idempotent_and_dry_run_changes_nothing() {
    let env = setup(RULES).await;
    let (dry, env) = env
        .run_async(&[
            "webhooks",
            "install",
            "--url",
            "https://bot.example.com/webhooks/currents",
            "--dry-run",
        ])
        .await;
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry));
    assert!(text(&dry).contains("would be created"), "{}", text(&dry));
    assert!(env.sim.list_webhooks(PROJECT).unwrap().is_empty());
    let (first, env) = env
        .run_async(&[
            "webhooks",
            "install",
            "--url",
            "https://bot.example.com/webhooks/currents",
        ])
        .await;
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let hooks = env.sim.list_webhooks(PROJECT).unwrap();
    assert_eq!(hooks.len(), 1);
    let mut events = hooks[0].hook_events.clone();
    events.sort();
    assert_eq!(
        events,
        ["RUN_CANCELED", "RUN_FINISH", "RUN_START", "RUN_TIMEOUT"]
    );
    let headers: serde_json::Value =
        serde_json::from_str(hooks[0].headers.as_deref().unwrap()).unwrap();
    assert_eq!(headers["x-webhook-secret"], "hook-secret");
    let (again, env) = env
        .run_async(&[
            "webhooks",
            "install",
            "--url",
            "https://bot.example.com/webhooks/currents",
        ])
        .await;
    assert!(
        text(&again).contains("already up to date"),
        "{}",
        text(&again)
    );
    assert_eq!(env.sim.list_webhooks(PROJECT).unwrap().len(), 1);
    // Another URL (another deployment's bot) gets its own webhook: the first one is left
    // alone, and named on stderr.
    let (second, env) = env
        .run_async(&[
            "webhooks",
            "install",
            "--url",
            "https://bot2.example.com/webhooks/currents",
        ])
        .await;
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    assert!(text(&second).contains("created"), "{}", text(&second));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another runwarden webhook")
            && stderr.contains("https://bot.example.com/webhooks/currents"),
        "{stderr}"
    );
    let mut urls: Vec<String> = env
        .sim
        .list_webhooks(PROJECT)
        .unwrap()
        .into_iter()
        .map(|h| h.url)
        .collect();
    urls.sort();
    assert_eq!(
        urls,
        [
            "https://bot.example.com/webhooks/currents",
            "https://bot2.example.com/webhooks/currents"
        ]
    );
    // The secret never reaches the output.
    assert!(!text(&first).contains("hook-secret") && !text(&again).contains("hook-secret"));
}

/// `runwarden simulate` builds each webhook's `runUrl` on the configured
/// `currents.dashboard_url`, which the bot checks, and sends the configured header.
#[tokio::test(flavor = "multi_thread")]
async fn simulate_sends_webhooks_with_the_configured_dashboard_url_and_header() {
    use std::io::BufRead;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Option<String>, String)>();
    let hook = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let tx = tx.clone();
            async move {
                let secret = headers
                    .get("x-my-secret")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let _ = tx.send((secret, body));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, hook).await });
    let dir = config_dir(
        "[currents]\nprojects = [\"p\"]\ndashboard_url = \"https://dash.example.test/\"\nwebhook_header = \"x-my-secret\"\n",
    );
    let mut child = bin_in(&dir)
        .args([
            "simulate",
            "--listen",
            "127.0.0.1:0",
            "--webhook-url",
            &hook_url,
        ])
        .env("RUNWARDEN_CURRENTS_WEBHOOK_SECRET", "s3cret")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Read the first line, then keep draining so that the child's output never breaks.
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        let _ = first_tx.send(lines.next().and_then(Result::ok).unwrap_or_default());
        for _ in lines {}
    });
    let first = first_rx.await.unwrap();
    let base = first
        .trim()
        .strip_prefix("runwarden simulator listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    let created: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/_sim/runs"))
        .json(&serde_json::json!({"branch": "feat/hook"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = created["runId"].as_str().unwrap().to_string();
    let received = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            let (secret, body) = rx.recv().await.unwrap();
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            if v["runUrl"].as_str().is_some_and(|u| u.ends_with(&run_id)) {
                return (secret, v);
            }
        }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let (secret, v) = received.expect("no webhook for the new run");
    assert_eq!(
        v["runUrl"].as_str(),
        Some(format!("https://dash.example.test/run/{run_id}").as_str()),
        "{v}"
    );
    assert_eq!(secret.as_deref(), Some("s3cret"));
}

#[test]
fn commands_that_need_the_api_key_say_so_and_exit_2() {
    let dir = config_dir("[currents]\nprojects = [\"p\"]\n");
    let out = bin_in(&dir)
        .arg("plan")
        .env_remove("CURRENTS_API_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("CURRENTS_API_KEY is not set"),
        "{}",
        text(&out)
    );
}

/// Records `n` dry-run decisions of rule `rule` in the env's store, with long reasons (so
/// that `audit` prints far more than a pipe holds).
async fn record_many(env: &Env, rule: &str, n: usize) {
    let store = runwarden::store::Store::connect(&env.store).await.unwrap();
    let decisions: Vec<runwarden::store::NewDecision> = (0..n)
        .map(|i| runwarden::store::NewDecision {
            at: Utc::now() - Duration::seconds(i as i64),
            rule: rule.into(),
            kind: "supersede".into(),
            action: "cancel".into(),
            run_id: format!("run-{i:05}"),
            project_id: PROJECT.into(),
            branch: Some("feat/a".into()),
            sha: Some("a1".into()),
            reason: format!("superseded by a newer run {}", "x".repeat(80)),
            dry_run: true,
            not_before: None,
            action_key: format!("cancel:run-{i:05}"),
            payload: None,
            skip: None,
        })
        .collect();
    store.record_decisions(&decisions).await.unwrap();
    store.close().await;
}

/// `runwarden audit | head -1` and the like: once the reader of stdout has gone, the
/// command stops printing, does not panic, and exits with its usual code.
#[tokio::test(flavor = "multi_thread")]
async fn a_closed_stdout_ends_the_output_without_a_panic() {
    let env = setup(RULES).await;
    // ~600 KiB of JSON and ~250 KiB of table: far more than a pipe buffers.
    record_many(&env, "cancel-superseded", 2000).await;
    let env = tokio::task::spawn_blocking(move || {
        for args in [
            &["audit", "--format", "json"][..],
            &["audit"][..],
            &["audit", "--rule", "cancel-superseded"][..],
        ] {
            let out = env.run_with_closed_stdout(args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
            assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
            assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        }
        env
    })
    .await
    .unwrap();
    // `check` with many rules: its lines, then its summary, all into the closed pipe.
    let many: String = (0..1500)
        .map(|i| format!("[[rules]]\nname = \"sup-{i}\"\nkind = \"supersede\"\n"))
        .collect();
    let config = env.dir.path().join("rules.toml");
    let base = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{base}\n{many}")).unwrap();
    let out = env.run_with_closed_stdout(&["check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // An invalid config still exits 2 with its message on stderr.
    std::fs::write(&config, "[currents]\nprojects = [\"p\"]\nbogus = 1\n").unwrap();
    let out = env.run_with_closed_stdout(&["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!text(&out).contains("panicked"), "{}", text(&out));
}

/// `audit --rule` names a rule of the config, as `plan --rule` and `sweep --rule` do.
#[tokio::test(flavor = "multi_thread")]
async fn audit_of_an_unknown_rule_is_a_usage_error_like_plan() {
    let env = setup(RULES).await;
    let (audit, env) = env.run_async(&["audit", "--rule", "nosuch"]).await;
    let (plan, _env) = env.run_async(&["plan", "--rule", "nosuch"]).await;
    assert_eq!(audit.status.code(), Some(2), "{}", text(&audit));
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan));
    let said = String::from_utf8_lossy(&audit.stderr);
    assert!(said.contains("no rule named \"nosuch\""), "{said}");
    assert!(
        String::from_utf8_lossy(&plan.stderr).contains("no rule named \"nosuch\""),
        "{}",
        text(&plan)
    );
    assert!(audit.stdout.is_empty(), "{}", text(&audit));
}

/// Before anything was recorded there is no store file: `audit` says so and creates none.
#[test]
fn audit_without_a_store_says_so_and_creates_none() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("never.db");
    std::fs::write(
        dir.path().join("rules.toml"),
        format!(
            "[currents]\nprojects = [\"p\"]\n[store]\nurl = \"sqlite://{}\"\n",
            db.display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| bin_in(&dir).args(args).output().unwrap();
    let out = run(&["audit"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("no store at {}: nothing recorded yet\n", db.display())
    );
    let out = run(&["audit", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no store at"),
        "{}",
        text(&out)
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["rules.toml"], "audit created a store");
}

/// `audit` and `sweep` tables start with a header row, as `plan`'s does.
#[tokio::test(flavor = "multi_thread")]
async fn audit_and_sweep_tables_have_a_header_row() {
    let env = setup(RULES).await;
    let old = env.add("feat/a", "a1", Duration::minutes(20), "running", &[]);
    env.add("feat/a", "a2", Duration::minutes(2), "running", &[]);
    let (sweep, env) = env.run_async(&["sweep", "--dry-run"]).await;
    assert_eq!(sweep.status.code(), Some(0), "{}", text(&sweep));
    let stdout = String::from_utf8_lossy(&sweep.stdout).into_owned();
    let lines: Vec<&str> = stdout.lines().collect();
    let head: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        head,
        ["outcome", "rule", "action", "run", "reason"],
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("dry_run") && lines[1].contains(&old),
        "{stdout}"
    );
    let (audit, _env) = env.run_async(&["audit"]).await;
    assert_eq!(audit.status.code(), Some(0), "{}", text(&audit));
    let stdout = String::from_utf8_lossy(&audit.stdout).into_owned();
    let lines: Vec<&str> = stdout.lines().collect();
    let head: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        head,
        [
            "at", "(UTC)", "rule", "kind", "action", "run", "outcome", "reason"
        ],
        "{stdout}"
    );
    assert!(
        lines[1].contains(&old) && lines[1].contains("dry_run"),
        "{stdout}"
    );
    // The columns line up under their headings.
    let col = |line: &str, word: &str| line.find(word).unwrap();
    assert_eq!(col(lines[0], "run"), col(lines[1], &old), "{stdout}");
}

#[test]
fn simulate_with_a_bad_listen_address_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_runwarden"))
        .args(["simulate", "--listen", "0.0.0.0:notaport"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("the port must be a number from 0 to 65535"),
        "{}",
        text(&out)
    );
}

#[test]
fn check_counts_rules_and_projects_in_the_singular() {
    let dir = config_dir(
        "[currents]\nprojects = [\"p\"]\n[[rules]]\nname = \"sup\"\nkind = \"supersede\"\n",
    );
    let out = bin_in(&dir).arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(": ok (1 rule, 1 project)"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_shows_a_tripping_circuit_breaker_and_event_rules_under_its_table() {
    let rules = "[[rules]]\nname = \"retention\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"30d\"\nmax_deletions = 2\n\n[[rules]]\nname = \"pr\"\nkind = \"summary\"\n";
    let env = setup(rules).await;
    for (sha, days) in [("b1", 40), ("b2", 50), ("b3", 60)] {
        env.add("feat/b", sha, Duration::days(days), "passed", &[]);
    }
    let (out, env) = env.run_async(&["plan"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "rule \"retention\": circuit breaker: would delete 3 runs > max_deletions 2, so a sweep would delete none of them and exit 1"
        ),
        "the breaker is part of what plan prints: {stdout}"
    );
    assert!(!stdout.contains("nothing to do"), "{stdout}");
    assert!(
        stdout.contains("note: rule \"pr\" (summary) acts on run events"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("3 runs read, 1 API request, nothing changed"),
        "{stderr}"
    );
    assert!(env.sim.mutation_log().is_empty(), "plan mutates nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_applies_no_rule_to_a_run_of_a_project_not_configured() {
    let env = setup(RULES).await;
    env.sim
        .add_project(NewProject {
            project_id: Some("OtherP".into()),
            repo: Some("acme/other".into()),
            ..Default::default()
        })
        .unwrap();
    let other = |sha: &str, age: Duration| {
        env.sim
            .add_run(NewRun {
                project: Some("OtherP".into()),
                branch: Some("feat/a".into()),
                sha: Some(sha.into()),
                created_at: Some(Utc::now() - age),
                state: Some("running".into()),
                emit: Some(false),
                ..Default::default()
            })
            .unwrap()
            .run_id
    };
    // Superseded on its branch: `supersede` would apply, were the project watched.
    let old = other("o1", Duration::minutes(20));
    other("o2", Duration::minutes(2));
    let (out, env) = env.run_async(&["explain", &old]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = t.lines().skip(1).collect();
    assert_eq!(lines.len(), 2, "one line per rule: {t}");
    for line in lines {
        assert!(
            line.starts_with("✘ no")
                && line.contains("project OtherP is not in [currents] projects (bAYZ4a)"),
            "{t}"
        );
    }
    assert!(env.sim.mutation_log().is_empty());
}

/// `audit --since` longer than the time since the epoch means everything, as
/// `GET /api/actions?since=` does: no panic, and not an empty list.
#[tokio::test(flavor = "multi_thread")]
async fn audit_since_before_the_epoch_shows_everything() {
    let env = setup(RULES).await;
    record_many(&env, "cancel-superseded", 3).await;
    let mut env = env;
    for since in ["24h", "300000y", "1000000000y"] {
        let (out, back) = env
            .run_async(&["audit", "--since", since, "--format", "json"])
            .await;
        env = back;
        assert_eq!(out.status.code(), Some(0), "{since}: {}", text(&out));
        assert!(!text(&out).contains("panicked"), "{since}: {}", text(&out));
        let entries: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            entries.as_array().map(Vec::len),
            Some(3),
            "{since}: {entries}"
        );
    }
    let (out, _env) = env.run_async(&["audit", "--since", "soon"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// A store URL with the password as a query parameter, on a port nothing listens on.
const DOWN_STORE: &str = "postgres://rw@127.0.0.1:9/db?password=hunter2";

/// A store that cannot be reached is the work failing (exit 1), not bad usage; the
/// message names the store without its password, even one given as `?password=`.
#[test]
fn sweep_with_an_unreachable_store_exits_1_without_showing_its_password() {
    let dir = config_dir("[currents]\nprojects = [\"p\"]\n");
    let out = bin_in(&dir)
        .arg("sweep")
        .env("CURRENTS_API_KEY", "sim-key")
        .env("RUNWARDEN__STORE__URL", DOWN_STORE)
        .env_remove("GITHUB_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!text(&out).contains("hunter2"), "{}", text(&out));
    assert!(
        text(&out).contains("cannot open store postgres://127.0.0.1/db"),
        "{}",
        text(&out)
    );
}

/// Missing credentials stay bad usage (exit 2), and are told before the store is
/// opened (here it could not be).
#[test]
fn sweep_without_the_api_key_is_a_usage_error_whatever_the_store() {
    let dir = config_dir("[currents]\nprojects = [\"p\"]\n");
    let out = bin_in(&dir)
        .arg("sweep")
        .env_remove("CURRENTS_API_KEY")
        .env("RUNWARDEN__STORE__URL", DOWN_STORE)
        .env_remove("GITHUB_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("CURRENTS_API_KEY is not set"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("hunter2"), "{}", text(&out));
}

/// SPEC §1, exit 1 when the work failed: a sweep whose own action is not done when it
/// stops waiting (here a summary GitHub's rate limit holds back for an hour, past the
/// sweep's 10-minute deadline; as a long API outage would, its retries spanning 14–29
/// minutes) exits 1, not 0, and says what is left and who carries it out. It does not
/// wait for the deadline to say so.
#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_whose_own_action_is_left_unfinished_exits_1_and_says_what_is_left() {
    let rules = "[[rules]]\nname = \"pr-summary\"\nkind = \"summary\"\n";
    let env = setup(rules).await;
    let file = env.dir.path().join("rules.toml");
    let text_now = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        format!(
            "[github]\napi_url = \"{}\"\nrepos = {{ {PROJECT} = \"acme/web\" }}\n\n{text_now}",
            env.sim.github_url()
        ),
    )
    .unwrap();
    let finished = env.add("feat/a", "a1", Duration::minutes(20), "failed", &[]);
    env.sim
        .add_pr(runwarden::simulator::NewPr {
            repo: "acme/web".into(),
            number: Some(7),
            head_ref: Some("feat/a".into()),
            head_sha: Some("a1".into()),
            ..Default::default()
        })
        .unwrap();
    let key = format!("summarize:pr-summary:{finished}:RUN_FINISH");
    queue_action(
        &env,
        ("pr-summary", "summary", "summarize"),
        &finished,
        &key,
    )
    .await;
    env.sim.inject_fault(
        runwarden::simulator::Fault::new(runwarden::simulator::FaultKind::RateLimit {
            status: 403,
            retry_after: Some(3600),
            reset_after: None,
        })
        .path("/github")
        .always(),
    );
    let mut sweep = tokio::process::Command::from(env.command(&["sweep"]));
    sweep.env("GITHUB_TOKEN", "gh-token").kill_on_drop(true);
    let begun = std::time::Instant::now();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), sweep.output())
        .await
        .expect("the sweep waited for its deadline")
        .unwrap();
    assert!(
        begun.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        begun.elapsed()
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1 action of this sweep not finished")
            && err.contains(&format!("summarize of run {finished}"))
            && err.contains("rate limit")
            && err.contains("`serve` or the next sweep carries it out"),
        "{err}"
    );
    let a = stored_action(&env, &key).await;
    assert_eq!(a.state, runwarden::store::ActionState::Pending, "{a:#?}");
    assert!(
        a.next_attempt_at > Utc::now() + Duration::minutes(50),
        "{a:#?}"
    );
}

/// `sweep` waits for what is due now and for its own work, not for an event or an
/// action another process left waiting for a retry an hour away: it exits at once,
/// leaves them queued and says so.
#[tokio::test(flavor = "multi_thread")]
async fn sweep_leaves_an_event_and_an_action_waiting_for_a_later_retry() {
    let rules = "[[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\n";
    let env = setup(rules).await;
    let run = env.add("feat/a", "a1", Duration::minutes(20), "running", &[]);
    let later = Utc::now() + Duration::hours(1);
    // A cancel `serve` attempted, in backoff until an hour from now.
    queue_cancel(&env, &run).await;
    let store = runwarden::store::Store::connect(&env.store).await.unwrap();
    let claimed = store
        .claim_due_actions(
            Utc::now(),
            10,
            std::time::Duration::from_secs(60),
            "serve-elsewhere",
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(
        store
            .fail_attempt(claimed[0].id, "503 Service Unavailable", later)
            .await
            .unwrap()
    );
    // An event whose processing failed, to be tried again in an hour.
    store
        .insert_delivery(runwarden::store::NewDelivery {
            source: "currents".into(),
            delivery_id: "RUN_FINISH:later".into(),
            event: "RUN_FINISH".into(),
            payload: "{}".into(),
            received_at: Utc::now(),
        })
        .await
        .unwrap();
    let d = store
        .find_delivery("currents", "RUN_FINISH:later")
        .await
        .unwrap()
        .unwrap();
    store
        .mark_delivery_failed(d.id, "store busy", later)
        .await
        .unwrap();
    store.close().await;

    let mut child = tokio::process::Command::from(env.command(&["sweep"]));
    child.kill_on_drop(true);
    let begun = std::time::Instant::now();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.output())
        .await
        .expect("sweep waited for work not due for an hour")
        .unwrap();
    assert!(
        begun.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        begun.elapsed()
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("left for later") && err.contains("1 event") && err.contains("1 action"),
        "{err}"
    );
    assert!(
        env.sim.mutation_log().is_empty(),
        "{:?}",
        env.sim.mutation_log()
    );
    let store = runwarden::store::Store::connect(&env.store).await.unwrap();
    let queued = store.pending_actions().await.unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].next_attempt_at.timestamp(), later.timestamp());
    assert_eq!(store.count_unprocessed().await.unwrap(), 1);
}

/// SPEC §6: `dry_run = true` in the config (the emergency stop) holds for `webhooks
/// install` too: it says what it would create or update, and no POST or PUT reaches
/// Currents.
#[tokio::test(flavor = "multi_thread")]
async fn webhooks_install_under_the_global_dry_run_changes_nothing() {
    let env = setup(RULES).await;
    let file = env.dir.path().join("rules.toml");
    let original = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("dry_run = true\n{original}")).unwrap();
    let url = "https://bot.example.com/webhooks/currents";
    let (out, env) = env.run_async(&["webhooks", "install", "--url", url]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("would be created"), "{}", text(&out));
    assert!(text(&out).contains("dry_run is on"), "{}", text(&out));
    assert!(
        env.sim.mutation_log().is_empty(),
        "{:?}",
        env.sim.mutation_log()
    );
    assert!(env.sim.list_webhooks(PROJECT).unwrap().is_empty());

    // One installed for real, then a new URL under the dry run: not updated.
    std::fs::write(&file, &original).unwrap();
    let (out, env) = env.run_async(&["webhooks", "install", "--url", url]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    env.sim.clear_log();
    std::fs::write(&file, format!("dry_run = true\n{original}")).unwrap();
    let moved = "https://bot2.example.com/webhooks/currents";
    let (out, env) = env
        .run_async(&["webhooks", "install", "--url", moved])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("would be created"), "{}", text(&out));
    assert!(
        env.sim.mutation_log().is_empty(),
        "{:?}",
        env.sim.mutation_log()
    );
    assert_eq!(env.sim.list_webhooks(PROJECT).unwrap()[0].url, url);
}

/// `sweep --dry-run` is a preview: it processes its own events only. An event `serve`
/// stored and has not processed yet (due now) is left in the store for `serve`, not used
/// up by dry-run decisions.
#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_sweep_leaves_the_events_of_others_unprocessed() {
    let rules = "[[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\n";
    let env = setup(rules).await;
    env.add("feat/a", "a1", Duration::minutes(20), "running", &[]);
    let store = runwarden::store::Store::connect(&env.store).await.unwrap();
    store
        .insert_delivery(runwarden::store::NewDelivery {
            source: "currents".into(),
            delivery_id: "RUN_FINISH:serve-has-it".into(),
            event: "RUN_FINISH".into(),
            payload: "{}".into(),
            received_at: Utc::now(),
        })
        .await
        .unwrap();
    store.close().await;
    let out = env.command(&["sweep", "--dry-run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let store = runwarden::store::Store::connect(&env.store).await.unwrap();
    let d = store
        .find_delivery("currents", "RUN_FINISH:serve-has-it")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.processed_at, None, "{d:#?}");
    assert_eq!(d.attempts, 0, "{d:#?}");
    assert!(env.sim.mutation_log().is_empty());
}

/// `sweep --dry-run` previews the summary of a run that ended without its webhook, but
/// leaves the run recorded in progress, so that the next real poll (`serve`, a sweep)
/// still makes the missed event good for real.
#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_sweep_leaves_the_reconciliation_of_an_ended_run_to_the_next_poll() {
    let rules = "[[rules]]\nname = \"stuck\"\nkind = \"timeout\"\nmax_duration = \"2h\"\n\n\
                 [[rules]]\nname = \"sum\"\nkind = \"summary\"\n";
    let env = setup(rules).await;
    let id = env.add("feat/a", "a1", Duration::minutes(20), "running", &[]);
    let out = env.command(&["sweep"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let state = |store: runwarden::store::Store| {
        let id = id.clone();
        async move {
            let s = store.get_run(&id).await.unwrap().unwrap().completion_state;
            store.close().await;
            s
        }
    };
    let store = runwarden::store::Store::connect(&env.store).await.unwrap();
    assert_eq!(state(store).await, "IN_PROGRESS");
    env.sim
        .advance(
            &id,
            runwarden::simulator::Advance {
                finish: Some(runwarden::simulator::Outcome::Passed),
                ..Default::default()
            },
        )
        .unwrap();
    let out = env.command(&["sweep", "--dry-run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("dry_run"),
        "the summary is previewed: {}",
        text(&out)
    );
    let store = runwarden::store::Store::connect(&env.store).await.unwrap();
    assert_eq!(
        state(store).await,
        "IN_PROGRESS",
        "left to the next real poll"
    );
    let out = env.command(&["sweep"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let store = runwarden::store::Store::connect(&env.store).await.unwrap();
    assert_eq!(state(store).await, "COMPLETE");
}

/// The events a `sweep --dry-run` stores are previews whoever processes them: left
/// unprocessed by the dry run (interrupted, say), its retention sweep is decided by the
/// next process on the store (here a sweep of another rule, which processes every
/// pending event) as a dry run, and deletes nothing (SPEC §6).
#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_sweeps_event_stays_a_dry_run_for_whoever_processes_it() {
    let rules = "[[rules]]\nname = \"cleanup\"\nkind = \"retention\"\nolder_than = \"30d\"\n\n\
                 [[rules]]\nname = \"stuck\"\nkind = \"timeout\"\nmax_duration = \"2h\"\n";
    let env = setup(rules).await;
    let expired = env.add("feat/b", "b0", Duration::days(50), "passed", &[]);
    let store = runwarden::store::Store::connect(&env.store).await.unwrap();
    store
        .insert_delivery(runwarden::store::NewDelivery {
            source: "schedule".into(),
            delivery_id: "sweep:cleanup:1:left-by-a-dry-run".into(),
            event: "sweep".into(),
            payload: serde_json::json!({
                "rule": "cleanup",
                "manual": true,
                runwarden::intake::processor::PREVIEW_KEY: true,
            })
            .to_string(),
            received_at: Utc::now(),
        })
        .await
        .unwrap();
    store.close().await;
    let (out, env) = env.run_async(&["sweep", "--rule", "stuck"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(env.sim.run(&expired).is_some(), "nothing deleted");
    assert!(
        env.sim.mutation_log().is_empty(),
        "{:?}",
        env.sim.mutation_log()
    );
    let store = runwarden::store::Store::connect(&env.store).await.unwrap();
    let audit = store.audit(None, Some("cleanup"), 100).await.unwrap();
    assert_eq!(audit.len(), 1, "{audit:#?}");
    assert_eq!(audit[0].outcome.as_str(), "dry_run", "{audit:#?}");
}

/// The Currents API unreachable (connection refused): `sweep` tries its own events a few
/// times (`OWN_EVENT_ATTEMPTS`), then exits 1 with the error, rather than retrying them
/// up to its 10-minute deadline.
#[tokio::test(flavor = "multi_thread")]
async fn sweep_with_an_unreachable_api_exits_1_soon() {
    let rules = "[[rules]]\nname = \"stuck\"\nkind = \"timeout\"\nmax_duration = \"45m\"\n";
    let env = setup(rules).await;
    let file = env.dir.path().join("rules.toml");
    let text_now = std::fs::read_to_string(&file).unwrap();
    let unreachable = text_now.replace(&env.sim.currents_url(), "http://127.0.0.1:1/v1");
    assert_ne!(unreachable, text_now);
    std::fs::write(&file, unreachable).unwrap();
    let begun = std::time::Instant::now();
    let (out, _env) = env.run_async(&["sweep"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        begun.elapsed() < std::time::Duration::from_secs(120),
        "{:?}",
        begun.elapsed()
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("could not evaluate the rules"), "{err}");
}

/// `audit --limit N` prints the newest N entries and says on stderr that more were left
/// out (by default 100,000: a long history is never cut without a word).
#[tokio::test(flavor = "multi_thread")]
async fn audit_says_when_its_limit_leaves_entries_out() {
    let rules = "[[rules]]\nname = \"s\"\nkind = \"supersede\"\n";
    let env = setup(rules).await;
    record_many(&env, "s", 5).await;
    let (out, env) = env
        .run_async(&["audit", "--limit", "3", "--format", "json"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let runs: Vec<&str> = entries
        .iter()
        .map(|e| e["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(runs, ["run-00000", "run-00001", "run-00002"], "the newest");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("more than 3 entries"), "{err}");
    let (out, env) = env.run_async(&["audit", "--limit", "5"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("more than"));
    let (out, _env) = env.run_async(&["audit", "--limit", "0"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// The report of a sweep lists the decisions made since it started, not another
/// process's older decision whose action changed while it ran (`audit --since` shows
/// those): that work is not the sweep's to report, nor to exit 1 for.
#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_reports_only_the_decisions_made_since_it_started() {
    let env = setup(RULES).await;
    // A lone run: no rule of RULES acts on it in this sweep.
    let other = env.add("feat/other", "o1", Duration::minutes(20), "running", &[]);
    let store = runwarden::store::Store::connect(&env.store).await.unwrap();
    store
        .record_decisions(&[runwarden::store::NewDecision {
            at: Utc::now() - Duration::minutes(5),
            rule: "cancel-superseded".into(),
            kind: "supersede".into(),
            action: "cancel".into(),
            run_id: other.clone(),
            project_id: PROJECT.into(),
            branch: Some("feat/other".into()),
            sha: Some("o1".into()),
            reason: "decided by serve before the sweep".into(),
            dry_run: false,
            // Held: not due during the sweep.
            not_before: Some(Utc::now() + Duration::hours(1)),
            action_key: format!("cancel:{other}"),
            payload: None,
            skip: None,
        }])
        .await
        .unwrap();
    store.close().await;
    // Its action changes while the sweep runs (as another process would change it).
    let later = (Utc::now() + Duration::minutes(30)).timestamp_millis();
    run_sql(&env, &format!("UPDATE actions SET updated_at = {later}")).await;
    let (out, _env) = env.run_async(&["sweep"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&other),
        "{}",
        text(&out)
    );
}

/// The report of a sweep lists the decisions it made, not those another process (a
/// `serve` beside a cron'd sweep) recorded while it ran: a failed action of theirs is not
/// the sweep's to report, nor to exit 1 for (RELIABILITY: its own actions only).
#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_does_not_report_a_decision_another_process_made_while_it_ran() {
    use runwarden::simulator::{Fault, FaultKind};
    let env = setup(RULES).await;
    // A lone run: no rule of RULES acts on it in this sweep.
    let other = env.add("feat/other", "o1", Duration::minutes(20), "running", &[]);
    // The sweep's listing is held, so that it is still running while another process
    // decides.
    let slow = env.sim.inject_fault(
        Fault::new(FaultKind::Latency { ms: 2000 })
            .on("GET", format!("/v1/projects/{PROJECT}/runs"))
            .always(),
    );
    let mut child = env
        .command(&["sweep"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !env.sim.faults().iter().any(|f| f.id == slow && f.seen > 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the sweep never listed the runs"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Another process decides now, and its action fails for good.
    let store = runwarden::store::Store::connect(&env.store).await.unwrap();
    let recorded = store
        .record_decisions(&[runwarden::store::NewDecision {
            at: Utc::now(),
            rule: "cancel-superseded".into(),
            kind: "supersede".into(),
            action: "cancel".into(),
            run_id: other.clone(),
            project_id: PROJECT.into(),
            branch: Some("feat/other".into()),
            sha: Some("o1".into()),
            reason: "decided by serve while the sweep ran".into(),
            dry_run: false,
            // Held: never due during the sweep.
            not_before: Some(Utc::now() + Duration::hours(1)),
            action_key: format!("cancel:{other}"),
            payload: None,
            skip: None,
        }])
        .await
        .unwrap();
    let action = recorded[0]
        .action_id
        .expect("a live decision has an action");
    assert!(store.fail_action(action, "refused").await.unwrap());
    store.close().await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "precondition: the sweep is still running"
    );
    env.sim.remove_fault(slow);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&other),
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("sweep: 0 decision(s)"),
        "{}",
        text(&out)
    );
}

// ---------------------------------------------------------------------------------------
// `explain` judges a retention rule as its sweep would: over the sweep's listing of every
// run of the rule's projects, not over the run's branch.

const RETENTION_MAX_3: &str = "[[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\n\n[[rules]]\nname = \"retention\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"30d\"\nmax_deletions = 3\n";

/// Six expired runs on three branches, `max_deletions = 3`: the run's branch alone (two
/// runs) is under the breaker, the sweep is not. `explain` says the sweep deletes none,
/// and why, as `sweep` then does; it mutates nothing.
#[tokio::test(flavor = "multi_thread")]
async fn explain_reports_the_circuit_breaker_of_the_whole_retention_sweep() {
    let env = setup(RETENTION_MAX_3).await;
    let ids: Vec<String> = (0..6)
        .map(|i| {
            env.add(
                &format!("feat/b{}", i % 3),
                &format!("s{i}"),
                Duration::days(40) + Duration::minutes(i),
                "passed",
                &[],
            )
        })
        .collect();
    let (out, env) = env.run_async(&["explain", &ids[0]]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout).to_string();
    let line = t
        .lines()
        .find(|l| l.contains(" retention "))
        .unwrap_or_else(|| panic!("{t}"));
    assert!(line.starts_with("✘ no"), "{t}");
    assert!(
        line.contains(
            "created 40d ago > older_than 30d, but the sweep would delete 6 runs > max_deletions 3, so it deletes none"
        ),
        "{t}"
    );
    // Supersede is explained as before (a finished run is not in progress).
    assert!(
        t.lines()
            .any(|l| l.starts_with("✘ no") && l.contains("cancel-superseded")),
        "{t}"
    );
    assert!(!t.contains("max_deletions counts"), "{t}");
    assert!(env.sim.mutation_log().is_empty(), "explain mutates nothing");
    // The sweep agrees: its breaker trips and nothing is deleted.
    let (out, env) = env.run_async(&["sweep", "--rule", "retention"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("circuit breaker"), "{}", text(&out));
    assert!(env.sim.mutation_log().is_empty(), "nothing deleted");
}

/// A Currents API serving `runs` (`GET /runs/{id}`, one page of `GET
/// /projects/{p}/runs`): for runs the simulator cannot make, such as a run without a
/// branch. Answers the base URL.
async fn mock_currents(runs: Vec<serde_json::Value>) -> String {
    use axum::extract::{Path, State};
    use axum::routing::get;
    let runs = std::sync::Arc::new(runs);
    let app = axum::Router::new()
        .route(
            "/v1/runs/{id}",
            get(
                |State(runs): State<std::sync::Arc<Vec<serde_json::Value>>>,
                 Path(id): Path<String>| async move {
                    match runs.iter().find(|r| r["runId"] == id.as_str()) {
                        Some(r) => (
                            axum::http::StatusCode::OK,
                            axum::Json(serde_json::json!({"status": "OK", "data": r})),
                        ),
                        None => (
                            axum::http::StatusCode::NOT_FOUND,
                            axum::Json(
                                serde_json::json!({"status": "FAILED", "error": "not found"}),
                            ),
                        ),
                    }
                },
            ),
        )
        .route(
            "/v1/projects/{project}/runs",
            get(
                |State(runs): State<std::sync::Arc<Vec<serde_json::Value>>>,
                 Path(project): Path<String>| async move {
                    let data: Vec<_> = runs
                        .iter()
                        .filter(|r| r["projectId"] == project.as_str())
                        .cloned()
                        .collect();
                    axum::Json(serde_json::json!({"status": "OK", "has_more": false, "data": data}))
                },
            ),
        )
        .with_state(runs);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1")
}

/// A run without a branch has keep slots too, shared with the project's other runs
/// without one: the older of two expired such runs is deleted by a `keep_latest = 1`
/// sweep, the newer kept. `explain` lists the project to judge them, not the run alone.
#[tokio::test(flavor = "multi_thread")]
async fn explain_judges_the_keep_slots_of_a_run_without_a_branch_over_the_project() {
    let run = |id: &str, age_days: i64| {
        serde_json::json!({
            "runId": id, "projectId": PROJECT,
            "createdAt": (Utc::now() - Duration::days(age_days)).to_rfc3339(),
            "completionState": "COMPLETE", "status": "PASSED",
            "meta": {"commit": {"sha": format!("sha-{id}")}},
            "cursor": id,
        })
    };
    let api = mock_currents(vec![run("nobranch-new", 40), run("nobranch-old", 50)]).await;
    let dir = config_dir(&format!(
        "[currents]\napi_url = \"{api}\"\nprojects = [\"{PROJECT}\"]\nmax_requests_per_second = 0\n\n[[rules]]\nname = \"retention\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"30d\"\nkeep_latest = 1\n"
    ));
    let explain = |id: &'static str| {
        let mut c = bin_in(&dir);
        c.args(["explain", id]).env("CURRENTS_API_KEY", "key");
        c
    };
    let mut old = explain("nobranch-old");
    let out = tokio::task::spawn_blocking(move || old.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        t.lines().any(|l| l.starts_with("✔ applies")
            && l.contains("retention")
            && l.contains(
                "created 50d ago > older_than 30d; not among the 1 newest on (no branch)"
            )),
        "{t}"
    );
    let mut new = explain("nobranch-new");
    let out = tokio::task::spawn_blocking(move || new.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        t.lines().any(|l| l.starts_with("✘ no")
            && l.contains("retention")
            && l.contains("among the 1 newest on (no branch)")),
        "{t}"
    );
}

// ---- dry run per rule, the emergency stop lifted, and what a sweep carried out --------

/// `(rule, outcome, error)` of each decision about `run` in the last hour's audit.
fn audit_of_run(env: &Env, run: &str) -> Vec<(String, String, String)> {
    let out = env.run(&["audit", "--format", "json", "--since", "1h"]);
    let entries: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["run_id"] == run)
        .map(|e| {
            (
                e["rule"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
                e["error"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The cancel requests (`PUT .../cancel`) of `run` that reached the simulator.
fn cancels_of(env: &Env, run: &str) -> usize {
    env.sim
        .mutation_log()
        .iter()
        .filter(|e| e.method == "PUT" && e.path.contains(run))
        .count()
}

/// SPEC §2 (dry run is per rule) and §6 (several rules deciding the same action: carried
/// out once). `serve` queued a live cancel for `cancel-superseded`; the operator then
/// puts that rule alone in dry run, while `stuck` (live) decides the same cancel: the
/// sweep cancels the run once, for `stuck`, which the action records and its summary
/// credits (`cancel_reason`), and each decision shows it done.
#[tokio::test(flavor = "multi_thread")]
async fn a_rule_in_dry_run_does_not_stop_another_live_rules_cancel_of_the_same_run() {
    let rules = format!(
        "{RULES}\n[[rules]]\nname = \"stuck\"\nkind = \"timeout\"\nmax_duration = \"10m\"\n"
    );
    let env = setup(&rules).await;
    let old = env.add("feat/a", "a1", Duration::minutes(20), "running", &[]);
    let _new = env.add("feat/a", "a2", Duration::minutes(2), "running", &[]);
    queue_cancel(&env, &old).await;
    let file = env.dir.path().join("rules.toml");
    let t = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        t.replace(
            "kind = \"supersede\"\n",
            "kind = \"supersede\"\ndry_run = true\n",
        ),
    )
    .unwrap();
    let (out, env) = env.run_async(&["sweep"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        cancels_of(&env, &old),
        1,
        "the live rule `stuck` decided to cancel {old}: {}; audit: {:?}",
        text(&out),
        audit_of_run(&env, &old)
    );
    assert_eq!(
        env.sim.run(&old).unwrap().completion_state.as_str(),
        "CANCELED"
    );
    let action = stored_action(&env, &format!("cancel:{old}")).await;
    assert_eq!(
        (action.state, action.rule.as_str(), action.kind.as_str()),
        (runwarden::store::ActionState::Done, "stuck", "timeout"),
        "{action:#?}"
    );
    let store = runwarden::store::Store::connect(&env.store).await.unwrap();
    let credit = store.cancel_reason(&old).await.unwrap().expect("credited");
    store.close().await;
    assert_eq!(credit.rule, "stuck", "{credit:?}");
    // The live decisions of both rules show the cancel done; the rule in dry run's
    // decision of this sweep is its dry run.
    let audit = audit_of_run(&env, &old);
    for rule in ["cancel-superseded", "stuck"] {
        assert!(
            audit.iter().any(|(r, o, _)| r == rule && o == "done"),
            "{rule}: {audit:?}"
        );
    }
    assert!(
        audit
            .iter()
            .any(|(r, o, _)| r == "cancel-superseded" && o == "dry_run"),
        "{audit:?}"
    );
}

/// The emergency stop lifted (SPEC §2, §6): a queued cancel that `dry_run = true` held
/// back (ended `skipped`, nothing sent) is not held for good. A sweep while the stop is
/// still on decides the cancel again only as a dry run, which leaves it held; once the
/// stop is lifted the rule decides it again, live (the same decision, deduplicated), and
/// that puts it back in the queue: the sweep cancels the run, once, and a later sweep
/// sends nothing more.
#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_held_back_by_the_emergency_stop_is_carried_out_once_it_is_lifted() {
    let env = setup(RULES).await;
    let old = env.add("feat/a", "a1", Duration::minutes(20), "running", &[]);
    let _new = env.add("feat/a", "a2", Duration::minutes(2), "running", &[]);
    queue_cancel(&env, &old).await;
    let file = env.dir.path().join("rules.toml");
    let live = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("dry_run = true\n{live}")).unwrap();
    let (out, env) = env.run_async(&["sweep"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(cancels_of(&env, &old), 0);
    let held = |env: &Env| {
        audit_of_run(env, &old)
            .into_iter()
            .any(|(_, o, e)| o == "skipped" && e.contains("dry_run is on"))
    };
    assert!(held(&env), "{:?}", audit_of_run(&env, &old));
    // Still stopped: decided again as a dry run only, it stays held.
    let (out, env) = env.run_async(&["sweep"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(cancels_of(&env, &old), 0);
    assert!(held(&env), "{:?}", audit_of_run(&env, &old));

    // Lifted.
    std::fs::write(&file, &live).unwrap();
    let (out, env) = env.run_async(&["sweep"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        cancels_of(&env, &old),
        1,
        "dry run is off, the run is still superseded and in progress: {}; audit: {:?}",
        text(&out),
        audit_of_run(&env, &old)
    );
    assert!(
        text(&out).contains("sweep: 1 decision(s): 1 done"),
        "{}",
        text(&out)
    );
    let action = stored_action(&env, &format!("cancel:{old}")).await;
    assert_eq!(
        (action.state, action.attempts),
        (runwarden::store::ActionState::Done, 1),
        "the holds counted no attempt: {action:#?}"
    );
    // Carried out once.
    let (out, env) = env.run_async(&["sweep"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(cancels_of(&env, &old), 1);
}

/// SPEC §1: exit 1 when an action failed for good. A sweep takes up a cancel queued
/// before it started (by `serve`) and it fails for good (a 400): that is the sweep's
/// work as much as what it decides (and as it would be if left unfinished), so its
/// report lists it, its summary counts it as failed and says it was queued before, and
/// it exits 1.
#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_exits_1_when_a_queued_action_it_carried_out_fails_for_good() {
    let env = setup(RULES).await;
    let run = env.add("feat/a", "a1", Duration::minutes(20), "running", &[]);
    queue_cancel(&env, &run).await;
    env.fail_once("PUT", &format!("/v1/runs/{run}/cancel"));
    let (out, env) = env.run_async(&["sweep"]).await;
    assert_eq!(
        audit_of_run(&env, &run)[0].1,
        "failed",
        "precondition: the action failed for good: {}",
        text(&out)
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("sweep: 1 decision(s): 0 done, 0 dry run, 0 skipped, 1 failed, 0 pending (1 of them made before this sweep, for actions queued before it that it took up)"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("failed") && l.contains(&run)),
        "{stdout}"
    );
    // The same, done: exit 0, and the report still lists it.
    let other = env.add("feat/b", "b1", Duration::minutes(20), "running", &[]);
    queue_cancel(&env, &other).await;
    let (out, _env) = env.run_async(&["sweep"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("sweep: 1 decision(s): 1 done"),
        "{}",
        text(&out)
    );
}
