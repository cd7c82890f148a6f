//! Property-based fuzzing (issue 8): whatever bytes or strings come in, nothing panics.
//!
//! - the webhook endpoints, through the real router (auth, extractors, handlers; a panic
//!   would show as the 500 of `CatchPanicLayer`);
//! - `github::events::parse_event`, on arbitrary bytes and on mutated valid payloads;
//! - `currents::models` deserialisation (runs, webhooks, cancel/delete results), and what
//!   the bot then computes from a run (counts, progress, the rules);
//! - the config loader `load_str`, on arbitrary text and on mutated valid configs;
//! - the small parsers: `run_id_from_url`, `timestamp_ok`, `verify_github_signature`.
//!
//! Mutations start from valid documents and replace values at random paths with values
//! of other types and extreme sizes, which reaches far deeper than random bytes do.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use runwarden::config::{Secrets, load_str};
use runwarden::currents::{
    CancelResult, CurrentsWebhookPayload, DeleteResult, Run, run_id_from_url,
};
use runwarden::github::events::{parse_event, read_event};
use runwarden::intake::webhooks::{timestamp_ok, verify_github_signature};
use runwarden::rules::{ProgressSnapshot, RunsView, Trigger, evaluate};
use runwarden::secret::Secret;
use serde_json::{Value, json};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

// ---------------------------------------------------------------------------------------
// Valid documents and mutations

fn valid_run() -> Value {
    json!({
        "runId": "r1", "projectId": "p1", "createdAt": "2026-03-01T11:00:00Z",
        "completionState": "IN_PROGRESS", "status": "RUNNING", "tags": ["smoke", "nightly"],
        "durationMs": 1000, "cypressVersion": "13.0.0",
        "timeout": {"isTimeout": false},
        "cancellation": {"actor": "api:x", "canceledAt": "2026-03-01T11:30:00Z", "reason": "apiRequest"},
        "groups": [
            {"groupId": "g1", "instances": {"overall": 10, "claimed": 4, "complete": 2, "passes": 2, "failures": 0},
             "tests": {"overall": 100, "passes": 90, "failures": 5, "pending": 1, "skipped": 2, "retries": 1, "flaky": 1}},
            {"groupId": "g2", "instances": {"overall": 5, "claimed": 5, "complete": 5},
             "tests": {"overall": 50, "passes": 50}}
        ],
        "meta": {
            "ciBuildId": "acme/web-1-1",
            "commit": {"sha": "abc", "branch": "feat/x", "remoteOrigin": "https://github.com/acme/web.git",
                       "authorName": "Ada", "authorEmail": "ada@example.com", "message": "m"},
            "framework": {"type": "pw", "version": "1.50.0"},
            "pr": {"id": "7", "title": "t"}
        },
        "specs": [{"spec": "a.spec.ts", "groupId": "g1", "results": {"stats": {"tests": 3, "failures": 1}}}],
        "previousRunId": "r0", "cursor": "c1"
    })
}

fn valid_currents_hook() -> Value {
    json!({
        "event": "RUN_FINISH", "runUrl": "https://app.currents.dev/run/abc123", "buildId": "b",
        "groupId": "g1", "tags": ["t"], "commit": {"sha": "abc", "branch": "main"},
        "overall": 1, "passes": 1, "failures": 0, "pending": 0, "skipped": 0, "retries": 0, "flaky": 0
    })
}

fn valid_github(event: &str) -> Value {
    match event {
        "push" => json!({
            "ref": "refs/heads/feat/x", "before": "a", "after": "b", "deleted": false,
            "repository": {"full_name": "acme/web"},
            "head_commit": {"timestamp": "2026-03-01T11:00:00+01:00"}
        }),
        "pull_request" => json!({
            "action": "closed", "number": 7,
            "pull_request": {"head": {"ref": "feat/x", "sha": "abc", "repo": {"full_name": "acme/web"}},
                             "closed_at": "2026-03-01T11:00:00Z"},
            "repository": {"full_name": "acme/web"}
        }),
        "workflow_run" => json!({
            "action": "completed",
            "workflow_run": {"id": 9, "run_attempt": 2, "head_branch": "feat/x", "head_sha": "abc",
                             "updated_at": "2026-03-01T11:00:00Z"},
            "repository": {"full_name": "acme/web"}
        }),
        _ => json!({"zen": "z", "hook_id": 1}),
    }
}

