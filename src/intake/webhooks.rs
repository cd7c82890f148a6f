//! Webhook endpoints (SPEC §5). Authentication happens in typed extractors before any
//! parsing; then whether the event is handled is decided from its name alone (GitHub:
//! `X-GitHub-Event`, and the `action` of a `pull_request` or `workflow_run`; Currents: the
//! body's `event` field, read on its own), and only a handled event must be JSON and
//! well-formed. Handlers only store the event durably and answer, in this order:
//!
//! | case | status |
//! |---|---|
//! | secret not configured | 404 |
//! | bad or missing secret / signature, stale or future timestamp | 401 |
//! | body over the limit (1 MiB Currents, 25 MiB GitHub) | 413 |
//! | body cut short or otherwise unreadable | 400 |
//! | GitHub: the [`BodyBudget`] of unverified bodies spent | 503, `Retry-After` |
//! | missing `X-GitHub-Event` | 400 |
//! | event not handled (whatever the rest of the body or its content type) | 202, nothing stored |
//! | handled event: not JSON, malformed body, missing delivery id or run URL | 400 |
//! | new event, durably committed | 202 |
//! | repeat of a stored delivery | 200, nothing done |
//! | store cannot commit now (locked, read-only, full, connection lost) | 503, `Retry-After` |
//! | store failed for good (damaged file, constraint, bad query) | 500 |
//!
//! A GitHub signature header that is not `sha256=` and 64 hex digits is refused before
//! any of the body is read, and the bytes of bodies read before their signature is
//! checked are bounded across the process by a [`BodyBudget`]. (A Currents body is read
//! only once its secret header matched.)
//!
//! Payloads are never logged above DEBUG.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use chrono::Utc;
use futures::StreamExt as _;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::currents::CurrentsWebhookPayload;
use crate::github::events;
use crate::server::AppState;
use crate::store::{InsertOutcome, NewDelivery};

/// Body limit of `POST /webhooks/currents`.
pub const CURRENTS_BODY_LIMIT: usize = 1024 * 1024;
/// Body limit of `POST /webhooks/github`.
pub const GITHUB_BODY_LIMIT: usize = 25 * 1024 * 1024;
/// Bytes of GitHub webhook bodies that may be held, across the process, before their
/// signature is checked (see [`BodyBudget`]).
pub const UNVERIFIED_BODY_BUDGET: usize = 64 * 1024 * 1024;
/// `Retry-After` of a webhook answered 503 because the store cannot commit just now
/// (locked past its busy timeout, read-only, full).
pub const STORE_RETRY_AFTER_SECS: u64 = 5;
/// The budget's unit: a body holds one permit per KiB read so far.
const BUDGET_UNIT: usize = 1024;
/// `Retry-After` of a webhook turned away because the budget is spent: the bodies
/// holding it are answered within the request timeout (30 s), most much sooner.
pub const BUDGET_RETRY_AFTER_SECS: u64 = 5;

/// The bytes of webhook bodies read before their sender is authenticated, bounded for
/// the whole process (the router holds one): without it, 1 024 request slots of 25 MiB
/// each let unauthenticated clients make the bot buffer 25 GiB.
///
/// A body takes its share as it arrives, one permit per KiB, never waiting: one that
/// cannot is answered 503 with `Retry-After`. A body that arrives in one piece (most
/// do) costs one acquire and one release. The share is given back once the signature
/// has been checked, whatever the outcome.
pub struct BodyBudget {
    units: Semaphore,
    total: usize,
}

impl BodyBudget {
    /// A budget of `bytes` (rounded down to whole KiB).
    pub fn new(bytes: usize) -> Self {
        let total = bytes / BUDGET_UNIT;
        Self {
            units: Semaphore::new(total),
            total,
        }
    }

    /// Bytes held now (in whole KiB per body).
    pub fn in_use(&self) -> usize {
        (self.total - self.units.available_permits()) * BUDGET_UNIT
    }
}

