//! The Currents client against tiny axum servers on 127.0.0.1:0 (and raw TCP servers for
//! dropped connections). Ordering is synchronised by request logs and counters only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{TimeZone, Utc};
use futures::{StreamExt, TryStreamExt};
use runwarden::currents::client::{ClientOptions, CurrentsClient, CurrentsError, RequestObserver};
use runwarden::currents::{
    CancelOutcome, CompletionState, DeleteOutcome, FindBy, RunFilter, RunStatus, TagOperator,
    WebhookSpec,
};
use runwarden::secret::Secret;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use url::Url;

const KEY: &str = "sk-live-SECRET-0123456789abcdef";

// ---- a scripted mock server ------------------------------------------------------------

#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn pairs(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.query.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect()
    }
    fn param(&self, key: &str) -> Option<String> {
        self.pairs()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
    /// Sent gzip-encoded (`Content-Encoding: gzip`).
    gzip: bool,
}

impl Answer {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string(),
            delay: Duration::ZERO,
            gzip: false,
        }
    }
    fn ok(data: Value) -> Self {
        Self::json(200, json!({"status": "OK", "data": data}))
    }
    fn failed(status: u16, error: &str) -> Self {
        Self::json(status, json!({"status": "FAILED", "error": error}))
    }
    fn raw(status: u16, content_type: &str, body: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type", content_type.into())],
            body: body.into(),
            delay: Duration::ZERO,
            gzip: false,
        }
    }
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    fn delayed(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
    fn gzipped(mut self) -> Self {
        self.gzip = true;
        self
    }
}

type Script = Arc<dyn Fn(usize, &Seen) -> Answer + Send + Sync>;

#[derive(Clone)]
struct MockState {
    script: Script,
    log: Arc<Mutex<Vec<Seen>>>,
}

struct Mock {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Seen>>>,
}

impl Mock {
    async fn start(script: impl Fn(usize, &Seen) -> Answer + Send + Sync + 'static) -> Self {
        let log = Arc::new(Mutex::new(Vec::new()));
        let state = MockState {
            script: Arc::new(script),
            log: log.clone(),
        };
        let app = Router::new().fallback(handle).with_state(state);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, log }
    }
    fn base(&self) -> Url {
        Url::parse(&format!("http://{}/v1", self.addr)).unwrap()
    }
    fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }
    fn hits(&self) -> usize {
        self.log.lock().unwrap().len()
    }
}

async fn handle(
    State(st): State<MockState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        at: Instant::now(),
        method,
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers,
        body,
    };
    let n = {
        let mut log = st.log.lock().unwrap();
        log.push(seen.clone());
        log.len() - 1
    };
    let answer = (st.script)(n, &seen);
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    let status = StatusCode::from_u16(answer.status).unwrap();
    let mut resp = if answer.gzip {
        let mut resp = (status, gzip(answer.body.as_bytes())).into_response();
        resp.headers_mut()
            .insert("content-encoding", "gzip".parse().unwrap());
        resp
    } else {
        (status, answer.body).into_response()
    };
    for (k, v) in answer.headers {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn options(base: Url) -> ClientOptions {
    ClientOptions {
        base_url: base,
        api_key: Secret::new(KEY),
        request_timeout: Duration::from_secs(5),
        max_requests_per_second: 0,
        max_attempts: 5,
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        user_agent: "runwarden-test/1".into(),
        ..ClientOptions::default()
    }
}

fn client(base: Url) -> CurrentsClient {
    CurrentsClient::new(options(base)).unwrap()
}

fn run_json(id: &str, cursor: Option<&str>) -> Value {
    json!({
        "runId": id, "projectId": "bAYZ4a", "createdAt": "2026-01-02T03:04:05.000Z",
        "completionState": "IN_PROGRESS", "status": "RUNNING", "tags": ["smoke"],
        "meta": {"ciBuildId": format!("build-{id}"), "commit": {"branch": "main", "sha": "abc"}},
        "cursor": cursor,
    })
}

fn assert_no_key(text: &str) {
    assert!(!text.contains(KEY), "API key leaked: {text}");
    assert!(!text.contains("SECRET-0123"), "API key leaked: {text}");
}

// ---- pagination and query parameters ---------------------------------------------------

#[tokio::test]
async fn list_runs_walks_three_pages_with_filters_and_auth() {
    let mock = Mock::start(|_, seen| match seen.param("starting_after").as_deref() {
        None => Answer::json(
            200,
            json!({"status": "OK", "has_more": true,
            "data": [run_json("r1", Some("c1")), run_json("r2", Some("c2"))]}),
        ),
        Some("c2") => Answer::json(
            200,
            json!({"status": "OK", "has_more": true,
            "data": [run_json("r3", Some("c3")), run_json("r4", Some("c4"))]}),
        ),
        Some("c4") => Answer::json(
            200,
            json!({"status": "OK", "has_more": false,
            "data": [run_json("r5", Some("c5"))]}),
        ),
        Some(other) => Answer::failed(400, &format!("unexpected cursor {other}")),
    })
    .await;
    let c = client(mock.base());
    let filter = RunFilter {
        branches: vec!["main".into(), "feat/x y".into()],
        tags: vec!["smoke".into(), "nightly".into()],
        tag_operator: Some(TagOperator::Or),
        authors: vec!["Jane Doe".into()],
        search: Some("build-1".into()),
        status: vec![RunStatus::Passed, RunStatus::Failed],
        completion_state: vec![CompletionState::InProgress, CompletionState::Timeout],
        date_start: Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()),
        date_end: Some(Utc.with_ymd_and_hms(2026, 1, 31, 23, 59, 59).unwrap()),
        limit: None,
    };
    let runs: Vec<_> = c.list_runs("bAYZ4a", &filter).try_collect().await.unwrap();
    let ids: Vec<_> = runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, ["r1", "r2", "r3", "r4", "r5"]);
    assert_eq!(runs[0].completion_state, CompletionState::InProgress);

    let seen = mock.seen();
    assert_eq!(seen.len(), 3, "exactly one request per page");
    let s = |k: &str, v: &str| (k.to_string(), v.to_string());
    let base_pairs = vec![
        s("limit", "50"),
        s("branches[]", "main"),
        s("branches[]", "feat/x y"),
        s("tags[]", "smoke"),
        s("tags[]", "nightly"),
        s("tag_operator", "OR"),
        s("authors[]", "Jane Doe"),
        s("search", "build-1"),
        s("status", "PASSED"),
        s("status", "FAILED"),
        s("completion_state", "IN_PROGRESS"),
        s("completion_state", "TIMEOUT"),
        s("date_start", "2026-01-01T00:00:00.000Z"),
        s("date_end", "2026-01-31T23:59:59.000Z"),
    ];
    assert_eq!(seen[0].pairs(), base_pairs);
    let mut second = base_pairs.clone();
    second.push(s("starting_after", "c2"));
    assert_eq!(seen[1].pairs(), second);
    let mut third = base_pairs.clone();
    third.push(s("starting_after", "c4"));
    assert_eq!(seen[2].pairs(), third);
    // Brackets are on the wire (percent-encoded), status repeats without brackets.
    let raw = seen[0].query.clone().unwrap();
    assert!(
        raw.contains("branches%5B%5D=main&branches%5B%5D=feat%2Fx+y"),
        "{raw}"
    );
    assert!(raw.contains("status=PASSED&status=FAILED"), "{raw}");
    assert!(!raw.contains("status%5B%5D"), "{raw}");

    for r in &seen {
        assert_eq!(r.method, Method::GET);
        assert_eq!(r.path, "/v1/projects/bAYZ4a/runs");
        assert_eq!(r.headers["authorization"], format!("Bearer {KEY}").as_str());
        assert_eq!(r.headers["user-agent"], "runwarden-test/1");
        assert_eq!(r.headers["accept"], "application/json");
    }
    assert_eq!(c.stats().count("list_runs", Some(200)), 3);
}