/// A value of any JSON type, with extremes.
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        Just(json!(1e308)),
        ".{0,40}".prop_map(Value::String),
        Just(json!("")),
        Just(json!("2026-13-45T99:99:99Z")),
        Just(json!("in_progress")),
        Just(json!("refs/heads/")),
        Just(json!("\u{0}\u{202e}\u{1F600}")),
        Just(json!([])),
        Just(json!({})),
    ]
}

/// A JSON value of any shape (bounded depth).
fn any_json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::hash_map("[a-zA-Z_]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One mutation: walk down `path` (indices into the children at each level) and
/// replace, delete or duplicate what is there.
#[derive(Debug, Clone)]
enum Op {
    Replace(Vec<usize>, Value),
    Remove(Vec<usize>),
    Grow(Vec<usize>, usize),
}

fn op() -> impl Strategy<Value = Op> {
    let path = prop::collection::vec(any::<usize>(), 0..5);
    prop_oneof![
        (path.clone(), any_json()).prop_map(|(p, v)| Op::Replace(p, v)),
        path.clone().prop_map(Op::Remove),
        (path, 1usize..50).prop_map(|(p, n)| Op::Grow(p, n)),
    ]
}

fn apply(doc: &mut Value, op: &Op) {
    let (path, last) = match op {
        Op::Replace(p, _) | Op::Remove(p) | Op::Grow(p, _) => (p, p.len()),
    };
    if let Op::Replace(_, v) = op
        && path.is_empty()
    {
        *doc = v.clone();
        return;
    }
    let mut cur = doc;
    for (depth, i) in path.iter().enumerate() {
        let is_last = depth + 1 == last;
        let n = match cur {
            Value::Array(a) => a.len(),
            Value::Object(o) => o.len(),
            _ => 0,
        };
        if n == 0 {
            break;
        }
        let k = i % n;
        if is_last {
            match (cur, op) {
                (Value::Array(a), Op::Replace(_, v)) => a[k] = v.clone(),
                (Value::Array(a), Op::Remove(_)) => {
                    a.remove(k);
                }
                (Value::Array(a), Op::Grow(_, times)) => {
                    let item = a[k].clone();
                    a.extend(std::iter::repeat_n(item, *times));
                }
                (Value::Object(o), Op::Replace(_, v)) => {
                    let key = o.keys().nth(k).unwrap().clone();
                    o.insert(key, v.clone());
                }
                (Value::Object(o), Op::Remove(_)) => {
                    let key = o.keys().nth(k).unwrap().clone();
                    o.remove(&key);
                }
                (Value::Object(o), Op::Grow(_, times)) => {
                    let (key, item) = o
                        .iter()
                        .nth(k)
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .unwrap();
                    o.insert(key, Value::Array(vec![item; *times]));
                }
                _ => {}
            }
            return;
        }
        cur = match cur {
            Value::Array(a) => &mut a[k],
            Value::Object(o) => o.values_mut().nth(k).unwrap(),
            _ => unreachable!(),
        };
    }
}

fn mutated(base: Value) -> impl Strategy<Value = Value> {
    prop::collection::vec(op(), 0..6).prop_map(move |ops| {
        let mut d = base.clone();
        for o in &ops {
            apply(&mut d, o);
        }
        d
    })
}

// ---------------------------------------------------------------------------------------
// What the bot does with a deserialised run

const RULES: &str = r#"
[currents]
projects = ["p1"]

[[rules]]
name = "supersede"
kind = "supersede"
group_by = ["tags", "framework"]
spare_if_progress_at_least = 0.5

[[rules]]
name = "stuck"
kind = "timeout"
max_duration = "auto"
idle_for = "10m"

[[rules]]
name = "orphans"
kind = "orphan"

[[rules]]
name = "retention"
kind = "retention"
schedule = "0 3 * * *"
older_than = "1d"
keep_last_passed = true

[[rules]]
name = "summary"
kind = "summary"
events = ["RUN_START", "RUN_FINISH"]
"#;

/// The same kinds with extreme durations and factors (each duration at the most the
/// loader accepts).
const EXTREME_RULES: &str = r#"
[currents]
projects = ["p1"]

[[rules]]
name = "supersede"
kind = "supersede"
spare_if_progress_at_least = 1.0

[[rules]]
name = "stuck"
kind = "timeout"
max_duration = "365d"
idle_for = "1ns"

[[rules]]
name = "stuck-auto"
kind = "timeout"
max_duration = "auto"
auto_factor = 1e300
fallback = "365d"

[[rules]]
name = "orphans"
kind = "orphan"
grace = "7d"

[[rules]]
name = "retention"
kind = "retention"
schedule = "0 0 0 1 1 * "
older_than = "36500d"
keep_latest = 4294967295
"#;

fn exercise(run: &Run) {
    let _ = run.test_counts();
    let _ = run.instance_counts();
    let p = run.progress();
    assert!(p.is_nan() || (0.0..=1.0).contains(&p) || p < 0.0, "{p}");
    let _ = (
        run.branch(),
        run.sha(),
        run.framework(),
        run.is_in_progress(),
    );
    // The PR summary of the run: section, commit status, the whole comment and its state.
    use runwarden::github::render::{
        PrInfo, RenderInput, Section, SummaryDoc, render_body, status_for,
    };
    for event in ["RUN_START", "RUN_FINISH", "RUN_TIMEOUT", "RUN_CANCELED"] {
        let section = Section::from_run(
            run,
            event,
            Some(("rule", "reason")),
            "https://app.currents.dev",
            10,
        );
        let (_, description) = status_for(&section);
        assert!(description.chars().count() <= 140, "{description}");
        let pr = PrInfo {
            number: 1,
            head_sha: "abc".into(),
            head_ref: "feat/x".into(),
        };
        let input = RenderInput {
            pr: &pr,
            current_key: &section.key,
            dashboard_url: "https://app.currents.dev",
            template: None,
            limit: 65_536,
        };
        let doc = SummaryDoc {
            sections: vec![section.clone()],
        };
        let body = render_body(&doc, &input).unwrap();
        assert!(runwarden::github::render::github_len(&body) <= 65_536);
        let _ = SummaryDoc::parse(&body);
    }
    for rules in [RULES, EXTREME_RULES] {
        let config = match load_str(rules, "rules.toml", &[]) {
            Ok(l) => l.config,
            Err(e) => panic!("{e}"),
        };
        evaluate_all(&config, run);
    }
}

fn evaluate_all(config: &runwarden::config::Config, run: &Run) {
    let other = {
        let mut o = run.clone();
        o.run_id = format!("{}-other", run.run_id);
        o
    };
    let runs = vec![other, run.clone()];
    let mut progress = HashMap::new();
    progress.insert(
        run.run_id.clone(),
        ProgressSnapshot {
            completed_specs: 1,
            changed_at: now() - chrono::Duration::hours(1),
        },
    );
    let mut history = HashMap::new();
    history.insert(
        runwarden::rules::history_key(run),
        vec![Duration::from_secs(60); 12],
    );
    let view = RunsView::new(&runs, &progress, &history);
    for trigger in [
        Trigger::RunSeen {
            run: run.clone(),
            event: Some("RUN_FINISH".into()),
        },
        Trigger::RunSeen {
            run: run.clone(),
            event: None,
        },
        Trigger::Tick,
        Trigger::RetentionSweep {
            rule: "retention".into(),
        },
    ] {
        let _ = evaluate(config, &trigger, &view, now());
    }
}

// ---------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn github_events_parse_arbitrary_bytes(event in prop_oneof![Just("push".to_string()), Just("ping".to_string()), Just("workflow_run".to_string()), ".{0,12}"], body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_event(&event, &body, now());
    }

    #[test]
    fn github_events_parse_mutated_payloads(
        (event, doc) in prop_oneof![Just("push"), Just("pull_request"), Just("workflow_run"), Just("ping")]
            .prop_flat_map(|e| (Just(e), mutated(valid_github(e))))
    ) {
        let body = serde_json::to_vec(&doc).unwrap();
        let _ = parse_event(event, &body, now());
    }

    /// What the store keeps of a payload reads to the same event as the whole payload.
    #[test]
    fn github_payloads_kept_read_as_the_whole(
        (event, doc) in prop_oneof![Just("push"), Just("pull_request"), Just("workflow_run")]
            .prop_flat_map(|e| (Just(e), mutated(valid_github(e))))
    ) {
        let body = serde_json::to_vec(&doc).unwrap();
        if let Ok(read) = read_event(event, &body, now()) {
            prop_assert_eq!(&read.event, &parse_event(event, &body, now()).unwrap());
            prop_assert_eq!(parse_event(event, read.kept.as_bytes(), now()), Ok(read.event));
        }
    }

    #[test]
    fn currents_models_deserialise_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = serde_json::from_slice::<Run>(&body);
        let _ = serde_json::from_slice::<CurrentsWebhookPayload>(&body);
        let _ = serde_json::from_slice::<CancelResult>(&body);
        let _ = serde_json::from_slice::<DeleteResult>(&body);
    }

    #[test]
    fn mutated_runs_deserialise_or_fail_and_what_is_computed_from_them_never_panics(doc in mutated(valid_run())) {
        if let Ok(run) = serde_json::from_value::<Run>(doc.clone()) {
            exercise(&run);
            // And back: what is stored is what was read.
            let again: Run = serde_json::from_str(&serde_json::to_string(&run).unwrap()).unwrap();
            prop_assert_eq!(again, run);
        }
    }

    #[test]
    fn runs_with_arbitrary_counters_never_panic(groups in prop::collection::vec((any::<[u64; 5]>(), any::<[u64; 7]>()), 0..4), specs in prop::collection::vec(any::<[u64; 6]>(), 0..3)) {
        let mut doc = valid_run();
        doc["groups"] = Value::Array(groups.iter().map(|(i, t)| json!({
            "groupId": "g",
            "instances": {"overall": i[0], "claimed": i[1], "complete": i[2], "passes": i[3], "failures": i[4]},
            "tests": {"overall": t[0], "passes": t[1], "failures": t[2], "pending": t[3], "skipped": t[4], "retries": t[5], "flaky": t[6]},
        })).collect());
        doc["specs"] = Value::Array(specs.iter().map(|s| json!({
            "spec": "a.spec.ts", "groupId": "g",
            "results": {"stats": {"tests": s[0], "passes": s[1], "pending": s[2], "skipped": s[3], "failures": s[4], "flaky": s[5]}},
        })).collect());
        doc["durationMs"] = json!(groups.first().map_or(0, |g| g.0[0]));
        let run: Run = serde_json::from_value(doc).unwrap();
        exercise(&run);
    }

    #[test]
    fn mutated_currents_webhooks_deserialise_or_fail(doc in mutated(valid_currents_hook())) {
        if let Ok(p) = serde_json::from_value::<CurrentsWebhookPayload>(doc) {
            let _ = p.run_id();
        }
    }

    #[test]
    fn summary_comment_bodies_edited_by_anyone_parse_or_are_rewritten(text in ".{0,300}", json in any_json()) {
        use runwarden::github::render::SummaryDoc;
        let _ = SummaryDoc::parse(&text);
        let _ = SummaryDoc::parse(&format!("x <!-- runwarden:state {json} --> y"));
        let _ = SummaryDoc::parse(&format!("<!-- runwarden:state {text}"));
    }

    #[test]
    fn run_ids_from_arbitrary_urls(url in ".{0,80}", tail in "[a-zA-Z0-9%./?#@:-]{0,40}") {
        for u in [url.clone(), format!("https://app.currents.dev/run/{tail}"), format!("https://app.currents.dev/{tail}/run/{url}")] {
            if let Some(id) = run_id_from_url(&u) {
                prop_assert!(!id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric()), "{id:?}");
            }
        }
    }

    #[test]
    fn timestamps_never_panic(raw in ".{0,30}", now_ms in any::<i64>(), tol in any::<i64>()) {
        let _ = timestamp_ok(&raw, now_ms, tol);
        let _ = timestamp_ok(&raw, now_ms, tol.saturating_abs());
    }

    #[test]
    fn signatures_never_panic(header in ".{0,80}", body in prop::collection::vec(any::<u8>(), 0..128), secret in ".{0,20}") {
        let ok = verify_github_signature(&[Secret::new(secret)], &header, &body);
        // Random input never verifies by chance.
        prop_assert!(!ok || header.starts_with("sha256="));
    }

    #[test]
    fn config_load_str_never_panics_on_arbitrary_text(text in ".{0,400}") {
        let _ = load_str(&text, "rules.toml", &[]);
    }

    #[test]
    fn config_load_str_never_panics_on_mutated_configs(
        lines in prop::collection::vec((any::<prop::sample::Index>(), prop_oneof![
            Just(String::new()),
            "[a-z_]{1,20} = \"[^\"\\n]{0,20}\"",
            "[a-z_]{1,20} = -?[0-9]{1,25}",
            "[a-z_]{1,20} = \\[\"[^\"\\n]{0,10}\"\\]",
            Just("[[rules]]".to_string()),
            Just("[rules.match]".to_string()),
            Just("max_duration = \"99999999999999d\"".to_string()),
            Just("schedule = \"* * * * * * *\"".to_string()),
            Just("spare_if_progress_at_least = 1e309".to_string()),
            Just("branches = [\"[\", \"!**\"]".to_string()),
            Just("message = \"(\"".to_string()),
        ]), 0..8),
        env in prop::collection::vec(("RUNWARDEN__[A-Z_]{1,20}(__[A-Z_]{1,12})?", ".{0,20}"), 0..3),
    ) {
        let base = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/rules.toml")).unwrap();
        let mut v: Vec<String> = base.lines().map(str::to_string).collect();
        for (at, line) in lines {
            let i = at.index(v.len() + 1);
            if line.is_empty() && i < v.len() {
                v.remove(i);
            } else {
                v.insert(i, line);
            }
        }
        let text = v.join("\n");
        let _ = load_str(&text, "rules.toml", &[]);
        let _ = load_str(&text, "rules.toml", &env);
    }
}

