//! `rules.toml` loading: the example file, located errors, env overrides, warnings, and
//! the `check` subcommand end to end.

use std::process::Command;

use runwarden::config::{MaxDuration, RuleKind, load_str};

const BASE: &str = "[currents]\nprojects = [\"bAYZ4a\"]\n";

fn err(text: &str) -> String {
    load_str(text, "rules.toml", &[]).unwrap_err().to_string()
}

#[test]
fn the_example_rules_toml_parses_and_uses_every_rule_kind() {
    let text = std::fs::read_to_string("rules.toml").unwrap();
    let loaded = load_str(&text, "rules.toml", &[]).unwrap();
    let kinds: std::collections::BTreeSet<_> =
        loaded.config.rules.iter().map(|r| r.kind_name()).collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["orphan", "retention", "summary", "supersede", "timeout"]
    );
    assert_eq!(loaded.config.github.repos["bAYZ4a"], "acme/web");
}

#[test]
fn a_misspelt_rule_key_is_located_and_gets_a_suggestion() {
    let text = format!(
        "{BASE}\n[[rules]]\nname = \"retention\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\n  older_then = \"30d\"\n"
    );
    assert_eq!(
        err(&text),
        "rules.toml:8:3: rule \"retention\": unknown key \"older_then\" (did you mean \"older_than\"?)"
    );
}

#[test]
fn an_unknown_section_key_is_an_error() {
    let e = err("[currents]\nprojects = [\"a\"]\npoll_intervall = \"1m\"\n");
    assert!(
        e.starts_with("rules.toml:3:1: unknown key \"poll_intervall\""),
        "{e}"
    );
    assert!(e.contains("did you mean \"poll_interval\""), "{e}");
}

#[test]
fn an_unknown_match_key_is_an_error() {
    let e = err(&format!(
        "{BASE}[[rules]]\nname = \"s\"\nkind = \"supersede\"\n[rules.match]\nbranch = [\"x\"]\n"
    ));
    assert!(e.contains("rules.toml:7:1"), "{e}");
    assert!(e.contains("did you mean \"branches\""), "{e}");
}

#[test]
fn duplicate_rule_names_are_rejected_with_both_places() {
    let e = err(&format!(
        "{BASE}[[rules]]\nname = \"a\"\nkind = \"supersede\"\n[[rules]]\nname = \"a\"\nkind = \"supersede\"\n"
    ));
    assert_eq!(
        e,
        "rules.toml:7:1: rule \"a\": duplicate rule name (first defined on line 3)"
    );
}

#[test]
fn a_retention_rule_needs_older_than() {
    let e = err(&format!(
        "{BASE}[[rules]]\nname = \"r\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\n"
    ));
    assert!(
        e.contains("rules.toml:3:1: rule \"r\": a retention rule needs \"older_than\""),
        "{e}"
    );
}

/// SPEC §4 requires only `older_than`: a retention rule without `schedule` is valid and
/// runs on demand (`sweep`, the admin API); `check` says so in a warning.
#[test]
fn a_retention_rule_without_schedule_runs_on_demand_and_is_warned_about() {
    let loaded = load_str(
        &format!(
            "{BASE}[[rules]]\nname = \"r\"\nkind = \"retention\"\nolder_than = \"30d\"\n[rules.match]\nbranches = [\"feature/*\"]\n"
        ),
        "rules.toml",
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let RuleKind::Retention(o) = &loaded.config.rules[0].kind else {
        panic!("not a retention rule")
    };
    assert!(o.schedule.is_none());
    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        warnings.iter().any(
            |w| w.starts_with("rules.toml:3: rule \"r\": no \"schedule\"")
                && w.contains("runwarden sweep --rule r")
        ),
        "{warnings:?}"
    );
}

#[test]
fn a_timeout_rule_needs_a_limit() {
    let e = err(&format!(
        "{BASE}[[rules]]\nname = \"t\"\nkind = \"timeout\"\n"
    ));
    assert!(e.contains("needs \"max_duration\" or \"idle_for\""), "{e}");
}

#[test]
fn empty_projects_are_rejected() {
    let e = err("[currents]\nprojects = []\n");
    assert!(e.starts_with("rules.toml:2:1: [currents] projects"), "{e}");
    let e = err("dry_run = true\n");
    assert!(e.contains("projects"), "{e}");
}

#[test]
fn a_value_of_the_wrong_type_names_its_rule_and_key() {
    let e = err(&format!(
        "{BASE}[[rules]]\nname = \"r\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"30d\"\nkeep_latest = \"3\"\n"
    ));
    assert!(
        e.starts_with("rules.toml:8:15: rule \"r\": keep_latest: invalid type"),
        "{e}"
    );
    let e = err("[currents]\nprojects = \"bAYZ4a\"\n");
    assert!(e.contains("projects: invalid type"), "{e}");
}

