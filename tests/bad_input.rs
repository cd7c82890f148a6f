//! The bad-input corpus (issue 8), through the real router of a running bot: signatures,
//! timestamps, headers, content types, giant and deeply nested bodies, invalid UTF-8,
//! unknown events, Currents payloads without a run URL or with a foreign one.
//!
//! Each case gets the status of SPEC §5; no answer echoes the input; the log lines it
//! causes (captured at INFO and above, the production default) carry no payload; the
//! process never panics (and `/healthz` answers after the corpus).

mod common;

use std::sync::{Arc, Mutex, OnceLock};

use common::*;
use hmac::{Hmac, Mac};
use runwarden::intake::webhooks::{timestamp_ok, verify_github_signature};
use runwarden::secret::Secret;
use serde_json::json;
use sha2::Sha256;

/// What every payload of the corpus carries; it must never come back in an answer or a
/// log line above DEBUG.
const CANARY: &str = "CANARY-7f3a9c-payload";

// ---------------------------------------------------------------------------------------
// Log capture: one global subscriber for this test binary, INFO and above, into a buffer.

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Buffer {
    static LOGS: OnceLock<Buffer> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Buffer::default();
        let writer = buf.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        buf
    })
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().0.lock().unwrap()).into_owned()
}

fn assert_no_canary_logged() {
    let text = log_text();
    assert!(
        !text.contains(CANARY),
        "a payload reached the logs:\n{text}"
    );
}

async fn app() -> TestApp {
    logs();
    spawn_app("").await
}

fn sign_with(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn push_body() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ref": "refs/heads/feat/x", "before": "a", "after": "b", "deleted": false,
        "repository": {"full_name": "acme/web"},
        "head_commit": {"timestamp": chrono::Utc::now().to_rfc3339(), "message": CANARY},
    }))
    .unwrap()
}

/// A GitHub delivery with every header settable.
struct Gh<'a> {
    event: Option<&'a [u8]>,
    delivery: Option<&'a [u8]>,
    signature: Option<String>,
    content_type: Option<&'a str>,
    body: Vec<u8>,
}

impl Gh<'_> {
    fn signed(body: Vec<u8>) -> Self {
        Gh {
            event: Some(b"push"),
            delivery: Some(b"d-1"),
            signature: Some(sign(&body)),
            content_type: Some("application/json"),
            body,
        }
    }
}

async fn send(app: &TestApp, g: Gh<'_>) -> (u16, String) {
    let mut r = app.http.post(app.url("/webhooks/github"));
    if let Some(e) = g.event {
        r = r.header("x-github-event", http::HeaderValue::from_bytes(e).unwrap());
    }
    if let Some(d) = g.delivery {
        r = r.header(
            "x-github-delivery",
            http::HeaderValue::from_bytes(d).unwrap(),
        );
    }
    if let Some(s) = g.signature {
        r = r.header("x-hub-signature-256", s);
    }
    if let Some(c) = g.content_type {
        r = r.header("content-type", c);
    }
    let resp = r.body(g.body).send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert!(
        !text.contains(CANARY),
        "the answer echoes the payload: {text}"
    );
    (status, text)
}

/// A Currents delivery.
async fn send_currents(
    app: &TestApp,
    secret: Option<&str>,
    ts: Option<&str>,
    ct: Option<&str>,
    body: Vec<u8>,
) -> (u16, String) {
    let mut r = app.http.post(app.url("/webhooks/currents"));
    if let Some(s) = secret {
        r = r.header("x-webhook-secret", s);
    }
    if let Some(t) = ts {
        r = r.header("x-timestamp", t);
    }
    if let Some(c) = ct {
        r = r.header("content-type", c);
    }
    let resp = r.body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert!(
        !text.contains(CANARY),
        "the answer echoes the payload: {text}"
    );
    (status, text)
}

