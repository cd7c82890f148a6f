//! Limits of the HTTP server against clients that hold its resources, through the real
//! router of a running bot on loopback: unverified webhook bodies share a budget (and a
//! signature that cannot be one is refused before the body is read), the health checks
//! are outside the request slots, the store gauges of `/metrics` are shared by the
//! scrapes of 5 s, a request head dripped byte by byte does not keep its connection for
//! ever, an unreadable body is a 400 (not a 413) and a webhook's 408 is counted, and
//! the admin API's path errors are JSON.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const MIB: usize = 1024 * 1024;

/// A signature of the right form (`sha256=` and 64 hex digits) that matches nothing.
fn well_formed_signature() -> String {
    format!("sha256={}", "ab".repeat(32))
}

/// Opens a connection and writes a request head (`head` lines, without the blank line
/// that ends it).
async fn send_head(app: &TestApp, head: &str) -> TcpStream {
    let mut conn = TcpStream::connect(app.bot.addr).await.unwrap();
    conn.write_all(format!("{head}\r\nhost: {}\r\n\r\n", app.bot.addr).as_bytes())
        .await
        .unwrap();
    conn
}

/// The head of a `POST /webhooks/github` of `len` bytes signed `signature`.
fn github_head(signature: &str, len: usize) -> String {
    format!(
        "POST /webhooks/github HTTP/1.1\r\ncontent-type: application/json\r\nx-github-event: push\r\nx-github-delivery: d-1\r\nx-hub-signature-256: {signature}\r\ncontent-length: {len}"
    )
}

/// The head of a `POST /webhooks/currents` of `len` bytes with the right secret.
fn currents_head(len: usize) -> String {
    format!(
        "POST /webhooks/currents HTTP/1.1\r\ncontent-type: application/json\r\nx-webhook-secret: {CURRENTS_SECRET}\r\ncontent-length: {len}"
    )
}

/// An HTTP/1.1 answer read off a raw connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
}

/// Reads one answer (head and `content-length` body) within `within`; `None` when none
/// came by then or the connection closed first.
async fn read_answer(conn: &mut TcpStream, within: Duration) -> Option<Answer> {
    tokio::time::timeout(within, async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let status = head.get(9..12)?.parse().ok()?;
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < head_end + len {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
        Some(Answer { status, body })
    })
    .await
    .ok()
    .flatten()
}

