//! The bodies of the cargo-fuzz targets (issue 8), shared with the stable regression
//! test `tests/fuzz_regressions.rs`, which replays every saved crash input and the seed
//! corpus through the same functions on `cargo test`.
//!
//! Each function takes arbitrary bytes and must never panic; the assertions inside are
//! properties that hold for any input (a panic is a finding). Not part of the product
//! API.
//!
//! - [`webhook`]: GitHub event parsing (every handled type), the `X-Hub-Signature-256`
//!   check, the Currents webhook payload, its run id and `x-timestamp`;
//! - [`config`]: `rules.toml` loading with `RUNWARDEN__*` overrides, then every rule of
//!   what loaded evaluated against sample runs;
//! - [`models`]: the Currents response models and what the bot computes from a run
//!   (counts, progress, the PR summary, a rule of every kind).

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{Config, load_str};
use crate::currents::client::Envelope;
use crate::currents::{
    CancelResult, CurrentsWebhookPayload, DeleteResult, Instance, Project, Run, Webhook,
    run_id_from_url,
};
use crate::github::events::{GithubEvent, parse_event};
use crate::intake::webhooks::{timestamp_ok, verify_github_signature};
use crate::rules::{ProgressSnapshot, RunsView, Trigger, evaluate};
use crate::secret::Secret;

/// The fixed "now" of every evaluation, so that a replay is deterministic.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

const SECRET: &str = "fuzz-webhook-secret";

/// One rule of every kind, as in the repo's documented `rules.toml` (the file itself is
/// not compiled in: the image builds without it).
const RULES_TOML: &str = r#"
[currents]
projects = ["bAYZ4a"]
[github]
repos = { bAYZ4a = "acme/web" }
[[rules]]
name = "cancel-superseded"
kind = "supersede"
spare_if_progress_at_least = 0.9
[rules.match]
branches = ["*", "!main", "!release/*"]
[[rules]]
name = "stuck-runs"
kind = "timeout"
max_duration = "auto"
fallback = "90m"
idle_for = "30m"
[[rules]]
name = "orphaned-runs"
kind = "orphan"
[[rules]]
name = "orphaned-by-commit"
kind = "orphan"
match_by = "commit"
[[rules]]
name = "nightly-retention"
kind = "retention"
schedule = "0 3 * * *"
older_than = "1m"
keep_latest = 1
keep_last_passed = true
pin_tags = ["release*", "keep"]
[[rules]]
name = "pr-summary"
kind = "summary"
events = ["RUN_START", "RUN_FINISH", "RUN_TIMEOUT", "RUN_CANCELED"]
"#;

/// [`RULES_TOML`], loaded once.
static RULES: LazyLock<Config> = LazyLock::new(|| {
    load_str(RULES_TOML, "rules.toml", &[])
        .expect("the built-in rules load")
        .config
});

/// Two in-progress runs on one branch (the older superseded by the newer), for the
/// rules of a fuzzed config to chew on.
static SAMPLE_RUNS: LazyLock<Vec<Run>> = LazyLock::new(|| {
    let run = |id: &str, sha: &str, minutes_ago: i64| {
        serde_json::from_value::<Run>(serde_json::json!({
            "runId": id, "projectId": "bAYZ4a",
            "createdAt": (now() - chrono::Duration::minutes(minutes_ago)).to_rfc3339(),
            "completionState": "IN_PROGRESS", "status": "RUNNING", "tags": ["smoke"],
            "groups": [{"groupId": "g", "instances": {"overall": 4, "claimed": 2, "complete": 1},
                        "tests": {"overall": 10, "passes": 5, "failures": 1}}],
            "meta": {"ciBuildId": "acme/web-1-1",
                     "commit": {"sha": sha, "branch": "feat/x", "remoteOrigin": "https://github.com/acme/web.git",
                                "authorName": "Ada", "authorEmail": "ada@example.com", "message": "m"},
                     "framework": {"type": "pw", "version": "1.50.0"}}
        }))
        .expect("a valid sample run")
    };
    vec![run("old", "a1", 600), run("new", "a2", 1)]
});

