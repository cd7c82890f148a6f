//! The admin API (SPEC §5): `GET /api/actions`, `GET /api/rules`,
//! `POST /api/sweep/{rule}`, behind `Authorization: Bearer $RUNWARDEN_ADMIN_TOKEN`
//! (404 when no token is configured, 401 without it or with another).

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use crate::config::RuleKind;
use crate::store::actions::AuditCursor;
use crate::store::{AuditEntry, InsertOutcome, NewDelivery};

/// Proof that the request carried the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(token) = &state.secrets.admin_token else {
            return Err((StatusCode::NOT_FOUND, "not found").into_response());
        };
        // The header's bytes as sent: a token need not be ASCII.
        let given = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| bearer_token(v.as_bytes()))
            .unwrap_or(b"");
        if given.is_empty() || !token_matches(given, token.expose().as_bytes()) {
            // The same `{"error"}` shape as the API's other errors.
            let mut answer = error(
                StatusCode::UNAUTHORIZED,
                "unauthorized: send the admin token (RUNWARDEN_ADMIN_TOKEN) as Authorization: Bearer <token>",
            );
            answer.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            return Err(answer);
        }
        Ok(Admin)
    }
}

/// The token of an `Authorization: Bearer <token>` value, as bytes. The scheme is
/// case-insensitive (RFC 9110 §11.1: `bearer`, `BEARER`) and followed by one or more
/// spaces; the token is returned as sent (UTF-8 or not), for an exact comparison.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, token) = (&value[..space], &value[space..]);
    let start = token.iter().position(|&b| b != b' ').unwrap_or(token.len());
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then_some(&token[start..])
}

/// Whether `given` is the admin token `expected`, in constant time: their SHA-256
/// digests are compared, so that neither the token's content nor its length shows in
/// how long the comparison takes.
fn token_matches(given: &[u8], expected: &[u8]) -> bool {
    bool::from(Sha256::digest(given).ct_eq(&Sha256::digest(expected)))
}

#[derive(Debug, Deserialize)]
pub struct ActionsQuery {
    /// A humantime duration, e.g. `24h`; one longer than the time since the Unix epoch
    /// (e.g. `300000y`) means everything, as `audit --since` (see
    /// [`crate::commands::audit::since_cutoff`]).
    pub since: Option<String>,
    /// A rule of the config (404 when there is none of that name, as `audit --rule`
    /// exits 2).
    pub rule: Option<String>,
    /// At most this many entries, 1 to [`MAX_LIMIT`] (500 when absent).
    pub limit: Option<u32>,
    /// The entries after this cursor (`AT_ID`, see [`AuditCursor`]), as the URL of a
    /// `Link: <...>; rel="next"` header gives it: the next page.
    pub before: Option<String>,
}

/// The largest `limit` of `GET /api/actions`.
pub const MAX_LIMIT: u32 = 10_000;

/// An error answer: `{"error": message}`, as `POST /api/sweep/{rule}` gives.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// 503 `{"error": ...}`: the store cannot be read or written now.
fn store_unavailable() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "store unavailable; retry later",
    )
}

