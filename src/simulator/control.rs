//! Control endpoints under `/_sim` (JSON in, JSON out; no auth): add projects, runs and
//! pull requests, advance runs, inject faults, read the request log, the webhook
//! deliveries and what the bot wrote to GitHub. Each maps to a [`World`] method.

// Request-parsing helpers return the error response itself, as handlers do.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::faults::Fault;
use super::github_api::{ContentLimits, NewPr};
use super::world::{Advance, GenerateSpec, NewProject, NewRun, SimError, World};

fn reply(status: StatusCode, v: Value) -> Response {
    let mut r = (status, serde_json::to_vec(&v).unwrap_or_default()).into_response();
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    r
}

fn ok(v: impl serde::Serialize) -> Response {
    reply(
        StatusCode::OK,
        serde_json::to_value(v).unwrap_or(Value::Null),
    )
}

pub(crate) fn error(status: StatusCode, msg: &str) -> Response {
    reply(status, json!({"error": msg}))
}

fn sim_err(e: SimError) -> Response {
    error(
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
        &e.to_string(),
    )
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, Response> {
    let slice: &[u8] = if body.iter().all(|b| b.is_ascii_whitespace()) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(slice)
        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}")))
}

fn query(raw: &Option<String>, key: &str) -> Option<String> {
    let q = raw.as_deref()?;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

pub(crate) fn router() -> Router<Arc<World>> {
    Router::new()
        .route("/", get(index))
        .route("/reset", post(reset))
        .route("/projects", post(add_project))
        .route("/runs", post(add_runs))
        .route("/runs/{id}/advance", post(advance))
        .route("/generate", post(generate))
        .route("/tick", post(tick))
        .route(
            "/faults",
            get(list_faults).post(add_faults).delete(clear_faults),
        )
        .route("/faults/{id}", delete(remove_fault))
        .route("/log", get(log).delete(clear_log))
        .route("/stats", get(stats))
        .route("/deliveries", get(deliveries).delete(clear_deliveries))
        .route("/webhook-target", post(webhook_target))
        .route("/prs", get(list_prs).post(add_pr))
        .route("/github/comments", get(comments))
        .route("/github/statuses", get(statuses))
        .route("/github/expire-tokens", post(expire_tokens))
        .route("/github/quota", post(github_quota))
        .route(
            "/github/content-limits",
            get(content_limits).post(set_content_limits),
        )
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such control endpoint") })
        .method_not_allowed_fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
}

async fn index() -> Response {
    ok(json!({
        "endpoints": [
            "POST /_sim/reset",
            "POST /_sim/projects {projectId?, name?, repo?, framework?, defaultBranchName?, inactivityTimeoutSeconds?}",
            "POST /_sim/runs NewRun | [NewRun]",
            "POST /_sim/runs/{id}/advance {claim?, complete?, fail?, finish?: passed|failed, timeout?, cancel?, actor?, at?}",
            "POST /_sim/generate {projects, runsPerProject, inProgress, days, branches, specs, groups}",
            "POST /_sim/tick {at?}",
            "GET|POST|DELETE /_sim/faults, DELETE /_sim/faults/{id}",
            "GET|DELETE /_sim/log",
            "GET /_sim/stats",
            "GET|DELETE /_sim/deliveries",
            "POST /_sim/webhook-target {url, headers}",
            "GET|POST /_sim/prs",
            "GET /_sim/github/comments?repo=&number=",
            "GET /_sim/github/statuses?repo=&sha=",
            "POST /_sim/github/expire-tokens",
            "POST /_sim/github/quota {limit, windowSeconds?: 3600}",
            "GET /_sim/github/content-limits",
            "POST /_sim/github/content-limits {perMinute?: 80, perHour?: 500} | {enabled: false}",
        ]
    }))
}

async fn reset(State(w): State<Arc<World>>) -> Response {
    w.reset();
    ok(json!({"reset": true}))
}

async fn add_project(State(w): State<Arc<World>>, body: Bytes) -> Response {
    let np: NewProject = match parse(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    match w.add_project(np) {
        Ok(p) => reply(
            StatusCode::CREATED,
            serde_json::to_value(p).unwrap_or(Value::Null),
        ),
        Err(e) => sim_err(e),
    }
}

/// A JSON object or an array of them.
fn parse_many<T: DeserializeOwned>(body: &Bytes) -> Result<(Vec<T>, bool), Response> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if first == Some(b'[') {
        Ok((parse(body)?, true))
    } else {
        Ok((vec![parse(body)?], false))
    }
}

async fn add_runs(State(w): State<Arc<World>>, body: Bytes) -> Response {
    let (mut runs, many) = match parse_many::<NewRun>(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if many {
        return match w.add_runs(runs) {
            Ok(ids) => reply(StatusCode::CREATED, json!({"runIds": ids})),
            Err(e) => sim_err(e),
        };
    }
    match runs.pop().map(|nr| w.add_run(nr)) {
        Some(Ok(run)) => reply(
            StatusCode::CREATED,
            serde_json::to_value(run).unwrap_or(Value::Null),
        ),
        Some(Err(e)) => sim_err(e),
        None => error(StatusCode::BAD_REQUEST, "no run"),
    }
}

async fn advance(State(w): State<Arc<World>>, Path(id): Path<String>, body: Bytes) -> Response {
    let adv: Advance = match parse(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    match w.advance(&id, adv) {
        Ok(run) => ok(run),
        Err(e) => sim_err(e),
    }
}

async fn generate(State(w): State<Arc<World>>, body: Bytes) -> Response {
    let spec: GenerateSpec = match parse(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let started = std::time::Instant::now();
    match w.generate(&spec) {
        Ok(n) => ok(
            json!({"added": n, "total": w.run_count(), "ms": started.elapsed().as_millis() as u64}),
        ),
        Err(e) => sim_err(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TickBody {
    at: Option<DateTime<Utc>>,
}

async fn tick(State(w): State<Arc<World>>, body: Bytes) -> Response {
    let t: TickBody = match parse(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    w.tick(t.at.unwrap_or_else(Utc::now));
    ok(json!({"ticked": true}))
}

async fn list_faults(State(w): State<Arc<World>>) -> Response {
    ok(w.faults())
}

async fn add_faults(State(w): State<Arc<World>>, body: Bytes) -> Response {
    let (list, many) = match parse_many::<Fault>(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let ids: Vec<u64> = list.into_iter().map(|f| w.inject_fault(f)).collect();
    if many {
        reply(StatusCode::CREATED, json!({"ids": ids}))
    } else {
        reply(StatusCode::CREATED, json!({"id": ids.first()}))
    }
}

async fn clear_faults(State(w): State<Arc<World>>) -> Response {
    w.clear_faults();
    ok(json!({"cleared": true}))
}

async fn remove_fault(State(w): State<Arc<World>>, Path(id): Path<String>) -> Response {
    match id.parse::<u64>() {
        Ok(id) if w.remove_fault(id) => ok(json!({"removed": id})),
        _ => error(StatusCode::NOT_FOUND, "no such fault"),
    }
}

async fn log(State(w): State<Arc<World>>, RawQuery(raw): RawQuery) -> Response {
    let since = query(&raw, "since")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    let entries: Vec<_> = w
        .mutation_log()
        .into_iter()
        .filter(|e| e.seq > since)
        .collect();
    ok(entries)
}

async fn clear_log(State(w): State<Arc<World>>) -> Response {
    w.clear_log();
    ok(json!({"cleared": true}))
}

async fn stats(State(w): State<Arc<World>>) -> Response {
    ok(json!({
        "runs": w.run_count(),
        "requests": w.request_counts(),
        "mutations": w.mutation_log().len(),
        "deliveries": w.deliveries().len(),
        "faults": w.faults().len(),
        "githubSecondaryLimited": w.github_secondary_limited(),
    }))
}

async fn deliveries(State(w): State<Arc<World>>) -> Response {
    ok(w.deliveries())
}

async fn clear_deliveries(State(w): State<Arc<World>>) -> Response {
    w.clear_deliveries();
    ok(json!({"cleared": true}))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Target {
    url: Option<String>,
    headers: Value,
}

async fn webhook_target(State(w): State<Arc<World>>, body: Bytes) -> Response {
    let t: Target = match parse(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let headers: Vec<(String, String)> = match &t.headers {
        Value::Null => Vec::new(),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string()),
                )
            })
            .collect(),
        _ => return error(StatusCode::BAD_REQUEST, "headers must be an object"),
    };
    if let Some(u) = &t.url
        && url::Url::parse(u).is_err()
    {
        return error(StatusCode::BAD_REQUEST, "url must be an absolute URL");
    }
    w.set_webhook_target(t.url.clone(), headers);
    ok(json!({"url": t.url}))
}

async fn list_prs(State(w): State<Arc<World>>) -> Response {
    ok(w.prs())
}

async fn add_pr(State(w): State<Arc<World>>, body: Bytes) -> Response {
    let np: NewPr = match parse(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    match w.add_pr(np) {
        Ok(pr) => reply(
            StatusCode::CREATED,
            serde_json::to_value(pr).unwrap_or(Value::Null),
        ),
        Err(e) => sim_err(e),
    }
}

async fn comments(State(w): State<Arc<World>>, RawQuery(raw): RawQuery) -> Response {
    let repo = query(&raw, "repo");
    let number = query(&raw, "number").and_then(|n| n.parse::<u64>().ok());
    ok(w.comments(repo.as_deref(), number))
}

async fn statuses(State(w): State<Arc<World>>, RawQuery(raw): RawQuery) -> Response {
    let repo = query(&raw, "repo");
    let sha = query(&raw, "sha");
    ok(w.statuses(repo.as_deref(), sha.as_deref()))
}

/// A new window of GitHub's primary rate limit (`POST /_sim/github/quota`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct QuotaSpec {
    limit: u32,
    #[serde(default = "hour")]
    window_seconds: u64,
}

fn hour() -> u64 {
    3600
}

async fn github_quota(State(w): State<Arc<World>>, body: Bytes) -> Response {
    let q: QuotaSpec = match parse(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !(1..=366 * 86_400).contains(&q.window_seconds) {
        return error(
            StatusCode::BAD_REQUEST,
            "windowSeconds must be between 1 and 31622400 (366 days)",
        );
    }
    w.set_github_quota(q.limit, std::time::Duration::from_secs(q.window_seconds));
    ok(json!({"limit": q.limit, "windowSeconds": q.window_seconds}))
}

/// GitHub's secondary limit on content creation (`POST /_sim/github/content-limits`):
/// GitHub's (80 a minute, 500 an hour) unless given; `enabled: false` turns it off.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ContentLimitsSpec {
    #[serde(default = "yes")]
    enabled: bool,
    per_minute: Option<u32>,
    per_hour: Option<u32>,
}

fn yes() -> bool {
    true
}

/// The secondary limit in force and the requests it refused.
async fn content_limits(State(w): State<Arc<World>>) -> Response {
    ok(json!({
        "limits": w.github_content_limits(),
        "refused": w.github_secondary_limited(),
        "hits": w.github_secondary_limit_hits(),
    }))
}

async fn set_content_limits(State(w): State<Arc<World>>, body: Bytes) -> Response {
    let spec: ContentLimitsSpec = match parse(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !spec.enabled {
        if spec.per_minute.is_some() || spec.per_hour.is_some() {
            return error(
                StatusCode::BAD_REQUEST,
                "perMinute and perHour cannot go with enabled: false",
            );
        }
        w.set_github_content_limits(None);
        return ok(json!({"limits": null}));
    }
    let d = ContentLimits::default();
    let limits = ContentLimits {
        per_minute: spec.per_minute.unwrap_or(d.per_minute),
        per_hour: spec.per_hour.unwrap_or(d.per_hour),
    };
    if limits.per_minute == 0 || limits.per_hour == 0 {
        return error(
            StatusCode::BAD_REQUEST,
            "perMinute and perHour must be at least 1",
        );
    }
    w.set_github_content_limits(Some(limits));
    ok(json!({"limits": limits}))
}

async fn expire_tokens(State(w): State<Arc<World>>) -> Response {
    ok(json!({"expired": w.expire_installation_tokens()}))
}