impl Default for BodyBudget {
    fn default() -> Self {
        Self::new(UNVERIFIED_BODY_BUDGET)
    }
}

/// A rejection with a status and a short, payload-free reason.
#[derive(Debug)]
pub struct Rejection {
    pub status: StatusCode,
    pub reason: &'static str,
}

impl Rejection {
    fn new(status: StatusCode, reason: &'static str) -> Self {
        Self { status, reason }
    }
}

impl Rejection {
    /// The answer, without logging (the handlers log through [`rejected`], which knows
    /// the source).
    fn answer(self) -> Response {
        let mut answer = (self.status, axum::Json(json!({ "error": self.reason }))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            answer.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from(BUDGET_RETRY_AFTER_SECS),
            );
        }
        answer
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        // The status and a fixed reason only: never the headers or the body.
        tracing::warn!(
            status = self.status.as_u16(),
            reason = self.reason,
            "webhook rejected"
        );
        self.answer()
    }
}

/// 413 "body too large".
fn too_large() -> Rejection {
    Rejection::new(StatusCode::PAYLOAD_TOO_LARGE, "body too large")
}

/// A `Content-Length` over `limit`: refused before any of the body is read.
fn declared_too_large(headers: &HeaderMap, limit: usize) -> bool {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|len| len > limit as u64)
}

/// Reads a body of at most `limit` bytes: 413 past it (by `Content-Length` before
/// reading, or as it arrives), 400 when it cannot be read (the client stopped sending,
/// a short or malformed body). With a `budget`, the bytes read are held in it (503 when
/// it has no room) until the returned permit is dropped.
///
/// A body that arrives in one piece is returned as it is; one in several pieces is
/// copied once into a buffer sized by its `Content-Length`.
async fn read_limited<'b>(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    budget: Option<&'b BodyBudget>,
) -> Result<(Bytes, Option<SemaphorePermit<'b>>), Rejection> {
    if declared_too_large(headers, limit) {
        return Err(too_large());
    }
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut stream = body.into_data_stream();
    let mut permit: Option<SemaphorePermit<'b>> = None;
    let mut held = 0usize;
    let mut read = 0usize;
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|_| Rejection::new(StatusCode::BAD_REQUEST, "body could not be read"))?;
        read += chunk.len();
        if read > limit {
            return Err(too_large());
        }
        if let Some(budget) = budget {
            let needed = read.div_ceil(BUDGET_UNIT);
            if needed > held {
                // `needed - held` is at most a chunk's KiB, under the limit: it fits.
                let more = budget
                    .units
                    .try_acquire_many((needed - held) as u32)
                    .map_err(|_| {
                        Rejection::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "too many webhook bodies being received; retry later",
                        )
                    })?;
                match &mut permit {
                    Some(p) => p.merge(more),
                    None => permit = Some(more),
                }
                held = needed;
            }
        }
        if let Some(buf) = &mut joined {
            buf.extend_from_slice(&chunk);
        } else if let Some(one) = first.take() {
            let mut buf = BytesMut::with_capacity(joined_capacity(declared, read, limit));
            buf.extend_from_slice(&one);
            buf.extend_from_slice(&chunk);
            joined = Some(buf);
        } else {
            first = Some(chunk);
        }
    }
    let body = match joined {
        Some(buf) => buf.freeze(),
        None => first.unwrap_or_default(),
    };
    Ok((body, permit))
}

/// The first capacity of a body that arrives in several pieces, `read` bytes so far: its
/// declared length, but at most twice what has arrived (the buffer grows as more does).
/// A client declaring 25 MiB and sending a few bytes must not get 25 MiB reserved: the
/// budget counts what arrived, so what is allocated must follow it.
fn joined_capacity(declared: Option<usize>, read: usize, limit: usize) -> usize {
    declared
        .unwrap_or(0)
        .clamp(read, limit)
        .min(read.saturating_mul(2))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let mime = v
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        })
        .unwrap_or(true)
}

