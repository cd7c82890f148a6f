//! `rules.toml` edge cases: a non-UTF-8 environment, secrets in store URLs, errors after
//! the rules, empty and negated filter lists, drastic "0s" durations, missing sections
//! and rules overridden from the environment.

use std::ffi::OsString;
use std::process::Command;

use runwarden::config::{load_str, overrides_from};

const BASE: &str = "[currents]\nprojects = [\"bAYZ4a\"]\n";

fn err(text: &str) -> String {
    load_str(text, "rules.toml", &[]).unwrap_err().to_string()
}

fn warnings(text: &str) -> Vec<String> {
    load_str(text, "rules.toml", &[])
        .unwrap_or_else(|e| panic!("{e}"))
        .warnings
        .iter()
        .map(|w| w.to_string())
        .collect()
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

#[cfg(unix)]
fn non_utf8(bytes: &[u8]) -> OsString {
    use std::os::unix::ffi::OsStringExt;
    OsString::from_vec(bytes.to_vec())
}

/// `runwarden check` on a file holding `text`, with extra environment variables.
fn check_with_env(text: &str, env: &[(OsString, OsString)]) -> (String, std::process::Output) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.toml");
    std::fs::write(&path, text).unwrap();
    let mut c = bin();
    c.arg("--config").arg(&path).arg("check");
    for (k, v) in env {
        c.env(k, v);
    }
    (path.display().to_string(), c.output().unwrap())
}

