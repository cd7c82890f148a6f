//! The benchmark suite at `--quick` sizes, run as correctness tests: the API-economy
//! figure (for a supersede, Currents `RUN_START` and GitHub `push`, a timeout found by a
//! poll and a retention sweep of 1,000 runs, the bot sends exactly the minimum number of
//! Currents requests), and every other figure but the soak with its timing-free checks.
//! Nothing here asserts a timing.

#[path = "support/bench.rs"]
mod bench;

use bench::run_bench;

#[test]
fn api_economy_request_counts_equal_the_minimum() {
    let v = run_bench(["--quick", "--only", "api-economy"]);
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

/// Every other figure of the suite at `--quick` sizes (the soak excepted), so that the
/// driver cannot rot: each runs to its end without an error, and the checks that do not
/// depend on timing hold — every acked delivery is in the store, every superseding push
/// cancelled its run and was answered 202, the sweeps listed the minimum number of pages.
/// Timings are measured (a debug build, on whatever machine runs the tests) and never
/// asserted.
#[test]
fn every_figure_runs_at_quick_sizes_and_its_timing_free_checks_hold() {
    let figures = "rules-eval,webhook-ack,event-to-cancel,footprint,retention-sweep";
    let v = run_bench([
        "--quick",
        "--only",
        figures,
        "--runwarden",
        env!("CARGO_BIN_EXE_runwarden"),
    ]);
    let figs = v["figures"].as_array().unwrap();
    let names: Vec<&str> = figs.iter().map(|f| f["figure"].as_str().unwrap()).collect();
    assert_eq!(names, figures.split(',').collect::<Vec<_>>());
    let mut rows = std::collections::BTreeMap::new();
    for f in figs {
        assert!(f["error"].is_null(), "{}: {}", f["figure"], f["error"]);
        for r in f["rows"].as_array().unwrap() {
            let m = r["measured"].as_f64().unwrap();
            assert!(m.is_finite() && m > 0.0, "{r:#}");
            rows.insert(r["name"].as_str().unwrap().to_string(), r.clone());
        }
    }
    let row = |name: &str| rows.get(name).unwrap_or_else(|| panic!("no row {name}"));
    let note = |name: &str| row(name)["note"].as_str().unwrap().to_string();

    // Figure 1: alternating windows of ceiling and bot; every 202 was durable.
    assert_eq!(
        row("webhook_ack_durable")["pass"],
        true,
        "{:#}",
        row("webhook_ack_durable")
    );
    let share = row("webhook_ack_share_of_ceiling");
    assert!(share["limit"].as_f64().unwrap() > 0.0, "{share:#}");
    assert!(
        note("webhook_ack_share_of_ceiling").contains("2 rounds"),
        "{share:#}"
    );
    assert!(
        note("webhook_ack_per_s").contains(", 0 errors"),
        "{}",
        note("webhook_ack_per_s")
    );

    // Figure 2: every push of every pass was accepted and cancelled its run.
    for name in [
        "event_to_cancel_p99_ms",
        "event_to_cancel_p99_ms_20",
        "event_to_cancel_p99_ms_tmpfs",
    ] {
        assert!(
            note(name).contains("(0 without a cancel, 0 not 202)"),
            "{name}: {}",
            note(name)
        );
    }

    // Figure 4: each sweep listed exactly the minimum number of pages.
    for name in ["sweep_wall_2k_s", "sweep_wall_10k_s"] {
        let n = note(name);
        let pages = |after: &str| -> u64 {
            let rest = &n[n.find(after).unwrap_or_else(|| panic!("{name}: {n}")) + after.len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let listed = n
            .split(": ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name}: {n}"));
        assert_eq!(listed, pages("(min "), "{name}: {n}");
    }
}