#[tokio::test]
async fn list_runs_is_lazy_and_pages_are_available() {
    let mock = Mock::start(|_, seen| {
        let n: u32 = seen
            .param("starting_after")
            .map_or(0, |c| c.parse().unwrap());
        Answer::json(
            200,
            json!({"status": "OK", "has_more": true,
            "data": [run_json(&format!("r{n}"), Some(&(n + 1).to_string()))]}),
        )
    })
    .await;
    let c = client(mock.base());
    let first: Vec<_> = c
        .list_runs("P", &RunFilter::default())
        .take(1)
        .collect()
        .await;
    assert_eq!(first.len(), 1);
    assert_eq!(mock.hits(), 1, "a page is fetched only when needed");

    let page = c
        .list_runs_page(
            "P",
            &RunFilter {
                limit: Some(7),
                ..Default::default()
            },
            Some("41"),
        )
        .await
        .unwrap();
    assert_eq!(page.items[0].run_id, "r41");
    assert!(page.has_more);
    assert_eq!(page.next_cursor.as_deref(), Some("42"));
    let last = mock.seen().pop().unwrap();
    assert_eq!(last.param("limit").as_deref(), Some("7"));
    assert_eq!(last.param("starting_after").as_deref(), Some("41"));
}

#[tokio::test]
async fn list_runs_stops_on_an_empty_page() {
    let mock = Mock::start(|n, _| {
        if n == 0 {
            Answer::json(
                200,
                json!({"status": "OK", "has_more": true, "data": [run_json("a", Some("c1"))]}),
            )
        } else {
            Answer::json(200, json!({"status": "OK", "has_more": true, "data": []}))
        }
    })
    .await;
    let c = client(mock.base());
    let runs: Vec<_> = c
        .list_runs("P", &RunFilter::default())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(mock.hits(), 2);
}

/// The reference's `deletedAt`: a run the API still lists after its deletion is gone,
/// and one read by id is not in progress (no rule cancels or deletes it again).
#[tokio::test]
async fn runs_marked_deleted_are_left_out_of_lists_and_never_in_progress() {
    let mut gone = run_json("gone", Some("c1"));
    gone["deletedAt"] = json!("2026-01-02T00:00:00.000Z");
    gone["completionState"] = json!("IN_PROGRESS");
    let mut live = run_json("live", Some("c2"));
    live["deletedAt"] = Value::Null;
    let mock = Mock::start(move |_, _| {
        Answer::json(
            200,
            json!({"status": "OK", "has_more": false, "data": [gone.clone(), live.clone()]}),
        )
    })
    .await;
    let c = client(mock.base());
    let runs: Vec<_> = c
        .list_runs("P", &RunFilter::default())
        .try_collect()
        .await
        .unwrap();
    let ids: Vec<_> = runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, ["live"]);
    let mut read: runwarden::currents::Run = serde_json::from_value(run_json("x", None)).unwrap();
    read.completion_state = runwarden::currents::CompletionState::InProgress;
    assert!(read.is_in_progress());
    read.deleted_at = Some(chrono::Utc::now());
    assert!(!read.is_in_progress() && read.is_deleted());
}