#[test]
fn retention_schedules_read_weekdays_as_crontab_does() {
    // 2026-12-06 is a Sunday.
    let sunday = chrono::DateTime::parse_from_rfc3339("2026-12-06T00:00:00Z")
        .unwrap()
        .to_utc();
    let next = |schedule: &str| {
        let text = format!(
            "{BASE}[[rules]]\nname = \"r\"\nkind = \"retention\"\nolder_than = \"30d\"\nschedule = \"{schedule}\"\n"
        );
        let loaded =
            load_str(&text, "rules.toml", &[]).unwrap_or_else(|e| panic!("{schedule}: {e}"));
        let RuleKind::Retention(o) = &loaded.config.rules[0].kind else {
            panic!("not a retention rule")
        };
        o.schedule
            .as_ref()
            .unwrap()
            .next_after(&sunday)
            .unwrap()
            .to_rfc3339()
    };
    assert_eq!(
        next("0 3 * * 1"),
        "2026-12-07T03:00:00+00:00",
        "1 is Monday"
    );
    assert_eq!(
        next("0 3 * * 0"),
        "2026-12-06T03:00:00+00:00",
        "0 is Sunday"
    );
    assert_eq!(
        next("0 3 * * 6"),
        "2026-12-12T03:00:00+00:00",
        "6 is Saturday"
    );
    assert_eq!(next("0 3 * * sat"), "2026-12-12T03:00:00+00:00");
    assert_eq!(next("@weekly"), "2026-12-13T00:00:00+00:00");
    let e = err(&format!(
        "{BASE}[[rules]]\nname = \"r\"\nkind = \"retention\"\nolder_than = \"30d\"\nschedule = \"0 3 * * 8\"\n"
    ));
    assert!(e.contains("weekday 8 is out of range"), "{e}");
}

#[test]
fn invalid_cron_glob_regex_and_duration_are_located() {
    let cases = [
        (
            "kind = \"retention\"\nolder_than = \"1d\"\nschedule = \"0 3 * *\"\n",
            "rules.toml:7:1",
            "cron",
        ),
        (
            "kind = \"retention\"\nolder_than = \"1d\"\nschedule = \"0 99 * * *\"\n",
            "rules.toml:7:1",
            "invalid cron",
        ),
        (
            "kind = \"supersede\"\n[rules.match]\nbranches = [\"feat/[\"]\n",
            "rules.toml:7:1",
            "invalid glob",
        ),
        (
            "kind = \"supersede\"\n[rules.match]\nmessage = \"(\"\n",
            "rules.toml:7:1",
            "invalid regex",
        ),
        (
            "kind = \"timeout\"\nmax_duration = \"45 minutes-ish\"\n",
            "rules.toml:6:1",
            "not a duration",
        ),
        (
            "kind = \"supersedes\"\n",
            "rules.toml:5:1",
            "did you mean \"supersede\"",
        ),
        (
            "kind = \"supersede\"\nolder_than = \"1d\"\n",
            "rules.toml:6:1",
            "belongs to retention rules",
        ),
        (
            "kind = \"supersede\"\nspare_if_progress_at_least = 1.5\n",
            "rules.toml:6:1",
            "between 0 and 1",
        ),
        (
            "kind = \"summary\"\nevents = [\"RUN_DONE\"]\n",
            "rules.toml:6:1",
            "unknown event",
        ),
    ];
    for (body, place, needle) in cases {
        let e = err(&format!("{BASE}[[rules]]\nname = \"x\"\n{body}"));
        assert!(e.starts_with(place), "{body}: {e}");
        assert!(e.contains(needle), "{body}: {e}");
        assert!(e.contains("rule \"x\""), "{body}: {e}");
    }
}

#[test]
fn summary_events_are_read_as_the_rule_reads_them() {
    let loaded = load_str(
        &format!("{BASE}[[rules]]\nname = \"s\"\nkind = \"summary\"\nevents = [\"run_finish\", \"run_cancelled\", \" RUN_TIMEOUT \"]\n"),
        "rules.toml",
        &[],
    )
    .unwrap();
    let runwarden::config::RuleKind::Summary(o) = &loaded.config.rules[0].kind else {
        panic!("a summary rule")
    };
    assert_eq!(o.events, ["RUN_FINISH", "RUN_CANCELED", "RUN_TIMEOUT"]);
}

#[test]
fn six_field_cron_has_seconds_first_and_five_field_is_minute_first() {
    use chrono::TimeZone;
    let after = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let five = runwarden::config::load::parse_cron("30 3 * * *").unwrap();
    assert_eq!(
        five.next_after(&after).unwrap().to_rfc3339(),
        "2026-01-01T03:30:00+00:00"
    );
    let six = runwarden::config::load::parse_cron("15 30 3 * * *").unwrap();
    assert_eq!(
        six.next_after(&after).unwrap().to_rfc3339(),
        "2026-01-01T03:30:15+00:00"
    );
}

