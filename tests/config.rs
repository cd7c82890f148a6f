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
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.toml");
    std::fs::write(&path, "[currents]\nprojects = [\"a\"]\nfoo = 1\n").unwrap();
    let out = bin()
        .arg("--config")
        .arg(&path)
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!("{}:3:1: unknown key \"foo\"", path.display())),
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
