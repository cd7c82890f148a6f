//! Fault injection and the request log.
//!
//! A [`Fault`] is scoped by method and path prefix (`/v1/...` or `/github/...`; control
//! endpoints under `/_sim` are never faulted), fires `times` times (null: forever) after
//! letting `after` matching requests through, and is one of: added latency, an HTTP
//! status (5xx, 401, ...) with the API's error body, a rate limit (429 or 403, with or
//! without `Retry-After` / `x-ratelimit-*`), an HTML error page, a malformed JSON 200, or
//! a dropped connection. With `apply: true` the request is carried out first and only
//! its answer is lost: the ambiguous write.
//!
//! Dropping a connection needs the simulator's own listener ([`SimListener`]): the
//! handler flags the connection and the server then fails to write the answer, so the
//! client sees the connection close before any byte of a response.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::world::{World, lock};

fn one() -> Option<u32> {
    Some(1)
}
fn s429() -> u16 {
    429
}
fn s502() -> u16 {
    502
}

/// A fault to inject (`POST /_sim/faults`).
///
/// ```json
/// {"method": "PUT", "path": "/v1/runs", "kind": "status", "status": 503, "times": 2}
/// {"path": "/github", "kind": "rate_limit", "status": 403, "retry_after": 3}
/// {"kind": "latency", "ms": 1500, "times": null}
/// {"method": "POST", "path": "/github/repos", "kind": "drop", "apply": true}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// HTTP method to match (any when absent).
    #[serde(default)]
    pub method: Option<String>,
    /// Path prefix to match, e.g. `/v1/runs` or `/github` (any API path when absent).
    #[serde(default, alias = "path_prefix", alias = "pathPrefix")]
    pub path: Option<String>,
    #[serde(flatten)]
    pub kind: FaultKind,
    /// How many times it fires (default 1; null: until cleared).
    #[serde(default = "one")]
    pub times: Option<u32>,
    /// Let this many matching requests through first.
    #[serde(default)]
    pub after: u32,
    /// Carry the request out, then fail its answer (ambiguous write).
    #[serde(default)]
    pub apply: bool,
}

impl Fault {
    /// A `kind` fault on any method and API path that fires once, right away: the JSON
    /// form's defaults.
    pub fn new(kind: FaultKind) -> Fault {
        Fault {
            method: None,
            path: None,
            kind,
            times: one(),
            after: 0,
            apply: false,
        }
    }

    /// A fault answering `status` with the API's own error body and no `Retry-After`,
    /// once, on any request ([`Fault::new`]'s defaults).
    pub fn status(status: u16) -> Fault {
        Fault::new(FaultKind::Status {
            status,
            body: None,
            retry_after: None,
        })
    }

    /// Only `method` requests under the path prefix `path`.
    pub fn on(self, method: impl Into<String>, path: impl Into<String>) -> Fault {
        Fault {
            method: Some(method.into()),
            ..self.path(path)
        }
    }

    /// Only requests under the path prefix `path`, any method.
    pub fn path(self, path: impl Into<String>) -> Fault {
        Fault {
            path: Some(path.into()),
            ..self
        }
    }

    /// Fires `times` times (`None`: until cleared).
    pub fn times(self, times: Option<u32>) -> Fault {
        Fault { times, ..self }
    }

    /// Fires until cleared.
    pub fn always(self) -> Fault {
        self.times(None)
    }

    /// Lets `n` matching requests through first.
    pub fn after(self, n: u32) -> Fault {
        Fault { after: n, ..self }
    }

    /// Carries the request out, then fails its answer (ambiguous write).
    pub fn applied(self) -> Fault {
        Fault {
            apply: true,
            ..self
        }
    }
}

/// What a fault does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Delay the request by `ms` (combines with other faults).
    Latency { ms: u64 },
    /// Answer `status` with the API's error body (or `body`), optionally `Retry-After`.
    Status {
        status: u16,
        #[serde(default)]
        body: Option<String>,
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// A rate limit: 429 (default) or 403, `Retry-After` when set, and (on `/github`
    /// paths only) `x-ratelimit-remaining: 0` + `x-ratelimit-reset` when `reset_after`
    /// is set.
    RateLimit {
        #[serde(default = "s429")]
        status: u16,
        #[serde(default)]
        retry_after: Option<u64>,
        #[serde(default)]
        reset_after: Option<u64>,
    },
    /// Close the connection without answering.
    Drop,
    /// An HTML error page (a proxy's 502 by default).
    Html {
        #[serde(default = "s502")]
        status: u16,
    },
    /// `200 OK` with a truncated JSON body.
    MalformedJson,
}