#[test]
fn environment_overrides_win_and_keep_mixed_case_repo_keys() {
    let text = format!(
        "{BASE}[github]\nrepos = {{ bAYZ4a = \"acme/web\" }}\n[[rules]]\nname = \"t\"\nkind = \"timeout\"\nmax_duration = \"auto\"\nfallback = \"1h\"\n"
    );
    let env = vec![
        (
            "RUNWARDEN__CURRENTS__API_URL".to_string(),
            "http://127.0.0.1:4000/v1".to_string(),
        ),
        (
            "RUNWARDEN__CURRENTS__PROJECTS".to_string(),
            "p1,p2".to_string(),
        ),
        ("RUNWARDEN__DRY_RUN".to_string(), "true".to_string()),
        (
            "RUNWARDEN__SERVER__LISTEN".to_string(),
            "127.0.0.1:9999".to_string(),
        ),
    ];
    let l = load_str(&text, "rules.toml", &env).unwrap();
    assert_eq!(
        l.config.currents.api_url.as_str(),
        "http://127.0.0.1:4000/v1"
    );
    assert_eq!(l.config.currents.projects, ["p1", "p2"]);
    assert!(l.config.dry_run);
    assert_eq!(l.config.server.listen, "127.0.0.1:9999");
    assert_eq!(
        l.config.github.repos.get("bAYZ4a").map(String::as_str),
        Some("acme/web")
    );
    assert!(matches!(
        &l.config.rules[0].kind,
        RuleKind::Timeout(t) if t.max_duration == Some(MaxDuration::Auto)
    ));
    // One project whose id is all digits is still a list of one; spaces are trimmed.
    for (value, want) in [("123456", vec!["123456"]), (" a , b ", vec!["a", "b"])] {
        let env = vec![(
            "RUNWARDEN__CURRENTS__PROJECTS".to_string(),
            value.to_string(),
        )];
        let l = load_str(&text, "rules.toml", &env).unwrap_or_else(|e| panic!("{value:?}: {e}"));
        assert_eq!(l.config.currents.projects, want, "{value:?}");
    }
    // A project's repo set in the environment keeps the case of the project id, and
    // overrides the file's entry for the same project.
    let env = vec![
        (
            "RUNWARDEN__GITHUB__REPOS__xYz9Q".to_string(),
            "acme/api".to_string(),
        ),
        (
            "RUNWARDEN__GITHUB__REPOS__bAYZ4a".to_string(),
            "acme/web2".to_string(),
        ),
    ];
    let l = load_str(&text, "rules.toml", &env).unwrap();
    let repos: Vec<(&str, &str)> = l
        .config
        .github
        .repos
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(repos, [("bAYZ4a", "acme/web2"), ("xYz9Q", "acme/api")]);
}

#[test]
fn a_bad_environment_override_names_the_variable() {
    let env = vec![(
        "RUNWARDEN__CURRENTS__MAX_REQUESTS_PER_SECOND".to_string(),
        "lots".to_string(),
    )];
    let e = load_str(BASE, "rules.toml", &env).unwrap_err().to_string();
    assert!(
        e.contains("RUNWARDEN__CURRENTS__MAX_REQUESTS_PER_SECOND"),
        "{e}"
    );
}

#[test]
fn a_delete_rule_without_filters_warns() {
    let l = load_str(
        &format!("{BASE}[[rules]]\nname = \"r\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"30d\"\n"),
        "rules.toml",
        &[],
    )
    .unwrap();
    assert!(
        l.warnings.iter().any(|w| w
            .0
            .contains("rules.toml:3: rule \"r\": deletes runs of every project")),
        "{:?}",
        l.warnings
    );
}

/// `runwarden check` on a config file holding `text`: the file's path as messages show
/// it, and the command's output.
fn check_file(text: &str) -> (String, std::process::Output) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.toml");
    std::fs::write(&path, text).unwrap();
    let out = bin()
        .arg("--config")
        .arg(&path)
        .arg("check")
        .output()
        .unwrap();
    (path.display().to_string(), out)
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runwarden"));
    for v in [
        "RUNWARDEN_CURRENTS_WEBHOOK_SECRET",
        "RUNWARDEN_GITHUB_WEBHOOK_SECRET",
        "GITHUB_TOKEN",
        "RUNWARDEN_CONFIG",
    ] {
        c.env_remove(v);
    }
    c
}