/// An unrelated variable that is not UTF-8 (a locale-encoded path, say) must not stop
/// the config from loading: `std::env::vars()` panicked on it.
#[cfg(unix)]
#[test]
fn a_non_utf8_environment_variable_does_not_break_check() {
    let (_, out) = check_with_env(
        BASE,
        &[(
            "RW_TEST_LATIN1_PATH".into(),
            non_utf8(b"/home/j\xf6rg/caf\xe9"),
        )],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A `RUNWARDEN__*` override whose value is not UTF-8 is a config error naming the
/// variable, without its value.
#[cfg(unix)]
#[test]
fn a_non_utf8_override_is_a_config_error_naming_the_variable() {
    let (_, out) = check_with_env(
        BASE,
        &[(
            "RUNWARDEN__STORE__URL".into(),
            non_utf8(b"postgres://rw:s3cr\xe9t@db/rw"),
        )],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("RUNWARDEN__STORE__URL: the value is not valid UTF-8"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cr"), "{stderr}");

    // The same, without a process: only RUNWARDEN__* variables are kept.
    let env = overrides_from(vec![
        (OsString::from("OTHER"), non_utf8(b"\xff")),
        (non_utf8(b"ALSO\xff"), OsString::from("x")),
        (
            OsString::from("RUNWARDEN__CURRENTS__POLL_INTERVAL"),
            OsString::from("30s"),
        ),
    ])
    .unwrap();
    assert_eq!(
        env,
        [(
            "RUNWARDEN__CURRENTS__POLL_INTERVAL".to_string(),
            "30s".to_string()
        )]
    );
    let e = overrides_from(vec![(
        OsString::from("RUNWARDEN__CURRENTS__API_URL"),
        non_utf8(b"http://x\xff"),
    )])
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("RUNWARDEN__CURRENTS__API_URL: "), "{e}");
    assert!(!e.contains("http://x"), "{e}");
}

fn store_debug(url: &str) -> String {
    let text = format!("{BASE}[store]\nurl = {url:?}\n");
    let config = load_str(&text, "rules.toml", &[])
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    format!("{config:?}")
}

#[test]
fn store_url_passwords_never_reach_debug_output() {
    for url in [
        "postgres://rw@db.internal/runwarden?password=hunter2",
        "postgres://rw@db.internal/runwarden?sslmode=require&password=hunter2",
        "postgres://rw@db.internal/runwarden?sslpassword=hunter2&sslmode=verify-full",
        "postgresql://rw@db.internal/runwarden?PASSWORD=hunter2",
        "postgres://rw@db.internal/runwarden?pass%77ord=hunter2",
        "postgres://rw:hunter2@db.internal:5432/runwarden",
        "postgres://rw:hunter2@[bad/runwarden",
    ] {
        let d = store_debug(url);
        assert!(!d.contains("hunter2"), "{url}: {d}");
    }
    let d = store_debug("postgres://rw:hunter2@db.internal:5432/runwarden?sslmode=require");
    assert!(
        d.contains("postgres://rw:***@db.internal:5432/runwarden?sslmode=require"),
        "{d}"
    );
    let d = store_debug("postgres://rw@db/x?sslmode=require&password=hunter2");
    assert!(
        d.contains("postgres://rw@db/x?sslmode=require&password=***"),
        "{d}"
    );
    // Nothing secret: shown as is.
    assert!(store_debug("sqlite://data/rw.db?mode=rwc").contains("sqlite://data/rw.db?mode=rwc"));
}

#[test]
fn an_error_in_a_section_after_the_rules_is_not_blamed_on_the_last_rule() {
    let rules = "[[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\n[rules.match]\nbranches = [\"*\"]\n";
    let e = err(&format!("{BASE}{rules}[store]\nurll = \"sqlite://x.db\"\n"));
    assert!(e.starts_with("rules.toml:9:1: unknown key \"urll\""), "{e}");
    assert!(e.contains("did you mean \"url\""), "{e}");
    assert!(!e.contains("rule \""), "{e}");
    // A wrong type after the rules names the key, not a rule.
    let e = err(&format!("{BASE}{rules}[server]\nlisten = 8080\n"));
    assert!(e.starts_with("rules.toml:9:10: listen: "), "{e}");
    assert!(!e.contains("rule \""), "{e}");
    // A dotted section header after the rules.
    let e = err(&format!("{BASE}{rules}[github.repos]\nbAYZ4a = 1\n"));
    assert!(!e.contains("rule \""), "{e}");
    // Still named: an error in [rules.match], and in a second rule after [store].
    let e = err(&format!("{BASE}{rules}brnches = [\"x\"]\n"));
    assert!(
        e.starts_with("rules.toml:8:1: rule \"cancel-superseded\": unknown key \"brnches\""),
        "{e}"
    );
    let e = err(&format!(
        "{BASE}{rules}[store]\nurl = \"sqlite://x.db\"\n[[rules]]\nname = \"second\"\nkind = \"timeout\"\nidle_for = 5\n"
    ));
    assert!(
        e.starts_with("rules.toml:13:12: rule \"second\": idle_for: "),
        "{e}"
    );
}

#[test]
fn an_empty_match_list_is_an_error() {
    for (key, what) in [
        ("projects", "runs of every project"),
        ("branches", "runs on every branch"),
        ("tags", "runs whatever their tags"),
        ("authors", "runs by every author"),
        ("statuses", "runs of every status"),
        ("completion_states", "runs in every completion state"),
        ("frameworks", "runs of every framework"),
    ] {
        let e = err(&format!(
            "{BASE}[[rules]]\nname = \"old\"\nkind = \"retention\"\nolder_than = \"30d\"\n[rules.match]\n{key} = []\n"
        ));
        assert_eq!(
            e,
            format!(
                "rules.toml:8:1: rule \"old\": match.{key}: the list is empty; remove the key to match {what}, or list at least one value"
            )
        );
    }
}

#[test]
fn drastic_zero_durations_warn() {
    let w = warnings("[currents]\nprojects = [\"bAYZ4a\"]\nwebhook_tolerance = \"0s\"\n");
    assert!(
        w.iter().any(
            |w| w.starts_with("rules.toml:3: [currents] webhook_tolerance = \"0s\"")
                && w.contains("401")
        ),
        "{w:?}"
    );
    let w = warnings(&format!(
        "{BASE}[[rules]]\nname = \"stuck\"\nkind = \"timeout\"\nmax_duration = \"0s\"\nidle_for = \"0s\"\n"
    ));
    for (line, key) in [(6, "max_duration"), (7, "idle_for")] {
        assert!(
            w.iter().any(|w| w.starts_with(&format!(
                "rules.toml:{line}: rule \"stuck\": {key} = \"0s\": cancels every in-progress run"
            ))),
            "{key}: {w:?}"
        );
    }
    let w = warnings(&format!(
        "{BASE}[[rules]]\nname = \"stuck\"\nkind = \"timeout\"\nmax_duration = \"auto\"\nfallback = \"0s\"\n"
    ));
    assert!(
        w.iter()
            .any(|w| w.starts_with("rules.toml:7: rule \"stuck\": fallback = \"0s\"")),
        "{w:?}"
    );
    let w = warnings(&format!(
        "{BASE}[[rules]]\nname = \"old\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"0s\"\n[rules.match]\nbranches = [\"feat/*\"]\n"
    ));
    assert!(
        w.iter().any(|w| w.starts_with(
            "rules.toml:7: rule \"old\": older_than = \"0s\": deletes every finished run"
        )),
        "{w:?}"
    );
    // `check` prints them and still succeeds.
    let (_, out) = check_with_env(
        "[currents]\nprojects = [\"bAYZ4a\"]\nwebhook_tolerance = \"0s\"\n[[rules]]\nname = \"stuck\"\nkind = \"timeout\"\nidle_for = \"0s\"\n[[rules]]\nname = \"old\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"0s\"\n[rules.match]\nbranches = [\"feat/*\"]\n",
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for want in [
        "[currents] webhook_tolerance = \"0s\"",
        "rule \"stuck\": idle_for = \"0s\"",
        "rule \"old\": older_than = \"0s\"",
    ] {
        assert!(stderr.contains(want), "{want}: {stderr}");
    }
}

#[test]
fn a_negated_tag_pattern_is_an_error_that_points_at_tag_mode_none() {
    let e = err(&format!(
        "{BASE}[[rules]]\nname = \"s\"\nkind = \"supersede\"\n[rules.match]\ntags = [\"smoke\", \"!nightly\"]\n"
    ));
    assert!(
        e.starts_with("rules.toml:7:1: rule \"s\": match.tags: \"!nightly\": tags cannot be excluded with \"!\""),
        "{e}"
    );
    assert!(e.contains("tag_mode = \"none\""), "{e}");
    let e = err(&format!(
        "{BASE}[[rules]]\nname = \"old\"\nkind = \"retention\"\nolder_than = \"30d\"\npin_tags = [\"!keep\"]\n[rules.match]\nbranches = [\"*\"]\n"
    ));
    assert!(
        e.starts_with("rules.toml:7:1: rule \"old\": pin_tags: \"!keep\": "),
        "{e}"
    );
    // Branches and authors do exclude.
    load_str(
        &format!(
            "{BASE}[[rules]]\nname = \"s\"\nkind = \"supersede\"\n[rules.match]\nbranches = [\"!main\"]\nauthors = [\"!bot@*\"]\n"
        ),
        "rules.toml",
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_required_key_of_a_missing_section_is_located_at_1_1() {
    assert_eq!(
        err("dry_run = true\n"),
        "rules.toml:1:1: [currents] projects: list at least one Currents project id, e.g. projects = [\"bAYZ4a\"]"
    );
    assert!(err("").starts_with("rules.toml:1:1: [currents] projects"));
}

#[test]
fn rules_cannot_be_set_from_the_environment() {
    for var in [
        "RUNWARDEN__RULES__0__DRY_RUN",
        "RUNWARDEN__RULES",
        "RUNWARDEN__rules__0__name",
    ] {
        let env = vec![(var.to_string(), "true".to_string())];
        let e = load_str(
            &format!("{BASE}[[rules]]\nname = \"s\"\nkind = \"supersede\"\n"),
            "rules.toml",
            &env,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            format!(
                "{var}: rules can only be set in the config file ([[rules]]), not from the environment; remove the variable and edit the rule in the file (a rule's dry_run = true, or the global RUNWARDEN__DRY_RUN=true)"
            )
        );
    }
}

/// `dashboard_url` without a scheme passed `check`, and then every valid Currents
/// webhook was refused 400 ("runUrl is not a run of the configured dashboard") and every
/// summary link was broken: it is checked like the API URLs.
#[test]
fn a_dashboard_url_without_a_scheme_is_an_error_naming_the_key() {
    let e = err(&format!("{BASE}dashboard_url = \"app.currents.dev\"\n"));
    assert!(
        e.contains("dashboard_url") && e.contains("app.currents.dev"),
        "{e}"
    );
    assert!(e.starts_with("rules.toml:3:"), "located: {e}");
    let ok = load_str(
        &format!("{BASE}dashboard_url = \"https://currents.example.com/\"\n"),
        "rules.toml",
        &[],
    )
    .unwrap();
    assert_eq!(
        ok.config.currents.dashboard_url,
        "https://currents.example.com"
    );
}

/// A summary rule with `events = []` would never run: an error, like an empty match
/// list.
#[test]
fn a_summary_rule_with_no_events_is_an_error() {
    let e = err(&format!(
        "{BASE}[[rules]]\nname = \"sum\"\nkind = \"summary\"\nevents = []\n"
    ));
    assert!(
        e.contains("rule \"sum\"") && e.contains("events") && e.contains("empty"),
        "{e}"
    );
}

fn env_of(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `RUNWARDEN__STORE=postgres://rw:hunter2@db/rw` (a section set to a value) printed the
/// URL, password and all, in the error. No environment value reaches a config error:
/// the error says what was expected.
#[test]
fn no_environment_value_reaches_a_config_error() {
    const SECRET: &str = "hunter2";
    let e = load_str(
        BASE,
        "rules.toml",
        &env_of(&[("RUNWARDEN__STORE", "postgres://rw:hunter2@db:5432/rw")]),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "RUNWARDEN__STORE: store: expected a table ([store]), not a string (the value is not shown); set its keys one by one, e.g. RUNWARDEN__STORE__URL"
    );
    for (var, value, want) in [
        (
            "RUNWARDEN__STORE",
            "postgres://rw:hunter2@db:5432/rw",
            "RUNWARDEN__STORE: ",
        ),
        ("RUNWARDEN__CURRENTS", "hunter2", "RUNWARDEN__CURRENTS: "),
        ("RUNWARDEN__SERVER", "hunter2:8080", "RUNWARDEN__SERVER: "),
        (
            "RUNWARDEN__DRY_RUN",
            "hunter2",
            "RUNWARDEN__DRY_RUN: dry_run: expected a boolean, not a string (the value is not shown)",
        ),
        (
            "RUNWARDEN__GITHUB__REPOS",
            "hunter2",
            "RUNWARDEN__GITHUB__REPOS: [github] repos: expected a table, not a string (the value is not shown); set one variable per project: RUNWARDEN__GITHUB__REPOS__<project id>=owner/name",
        ),
        (
            "RUNWARDEN__CURRENTS__MAX_REQUESTS_PER_SECOND",
            "hunter2",
            "RUNWARDEN__CURRENTS__MAX_REQUESTS_PER_SECOND: ",
        ),
        // A key set as a section: the error is about `store.url`, which no variable
        // sets as such; it names every override, still without their values.
        ("RUNWARDEN__STORE__URL__PASSWORD", "hunter2", "rules.toml: "),
        (
            "RUNWARDEN__SERVER__LISTEN__X",
            "hunter2-hunter2",
            "rules.toml: ",
        ),
    ] {
        let env = env_of(&[
            (var, value),
            // Another override holding the secret too: never shown either.
            (
                "RUNWARDEN__GITHUB__API_URL",
                "https://bot:hunter2@ghe.example.com/api/v3",
            ),
        ]);
        let e = load_str(BASE, "rules.toml", &env)
            .map(|_| "loaded".to_string())
            .unwrap_or_else(|e| e.to_string());
        assert!(e.starts_with(want), "{var}: {e}");
        assert!(!e.contains(SECRET), "{var}: {e}");
    }
    // And through the binary, as the audit saw it.
    let (_, out) = check_with_env(
        BASE,
        &[(
            "RUNWARDEN__STORE".into(),
            "postgres://rw:hunter2@db:5432/rw".into(),
        )],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("RUNWARDEN__STORE: "), "{stderr}");
    assert!(!stderr.contains(SECRET), "{stderr}");
}

/// `RUNWARDEN__CURRENTS__MAX_REQUESTS_PER_SECOND=0.4` loaded as 0 (no limit at all) and
/// `1.5` as 2, where the file refuses both: the override is refused with the file's
/// message, naming the variable.
#[test]
fn a_whole_number_from_the_environment_is_read_as_the_file_reads_it() {
    const VAR: &str = "RUNWARDEN__CURRENTS__MAX_REQUESTS_PER_SECOND";
    for value in ["0.4", "1.5", "2.0", "1e3", "-1", "5000000000"] {
        let from_file = err(&format!("{BASE}max_requests_per_second = {value}\n"));
        let from_env = load_str(BASE, "rules.toml", &env_of(&[(VAR, value)]))
            .map(|l| format!("loaded {}", l.config.currents.max_requests_per_second))
            .unwrap_or_else(|e| e.to_string());
        let (_, file_msg) = from_file
            .split_once("max_requests_per_second: ")
            .unwrap_or_else(|| panic!("{from_file}"));
        assert_eq!(
            from_env,
            format!("{VAR}: [currents] max_requests_per_second: {file_msg}"),
            "{value}"
        );
    }
    // Text the file would refuse as a string (`true` is not 1, nor `on`).
    for value in ["true", "on", "lots", ""] {
        let e = load_str(BASE, "rules.toml", &env_of(&[(VAR, value)]))
            .map(|l| format!("loaded {}", l.config.currents.max_requests_per_second))
            .unwrap_or_else(|e| e.to_string());
        assert_eq!(
            e,
            format!(
                "{VAR}: [currents] max_requests_per_second: invalid type: string (value not shown), expected a whole number ≥ 0"
            ),
            "{value:?}"
        );
    }
    for (value, want) in [("0", 0), ("7", 7), (" 12 ", 12), ("4294967295", u32::MAX)] {
        let l = load_str(BASE, "rules.toml", &env_of(&[(VAR, value)]))
            .unwrap_or_else(|e| panic!("{value:?}: {e}"));
        assert_eq!(l.config.currents.max_requests_per_second, want, "{value:?}");
    }
    // The variable's name in any case is the same key.
    let e = load_str(
        BASE,
        "rules.toml",
        &env_of(&[("RUNWARDEN__currents__max_requests_per_second", "0.4")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("RUNWARDEN__currents__max_requests_per_second: "),
        "{e}"
    );
    // Other keys keep their text as written: "1.50" stays "1.50" (no number parsing).
    let l = load_str(
        BASE,
        "rules.toml",
        &env_of(&[("RUNWARDEN__CURRENTS__WEBHOOK_HEADER", "x-1.50")]),
    )
    .unwrap();
    assert_eq!(l.config.currents.webhook_header, "x-1.50");
    let l = load_str(
        BASE,
        "rules.toml",
        &env_of(&[("RUNWARDEN__DRY_RUN", "true")]),
    )
    .unwrap();
    assert!(l.config.dry_run);
}

/// `poll_interval = "1ms"` flooded the store with poll events and "200000000000y" made
/// `serve` panic: from 1 s to 1 day, or "0s" (off); under 10 s is warned about.
#[test]
fn poll_interval_is_off_or_from_one_second_to_one_day() {
    let poll = |v: &str| format!("{BASE}poll_interval = \"{v}\"\n");
    assert_eq!(
        err(&poll("1ms")),
        "rules.toml:3:1: [currents] poll_interval: \"1ms\" is too short: at least \"1s\" (each poll lists the runs of every project; \"60s\" is the default), or \"0s\" to turn polling off"
    );
    assert!(err(&poll("999ms")).contains("too short"));
    assert_eq!(
        err(&poll("200000000000y")),
        "rules.toml:3:1: [currents] poll_interval: \"200000000000y\" is too long: at most \"1d\""
    );
    assert!(err(&poll("25h")).contains("too long"));
    for ok in ["0s", "1s", "10s", "60s", "1d"] {
        load_str(&poll(ok), "rules.toml", &[]).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    let w = warnings(&poll("5s"));
    assert!(
        w.iter()
            .any(|w| w.starts_with("rules.toml:3: [currents] poll_interval = \"5s\": ")),
        "{w:?}"
    );
    for quiet in ["10s", "0s", "60s"] {
        assert!(
            !warnings(&poll(quiet))
                .iter()
                .any(|w| w.contains("poll_interval")),
            "{quiet}"
        );
    }
    // From the environment: the variable is named.
    let e = load_str(
        BASE,
        "rules.toml",
        &env_of(&[("RUNWARDEN__CURRENTS__POLL_INTERVAL", "1ms")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with(
            "RUNWARDEN__CURRENTS__POLL_INTERVAL: [currents] poll_interval: \"1ms\" is too short"
        ),
        "{e}"
    );
}

/// A duration so long that the times computed with it overflow (`now - older_than`, an
/// instant plus the lease) is refused, located, with the longest allowed; that longest
/// one loads.
#[test]
fn durations_too_long_for_time_arithmetic_are_refused_with_their_maximum() {
    const HUGE: &str = "200000000000y";
    let section = |s: &str, k: &str, v: &str| format!("{BASE}[{s}]\n{k} = \"{v}\"\n");
    let currents = |k: &str, v: &str| format!("{BASE}{k} = \"{v}\"\n");
    let rule = |kind: &str, k: &str, v: &str| {
        let extra = match kind {
            "retention" if k != "older_than" => "older_than = \"30d\"\n",
            "timeout" if k == "fallback" => "max_duration = \"auto\"\n",
            "timeout" if k != "max_duration" => "max_duration = \"1h\"\n",
            _ => "",
        };
        format!("{BASE}[[rules]]\nname = \"r\"\nkind = \"{kind}\"\n{extra}{k} = \"{v}\"\n")
    };
    type Text = Box<dyn Fn(&str) -> String>;
    let cases: Vec<(&str, &str, Text)> = vec![
        (
            "[currents] webhook_tolerance",
            "1d",
            Box::new(move |v| currents("webhook_tolerance", v)),
        ),
        (
            "[currents] request_timeout",
            "1h",
            Box::new(move |v| currents("request_timeout", v)),
        ),
        (
            "[server] idle_timeout",
            "1d",
            Box::new(move |v| section("server", "idle_timeout", v)),
        ),
        (
            "[store] action_lease",
            "1d",
            Box::new(move |v| section("store", "action_lease", v)),
        ),
        (
            "[store] keep_events",
            "36500d",
            Box::new(move |v| section("store", "keep_events", v)),
        ),
        (
            "[store] keep_audit",
            "36500d",
            Box::new(move |v| section("store", "keep_audit", v)),
        ),
        (
            "rule \"r\": older_than",
            "36500d",
            Box::new(move |v| rule("retention", "older_than", v)),
        ),
        (
            "rule \"r\": max_duration",
            "365d",
            Box::new(move |v| rule("timeout", "max_duration", v)),
        ),
        (
            "rule \"r\": idle_for",
            "365d",
            Box::new(move |v| rule("timeout", "idle_for", v)),
        ),
        (
            "rule \"r\": fallback",
            "365d",
            Box::new(move |v| rule("timeout", "fallback", v)),
        ),
        (
            "rule \"r\": grace",
            "7d",
            Box::new(move |v| rule("orphan", "grace", v)),
        ),
    ];
    for (what, max, text) in &cases {
        let e = err(&text(HUGE));
        assert!(e.starts_with("rules.toml:"), "{what}: not located: {e}");
        assert!(
            e.contains(&format!(
                "{what}: \"{HUGE}\" is too long: at most \"{max}\""
            )),
            "{what}: {e}"
        );
        // Just past the maximum is refused too; the maximum itself loads.
        let past = format!("{max} 1s");
        assert!(err(&text(&past)).contains("too long"), "{what}: {past}");
        load_str(&text(max), "rules.toml", &[]).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    // From the environment, the variable is named.
    let e = load_str(
        BASE,
        "rules.toml",
        &env_of(&[("RUNWARDEN__STORE__KEEP_AUDIT", HUGE)]),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        format!(
            "RUNWARDEN__STORE__KEEP_AUDIT: [store] keep_audit: \"{HUGE}\" is too long: at most \"36500d\""
        )
    );
}

/// `ci_build_id_suffix = "{run_attempt}"` filled to "1" and matched every first-attempt
/// run of the repository: the suffix must hold `{run_id}`, and cannot be empty.
#[test]
fn an_orphan_suffix_must_name_the_workflow_run() {
    let orphan = |suffix: &str| {
        format!(
            "{BASE}[[rules]]\nname = \"o\"\nkind = \"orphan\"\nci_build_id_suffix = \"{suffix}\"\n"
        )
    };
    let e = err(&orphan("{run_attempt}"));
    assert!(
        e.starts_with(
            "rules.toml:6:1: rule \"o\": ci_build_id_suffix: \"{run_attempt}\" has no {run_id}: "
        ),
        "{e}"
    );
    assert!(e.contains("every first attempt"), "{e}");
    for bad in ["{repository}", "{repository}-{run_attempt}", "e2e"] {
        assert!(err(&orphan(bad)).contains("has no {run_id}"), "{bad}");
    }
    for empty in ["", "  "] {
        let e = err(&orphan(empty));
        assert!(
            e.starts_with("rules.toml:6:1: rule \"o\": ci_build_id_suffix: the suffix is empty"),
            "{empty:?}: {e}"
        );
    }
    for ok in [
        "{run_id}",
        "{repository}-{run_id}",
        "{run_id}-{run_attempt}",
    ] {
        load_str(&orphan(ok), "rules.toml", &[]).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

/// A `GITHUB_APP_ID` that is not a number was read as unset (and the error then said it
/// was not set).
#[test]
fn a_github_app_id_that_is_not_a_number_is_told_apart_from_an_unset_one() {
    use runwarden::config::parse_github_app_id;
    use std::ffi::OsStr;
    assert_eq!(parse_github_app_id(None), Ok(None));
    assert_eq!(parse_github_app_id(Some(OsStr::new(""))), Ok(None));
    assert_eq!(
        parse_github_app_id(Some(OsStr::new(" 123 "))),
        Ok(Some(123))
    );
    for bad in ["abc", "12a", "-1", "1.5", "Iv1.0123abcd"] {
        let e = parse_github_app_id(Some(OsStr::new(bad))).unwrap_err();
        assert!(e.starts_with("GITHUB_APP_ID is not a number"), "{bad}: {e}");
        assert!(!e.contains(bad), "the value is not shown: {e}");
    }
}

/// A `[github] repos` value must be exactly `owner/name`, as GitHub's events name the
/// repository: a mapping spelt `acme/web.git`, `acme/web/` or `/acme/web` loaded, and the
/// project then got no push supersession (the event's `acme/web` never equalled it).
/// The error is located at the project's entry and says what to write.
#[test]
fn a_repos_value_that_is_not_exactly_owner_slash_name_is_located_with_a_suggestion() {
    let inline = |v: &str| format!("{BASE}[github]\nrepos = {{ bAYZ4a = {v:?} }}\n");
    let want = |v: &str, rest: &str| {
        format!(
            "rules.toml:4:11: [github] repos: project \"bAYZ4a\" maps to {v:?}; expected \"owner/repo\"{rest}"
        )
    };
    let suggest = " (did you mean \"acme/web\"?)";
    for (value, rest) in [
        (
            "acme/web.git",
            ", the repository's name without \".git\" (did you mean \"acme/web\"?)".to_string(),
        ),
        (
            "acme/web.GIT",
            ", the repository's name without \".git\" (did you mean \"acme/web\"?)".to_string(),
        ),
        ("acme/web/", suggest.to_string()),
        ("/acme/web", suggest.to_string()),
        ("acme//web", suggest.to_string()),
        (
            "https://github.com/acme/web.git",
            ", not a URL".to_string() + suggest,
        ),
        ("github.com/acme/web", suggest.to_string()),
        (
            "git@github.com:acme/web.git",
            ", not a URL".to_string() + suggest,
        ),
        (
            "acme/web ",
            ": ' ' cannot be in a GitHub repository name (letters, digits, \".\", \"-\" and \"_\")"
                .to_string()
                + suggest,
        ),
        (
            "acme corp/web",
            ": ' ' cannot be in a GitHub owner name (letters, digits, \"-\" and \"_\")".to_string(),
        ),
        (
            "acme/we+b",
            ": '+' cannot be in a GitHub repository name (letters, digits, \".\", \"-\" and \"_\")"
                .to_string(),
        ),
        ("acme/..", ": \"..\" is not a repository name".to_string()),
        ("acme", String::new()),
        ("acme/web/tree/main", String::new()),
    ] {
        assert_eq!(err(&inline(value)), want(value, &rest), "{value:?}");
    }
    // The suggestion keeps the case as written.
    assert!(
        err(&inline("/Acme/Web.git")).ends_with(" (did you mean \"Acme/Web\"?)"),
        "{}",
        err(&inline("/Acme/Web.git"))
    );
    // As a table, the error points at the project's line.
    let e = err(&format!(
        "{BASE}[github.repos]\nother = \"acme/api\"\nbAYZ4a = \"acme/web.git\"\n"
    ));
    assert!(
        e.starts_with(
            "rules.toml:5:1: [github] repos: project \"bAYZ4a\" maps to \"acme/web.git\""
        ),
        "{e}"
    );
    // A token in a pasted clone URL is not shown.
    let e = err(&inline(
        "https://x-access-token:ghs_s3cr3t@github.com/acme/web.git",
    ));
    assert!(!e.contains("s3cr3t"), "{e}");
    assert!(
        e.contains("maps to \"https://***@github.com/acme/web.git\""),
        "{e}"
    );
    assert!(e.ends_with(suggest), "{e}");
    // GitHub's own spellings load, in any case (repositories are compared without case).
    for ok in [
        "acme/web",
        "Acme/Web",
        "acme-corp/web.site_2",
        "acme/.github",
        "acme/web.github.io",
        "octocat_emu/web",
        "a1/b",
    ] {
        let l = load_str(&inline(ok), "rules.toml", &[]).unwrap_or_else(|e| panic!("{ok}: {e}"));
        assert_eq!(l.config.github.repos["bAYZ4a"], ok);
    }
}
