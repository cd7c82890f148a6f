//! Secrets (issue 8, SPEC §2): distinctive secret values never appear in logs (the
//! child's stderr and stdout at `RUST_LOG=trace` — every target, dependencies included
//! — text and JSON), in `Debug` output of
//! the config, the secrets or the clients, in error messages, in `/metrics`, `/api/*` or
//! the status page, or in the output of `check`, `plan`, `sweep` and `audit` — even when
//! the APIs echo them back in error bodies, and even for a failed action.

#[path = "support/child.rs"]
mod child;

use std::time::Duration;

use child::*;
use hmac::{Hmac, Mac};
use runwarden::simulator::{Fault, FaultKind, NewPr};
use runwarden::store::ActionState;
use sha2::Sha256;

const API_KEY: &str = "ck_SECRETcurrentsapikey9d1f7";
const CURRENTS_HOOK: &str = "whsec_SECRETcurrentshook7a2b";
const GITHUB_HOOK: &str = "ghwh_SECRETgithubhook3c4d";
const GITHUB_HOOK_OLD: &str = "ghwh_SECRETgithubold5e6f";
const ADMIN: &str = "adm_SECRETadmintoken8a9b";
const GITHUB_TOKEN: &str = "ghp_SECRETgithubtoken0c1d";
/// What a caller sent as a secret: not a secret of ours, but echoing it would leak
/// near-misses and typos of real secrets.
const WRONG: &str = "wrong_SECRETguess2e3f";
const DB_PASSWORD: &str = "pw_SECRETdatabase4g5h";

const ALL: [&str; 8] = [
    API_KEY,
    CURRENTS_HOOK,
    GITHUB_HOOK,
    GITHUB_HOOK_OLD,
    ADMIN,
    GITHUB_TOKEN,
    WRONG,
    DB_PASSWORD,
];

const RULES: &str = "[[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\n[rules.match]\nbranches = [\"*\", \"!main\"]\n\n[[rules]]\nname = \"pr-summary\"\nkind = \"summary\"\ncommit_status = true\n[rules.match]\nbranches = [\"feat/pr\"]\n";

fn env(rust_log: &str) -> Env {
    Env {
        currents_api_key: API_KEY.into(),
        currents_webhook_secret: CURRENTS_HOOK.into(),
        github_webhook_secret: format!("{GITHUB_HOOK_OLD},{GITHUB_HOOK}"),
        admin_token: ADMIN.into(),
        github_token: GITHUB_TOKEN.into(),
        rust_log: rust_log.into(),
    }
}