#[test]
fn check_prints_one_line_per_rule_and_exits_0() {
    let out = bin()
        .args(["--config", "rules.toml", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    for name in [
        "cancel-superseded",
        "stuck-runs",
        "orphaned-runs",
        "nightly-retention",
        "pr-summary",
    ] {
        assert_eq!(
            stdout.lines().filter(|l| l.starts_with(name)).count(),
            1,
            "{stdout}"
        );
    }
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("warning: RUNWARDEN_CURRENTS_WEBHOOK_SECRET is not set"),
        "{stderr}"
    );
}

#[test]
fn check_exits_2_with_the_located_error() {
    let (path, out) = check_file("[currents]\nprojects = [\"a\"]\nfoo = 1\n");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!("{path}:3:1: unknown key \"foo\"")),
        "{stderr}"
    );
}

#[test]
fn secrets_never_reach_config_errors() {
    let env = vec![(
        "RUNWARDEN__CURRENTS__REQUEST_TIMEOUT".to_string(),
        "not-a-duration".to_string(),
    )];
    let e = load_str(BASE, "rules.toml", &env).unwrap_err().to_string();
    assert!(!e.contains("sim-key"));
}

#[test]
fn keep_events_defaults_to_two_weeks_and_0s_keeps_everything() {
    let two_weeks = std::time::Duration::from_secs(14 * 24 * 3600);
    let c = load_str(BASE, "rules.toml", &[]).unwrap().config;
    assert_eq!(c.store.keep_events, Some(two_weeks));
    let text = format!("{BASE}[store]\nkeep_events = \"30d\"\n");
    let c = load_str(&text, "rules.toml", &[]).unwrap().config;
    assert_eq!(
        c.store.keep_events,
        Some(std::time::Duration::from_secs(30 * 24 * 3600))
    );
    let text = format!("{BASE}[store]\nkeep_events = \"0s\"\n");
    let c = load_str(&text, "rules.toml", &[]).unwrap().config;
    assert_eq!(c.store.keep_events, None);
    let e = err(&format!("{BASE}[store]\nkeep_events = \"a fortnight\"\n"));
    assert!(e.starts_with("rules.toml:4:"), "{e}");
    assert!(e.contains("keep_events"), "{e}");
}

#[test]
fn keep_audit_defaults_to_90_days_and_0s_keeps_everything() {
    let days = |n: u64| std::time::Duration::from_secs(n * 24 * 3600);
    let c = load_str(BASE, "rules.toml", &[]).unwrap().config;
    assert_eq!(c.store.keep_audit, Some(days(90)));
    let text = format!("{BASE}[store]\nkeep_audit = \"365d\"\n");
    let c = load_str(&text, "rules.toml", &[]).unwrap().config;
    assert_eq!(c.store.keep_audit, Some(days(365)));
    // Independent of keep_events.
    assert_eq!(c.store.keep_events, Some(days(14)));
    let text = format!("{BASE}[store]\nkeep_audit = \"0s\"\n");
    let c = load_str(&text, "rules.toml", &[]).unwrap().config;
    assert_eq!(c.store.keep_audit, None);
    let e = err(&format!(
        "{BASE}[store]\nurl = \"sqlite://x.db\"\nkeep_audit = \"a quarter\"\n"
    ));
    assert!(e.starts_with("rules.toml:5:"), "{e}");
    assert!(e.contains("keep_audit"), "{e}");
}

/// The example's lines, for errors that must not point into the file when the wrong value
/// came from the environment.
const WITH_KEYS: &str = "[currents]\nprojects = [\"bAYZ4a\"]\npoll_interval = \"60s\"\n[github]\nrepos = { bAYZ4a = \"acme/web\" }\n[store]\nurl = \"sqlite://runwarden.db\"\n";

fn env_err(text: &str, var: &str, value: &str) -> String {
    let env = vec![
        (var.to_string(), value.to_string()),
        // An unrelated, valid override: the error names only the variable at fault.
        (
            "RUNWARDEN__CURRENTS__API_URL".to_string(),
            "http://127.0.0.1:4000/v1".to_string(),
        ),
    ];
    load_str(text, "rules.toml", &env).unwrap_err().to_string()
}