/// `GET /api/actions`: the audit entries, newest first, as `audit --format json`, at most
/// `limit` of them (500 when absent).
///
/// The body is always that JSON array. When more entries match than it holds, the answer
/// says so with a `Link: </api/actions?...&before=CURSOR>; rel="next"` header (RFC 8288,
/// as GitHub's API pages): the same path and query (`since`, `rule`, `limit`,
/// percent-encoded), and `before` the cursor of the page's last entry, for the entries
/// after it. Following `rel="next"` until an answer has no `Link` reads every entry once:
/// the cursor is the last entry's decision time and id (`AT_ID`, see [`AuditCursor`]),
/// an order in which no two entries tie, so none is skipped or repeated, even among
/// entries of the same millisecond. Each page is read afresh: entries decided while a
/// client pages are newer than its cursor, on none of its later pages. The URL is
/// relative to the request's origin (a path and query). A `since` is counted again from
/// the time of each page's request. No total count is given (it would need a count of
/// the whole log).
///
/// 400 `{"error": ...}` for a query string that does not parse, a `since` that is not a
/// duration, a `limit` outside 1..=10000 or a `before` that is not such a cursor; 404
/// `{"error": "no rule named \"x\""}` for a `rule` the config does not have.
pub async fn actions(
    _: Admin,
    State(state): State<AppState>,
    uri: Uri,
    q: Result<Query<ActionsQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let since = match q
        .since
        .as_deref()
        .map(|s| crate::commands::audit::since_cutoff(s, Utc::now()))
        .transpose()
    {
        Ok(cutoff) => cutoff.flatten(),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("since: {e} (expected a duration like 24h)"),
            );
        }
    };
    if let Some(rule) = &q.rule
        && !state.config.rules.iter().any(|r| &r.name == rule)
    {
        return error(StatusCode::NOT_FOUND, format!("no rule named {rule:?}"));
    }
    let limit = q.limit.unwrap_or(500);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("limit: expected 1 to {MAX_LIMIT}, got {limit}"),
        );
    }
    let before = match q
        .before
        .as_deref()
        .map(str::parse::<AuditCursor>)
        .transpose()
    {
        Ok(before) => before,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("before: {e}")),
    };
    // One more than asked: whether there is a next page.
    let page = state
        .store
        .audit_page(since, q.rule.as_deref(), before, i64::from(limit) + 1)
        .await;
    let mut page = match page {
        Ok(page) => page,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the audit log");
            return store_unavailable();
        }
    };
    let more = page.len() > limit as usize;
    page.truncate(limit as usize);
    let next = page
        .last()
        .filter(|_| more)
        .map(|(cursor, _)| next_link(uri.path(), &q, limit, cursor));
    let entries: Vec<AuditEntry> = page.into_iter().map(|(_, e)| e).collect();
    let mut answer = Json(entries).into_response();
    if let Some(link) = next {
        match http::HeaderValue::try_from(link) {
            Ok(v) => {
                answer.headers_mut().insert(http::header::LINK, v);
            }
            // Not expected: every byte of it is percent-encoded ASCII.
            Err(e) => tracing::error!(error = %e, "cannot write the Link header"),
        }
    }
    answer
}

/// The `Link` header's value to the page after `cursor`: `path` with the query `q` asked
/// for (`limit` as applied) and `before=cursor`, percent-encoded.
fn next_link(path: &str, q: &ActionsQuery, limit: u32, cursor: &AuditCursor) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(since) = &q.since {
        query.append_pair("since", since);
    }
    if let Some(rule) = &q.rule {
        query.append_pair("rule", rule);
    }
    query.append_pair("limit", &limit.to_string());
    query.append_pair("before", &cursor.to_string());
    format!("<{path}?{}>; rel=\"next\"", query.finish())
}

/// `GET /api/rules`: each rule with its kind, dry-run state and hit count (503
/// `{"error": ...}` when the store cannot be read: never a false zero).
pub async fn rules(_: Admin, State(state): State<AppState>) -> Response {
    let hits = match state.store.rule_hit_counts().await {
        Ok(hits) => hits,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the rules' hit counts");
            return store_unavailable();
        }
    };
    let body: Vec<_> = state
        .config
        .rules
        .iter()
        .map(|r| {
            let hits = hits
                .iter()
                .find(|(n, _)| n == &r.name)
                .map_or(0, |(_, c)| *c);
            let schedule = match &r.kind {
                RuleKind::Retention(o) => o.schedule.as_ref().map(|s| s.text().to_string()),
                _ => None,
            };
            let next = match &r.kind {
                RuleKind::Retention(o) => o
                    .schedule
                    .as_ref()
                    .and_then(|s| s.next_after(&Utc::now()))
                    .map(|t| t.to_rfc3339()),
                _ => None,
            };
            json!({
                "name": r.name,
                "kind": r.kind_name(),
                "dry_run": r.is_dry_run(state.config.dry_run),
                "hits": hits,
                "schedule": schedule,
                "next_slot": next,
                "description": crate::commands::check::describe(r, state.config.dry_run),
            })
        })
        .collect();
    Json(body).into_response()
}