fn currents_json(run_url: &str) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"event": "RUN_FINISH", "runUrl": run_url, "buildId": CANARY, "tags": [CANARY]}),
    )
    .unwrap()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn still_healthy(app: &TestApp) {
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.http
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(
        app.mutations().is_empty(),
        "bad input never acts: {:?}",
        app.mutations()
    );
}

// ---------------------------------------------------------------------------------------
// Signatures

#[test]
fn the_github_docs_signature_vector_is_accepted_and_its_variants_are_not() {
    // validating-webhook-deliveries.md
    let secret = [Secret::new("It's a Secret to Everybody")];
    let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    assert!(verify_github_signature(&secret, good, b"Hello, World!"));
    assert!(
        !verify_github_signature(&secret, good, b"Hello, World?"),
        "one byte changed"
    );
    assert!(
        !verify_github_signature(&secret, good, b"Hello, World! "),
        "one byte added"
    );
    assert!(!verify_github_signature(
        &secret,
        &good.replace("sha256=", "sha1="),
        b"Hello, World!"
    ));
    assert!(!verify_github_signature(
        &secret,
        &good.replace("sha256=", ""),
        b"Hello, World!"
    ));
    assert!(
        !verify_github_signature(&secret, &good[..good.len() - 1], b"Hello, World!"),
        "truncated hex"
    );
    assert!(
        !verify_github_signature(&secret, &good[..good.len() - 2], b"Hello, World!"),
        "truncated byte"
    );
    assert!(!verify_github_signature(
        &secret,
        "sha256=",
        b"Hello, World!"
    ));
    assert!(!verify_github_signature(&secret, "", b"Hello, World!"));
    assert!(
        !verify_github_signature(&secret, &good.replace('7', "z"), b"Hello, World!"),
        "not hex"
    );
    assert!(
        !verify_github_signature(&secret, &format!("{good}00"), b"Hello, World!"),
        "too long"
    );
    // An empty secret verifies nothing, not even the HMAC made with the empty key.
    let empty_key_sig = sign_with("", b"Hello, World!");
    assert!(!verify_github_signature(
        &[Secret::new("")],
        &empty_key_sig,
        b"Hello, World!"
    ));
    assert!(!verify_github_signature(&[], good, b"Hello, World!"));
    // Rotation: any configured secret verifies.
    let rotated = [
        Secret::new("new-secret"),
        Secret::new("It's a Secret to Everybody"),
    ];
    assert!(verify_github_signature(&rotated, good, b"Hello, World!"));
}

#[tokio::test]
async fn github_signature_cases_through_the_router() {
    let app = app().await;
    let body = push_body();
    // one byte of the body changed
    let mut changed = body.clone();
    let i = changed.len() / 2;
    changed[i] ^= 1;
    let g = Gh {
        body: changed,
        ..Gh::signed(body.clone())
    };
    assert_eq!(send(&app, g).await.0, 401);
    for bad in [
        sign(&body).replace("sha256=", "sha1="),
        sign(&body).replace("sha256=", "SHA256="),
        sign(&body)[..40].to_string(),
        "sha256=".to_string(),
        String::new(),
        format!("{} {}", sign(b"other"), sign(&body)),
        format!("{},{}", sign(&body), sign(b"other")),
        sign_with("wrong-secret", &body),
        sign_with("", &body),
    ] {
        let g = Gh {
            signature: Some(bad.clone()),
            ..Gh::signed(body.clone())
        };
        assert_eq!(send(&app, g).await.0, 401, "{bad:?}");
    }
    let g = Gh {
        signature: None,
        ..Gh::signed(body.clone())
    };
    assert_eq!(send(&app, g).await.0, 401, "missing signature");
    // The raw bytes are verified: unicode and odd whitespace verify; the same JSON
    // re-serialized does not.
    let raw = format!("{{ \"zen\" :\t\"caf\u{e9} \u{1F600}  {CANARY}\",\r\n\"hook_id\": 1 }}")
        .into_bytes();
    let g = Gh {
        event: Some(b"ping"),
        delivery: Some(b"p-1"),
        ..Gh::signed(raw.clone())
    };
    assert_eq!(send(&app, g).await.0, 202, "raw body verifies");
    let reserialized =
        serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(&raw).unwrap()).unwrap();
    let g = Gh {
        event: Some(b"ping"),
        delivery: Some(b"p-2"),
        signature: Some(sign(&raw)),
        ..Gh::signed(reserialized)
    };
    assert_eq!(send(&app, g).await.0, 401, "re-serialized JSON fails");
    // Rotation: the old secret still verifies.
    let g = Gh {
        delivery: Some(b"rot-1"),
        signature: Some(sign_with("old-secret", &body)),
        ..Gh::signed(body.clone())
    };
    assert_eq!(send(&app, g).await.0, 202);
    let store = &app.bot.ctx.store;
    assert!(
        store
            .find_delivery("github", "rot-1")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .find_delivery("github", "p-1")
            .await
            .unwrap()
            .is_none(),
        "a ping is not stored"
    );
    assert!(
        store
            .find_delivery("github", "d-1")
            .await
            .unwrap()
            .is_none(),
        "nothing rejected was stored"
    );
    still_healthy(&app).await;
    assert_no_canary_logged();
    assert!(
        log_text().contains("webhook rejected"),
        "rejections are logged"
    );
    // ... and counted: 1 changed body, 9 bad signatures, 1 missing, 1 re-serialized.
    assert_eq!(
        metric(
            &app,
            "runwarden_webhooks_total{source=\"github\",status=\"401\"}"
        )
        .await,
        12.0
    );
}