/// Panics naming `what` if `text` contains any secret (or the signatures sent).
fn assert_clean(what: &str, text: &str, extra: &[String]) {
    for s in ALL.iter().copied().chain(extra.iter().map(String::as_str)) {
        assert!(
            !text.contains(s),
            "{what} contains the secret {s:?}:\n{text}"
        );
    }
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn status_fault(method: &str, path: &str, status: u16, body: String) -> Fault {
    Fault::new(FaultKind::Status {
        status,
        body: Some(body),
        retry_after: None,
    })
    .on(method, path)
    .always()
}

/// Drives a bot through everything that touches a secret; returns the signatures it
/// sent (they must not be logged either).
async fn exercise(w: &World, bot: &ChildBot, tag: &str) -> Vec<String> {
    let mut sent = Vec::new();
    // A cancel that works, and one whose API answer echoes the key (it fails for good).
    let ok_old = w
        .sim
        .add_run(run(&format!("feat/ok-{tag}"), "a1", 10))
        .unwrap()
        .run_id;
    let ok_new = w
        .sim
        .add_run(run(&format!("feat/ok-{tag}"), "a2", 1))
        .unwrap()
        .run_id;
    let bad_old = w
        .sim
        .add_run(run(&format!("feat/bad-{tag}"), "b1", 10))
        .unwrap()
        .run_id;
    let bad_new = w
        .sim
        .add_run(run(&format!("feat/bad-{tag}"), "b2", 1))
        .unwrap()
        .run_id;
    w.sim.inject_fault(status_fault(
        "PUT",
        &format!("/v1/runs/{bad_old}/cancel"),
        401,
        format!("{{\"status\":\"FAILED\",\"error\":\"Invalid API key Bearer {API_KEY} (got {API_KEY})\"}}"),
    ));
    // A PR summary through GitHub, whose first answer echoes the token.
    let sha = format!("prsha-{tag}");
    // Finished, as the RUN_FINISH below says (the bot reads the run back and waits for
    // the API to show an end before it summarises).
    let mut finished = run("feat/pr", &sha, 3);
    finished.state = Some("failed".into());
    let pr_run = w.sim.add_run(finished).unwrap().run_id;
    w.sim
        .add_pr(NewPr {
            repo: REPO.into(),
            head_ref: Some("feat/pr".into()),
            head_sha: Some(sha.clone()),
            ..Default::default()
        })
        .unwrap();
    w.sim.inject_fault(
        status_fault(
            "GET",
            "/github",
            502,
            format!("{{\"message\":\"upstream said: token {GITHUB_TOKEN}\"}}"),
        )
        .times(Some(1)),
    );

    for id in [&ok_new, &bad_new] {
        assert_eq!(currents_hook(w, bot, "RUN_START", id).await.status(), 202);
    }
    assert_eq!(
        currents_hook(w, bot, "RUN_FINISH", &pr_run).await.status(),
        202
    );
    // Wrong secrets, wrong tokens: refused, and what was sent is not echoed or logged.
    let r = w
        .http
        .post(bot.url("/webhooks/currents"))
        .header("x-webhook-secret", WRONG)
        .json(&currents_body("RUN_START", &ok_new))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_clean("a 401 answer", &r.text().await.unwrap(), &[]);
    let r = w
        .http
        .post(bot.url("/webhooks/currents"))
        .header("x-webhook-secret", format!("{CURRENTS_HOOK}x"))
        .json(&currents_body("RUN_START", &ok_new))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // GitHub: signed with the current and the old secret; a wrong signature.
    for (i, secret) in [GITHUB_HOOK, GITHUB_HOOK_OLD, WRONG].iter().enumerate() {
        let body = serde_json::to_vec(&serde_json::json!({
            "ref": format!("refs/heads/feat/gh-{tag}"), "before": "x", "after": format!("y{i}"), "deleted": false,
            "repository": {"full_name": REPO}
        }))
        .unwrap();
        let sig = sign(secret, &body);
        sent.push(sig.trim_start_matches("sha256=").to_string());
        let r = w
            .http
            .post(bot.url("/webhooks/github"))
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-github-delivery", format!("{tag}-{i}"))
            .header("x-hub-signature-256", &sig)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), if *secret == WRONG { 401 } else { 202 });
    }

    // Wait for the outcomes.
    let store = w.store().await;
    for (run_id, want) in [
        (&ok_old, ActionState::Done),
        (&bad_old, ActionState::Failed),
    ] {
        let key = format!("cancel:{run_id}");
        let a = eventually(&format!("the cancel of {run_id}"), 60, || async {
            store
                .action_by_key(&key)
                .await
                .ok()
                .flatten()
                .filter(|a| a.state.is_terminal())
        })
        .await;
        assert_eq!(a.state, want, "{a:#?}");
        if want == ActionState::Failed {
            let err = a.last_error.unwrap_or_default();
            assert!(err.contains("401"), "{err}");
            assert_clean("the recorded error", &err, &[]);
        }
    }
    eventually("the PR comment", 60, || async {
        (!w.sim.comments(Some(REPO), None).is_empty()).then_some(())
    })
    .await;

    // Every page and API.
    for (path, token) in [
        ("/metrics", None),
        ("/", None),
        ("/api/actions", Some(ADMIN)),
        ("/api/rules", Some(ADMIN)),
        ("/api/actions", Some(WRONG)),
        ("/readyz", None),
    ] {
        let mut req = w.http.get(bot.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_clean(&format!("GET {path} ({status})"), &text, &sent);
        if path == "/api/actions" && token == Some(ADMIN) {
            assert!(
                text.contains("401"),
                "the failed action is listed with its (redacted) error: {text}"
            );
        }
    }
    let r = w
        .http
        .post(bot.url("/api/sweep/cancel-superseded"))
        .bearer_auth(WRONG)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    sent
}

