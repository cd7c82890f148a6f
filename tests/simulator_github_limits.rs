//! GitHub's secondary rate limit on content creation, as the simulator enforces it
//! (`reliability-notes.md` §2.2: "Content creation: generally ≤ 80 requests/min and
//! ≤ 500/h"), and how runwarden's GitHub client takes the refusal. The windows themselves
//! (sliding, per account, `retry-after` to the millisecond) are unit-tested in
//! `src/simulator/github_api.rs` on a synthetic clock; here the requests are sent back to
//! back, 81 of them well within a minute, against a simulator on 127.0.0.1:0.

use std::time::{Duration, Instant};

use runwarden::github::client::GithubErrorKind;
use runwarden::github::{GithubAuth, GithubClient, GithubClientOptions, RepoName, RetryPolicy};
use runwarden::secret::Secret;
use runwarden::simulator::{self, ContentLimits, NewPr, SimConfig, SimHandle};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const SHA: &str = "89e6c98d92887913cadf06b2adb97f26cde4849b";
const SECONDARY: &str = "You have exceeded a secondary rate limit. Please wait a few minutes \
                         before you try again.";

async fn sim_with(cfg: SimConfig) -> SimHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    simulator::spawn(listener, cfg).await.expect("spawn")
}

/// A simulator with PR acme/web#1.
async fn sim() -> SimHandle {
    let s = sim_with(SimConfig::default()).await;
    s.add_pr(NewPr {
        repo: "acme/web".into(),
        number: Some(1),
        head_ref: Some("feat".into()),
        head_sha: Some(SHA.into()),
        ..NewPr::default()
    })
    .unwrap();
    s
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// `GET url`, its JSON answer.
async fn get_json(url: String) -> Value {
    http().get(url).send().await.unwrap().json().await.unwrap()
}

/// A GitHub request as `token`.
async fn gh(
    s: &SimHandle,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut r = http()
        .request(method, format!("{}/github{path}", s.base_url))
        .header("authorization", format!("token {token}"));
    if let Some(b) = body {
        r = r.json(&b);
    }
    r.send().await.unwrap()
}

async fn comment(s: &SimHandle, token: &str, body: &str) -> reqwest::Response {
    gh(
        s,
        token,
        reqwest::Method::POST,
        "/repos/acme/web/issues/1/comments",
        Some(json!({ "body": body })),
    )
    .await
}

async fn status(s: &SimHandle, token: &str, context: &str) -> reqwest::Response {
    gh(
        s,
        token,
        reqwest::Method::POST,
        &format!("/repos/acme/web/statuses/{SHA}"),
        Some(json!({"state": "success", "context": context})),
    )
    .await
}

/// Checks that `r` is GitHub's secondary-rate-limit refusal; its `retry-after`.
async fn secondary_limited(r: reqwest::Response) -> u64 {
    assert_eq!(r.status(), 403);
    let h = r.headers().clone();
    let retry_after: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    let request_id = h["x-github-request-id"].to_str().unwrap().to_string();
    // Not the primary limit: requests remain.
    assert_ne!(h["x-ratelimit-remaining"], "0");
    let body: Value = r.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(message.starts_with(SECONDARY), "{body}");
    assert!(
        message.ends_with(&format!("request ID {request_id}.")),
        "{body}"
    );
    assert!(
        body["documentation_url"]
            .as_str()
            .unwrap()
            .ends_with("#about-secondary-rate-limits"),
        "{body}"
    );
    retry_after
}

/// 80 content-creating requests (new comments, comment edits, new statuses) within a
/// minute pass; the 81st is refused with 403, GitHub's message and `retry-after`, and
/// creates nothing; reads still pass, another account still writes, and every refusal
/// is recorded.
#[tokio::test]
async fn content_creation_past_80_a_minute_is_refused_with_a_secondary_limit() {
    let s = sim().await;
    let started = Instant::now();
    let r = comment(&s, "ghp_bot", "first").await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_u64().unwrap();
    for i in 1..40 {
        assert_eq!(comment(&s, "ghp_bot", &format!("c{i}")).await.status(), 201);
    }
    for i in 0..30 {
        assert_eq!(
            status(&s, "ghp_bot", &format!("ci/{i}")).await.status(),
            201
        );
    }
    // Edits count: `PATCH`, and the `POST` octocrab sends for one.
    for i in 0..10 {
        let method = if i % 2 == 0 {
            reqwest::Method::PATCH
        } else {
            reqwest::Method::POST
        };
        let path = format!("/repos/acme/web/issues/comments/{id}");
        let r = gh(&s, "ghp_bot", method, &path, Some(json!({"body": "e"}))).await;
        assert_eq!(r.status(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "80 requests took {:?}: the minute's window may have moved on",
        started.elapsed()
    );
    let comments = s.comments(Some("acme/web"), Some(1)).len();
    let statuses = s.statuses(Some("acme/web"), None).len();
    assert_eq!((comments, statuses), (40, 30));

    // The 81st, whichever kind it is.
    let wait = secondary_limited(status(&s, "ghp_bot", "ci/late").await).await;
    assert!((1..=60).contains(&wait), "{wait}");
    let wait = secondary_limited(comment(&s, "ghp_bot", "late").await).await;
    assert!((1..=60).contains(&wait), "{wait}");
    let path = format!("/repos/acme/web/issues/comments/{id}");
    let r = gh(
        &s,
        "ghp_bot",
        reqwest::Method::PATCH,
        &path,
        Some(json!({"body": "late"})),
    )
    .await;
    secondary_limited(r).await;
    // Nothing was created or changed.
    assert_eq!(s.comments(Some("acme/web"), Some(1)).len(), comments);
    assert_eq!(s.statuses(Some("acme/web"), None).len(), statuses);
    assert_eq!(s.comments(None, None)[0].body, "e");

    // Reads are not content creation; a delete is not either.
    let r = gh(
        &s,
        "ghp_bot",
        reqwest::Method::GET,
        "/repos/acme/web/issues/1/comments",
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = gh(&s, "ghp_bot", reqwest::Method::DELETE, &path, None).await;
    assert_eq!(r.status(), 204);
    // The limit is per account: another user still writes.
    assert_eq!(comment(&s, "user:mallory", "hi").await.status(), 201);

    // Every refusal is recorded, for tests that count them.
    let hits: Vec<(String, String, String)> = s
        .github_secondary_limit_hits()
        .into_iter()
        .map(|h| {
            assert!((1..=60).contains(&h.retry_after), "{h:?}");
            (h.login, h.method, h.path)
        })
        .collect();
    let hit = |method: &str, path: &str| ("runwarden[bot]".into(), method.into(), path.into());
    assert_eq!(
        hits,
        [
            hit("POST", &format!("/github/repos/acme/web/statuses/{SHA}")),
            hit("POST", "/github/repos/acme/web/issues/1/comments"),
            hit("PATCH", &format!("/github{path}")),
        ]
    );
    assert_eq!(s.github_secondary_limited(), 3);
    let stats = get_json(format!("{}/_sim/stats", s.base_url)).await;
    assert_eq!(stats["githubSecondaryLimited"], 3);
    let limits = get_json(format!("{}/_sim/github/content-limits", s.base_url)).await;
    assert_eq!(limits["limits"], json!({"perMinute": 80, "perHour": 500}));
    assert_eq!(limits["refused"], 3);
    assert_eq!(limits["hits"].as_array().unwrap().len(), 3);
    // The refusals are in the request log too, as the 403s they were.
    let refused = s
        .mutation_log()
        .iter()
        .filter(|e| e.api == "github" && e.status == 403)
        .count();
    assert_eq!(refused, 3);
}

/// 500 within an hour: set lower minute and hour limits through the control API, the
/// hour's refusal asks to wait close to an hour.
#[tokio::test]
async fn the_hourly_limit_asks_to_wait_for_the_hour() {
    let s = sim().await;
    let set = |body: Value| {
        let url = format!("{}/_sim/github/content-limits", s.base_url);
        async move { http().post(url).json(&body).send().await.unwrap() }
    };
    for bad in [
        json!({"perMinute": 0}),
        json!({"perHour": 0}),
        json!({"enabled": false, "perMinute": 5}),
        json!({"perMinute": -1}),
        json!({"perDay": 5}),
    ] {
        assert_eq!(set(bad.clone()).await.status(), 400, "{bad}");
    }
    let r = set(json!({"perMinute": 1000, "perHour": 5})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.github_content_limits(),
        Some(ContentLimits {
            per_minute: 1000,
            per_hour: 5
        })
    );
    for i in 0..5 {
        assert_eq!(status(&s, "ghp_bot", &format!("c{i}")).await.status(), 201);
    }
    let wait = secondary_limited(status(&s, "ghp_bot", "c5").await).await;
    assert!((3500..=3600).contains(&wait), "{wait}");

    // Turned off (a load test), everything passes; back on, GitHub's limits.
    assert_eq!(set(json!({"enabled": false})).await.status(), 200);
    assert_eq!(s.github_content_limits(), None);
    for i in 0..100 {
        assert_eq!(status(&s, "ghp_bot", &format!("d{i}")).await.status(), 201);
    }
    assert_eq!(set(json!({})).await.status(), 200);
    assert_eq!(s.github_content_limits(), Some(ContentLimits::default()));
    assert_eq!(s.github_secondary_limited(), 1);
}

/// The limit is the default; a simulator made for a load test can go without it, and
/// `reset` restores the configured one.
#[tokio::test]
async fn only_a_simulator_configured_so_goes_without_the_limit() {
    assert_eq!(
        SimConfig::default().github_content_limits,
        Some(ContentLimits {
            per_minute: 80,
            per_hour: 500
        })
    );
    assert!(SimConfig::interactive().github_content_limits.is_some());
    let s = sim_with(SimConfig {
        github_content_limits: None,
        ..SimConfig::default()
    })
    .await;
    for i in 0..100 {
        assert_eq!(status(&s, "ghp_bot", &format!("c{i}")).await.status(), 201);
    }
    s.set_github_content_limits(Some(ContentLimits::default()));
    s.reset();
    assert_eq!(s.github_content_limits(), None, "reset: as configured");
}

/// runwarden's client takes the refusal as a rate limit: it does not retry into it (one
/// request, one refusal), it hands the wait back for the action to be parked, and it
/// sends nothing more until the wait is over.
#[tokio::test]
async fn the_bot_client_parks_a_write_refused_by_the_secondary_limit() {
    let s = sim().await;
    s.set_github_content_limits(Some(ContentLimits {
        per_minute: 2,
        per_hour: 500,
    }));
    let mut o = GithubClientOptions::new(url::Url::parse(&s.github_url()).unwrap());
    o.retry = RetryPolicy::fast();
    let client = GithubClient::new(o, GithubAuth::Token(Secret::new("ghp_bot"))).unwrap();
    let repo: RepoName = "acme/web".parse().unwrap();
    let post = |context: &'static str| {
        client.create_status(
            &repo,
            SHA,
            runwarden::github::client::StatusState::Success,
            context,
            "ok",
            None,
        )
    };
    post("a").await.unwrap();
    post("b").await.unwrap();
    let e = post("c").await.unwrap_err();
    match &e.kind {
        GithubErrorKind::RateLimited {
            status, message, ..
        } => {
            assert_eq!(*status, 403);
            assert!(message.starts_with(SECONDARY), "{message}");
        }
        other => panic!("not a rate limit: {other:?}"),
    }
    let wait = e.retry_after().expect("the wait is handed back");
    assert!(
        wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
    assert_eq!(s.github_secondary_limited(), 1, "no retry into the limit");
    // Held back: the next write fails at once, without a request.
    let before = s.mutation_log().len();
    let e = post("d").await.unwrap_err();
    assert!(e.held_back, "{e}");
    assert_eq!(s.mutation_log().len(), before);
    assert_eq!(s.github_secondary_limited(), 1);
}

/// Spacing writes 1 s apart keeps runwarden under GitHub's 80 a minute, not under its 500
/// an hour: the client itself sends at most `WRITES_PER_HOUR` in any hour. The next write
/// is not sent; its error carries the wait until the oldest leaves the hour, so the action
/// is parked (here the simulator's own limit is off, to show that the client keeps to it
/// by itself).
#[tokio::test]
async fn the_bot_client_sends_at_most_500_writes_an_hour_and_hands_back_the_wait() {
    use runwarden::github::client::{StatusState, WRITES_PER_HOUR};
    let s = sim().await;
    s.set_github_content_limits(None);
    let mut o = GithubClientOptions::new(url::Url::parse(&s.github_url()).unwrap());
    o.retry = RetryPolicy::fast();
    let client = GithubClient::new(o, GithubAuth::Token(Secret::new("ghp_bot"))).unwrap();
    let repo: RepoName = "acme/web".parse().unwrap();
    let started = Instant::now();
    for i in 0..WRITES_PER_HOUR {
        client
            .create_status(
                &repo,
                SHA,
                StatusState::Success,
                &format!("ci/{i}"),
                "ok",
                None,
            )
            .await
            .unwrap();
    }
    let before = s.mutation_log().len();
    let e = client
        .create_status(&repo, SHA, StatusState::Success, "ci/one-more", "ok", None)
        .await
        .unwrap_err();
    assert!(e.held_back, "{e}");
    assert!(
        matches!(&e.kind, GithubErrorKind::RateLimited { status: 403, message, .. }
            if message.contains("500 writes an hour")),
        "{e}"
    );
    let wait = e.retry_after().expect("the wait is handed back");
    let left = Duration::from_secs(3600).saturating_sub(started.elapsed());
    assert!(
        wait >= left && wait <= Duration::from_secs(3600),
        "{wait:?} (at least {left:?})"
    );
    assert_eq!(s.mutation_log().len(), before, "not sent");
    assert_eq!(s.github_secondary_limited(), 0);
}
