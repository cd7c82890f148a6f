//! The Currents REST API v1 (`runs-api.txt`, `currents-notes.md` §1, §2.2), mounted
//! under `/v1`: the `{"status":"OK","data":...}` / `{"status":"FAILED","error":...}`
//! envelope, Bearer API-key auth, cursor pagination and the run-feed filters.

// Request-parsing helpers return the error response itself, as handlers do.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::ids::{self, Key};
use super::world::{FIND_SELECTOR_REQUIRED, RunQuery, SimError, World};
use crate::currents::models::{CompletionState, Run, RunStatus, WebhookSpec};

// ----- envelope -----

pub(crate) fn ok<T: Serialize>(data: T) -> Response {
    json_with(StatusCode::OK, &json!({"status": "OK", "data": data}))
}

fn ok_created<T: Serialize>(data: T) -> Response {
    json_with(StatusCode::CREATED, &json!({"status": "OK", "data": data}))
}

fn ok_list<T: Serialize>(data: T, has_more: bool) -> Response {
    json_with(
        StatusCode::OK,
        &json!({"status": "OK", "has_more": has_more, "data": data}),
    )
}

pub(crate) fn fail(status: StatusCode, msg: &str) -> Response {
    json_with(status, &json!({"status": "FAILED", "error": msg}))
}

fn json_with(status: StatusCode, v: &serde_json::Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// A run as the API sends it, with the fields the shared model leaves out when empty
/// (`currents-notes.md` §1.4, `runs-api.txt`):
///
/// - `cancellation` is `null` on a run that was not cancelled;
/// - `durationMs` is `null` while the run has no duration (feed items carry it always:
///   "the run without `specs`, plus `cursor` and `durationMs`");
/// - a reported spec's `results` carry `videoUrl` (`null` without a video) and
///   `screenshots` (`[]` without any), as both examples of the reference show them.
fn run_json(run: &Run) -> Value {
    let mut v = serde_json::to_value(run).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.entry("cancellation").or_insert(Value::Null);
        obj.entry("durationMs").or_insert(Value::Null);
        let specs = obj.get_mut("specs").and_then(Value::as_array_mut);
        for spec in specs.into_iter().flatten() {
            if let Some(results) = spec.get_mut("results").and_then(Value::as_object_mut) {
                results.entry("videoUrl").or_insert(Value::Null);
                results.entry("screenshots").or_insert_with(|| json!([]));
            }
        }
    }
    v
}

fn sim_err(e: SimError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    fail(status, &e.to_string())
}

fn bad(msg: impl AsRef<str>) -> Response {
    fail(StatusCode::BAD_REQUEST, msg.as_ref())
}

// ----- router -----

pub(crate) fn router(world: Arc<World>) -> Router<Arc<World>> {
    Router::new()
        .route("/projects", get(list_projects))
        .route("/projects/{project_id}", get(get_project))
        .route("/projects/{project_id}/runs", get(list_runs))
        .route("/runs/find", get(find_run))
        .route("/runs/{run_id}", get(get_run).delete(delete_run))
        .route("/runs/{run_id}/cancel", put(cancel_run))
        .route("/instances/{instance_id}", get(get_instance))
        .route("/webhooks", get(list_webhooks).post(create_webhook))
        .route(
            "/webhooks/{hook_id}",
            get(get_webhook).put(update_webhook).delete(delete_webhook),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(world, auth))
}

async fn not_found() -> Response {
    fail(StatusCode::NOT_FOUND, "Not found")
}

async fn method_not_allowed() -> Response {
    fail(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
}

/// The API key label of the request, for the cancel `actor`.
#[derive(Debug, Clone)]
struct KeyLabel(String);

async fn auth(State(w): State<Arc<World>>, mut req: Request, next: Next) -> Response {
    let key = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim().to_string())
        });
    let cfg = w.config();
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        return fail(StatusCode::UNAUTHORIZED, "Invalid API key provided");
    };
    if ct_eq(&key, &cfg.api_key) {
        req.extensions_mut()
            .insert(KeyLabel(cfg.api_key_label.clone()));
    } else if cfg
        .read_only_api_key
        .as_deref()
        .is_some_and(|ro| ct_eq(&key, ro))
    {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return fail(
                StatusCode::FORBIDDEN,
                "The API key does not have permission to perform this action",
            );
        }
        req.extensions_mut().insert(KeyLabel("read-only".into()));
    } else {
        return fail(StatusCode::UNAUTHORIZED, "Invalid API key provided");
    }
    next.run(req).await
}

fn ct_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

// ----- query parsing -----

struct Params(Vec<(String, String)>);

impl Params {
    fn parse(raw: Option<String>) -> Params {
        Params(
            raw.map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default(),
        )
    }

    fn one(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All values of any of `keys`, in order; empty values are ignored.
    fn all(&self, keys: &[&str]) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| keys.contains(&k.as_str()) && !v.is_empty())
            .map(|(_, v)| v.clone())
            .collect()
    }
}

const LIMIT_ERROR: &str = "Invalid limit parameter. Must be between 1 and 50";