#[test]
fn an_override_with_a_bad_value_names_its_variable_not_a_line_of_the_file() {
    for (text, var, value, want) in [
        (
            WITH_KEYS,
            "RUNWARDEN__CURRENTS__POLL_INTERVAL",
            "abc",
            "RUNWARDEN__CURRENTS__POLL_INTERVAL: [currents] poll_interval: \"abc\" is not a duration like \"90s\", \"45m\" or \"30d\" (expected number at 0)",
        ),
        // The file does not set it: the error pointed at the [store] header.
        (
            WITH_KEYS,
            "RUNWARDEN__STORE__ACTION_LEASE",
            "0s",
            "RUNWARDEN__STORE__ACTION_LEASE: [store] action_lease: must be more than 0s",
        ),
        (
            WITH_KEYS,
            "RUNWARDEN__GITHUB__REPOS__bAYZ4a",
            "bad",
            "RUNWARDEN__GITHUB__REPOS__bAYZ4a: [github] repos: project \"bAYZ4a\" maps to \"bad\"; expected \"owner/repo\"",
        ),
        (
            WITH_KEYS,
            "RUNWARDEN__GITHUB__REPOS__bAYZ4a",
            "https://github.com/acme/web.git",
            "RUNWARDEN__GITHUB__REPOS__bAYZ4a: [github] repos: project \"bAYZ4a\" maps to \"https://github.com/acme/web.git\"; expected \"owner/repo\", not a URL (did you mean \"acme/web\"?)",
        ),
        (
            WITH_KEYS,
            "RUNWARDEN__CURRENTS__PROJECTS",
            ",",
            "RUNWARDEN__CURRENTS__PROJECTS: [currents] projects: list at least one Currents project id, e.g. projects = [\"bAYZ4a\"]",
        ),
        (
            WITH_KEYS,
            "RUNWARDEN__CURRENTS__MAX_REQUESTS_PER_SECOND",
            "lots",
            // The value is not shown: a variable may hold a password.
            "RUNWARDEN__CURRENTS__MAX_REQUESTS_PER_SECOND: [currents] max_requests_per_second: invalid type: string (value not shown), expected a whole number ≥ 0",
        ),
        (
            WITH_KEYS,
            "RUNWARDEN__CURRENTS__POLL_INTERVALL",
            "1m",
            "RUNWARDEN__CURRENTS__POLL_INTERVALL: unknown key \"poll_intervall\" in [currents] (did you mean \"poll_interval\"?)",
        ),
    ] {
        assert_eq!(env_err(text, var, value), want);
    }
    // A bad value in the file, with overrides present, is still located in the file.
    let e = env_err(
        &format!("{WITH_KEYS}action_lease = \"0s\"\n"),
        "RUNWARDEN__CURRENTS__POLL_INTERVAL",
        "30s",
    );
    assert_eq!(
        e,
        "rules.toml:8:1: [store] action_lease: must be more than 0s"
    );
}

fn retention_err(schedule: &str) -> String {
    err(&format!(
        "{BASE}[[rules]]\nname = \"nightly\"\nkind = \"retention\"\nolder_than = \"30d\"\nschedule = \"{schedule}\"\n"
    ))
}

#[test]
fn a_cron_field_out_of_range_gets_one_located_line_with_the_true_range() {
    for (schedule, want) in [
        ("0 25 * * *", "hour 25 is out of range (0-23)"),
        ("0 23 * * *", ""),
        ("60 3 * * *", "minute 60 is out of range (0-59)"),
        ("59 3 * * *", ""),
        ("0 3 * 13 *", "month 13 is out of range (1-12 or jan-dec)"),
        ("0 3 * dec *", ""),
        ("0 3 32 * *", "day of month 32 is out of range (1-31)"),
        (
            "0 3 * * 8",
            "weekday 8 is out of range (0-7, 0 and 7 are Sunday)",
        ),
    ] {
        let text = format!(
            "{BASE}[[rules]]\nname = \"nightly\"\nkind = \"retention\"\nolder_than = \"30d\"\nschedule = \"{schedule}\"\n"
        );
        let got = load_str(&text, "rules.toml", &[]);
        if want.is_empty() {
            assert!(got.is_ok(), "{schedule}: {:?}", got.err());
            continue;
        }
        assert_eq!(
            got.unwrap_err().to_string(),
            format!(
                "rules.toml:7:1: rule \"nightly\": schedule: invalid cron \"{schedule}\": {want}"
            )
        );
    }
}

#[test]
fn a_schedule_that_never_fires_is_an_error() {
    assert_eq!(
        retention_err("0 3 31 2 *"),
        "rules.toml:7:1: rule \"nightly\": schedule: invalid cron \"0 3 31 2 *\": it never fires (month \"2\" has no day \"31\")"
    );
    assert!(retention_err("0 3 31 4,6 *").contains("never fires"));
}

#[test]
fn server_listen_must_be_an_address_serve_can_bind() {
    let e = err(&format!("{BASE}[server]\nlisten = \"localhost\"\n"));
    assert_eq!(
        e,
        "rules.toml:4:1: [server] listen: \"localhost\" has no port; expected IP:PORT, e.g. \"127.0.0.1:8080\" (this machine only) or \"0.0.0.0:8080\" (every interface)"
    );
    for bad in [
        "127.0.0.1",
        "127.0.0.1:99999",
        "::1:8080",
        ":8080",
        "http://0.0.0.0:80",
    ] {
        let e = err(&format!("{BASE}[server]\nlisten = \"{bad}\"\n"));
        assert!(
            e.starts_with("rules.toml:4:1: [server] listen: "),
            "{bad}: {e}"
        );
        assert!(e.contains("expected IP:PORT"), "{bad}: {e}");
    }
    // What `serve` binds: socket addresses, and host names with a port (resolved then).
    for good in [
        "127.0.0.1:8080",
        "0.0.0.0:0",
        "[::1]:8080",
        "localhost:8080",
    ] {
        let text = format!("{BASE}[server]\nlisten = \"{good}\"\n");
        let l = load_str(&text, "rules.toml", &[]).unwrap_or_else(|e| panic!("{good}: {e}"));
        assert_eq!(l.config.server.listen, good);
    }
}

