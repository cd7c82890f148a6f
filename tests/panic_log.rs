//! A panic is logged in the log's own format: with JSON logs, one JSON line at ERROR
//! with the message and the place, and no plain-text panic report besides.
//!
//! The panic happens in a child process (this test binary run again with
//! `RUNWARDEN_PANIC_CHILD` set), whose stderr the parent reads.

use std::process::Command;

const CHILD: &str = "RUNWARDEN_PANIC_CHILD";

#[test]
fn a_panic_is_one_json_log_line_with_its_message_and_place() {
    if std::env::var_os(CHILD).is_some() {
        runwarden::telemetry::init("info", runwarden::telemetry::LogFormat::Json);
        let crashed = std::thread::Builder::new()
            .name("worker-7".into())
            .spawn(|| panic!("the store handle went away"))
            .expect("spawn")
            .join();
        assert!(crashed.is_err());
        return;
    }
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "a_panic_is_one_json_log_line_with_its_message_and_place",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LOG")
        .output()
        .expect("run the child");
    assert!(out.status.success(), "child failed: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let panics: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("panic:"))
        })
        .collect();
    assert_eq!(
        panics.len(),
        1,
        "one panic event expected; stderr: {stderr}"
    );
    let event = &panics[0];
    assert_eq!(event["level"], "ERROR", "{event}");
    assert_eq!(
        event["fields"]["message"], "panic: the store handle went away",
        "{event}"
    );
    assert_eq!(event["fields"]["panic.thread"], "worker-7", "{event}");
    let location = event["fields"]["panic.location"].as_str().unwrap_or("");
    assert!(location.starts_with("tests/panic_log.rs:"), "{event}");
    assert!(
        !stderr.contains("panicked at"),
        "the plain-text report must not be printed as well: {stderr}"
    );
}