/// `POST /api/sweep/{rule}`: queue an immediate evaluation of one rule (retention: a
/// sweep now; timeout and supersede: a check of every in-progress run).
///
/// 202 `{"status": "queued", "rule", "delivery"}`: every call queues its own sweep (its
/// delivery id is unique, even for two calls in the same millisecond); 404 for a rule the
/// config does not have; 400 `{"error": ...}` for a rule name that cannot be read (not
/// UTF-8 once percent-decoded) and for an orphan rule, which acts on GitHub events only
/// and has nothing to sweep (as `sweep --rule` exits 2); 503 `{"error": ...}` when the
/// store cannot take it. A summary rule's sweep is a poll that keeps its decisions: the
/// summaries of runs that ended unseen.
pub async fn sweep(
    _: Admin,
    State(state): State<AppState>,
    rule: Result<Path<String>, PathRejection>,
) -> Response {
    let rule = match rule {
        Ok(Path(rule)) => rule,
        Err(e) => return error(e.status(), e.body_text()),
    };
    let Some(r) = state.config.rules.iter().find(|r| r.name == rule) else {
        return error(StatusCode::NOT_FOUND, format!("no rule named {rule:?}"));
    };
    // An orphan rule acts on GitHub events only, not on a sweep: refused as `sweep --rule`
    // refuses it (exit 2), rather than queueing a poll that would do nothing for it.
    if let Some(why) = crate::commands::plan::nothing_to_sweep(r) {
        return error(StatusCode::BAD_REQUEST, why);
    }
    let now = Utc::now();
    let id = format!(
        "manual:{}:{}:{}",
        r.name,
        now.timestamp_millis(),
        uuid::Uuid::new_v4().simple()
    );
    let delivery = NewDelivery {
        source: "schedule".into(),
        delivery_id: id.clone(),
        event: "sweep".into(),
        payload: json!({ "rule": r.name, "manual": true }).to_string(),
        received_at: now,
    };
    match state.store.insert_delivery(delivery).await {
        Ok(InsertOutcome::Inserted) => {
            state.wake.notify_one();
            (
                StatusCode::ACCEPTED,
                Json(json!({"status": "queued", "rule": r.name, "delivery": id})),
            )
                .into_response()
        }
        // Not expected with a random id; if it happens, nothing new was queued: said so,
        // as a webhook's repeat is (200).
        Ok(InsertOutcome::Duplicate) => (
            StatusCode::OK,
            Json(json!({"status": "duplicate", "rule": r.name, "delivery": id})),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot queue a sweep");
            store_unavailable()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comparison_needs_the_same_bytes_and_length() {
        assert!(token_matches(b"admin-token", b"admin-token"));
        assert!(token_matches("pässwort".as_bytes(), "pässwort".as_bytes()));
        assert!(
            !token_matches(b"admin-tokeN", b"admin-token"),
            "same length"
        );
        assert!(!token_matches(b"admin-token-2", b"admin-token"), "longer");
        assert!(!token_matches(b"admin", b"admin-token"), "a prefix");
        assert!(!token_matches(b"", b"admin-token"));
        assert!(!token_matches("passwort".as_bytes(), "pässwort".as_bytes()));
    }

    /// Finding: the comparison returned at once when the lengths differed, so how long
    /// it took told the token's length. A token of another length now takes as long to
    /// refuse as one of the same length (both are hashed): with a 4 MiB token, the early
    /// return would be thousands of times faster.
    #[test]
    fn a_token_of_another_length_takes_as_long_to_refuse() {
        use std::time::{Duration, Instant};
        let expected = vec![b'a'; 4 << 20];
        let mut same_length = expected.clone();
        same_length[0] = b'b';
        let longer = vec![b'a'; (4 << 20) + 1];
        let time = |given: &[u8]| {
            let t = Instant::now();
            assert!(!token_matches(given, &expected));
            t.elapsed()
        };
        // The fastest of several, interleaved: the machine's load weighs on both alike.
        let (mut same, mut other) = (Duration::MAX, Duration::MAX);
        for _ in 0..7 {
            same = same.min(time(&same_length));
            other = other.min(time(&longer));
        }
        assert!(
            other * 4 >= same,
            "another length refused in {other:?}, the same length in {same:?}"
        );
    }

    #[test]
    fn the_bearer_token_is_taken_as_sent() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bEaReR   abc"), Some(&b"abc"[..]));
        assert_eq!(
            bearer_token("Bearer pässwort".as_bytes()),
            Some("pässwort".as_bytes())
        );
        assert_eq!(bearer_token(b"Bearer \xff\xfe"), Some(&b"\xff\xfe"[..]));
        assert_eq!(bearer_token(b"Bearer "), Some(&b""[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearerabc"), None);
        assert_eq!(bearer_token(b"bearer"), None);
    }
}