/// The value of the metric line starting with `series` on `/metrics` (0 when absent).
async fn metric(app: &TestApp, series: &str) -> f64 {
    let m = app.get_text("/metrics").await;
    m.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// Events stored so far, processed or not (nonzero whenever one was stored, whatever the
/// processor does between the two reads).
async fn stored(app: &TestApp) -> i64 {
    app.bot.ctx.store.count_unprocessed().await.unwrap() + processed(app).await
}

async fn processed(app: &TestApp) -> i64 {
    let m = app.get_text("/metrics").await;
    m.lines()
        .filter(|l| l.starts_with("runwarden_events_processed_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as i64
}

// ---------------------------------------------------------------------------------------
// Timestamps (Currents x-timestamp, seconds or milliseconds, tolerance 5 min)

#[test]
fn timestamp_rules() {
    let now = 1_700_000_000_000;
    let tol = 300_000;
    assert!(timestamp_ok(&now.to_string(), now, tol), "ms");
    assert!(timestamp_ok(&(now / 1000).to_string(), now, tol), "s");
    assert!(
        timestamp_ok(&(now - tol).to_string(), now, tol),
        "at the tolerance"
    );
    assert!(
        !timestamp_ok(&(now - tol - 1000).to_string(), now, tol),
        "tolerance + 1 s in the past"
    );
    assert!(
        !timestamp_ok(&(now + tol + 1000).to_string(), now, tol),
        "tolerance + 1 s in the future"
    );
    assert!(
        !timestamp_ok(&((now - tol) / 1000 - 1).to_string(), now, tol),
        "seconds, stale"
    );
    for bad in [
        "-1",
        "-1700000000000",
        "0",
        "",
        " ",
        "1.7e12",
        "0x10",
        "soon",
        "99999999999999999999999",
        "1700000000000 1",
    ] {
        assert!(!timestamp_ok(bad, now, tol), "{bad:?}");
    }
}

#[tokio::test]
async fn currents_auth_and_timestamp_cases_through_the_router() {
    let app = app().await;
    let ok_body = |id: &str| currents_json(&format!("https://app.currents.dev/run/{id}"));
    let s = Some(CURRENTS_SECRET);
    let stale = (now_ms() - 6 * 60_000).to_string();
    let future = (now_ms() + 6 * 60_000).to_string();
    let cases: Vec<(Option<&str>, Option<String>, u16, &str)> = vec![
        (None, None, 401, "missing secret header"),
        (Some(""), None, 401, "empty secret header"),
        (Some("currents-hook-secreT"), None, 401, "wrong secret"),
        (
            Some("xcurrents-hook-secret"),
            None,
            401,
            "secret with a prefix",
        ),
        (Some("currents-hook-secre"), None, 401, "secret prefix"),
        (s, Some(stale), 401, "stale"),
        (s, Some(future), 401, "future"),
        (s, Some("-1".into()), 401, "negative"),
        (s, Some("".into()), 401, "empty timestamp"),
        (s, Some("yesterday".into()), 401, "garbage timestamp"),
    ];
    for (secret, ts, want, what) in cases {
        let (got, _) = send_currents(
            &app,
            secret,
            ts.as_deref(),
            Some("application/json"),
            ok_body("abc123"),
        )
        .await;
        assert_eq!(got, want, "{what}");
    }
    // Accepted: milliseconds, seconds, and no timestamp at all (it is optional).
    let (got, _) = send_currents(
        &app,
        s,
        Some(&now_ms().to_string()),
        Some("application/json"),
        ok_body("runms1"),
    )
    .await;
    assert_eq!(got, 202, "ms");
    let (got, _) = send_currents(
        &app,
        s,
        Some(&(now_ms() / 1000).to_string()),
        Some("application/json"),
        ok_body("runsec1"),
    )
    .await;
    assert_eq!(got, 202, "seconds");
    let (got, _) =
        send_currents(&app, s, None, Some("application/json"), ok_body("runnots1")).await;
    assert_eq!(got, 202, "no timestamp");
    // Authentication comes before the body: a bad secret with a garbage body is 401.
    let (got, _) = send_currents(
        &app,
        None,
        None,
        Some("application/json"),
        b"\xff{{{".to_vec(),
    )
    .await;
    assert_eq!(got, 401);
    still_healthy(&app).await;
    assert_no_canary_logged();
}

// ---------------------------------------------------------------------------------------
// Headers and content types

#[tokio::test]
async fn missing_empty_and_odd_headers() {
    let app = app().await;
    let body = push_body();
    let long = vec![b'd'; 200];
    let labeled = serde_json::to_vec(&json!({
        "action": "labeled", "number": 1,
        "pull_request": {"head": {"ref": "feat/x"}}, "repository": {"full_name": "acme/web"},
    }))
    .unwrap();
    let cases: Vec<(Gh<'_>, u16, &str)> = vec![
        (
            Gh {
                event: None,
                ..Gh::signed(body.clone())
            },
            400,
            "missing X-GitHub-Event",
        ),
        (
            Gh {
                event: Some(b""),
                ..Gh::signed(body.clone())
            },
            400,
            "empty X-GitHub-Event",
        ),
        (
            Gh {
                event: Some(b"   "),
                ..Gh::signed(body.clone())
            },
            400,
            "blank X-GitHub-Event",
        ),
        (
            Gh {
                event: Some(b"push\xff"),
                ..Gh::signed(body.clone())
            },
            400,
            "non-UTF-8 X-GitHub-Event",
        ),
        (
            Gh {
                delivery: None,
                ..Gh::signed(body.clone())
            },
            400,
            "missing X-GitHub-Delivery",
        ),
        (
            Gh {
                delivery: Some(b""),
                ..Gh::signed(body.clone())
            },
            400,
            "empty X-GitHub-Delivery",
        ),
        (
            Gh {
                delivery: Some(&long),
                ..Gh::signed(body.clone())
            },
            400,
            "oversized X-GitHub-Delivery",
        ),
        (
            Gh {
                content_type: Some("application/x-www-form-urlencoded"),
                ..Gh::signed(body.clone())
            },
            400,
            "form-encoded",
        ),
        (
            Gh {
                content_type: Some("text/plain"),
                ..Gh::signed(body.clone())
            },
            400,
            "text/plain",
        ),
        (
            Gh {
                event: Some(b"ping"),
                ..Gh::signed(br#"{"zen":"hi","hook_id":1}"#.to_vec())
            },
            202,
            "ping",
        ),
        (
            Gh {
                event: Some(b"issues"),
                ..Gh::signed(body.clone())
            },
            202,
            "unknown event",
        ),
        (
            Gh {
                event: Some(b"pull_request"),
                ..Gh::signed(labeled)
            },
            202,
            "unhandled action",
        ),
    ];
    for (g, want, what) in cases {
        assert_eq!(send(&app, g).await.0, want, "{what}");
    }
    // Currents: wrong content type.
    let good = currents_json("https://app.currents.dev/run/ct1");
    let (got, _) = send_currents(
        &app,
        Some(CURRENTS_SECRET),
        None,
        Some("text/plain"),
        good.clone(),
    )
    .await;
    assert_eq!(got, 400);
    let (got, _) = send_currents(
        &app,
        Some(CURRENTS_SECRET),
        None,
        Some("application/x-www-form-urlencoded"),
        good,
    )
    .await;
    assert_eq!(got, 400);
    // Nothing of the above was stored.
    assert_eq!(stored(&app).await, 0);
    still_healthy(&app).await;
    assert_no_canary_logged();
}

// ---------------------------------------------------------------------------------------
// Bodies: giant, deeply nested, invalid UTF-8, malformed

#[tokio::test]
async fn giant_bodies_get_413_with_or_without_a_content_length() {
    let app = app().await;
    // Currents: 1 MiB + 1 with a Content-Length.
    let big = vec![b' '; 1024 * 1024 + 1];
    let (got, _) = send_currents(
        &app,
        Some(CURRENTS_SECRET),
        None,
        Some("application/json"),
        big,
    )
    .await;
    assert_eq!(got, 413);
    // Currents: a chunked body without a Content-Length, 4 MiB in 64 KiB chunks.
    assert_eq!(chunked_currents(&app, 64, 64 * 1024).await, 413);
    // GitHub: 25 MiB + 1, signed.
    let big = vec![b' '; 25 * 1024 * 1024 + 1];
    let g = Gh::signed(big);
    assert_eq!(send(&app, g).await.0, 413);
    still_healthy(&app).await;
    for (series, n) in [
        (
            "runwarden_webhooks_total{source=\"currents\",status=\"413\"}",
            2.0,
        ),
        (
            "runwarden_webhooks_total{source=\"github\",status=\"413\"}",
            1.0,
        ),
    ] {
        assert_eq!(metric(&app, series).await, n, "{series}");
    }
}

/// Posts `n` chunks of `size` spaces to `/webhooks/currents` with chunked transfer
/// encoding (no Content-Length) over a raw connection; returns the answer's status.
async fn chunked_currents(app: &TestApp, n: usize, size: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(app.bot.addr).await.unwrap();
    let head = format!(
        "POST /webhooks/currents HTTP/1.1\r\nhost: {}\r\nx-webhook-secret: {CURRENTS_SECRET}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        app.bot.addr
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; size];
    for _ in 0..n {
        // The server may answer and close before taking it all.
        if conn
            .write_all(format!("{size:x}\r\n").as_bytes())
            .await
            .is_err()
            || conn.write_all(&chunk).await.is_err()
            || conn.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let mut buf = [0u8; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(k) => answer.extend_from_slice(&buf[..k]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no answer: {text:?}"))
}

#[tokio::test]
async fn a_24_mb_signed_push_is_accepted() {
    let app = app().await;
    let commits: Vec<_> = (0..24 * 1024)
        .map(|i| json!({"id": format!("{i:040}"), "message": "m".repeat(960)}))
        .collect();
    let body = serde_json::to_vec(&json!({
        "ref": "refs/heads/feat/big", "before": "a", "after": "b", "deleted": false,
        "repository": {"full_name": "acme/web"}, "commits": commits,
    }))
    .unwrap();
    assert!(
        body.len() > 24_000_000 && body.len() < 25 * 1024 * 1024,
        "{}",
        body.len()
    );
    let g = Gh {
        delivery: Some(b"big-1"),
        ..Gh::signed(body)
    };
    assert_eq!(send(&app, g).await.0, 202);
    still_healthy(&app).await;
}

#[tokio::test]
async fn deeply_nested_invalid_utf8_and_malformed_bodies_are_400() {
    let app = app().await;
    let nested = vec![b'['; 100_000];
    let mut nested_obj = b"{\"a\":".repeat(50_000);
    nested_obj.extend_from_slice(CANARY.as_bytes());
    let mut bad_utf8_string = b"{\"ref\":\"refs/heads/".to_vec();
    bad_utf8_string.push(0xff);
    bad_utf8_string.extend_from_slice(CANARY.as_bytes());
    bad_utf8_string.extend_from_slice(b"\"}");
    // (body, what, is it JSON at all)
    let bodies: Vec<(Vec<u8>, &str, bool)> = vec![
        (nested.clone(), "100k [", false),
        (nested_obj.clone(), "50k nested objects", false),
        (b"\xff\xfe\x00{".to_vec(), "invalid UTF-8", false),
        (bad_utf8_string, "invalid UTF-8 in a string", false),
        (b"{not json".to_vec(), "not JSON", false),
        (b"".to_vec(), "empty", false),
        (b"null".to_vec(), "null", true),
        (
            format!("{{\"ref\": 42, \"after\": \"{CANARY}\"}}").into_bytes(),
            "wrong types",
            true,
        ),
        (
            format!("{{\"ref\": \"{CANARY}\"}}").into_bytes(),
            "missing fields",
            true,
        ),
    ];
    for (i, (body, what, json)) in bodies.iter().enumerate() {
        for event in ["push", "pull_request", "workflow_run", "ping"] {
            let delivery = format!("bad-{i}-{event}");
            let g = Gh {
                event: Some(event.as_bytes()),
                delivery: Some(delivery.as_bytes()),
                ..Gh::signed(body.clone())
            };
            let (got, _) = send(&app, g).await;
            // A ping only needs to be JSON; the other events need their fields.
            let want = if event == "ping" && *json { 202 } else { 400 };
            assert_eq!(got, want, "{what} as {event}");
        }
        let (got, _) = send_currents(
            &app,
            Some(CURRENTS_SECRET),
            None,
            Some("application/json"),
            body.clone(),
        )
        .await;
        assert_eq!(got, 400, "{what} to Currents");
    }
    assert_eq!(stored(&app).await, 0, "nothing stored");
    still_healthy(&app).await;
    assert_no_canary_logged();
}

// ---------------------------------------------------------------------------------------
// Events and Currents payloads

#[tokio::test]
async fn unknown_events_and_bad_run_urls() {
    let app = app().await;
    let s = Some(CURRENTS_SECRET);
    let ct = Some("application/json");
    // Unknown Currents event: 202, nothing stored.
    let body = serde_json::to_vec(
        &json!({"event": "RUN_PAUSED", "runUrl": "https://app.currents.dev/run/abc", "x": CANARY}),
    )
    .unwrap();
    assert_eq!(send_currents(&app, s, None, ct, body).await.0, 202);
    let body =
        serde_json::to_vec(&json!({"event": "", "runUrl": "https://app.currents.dev/run/abc"}))
            .unwrap();
    assert_eq!(send_currents(&app, s, None, ct, body).await.0, 202);
    // Missing runUrl, or one that is not a run of the configured dashboard.
    let missing = serde_json::to_vec(&json!({"event": "RUN_FINISH", "buildId": CANARY})).unwrap();
    assert_eq!(
        send_currents(&app, s, None, ct, missing).await.0,
        400,
        "missing runUrl"
    );
    for url in [
        "https://evil.example/run/abc123".to_string(),
        "https://app.currents.dev@evil.example/run/abc123".to_string(),
        "https://evil.example/app.currents.dev/run/abc123".to_string(),
        "http://169.254.169.254/run/abc123".to_string(),
        "http://127.0.0.1/run/abc123".to_string(),
        "https://app.currents.dev/run/".to_string(),
        "https://app.currents.dev/runs/abc123".to_string(),
        "https://app.currents.dev/run/abc%2F..%2Fx".to_string(),
        "https://app.currents.dev/run/../../v1/runs/abc".to_string(),
        format!("https://app.currents.dev/run/{}", "a".repeat(65)),
        format!("https://app.currents.dev/run/{CANARY}"),
        "not a url".to_string(),
        String::new(),
    ] {
        let (got, _) = send_currents(&app, s, None, ct, currents_json(&url)).await;
        assert_eq!(got, 400, "{url}");
    }
    let body = serde_json::to_vec(&json!({"event": "RUN_FINISH", "runUrl": 42})).unwrap();
    assert_eq!(
        send_currents(&app, s, None, ct, body).await.0,
        400,
        "runUrl not a string"
    );
    assert_eq!(stored(&app).await, 0, "nothing stored");
    // The bot never fetched any URL from a payload: the simulator saw no request at all.
    assert!(
        app.sim.request_counts().is_empty(),
        "{:?}",
        app.sim.request_counts()
    );
    still_healthy(&app).await;
    assert_no_canary_logged();
}

/// SPEC §5: "an event it does not handle 202 and nothing". Authentication comes first;
/// then the event's name alone decides whether it is handled (GitHub: the header, and the
/// `action` of `pull_request` and `workflow_run`; Currents: the body's `event`); only a
/// handled event must be JSON and well-formed.
#[tokio::test]
async fn unhandled_events_are_202_whatever_the_rest_of_the_request() {
    let app = app().await;
    let form = format!("payload=%7B%22action%22%3A%22{CANARY}%22%7D").into_bytes();
    let minimal = |action: &str| format!(r#"{{"action":"{action}","x":"{CANARY}"}}"#).into_bytes();
    let cases: Vec<(Gh<'_>, u16, &str)> = vec![
        (
            Gh {
                event: Some(b"issues"),
                content_type: Some("application/x-www-form-urlencoded"),
                ..Gh::signed(form.clone())
            },
            202,
            "issues, form-encoded",
        ),
        (
            Gh {
                event: Some(b"issues"),
                content_type: Some("text/plain"),
                delivery: None,
                ..Gh::signed(b"{not json".to_vec())
            },
            202,
            "issues, not JSON, no delivery id",
        ),
        (
            Gh {
                event: Some(b"issues"),
                signature: Some(sign_with("wrong-secret", &form)),
                content_type: Some("application/x-www-form-urlencoded"),
                ..Gh::signed(form.clone())
            },
            401,
            "issues, bad signature",
        ),
        (
            Gh {
                event: Some(b"pull_request"),
                ..Gh::signed(minimal("opened"))
            },
            202,
            "pull_request opened, minimal body",
        ),
        (
            Gh {
                event: Some(b"pull_request"),
                ..Gh::signed(minimal("synchronize"))
            },
            202,
            "pull_request synchronize, minimal body",
        ),
        (
            Gh {
                event: Some(b"workflow_run"),
                ..Gh::signed(minimal("requested"))
            },
            202,
            "workflow_run requested, minimal body",
        ),
        (
            Gh {
                event: Some(b"pull_request"),
                signature: Some(sign_with("wrong-secret", &minimal("opened"))),
                ..Gh::signed(minimal("opened"))
            },
            401,
            "pull_request opened, bad signature",
        ),
        // Handled: the fields are required, and JSON.
        (
            Gh {
                event: Some(b"pull_request"),
                ..Gh::signed(minimal("closed"))
            },
            400,
            "pull_request closed, minimal body",
        ),
        (
            Gh {
                event: Some(b"workflow_run"),
                ..Gh::signed(minimal("completed"))
            },
            400,
            "workflow_run completed, minimal body",
        ),
        (
            Gh {
                event: Some(b"pull_request"),
                content_type: Some("application/x-www-form-urlencoded"),
                ..Gh::signed(form.clone())
            },
            400,
            "pull_request, form-encoded",
        ),
        (
            Gh {
                event: Some(b"pull_request"),
                ..Gh::signed(format!(r#"{{"action":42,"x":"{CANARY}"}}"#).into_bytes())
            },
            400,
            "pull_request, action not a string",
        ),
    ];
    for (g, want, what) in cases {
        assert_eq!(send(&app, g).await.0, want, "{what}");
    }
    let s = Some(CURRENTS_SECRET);
    let json_ct = Some("application/json");
    let body = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();
    // (secret, content type, body, status, what)
    type Case<'a> = (Option<&'a str>, Option<&'a str>, Vec<u8>, u16, &'a str);
    let currents: Vec<Case<'_>> = vec![
        (
            s,
            json_ct,
            body(json!({"event": "PROJECT_X", "x": CANARY})),
            202,
            "PROJECT_X without runUrl",
        ),
        (
            s,
            json_ct,
            body(
                json!({"event": "project_x", "runUrl": "https://evil.example/run/abc", "x": CANARY}),
            ),
            202,
            "PROJECT_X with a foreign runUrl",
        ),
        (
            s,
            Some("text/plain"),
            body(json!({"event": "PROJECT_X", "runUrl": 42})),
            202,
            "PROJECT_X, text/plain, runUrl not a string",
        ),
        (
            Some("wrong"),
            json_ct,
            body(json!({"event": "PROJECT_X"})),
            401,
            "PROJECT_X, wrong secret",
        ),
        (
            None,
            json_ct,
            body(json!({"event": "PROJECT_X"})),
            401,
            "PROJECT_X, no secret",
        ),
        // Handled, or not known to be unhandled: the payload must be whole.
        (
            s,
            json_ct,
            body(json!({"event": "run_finish", "x": CANARY})),
            400,
            "run_finish without runUrl",
        ),
        (
            s,
            json_ct,
            body(json!({"runUrl": "https://app.currents.dev/run/abc"})),
            400,
            "no event",
        ),
        (
            s,
            json_ct,
            body(json!({"event": 7, "runUrl": "https://app.currents.dev/run/abc"})),
            400,
            "event not a string",
        ),
    ];
    for (secret, ct, b, want, what) in currents {
        assert_eq!(
            send_currents(&app, secret, None, ct, b).await.0,
            want,
            "{what}"
        );
    }
    // A stale timestamp is refused before the event is looked at.
    let stale = (now_ms() - 6 * 60_000).to_string();
    let (got, _) = send_currents(
        &app,
        s,
        Some(&stale),
        json_ct,
        body(json!({"event": "PROJECT_X"})),
    )
    .await;
    assert_eq!(got, 401, "PROJECT_X, stale timestamp");
    assert_eq!(stored(&app).await, 0, "nothing stored");
    for (series, n) in [
        (
            "runwarden_webhooks_total{source=\"github\",status=\"202\"}",
            5.0,
        ),
        (
            "runwarden_webhooks_total{source=\"currents\",status=\"202\"}",
            3.0,
        ),
    ] {
        assert_eq!(metric(&app, series).await, n, "{series}");
    }
    still_healthy(&app).await;
    assert_no_canary_logged();
}

#[tokio::test]
async fn a_malformed_github_payload_is_logged_without_its_content() {
    let app = app().await;
    // serde's message for this quotes the value: `invalid type: string "...", expected a boolean`.
    let body = format!("{{\"ref\": \"refs/heads/x\", \"after\": \"x\", \"deleted\": \"{CANARY}\", \"repository\": {{\"full_name\": \"acme/web\"}}}}").into_bytes();
    let g = Gh {
        delivery: Some(b"mal-1"),
        ..Gh::signed(body)
    };
    assert_eq!(send(&app, g).await.0, 400);
    let text = log_text();
    assert!(text.contains("malformed GitHub payload"), "{text}");
    assert_no_canary_logged();
    still_healthy(&app).await;
}