#[tokio::test]
async fn a_list_page_with_nulls_and_decimals_yields_every_run() {
    let mut odd = run_json("odd", Some("c1"));
    for (k, v) in [
        ("tags", Value::Null),
        ("durationMs", json!(1234.5)),
        ("meta", json!({"ciBuildId": null, "commit": null})),
        ("timeout", json!({"isTimeout": null})),
        (
            "groups",
            json!([{"groupId": null, "tags": null, "platform": null,
                "instances": {"overall": 2, "complete": null},
                "tests": {"overall": 3.0, "pending": null, "failures": 1}}]),
        ),
    ] {
        odd[k] = v;
    }
    let mock = Mock::start(move |_, _| {
        Answer::json(
            200,
            json!({"status": "OK", "has_more": false,
            "data": [odd.clone(), run_json("normal", Some("c2"))]}),
        )
    })
    .await;
    let c = client(mock.base());
    let runs: Vec<_> = c
        .list_runs("P", &RunFilter::default())
        .try_collect()
        .await
        .unwrap();
    let ids: Vec<_> = runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, ["odd", "normal"]);
    let odd = &runs[0];
    assert!(odd.tags.is_empty());
    assert_eq!(odd.duration_ms, Some(1234));
    assert_eq!(odd.branch(), None);
    assert!(!odd.timeout.as_ref().unwrap().is_timeout);
    assert_eq!(odd.groups[0].group_id, "");
    assert_eq!(odd.instance_counts().complete, 0);
    assert_eq!(odd.test_counts().overall, 3);
    assert_eq!(odd.test_counts().failures, 1);
    assert_eq!(runs[1].tags, ["smoke"]);
    assert_eq!(runs[1].branch(), Some("main"));
    assert_eq!(mock.hits(), 1);
}

#[tokio::test]
async fn list_projects_walks_pages() {
    let mock = Mock::start(|_, seen| match seen.param("starting_after").as_deref() {
        None => Answer::json(
            200,
            json!({"status": "OK", "has_more": true,
            "data": [{"projectId": "p1", "name": "One", "cursor": "k1"}]}),
        ),
        Some("k1") => Answer::json(
            200,
            json!({"status": "OK", "has_more": false,
            "data": [{"projectId": "p2", "cursor": "k2"}]}),
        ),
        _ => Answer::failed(400, "bad cursor"),
    })
    .await;
    let c = client(mock.base());
    let projects: Vec<_> = c.list_projects().try_collect().await.unwrap();
    assert_eq!(
        projects
            .iter()
            .map(|p| p.project_id.as_str())
            .collect::<Vec<_>>(),
        ["p1", "p2"]
    );
    assert!(
        mock.seen()
            .iter()
            .all(|s| s.path == "/v1/projects" && s.param("limit").as_deref() == Some("50"))
    );
    assert_eq!(mock.hits(), 2);
}

// ---- single resources ------------------------------------------------------------------

