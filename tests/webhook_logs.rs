//! The log line of a rejected webhook, captured by a subscriber of the test's own.
//!
//! In a test binary of its own: tracing caches whether a log site is enabled across the
//! whole process, and other tests' threads (without a subscriber) racing this one's made
//! the capture come out empty now and then under `cargo test`.

mod common;

use common::*;
use serde_json::json;

/// Log capture for one test: what this thread's subscriber writes (the test's
/// single-threaded runtime runs the server on this thread too).
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// "webhook rejected" names its source, so that a 413 or a 404 can be tied to its
/// sender; it never carries a header value.
#[tokio::test]
async fn webhook_rejections_are_logged_with_their_source() {
    let buf = LogBuffer::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = spawn_app_with(AppOptions {
        github_secret: false,
        ..AppOptions::default()
    })
    .await;
    // github: no secret, 404.
    assert_eq!(app.github_hook("push", "x", &json!({})).await.status(), 404);
    // currents: over the 1 MiB limit, 413; then a wrong secret, 401.
    let r = app
        .http
        .post(app.url("/webhooks/currents"))
        .header("x-webhook-secret", CURRENTS_SECRET)
        .header("content-type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = app
        .http
        .post(app.url("/webhooks/currents"))
        .header("x-webhook-secret", "WRONG-SECRET-VALUE")
        .header(
            "x-timestamp",
            chrono::Utc::now().timestamp_millis().to_string(),
        )
        .json(&json!({"event": "RUN_START"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let text = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
    let rejected: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("webhook rejected"))
        .collect();
    assert_eq!(rejected.len(), 3, "{text}");
    let has = |source: &str, status: &str| {
        rejected
            .iter()
            .any(|l| l.contains(&format!("source=\"{source}\"")) && l.contains(status))
    };
    assert!(has("github", "status=404"), "{text}");
    assert!(has("currents", "status=413"), "{text}");
    assert!(has("currents", "status=401"), "{text}");
    assert!(!text.contains("WRONG-SECRET-VALUE"), "{text}");
    assert!(!text.contains(CURRENTS_SECRET), "{text}");
}