// ---------------------------------------------------------------------------------------
// The webhook endpoints, through the router

struct Router {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
    ctx: Arc<runwarden::server::AppContext>,
}

fn router() -> &'static Router {
    static R: std::sync::OnceLock<Router> = std::sync::OnceLock::new();
    R.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let ctx = rt.block_on(async {
            // The Currents API is never reached by the handlers; a closed port makes sure.
            let text = "[currents]\napi_url = \"http://127.0.0.1:9/v1\"\nprojects = [\"p1\"]\npoll_interval = \"0s\"\n\n[store]\nurl = \"sqlite::memory:\"\n";
            let config = load_str(text, "rules.toml", &[]).unwrap().config;
            let secrets = Secrets {
                currents_api_key: Some(Secret::new("k")),
                currents_webhook_secrets: vec![Secret::new("cs")],
                github_webhook_secrets: vec![Secret::new("gs")],
                ..Secrets::default()
            };
            runwarden::commands::serve::build_context(config, secrets).await.unwrap()
        });
        let app = runwarden::server::router(ctx.clone());
        Router { rt, app, ctx }
    })
}

fn sign(body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"gs").unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        Just(b"cs".to_vec()),
        Just(b"push".to_vec()),
        Just(b"ping".to_vec()),
        Just(b"application/json".to_vec()),
        "[0-9]{0,20}".prop_map(String::into_bytes),
    ]
}