/// A Currents webhook whose secret header and timestamp were verified.
// One value per request, moved once into the handler: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum CurrentsWebhook {
    /// An event runwarden does not handle (its `event` is not one of
    /// [`crate::currents::RUN_EVENTS`]): nothing else of the body was checked.
    Ignored,
    /// A run event, parsed.
    Run {
        /// The event name, upper-cased (one of [`crate::currents::RUN_EVENTS`]).
        event: String,
        payload: CurrentsWebhookPayload,
        run_id: String,
        body: Bytes,
    },
}

/// The `event` of a Currents body, read on its own (the rest of the body unchecked);
/// `None` when the body has no string `event` (or is not JSON).
fn currents_event_name(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        event: String,
    }
    serde_json::from_slice::<Named>(body).ok().map(|n| n.event)
}

/// The `action` of a `pull_request` or `workflow_run` payload when it is one runwarden
/// does not act on, read on its own (the rest of the payload unchecked); `None` for
/// other events, the actions acted on (`closed`, `completed`), or no string `action`.
///
/// It mirrors the action filter of [`events::parse_event`] (the unit test
/// `ignored_actions_agree_with_parse_event` keeps the two in step), so that an action
/// runwarden ignores is answered 202 without the fields only a handled action needs.
fn ignored_action(event: &str, body: &[u8]) -> Option<String> {
    let acted_on = match event {
        "pull_request" => "closed",
        "workflow_run" => "completed",
        _ => return None,
    };
    #[derive(serde::Deserialize)]
    struct Action {
        action: String,
    }
    let action = serde_json::from_slice::<Action>(body).ok()?.action;
    (action != acted_on).then_some(action)
}

/// Checks an `x-timestamp` value (epoch seconds or milliseconds) against the tolerance.
pub fn timestamp_ok(raw: &str, now_ms: i64, tolerance_ms: i64) -> bool {
    let Ok(v) = raw.trim().parse::<i64>() else {
        return false;
    };
    if v <= 0 {
        return false;
    }
    let ms = if v > 1_000_000_000_000 {
        v
    } else {
        v.saturating_mul(1000)
    };
    // Saturating: no clock or header value can overflow the difference.
    now_ms.saturating_sub(ms).saturating_abs() <= tolerance_ms
}

impl FromRequest<AppState> for CurrentsWebhook {
    type Rejection = Rejection;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let secrets = &state.secrets.currents_webhook_secrets;
        if secrets.is_empty() {
            return Err(Rejection::new(StatusCode::NOT_FOUND, "not found"));
        }
        let (parts, body) = req.into_parts();
        let cfg = &state.config.currents;
        let given = parts
            .headers
            .get(cfg.webhook_header.as_str())
            .map(|v| v.as_bytes())
            .unwrap_or(b"");
        // Compare against every secret, without an early exit, in constant time.
        let mut ok = subtle::Choice::from(0u8);
        for s in secrets {
            ok |= s.expose().as_bytes().ct_eq(given);
        }
        if given.is_empty() || !bool::from(ok) {
            return Err(Rejection::new(
                StatusCode::UNAUTHORIZED,
                "bad webhook secret",
            ));
        }
        if let Some(ts) = parts.headers.get("x-timestamp") {
            let ok = ts.to_str().is_ok_and(|t| {
                timestamp_ok(
                    t,
                    Utc::now().timestamp_millis(),
                    cfg.webhook_tolerance.as_millis() as i64,
                )
            });
            if !ok {
                return Err(Rejection::new(
                    StatusCode::UNAUTHORIZED,
                    "x-timestamp outside the tolerance",
                ));
            }
        }
        // Read once the secret matched: no budget needed.
        let (body, _) = read_limited(body, &parts.headers, CURRENTS_BODY_LIMIT, None).await?;
        // Handled? Decided from the event name alone; the rest is checked only for the
        // events runwarden handles (SPEC §5: another event is 202 and nothing).
        if let Some(name) = currents_event_name(&body)
            && !crate::currents::RUN_EVENTS.contains(&name.to_ascii_uppercase().as_str())
        {
            return Ok(Self::Ignored);
        }
        if !is_json(&parts.headers) {
            return Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                "expected application/json",
            ));
        }
        let payload: CurrentsWebhookPayload = serde_json::from_slice(&body).map_err(|_| {
            Rejection::new(StatusCode::BAD_REQUEST, "malformed Currents webhook body")
        })?;
        let dashboard = url::Url::parse(&state.config.currents.dashboard_url).ok();
        let run_host = url::Url::parse(&payload.run_url).ok();
        let same_host = match (&dashboard, &run_host) {
            (Some(d), Some(r)) => d.host_str() == r.host_str(),
            _ => false,
        };
        if !same_host {
            return Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                "runUrl is not a run of the configured dashboard",
            ));
        }
        let Some(run_id) = payload.run_id() else {
            return Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                "runUrl has no run id",
            ));
        };
        Ok(Self::Run {
            event: payload.event.to_ascii_uppercase(),
            payload,
            run_id,
            body,
        })
    }
}