fn parse_page(p: &Params) -> Result<(usize, Option<Key>, Option<Key>), Response> {
    let limit = match p.one("limit") {
        None => 10,
        Some(s) => match s.trim().parse::<i64>() {
            Ok(n) if (1..=50).contains(&n) => n as usize,
            _ => return Err(bad(LIMIT_ERROR)),
        },
    };
    let after = p.one("starting_after").filter(|s| !s.is_empty());
    let before = p.one("ending_before").filter(|s| !s.is_empty());
    if after.is_some() && before.is_some() {
        return Err(bad(
            "\"starting_after\" and \"ending_before\" are mutually exclusive",
        ));
    }
    let cursor = |name: &str, s: Option<&str>| -> Result<Option<Key>, Response> {
        match s {
            None => Ok(None),
            Some(s) => ids::decode_cursor(s)
                .map(Some)
                .ok_or_else(|| bad(format!("Invalid \"{name}\" cursor"))),
        }
    };
    Ok((
        limit,
        cursor("starting_after", after)?,
        cursor("ending_before", before)?,
    ))
}

fn parse_date(name: &str, s: &str) -> Result<DateTime<Utc>, Response> {
    if let Ok(d) = DateTime::parse_from_rfc3339(s.trim()) {
        return Ok(d.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        && let Some(dt) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(dt.and_utc());
    }
    Err(bad(format!("\"{name}\" must be in ISO 8601 date format")))
}

/// `status` values of the run feed (`RunFeedStatusQuery`).
const FEED_STATUSES: [&str; 4] = ["PASSED", "FAILED", "RUNNING", "FAILING"];
/// `completion_state` values of the run feed (`RunFeedCompletionStateQuery`).
const FEED_COMPLETION_STATES: [&str; 4] = ["COMPLETE", "IN_PROGRESS", "CANCELED", "TIMEOUT"];

fn parse_run_query(p: &Params) -> Result<RunQuery, Response> {
    let (limit, starting_after, ending_before) = parse_page(p)?;
    let mut q = RunQuery {
        limit,
        starting_after,
        ending_before,
        branches: p.all(&["branches[]", "branches", "branch", "branch[]"]),
        tags: p.all(&["tags[]", "tags", "tag", "tag[]"]),
        authors: p.all(&["authors[]", "authors", "author", "author[]"]),
        ..Default::default()
    };
    // The enums of the run feed are exactly the reference's (`RunFeedTagOperatorQuery`,
    // `RunFeedStatusQuery`, `RunFeedCompletionStateQuery`): uppercase, no other spelling
    // (`CANCELLED`, `failing`, `or`, ...), so a client sending one fails here as it would
    // against Currents rather than only in production.
    match p.one("tag_operator") {
        None => {}
        Some("AND") => {}
        Some("OR") => q.tags_any = true,
        Some(_) => return Err(bad("\"tag_operator\" must be one of [AND, OR]")),
    }
    if let Some(s) = p.one("search") {
        if s.chars().count() > 200 {
            return Err(bad(
                "\"search\" length must be less than or equal to 200 characters long",
            ));
        }
        if !s.is_empty() {
            q.search = Some(s.to_lowercase());
        }
    }
    for s in p.all(&["status", "status[]"]) {
        if !FEED_STATUSES.contains(&s.as_str()) {
            return Err(bad(
                "\"status\" must be one of [PASSED, FAILED, RUNNING, FAILING]",
            ));
        }
        q.statuses.push(RunStatus::parse(&s));
    }
    for s in p.all(&["completion_state", "completion_state[]"]) {
        if !FEED_COMPLETION_STATES.contains(&s.as_str()) {
            return Err(bad(
                "\"completion_state\" must be one of [COMPLETE, IN_PROGRESS, CANCELED, TIMEOUT]",
            ));
        }
        q.completion_states.push(CompletionState::parse(&s));
    }
    if let Some(s) = p.one("date_start").filter(|s| !s.is_empty()) {
        q.date_start = Some(parse_date("date_start", s)?);
    }
    if let Some(s) = p.one("date_end").filter(|s| !s.is_empty()) {
        q.date_end = Some(parse_date("date_end", s)?);
    }
    if let Some(s) = p.one("pr_id").filter(|s| !s.is_empty()) {
        if s.len() > 128 || !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(bad(
                "\"pr_id\" must be printable ASCII of at most 128 characters",
            ));
        }
        q.pr_id = Some(s.to_string());
    }
    Ok(q)
}

// ----- handlers -----

async fn list_projects(State(w): State<Arc<World>>, RawQuery(raw): RawQuery) -> Response {
    let p = Params::parse(raw);
    let (limit, after, before) = match parse_page(&p) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (items, has_more) = w.list_projects(limit, after, before);
    ok_list(items, has_more)
}

async fn get_project(State(w): State<Arc<World>>, Path(id): Path<String>) -> Response {
    match w.project(&id) {
        Some(p) => ok(p),
        None => fail(StatusCode::NOT_FOUND, "Project not found"),
    }
}

