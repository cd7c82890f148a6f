//! GitHub App authentication end to end: a real RS256-signed JWT from a PEM key (a
//! throwaway test key in tests/data), the installation found for the repository, an
//! installation token created and used to post the summary comment.

mod common;

use common::*;
use runwarden::config::Secrets;
use runwarden::github::client::GithubClient;
use runwarden::secret::Secret;

#[tokio::test]
async fn a_github_app_posts_the_summary_with_an_installation_token() {
    let rules = "[[rules]]\nname = \"pr-summary\"\nkind = \"summary\"\n";
    let app = spawn_app(rules).await;
    let pem = std::fs::read_to_string("tests/data/test-app-key.pem").unwrap();
    let secrets = Secrets {
        github_app_id: Some(12345),
        github_app_private_key: Some(Secret::new(pem)),
        ..Secrets::default()
    };
    let gh = GithubClient::from_config(&app.bot.ctx.config.github, &secrets)
        .unwrap()
        .expect("App credentials give a client");
    let mut r = run("feat/app", "abc123abc123", 3);
    r.state = Some("passed".into());
    let created = app.sim.add_run(r).unwrap();
    app.sim
        .add_pr(runwarden::simulator::NewPr {
            repo: REPO.into(),
            number: Some(7),
            head_ref: Some("feat/app".into()),
            head_sha: Some("abc123abc123".into()),
            ..Default::default()
        })
        .unwrap();
    let rule = &app.bot.ctx.config.rules[0];
    let runwarden::config::RuleKind::Summary(opts) = &rule.kind else {
        unreachable!()
    };
    let ctx = runwarden::github::summary::SummaryCtx {
        gh: &gh,
        config: &app.bot.ctx.config,
        rule,
        opts,
        shared: None,
    };
    let run = app.sim.run(&created.run_id).unwrap();
    let report = runwarden::github::summary::post_summary(&ctx, &run, "RUN_FINISH", None, false)
        .await
        .unwrap();
    assert!(
        report.to_string().contains("PR #7: created comment"),
        "{report}"
    );
    let comments = app.sim.comments(Some(REPO), Some(7));
    assert_eq!(comments.len(), 1);
    assert!(comments[0].body.contains("<!-- runwarden:summary -->"));
    let log: Vec<String> = app
        .sim
        .mutation_log()
        .iter()
        .map(|e| format!("{} {}", e.method, e.path))
        .collect();
    assert!(
        log.iter()
            .any(|l| l.starts_with("POST /github/app/installations/")
                && l.ends_with("/access_tokens")),
        "{log:?}"
    );
}

#[test]
fn a_bad_app_key_is_reported_at_startup_without_echoing_it() {
    let secrets = Secrets {
        github_app_id: Some(1),
        github_app_private_key: Some(Secret::new(
            "-----BEGIN RSA PRIVATE KEY-----\nnot-a-key-XYZZY\n-----END RSA PRIVATE KEY-----",
        )),
        ..Secrets::default()
    };
    let cfg = runwarden::config::load_str("[currents]\nprojects = [\"p\"]\n", "r.toml", &[])
        .unwrap()
        .config;
    let err = match GithubClient::from_config(&cfg.github, &secrets) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a bad key must be rejected"),
    };
    assert!(err.contains("GITHUB_APP_PRIVATE_KEY"), "{err}");
    assert!(!err.contains("XYZZY"), "{err}");
}