/// A GitHub webhook whose `X-Hub-Signature-256` was verified over the raw body.
pub enum GithubWebhook {
    /// An event type runwarden does not handle (see [`events::is_handled`]): nothing
    /// else of the request was checked.
    Ignored { event: String },
    /// A handled event type, sent as JSON with a delivery id (its payload is not parsed
    /// yet).
    Handled {
        event: String,
        delivery: String,
        body: Bytes,
    },
}

/// The digest of an `X-Hub-Signature-256` value: `sha256=` and exactly 64 hex digits
/// (either case); `None` for anything else.
pub fn parse_github_signature(header: &str) -> Option<[u8; 32]> {
    let hex_sig = header.strip_prefix("sha256=")?;
    if hex_sig.len() != 64 {
        return None;
    }
    let mut sig = [0u8; 32];
    hex::decode_to_slice(hex_sig, &mut sig).ok()?;
    Some(sig)
}

/// Verifies `sha256=<hex>` against any of the secrets, in constant time.
pub fn verify_github_signature(
    secrets: &[crate::secret::Secret],
    header: &str,
    body: &[u8],
) -> bool {
    parse_github_signature(header).is_some_and(|sig| verify_digest(secrets, &sig, body))
}

/// Whether `sig` is the HMAC-SHA256 of `body` under any of the secrets.
fn verify_digest(secrets: &[crate::secret::Secret], sig: &[u8; 32], body: &[u8]) -> bool {
    let mut ok = false;
    for s in secrets {
        if s.expose().is_empty() {
            continue;
        }
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(s.expose().as_bytes()) else {
            continue;
        };
        mac.update(body);
        ok |= mac.verify_slice(sig).is_ok();
    }
    ok
}

impl GithubWebhook {
    /// Authenticates and reads a GitHub webhook; the body's bytes are held in `budget`
    /// until its signature has been checked.
    async fn read(req: Request, state: &AppState, budget: &BodyBudget) -> Result<Self, Rejection> {
        let secrets = &state.secrets.github_webhook_secrets;
        if secrets.is_empty() {
            return Err(Rejection::new(StatusCode::NOT_FOUND, "not found"));
        }
        let (parts, body) = req.into_parts();
        let Some(sig) = parts
            .headers
            .get("x-hub-signature-256")
            .and_then(|v| v.to_str().ok())
        else {
            return Err(Rejection::new(
                StatusCode::UNAUTHORIZED,
                "missing X-Hub-Signature-256",
            ));
        };
        // A signature that cannot be one is refused before the body is read.
        let Some(sig) = parse_github_signature(sig) else {
            return Err(Rejection::new(StatusCode::UNAUTHORIZED, "bad signature"));
        };
        let (body, permit) =
            read_limited(body, &parts.headers, GITHUB_BODY_LIMIT, Some(budget)).await?;
        let verified = verify_digest(secrets, &sig, &body);
        // The sender is known (or turned away): the body leaves the budget.
        drop(permit);
        if !verified {
            return Err(Rejection::new(StatusCode::UNAUTHORIZED, "bad signature"));
        }
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.len() <= 128)
                .map(str::to_string)
        };
        let Some(event) = header("x-github-event") else {
            return Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                "missing X-GitHub-Event",
            ));
        };
        // SPEC §5: an event runwarden does not handle is 202 and nothing, whatever its
        // content type or delivery id.
        if !events::is_handled(&event) {
            return Ok(Self::Ignored { event });
        }
        let Some(delivery) = header("x-github-delivery") else {
            return Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                "missing X-GitHub-Delivery",
            ));
        };
        if !is_json(&parts.headers) {
            return Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                "expected application/json",
            ));
        }
        Ok(Self::Handled {
            event,
            delivery,
            body,
        })
    }
}