/// The client asks for gzip (the Currents docs recommend it: a run with its specs can be
/// several MiB) and reads a gzip-encoded answer; the 64 MiB cap on an answer counts the
/// decoded bytes, so a small compressed body that inflates past it is refused.
#[tokio::test]
async fn answers_are_requested_and_read_gzip_encoded_and_the_cap_counts_decoded_bytes() {
    let bomb = {
        let mut b = String::from("{\"status\":\"OK\",\"data\":\"");
        b.push_str(&" ".repeat(65 * 1024 * 1024));
        b.push_str("\"}");
        b
    };
    let bomb = Arc::new(bomb);
    let mock = Mock::start(move |_, seen| match seen.path.as_str() {
        "/v1/runs/r1" => Answer::ok(run_json("r1", None)).gzipped(),
        _ => Answer::raw(200, "application/json", &bomb).gzipped(),
    })
    .await;
    let c = client(mock.base());
    assert_eq!(c.get_run("r1").await.unwrap().run_id, "r1");
    let asked = mock.seen()[0]
        .headers
        .get("accept-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(asked.contains("gzip"), "accept-encoding: {asked:?}");
    match c.get_run("bomb").await {
        Err(CurrentsError::Decode { detail, .. }) => {
            assert!(detail.contains("exceeds"), "{detail}")
        }
        other => panic!("expected the cap to refuse the inflated body: {other:?}"),
    }
}

#[tokio::test]
async fn get_run_project_instance_and_find() {
    let mock = Mock::start(|_, seen| match seen.path.as_str() {
        "/v1/runs/abc%2Fdef" => Answer::ok(run_json("abc/def", None)),
        "/v1/projects/bAYZ4a" => Answer::ok(
            json!({"projectId": "bAYZ4a", "name": "Web", "inactivityTimeoutSeconds": 7200}),
        ),
        "/v1/instances/i-1" => Answer::ok(json!({"instanceId": "i-1", "spec": "a.spec.ts"})),
        "/v1/runs/find" if seen.param("ciBuildId").as_deref() == Some("build-9") => {
            Answer::ok(run_json("r9", None))
        }
        "/v1/runs/find" if seen.param("branch").is_some() => Answer::ok(Value::Null),
        "/v1/runs/find" => Answer::failed(404, "Run not found"),
        _ => Answer::failed(404, "no route"),
    })
    .await;
    let c = client(mock.base());
    assert_eq!(c.get_run("abc/def").await.unwrap().run_id, "abc/def");
    assert_eq!(
        c.get_project("bAYZ4a")
            .await
            .unwrap()
            .inactivity_timeout_seconds,
        Some(7200)
    );
    assert_eq!(
        c.get_instance("i-1").await.unwrap().spec.as_deref(),
        Some("a.spec.ts")
    );

    let found = c
        .find_run("bAYZ4a", FindBy::CiBuildId("build-9".into()))
        .await
        .unwrap();
    assert_eq!(found.unwrap().run_id, "r9");
    let missing = c
        .find_run("bAYZ4a", FindBy::CiBuildId("nope".into()))
        .await
        .unwrap();
    assert!(missing.is_none());
    let by_branch = c
        .find_run(
            "bAYZ4a",
            FindBy::Branch {
                branch: "main".into(),
                tags: vec!["a".into(), "b".into()],
            },
        )
        .await
        .unwrap();
    assert!(by_branch.is_none(), "data: null means nothing found");
    let last = mock.seen().pop().unwrap();
    let pairs = last.pairs();
    let want: Vec<(String, String)> = [
        ("projectId", "bAYZ4a"),
        ("branch", "main"),
        ("tags[]", "a"),
        ("tags[]", "b"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(pairs, want);
    assert_eq!(mock.hits(), 6, "404 on find is final, not retried");
}

// ---- errors ----------------------------------------------------------------------------

#[tokio::test]
async fn error_envelope_maps_to_api_error_without_retry() {
    let mock = Mock::start(|_, seen| match seen.path.as_str() {
        "/v1/runs/unauth" => Answer::failed(401, "Invalid API key provided"),
        "/v1/runs/missing" => Answer::failed(404, "Run not found"),
        "/v1/runs/forbidden" => Answer::failed(403, "Read only key"),
        _ => Answer::failed(400, "Invalid limit parameter. Must be between 1 and 50"),
    })
    .await;
    let c = client(mock.base());
    let e = c.get_run("unauth").await.unwrap_err();
    assert_eq!(
        e,
        CurrentsError::Api {
            status: 401,
            message: "Invalid API key provided".into()
        }
    );
    assert!(!e.is_retryable());
    assert_eq!(mock.hits(), 1);

    let e = c.get_run("missing").await.unwrap_err();
    assert!(e.is_not_found());
    assert_eq!(
        e.to_string(),
        "Currents API error (HTTP 404): Run not found"
    );
    assert_eq!(mock.hits(), 2);

    let e = c.get_run("forbidden").await.unwrap_err();
    assert_eq!(e.status(), Some(403));
    assert_eq!(mock.hits(), 3);
}

#[tokio::test]
async fn bad_request_is_never_retried() {
    let mock = Mock::start(|_, _| Answer::failed(400, "\"date_start\" is mandatory")).await;
    let c = client(mock.base());
    let e = c
        .list_runs_page("P", &RunFilter::default(), None)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        CurrentsError::Api {
            status: 400,
            message: "\"date_start\" is mandatory".into()
        }
    );
    assert_eq!(mock.hits(), 1);
    assert_eq!(c.request_count(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    let mock = Mock::start(|n, _| {
        if n < 2 {
            Answer::failed(500, "boom")
        } else {
            Answer::ok(run_json("r1", None))
        }
    })
    .await;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let observer: RequestObserver = {
        let calls = calls.clone();
        Arc::new(move |op: &str, status: Option<u16>| {
            calls.lock().unwrap().push((op.to_string(), status))
        })
    };
    let c = CurrentsClient::new(ClientOptions {
        on_request: Some(observer),
        ..options(mock.base())
    })
    .unwrap();
    let run = c.get_run("r1").await.unwrap();
    assert_eq!(run.run_id, "r1");
    assert_eq!(mock.hits(), 3);
    let stats = c.stats();
    assert_eq!(stats.total_requests, 3);
    assert_eq!(stats.count("get_run", Some(500)), 2);
    assert_eq!(stats.count("get_run", Some(200)), 1);
    assert_eq!(
        *calls.lock().unwrap(),
        vec![
            ("get_run".to_string(), Some(500)),
            ("get_run".to_string(), Some(500)),
            ("get_run".to_string(), Some(200))
        ]
    );
}

#[tokio::test]
async fn persistent_server_errors_give_up_after_max_attempts() {
    let mock = Mock::start(|_, _| {
        Answer::raw(
            502,
            "text/html",
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
        )
    })
    .await;
    let c = CurrentsClient::new(ClientOptions {
        max_attempts: 4,
        ..options(mock.base())
    })
    .unwrap();
    let e = c.get_run("r1").await.unwrap_err();
    assert_eq!(mock.hits(), 4);
    match &e {
        CurrentsError::Api {
            status: 502,
            message,
        } => assert!(message.contains("502 Bad Gateway"), "{message}"),
        other => panic!("expected Api 502, got {other:?}"),
    }
    assert!(
        e.is_retryable(),
        "an HTML 5xx stays a retryable server error, not a decode error"
    );
}

#[tokio::test]
async fn rate_limited_honours_retry_after_seconds() {
    let mock = Mock::start(|n, _| {
        if n == 0 {
            Answer::failed(429, "Too Many Requests").header("retry-after", "1")
        } else {
            Answer::ok(run_json("r1", None))
        }
    })
    .await;
    let c = client(mock.base());
    let start = Instant::now();
    c.get_run("r1").await.unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(950),
        "waited only {waited:?}"
    );
    assert!(waited < Duration::from_secs(4), "waited {waited:?}");
    assert_eq!(mock.hits(), 2);
}

/// A 429's `Retry-After` holds back the client's other requests too, not only the
/// call that met it: they would meet the same limit.
#[tokio::test]
async fn a_429_holds_back_the_clients_other_requests_until_its_retry_after() {
    let mock = Mock::start(|n, seen| {
        if n == 0 {
            Answer::failed(429, "Too Many Requests").header("retry-after", "1")
        } else {
            Answer::ok(run_json(seen.path.rsplit('/').next().unwrap(), None))
        }
    })
    .await;
    let c = client(mock.base());
    let first = tokio::spawn({
        let c = c.clone();
        async move { c.get_run("r1").await }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while mock.hits() == 0 {
        assert!(Instant::now() < deadline, "r1 was never sent");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.get_run("r2").await.unwrap();
    first.await.unwrap().unwrap();
    let seen = mock.seen();
    let limited = &seen[0];
    assert!(limited.path.ends_with("/r1"), "{:?}", limited.path);
    let r2 = seen.iter().find(|s| s.path.ends_with("/r2")).unwrap();
    let gap = r2.at.duration_since(limited.at);
    assert!(
        gap >= Duration::from_millis(950),
        "r2 was sent {gap:?} after the 429"
    );
}

#[tokio::test]
async fn rate_limited_honours_retry_after_http_date() {
    let mock = Mock::start(|n, _| {
        if n == 0 {
            let at = Utc::now() + chrono::Duration::seconds(2);
            let date = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
            Answer::failed(429, "slow down").header("retry-after", date)
        } else {
            Answer::ok(run_json("r1", None))
        }
    })
    .await;
    let c = client(mock.base());
    let start = Instant::now();
    c.get_run("r1").await.unwrap();
    let waited = start.elapsed();
    // The date has whole seconds: between 1 and 2 s from now.
    assert!(
        waited >= Duration::from_millis(900),
        "waited only {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    assert_eq!(mock.hits(), 2);
}

/// A 429 asking for a longer wait than the client sleeps through (`retry_after_max`) is
/// not retried within it: the call ends at once, with the whole wait for the caller (the
/// executor puts the action's next attempt after it). A shorter one is slept through.
#[tokio::test]
async fn a_retry_after_longer_than_the_client_sleeps_is_handed_back_not_retried_sooner() {
    let mock = Mock::start(|n, seen| match (seen.path.as_str(), n) {
        ("/v1/runs/r1/cancel", _) => {
            Answer::failed(429, "Too Many Requests").header("retry-after", "90")
        }
        (_, 1) => Answer::failed(429, "Too Many Requests").header("retry-after", "1"),
        _ => Answer::ok(run_json("r2", None)),
    })
    .await;
    let c = CurrentsClient::new(ClientOptions {
        retry_after_max: Duration::from_secs(2),
        ..options(mock.base())
    })
    .unwrap();
    let start = Instant::now();
    let e = c.cancel_run("r1").await.unwrap_err();
    assert_eq!(
        e,
        CurrentsError::RateLimited {
            attempts: 1,
            retry_after: Some(Duration::from_secs(90))
        }
    );
    assert_eq!(e.retry_after(), Some(Duration::from_secs(90)));
    assert_eq!(mock.hits(), 1, "not sent again inside the 90 s asked for");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );

    // The client itself held off for what it sleeps through (5 s) at most; a 1 s wait
    // is then slept through and the call retried.
    let start = Instant::now();
    assert_eq!(c.get_run("r2").await.unwrap().run_id, "r2");
    assert_eq!(mock.hits(), 3);
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
}

#[tokio::test]
async fn rate_limited_until_exhaustion() {
    let mock =
        Mock::start(|_, _| Answer::failed(429, "Too Many Requests").header("retry-after", "0"))
            .await;
    let c = CurrentsClient::new(ClientOptions {
        max_attempts: 3,
        ..options(mock.base())
    })
    .unwrap();
    let e = c.cancel_run("r1").await.unwrap_err();
    assert_eq!(
        e,
        CurrentsError::RateLimited {
            attempts: 3,
            retry_after: Some(Duration::ZERO)
        }
    );
    assert!(e.is_retryable());
    assert_eq!(mock.hits(), 3);
    assert_eq!(c.stats().count("cancel_run", Some(429)), 3);
}

#[tokio::test]
async fn malformed_json_and_html_bodies_are_decode_errors() {
    let big_html = format!(
        "<!DOCTYPE html><html><body>{}</body></html>",
        "captive portal ".repeat(500)
    );
    let mock = Mock::start(move |_, seen| match seen.path.as_str() {
        "/v1/runs/json" => Answer::raw(
            200,
            "application/json",
            r#"{"status":"OK","data":{"runId":"#,
        ),
        "/v1/runs/html" => Answer::raw(200, "text/html", &big_html),
        _ => Answer::raw(
            200,
            "application/json",
            r#"{"status":"OK","data":{"runId":"x"}}"#,
        ),
    })
    .await;
    let c = client(mock.base());
    for (id, needle) in [
        ("json", "EOF"),
        ("html", "<!DOCTYPE html>"),
        ("shape", "createdAt"),
    ] {
        let e = c.get_run(id).await.unwrap_err();
        match &e {
            CurrentsError::Decode {
                status: 200,
                detail,
            } => {
                assert!(detail.contains(needle), "{id}: {detail}");
                assert!(
                    detail.chars().count() <= 201,
                    "{id}: detail too long ({})",
                    detail.len()
                );
            }
            other => panic!("{id}: expected Decode, got {other:?}"),
        }
        assert!(!e.is_retryable());
    }
    assert_eq!(mock.hits(), 3, "decode errors are not retried");
}

#[tokio::test]
async fn slow_responses_time_out_and_are_retried() {
    let mock =
        Mock::start(|_, _| Answer::ok(run_json("r1", None)).delayed(Duration::from_secs(3))).await;
    let c = CurrentsClient::new(ClientOptions {
        request_timeout: Duration::from_millis(200),
        max_attempts: 3,
        ..options(mock.base())
    })
    .unwrap();
    let start = Instant::now();
    let e = c.get_run("r1").await.unwrap_err();
    assert_eq!(e, CurrentsError::Timeout);
    assert!(e.is_retryable());
    assert_eq!(mock.hits(), 3);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(c.stats().count("get_run", None), 3);
}

#[tokio::test]
async fn one_slow_response_then_success() {
    let mock = Mock::start(|n, _| {
        let a = Answer::ok(run_json("r1", None));
        if n == 0 {
            a.delayed(Duration::from_secs(3))
        } else {
            a
        }
    })
    .await;
    let c = CurrentsClient::new(ClientOptions {
        request_timeout: Duration::from_millis(200),
        ..options(mock.base())
    })
    .unwrap();
    assert_eq!(c.get_run("r1").await.unwrap().run_id, "r1");
    assert_eq!(mock.hits(), 2);
}

/// A raw HTTP server: the first `drops` connections are closed after the request is read;
/// later ones get a valid response.
async fn dropping_server(drops: usize, body: Value) -> (Url, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let body = body.to_string();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
                if n < drops {
                    drop(sock);
                    return;
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                    body.len(),
                    body
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (Url::parse(&format!("http://{addr}/v1")).unwrap(), accepted)
}

#[tokio::test]
async fn dropped_connection_is_retried() {
    let (base, accepted) =
        dropping_server(1, json!({"status": "OK", "data": run_json("r1", None)})).await;
    let c = client(base);
    let run = c.get_run("r1").await.unwrap();
    assert_eq!(run.run_id, "r1");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!(c.stats().count("get_run", None), 1);
    assert_eq!(c.stats().count("get_run", Some(200)), 1);
}

#[tokio::test]
async fn always_dropped_connection_gives_a_transport_error() {
    let (base, accepted) = dropping_server(usize::MAX, json!({})).await;
    let c = CurrentsClient::new(ClientOptions {
        max_attempts: 3,
        ..options(base)
    })
    .unwrap();
    let e = c.delete_run("r1").await.unwrap_err();
    assert!(matches!(e, CurrentsError::Transport(_)), "{e:?}");
    assert!(e.is_retryable());
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    assert_no_key(&e.to_string());
}

#[tokio::test]
async fn connection_refused_is_a_transport_error() {
    // Bind then drop to get a port nobody listens on.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let c = CurrentsClient::new(ClientOptions {
        max_attempts: 2,
        ..options(Url::parse(&format!("http://{addr}/v1")).unwrap())
    })
    .unwrap();
    let e = c.get_run("r1").await.unwrap_err();
    assert!(matches!(e, CurrentsError::Transport(_)), "{e:?}");
    assert!(!e.to_string().contains("for url"), "{e}");
    assert_eq!(c.request_count(), 2);
}

#[tokio::test]
async fn redirects_to_another_host_are_not_followed() {
    let other = Mock::start(|_, _| Answer::ok(run_json("evil", None))).await;
    let target = format!("http://{}/v1/runs/r1", other.addr);
    let mock = Mock::start(move |_, seen| match seen.path.as_str() {
        "/v1/runs/away" => Answer::raw(302, "text/plain", "").header("location", target.clone()),
        "/v1/runs/outside" => {
            Answer::raw(307, "text/plain", "").header("location", "/elsewhere/runs/r1")
        }
        "/v1/runs/inside" => {
            Answer::raw(307, "text/plain", "").header("location", "/v1/runs/moved")
        }
        "/v1/runs/moved" => Answer::ok(run_json("moved", None)),
        _ => Answer::failed(404, "no"),
    })
    .await;
    let c = client(mock.base());
    let e = c.get_run("away").await.unwrap_err();
    assert_eq!(e.status(), Some(302), "{e:?}");
    assert!(!e.is_retryable());
    assert_eq!(other.hits(), 0, "the other host was never called");
    assert_eq!(mock.hits(), 1);

    let e = c.get_run("outside").await.unwrap_err();
    assert_eq!(e.status(), Some(307));
    assert_eq!(
        mock.hits(),
        2,
        "a path outside the base URL is not followed"
    );

    // Within the base URL a redirect is followed.
    assert_eq!(c.get_run("inside").await.unwrap().run_id, "moved");
    assert_eq!(mock.seen().last().unwrap().path, "/v1/runs/moved");
}

#[tokio::test]
async fn request_rate_is_capped_across_clones() {
    let mock = Mock::start(|_, _| Answer::ok(run_json("r", None))).await;
    let c = CurrentsClient::new(ClientOptions {
        max_requests_per_second: 20,
        ..options(mock.base())
    })
    .unwrap();
    let start = Instant::now();
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.get_run(&format!("r{i}")).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let took = start.elapsed();
    // 10 requests spaced 50 ms apart: the last starts 450 ms after the first.
    assert!(took >= Duration::from_millis(440), "took only {took:?}");
    assert_eq!(mock.hits(), 10);
    assert_eq!(c.request_count(), 10);
}

// ---- mutations -------------------------------------------------------------------------

#[tokio::test]
async fn cancel_run_outcomes() {
    let mock = Mock::start(|_, seen| match seen.path.as_str() {
        "/v1/runs/live/cancel" => Answer::ok(
            json!({"actor": "api:bot", "canceledAt": "2022-07-07T07:22:13.611Z",
            "reason": "apiRequest", "runId": "live"}),
        ),
        "/v1/runs/gone/cancel" => Answer::failed(404, "Run not found"),
        "/v1/runs/conflict/cancel" => Answer::failed(409, "Conflict"),
        "/v1/runs/done/cancel" => Answer::failed(422, "Run already cancelled"),
        "/v1/runs/a%2Fb/cancel" => Answer::raw(200, "application/json", ""),
        _ => Answer::failed(400, "unexpected"),
    })
    .await;
    let c = client(mock.base());
    match c.cancel_run("live").await.unwrap() {
        CancelOutcome::Cancelled(r) => {
            assert_eq!(r.run_id.as_deref(), Some("live"));
            assert_eq!(r.actor.as_deref(), Some("api:bot"));
            assert!(r.canceled_at.is_some());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.cancel_run("gone").await.unwrap(),
        CancelOutcome::AlreadyDone {
            status: 404,
            message: "Run not found".into(),
            after_unanswered: false,
        }
    );
    assert!(matches!(
        c.cancel_run("conflict").await.unwrap(),
        CancelOutcome::AlreadyDone { status: 409, .. }
    ));
    assert_eq!(
        c.cancel_run("done").await.unwrap(),
        CancelOutcome::AlreadyDone {
            status: 422,
            message: "Run already cancelled".into(),
            after_unanswered: false,
        }
    );
    assert!(
        matches!(
            c.cancel_run("a/b").await.unwrap(),
            CancelOutcome::Cancelled(_)
        ),
        "empty 200 body is tolerated"
    );
    let seen = mock.seen();
    assert_eq!(seen.len(), 5, "no retries");
    assert!(seen.iter().all(|s| s.method == Method::PUT));
    assert_eq!(seen[4].path, "/v1/runs/a%2Fb/cancel");
}

#[tokio::test]
async fn cancel_is_retried_after_server_error_and_then_already_done() {
    // The first attempt "fails" with 503; the retry finds the run cancelled: still done.
    let mock = Mock::start(|n, _| {
        if n == 0 {
            Answer::failed(503, "unavailable")
        } else {
            Answer::failed(422, "Run already cancelled")
        }
    })
    .await;
    let c = client(mock.base());
    assert!(matches!(
        c.cancel_run("r1").await.unwrap(),
        CancelOutcome::AlreadyDone { status: 422, .. }
    ));
    assert_eq!(mock.hits(), 2);
}

#[tokio::test]
async fn delete_run_outcomes() {
    let mock = Mock::start(|_, seen| match seen.path.as_str() {
        "/v1/runs/r1" => Answer::ok(json!({"runId": "r1", "actor": "API Request"})),
        "/v1/runs/conflict" => Answer::failed(409, "Run is being deleted"),
        "/v1/runs/done" => Answer::failed(422, "Run already deleted"),
        _ => Answer::failed(404, "Run not found"),
    })
    .await;
    let c = client(mock.base());
    match c.delete_run("r1").await.unwrap() {
        DeleteOutcome::Deleted(d) => assert_eq!(d.actor.as_deref(), Some("API Request")),
        other => panic!("{other:?}"),
    }
    // Delete is idempotent (SPEC §6): 404, 409 and 422 count as done, like cancel.
    assert_eq!(
        c.delete_run("r2").await.unwrap(),
        DeleteOutcome::AlreadyGone {
            status: 404,
            message: "Run not found".into()
        }
    );
    assert_eq!(
        c.delete_run("conflict").await.unwrap(),
        DeleteOutcome::AlreadyGone {
            status: 409,
            message: "Run is being deleted".into()
        }
    );
    assert_eq!(
        c.delete_run("done").await.unwrap(),
        DeleteOutcome::AlreadyGone {
            status: 422,
            message: "Run already deleted".into()
        }
    );
    assert!(mock.seen().iter().all(|s| s.method == Method::DELETE));
    assert_eq!(mock.hits(), 4, "no retries");
}

#[tokio::test]
async fn webhook_management() {
    let hook = json!({"hookId": "h-1", "projectId": "bAYZ4a", "url": "https://bot.example/webhooks/currents",
        "headers": "{\"x-webhook-secret\":\"s\"}", "hookEvents": ["RUN_FINISH"], "label": "runwarden"});
    let mock = Mock::start(
        move |_, seen| match (seen.method.as_str(), seen.path.as_str()) {
            ("GET", "/v1/webhooks") => Answer::ok(json!([hook.clone()])),
            ("POST", "/v1/webhooks") => {
                Answer::json(201, json!({"status": "OK", "data": hook.clone()}))
            }
            ("PUT", "/v1/webhooks/h-1") => Answer::ok(hook.clone()),
            ("DELETE", "/v1/webhooks/h-1") => Answer::raw(204, "application/json", ""),
            ("DELETE", _) => Answer::failed(404, "Webhook not found"),
            _ => Answer::failed(400, "unexpected"),
        },
    )
    .await;
    let c = client(mock.base());
    let hooks = c.list_webhooks("bAYZ4a").await.unwrap();
    assert_eq!(hooks[0].hook_id, "h-1");
    let spec = WebhookSpec {
        url: Some("https://bot.example/webhooks/currents".into()),
        headers: Some("{\"x-webhook-secret\":\"s\"}".into()),
        hook_events: Some(vec!["RUN_FINISH".into()]),
        label: Some("runwarden".into()),
    };
    assert_eq!(
        c.create_webhook("bAYZ4a", &spec).await.unwrap().hook_id,
        "h-1"
    );
    let upd = WebhookSpec {
        label: Some("new".into()),
        ..Default::default()
    };
    assert_eq!(c.update_webhook("h-1", &upd).await.unwrap().hook_id, "h-1");
    assert!(c.delete_webhook("h-1").await.unwrap());
    assert!(!c.delete_webhook("h-2").await.unwrap());

    let seen = mock.seen();
    assert_eq!(seen[0].param("projectId").as_deref(), Some("bAYZ4a"));
    assert_eq!(seen[1].method, Method::POST);
    assert_eq!(seen[1].param("projectId").as_deref(), Some("bAYZ4a"));
    assert_eq!(seen[1].headers["content-type"], "application/json");
    let body: Value = serde_json::from_slice(&seen[1].body).unwrap();
    assert_eq!(
        body,
        json!({"url": "https://bot.example/webhooks/currents",
        "headers": "{\"x-webhook-secret\":\"s\"}", "hookEvents": ["RUN_FINISH"], "label": "runwarden"})
    );
    let body: Value = serde_json::from_slice(&seen[2].body).unwrap();
    assert_eq!(
        body,
        json!({"label": "new"}),
        "only the fields set are sent"
    );
    assert_eq!(seen.len(), 5);
}

#[tokio::test]
async fn create_webhook_is_not_retried_after_server_error_but_is_after_429() {
    let mock = Mock::start(|_, _| Answer::failed(500, "oops")).await;
    let c = client(mock.base());
    let e = c
        .create_webhook("P", &WebhookSpec::default())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(500));
    assert_eq!(
        mock.hits(),
        1,
        "a POST whose outcome is unknown is not repeated"
    );

    let mock = Mock::start(|n, _| {
        if n == 0 {
            Answer::failed(429, "slow").header("retry-after", "0")
        } else {
            Answer::ok(json!({"hookId": "h", "url": "u"}))
        }
    })
    .await;
    let c = client(mock.base());
    assert_eq!(
        c.create_webhook("P", &WebhookSpec::default())
            .await
            .unwrap()
            .hook_id,
        "h"
    );
    assert_eq!(mock.hits(), 2);
}

// ---- secrets ---------------------------------------------------------------------------

#[tokio::test]
async fn api_key_never_appears_in_debug_or_errors() {
    // A server that echoes the Authorization header back in its error message and body.
    let mock = Mock::start(|_, seen| {
        let auth = seen.headers["authorization"].to_str().unwrap().to_string();
        match seen.path.as_str() {
            "/v1/runs/echo" => Answer::failed(401, &format!("Invalid API key provided: {auth}")),
            "/v1/runs/html" => Answer::raw(200, "text/html", &format!("<html>{auth}</html>")),
            _ => Answer::raw(503, "text/plain", &auth),
        }
    })
    .await;
    let c = CurrentsClient::new(ClientOptions {
        max_attempts: 2,
        ..options(mock.base())
    })
    .unwrap();
    assert_no_key(&format!("{c:?}"));
    assert_no_key(&format!("{:?}", options(mock.base())));
    for id in ["echo", "html", "unavailable"] {
        let e = c.get_run(id).await.unwrap_err();
        assert_no_key(&e.to_string());
        assert_no_key(&format!("{e:?}"));
    }
    // The message survives, redacted.
    let e = c.get_run("echo").await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "Currents API error (HTTP 401): Invalid API key provided: Bearer [redacted]"
    );
    let timeout = CurrentsError::Timeout;
    assert_no_key(&timeout.to_string());
}

/// `webhooks install` against an API that answers the create with 204 and no body (what
/// Currents' own MCP client tolerates): the webhook was created; its id is found by
/// listing again, and the install succeeds.
#[tokio::test]
async fn a_webhook_created_with_a_204_is_found_by_listing() {
    let url = "https://bot.example.com/webhooks/currents";
    let mock = Mock::start(move |n, _| match n {
        0 => Answer::ok(json!([])),
        1 => Answer::raw(204, "application/json", ""),
        _ => Answer::ok(json!([{"hookId": "h204", "url": url, "label": "runwarden"}])),
    })
    .await;
    let c = client(mock.base());
    let change = runwarden::commands::webhooks::install_one(
        &c,
        "bAYZ4a",
        url,
        "x-webhook-secret",
        "s3cret",
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        format!("{change:?}"),
        format!(
            "{:?}",
            runwarden::commands::webhooks::Change::Created("h204".into())
        )
    );
    assert_eq!(mock.hits(), 3, "list, create, list");
}