/// Splits `data` at the first `\n`: (first line, rest).
fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Webhook parsing. Input: a first line (the `X-Hub-Signature-256` header, and the
/// `x-timestamp` value) then the body, parsed as every GitHub event type and as a
/// Currents payload.
pub fn webhook(data: &[u8]) {
    let (line, body) = split_line(data);
    let header = String::from_utf8_lossy(line);
    let secrets = [Secret::new(""), Secret::new(SECRET)];

    // The signature: an arbitrary header only verifies if it is the right one; the
    // right one always verifies, and never under another body or the empty key alone.
    let good = sign(body);
    if verify_github_signature(&secrets, &header, body) {
        assert!(
            header.starts_with("sha256=")
                && hex::decode(header["sha256=".len()..].trim()).ok()
                    == hex::decode(&good["sha256=".len()..]).ok(),
            "a signature verified that is not the body's: {header:?}"
        );
    }
    assert!(verify_github_signature(&secrets, &good, body));
    assert!(!verify_github_signature(&secrets[..1], &good, body));
    let mut other = body.to_vec();
    other.push(b' ');
    assert!(!verify_github_signature(&secrets, &good, &other));

    // GitHub events: each handled type, and the header line taken as the type.
    for event in [
        "push",
        "pull_request",
        "workflow_run",
        "ping",
        header.as_ref(),
    ] {
        match parse_event(event, body, now()) {
            Ok(GithubEvent::Trigger(trigger)) => {
                // What the rules do with it must not panic either.
                let view = RunsView::runs_only(&SAMPLE_RUNS);
                let _ = evaluate(&RULES, &trigger, &view, now());
            }
            Ok(GithubEvent::Ping | GithubEvent::Ignored(_)) | Err(_) => {}
        }
    }

    // Currents: the payload, its run id, the timestamp header.
    if let Ok(p) = serde_json::from_slice::<CurrentsWebhookPayload>(body) {
        check_run_id(p.run_id());
        let _ = crate::currents::RUN_EVENTS.contains(&p.event.to_ascii_uppercase().as_str());
    }
    check_run_id(run_id_from_url(&header));
    for tolerance in [0, 300_000, i64::MAX] {
        for now_ms in [0, now().timestamp_millis(), i64::MIN, i64::MAX] {
            let _ = timestamp_ok(&header, now_ms, tolerance);
        }
    }
}

fn check_run_id(id: Option<String>) {
    if let Some(id) = id {
        assert!(
            !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric()),
            "run id {id:?}"
        );
    }
}

/// `rules.toml` loading. Input: the TOML text, then optionally a NUL byte and
/// `KEY=VALUE` lines taken as `RUNWARDEN__*` environment overrides. A config that loads
/// is evaluated against sample runs with every trigger.
pub fn config(data: &[u8]) {
    let (toml, env) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let text = String::from_utf8_lossy(toml);
    let env: Vec<(String, String)> = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let loaded = match load_str(&text, "rules.toml", &env) {
        Ok(l) => l,
        Err(e) => {
            // The message is built without panicking (locations inside the text).
            let _ = e.to_string();
            return;
        }
    };
    let config = loaded.config;
    let _ = format!("{config:?}");
    evaluate_all(&config, &SAMPLE_RUNS);
}

