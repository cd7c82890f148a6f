//! Edges of the HTTP server (SPEC §5): the request timeout covers the wait for a
//! concurrency slot, the admin API's auth scheme is case-insensitive, its errors
//! (store outages included) are JSON, manual sweeps never collide, and the status page
//! never shows a store outage as "none". (More limits: `tests/http_limits.rs`.)

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use common::*;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

/// The test's own bound on an answer: only reached when the server hangs.
const DEADLINE: Duration = Duration::from_secs(10);

/// `GET path` through `app`, with a deadline; the status, or `None` when it hangs.
async fn get_status(app: &Router, path: &str) -> Option<u16> {
    let req = http::Request::get(path).body(Body::empty()).unwrap();
    tokio::time::timeout(DEADLINE, app.clone().oneshot(req))
        .await
        .ok()
        .map(|r| r.unwrap().status().as_u16())
}

/// A router behind `server::protect` with one slot and a short timeout.
fn guarded(slots: Arc<Semaphore>, timeout: Duration) -> Router {
    let routes = Router::new()
        .route("/fast", get(|| async { "ok" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "late"
            }),
        )
        .route(
            "/panic",
            get(|| async {
                if true {
                    panic!("handler panicked");
                }
                "unreachable"
            }),
        );
    runwarden::server::protect(routes, slots, timeout)
}

#[tokio::test]
async fn waiting_for_a_concurrency_slot_counts_against_the_request_timeout() {
    let slots = Arc::new(Semaphore::new(1));
    let app = guarded(slots.clone(), Duration::from_millis(300));
    assert_eq!(get_status(&app, "/fast").await, Some(200));
    // Every slot held (as by stalled uploads): a request queued for one is answered
    // 408 once its timeout runs out, instead of waiting for ever.
    let held = slots.clone().acquire_owned().await.unwrap();
    let started = std::time::Instant::now();
    assert_eq!(
        get_status(&app, "/fast").await,
        Some(408),
        "a request waiting for a slot has no time limit"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    // The request that gave up took no slot with it.
    drop(held);
    assert_eq!(slots.available_permits(), 1);
    assert_eq!(get_status(&app, "/fast").await, Some(200));
    // A handler that takes too long: 408, and its slot comes back.
    assert_eq!(get_status(&app, "/slow").await, Some(408));
    assert_eq!(slots.available_permits(), 1);
    // The panic catcher is outside both: a panic is a 500, and its slot comes back.
    assert_eq!(get_status(&app, "/panic").await, Some(500));
    assert_eq!(slots.available_permits(), 1);
    assert_eq!(get_status(&app, "/fast").await, Some(200));
}

/// `server::guard`, the layers of `/healthz` and `/readyz` (outside the request slots):
/// still a 500 for a panic and a 408 past the timeout.
#[tokio::test]
async fn the_health_checks_guard_catches_panics_and_times_out_without_a_slot() {
    let routes = Router::new()
        .route("/fast", get(|| async { "ok" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "late"
            }),
        )
        .route(
            "/panic",
            get(|| async {
                if true {
                    panic!("handler panicked");
                }
                "unreachable"
            }),
        );
    let app = runwarden::server::guard(routes, Duration::from_millis(300));
    assert_eq!(get_status(&app, "/fast").await, Some(200));
    assert_eq!(get_status(&app, "/slow").await, Some(408));
    assert_eq!(get_status(&app, "/panic").await, Some(500));
}

/// Finding: a webhook's own 500 (the store failed for good) was counted twice in
/// `runwarden_webhooks_total`, once by the handler and once by the layer that counts
/// what the handler cannot (the 408 of the timeout, the 500 of a panic). Through
/// `server::count_webhooks` around `server::protect`, as the router has it: each answer
/// is counted once, whoever produced it. (The handler's real 500:
/// `store_faults::a_webhooks_500_from_the_store_is_counted_once`.)
#[tokio::test]
async fn a_webhooks_500_or_408_is_counted_once_whoever_answered_it() {
    use runwarden::intake::webhooks::Counted;
    let metrics = Arc::new(runwarden::server::metrics::Metrics::new());
    let routes = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "late"
            }),
        )
        .route(
            "/panic",
            get(|| async {
                if true {
                    panic!("handler panicked");
                }
                "unreachable"
            }),
        )
        .route(
            "/counted-500",
            get({
                let metrics = metrics.clone();
                move || async move {
                    // What the webhook handlers do with each of their answers.
                    metrics.inc(
                        "runwarden_webhooks_total",
                        &[("source", "github"), ("status", "500")],
                    );
                    let mut r = axum::response::IntoResponse::into_response((
                        http::StatusCode::INTERNAL_SERVER_ERROR,
                        "event store failed",
                    ));
                    r.extensions_mut().insert(Counted);
                    r
                }
            }),
        );
    let app = runwarden::server::count_webhooks(
        runwarden::server::protect(
            routes,
            Arc::new(Semaphore::new(4)),
            Duration::from_millis(300),
        ),
        metrics.clone(),
        "github",
    );
    let count = |status: &str| {
        metrics.get(
            "runwarden_webhooks_total",
            &[("source", "github"), ("status", status)],
        )
    };
    assert_eq!(get_status(&app, "/counted-500").await, Some(500));
    assert_eq!(
        count("500"),
        1,
        "the handler's own 500, counted by it alone"
    );
    assert_eq!(get_status(&app, "/panic").await, Some(500));
    assert_eq!(count("500"), 2, "a panic's 500, counted by the layer");
    assert_eq!(get_status(&app, "/slow").await, Some(408));
    assert_eq!(count("408"), 1, "the timeout's 408, counted by the layer");
}