/// A value of `/metrics` (0 when the series is absent).
async fn metric(app: &TestApp, series: &str) -> f64 {
    app.get_text("/metrics")
        .await
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Polls `/metrics` until `series` has `value`, or panics after `secs`.
async fn wait_metric(app: &TestApp, series: &str, value: f64, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = metric(app, series).await;
        if got == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {got}, not {value}, after {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A signed `ping` (handled: 202 and nothing stored), with its status and answer.
async fn signed_ping(app: &TestApp) -> reqwest::Response {
    let body = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#.to_vec();
    app.http
        .post(app.url("/webhooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", "ping")
        .header("x-github-delivery", "ping-1")
        .header("x-hub-signature-256", sign(&body))
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Finding: a GitHub webhook read up to 25 MiB before checking its signature. One whose
/// signature header cannot be a signature is now refused before any of its body is read
/// (the client here never sends it), with the reason of a bad signature.
#[tokio::test]
async fn a_signature_that_cannot_be_one_is_refused_before_the_body_is_read() {
    let app = spawn_app("").await;
    let digits = "ab".repeat(32);
    for bad in [
        format!("sha256={}", &digits[..63]),
        format!("sha256={digits}0"),
        format!("sha256={}zz", &digits[..62]),
        format!("sha256= {}", &digits[..63]),
        format!("sha1={digits}"),
        format!("SHA256={digits}"),
        digits.clone(),
        "sha256=".to_string(),
    ] {
        let mut conn = send_head(&app, &github_head(&bad, 25 * MIB)).await;
        let answer = read_answer(&mut conn, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("{bad:?}: no answer without the body"));
        assert_eq!(answer.status, 401, "{bad:?}: {answer:?}");
        let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(body["error"], "bad signature", "{bad:?}");
    }
    // A signature of the right form is checked against the body, read in full; upper-
    // case hex digits are of the right form.
    let body = br#"{"zen":"z","hook_id":1}"#.to_vec();
    for signature in [
        sign(&body),
        sign(&body).replace("sha256=", "").to_uppercase(),
    ] {
        let signature = if signature.starts_with("sha256=") {
            signature
        } else {
            format!("sha256={signature}")
        };
        let r = app
            .http
            .post(app.url("/webhooks/github"))
            .header("content-type", "application/json")
            .header("x-github-event", "ping")
            .header("x-github-delivery", "p-1")
            .header("x-hub-signature-256", &signature)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{signature}");
    }
    assert_eq!(
        metric(
            &app,
            "runwarden_webhooks_total{source=\"github\",status=\"401\"}"
        )
        .await,
        8.0
    );
}

/// Finding: 1 024 request slots of 25 MiB let unauthenticated clients make the bot
/// buffer 25 GiB. Bodies read before their signature is checked now share 64 MiB: with
/// it spent (four clients each 16 MiB into a 17 MiB body), another GitHub webhook is
/// answered 503 `{"error"}` with `Retry-After`; the Currents webhook, whose secret is
/// checked before its body is read, is not held back; once the clients go, the budget
/// is whole again.
#[tokio::test]
async fn unverified_github_bodies_share_a_budget_and_past_it_webhooks_get_503() {
    let app = spawn_app("").await;
    let in_use = "runwarden_webhook_unverified_bytes";
    assert_eq!(metric(&app, in_use).await, 0.0);
    let mut holders = Vec::new();
    for _ in 0..4 {
        let mut conn = send_head(&app, &github_head(&well_formed_signature(), 17 * MIB)).await;
        holders.push(tokio::spawn(async move {
            conn.write_all(&vec![b' '; 16 * MIB]).await.unwrap();
            // Held open, the last MiB never sent.
            std::future::pending::<()>().await;
        }));
    }
    wait_metric(&app, in_use, (64 * MIB) as f64, 20).await;

    let r = signed_ping(&app).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("retry later"),
        "{body}"
    );
    assert_eq!(
        metric(
            &app,
            "runwarden_webhooks_total{source=\"github\",status=\"503\"}"
        )
        .await,
        1.0
    );
    let r = app
        .http
        .post(app.url("/webhooks/currents"))
        .header("x-webhook-secret", CURRENTS_SECRET)
        .json(&serde_json::json!({ "event": "SOMETHING_ELSE" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "the Currents webhook has no such budget");

    // The clients go: their shares come back.
    for h in holders {
        h.abort();
        let _ = h.await;
    }
    wait_metric(&app, in_use, 0.0, 10).await;
    assert_eq!(signed_ping(&app).await.status(), 202);
    // A verified body leaves nothing held.
    assert_eq!(metric(&app, in_use).await, 0.0);
}

/// Raises this process's open-file limit to `want` (within the hard limit) when lower.
fn at_least_open_files(want: libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit`/`setrlimit` read and write the one struct given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
}

/// Finding: `/healthz` and `/readyz` waited for one of the 1 024 request slots, so
/// stalled uploads made a probe take 29 s. With every slot held by a webhook whose body
/// never comes, the probes still answer at once (while a route inside the limit waits).
#[tokio::test]
async fn health_checks_answer_while_every_request_slot_is_held() {
    let slots = runwarden::server::CONCURRENCY_LIMIT;
    // Both ends of each connection are in this process.
    at_least_open_files((2 * slots + 1024) as libc::rlim_t);
    let app = spawn_app("").await;
    let mut stalled = Vec::new();
    for _ in 0..slots + 16 {
        stalled.push(send_head(&app, &currents_head(100)).await);
    }
    // Every slot is held once a route inside the limit stops answering.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = tokio::time::timeout(
            Duration::from_secs(2),
            app.http.get(app.url("/api/rules")).send(),
        )
        .await;
        if r.is_err() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slots never filled: {:?}",
            r.unwrap().map(|r| r.status())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (path, want) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let started = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(5), app.http.get(app.url(path)).send())
            .await
            .unwrap_or_else(|_| panic!("{path} waited for a request slot"))
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.text().await.unwrap(), want);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    drop(stalled);
}

/// Finding: every scrape of `/metrics` ran four store queries. The gauges read from the
/// store are now reused for 5 s (a scrape within it reads nothing from the store: here a
/// closed store still shows as up), then read again; the counters stay live meanwhile.
#[tokio::test]
async fn store_gauges_are_reused_for_five_seconds_and_counters_stay_live() {
    let app = spawn_app("").await;
    let read_at = Instant::now();
    let text = app.get_text("/metrics").await;
    assert!(text.contains("\nrunwarden_store_up 1\n"), "{text}");
    app.bot.ctx.store.close().await;
    let unauthorized = "runwarden_webhooks_total{source=\"github\",status=\"401\"}";
    assert_eq!(metric(&app, unauthorized).await, 0.0);
    // A flood of scrapes, and a webhook counted in between.
    let texts = futures::future::join_all((0..50).map(|_| app.get_text("/metrics"))).await;
    let r = app
        .http
        .post(app.url("/webhooks/github"))
        .header("x-hub-signature-256", well_formed_signature())
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let after = app.get_text("/metrics").await;
    assert!(
        read_at.elapsed() < Duration::from_secs(4),
        "too slow to check the reuse: {:?}",
        read_at.elapsed()
    );
    for text in texts.iter().chain([&after]) {
        assert!(text.contains("\nrunwarden_store_up 1\n"), "{text}");
    }
    assert!(after.contains(&format!("\n{unauthorized} 1\n")), "{after}");
    // Read again once 5 s have passed: the outage shows.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = app.get_text("/metrics").await;
        if text.contains("\nrunwarden_store_up 0\n") {
            assert!(!text.contains("runwarden_queue_depth"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(read_at.elapsed() >= Duration::from_secs(5));
    assert!(
        after.contains(
            "# HELP runwarden_store_up 1 when the store answered the last reads of the gauges taken from it (at most 5 s old)"
        ),
        "{after}"
    );
}

/// Finding: every byte read restarted `[server] idle_timeout`, so a client sending its
/// request head a byte at a time kept its connection for ever. A connection that has
/// read and written nothing since for the request timeout (30 s) plus the idle timeout
/// (1 s here) is now closed; one that keeps being answered is not, however long it
/// lives.
#[tokio::test]
async fn a_request_head_dripped_byte_by_byte_is_cut_after_the_request_and_idle_timeouts() {
    let app = spawn_app("[server]\nidle_timeout = \"1s\"\n").await;
    let bound = runwarden::server::REQUEST_TIMEOUT + Duration::from_secs(1);

    // A keep-alive client answered every 500 ms, for longer than the bound.
    let busy = {
        let mut conn = TcpStream::connect(app.bot.addr).await.unwrap();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut answered = 0;
            while started.elapsed() < bound + Duration::from_secs(3) {
                conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
                    .await
                    .expect("the busy connection stays open");
                let a = read_answer(&mut conn, Duration::from_secs(5))
                    .await
                    .expect("answered");
                assert_eq!(a.status, 200, "{a:?}");
                answered += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            answered
        })
    };

    let mut drip = TcpStream::connect(app.bot.addr).await.unwrap();
    drip.write_all(b"GET /healthz HTTP/1.1\r\nx-drip: ")
        .await
        .unwrap();
    let started = Instant::now();
    let (mut rd, mut wr) = drip.into_split();
    let mut closed = tokio::spawn(async move {
        let mut buf = [0u8; 256];
        // Whatever comes (EOF, a reset): the server ended the connection.
        let r = rd.read(&mut buf).await;
        (
            r.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned()),
            Instant::now(),
        )
    });
    // One byte every 300 ms, well within the idle timeout.
    let (read, at) = loop {
        tokio::select! {
            r = &mut closed => break r.unwrap(),
            () = tokio::time::sleep(Duration::from_millis(300)) => {
                let _ = wr.write_all(b"a").await;
            }
        }
        assert!(
            started.elapsed() < bound + Duration::from_secs(15),
            "a dripping client kept its connection for {:?}",
            started.elapsed()
        );
    };
    let lasted = at - started;
    assert!(
        matches!(&read, Ok(s) if s.is_empty()) || read.is_err(),
        "closed without an answer: {read:?}"
    );
    assert!(lasted >= bound - Duration::from_millis(100), "{lasted:?}");

    let answered = busy.await.unwrap();
    assert!(answered >= 40, "{answered}");
    assert_eq!(
        reqwest::get(app.url("/healthz")).await.unwrap().status(),
        200
    );
}

/// Finding: a webhook body that could not be read for any reason (here the client stops
/// sending half-way) was answered 413 "body too large"; it is now a 400, counted as such.
#[tokio::test]
async fn a_body_cut_short_is_a_400_not_a_413() {
    let app = spawn_app("").await;
    for (source, head) in [
        ("github", github_head(&well_formed_signature(), 100)),
        ("currents", currents_head(100)),
    ] {
        let mut conn = send_head(&app, &head).await;
        conn.write_all(&[b' '; 10]).await.unwrap();
        conn.shutdown().await.unwrap();
        let answer = read_answer(&mut conn, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("{source}: no answer"));
        assert_eq!(answer.status, 400, "{source}: {answer:?}");
        let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(body["error"], "body could not be read", "{source}");
        let series = format!("runwarden_webhooks_total{{source=\"{source}\",status=\"400\"}}");
        assert_eq!(metric(&app, &series).await, 1.0, "{series}");
    }
}

/// Finding: the 408 of the request timeout was missing from `runwarden_webhooks_total`.
/// Webhooks whose bodies stall are answered 408 after 30 s, and counted.
#[tokio::test]
async fn a_webhook_answered_408_by_the_request_timeout_is_counted() {
    let app = spawn_app("").await;
    let mut conns = Vec::new();
    for (source, head) in [
        ("github", github_head(&well_formed_signature(), 100)),
        ("currents", currents_head(100)),
    ] {
        let mut conn = send_head(&app, &head).await;
        conn.write_all(&[b' '; 10]).await.unwrap();
        conns.push((source, conn));
    }
    let within = runwarden::server::REQUEST_TIMEOUT + Duration::from_secs(15);
    for (source, mut conn) in conns {
        let answer = read_answer(&mut conn, within)
            .await
            .unwrap_or_else(|| panic!("{source}: no answer"));
        assert_eq!(answer.status, 408, "{source}: {answer:?}");
        let series = format!("runwarden_webhooks_total{{source=\"{source}\",status=\"408\"}}");
        assert_eq!(metric(&app, &series).await, 1.0, "{series}");
    }
}

/// Finding: `POST /api/sweep/%FF` was answered in plain text; the admin API's path
/// errors are now `{"error": ...}` like its others.
#[tokio::test]
async fn a_sweep_path_that_is_not_utf8_is_a_json_400() {
    let app = spawn_app("").await;
    let r = app
        .http
        .post(app.url("/api/sweep/%FF"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(!body["error"].as_str().unwrap().is_empty(), "{body}");
    // Still behind the token.
    let r = app
        .http
        .post(app.url("/api/sweep/%FF"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