/// Marks a webhook answer its handler counted in `runwarden_webhooks_total`: the
/// router's layer ([`crate::server::count_webhooks`]) counts the answers without it (the
/// 408 of the request timeout, the 500 of a panic), so that each is counted once.
#[derive(Debug, Clone, Copy)]
pub struct Counted;

/// Counts `response` (a webhook's answer) in `runwarden_webhooks_total` and, when it is
/// one the layer counts too (a 408 or 500), marks it [`Counted`] (only then: a mark is an
/// allocation, which an ack need not pay for).
fn counted(state: &AppState, source: &'static str, mut response: Response) -> Response {
    state.metrics.inc(
        "runwarden_webhooks_total",
        &[("source", source), ("status", response.status().as_str())],
    );
    if crate::server::counted_by_the_layer(response.status()) {
        response.extensions_mut().insert(Counted);
    }
    response
}

fn answer(
    state: &AppState,
    source: &'static str,
    status: StatusCode,
    body: serde_json::Value,
) -> Response {
    counted(state, source, (status, axum::Json(body)).into_response())
}

async fn store_delivery(state: &AppState, source: &'static str, delivery: NewDelivery) -> Response {
    let id = delivery.delivery_id.clone();
    match state.store.insert_delivery(delivery).await {
        Ok(InsertOutcome::Inserted) => {
            tracing::debug!(source, delivery = %id, "event stored");
            state.wake.notify_one();
            answer(
                state,
                source,
                StatusCode::ACCEPTED,
                json!({ "status": "accepted", "delivery": id }),
            )
        }
        Ok(InsertOutcome::Duplicate) => {
            tracing::debug!(source, delivery = %id, "duplicate delivery ignored");
            answer(
                state,
                source,
                StatusCode::OK,
                json!({ "status": "duplicate", "delivery": id }),
            )
        }
        // Not stored: never a 2xx. A store that may take it later (locked, read-only,
        // full, a connection lost) is a 503 with `Retry-After`; one that no retry mends
        // (a damaged file, a constraint or a bad query: a bug or a broken database) a 500.
        Err(e) if e.is_unavailable() => {
            tracing::error!(source, delivery = %id, error = %e, "cannot store webhook event");
            let mut r = answer(
                state,
                source,
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": "event store unavailable; retry later" }),
            );
            r.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from(STORE_RETRY_AFTER_SECS),
            );
            r
        }
        Err(e) => {
            tracing::error!(source, delivery = %id, error = %e, "cannot store webhook event");
            answer(
                state,
                source,
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": "event store failed; see the bot's log" }),
            )
        }
    }
}

/// A rejected webhook's answer, counted in `runwarden_webhooks_total` like every other
/// answer (a wrong secret shows there as a run of 401s).
/// Logged at WARN with the source (`currents` or `github`), the status and the fixed
/// reason: never a header value or the body.
fn rejected(state: &AppState, source: &'static str, rejection: Rejection) -> Response {
    tracing::warn!(
        source,
        status = rejection.status.as_u16(),
        reason = rejection.reason,
        "webhook rejected"
    );
    counted(state, source, rejection.answer())
}