fn call(path: &'static str, headers: Vec<(&'static str, Vec<u8>)>, body: Vec<u8>) -> u16 {
    use tower::ServiceExt as _;
    let r = router();
    let mut req = http::Request::builder().method("POST").uri(path);
    for (k, v) in headers {
        if let Ok(v) = http::HeaderValue::from_bytes(&v) {
            req = req.header(k, v);
        }
    }
    let req = req.body(axum::body::Body::from(body)).unwrap();
    let resp = r.rt.block_on(r.app.clone().oneshot(req)).unwrap();
    resp.status().as_u16()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_currents_endpoint_answers_every_request_with_a_spec_status(
        secret in header_value(), ts in header_value(), ct in header_value(),
        body in prop_oneof![prop::collection::vec(any::<u8>(), 0..256), mutated(valid_currents_hook()).prop_map(|v| serde_json::to_vec(&v).unwrap())],
    ) {
        let status = call("/webhooks/currents", vec![("x-webhook-secret", secret), ("x-timestamp", ts), ("content-type", ct)], body);
        prop_assert!([200, 202, 400, 401, 413, 503].contains(&status), "{status}");
    }

    #[test]
    fn the_github_endpoint_answers_every_request_with_a_spec_status(
        event in header_value(), delivery in header_value(), ct in header_value(), signed in any::<bool>(),
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            prop_oneof![Just("push"), Just("pull_request"), Just("workflow_run"), Just("ping")]
                .prop_flat_map(|e| mutated(valid_github(e))).prop_map(|v| serde_json::to_vec(&v).unwrap()),
        ],
    ) {
        let sig = if signed { sign(&body).into_bytes() } else { b"sha256=00".to_vec() };
        let status = call("/webhooks/github", vec![("x-github-event", event), ("x-github-delivery", delivery), ("content-type", ct), ("x-hub-signature-256", sig)], body);
        prop_assert!([200, 202, 400, 401, 413, 503].contains(&status), "{status}");
    }
}