#[test]
fn server_idle_timeout_is_a_duration_with_a_default() {
    let loaded = load_str(BASE, "rules.toml", &[]).unwrap();
    assert_eq!(
        loaded.config.server.idle_timeout,
        std::time::Duration::from_secs(60)
    );
    let text = format!("{BASE}[server]\nidle_timeout = \"0s\"\n");
    let loaded = load_str(&text, "rules.toml", &[]).unwrap();
    assert!(loaded.config.server.idle_timeout.is_zero(), "0s: never");
    let text = format!("{BASE}[server]\nidle_timeout = \"soon\"\n");
    let err = load_str(&text, "rules.toml", &[]).unwrap_err().to_string();
    assert!(
        err.starts_with("rules.toml:4:1: [server] idle_timeout:"),
        "{err}"
    );
}

#[test]
fn check_rejects_a_listen_address_serve_cannot_bind() {
    let (path, out) = check_file(&format!("{BASE}[server]\nlisten = \"localhost\"\n"));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!("{path}:4:1: [server] listen:")),
        "{stderr}"
    );
}

fn warnings(text: &str) -> Vec<String> {
    load_str(text, "rules.toml", &[])
        .unwrap_or_else(|e| panic!("{e}"))
        .warnings
        .iter()
        .map(|w| w.to_string())
        .collect()
}

#[test]
fn a_match_on_a_project_that_is_not_configured_warns() {
    let w = warnings(&format!(
        "{BASE}[[rules]]\nname = \"s\"\nkind = \"supersede\"\n[rules.match]\nprojects = [\"bAYZ4a\", \"bayz4a\", \"other\"]\n"
    ));
    assert_eq!(
        w,
        [
            "rules.toml:7: rule \"s\": match.projects: \"bayz4a\" is not one of [currents] projects (did you mean \"bAYZ4a\"?): runwarden never reads its runs, so the rule never applies to them",
            "rules.toml:7: rule \"s\": match.projects: \"other\" is not one of [currents] projects: runwarden never reads its runs, so the rule never applies to them",
        ]
    );
    // Configured through the environment: no warning.
    let text = format!(
        "{BASE}[[rules]]\nname = \"s\"\nkind = \"supersede\"\n[rules.match]\nprojects = [\"other\"]\n"
    );
    let env = vec![(
        "RUNWARDEN__CURRENTS__PROJECTS".to_string(),
        "bAYZ4a,other".to_string(),
    )];
    assert!(
        load_str(&text, "rules.toml", &env)
            .unwrap()
            .warnings
            .is_empty()
    );
}

#[test]
fn a_repos_entry_for_a_project_that_is_not_configured_warns() {
    let w = warnings(&format!(
        "{BASE}[github]\nrepos = {{ bAYZ4a = \"acme/web\", bayz4a = \"acme/api\" }}\n[[rules]]\nname = \"s\"\nkind = \"supersede\"\n"
    ));
    assert_eq!(
        w,
        [
            "rules.toml:4: [github] repos: \"bayz4a\" is not one of [currents] projects (did you mean \"bAYZ4a\"?): its repository is never used",
        ]
    );
}

#[test]
fn a_match_on_an_unknown_framework_warns() {
    let w = warnings(&format!(
        "{BASE}[[rules]]\nname = \"s\"\nkind = \"supersede\"\n[rules.match]\nframeworks = [\"PW\", \"cypress\", \"vitest\", \"playwright\", \"webdriver\"]\n"
    ));
    assert_eq!(
        w,
        [
            "rules.toml:7: rule \"s\": match.frameworks: \"playwright\" is not a framework Currents reports (pw, cypress, jest, postman, vitest; did you mean \"pw\"?): no run matches it",
            "rules.toml:7: rule \"s\": match.frameworks: \"webdriver\" is not a framework Currents reports (pw, cypress, jest, postman, vitest): no run matches it",
        ]
    );
}

#[test]
fn a_config_without_rules_warns() {
    assert_eq!(
        warnings(BASE),
        [
            "rules.toml: no [[rules]]: runwarden records the runs and events it sees but decides and does nothing"
        ]
    );
    assert!(
        warnings(&format!(
            "{BASE}[[rules]]\nname = \"s\"\nkind = \"supersede\"\n[rules.match]\nbranches = [\"*\"]\n"
        ))
        .is_empty()
    );
}