impl FaultKind {
    fn name(&self) -> String {
        match self {
            FaultKind::Latency { ms } => format!("latency {ms}ms"),
            FaultKind::Status { status, .. } => format!("status {status}"),
            FaultKind::RateLimit { status, .. } => format!("rate_limit {status}"),
            FaultKind::Drop => "drop".into(),
            FaultKind::Html { status } => format!("html {status}"),
            FaultKind::MalformedJson => "malformed_json".into(),
        }
    }
}

/// An injected fault with its id and how often it has matched and fired.
#[derive(Debug, Clone, Serialize)]
pub struct ActiveFault {
    pub id: u64,
    #[serde(flatten)]
    pub fault: Fault,
    pub seen: u32,
    pub fired: u32,
}

#[derive(Debug, Default)]
pub(crate) struct FaultState {
    next_id: u64,
    active: Vec<ActiveFault>,
}

/// The faults that apply to one request.
#[derive(Debug, Default)]
pub(crate) struct Decision {
    pub latency_ms: u64,
    pub response: Option<Fault>,
}

impl FaultState {
    pub fn add(&mut self, fault: Fault) -> u64 {
        self.next_id += 1;
        self.active.push(ActiveFault {
            id: self.next_id,
            fault,
            seen: 0,
            fired: 0,
        });
        self.next_id
    }

    pub fn list(&self) -> Vec<ActiveFault> {
        self.active.clone()
    }

    pub fn clear(&mut self) {
        self.active.clear();
    }

    pub fn remove(&mut self, id: u64) -> bool {
        let before = self.active.len();
        self.active.retain(|f| f.id != id);
        before != self.active.len()
    }

    pub fn decide(&mut self, method: &str, path: &str) -> Decision {
        let mut d = Decision::default();
        for a in &mut self.active {
            let f = &a.fault;
            if let Some(m) = &f.method
                && !m.eq_ignore_ascii_case(method)
            {
                continue;
            }
            if let Some(p) = &f.path
                && !path.starts_with(p.as_str())
            {
                continue;
            }
            let is_latency = matches!(f.kind, FaultKind::Latency { .. });
            if !is_latency && d.response.is_some() {
                continue;
            }
            a.seen += 1;
            if a.seen <= f.after {
                continue;
            }
            match &f.kind {
                FaultKind::Latency { ms } => d.latency_ms += ms,
                _ => d.response = Some(f.clone()),
            }
            a.fired += 1;
        }
        self.active
            .retain(|a| a.fault.times.is_none_or(|t| a.fired < t));
        d
    }
}

// ---------------------------------------------------------------------------------------
// Request log
// ---------------------------------------------------------------------------------------

/// One mutating request (POST, PUT, PATCH, DELETE) to the Currents or GitHub API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    pub seq: u64,
    pub at: DateTime<Utc>,
    /// `currents` or `github`.
    pub api: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Status answered; 0 when the connection was dropped.
    pub status: u16,
    /// The fault injected into this request, if any.
    pub fault: Option<String>,
}

const MAX_LOG: usize = 200_000;

#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    seq: u64,
    pub entries: std::collections::VecDeque<LogEntry>,
    /// Request counts by `"<api> <METHOD>"`, all methods.
    pub counts: std::collections::BTreeMap<String, u64>,
}

/// Marks a response produced by a fault.
#[derive(Debug, Clone)]
struct FaultTag(String);

fn api_of(path: &str) -> Option<&'static str> {
    if path == "/v1" || path.starts_with("/v1/") {
        Some("currents")
    } else if path == "/github" || path.starts_with("/github/") {
        Some("github")
    } else {
        None
    }
}

/// Outermost middleware: counts requests and logs mutating API requests (every method
/// but GET, HEAD and OPTIONS; GitHub's `POST /graphql` queries excepted).
pub(crate) async fn log_layer(State(w): State<Arc<World>>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let at = Utc::now();
    let resp = next.run(req).await;
    if let Some(api) = api_of(&path) {
        let fault = resp.extensions().get::<FaultTag>().map(|t| t.0.clone());
        let status = if fault.as_deref() == Some("drop") {
            0
        } else {
            resp.status().as_u16()
        };
        let mut log = lock(&w.log);
        *log.counts.entry(format!("{api} {method}")).or_default() += 1;
        // A GraphQL query is a POST that changes nothing (the only one runwarden sends,
        // `viewer { login }`): not a mutation.
        let query_only = path == "/github/graphql";
        if !matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS") && !query_only {
            log.seq += 1;
            let seq = log.seq;
            log.entries.push_back(LogEntry {
                seq,
                at,
                api: api.to_string(),
                method,
                path,
                query,
                status,
                fault,
            });
            if log.entries.len() > MAX_LOG {
                log.entries.pop_front();
            }
        }
    }
    resp
}