/// `POST /webhooks/currents`.
pub async fn currents(
    State(state): State<AppState>,
    hook: Result<CurrentsWebhook, Rejection>,
) -> Response {
    let (event, payload, run_id, body) = match hook {
        Ok(CurrentsWebhook::Run {
            event,
            payload,
            run_id,
            body,
        }) => (event, payload, run_id, body),
        Ok(CurrentsWebhook::Ignored) => {
            return answer(
                &state,
                "currents",
                StatusCode::ACCEPTED,
                json!({ "status": "ignored" }),
            );
        }
        Err(r) => return rejected(&state, "currents", r),
    };
    // Currents sends no delivery id: a run has one event of each kind per group.
    let mut h = Sha256::new();
    h.update(event.as_bytes());
    h.update(b"\0");
    h.update(run_id.as_bytes());
    h.update(b"\0");
    h.update(payload.group_id.as_deref().unwrap_or("").as_bytes());
    let delivery_id = format!("{}:{}:{}", event, run_id, &hex::encode(h.finalize())[..16]);
    let delivery = NewDelivery {
        source: "currents".into(),
        delivery_id,
        event,
        payload: String::from_utf8_lossy(&body).into_owned(),
        received_at: Utc::now(),
    };
    store_delivery(&state, "currents", delivery).await
}