/// An unknown `{placeholder}` is an error, as an unknown key is: left unfilled, a
/// ciBuildId suffix never matches, and a status context reaches GitHub as written.
#[test]
fn an_unknown_placeholder_in_a_template_string_is_an_error() {
    assert_eq!(
        err(&format!(
            "{BASE}[[rules]]\nname = \"o\"\nkind = \"orphan\"\nci_build_id_suffix = \"{{repo}}-{{run_id}}\"\n"
        )),
        "rules.toml:6:1: rule \"o\": ci_build_id_suffix: unknown placeholder \"{repo}\" in \"{repo}-{run_id}\" (did you mean \"{repository}\"?); the placeholders are {repository}, {run_id}, {run_attempt}"
    );
    assert_eq!(
        err(&format!(
            "{BASE}[[rules]]\nname = \"s\"\nkind = \"summary\"\nstatus_context = \"ci/{{project_id}}\"\n"
        )),
        "rules.toml:6:1: rule \"s\": status_context: unknown placeholder \"{project_id}\" in \"ci/{project_id}\" (did you mean \"{project}\"?); the placeholders are {project}"
    );
    let e = err(&format!(
        "{BASE}[[rules]]\nname = \"s\"\nkind = \"summary\"\nstatus_context = \"ci/{{project\"\n"
    ));
    assert!(e.contains("has a \"{\" that is not closed"), "{e}");
    // The known ones load.
    load_str(
        &format!(
            "{BASE}[[rules]]\nname = \"o\"\nkind = \"orphan\"\nci_build_id_suffix = \"{{run_id}}.{{run_attempt}}\"\n[[rules]]\nname = \"s\"\nkind = \"summary\"\nstatus_context = \"ci/{{project}}/e2e\"\n"
        ),
        "rules.toml",
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_negative_count_says_it_must_be_a_whole_number() {
    let rule = |v: &str| {
        err(&format!(
            "{BASE}[[rules]]\nname = \"r\"\nkind = \"retention\"\nolder_than = \"30d\"\nkeep_latest = {v}\n"
        ))
    };
    assert_eq!(
        rule("-1"),
        "rules.toml:7:15: rule \"r\": keep_latest: must be a whole number ≥ 0, not -1"
    );
    assert_eq!(
        rule("5000000000"),
        "rules.toml:7:15: rule \"r\": keep_latest: must be a whole number from 0 to 4294967295, not 5000000000"
    );
    assert_eq!(
        rule("2.5"),
        "rules.toml:7:15: rule \"r\": keep_latest: invalid type: floating point `2.5`, expected a whole number ≥ 0"
    );
    let e = env_err(BASE, "RUNWARDEN__CURRENTS__MAX_REQUESTS_PER_SECOND", "-1");
    assert_eq!(
        e,
        "RUNWARDEN__CURRENTS__MAX_REQUESTS_PER_SECOND: [currents] max_requests_per_second: must be a whole number ≥ 0, not -1"
    );
}

#[test]
fn orphan_workflows_are_globs_and_an_empty_or_bad_list_is_located() {
    let rule = "[[rules]]\nname = \"o\"\nkind = \"orphan\"\n";
    let loaded = load_str(
        &format!("{BASE}{rule}workflows = [\"E2E*\", \"!E2E (manual)\"]\n"),
        "rules.toml",
        &[],
    )
    .unwrap();
    let RuleKind::Orphan(o) = &loaded.config.rules[0].kind else {
        panic!("not an orphan rule");
    };
    assert!(o.concerns_workflow(Some("E2E tests"), None));
    assert!(!o.concerns_workflow(Some("E2E (manual)"), None));
    assert!(o.concerns_workflow(Some("CI"), Some(".github/workflows/E2E.yml")));
    assert!(o.concerns_workflow(None, Some("acme/web/.github/workflows/E2E.yml@main")));
    assert_eq!(
        err(&format!("{BASE}{rule}workflows = []\n")),
        "rules.toml:6:1: rule \"o\": workflows: the list is empty; remove the key for every workflow of the repository, or list the workflows' names or file names (\"E2E\", \"e2e.yml\")"
    );
    let bad = err(&format!("{BASE}{rule}workflows = [\"e2e[\"]\n"));
    assert!(
        bad.starts_with("rules.toml:6:1: rule \"o\": workflows: invalid glob \"e2e[\""),
        "{bad}"
    );
    // It belongs to orphan rules only.
    let other = err(&format!(
        "{BASE}[[rules]]\nname = \"s\"\nkind = \"supersede\"\nworkflows = [\"e2e.yml\"]\n"
    ));
    assert!(other.contains("workflows"), "{other}");
}

#[test]
fn orphan_match_by_commit_without_workflows_warns() {
    let rule = "[[rules]]\nname = \"o\"\nkind = \"orphan\"\nmatch_by = \"commit\"\n";
    assert_eq!(
        warnings(&format!("{BASE}{rule}")),
        [
            "rules.toml:6: rule \"o\": match_by = \"commit\" without \"workflows\": any workflow of the commit that completes (a quick lint job too) makes its runs still in progress orphans; list the workflow that runs the tests, e.g. workflows = [\"e2e.yml\"]"
        ]
    );
    assert!(warnings(&format!("{BASE}{rule}workflows = [\"e2e.yml\"]\n")).is_empty());
    // Tied by ciBuildId, a run names its workflow run: no warning.
    assert!(
        warnings(&format!(
            "{BASE}[[rules]]\nname = \"o\"\nkind = \"orphan\"\n"
        ))
        .is_empty()
    );
}

/// With polling off, only a poll re-checks the runs in progress: a timeout rule is then
/// checked only on a run's own Currents events, and a run stuck after it started sends
/// none. Each timeout rule gets a warning saying so; `check` prints it.
#[test]
fn a_timeout_rule_with_polling_off_warns_that_a_silent_run_is_never_cancelled() {
    let rules = "[[rules]]\nname = \"slow\"\nkind = \"timeout\"\nmax_duration = \"1h\"\n\
        [[rules]]\nname = \"sup\"\nkind = \"supersede\"\n\
        [[rules]]\nname = \"idle\"\nkind = \"timeout\"\nidle_for = \"20m\"\n";
    let text = format!("[currents]\nprojects = [\"bAYZ4a\"]\npoll_interval = \"0s\"\n{rules}");
    let mine: Vec<String> = warnings(&text)
        .into_iter()
        .filter(|w| w.contains("polling is off"))
        .collect();
    assert_eq!(
        mine,
        [
            "rules.toml:4: rule \"slow\": polling is off ([currents] poll_interval = \"0s\" on line 3): this timeout rule is checked only on the run's own Currents events (webhooks), so a run stuck after it started, which sends none, is never cancelled; set poll_interval (\"60s\" is the default), or run `runwarden sweep --rule slow` on a schedule",
            "rules.toml:11: rule \"idle\": polling is off ([currents] poll_interval = \"0s\" on line 3): this timeout rule is checked only on the run's own Currents events (webhooks), so a run stuck after it started, which sends none, is never cancelled; set poll_interval (\"60s\" is the default), or run `runwarden sweep --rule idle` on a schedule",
        ]
    );
    // Polling on (the default, or set): no such warning.
    for top in ["", "poll_interval = \"30s\"\n"] {
        let text = format!("[currents]\nprojects = [\"bAYZ4a\"]\n{top}{rules}");
        assert!(
            !warnings(&text).iter().any(|w| w.contains("polling is off")),
            "{top}"
        );
    }
    // Polling turned off from the environment: the warning names the variable.
    let env = vec![(
        "RUNWARDEN__CURRENTS__POLL_INTERVAL".to_string(),
        "0m".to_string(),
    )];
    let w: Vec<String> = load_str(&format!("{BASE}{rules}"), "rules.toml", &env)
        .unwrap()
        .warnings
        .iter()
        .map(|w| w.to_string())
        .filter(|w| w.contains("polling is off"))
        .collect();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].starts_with("rules.toml:3: rule \"slow\": polling is off ([currents] poll_interval = \"0m\" from RUNWARDEN__CURRENTS__POLL_INTERVAL): "),
        "{w:?}"
    );
    // `check` prints it as a warning, and the config is still valid.
    let (path, out) = check_file(&text);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "warning: {path}:4: rule \"slow\": polling is off ([currents] poll_interval = \"0s\" on line 3): this timeout rule is checked only on the run's own Currents events"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "warning: {path}:11: rule \"idle\": polling is off"
        )),
        "{stderr}"
    );
}

/// A `[github] repos` value must be exactly `owner/name`: pushes and workflow runs name
/// their repository so, and a mapping spelt otherwise (`acme/web.git`, `/acme/web`)
/// loaded but never matched one. `check` exits 2 with the located error and a suggestion.
#[test]
fn check_rejects_a_repos_value_that_is_not_owner_slash_name() {
    let (path, out) = check_file(
        "[currents]\nprojects = [\"bAYZ4a\"]\n[github]\nrepos = { bAYZ4a = \"acme/web.git\" }\n",
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr.trim_end(),
        format!(
            "{path}:4:11: [github] repos: project \"bAYZ4a\" maps to \"acme/web.git\"; expected \"owner/repo\", the repository's name without \".git\" (did you mean \"acme/web\"?)"
        )
    );
}