/// Applies injected faults to API requests.
pub(crate) async fn fault_layer(State(w): State<Arc<World>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let Some(api) = api_of(&path) else {
        return next.run(req).await;
    };
    let decision = lock(&w.faults).decide(req.method().as_str(), &path);
    if decision.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(decision.latency_ms)).await;
    }
    let Some(fault) = decision.response else {
        return next.run(req).await;
    };
    let conn = req
        .extensions()
        .get::<ConnectInfo<ConnHandle>>()
        .map(|c| c.0.clone());
    if fault.apply {
        let _ = next.run(req).await;
    }
    let mut resp = match &fault.kind {
        FaultKind::Drop => match conn {
            Some(c) => {
                c.kill();
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
            None => {
                // Served without the simulator's listener: abort the body instead.
                let stream = futures::stream::once(async {
                    Err::<bytes::Bytes, io::Error>(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "dropped",
                    ))
                });
                Response::new(Body::from_stream(stream))
            }
        },
        kind => fault_response(kind, api),
    };
    resp.extensions_mut().insert(FaultTag(fault.kind.name()));
    resp
}

fn status_of(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn reason(code: u16) -> &'static str {
    match code {
        400 => "Bad request",
        401 => "Invalid API key provided",
        403 => "Forbidden",
        404 => "Not found",
        409 => "Conflict",
        422 => "Unprocessable entity",
        429 => "Too many requests",
        500 => "Internal server error",
        502 => "Bad gateway",
        503 => "Service unavailable",
        504 => "Gateway timeout",
        _ => "Request failed",
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn error_body(code: u16, api: &str) -> String {
    if api == "currents" {
        serde_json::json!({"status": "FAILED", "error": reason(code)}).to_string()
    } else {
        let msg = match code {
            401 => "Bad credentials",
            403 => "Forbidden",
            404 => "Not Found",
            429 => "API rate limit exceeded",
            500..=599 => "Server Error",
            _ => reason(code),
        };
        serde_json::json!({"message": msg, "documentation_url": "https://docs.github.com/rest", "status": code.to_string()})
            .to_string()
    }
}

fn fault_response(kind: &FaultKind, api: &str) -> Response {
    match kind {
        FaultKind::Status {
            status,
            body,
            retry_after,
        } => {
            let b = body.clone().unwrap_or_else(|| error_body(*status, api));
            let mut r = if serde_json::from_str::<serde_json::Value>(&b).is_ok() {
                json_response(status_of(*status), b)
            } else {
                (status_of(*status), b).into_response()
            };
            if let Some(s) = retry_after {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*s));
            }
            r
        }
        FaultKind::RateLimit {
            status,
            retry_after,
            reset_after,
        } => {
            let body = if api == "currents" {
                serde_json::json!({"status": "FAILED", "error": "Too many requests"}).to_string()
            } else {
                serde_json::json!({
                    "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                    "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
                    "status": status.to_string(),
                })
                .to_string()
            };
            let mut r = json_response(status_of(*status), body);
            let h = r.headers_mut();
            if let Some(s) = retry_after {
                h.insert(header::RETRY_AFTER, HeaderValue::from(*s));
            }
            // GitHub's rate-limit headers; Currents documents none (`currents-notes.md`
            // §1.1), so its 429 carries at most `Retry-After`.
            if let Some(s) = reset_after.filter(|_| api == "github") {
                let reset = Utc::now().timestamp() + s as i64;
                h.insert("x-ratelimit-limit", HeaderValue::from(5000));
                h.insert("x-ratelimit-remaining", HeaderValue::from(0));
                h.insert("x-ratelimit-used", HeaderValue::from(5000));
                h.insert("x-ratelimit-reset", HeaderValue::from(reset));
                h.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
            }
            r
        }
        FaultKind::Html { status } => {
            let text = format!(
                "<html>\r\n<head><title>{status} {r}</title></head>\r\n<body>\r\n<center><h1>{status} {r}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
                r = status_of(*status).canonical_reason().unwrap_or("Error")
            );
            let mut r = (status_of(*status), text).into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            r
        }
        FaultKind::MalformedJson => {
            let body = if api == "currents" {
                r#"{"status":"OK","data":{"runId":"#
            } else {
                r#"{"id":1,"node_id":"#
            };
            json_response(StatusCode::OK, body.to_string())
        }
        FaultKind::Latency { .. } | FaultKind::Drop => {
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

// ---------------------------------------------------------------------------------------
// A listener whose connections can be dropped from a handler
// ---------------------------------------------------------------------------------------

/// A TCP listener for `axum::serve` whose connections can be killed by the fault layer.
pub struct SimListener {
    inner: TcpListener,
}

impl SimListener {
    pub fn new(inner: TcpListener) -> Self {
        SimListener { inner }
    }
}

impl axum::serve::Listener for SimListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((s, addr)) => {
                    let _ = s.set_nodelay(true);
                    return (
                        KillableStream {
                            inner: s,
                            kill: Arc::new(AtomicBool::new(false)),
                        },
                        addr,
                    );
                }
                // Out of file descriptors and the like: back off briefly.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A TCP stream that fails every read and write once killed.
pub struct KillableStream {
    inner: TcpStream,
    kill: Arc<AtomicBool>,
}

impl KillableStream {
    fn killed(&self) -> bool {
        self.kill.load(Ordering::SeqCst)
    }
}

fn reset() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "connection dropped by fault injection",
    )
}

impl AsyncRead for KillableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.killed() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.killed() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.killed() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.killed() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Connect info of a [`SimListener`] connection: the peer and the kill switch.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    pub remote: SocketAddr,
    kill: Arc<AtomicBool>,
}