async fn list_runs(
    State(w): State<Arc<World>>,
    Path(project): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let p = Params::parse(raw);
    let q = match parse_run_query(&p) {
        Ok(q) => q,
        Err(r) => return r,
    };
    match w.list_runs(&project, &q) {
        Ok((items, has_more)) => ok_list(items.iter().map(run_json).collect::<Vec<_>>(), has_more),
        Err(e) => sim_err(e),
    }
}

async fn get_run(State(w): State<Arc<World>>, Path(id): Path<String>) -> Response {
    match w.run(&id) {
        Some(r) => ok(run_json(&r)),
        None => fail(StatusCode::NOT_FOUND, "Run not found"),
    }
}

/// `GET /runs/find` (`currents-notes.md` §1.6): `projectId` (required), then either
/// `ciBuildId` or `branch` plus optional `tags[]` (without either, 400); with
/// `pwLastRun=true`, `data.pwLastRun` is Playwright's `.last-run.json` of the run
/// (Playwright runs only).
async fn find_run(State(w): State<Arc<World>>, RawQuery(raw): RawQuery) -> Response {
    let p = Params::parse(raw);
    let Some(project) = p.one("projectId").filter(|s| !s.is_empty()) else {
        return bad("\"projectId\" is required");
    };
    let ci = p.one("ciBuildId").filter(|s| !s.is_empty());
    let branch = p.one("branch").filter(|s| !s.is_empty());
    if ci.is_none() && branch.is_none() {
        return bad(FIND_SELECTOR_REQUIRED);
    }
    let pw_last_run = match p.one("pwLastRun").map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return bad("\"pwLastRun\" must be a boolean"),
    };
    let tags = p.all(&["tags[]", "tags", "tag", "tag[]"]);
    match w.find_run(project, ci, branch, &tags) {
        Ok(r) => {
            let mut v = run_json(&r);
            if pw_last_run
                && let Some(last) = w.pw_last_run(&r.run_id)
                && let Some(obj) = v.as_object_mut()
            {
                obj.insert("pwLastRun".into(), last);
            }
            ok(v)
        }
        Err(e) => sim_err(e),
    }
}

async fn cancel_run(State(w): State<Arc<World>>, Path(id): Path<String>, req: Request) -> Response {
    let label = req
        .extensions()
        .get::<KeyLabel>()
        .map(|k| k.0.clone())
        .unwrap_or_else(|| "sim".into());
    match w.cancel_run(&id, &label) {
        Ok(r) => ok(r),
        Err(e) => sim_err(e),
    }
}

async fn delete_run(State(w): State<Arc<World>>, Path(id): Path<String>) -> Response {
    match w.delete_run(&id) {
        Ok(r) => ok(r),
        Err(e) => sim_err(e),
    }
}

async fn get_instance(State(w): State<Arc<World>>, Path(id): Path<String>) -> Response {
    match w.instance(&id) {
        Some(i) => ok(i),
        None => fail(StatusCode::NOT_FOUND, "Instance not found"),
    }
}

fn project_param(p: &Params) -> Result<String, Response> {
    p.one("projectId")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| bad("\"projectId\" is required"))
}

fn webhook_body(headers: &HeaderMap, body: &Bytes) -> Result<WebhookSpec, Response> {
    if body.is_empty() {
        return Ok(WebhookSpec::default());
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|ct| ct.to_ascii_lowercase().contains("json"));
    if !is_json {
        return Err(bad("Invalid request body: expected application/json"));
    }
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| bad("Invalid request body: malformed JSON"))?;
    if !v.is_object() {
        return Err(bad("Invalid request body: expected an object"));
    }
    // `headers` may come as an object; the API stores it as a JSON string.
    let mut v = v;
    if let Some(h) = v.get("headers").filter(|h| h.is_object()).cloned() {
        v["headers"] = serde_json::Value::String(h.to_string());
    }
    serde_json::from_value(v).map_err(|e| bad(format!("Invalid request body: {e}")))
}

async fn list_webhooks(State(w): State<Arc<World>>, RawQuery(raw): RawQuery) -> Response {
    let p = Params::parse(raw);
    let project = match project_param(&p) {
        Ok(p) => p,
        Err(r) => return r,
    };
    match w.list_webhooks(&project) {
        Ok(v) => ok(v),
        Err(e) => sim_err(e),
    }
}

async fn create_webhook(
    State(w): State<Arc<World>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = Params::parse(raw);
    let project = match project_param(&p) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let spec = match webhook_body(&headers, &body) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match w.create_webhook(&project, spec) {
        Ok(h) => ok_created(h),
        Err(e) => sim_err(e),
    }
}

async fn get_webhook(State(w): State<Arc<World>>, Path(id): Path<String>) -> Response {
    match w.webhook(&id) {
        Some(h) => ok(h),
        None => fail(StatusCode::NOT_FOUND, "Webhook not found"),
    }
}

async fn update_webhook(
    State(w): State<Arc<World>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let spec = match webhook_body(&headers, &body) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match w.update_webhook(&id, spec) {
        Ok(h) => ok(h),
        Err(e) => sim_err(e),
    }
}

async fn delete_webhook(State(w): State<Arc<World>>, Path(id): Path<String>) -> Response {
    match w.delete_webhook(&id) {
        Ok(h) => ok(h),
        Err(e) => sim_err(e),
    }
}