const RETENTION: &str =
    "[[rules]]\nname = \"retention\"\nkind = \"retention\"\nolder_than = \"30d\"\n";

/// `GET /api/rules` with this `Authorization` value; the status.
async fn rules_with(app: &TestApp, authorization: &str) -> u16 {
    app.http
        .get(app.url("/api/rules"))
        .header("authorization", authorization)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_admin_auth_scheme_is_case_insensitive_and_the_token_exact() {
    let app = spawn_app(RETENTION).await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let value = format!("{scheme} {ADMIN_TOKEN}");
        assert_eq!(rules_with(&app, &value).await, 200, "{value}");
    }
    // One or more spaces after the scheme (RFC 9110 §11.4: 1*SP).
    let value = format!("bearer   {ADMIN_TOKEN}");
    assert_eq!(rules_with(&app, &value).await, 200, "{value}");
    for value in [
        format!("Bearer {}", ADMIN_TOKEN.to_uppercase()),
        format!("bearer {ADMIN_TOKEN}x"),
        format!("bearer x{ADMIN_TOKEN}"),
        format!("Basic {ADMIN_TOKEN}"),
        format!("Bearer{ADMIN_TOKEN}"),
        format!("bearerx {ADMIN_TOKEN}"),
        ADMIN_TOKEN.to_string(),
        "bearer".to_string(),
        "Bearer ".to_string(),
    ] {
        assert_eq!(rules_with(&app, &value).await, 401, "{value}");
    }
}

#[tokio::test]
async fn sweeps_posted_at_once_are_each_queued() {
    let app = spawn_app(RETENTION).await;
    // At once: without a unique id, sweeps of the same millisecond shared one and all but
    // the first were dropped, each still answered `queued`.
    let answers = futures::future::join_all((0..20).map(|_| app.admin_sweep("retention"))).await;
    let mut ids = std::collections::BTreeSet::new();
    for r in answers {
        assert_eq!(r.status(), 202);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["status"], "queued", "{body}");
        let id = body["delivery"].as_str().unwrap().to_string();
        assert!(
            app.bot
                .ctx
                .store
                .find_delivery("schedule", &id)
                .await
                .unwrap()
                .is_some(),
            "{id} is not stored"
        );
        ids.insert(id);
    }
    assert_eq!(ids.len(), 20, "{ids:?}");
}

/// A JSON `{"error": ...}` body.
async fn json_error(r: reqwest::Response) -> String {
    assert_eq!(
        r.headers()["content-type"],
        "application/json",
        "{:?}",
        r.headers()
    );
    let body: serde_json::Value = r.json().await.unwrap();
    body["error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_store_outage_is_a_json_503_from_the_api_and_never_a_false_zero_on_the_page() {
    let app = spawn_app(RETENTION).await;
    let page = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let text = page.text().await.unwrap();
    assert!(text.contains("Failed actions (0)"), "{text}");
    assert!(!text.contains("could not be read"), "{text}");
    let metrics = app.get_text("/metrics").await;
    assert!(metrics.contains("\nrunwarden_store_up 1\n"), "{metrics}");

    app.bot.ctx.store.close().await;

    // /metrics still answers (a scrape is not a health check), and says the store did
    // not: its gauges are gone rather than zero. (They are read at most every 5 s: the
    // outage shows within that.)
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let metrics = loop {
        let metrics = app.get_text("/metrics").await;
        if !metrics.contains("\nrunwarden_store_up 1\n") {
            break metrics;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(metrics.contains("\nrunwarden_store_up 0\n"), "{metrics}");
    assert!(!metrics.contains("runwarden_queue_depth"), "{metrics}");

    let page = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 503);
    let text = page.text().await.unwrap();
    assert!(text.contains("The store could not be read"), "{text}");
    assert!(text.contains("queue unknown"), "{text}");
    for false_zero in [
        "Failed actions (0)",
        "Pending actions (0)",
        "Recent decisions (0)",
        "0 action(s) queued",
        ">none<",
    ] {
        assert!(!text.contains(false_zero), "{false_zero}: {text}");
    }
    // The rules come from the config: still listed, their hit counts unknown.
    assert!(text.contains("<td>retention</td>"), "{text}");

    let get = |path: &str| app.http.get(app.url(path)).bearer_auth(ADMIN_TOKEN).send();
    for path in ["/api/actions", "/api/rules"] {
        let r = get(path).await.unwrap();
        assert_eq!(r.status(), 503, "{path}");
        let message = json_error(r).await;
        assert!(message.contains("store unavailable"), "{path}: {message}");
    }
    let r = app.admin_sweep("retention").await;
    assert_eq!(r.status(), 503);
    let message = json_error(r).await;
    assert!(message.contains("store unavailable"), "{message}");
}