impl ConnHandle {
    fn kill(&self) {
        self.kill.store(true, Ordering::SeqCst);
    }
}

impl Connected<IncomingStream<'_, SimListener>> for ConnHandle {
    fn connect_info(stream: IncomingStream<'_, SimListener>) -> Self {
        ConnHandle {
            remote: *stream.remote_addr(),
            kill: stream.io().kill.clone(),
        }
    }
}

impl World {
    /// Injects a fault; returns its id.
    pub fn inject_fault(&self, fault: Fault) -> u64 {
        lock(&self.faults).add(fault)
    }

    /// The faults still armed.
    pub fn faults(&self) -> Vec<ActiveFault> {
        lock(&self.faults).list()
    }

    /// Removes one fault; false when there was none with that id.
    pub fn remove_fault(&self, id: u64) -> bool {
        lock(&self.faults).remove(id)
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    /// The mutating requests (POST, PUT, PATCH, DELETE) made to `/v1` and `/github`,
    /// oldest first.
    pub fn mutation_log(&self) -> Vec<LogEntry> {
        lock(&self.log).entries.iter().cloned().collect()
    }

    pub fn clear_log(&self) {
        let mut l = lock(&self.log);
        l.entries.clear();
        l.counts.clear();
    }

    /// Request counts by `"<api> <METHOD>"` (e.g. `"currents GET"`), all methods.
    pub fn request_counts(&self) -> std::collections::BTreeMap<String, u64> {
        lock(&self.log).counts.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(json: &str) -> Fault {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn parses_fault_forms() {
        let f =
            fault(r#"{"method":"PUT","path":"/v1/runs","kind":"status","status":503,"times":2}"#);
        assert_eq!(f.times, Some(2));
        assert!(matches!(f.kind, FaultKind::Status { status: 503, .. }));
        let f = fault(r#"{"kind":"latency","ms":10,"times":null}"#);
        assert_eq!(f.times, None);
        let f = fault(r#"{"kind":"rate_limit","retry_after":3}"#);
        assert_eq!(
            f.kind,
            FaultKind::RateLimit {
                status: 429,
                retry_after: Some(3),
                reset_after: None
            }
        );
        assert!(serde_json::from_str::<Fault>(r#"{"kind":"nope"}"#).is_err());
    }

    #[test]
    fn constructor_matches_json_defaults() {
        assert_eq!(Fault::new(FaultKind::Drop), fault(r#"{"kind":"drop"}"#));
        assert_eq!(
            Fault::new(FaultKind::Latency { ms: 5 })
                .on("PUT", "/v1/runs")
                .always()
                .after(2)
                .applied(),
            fault(
                r#"{"method":"PUT","path":"/v1/runs","kind":"latency","ms":5,"times":null,"after":2,"apply":true}"#
            )
        );
        assert_eq!(
            Fault::new(FaultKind::MalformedJson).path("/github"),
            fault(r#"{"path":"/github","kind":"malformed_json"}"#)
        );
    }

    #[test]
    fn decide_counts_after_and_times() {
        let mut s = FaultState::default();
        s.add(fault(
            r#"{"method":"GET","path":"/v1","kind":"status","status":500,"times":2,"after":1}"#,
        ));
        assert!(s.decide("GET", "/v1/projects").response.is_none()); // let through
        assert!(s.decide("POST", "/v1/projects").response.is_none()); // other method
        assert!(s.decide("GET", "/github/x").response.is_none()); // other path
        assert!(s.decide("GET", "/v1/projects").response.is_some());
        assert!(s.decide("GET", "/v1/projects").response.is_some());
        assert!(s.decide("GET", "/v1/projects").response.is_none());
        assert!(s.list().is_empty());
    }
}
