//! The API-economy figure of the benchmark suite (`runwarden-bench --quick --only
//! api-economy`), run as a correctness test: for a supersede (Currents `RUN_START` and
//! GitHub `push`), a timeout found by a poll and a retention sweep of 1,000 runs, the bot
//! sends exactly the minimum number of Currents requests. Nothing here asserts a timing.

use std::process::Command;

#[test]
fn api_economy_request_counts_equal_the_minimum() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("economy.json");
    let out = Command::new(env!("CARGO_BIN_EXE_runwarden-bench"))
        .args(["--quick", "--only", "api-economy", "--json"])
        .arg(&json)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "runwarden-bench failed:\n{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let figures = v["figures"].as_array().unwrap();
    assert_eq!(figures.len(), 1, "{v:#}");
    let fig = &figures[0];
    assert_eq!(fig["figure"], "api-economy");
    assert!(fig["error"].is_null(), "{}", fig["error"]);
    let rows = fig["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "api_requests_supersede_run_start",
            "api_requests_supersede_push",
            "api_requests_timeout_poll",
            "api_requests_retention_1000",
        ]
    );
    for r in rows {
        let (measured, minimum) = (
            r["measured"].as_f64().unwrap(),
            r["limit"].as_f64().unwrap(),
        );
        assert_eq!(
            measured, minimum,
            "{}: {measured} requests, minimum {minimum} ({})",
            r["label"], r["note"]
        );
        assert_eq!(r["pass"], true, "{r:#}");
    }
    // The fixed minimums of SPEC §4/§6; the retention one depends on the generated data.
    let by = |n: &str| {
        rows.iter().find(|r| r["name"] == n).unwrap()["measured"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(by("api_requests_supersede_run_start"), 4.0);
    assert_eq!(by("api_requests_supersede_push"), 3.0);
    assert_eq!(by("api_requests_timeout_poll"), 3.0);
    assert!(
        by("api_requests_retention_1000") > 20.0,
        "20 list pages plus the deletions"
    );
}