/// `POST /webhooks/github`, its unverified body held in `budget` (the router's).
pub async fn github(state: AppState, budget: Arc<BodyBudget>, req: Request) -> Response {
    let hook = GithubWebhook::read(req, &state, &budget).await;
    let ignored = |state: &AppState| {
        answer(
            state,
            "github",
            StatusCode::ACCEPTED,
            json!({ "status": "ignored" }),
        )
    };
    let (event, delivery, body) = match hook {
        Ok(GithubWebhook::Handled {
            event,
            delivery,
            body,
        }) => (event, delivery, body),
        Ok(GithubWebhook::Ignored { event }) => {
            tracing::debug!(event = %event, "GitHub event not handled");
            return ignored(&state);
        }
        Err(r) => return rejected(&state, "github", r),
    };
    // An action runwarden does not act on (`pull_request` opened, ...) is not handled
    // either: 202 without the fields only a handled action needs.
    if let Some(action) = ignored_action(&event, &body) {
        tracing::debug!(event = %event, delivery = %delivery, action = %action, "GitHub action not handled");
        return ignored(&state);
    }
    let now = Utc::now();
    // Reject what cannot be parsed now, so a bad payload is a 400, not a stored event;
    // what is stored is the part of the payload the rules read (`ReadEvent::kept`).
    match events::read_event(&event, &body, now) {
        Err(e) => {
            // serde's message can quote the payload (`invalid type: string "..."`): it
            // stays at DEBUG, like payloads.
            tracing::warn!(event = %event, delivery = %delivery, bytes = body.len(), "malformed GitHub payload");
            tracing::debug!(event = %event, delivery = %delivery, "malformed GitHub payload: {}", e.detail);
            answer(
                &state,
                "github",
                StatusCode::BAD_REQUEST,
                json!({ "error": "malformed payload" }),
            )
        }
        Ok(events::ReadEvent {
            event: events::GithubEvent::Ping | events::GithubEvent::Ignored(_),
            ..
        }) => ignored(&state),
        Ok(read) => {
            let delivery = NewDelivery {
                source: "github".into(),
                delivery_id: delivery,
                event,
                payload: read.kept,
                received_at: now,
            };
            store_delivery(&state, "github", delivery).await
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_body_in_pieces_gets_a_buffer_that_follows_what_arrived() {
        use super::joined_capacity;
        let mib = 1024 * 1024;
        // A declared 24 MiB of which 2 KiB arrived: 4 KiB, not 24 MiB.
        assert_eq!(joined_capacity(Some(24 * mib), 2048, 25 * mib), 4096);
        // A body that has mostly arrived gets its exact declared length.
        assert_eq!(joined_capacity(Some(3000), 2000, 25 * mib), 3000);
        // Never less than what arrived, never more than the limit.
        assert_eq!(joined_capacity(None, 5000, 25 * mib), 5000);
        assert_eq!(
            joined_capacity(Some(30 * mib), 20 * mib, 25 * mib),
            25 * mib
        );
    }

    use super::*;
    use crate::secret::Secret;

    #[test]
    fn timestamps_in_seconds_and_millis() {
        let now = 1_700_000_000_000;
        assert!(timestamp_ok("1700000000000", now, 300_000));
        assert!(timestamp_ok("1700000000", now, 300_000));
        assert!(!timestamp_ok("1699999000", now, 300_000));
        assert!(!timestamp_ok("1700001000", now, 300_000));
        assert!(!timestamp_ok("-5", now, 300_000));
        assert!(!timestamp_ok("soon", now, 300_000));
    }

    #[test]
    fn ignored_actions_agree_with_parse_event() {
        let now = Utc::now();
        let pr = |action: &str| {
            json!({
                "action": action, "number": 3,
                "pull_request": {"head": {"ref": "feat/x", "repo": {"full_name": "acme/web"}}},
                "repository": {"full_name": "acme/web"},
            })
        };
        let run = |action: &str| {
            json!({
                "action": action, "repository": {"full_name": "acme/web"},
                "workflow_run": {"id": 42, "head_sha": "abc", "head_branch": "main"},
            })
        };
        for action in [
            "opened",
            "closed",
            "reopened",
            "synchronize",
            "labeled",
            "edited",
            "requested",
            "in_progress",
            "completed",
            "",
            "CLOSED",
        ] {
            for (event, body) in [("pull_request", pr(action)), ("workflow_run", run(action))] {
                let body = serde_json::to_vec(&body).unwrap();
                let parsed = events::parse_event(event, &body, now).unwrap();
                assert_eq!(
                    ignored_action(event, &body).is_some(),
                    matches!(parsed, events::GithubEvent::Ignored(_)),
                    "{event} {action}: {parsed:?}"
                );
            }
        }
        assert_eq!(ignored_action("push", br#"{"action":"opened"}"#), None);
        assert_eq!(ignored_action("pull_request", br#"{"action":1}"#), None);
        assert_eq!(ignored_action("pull_request", b"{not json"), None);
    }

    #[test]
    fn github_signatures() {
        let body = b"{\"zen\":\"x\"}";
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s2").unwrap();
        mac.update(body);
        let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let secrets = vec![Secret::new("s1"), Secret::new("s2")];
        assert!(verify_github_signature(&secrets, &good, body));
        assert!(!verify_github_signature(
            &secrets,
            &good,
            b"{\"zen\":\"y\"}"
        ));
        assert!(!verify_github_signature(
            &secrets,
            &good.replace("sha256=", "sha1="),
            body
        ));
        assert!(!verify_github_signature(
            &secrets,
            &good[..good.len() - 2],
            body
        ));
        assert!(!verify_github_signature(&[Secret::new("s1")], &good, body));
    }

    #[test]
    fn a_signature_header_is_sha256_and_64_hex_digits() {
        let digits = "0123456789abcdef".repeat(4);
        assert!(parse_github_signature(&format!("sha256={digits}")).is_some());
        let upper = format!("sha256={}", digits.to_uppercase());
        assert_eq!(
            parse_github_signature(&upper),
            parse_github_signature(&format!("sha256={digits}"))
        );
        for bad in [
            format!("sha256={}", &digits[..63]),
            format!("sha256={digits}0"),
            format!("sha256={digits}00"),
            format!("sha256= {}", &digits[..63]),
            format!("sha256={} ", &digits[..63]),
            format!("sha256={}g", &digits[..63]),
            format!("sha256={}é", &digits[..62]),
            format!("SHA256={digits}"),
            format!("sha1={digits}"),
            digits.clone(),
            "sha256=".into(),
            String::new(),
        ] {
            assert_eq!(parse_github_signature(&bad), None, "{bad:?}");
        }
    }
}