#[test]
fn the_router_survives_the_fuzzing() {
    // Runs after (or between) the properties above in the same process: still healthy.
    use tower::ServiceExt as _;
    let r = router();
    let req = http::Request::builder()
        .uri("/healthz")
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = r.rt.block_on(r.app.clone().oneshot(req)).unwrap();
    assert_eq!(resp.status(), 200);
    assert!(r.rt.block_on(r.ctx.store.ping()).is_ok());
}

#[test]
fn the_valid_documents_the_mutations_start_from_are_valid() {
    let run: Run = serde_json::from_value(valid_run()).unwrap();
    exercise(&run);
    let hook: CurrentsWebhookPayload = serde_json::from_value(valid_currents_hook()).unwrap();
    assert_eq!(hook.run_id().as_deref(), Some("abc123"));
    for e in ["push", "pull_request", "workflow_run", "ping"] {
        let body = serde_json::to_vec(&valid_github(e)).unwrap();
        let ev = parse_event(e, &body, now()).unwrap();
        assert!(
            !matches!(ev, runwarden::github::events::GithubEvent::Ignored(_)),
            "{e}: {ev:?}"
        );
    }
}

#[test]
fn extreme_counters_from_the_api_do_not_overflow() {
    // Two groups whose counters are u64::MAX: sums saturate instead of overflowing.
    let mut doc = valid_run();
    let max = json!(u64::MAX);
    for g in doc["groups"].as_array_mut().unwrap() {
        for (k, part) in [
            (
                "instances",
                &["overall", "claimed", "complete", "passes", "failures"][..],
            ),
            (
                "tests",
                &[
                    "overall", "passes", "failures", "pending", "skipped", "retries", "flaky",
                ][..],
            ),
        ] {
            for f in part {
                g[k][*f] = max.clone();
            }
        }
    }
    let run: Run = serde_json::from_value(doc).unwrap();
    exercise(&run);
    assert_eq!(run.test_counts().overall, u64::MAX);
    assert_eq!(run.instance_counts().complete, u64::MAX);
    assert!((0.0..=1.0).contains(&run.progress()));
}