#[tokio::test]
async fn secrets_never_reach_logs_pages_or_errors_of_a_running_bot() {
    for tag in ["text", "json"] {
        let w = World::new(RULES, env("trace")).await;
        let mut cmd = w.command(&["serve"]);
        cmd.env("RUNWARDEN_LOG_FORMAT", tag);
        let bot = ChildBot::spawn(cmd).await;
        let sent = exercise(&w, &bot, tag).await;
        let (status, logs) = bot.terminate(Duration::from_secs(60)).await;
        assert!(status.success());
        let text = logs.join("\n");
        assert!(text.contains("TRACE"), "trace logging was on ({tag})");
        // Not only our own targets: the HTTP stack and the store log at trace too.
        for dep in ["hyper", "sqlx"] {
            assert!(text.contains(dep), "{dep} logged at trace ({tag})");
        }
        assert_clean(&format!("the {tag} logs at trace level"), &text, &sent);
    }
}

#[tokio::test]
async fn secrets_never_reach_the_output_of_one_shot_commands() {
    let w = World::new(RULES, env("trace")).await;
    // check
    let (status, out, err) = w.run(&["check"]).await;
    assert!(status.success(), "{out}{err}");
    assert_clean("check", &format!("{out}{err}"), &[]);
    // plan, against an API that echoes the key in its error, and against no API at all.
    let list = status_fault(
        "GET",
        "/v1",
        500,
        format!("{{\"error\":\"boom for key {API_KEY}\"}}"),
    );
    let id = w.sim.inject_fault(list);
    let (status, out, err) = w.run(&["plan"]).await;
    assert!(!status.success(), "{out}{err}");
    assert!(format!("{out}{err}").contains("500"), "{out}{err}");
    assert_clean("plan against an echoing API", &format!("{out}{err}"), &[]);
    w.sim.remove_fault(id);
    w.write_config(RULES, "http://127.0.0.1:9/v1");
    let (status, out, err) = w.run(&["plan"]).await;
    assert!(!status.success());
    assert_clean("plan with a bad URL", &format!("{out}{err}"), &[]);
    w.write_config(RULES, &format!("http://user:{DB_PASSWORD}@127.0.0.1:9/v1"));
    let (_, out, err) = w.run(&["plan"]).await;
    assert_clean(
        "plan with credentials in the URL",
        &format!("{out}{err}"),
        &[],
    );
    w.write_config(RULES, &w.sim.currents_url());
    // sweep with a failing action whose API error echoes the key.
    let old = w.sim.add_run(run("feat/s", "s1", 10)).unwrap().run_id;
    w.sim.add_run(run("feat/s", "s2", 1)).unwrap();
    w.sim.inject_fault(status_fault(
        "PUT",
        &format!("/v1/runs/{old}/cancel"),
        403,
        format!("{{\"error\":\"key {API_KEY} is read-only\"}}"),
    ));
    let (status, out, err) = w.run(&["sweep"]).await;
    assert_eq!(status.code(), Some(1), "an action failed: {out}{err}");
    assert!(out.contains("403"), "{out}");
    assert_clean("sweep", &format!("{out}{err}"), &[]);
    let (status, out, err) = w.run(&["audit", "--format", "json"]).await;
    assert!(status.success());
    assert!(out.contains("403"));
    assert_clean("audit", &format!("{out}{err}"), &[]);
    // serve with a PostgreSQL URL carrying a password, from the environment: the error
    // names the store without it.
    let mut cmd = w.command(&["serve"]);
    cmd.env(
        "RUNWARDEN__STORE__URL",
        format!("postgres://bot:{DB_PASSWORD}@127.0.0.1:9/runwarden"),
    );
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("postgres://127.0.0.1"), "{text}");
    assert_clean("serve with a password in the store URL", &text, &[]);
}