/// Every trigger kind (and a retention sweep of every rule) against `runs`.
fn evaluate_all(config: &Config, runs: &[Run]) {
    let mut progress = HashMap::new();
    let mut history = HashMap::new();
    for run in runs {
        progress.insert(
            run.run_id.clone(),
            ProgressSnapshot {
                completed_specs: 1,
                changed_at: now() - chrono::Duration::hours(1),
            },
        );
        history.insert(
            crate::rules::history_key(run),
            vec![Duration::from_secs(60); 12],
        );
    }
    let view = RunsView::new(runs, &progress, &history);
    let mut triggers = vec![Trigger::Tick];
    if let Some(run) = runs.last() {
        for event in [Some("RUN_START"), Some("RUN_FINISH"), None] {
            triggers.push(Trigger::RunSeen {
                run: run.clone(),
                event: event.map(str::to_string),
            });
        }
        let branch = run.branch().unwrap_or("main").to_string();
        let sha = run.sha().unwrap_or("sha").to_string();
        triggers.push(Trigger::Push {
            repo: "acme/web".into(),
            branch: branch.clone(),
            head_sha: format!("{sha}-next"),
            deleted: false,
            pushed_at: now(),
        });
        triggers.push(Trigger::PullRequestClosed {
            repo: "acme/web".into(),
            branch: branch.clone(),
            number: 7,
            closed_at: now(),
        });
        triggers.push(Trigger::WorkflowRunCompleted {
            repo: "acme/web".into(),
            run_id: 1,
            run_attempt: 1,
            head_branch: Some(branch),
            head_sha: sha,
            completed_at: now() - chrono::Duration::hours(1),
            workflow_name: None,
            workflow_path: None,
        });
    }
    for rule in &config.rules {
        triggers.push(Trigger::RetentionSweep {
            rule: rule.name.clone(),
        });
    }
    for trigger in &triggers {
        let _ = evaluate(config, trigger, &view, now());
    }
}

/// Currents response models. Input: a JSON document, read as each model, bare and in
/// the API envelope. A run that reads is exercised (counts, progress, the PR summary,
/// the rules) and must survive a round trip unchanged.
pub fn models(data: &[u8]) {
    let _ = serde_json::from_slice::<Project>(data);
    let _ = serde_json::from_slice::<Envelope<Vec<Project>>>(data);
    let _ = serde_json::from_slice::<CancelResult>(data);
    let _ = serde_json::from_slice::<Envelope<CancelResult>>(data);
    let _ = serde_json::from_slice::<DeleteResult>(data);
    let _ = serde_json::from_slice::<Envelope<DeleteResult>>(data);
    let _ = serde_json::from_slice::<Instance>(data);
    let _ = serde_json::from_slice::<Webhook>(data);
    let _ = serde_json::from_slice::<Envelope<Vec<Webhook>>>(data);
    let mut runs: Vec<Run> = Vec::new();
    if let Ok(run) = serde_json::from_slice::<Run>(data) {
        runs.push(run);
    }
    if let Ok(Envelope {
        data: Some(run), ..
    }) = serde_json::from_slice::<Envelope<Run>>(data)
    {
        runs.push(run);
    }
    if let Ok(Envelope {
        data: Some(page), ..
    }) = serde_json::from_slice::<Envelope<Vec<Run>>>(data)
    {
        runs.extend(page.into_iter().take(8));
    }
    for run in &runs {
        exercise(run);
    }
}

fn exercise(run: &Run) {
    let again: Run = serde_json::from_str(&serde_json::to_string(run).expect("a run serialises"))
        .expect("a serialised run reads back");
    assert_eq!(&again, run, "a run changed in a round trip");
    let _ = (run.test_counts(), run.instance_counts());
    let p = run.progress();
    assert!(p.is_finite() && (0.0..=1.0).contains(&p), "progress {p}");
    let _ = (
        run.branch(),
        run.sha(),
        run.framework(),
        run.is_in_progress(),
    );
    use crate::github::render::{
        PrInfo, RenderInput, Section, SummaryDoc, render_body, status_for,
    };
    let pr = PrInfo {
        number: 1,
        head_sha: "abc".into(),
        head_ref: "feat/x".into(),
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
        let body = render_body(&doc, &input).expect("the default template renders");
        let len = crate::github::render::github_len(&body);
        assert!(len <= 65_536, "summary of {len} characters (UTF-16 units)");
        let _ = SummaryDoc::parse(&body);
    }
    let mut runs = SAMPLE_RUNS.clone();
    runs.push(run.clone());
    evaluate_all(&RULES, &runs);
}