#[tokio::test]
async fn debug_output_and_error_messages_are_redacted() {
    use runwarden::config::{Secrets, load_str};
    use runwarden::secret::Secret;
    let secrets = Secrets {
        currents_api_key: Some(Secret::new(API_KEY)),
        github_token: Some(Secret::new(GITHUB_TOKEN)),
        github_app_id: Some(1),
        github_app_private_key: Some(Secret::new(
            std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/test-app-key.pem"
            ))
            .unwrap(),
        )),
        currents_webhook_secrets: vec![Secret::new(CURRENTS_HOOK)],
        github_webhook_secrets: vec![Secret::new(GITHUB_HOOK_OLD), Secret::new(GITHUB_HOOK)],
        admin_token: Some(Secret::new(ADMIN)),
    };
    let pem_line = secrets
        .github_app_private_key
        .as_ref()
        .unwrap()
        .expose()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    let extra = [pem_line];
    assert_clean(
        "Debug of Secrets",
        &format!("{secrets:?} {secrets:#?}"),
        &extra,
    );
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[currents]\napi_url = \"http://127.0.0.1:9/v1\"\nprojects = [\"p\"]\n[store]\nurl = \"postgres://bot:{DB_PASSWORD}@db.internal/runwarden\"\n"
    );
    let config = load_str(
        &text,
        &dir.path().join("rules.toml").display().to_string(),
        &[],
    )
    .unwrap()
    .config;
    assert_clean(
        "Debug of Config",
        &format!("{config:?} {config:#?}"),
        &extra,
    );
    let client = runwarden::commands::serve::currents_client(&config, &secrets).unwrap();
    assert_clean(
        "Debug of the Currents client",
        &format!("{client:?}"),
        &extra,
    );
    let gh = runwarden::github::GithubClient::from_config(&config.github, &secrets)
        .unwrap()
        .unwrap();
    assert_clean("Debug of the GitHub client", &format!("{gh:?}"), &extra);
    let app_only = Secrets {
        github_token: None,
        ..secrets.clone()
    };
    let gh = runwarden::github::GithubClient::from_config(&config.github, &app_only)
        .unwrap()
        .unwrap();
    assert_clean("Debug of the GitHub App client", &format!("{gh:?}"), &extra);
    // Errors: a server echoing the key, a store URL with a password.
    let sim = runwarden::simulator::spawn(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        runwarden::simulator::SimConfig {
            api_key: API_KEY.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    sim.inject_fault(status_fault(
        "GET",
        "/v1",
        401,
        format!("{{\"error\":\"Invalid API key {API_KEY}\"}}"),
    ));
    let text = format!(
        "[currents]\napi_url = \"{}\"\nprojects = [\"p\"]\n",
        sim.currents_url()
    );
    let config = load_str(&text, "rules.toml", &[]).unwrap().config;
    let client = runwarden::commands::serve::currents_client(&config, &secrets).unwrap();
    let err = client.get_run("abc").await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    assert_clean("a Currents error", &format!("{err} {err:?}"), &extra);
    let err =
        runwarden::store::Store::connect(&format!("postgres://bot:{DB_PASSWORD}@127.0.0.1:9/x"))
            .await
            .unwrap_err();
    assert_clean("a store error", &format!("{err:#} {err:?}"), &extra);
    let ctx_err = runwarden::commands::serve::build_context(
        load_str(
            &format!("[currents]\nprojects = [\"p\"]\n[store]\nurl = \"postgres://bot:{DB_PASSWORD}@127.0.0.1:9/x\"\n"),
            "rules.toml",
            &[],
        )
        .unwrap()
        .config,
        secrets.clone(),
    )
    .await
    .err()
    .unwrap();
    assert_clean(
        "a build_context error",
        &format!("{ctx_err:#} {ctx_err:?}"),
        &extra,
    );
}
