//! Loading `rules.toml`: located parse errors, environment overrides, compilation into
//! the typed [`Config`] and risky-setting warnings.
//!
//! Every error is written for the person editing the file:
//! `rules.toml:12:3: rule "retention": unknown key "older_then" (did you mean "older_than"?)`.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::filter::{Filter, GlobList, TagMode};
use super::raw::{self, RawConfig, RawMatch, RawRule};
use super::*;
use crate::currents::{CompletionState, RunStatus};

/// A configuration error, located when it comes from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file's path, or, when the wrong value came from an environment
    /// override, the variable's name (`RUNWARDEN__CURRENTS__POLL_INTERVAL`), with no
    /// location.
    pub path: String,
    /// 1-based line and column (`1:1` for an error about the file with no better
    /// place, such as a required key of a missing section); `None` for errors not about
    /// the file's text (an environment override, an unreadable file).
    pub location: Option<(usize, usize)>,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.location {
            Some((l, c)) => write!(f, "{}:{l}:{c}: {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A risky but valid setting, located like an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning(pub String);

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A loaded config with its warnings.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Warning>,
    pub path: PathBuf,
}

/// Loads and validates a config file, applying `RUNWARDEN__*` overrides from the
/// process environment.
pub fn load_file(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.display().to_string(),
        location: None,
        message: format!("cannot read the config file: {e}"),
    })?;
    let env = overrides_from(std::env::vars_os())?;
    let mut loaded = load_str(&text, &path.display().to_string(), &env)?;
    loaded.path = path.to_path_buf();
    Ok(loaded)
}

/// The `RUNWARDEN__*` overrides among environment variables (`std::env::vars_os()`).
///
/// Variables whose name or value is not UTF-8 are skipped, as long as they are not
/// overrides: one stray locale-encoded variable must not stop the bot. A `RUNWARDEN__*`
/// variable that is not UTF-8 is an error naming the variable; its value is never
/// shown (it may be a URL with a password).
pub fn overrides_from(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    const PREFIX: &str = "RUNWARDEN__";
    let mut out = Vec::new();
    for (name, value) in vars {
        let name = match name.into_string() {
            Ok(n) if n.starts_with(PREFIX) => n,
            Ok(_) => continue,
            Err(raw) => {
                if raw.as_encoded_bytes().starts_with(PREFIX.as_bytes()) {
                    return Err(ConfigError {
                        path: raw.to_string_lossy().into_owned(),
                        location: None,
                        message: "the variable's name is not valid UTF-8: rename it (RUNWARDEN__SECTION__KEY, in ASCII)".into(),
                    });
                }
                continue;
            }
        };
        match value.into_string() {
            Ok(v) => out.push((name, v)),
            Err(_) => {
                return Err(ConfigError {
                    path: name,
                    location: None,
                    message: "the value is not valid UTF-8 (not shown): set it to UTF-8 text, or unset the variable".into(),
                });
            }
        }
    }
    Ok(out)
}

/// Loads a config from text; `env` holds the `RUNWARDEN__SECTION__KEY` overrides to apply.
/// Relative `template` paths resolve against the directory of `path`.
pub fn load_str(text: &str, path: &str, env: &[(String, String)]) -> Result<Loaded, ConfigError> {
    let mut loc = Locator::new(text, path);
    let raw: RawConfig = toml::from_str(text).map_err(|e| loc.toml_error(&e))?;
    let raw = if env.is_empty() {
        raw
    } else {
        loc.env = env_origins(env);
        apply_env(text, path, env, &loc.env)?
    };
    let base_dir = Path::new(path)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let (config, warnings) = compile(raw, &loc, &base_dir)?;
    Ok(Loaded {
        config,
        warnings,
        path: PathBuf::from(path),
    })
}

/// The environment override of `[currents] projects`, a comma-separated list.
const PROJECTS_VAR: &str = "RUNWARDEN__CURRENTS__PROJECTS";

/// The prefix of the environment overrides of `[github] repos`, one variable per
/// project: `RUNWARDEN__GITHUB__REPOS__<project id>=owner/name`.
const REPOS_PREFIX: &str = "RUNWARDEN__GITHUB__REPOS__";

/// The config key each `RUNWARDEN__*` variable overrides, as the `config` crate names
/// it (`currents.poll_interval`; `github.repos.<project id>`, the id's case kept), mapped
/// to the variable: an error about a value that came from the environment names the
/// variable rather than a place in the file.
fn env_origins(env: &[(String, String)]) -> BTreeMap<String, String> {
    env.iter()
        .filter_map(|(var, _)| {
            let key = match var.strip_prefix(REPOS_PREFIX) {
                Some(project) => format!("github.repos.{project}"),
                None => var
                    .strip_prefix("RUNWARDEN__")?
                    .to_ascii_lowercase()
                    .replace("__", "."),
            };
            Some((key, var.clone()))
        })
        .collect()
}

/// The sections of the file, each with one of its keys, for the message about a
/// `RUNWARDEN__SECTION` variable that sets a whole section to a value.
const SECTIONS: &[(&str, &str)] = &[
    ("currents", "API_URL"),
    ("github", "API_URL"),
    ("server", "LISTEN"),
    ("store", "URL"),
];

/// What is wrong with an environment override's value, as the `config` crate found it,
/// without the value: `unexpected` is the crate's `string "postgres://rw:pw@db/rw"`,
/// `64-bit integer `3``, ...; only its kind is kept (a variable may hold a password, and
/// the store's URL often does).
fn env_type_message(key: &str, unexpected: &str, expected: &str) -> String {
    let kind = if unexpected.starts_with("string") {
        "a string"
    } else if unexpected.starts_with("boolean") {
        "a boolean"
    } else if unexpected.contains("integer") {
        "a whole number"
    } else if unexpected.starts_with("floating point") {
        "a number"
    } else if unexpected.starts_with("map") {
        "a table"
    } else if unexpected.starts_with("sequence") {
        "a list"
    } else {
        "a value of another type"
    };
    if let Some((section, example)) = SECTIONS.iter().find(|(s, _)| *s == key) {
        return format!(
            "expected a table ([{section}]), not {kind} (the value is not shown); set its keys one by one, e.g. RUNWARDEN__{}__{example}",
            section.to_ascii_uppercase()
        );
    }
    if key == "github.repos" {
        return format!(
            "expected a table, not {kind} (the value is not shown); set one variable per project: {REPOS_PREFIX}<project id>=owner/name"
        );
    }
    let expected = match expected {
        "u32" | "an unsigned 64 bit or less integer" | "an integer" => "a whole number ≥ 0",
        e if e.starts_with("struct ") || e == "a map" => "a table",
        e => e,
    };
    format!("expected {expected}, not {kind} (the value is not shown)")
}

/// `text`, an error message of the `config` crate or of serde, without the values of
/// the environment overrides: the quoted strings serde shows (`string "..."`,
/// `character '...'`) and any override's value found as is.
fn scrub_env_values(text: &str, env: &[(String, String)]) -> String {
    static QUOTED: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#"(string|character) (?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')"#)
            .expect("valid regex")
    });
    let mut out = QUOTED
        .replace_all(text, "$1 (value not shown)")
        .into_owned();
    // Short values are left: they would match words of the message itself (and a
    // quoted one is already gone).
    for (_, value) in env {
        let value = value.trim();
        if value.chars().count() >= 6 && out.contains(value) {
            out = out.replace(value, "(value not shown)");
        }
    }
    out
}

/// An error of the `config` crate while merging the environment: it names the one
/// variable at fault when it can be told, else every override. An override's value is
/// never shown (it may be a URL with a password): the message says what was expected.
fn env_error(
    e: &config::ConfigError,
    path: &str,
    env: &[(String, String)],
    origins: &BTreeMap<String, String>,
) -> ConfigError {
    let keyed = match e {
        config::ConfigError::Type {
            unexpected,
            expected,
            key: Some(key),
            ..
        } => Some((
            key.clone(),
            env_type_message(key, &unexpected.to_string(), expected),
        )),
        config::ConfigError::At {
            error,
            key: Some(key),
            ..
        } => {
            let inner = error.to_string();
            // serde's "invalid type: string \"...\", expected struct RawStore" for a
            // section set to a value (`RUNWARDEN__STORE=postgres://...`).
            let msg = match inner
                .strip_prefix("invalid type: ")
                .and_then(|rest| rest.rsplit_once(", expected "))
            {
                Some((unexpected, expected)) => env_type_message(key, unexpected, expected),
                None => scrub_env_values(&inner, env),
            };
            Some((key.clone(), msg))
        }
        _ => None,
    };
    if let Some((key, msg)) = &keyed
        && let Some(var) = origins.get(key)
    {
        let message = match key.split_once('.') {
            Some((section, k)) => format!("[{section}] {k}: {msg}"),
            None => format!("{key}: {msg}"),
        };
        return ConfigError {
            path: var.clone(),
            location: None,
            message,
        };
    }
    // An unknown key (`RUNWARDEN__CURRENTS__POLL_INTERVALL`): the variable that set it.
    let text = e.to_string();
    if let Some(rest) = text.split("unknown field `").nth(1)
        && let Some((field, tail)) = rest.split_once('`')
    {
        let section = keyed.as_ref().map(|(k, _)| k.as_str());
        let wanted = match section {
            Some(s) => format!("{s}.{field}"),
            None => field.to_string(),
        };
        if let Some(var) = origins.get(&wanted) {
            let expected: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
            let hint = suggest(field, &expected)
                .map(|b| format!(" (did you mean {b:?}?)"))
                .unwrap_or_default();
            let place = section.map(|s| format!(" in [{s}]")).unwrap_or_default();
            return ConfigError {
                path: var.clone(),
                location: None,
                message: format!("unknown key {field:?}{place}{hint}"),
            };
        }
    }
    let detail = match &keyed {
        Some((key, msg)) => format!("{msg} (key `{key}`)"),
        None => scrub_env_values(&text, env),
    };
    ConfigError {
        path: path.to_string(),
        location: None,
        message: format!(
            "with the RUNWARDEN__* environment overrides ({}): {detail}",
            env.iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The keys whose value is a whole number (`u32`): the `config` crate would round an
/// override of `0.4` to 0 (no limit, for `max_requests_per_second`) and read `true` as
/// 1, where the file refuses both. These overrides are read here, as the file reads
/// the value.
const WHOLE_NUMBER_KEYS: &[&str] = &["currents.max_requests_per_second"];

/// An override of a [`WHOLE_NUMBER_KEYS`] key, read as the file reads a number: the
/// same messages as [`whole_number_message`] gives for the file; a value that is not a
/// number is not shown.
fn parse_whole_number(text: &str) -> Result<u32, String> {
    let t = text.trim();
    if let Ok(n) = t.parse::<i128>() {
        return if n < 0 {
            Err(format!("must be a whole number ≥ 0, not {n}"))
        } else {
            u32::try_from(n)
                .map_err(|_| format!("must be a whole number from 0 to {}, not {n}", u32::MAX))
        };
    }
    let numeric = !t.is_empty()
        && t.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-' | '_'));
    match t.replace('_', "").parse::<f64>() {
        Ok(f) if numeric && f.is_finite() => {
            // As serde shows a float (`2.0`, not `2`), so the message is the file's.
            let mut shown = f.to_string();
            if !shown.contains(['.', 'e']) {
                shown.push_str(".0");
            }
            Err(format!(
                "invalid type: floating point `{shown}`, expected a whole number ≥ 0"
            ))
        }
        _ => Err("invalid type: string (value not shown), expected a whole number ≥ 0".into()),
    }
}

/// Merges the file with environment overrides through the `config` crate.
fn apply_env(
    text: &str,
    path: &str,
    env: &[(String, String)],
    origins: &BTreeMap<String, String>,
) -> Result<RawConfig, ConfigError> {
    // `[[rules]]` is a list of tables, not a section: the `config` crate would answer
    // "invalid type: map, expected a sequence for key rules".
    if let Some((var, _)) = env.iter().find(|(var, _)| {
        let upper = var.to_ascii_uppercase();
        upper == "RUNWARDEN__RULES" || upper.starts_with("RUNWARDEN__RULES__")
    }) {
        return Err(ConfigError {
            path: var.clone(),
            location: None,
            message: "rules can only be set in the config file ([[rules]]), not from the environment; remove the variable and edit the rule in the file (a rule's dry_run = true, or the global RUNWARDEN__DRY_RUN=true)".into(),
        });
    }
    let mut map: std::collections::HashMap<String, String> = env.iter().cloned().collect();
    // The project list is split here: the `config` crate would read an all-digit id
    // (`RUNWARDEN__CURRENTS__PROJECTS=123456`) as a number, not as a list of one.
    let projects: Option<Vec<String>> = map.remove(PROJECTS_VAR).map(|v| {
        v.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect()
    });
    // The repos of projects are applied here too: the `config` crate lowercases the keys
    // it reads from the environment, and project ids are case-sensitive (`bAYZ4a`).
    let repo_vars: Vec<String> = map
        .keys()
        .filter(|k| k.starts_with(REPOS_PREFIX))
        .cloned()
        .collect();
    let mut repos: Vec<(String, String)> = repo_vars
        .into_iter()
        .filter_map(|k| {
            let v = map.remove(&k)?;
            Some((k[REPOS_PREFIX.len()..].to_string(), v.trim().to_string()))
        })
        .collect();
    repos.sort();
    // The whole numbers are read here, as the file reads them ([`WHOLE_NUMBER_KEYS`]);
    // the key is the variable's name as [`env_origins`] reads it (in any case).
    let env_key = |var: &str| {
        var.get("RUNWARDEN__".len()..)
            .unwrap_or_default()
            .to_ascii_lowercase()
            .replace("__", ".")
    };
    let mut number_vars: Vec<String> = map
        .keys()
        .filter(|var| WHOLE_NUMBER_KEYS.contains(&env_key(var).as_str()))
        .cloned()
        .collect();
    number_vars.sort();
    let mut numbers: Vec<(String, u32)> = Vec::new();
    for var in number_vars {
        let value = map.remove(&var).unwrap_or_default();
        let key = env_key(&var);
        let n = parse_whole_number(&value).map_err(|m| {
            let (section, k) = key.split_once('.').unwrap_or(("", &key));
            ConfigError {
                path: var.clone(),
                location: None,
                message: format!("[{section}] {k}: {m}"),
            }
        })?;
        numbers.push((key, n));
    }
    // Values stay strings (no `try_parsing`): the typed keys read them from text
    // (`dry_run` as the `config` crate reads a boolean, the whole numbers above), and a
    // string key keeps its value as written (`1.50` is not turned into `1.5`).
    let source = config::Environment::with_prefix("RUNWARDEN")
        .prefix_separator("__")
        .separator("__")
        .source(Some(map));
    let mut builder = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(source);
    for (key, n) in numbers {
        builder = builder
            .set_override(key.as_str(), u64::from(n))
            .map_err(|e| env_error(&e, path, env, origins))?;
    }
    if let Some(projects) = projects {
        builder = builder
            .set_override("currents.projects", projects)
            .map_err(|e| ConfigError {
                path: PROJECTS_VAR.to_string(),
                location: None,
                message: format!("[currents] projects: {e}"),
            })?;
    }
    let mut built = builder
        .build()
        .and_then(|c| c.try_deserialize::<RawConfig>())
        .map_err(|e| env_error(&e, path, env, origins))?;
    for (project, repo) in repos {
        if project.is_empty() {
            return Err(ConfigError {
                path: REPOS_PREFIX.to_string(),
                location: None,
                message: "the variable's name must end with a project id".into(),
            });
        }
        built
            .github
            .repos
            .get_or_insert_with(Default::default)
            .insert(project, repo);
    }
    Ok(built)
}

/// Finds places in the file for messages.
struct Locator<'a> {
    text: &'a str,
    path: &'a str,
    doc: Option<toml_edit::ImDocument<String>>,
    /// The keys set by environment overrides, and the variable that set each
    /// ([`env_origins`]).
    env: BTreeMap<String, String>,
}

impl<'a> Locator<'a> {
    fn new(text: &'a str, path: &'a str) -> Self {
        Self {
            text,
            path,
            doc: toml_edit::ImDocument::parse(text.to_string()).ok(),
            env: BTreeMap::new(),
        }
    }

    /// An error about `[section] key`: it names the environment variable when the value
    /// came from one (`sub` narrows the key, e.g. the project of a `repos` entry), else
    /// the key's place in the file (or the section's, when the file does not set it).
    fn section_err(&self, section: &str, key: &str, sub: Option<&str>, msg: String) -> ConfigError {
        let message = format!("[{section}] {key}: {msg}");
        let var = sub
            .and_then(|s| self.env.get(&format!("{section}.{key}.{s}")))
            .or_else(|| self.env.get(&format!("{section}.{key}")));
        match var {
            Some(var) => ConfigError {
                path: var.clone(),
                location: None,
                message,
            },
            None => self.err_at(
                sub.and_then(|s| self.section_sub_span(section, key, s))
                    .or_else(|| self.section_key_span(section, Some(key)))
                    .or_else(|| self.section_key_span(section, None)),
                message,
            ),
        }
    }

    /// Span of the entry `sub` of the table `section.key` (a project's `[github] repos`
    /// entry).
    fn section_sub_span(&self, section: &str, key: &str, sub: &str) -> Option<Range<usize>> {
        let table = self.doc.as_ref()?.get(section)?.as_table_like()?.get(key)?;
        let (k, v) = table.as_table_like()?.get_key_value(sub)?;
        k.span().or_else(|| v.span())
    }

    /// Where `[section] key` is set, for a warning: the environment variable that set
    /// it, else `PATH:LINE` of the key (or of the section, or just `PATH`).
    fn section_place(&self, section: &str, key: &str) -> String {
        if let Some(var) = self.env.get(&format!("{section}.{key}")) {
            return var.clone();
        }
        match self
            .section_key_span(section, Some(key))
            .or_else(|| self.section_key_span(section, None))
        {
            Some(s) => format!("{}:{}", self.path, self.line_col(s.start).0),
            None => self.path.to_string(),
        }
    }

    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rfind('\n').map_or(offset, |i| offset - i - 1) + 1;
        (line, col)
    }

    /// An error at `span` in the file; at `1:1` when there is no better place (a
    /// required key of a section the file does not have).
    fn err_at(&self, span: Option<Range<usize>>, message: String) -> ConfigError {
        ConfigError {
            path: self.path.to_string(),
            location: Some(span.map_or((1, 1), |s| self.line_col(s.start))),
            message,
        }
    }

    fn rules(&self) -> Option<&toml_edit::ArrayOfTables> {
        self.doc.as_ref()?.get("rules")?.as_array_of_tables()
    }

    /// Span of the `[[rules]]` header of rule `i`.
    fn rule_span(&self, i: usize) -> Option<Range<usize>> {
        self.rules()?.get(i)?.span()
    }

    fn rule_line(&self, i: usize) -> usize {
        self.rule_span(i).map_or(0, |s| self.line_col(s.start).0)
    }

    /// Span of `key` in rule `i` (or in its `match` table when `in_match`).
    fn rule_key_span(&self, i: usize, key: &str, in_match: bool) -> Option<Range<usize>> {
        let t = self.rules()?.get(i)?;
        let t: &dyn toml_edit::TableLike = if in_match {
            t.get("match")?.as_table_like()?
        } else {
            t
        };
        let (k, v) = t.get_key_value(key)?;
        k.span().or_else(|| v.span())
    }

    /// Span of `section.key` (or of the section header).
    fn section_key_span(&self, section: &str, key: Option<&str>) -> Option<Range<usize>> {
        let t = self.doc.as_ref()?.get(section)?;
        match key {
            None => t.span(),
            Some(k) => {
                let (k, v) = t.as_table_like()?.get_key_value(k)?;
                k.span().or_else(|| v.span())
            }
        }
    }

    /// Which rule, if any, contains `offset`: (index, name).
    ///
    /// A rule runs from its `[[rules]]` header to the next table header that is not
    /// one of its own sub-tables (`[rules.match]` is; `[store]` or the next
    /// `[[rules]]` is not): an error in a section after the rules is not the last
    /// rule's.
    fn rule_at(&self, offset: usize) -> Option<(usize, Option<String>)> {
        let doc = self.doc.as_ref()?;
        // Every table header in the file, with the rule it opens or belongs to.
        let mut headers: Vec<(usize, Option<usize>)> = Vec::new();
        for (key, item) in doc.iter() {
            match item.as_array_of_tables() {
                Some(rules) if key == "rules" => {
                    for (i, t) in rules.iter().enumerate() {
                        table_headers(t, Some(i), &mut headers);
                    }
                }
                _ => item_headers(item, None, &mut headers),
            }
        }
        let (_, rule) = headers
            .into_iter()
            .filter(|(start, _)| *start <= offset)
            .max_by_key(|(start, _)| *start)?;
        let i = rule?;
        let t = self.rules()?.get(i)?;
        Some((
            i,
            t.get("name").and_then(|n| n.as_str()).map(str::to_string),
        ))
    }

    /// Rewrites a toml/serde error into a located, human message.
    /// The key of a `key = value` line whose value starts at `offset`.
    fn key_before(&self, offset: usize) -> Option<&'a str> {
        let text: &'a str = self.text;
        let before = text.get(..offset)?;
        let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
        let (key, value) = line.split_once('=')?;
        let key = key.trim().trim_matches('"');
        let simple = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        (simple && value.trim().is_empty()).then_some(key)
    }

    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span();
        let msg = e.message().trim().to_string();
        let mut out = whole_number_message(&msg).unwrap_or_else(|| msg.clone());
        if let Some(rest) = msg.strip_prefix("unknown field `")
            && let Some((field, tail)) = rest.split_once('`')
        {
            let expected: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
            out = format!("unknown key {field:?}");
            if let Some(best) = suggest(field, &expected) {
                out.push_str(&format!(" (did you mean {best:?}?)"));
            } else if !expected.is_empty() {
                out.push_str(&format!(" (expected one of: {})", expected.join(", ")));
            }
        }
        // Name the key whose value is wrong (`keep_latest = "3"`), when the error points
        // at a value.
        if !msg.starts_with("unknown field")
            && let Some(key) = span.as_ref().and_then(|s| self.key_before(s.start))
        {
            out = format!("{key}: {out}");
        }
        // Name the rule the error is in, when it is in one.
        if let Some(s) = &span
            && let Some((i, name)) = self.rule_at(s.start)
        {
            let who = match name {
                Some(n) => format!("rule {n:?}"),
                None => format!("rule #{}", i + 1),
            };
            out = format!("{who}: {out}");
        }
        ConfigError {
            path: self.path.to_string(),
            location: Some(span.map_or((1, 1), |s| self.line_col(s.start))),
            message: out,
        }
    }
}

/// The header positions of the tables in `item` (itself included), tagged with `rule`.
fn item_headers(
    item: &toml_edit::Item,
    rule: Option<usize>,
    out: &mut Vec<(usize, Option<usize>)>,
) {
    match item {
        toml_edit::Item::Table(t) => table_headers(t, rule, out),
        toml_edit::Item::ArrayOfTables(a) => {
            for t in a.iter() {
                table_headers(t, rule, out);
            }
        }
        _ => {}
    }
}

/// The header positions of `t` (unless it has none: implicit or dotted) and of the
/// tables under it, tagged with `rule`.
fn table_headers(t: &toml_edit::Table, rule: Option<usize>, out: &mut Vec<(usize, Option<usize>)>) {
    if !t.is_implicit()
        && !t.is_dotted()
        && let Some(s) = t.span()
    {
        out.push((s.start, rule));
    }
    for (_, item) in t.iter() {
        item_headers(item, rule, out);
    }
}

/// ` (did you mean "bAYZ4a"?)` for a project id that is not configured, or nothing:
/// the configured id that differs only in case (ids are case-sensitive: `bayz4a` is not
/// `bAYZ4a`), else the closest one.
fn project_hint(project: &str, configured: &[String]) -> String {
    let known: Vec<&str> = configured.iter().map(String::as_str).collect();
    known
        .iter()
        .find(|k| k.eq_ignore_ascii_case(project))
        .copied()
        .or_else(|| suggest(project, &known))
        .map(|b| format!(" (did you mean {b:?}?)"))
        .unwrap_or_default()
}

/// serde's message about a count (`keep_latest`, `max_deletions`, ...) that is not a
/// `u32`, in words: "expected u32" means nothing to the person editing the file.
fn whole_number_message(msg: &str) -> Option<String> {
    let (what, expected) = msg.rsplit_once(", expected ")?;
    if !matches!(expected, "u32" | "an unsigned 64 bit or less integer") {
        return None;
    }
    // "invalid value: integer `-1`" (toml), "invalid type: 64-bit integer `-1`" (env).
    if let Some((_, n)) = what.split_once("integer `")
        && let Some(n) = n.strip_suffix('`')
    {
        return Some(if n.starts_with('-') {
            format!("must be a whole number ≥ 0, not {n}")
        } else {
            format!("must be a whole number from 0 to {}, not {n}", u32::MAX)
        });
    }
    Some(format!("{what}, expected a whole number ≥ 0"))
}

/// Checks the `{placeholders}` of a rule's template string (`status_context`,
/// `ci_build_id_suffix`) against the ones runwarden fills.
fn check_placeholders(template: &str, known: &[&str]) -> Result<(), String> {
    let list = || {
        known
            .iter()
            .map(|k| format!("{{{k}}}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after
            .find(['{', '}'])
            .filter(|c| after[*c..].starts_with('}'))
        else {
            return Err(format!(
                "{template:?} has a \"{{\" that is not closed; the placeholders are {}",
                list()
            ));
        };
        let name = &after[..close];
        if !known.contains(&name) {
            let hint = suggest(name, known)
                .map(|b| format!(" (did you mean \"{{{b}}}\"?)"))
                .unwrap_or_default();
            return Err(format!(
                "unknown placeholder \"{{{name}}}\" in {template:?}{hint}; the placeholders are {}",
                list()
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

/// An orphan rule's `ci_build_id_suffix` must hold `{run_id}`: it is what ties a run to
/// one workflow run. Without it the filled suffix is the same for every workflow run
/// of the repository (`{run_attempt}` fills to "1" for every first attempt), and a
/// completed job would cancel the in-progress runs of every other job.
fn check_suffix(template: &str) -> Result<(), String> {
    if template.trim().is_empty() {
        return Err("the suffix is empty: every ciBuildId ends with it, so any completed workflow run would cancel every run in progress; remove the key for the default \"{repository}-{run_id}-{run_attempt}\", or use match_by = \"commit\"".into());
    }
    if !template.contains("{run_id}") {
        return Err(format!(
            "{template:?} has no {{run_id}}: filled, it is the same for every workflow run of the repository ({{run_attempt}} is \"1\" for every first attempt), so a completed workflow run would cancel other workflow runs' runs; include {{run_id}}, e.g. \"{{repository}}-{{run_id}}-{{run_attempt}}\" (the default)"
        ));
    }
    Ok(())
}

/// The closest candidate to a misspelt key, if close enough.
pub fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c), *c))
        .filter(|(s, _)| *s >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration like \"90s\", \"45m\" or \"30d\" ({e})"))
}

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// The longest each duration may be, and how it is written in messages. Past these,
/// the times computed with a duration (`now - older_than`, an `Instant` plus the poll
/// interval times 3, a lease's expiry) would overflow, and `serve` would panic or the
/// value would be quietly replaced; long before that the setting means nothing useful.
pub const MAX_POLL_INTERVAL: (Duration, &str) = (DAY, "1d");
pub const MAX_WEBHOOK_TOLERANCE: (Duration, &str) = (DAY, "1d");
pub const MAX_REQUEST_TIMEOUT: (Duration, &str) = (HOUR, "1h");
pub const MAX_IDLE_TIMEOUT: (Duration, &str) = (DAY, "1d");
pub const MAX_ACTION_LEASE: (Duration, &str) = (DAY, "1d");
/// `keep_events`, `keep_audit` and a retention rule's `older_than`: 100 years.
pub const MAX_KEEP: (Duration, &str) = (Duration::from_secs(36_500 * 24 * 3600), "36500d");
/// A timeout rule's `max_duration`, `idle_for` and `fallback`.
pub const MAX_RUN_LIMIT: (Duration, &str) = (Duration::from_secs(365 * 24 * 3600), "365d");
/// An orphan rule's `grace`.
pub const MAX_GRACE: (Duration, &str) = (Duration::from_secs(7 * 24 * 3600), "7d");

/// The shortest `poll_interval` but "0s" (off): each poll lists the runs of every
/// project.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Below this `poll_interval`, `check` warns.
pub const WARN_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// [`parse_duration`], refusing a duration longer than `max` ([`MAX_KEEP`], ...).
fn parse_duration_max(s: &str, (max, max_text): (Duration, &str)) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d > max {
        return Err(format!("{:?} is too long: at most {max_text:?}", s.trim()));
    }
    Ok(d)
}

/// Parses a retention `schedule`: standard cron, 5 fields (minute first) or 6 (seconds
/// first), UTC, read as crontab reads it ([`super::schedule`]).
pub fn parse_cron(s: &str) -> Result<super::schedule::CronSchedule, String> {
    super::schedule::CronSchedule::parse(s)
}

fn compile(
    raw: RawConfig,
    loc: &Locator<'_>,
    base_dir: &Path,
) -> Result<(Config, Vec<Warning>), ConfigError> {
    let mut warnings = Vec::new();
    let sec_err = |section: &str, key: &str, msg: String| loc.section_err(section, key, None, msg);

    // [currents]
    let c = raw.currents;
    let api_url = c
        .api_url
        .unwrap_or_else(|| "https://api.currents.dev/v1".into());
    let api_url = parse_http_url(&api_url).map_err(|m| sec_err("currents", "api_url", m))?;
    let projects = c.projects.unwrap_or_default();
    if projects.is_empty() {
        return Err(sec_err(
            "currents",
            "projects",
            "list at least one Currents project id, e.g. projects = [\"bAYZ4a\"]".into(),
        ));
    }
    let mut seen = HashSet::new();
    for p in &projects {
        if p.trim().is_empty() || !seen.insert(p) {
            return Err(sec_err(
                "currents",
                "projects",
                format!("project id {p:?} is empty or listed twice"),
            ));
        }
    }
    let dur = |v: Option<String>,
               default: &str,
               key: &str,
               max: (Duration, &str)|
     -> Result<Duration, ConfigError> {
        parse_duration_max(v.as_deref().unwrap_or(default), max)
            .map_err(|m| sec_err("currents", key, m))
    };
    let poll_text = c.poll_interval.clone();
    let poll_interval = dur(c.poll_interval, "60s", "poll_interval", MAX_POLL_INTERVAL)?;
    if !poll_interval.is_zero() && poll_interval < MIN_POLL_INTERVAL {
        return Err(sec_err(
            "currents",
            "poll_interval",
            format!(
                "{:?} is too short: at least \"1s\" (each poll lists the runs of every project; \"60s\" is the default), or \"0s\" to turn polling off",
                poll_text.as_deref().unwrap_or_default().trim()
            ),
        ));
    }
    if !poll_interval.is_zero() && poll_interval < WARN_POLL_INTERVAL {
        warnings.push(Warning(format!(
            "{}: [currents] poll_interval = {:?}: each poll lists the runs of every project, so polling this often spends Currents' rate limit and fills the store with poll events; webhooks bring the news at once, and \"60s\" (the default) is enough to catch what they miss",
            loc.section_place("currents", "poll_interval"),
            poll_text.as_deref().unwrap_or_default().trim()
        )));
    }
    let currents = CurrentsConfig {
        api_url,
        projects,
        poll_interval,
        // A URL with a scheme and host: a webhook's `runUrl` must be on its host, and the
        // summaries link to `{dashboard_url}/run/{id}`.
        dashboard_url: {
            let raw = c
                .dashboard_url
                .unwrap_or_else(|| "https://app.currents.dev".into());
            parse_http_url(&raw).map_err(|m| sec_err("currents", "dashboard_url", m))?;
            raw.trim().trim_end_matches('/').to_string()
        },
        webhook_header: c
            .webhook_header
            .unwrap_or_else(|| "x-webhook-secret".into())
            .to_ascii_lowercase(),
        webhook_tolerance: dur(
            c.webhook_tolerance,
            "5m",
            "webhook_tolerance",
            MAX_WEBHOOK_TOLERANCE,
        )?,
        request_timeout: dur(
            c.request_timeout,
            "30s",
            "request_timeout",
            MAX_REQUEST_TIMEOUT,
        )?,
        max_requests_per_second: c.max_requests_per_second.unwrap_or(10),
    };
    if currents.request_timeout.is_zero() {
        return Err(sec_err(
            "currents",
            "request_timeout",
            "must be more than 0s".into(),
        ));
    }
    if currents.webhook_tolerance.is_zero() {
        warnings.push(Warning(format!(
            "{}: [currents] webhook_tolerance = \"0s\": every Currents webhook that carries an x-timestamp header is rejected with 401 (no timestamp is 0 ms old); allow a few minutes of clock skew and delay, e.g. \"5m\"",
            loc.section_place("currents", "webhook_tolerance")
        )));
    }
    if http::HeaderName::from_bytes(currents.webhook_header.as_bytes()).is_err() {
        return Err(sec_err(
            "currents",
            "webhook_header",
            format!(
                "{:?} is not a valid HTTP header name",
                currents.webhook_header
            ),
        ));
    }

    // [github]
    let g = raw.github;
    let gh_url = g.api_url.unwrap_or_else(|| "https://api.github.com".into());
    let gh_url = parse_http_url(&gh_url).map_err(|m| sec_err("github", "api_url", m))?;
    let repos = g.repos.unwrap_or_default();
    for (project, repo) in &repos {
        if let Some(problem) = repo_problem(repo) {
            let hint = repo_hint(repo)
                .map(|r| format!(" (did you mean {r:?}?)"))
                .unwrap_or_default();
            return Err(loc.section_err(
                "github",
                "repos",
                Some(project),
                format!(
                    "project {project:?} maps to {:?}; expected \"owner/repo\"{problem}{hint}",
                    without_userinfo(repo)
                ),
            ));
        }
    }
    for project in repos.keys() {
        if !currents.projects.contains(project) {
            let line = loc
                .section_key_span("github", Some("repos"))
                .map(|s| format!(":{}", loc.line_col(s.start).0))
                .unwrap_or_default();
            warnings.push(Warning(format!(
                "{}{line}: [github] repos: {project:?} is not one of [currents] projects{}: its repository is never used",
                loc.path,
                project_hint(project, &currents.projects)
            )));
        }
    }
    let github = GithubConfig {
        api_url: gh_url,
        repos,
    };

    let listen = raw.server.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
    check_listen(&listen).map_err(|m| sec_err("server", "listen", m))?;
    let idle_timeout = parse_duration_max(
        raw.server.idle_timeout.as_deref().unwrap_or("60s"),
        MAX_IDLE_TIMEOUT,
    )
    .map_err(|m| sec_err("server", "idle_timeout", m))?;
    let server = ServerConfig {
        listen,
        idle_timeout,
    };
    let store = StoreConfig {
        url: raw
            .store
            .url
            .unwrap_or_else(|| "sqlite://runwarden.db".into()),
        action_lease: parse_duration_max(
            raw.store.action_lease.as_deref().unwrap_or("60s"),
            MAX_ACTION_LEASE,
        )
        .and_then(|d| {
            if d.is_zero() {
                Err("must be more than 0s".into())
            } else {
                Ok(d)
            }
        })
        .map_err(|m| sec_err("store", "action_lease", m))?,
        keep_events: match raw.store.keep_events.as_deref() {
            None => Some(super::DEFAULT_KEEP_EVENTS),
            Some(text) => {
                let d = parse_duration_max(text, MAX_KEEP)
                    .map_err(|m| sec_err("store", "keep_events", m))?;
                // "0s": keep everything.
                (!d.is_zero()).then_some(d)
            }
        },
        keep_audit: match raw.store.keep_audit.as_deref() {
            None => Some(super::DEFAULT_KEEP_AUDIT),
            Some(text) => {
                let d = parse_duration_max(text, MAX_KEEP)
                    .map_err(|m| sec_err("store", "keep_audit", m))?;
                (!d.is_zero()).then_some(d)
            }
        },
    };
    if !(store.url.starts_with("sqlite:")
        || store.url.starts_with("postgres://")
        || store.url.starts_with("postgresql://"))
    {
        return Err(sec_err(
            "store",
            "url",
            "expected \"sqlite://PATH\" or \"postgres://...\"".into(),
        ));
    }

    // [[rules]]
    let mut rules = Vec::new();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for (i, r) in raw.rules.into_iter().enumerate() {
        let rule = compile_rule(i, r, loc, base_dir, &mut warnings)?;
        // Runs of a project not under [currents] projects are neither polled nor
        // processed (a webhook about one is dropped): the rule never sees them.
        for p in rule.filter.projects.iter().flatten() {
            if !currents.projects.contains(p) {
                let line = loc
                    .rule_key_span(i, "projects", true)
                    .map_or_else(|| loc.rule_line(i), |s| loc.line_col(s.start).0);
                let hint = project_hint(p, &currents.projects);
                warnings.push(Warning(format!(
                    "{}:{line}: rule {:?}: match.projects: {p:?} is not one of [currents] projects{hint}: runwarden never reads its runs, so the rule never applies to them",
                    loc.path, rule.name
                )));
            }
        }
        if let Some(first) = names.get(&rule.name) {
            return Err(loc.err_at(
                loc.rule_key_span(i, "name", false)
                    .or_else(|| loc.rule_span(i)),
                format!(
                    "rule {:?}: duplicate rule name (first defined on line {})",
                    rule.name,
                    loc.rule_line(*first)
                ),
            ));
        }
        names.insert(rule.name.clone(), i);
        // With polling off, a timeout rule is checked only when the run's own Currents
        // event arrives (only a poll re-checks the runs in progress): a run that hangs
        // after its RUN_START sends nothing more and is never cancelled.
        if currents.poll_interval.is_zero() && matches!(rule.kind, RuleKind::Timeout(_)) {
            warnings.push(Warning(format!(
                "{}:{}: rule {:?}: polling is off ([currents] poll_interval = {:?}{}): this timeout rule is checked only on the run's own Currents events (webhooks), so a run stuck after it started, which sends none, is never cancelled; set poll_interval (\"60s\" is the default), or run `runwarden sweep --rule {}` on a schedule",
                loc.path,
                loc.rule_line(i),
                rule.name,
                poll_text.as_deref().unwrap_or("0s").trim(),
                poll_place(loc),
                rule.name
            )));
        }
        rules.push(rule);
    }
    // Every summary rule's comment is the one sticky comment of its PR (one marker): with
    // two that comment, each update renders the whole comment with the template and
    // options of the rule whose event came last.
    let commenting: Vec<usize> = rules
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(&r.kind, RuleKind::Summary(o) if o.comment))
        .map(|(i, _)| i)
        .collect();
    if let [first, second, ..] = commenting[..] {
        warnings.push(Warning(format!(
            "{}:{}: rule {:?}: rule {:?} comments too (line {}): a PR has one sticky comment, and each update renders all of it with the template and options of the rule whose event came last; keep comment = true on one summary rule (the others can post commit statuses with comment = false)",
            loc.path,
            loc.rule_line(second),
            rules[second].name,
            rules[first].name,
            loc.rule_line(first),
        )));
    }
    if rules.is_empty() {
        warnings.push(Warning(format!(
            "{}: no [[rules]]: runwarden records the runs and events it sees but decides and does nothing",
            loc.path
        )));
    }
    Ok((
        Config {
            dry_run: raw.dry_run.unwrap_or(false),
            currents,
            github,
            server,
            store,
            rules,
        },
        warnings,
    ))
}

/// Where `[currents] poll_interval` is set, for a warning: ` on line 4`, or ` from
/// RUNWARDEN__CURRENTS__POLL_INTERVAL`.
fn poll_place(loc: &Locator<'_>) -> String {
    if let Some(var) = loc.env.get("currents.poll_interval") {
        return format!(" from {var}");
    }
    loc.section_key_span("currents", Some("poll_interval"))
        .map(|s| format!(" on line {}", loc.line_col(s.start).0))
        .unwrap_or_default()
}

/// What is wrong with a `[github] repos` value, which must be exactly `owner/name` as
/// GitHub spells a repository (the `full_name` of its events): `None` when nothing is,
/// else the end of the message (empty when "expected \"owner/repo\"" says it all).
///
/// An owner is letters, digits, `-` and `_` (the `_` of Enterprise Managed Users'
/// logins); a repository name letters, digits, `.`, `-` and `_`, neither `.` nor `..`,
/// and without the `.git` of a clone URL. The case is free: repositories are compared
/// without case (`Acme/Web` is `acme/web`), as GitHub does.
fn repo_problem(repo: &str) -> Option<String> {
    // `https://github.com/acme/web`, `git@github.com:acme/web.git`.
    if repo.contains(':') {
        return Some(", not a URL".into());
    }
    let parts: Vec<&str> = repo.split('/').collect();
    let [owner, name] = parts[..] else {
        return Some(String::new());
    };
    if owner.is_empty() || name.is_empty() {
        return Some(String::new());
    }
    let bad_char = |s: &str, ok: &dyn Fn(char) -> bool| s.chars().find(|c| !ok(*c));
    if let Some(c) = bad_char(owner, &|c| {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '_')
    }) {
        return Some(format!(
            ": {c:?} cannot be in a GitHub owner name (letters, digits, \"-\" and \"_\")"
        ));
    }
    if let Some(c) = bad_char(name, &|c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
    }) {
        return Some(format!(
            ": {c:?} cannot be in a GitHub repository name (letters, digits, \".\", \"-\" and \"_\")"
        ));
    }
    if name == "." || name == ".." {
        return Some(format!(": {name:?} is not a repository name"));
    }
    if name.to_ascii_lowercase().ends_with(".git") {
        return Some(", the repository's name without \".git\"".into());
    }
    None
}

/// The `owner/name` a wrong `[github] repos` value most likely means, if any: the last
/// two segments of a clone URL (`https://github.com/acme/web.git`,
/// `git@github.com:acme/web.git`, `github.com/acme/web`), or the value without its
/// stray slashes, spaces or `.git` (`/acme/web/`, `acme/web.git`). The case is kept.
fn repo_hint(repo: &str) -> Option<String> {
    let s = repo.trim();
    let path = if let Some(i) = s.find("://") {
        // scheme://[user@]host/owner/name
        let rest = &s[i + 3..];
        &rest[rest.find('/')? + 1..]
    } else if let Some(colon) = s.find(':')
        && !s[..colon].contains('/')
    {
        // scp-like: [user@]host:owner/name
        &s[colon + 1..]
    } else {
        s
    };
    let mut segs: Vec<&str> = path
        .split('/')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .collect();
    // `github.com/acme/web`: a host before the owner.
    if segs.len() == 3 && segs[0].contains('.') {
        segs.remove(0);
    }
    let [owner, name] = segs[..] else {
        return None;
    };
    let name = match name.len().checked_sub(4) {
        Some(i)
            if name
                .get(i..)
                .is_some_and(|end| end.eq_ignore_ascii_case(".git")) =>
        {
            &name[..i]
        }
        _ => name,
    };
    let candidate = format!("{owner}/{name}");
    (candidate != repo && repo_problem(&candidate).is_none()).then_some(candidate)
}

/// A value as an error shows it, with the `user:password@` of a URL
/// (`https://x-access-token:TOKEN@github.com/acme/web.git`, a clone URL pasted as is)
/// replaced by `***@`.
fn without_userinfo(value: &str) -> String {
    if let Some(i) = value.find("://") {
        let rest = &value[i + 3..];
        let host_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..host_end].rfind('@') {
            return format!("{}***{}", &value[..i + 3], &rest[at..]);
        }
    }
    value.to_string()
}

/// What is wrong with an address to listen on, as [`listen_problem`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenProblem {
    /// No `:PORT`.
    NoPort,
    /// A port that is not a number from 0 to 65535.
    BadPort,
    /// A host that is neither an IP address nor a host name.
    BadHost,
}

/// Checks an address to listen on the way `serve` (and `simulate`) bind it (a socket
/// address, resolved like `ToSocketAddrs` for `&str`): `IP:PORT`, `[IPv6]:PORT`, or
/// `HOST:PORT` with a host name (`localhost:8080`), without resolving the name here.
/// Each caller words the problem for its own place (`[server] listen`, `--listen`).
pub fn listen_problem(s: &str) -> Option<ListenProblem> {
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return None;
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Some(ListenProblem::NoPort);
    };
    if port.parse::<u16>().is_err() {
        return Some(ListenProblem::BadPort);
    }
    let hostname = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    (!hostname).then_some(ListenProblem::BadHost)
}

/// `[server] listen`'s message for a [`listen_problem`].
fn check_listen(s: &str) -> Result<(), String> {
    let expected = "expected IP:PORT, e.g. \"127.0.0.1:8080\" (this machine only) or \"0.0.0.0:8080\" (every interface)";
    match listen_problem(s) {
        None => Ok(()),
        Some(ListenProblem::NoPort) => Err(format!("{s:?} has no port; {expected}")),
        Some(ListenProblem::BadPort) => {
            let port = s.rsplit_once(':').map_or("", |(_, p)| p);
            Err(format!(
                "{s:?}: {port:?} is not a port (0-65535); {expected}"
            ))
        }
        Some(ListenProblem::BadHost) => Err(format!(
            "{s:?} is not an address to listen on; {expected}, or \"[::1]:8080\" for IPv6"
        )),
    }
}

fn parse_http_url(s: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(s.trim()).map_err(|e| format!("{s:?} is not a URL ({e})"))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(format!("{s:?} must be an http or https URL"));
    }
    if u.host_str().is_none() {
        return Err(format!("{s:?} has no host"));
    }
    Ok(u)
}

/// Which keys of the raw rule are set (for the wrong-kind check).
fn set_keys(r: &RawRule) -> Vec<&'static str> {
    let mut v = Vec::new();
    macro_rules! k {
        ($($f:ident),*) => { $( if r.$f.is_some() { v.push(stringify!($f)); } )* };
    }
    k!(
        group_by,
        on_push,
        on_branch_deleted,
        spare_if_progress_at_least,
        max_duration,
        idle_for,
        auto_factor,
        fallback,
        grace,
        ci_build_id_suffix,
        match_by,
        workflows,
        schedule,
        older_than,
        keep_latest,
        keep_last_passed,
        pin_tags,
        max_deletions,
        events,
        comment,
        commit_status,
        status_context,
        only_failed,
        max_failed_specs,
        template
    );
    v
}

fn compile_rule(
    i: usize,
    r: RawRule,
    loc: &Locator<'_>,
    base_dir: &Path,
    warnings: &mut Vec<Warning>,
) -> Result<Rule, ConfigError> {
    let header = loc.rule_span(i);
    let name = match &r.name {
        Some(n) if !n.trim().is_empty() => n.clone(),
        _ => {
            return Err(loc.err_at(
                header,
                format!("rule #{}: missing required key \"name\"", i + 1),
            ));
        }
    };
    let at = |key: &str, msg: String| {
        loc.err_at(
            loc.rule_key_span(i, key, false).or_else(|| header.clone()),
            format!("rule {name:?}: {key}: {msg}"),
        )
    };
    // The line of a key of the rule, for warnings (the rule's line when unknown).
    let key_line = |key: &str| {
        loc.rule_key_span(i, key, false)
            .map_or_else(|| loc.rule_line(i), |s| loc.line_col(s.start).0)
    };
    let kind = match r.kind.as_deref() {
        None => {
            return Err(loc.err_at(
                header.clone(),
                format!(
                    "rule {name:?}: missing required key \"kind\" (one of: {})",
                    raw::KINDS.join(", ")
                ),
            ));
        }
        Some(k) if raw::KINDS.contains(&k) => k.to_string(),
        Some(k) => {
            let hint = suggest(k, raw::KINDS)
                .map(|s| format!(" (did you mean {s:?}?)"))
                .unwrap_or_default();
            return Err(at(
                "kind",
                format!(
                    "unknown kind {k:?}{hint}; expected one of: {}",
                    raw::KINDS.join(", ")
                ),
            ));
        }
    };
    let allowed = raw::kind_keys(&kind);
    for key in set_keys(&r) {
        if !allowed.contains(&key) {
            let owner = raw::KINDS
                .iter()
                .find(|k| raw::kind_keys(k).contains(&key))
                .copied()
                .unwrap_or("another");
            return Err(at(
                key,
                format!("key {key:?} belongs to {owner} rules and does not apply to a {kind} rule"),
            ));
        }
    }
    let filter = compile_match(
        r.filter.clone().unwrap_or_default(),
        &name,
        i,
        loc,
        warnings,
    )?;
    let dur = |key: &str,
               v: &Option<String>,
               max: (Duration, &str)|
     -> Result<Option<Duration>, ConfigError> {
        v.as_deref()
            .map(|s| parse_duration_max(s, max))
            .transpose()
            .map_err(|m| at(key, m))
    };
    let kind = match kind.as_str() {
        "supersede" => {
            let mut group_by = Vec::new();
            for g in r.group_by.clone().unwrap_or_default() {
                group_by.push(match g.as_str() {
                    "tags" => GroupBy::Tags,
                    "framework" => GroupBy::Framework,
                    other => {
                        return Err(at(
                            "group_by",
                            format!(
                                "unknown grouping {other:?}; expected \"tags\" or \"framework\""
                            ),
                        ));
                    }
                });
            }
            if let Some(p) = r.spare_if_progress_at_least
                && !(0.0..=1.0).contains(&p)
            {
                return Err(at(
                    "spare_if_progress_at_least",
                    format!("{p} is not between 0 and 1"),
                ));
            }
            RuleKind::Supersede(SupersedeOptions {
                group_by,
                on_push: r.on_push.unwrap_or(true),
                on_branch_deleted: r.on_branch_deleted.unwrap_or(true),
                spare_if_progress_at_least: r.spare_if_progress_at_least,
            })
        }
        "timeout" => {
            let max_duration = match r.max_duration.as_deref() {
                None => None,
                Some("auto") => Some(MaxDuration::Auto),
                Some(s) => Some(MaxDuration::Fixed(
                    parse_duration_max(s, MAX_RUN_LIMIT)
                        .map_err(|m| at("max_duration", format!("{m}, or \"auto\"")))?,
                )),
            };
            let idle_for = dur("idle_for", &r.idle_for, MAX_RUN_LIMIT)?;
            if max_duration.is_none() && idle_for.is_none() {
                return Err(loc.err_at(
                    header.clone(),
                    format!("rule {name:?}: a timeout rule needs \"max_duration\" or \"idle_for\" (or both)"),
                ));
            }
            if max_duration == Some(MaxDuration::Fixed(Duration::ZERO)) {
                warnings.push(Warning(format!(
                    "{}:{}: rule {name:?}: max_duration = \"0s\": cancels every in-progress run it matches at the first check; set the longest a run may take, e.g. \"45m\"",
                    loc.path,
                    key_line("max_duration")
                )));
            }
            if idle_for == Some(Duration::ZERO) {
                warnings.push(Warning(format!(
                    "{}:{}: rule {name:?}: idle_for = \"0s\": cancels every in-progress run it matches at the first check (no run completes a spec in no time); set how long a run may go without progress, e.g. \"10m\"",
                    loc.path,
                    key_line("idle_for")
                )));
            }
            let auto_factor = r.auto_factor.unwrap_or(3.0);
            if !(auto_factor.is_finite() && auto_factor > 0.0) {
                return Err(at(
                    "auto_factor",
                    format!("{auto_factor} must be more than 0"),
                ));
            }
            let fallback = dur("fallback", &r.fallback, MAX_RUN_LIMIT)?;
            if max_duration == Some(MaxDuration::Auto) && fallback == Some(Duration::ZERO) {
                warnings.push(Warning(format!(
                    "{}:{}: rule {name:?}: fallback = \"0s\": until 10 passed runs of a group are known, every in-progress run of that group is cancelled at the first check; set a generous limit, e.g. \"1h\"",
                    loc.path,
                    key_line("fallback")
                )));
            }
            if max_duration == Some(MaxDuration::Auto) && fallback.is_none() {
                warnings.push(Warning(format!(
                    "{}:{}: rule {name:?}: max_duration = \"auto\" without \"fallback\": no duration limit applies until 10 passed runs of a group are known",
                    loc.path,
                    loc.rule_line(i)
                )));
            }
            RuleKind::Timeout(TimeoutOptions {
                max_duration,
                idle_for,
                auto_factor,
                fallback,
            })
        }
        "orphan" => {
            if r.match_by.as_deref() == Some("commit") && r.workflows.is_none() {
                warnings.push(Warning(format!(
                    "{}:{}: rule {name:?}: match_by = \"commit\" without \"workflows\": any workflow of the commit that completes (a quick lint job too) makes its runs still in progress orphans; list the workflow that runs the tests, e.g. workflows = [\"e2e.yml\"]",
                    loc.path,
                    key_line("match_by")
                )));
            }
            RuleKind::Orphan(OrphanOptions {
                grace: dur("grace", &r.grace, MAX_GRACE)?.unwrap_or(Duration::from_secs(120)),
                ci_build_id_suffix: match &r.ci_build_id_suffix {
                    None => "{repository}-{run_id}-{run_attempt}".into(),
                    Some(t) => {
                        // A placeholder left unfilled would never match a ciBuildId.
                        check_placeholders(t, super::SUFFIX_PLACEHOLDERS)
                            .map_err(|m| at("ci_build_id_suffix", m))?;
                        check_suffix(t).map_err(|m| at("ci_build_id_suffix", m))?;
                        t.clone()
                    }
                },
                match_by: match r.match_by.as_deref() {
                    None | Some("ci_build_id") => MatchBy::CiBuildId,
                    Some("commit") => MatchBy::Commit,
                    Some(o) => {
                        return Err(at(
                            "match_by",
                            format!("unknown value {o:?}; expected \"ci_build_id\" or \"commit\""),
                        ));
                    }
                },
                workflows: match &r.workflows {
                    None => None,
                    Some(list) if list.is_empty() => {
                        return Err(at(
                        "workflows",
                        "the list is empty; remove the key for every workflow of the repository, or list the workflows' names or file names (\"E2E\", \"e2e.yml\")".into(),
                    ));
                    }
                    Some(list) => Some(
                        crate::config::filter::GlobList::new(list)
                            .map_err(|m| at("workflows", m))?,
                    ),
                },
            })
        }
        "retention" => {
            let schedule = match &r.schedule {
                Some(text) => Some(parse_cron(text).map_err(|m| at("schedule", m))?),
                None => {
                    warnings.push(Warning(format!(
                        "{}:{}: rule {name:?}: no \"schedule\": `serve` never runs it on its own; it runs only with `runwarden sweep --rule {name}` or POST /api/sweep/{name}",
                        loc.path,
                        loc.rule_line(i)
                    )));
                    None
                }
            };
            let Some(older_than) = dur("older_than", &r.older_than, MAX_KEEP)? else {
                return Err(loc.err_at(
                    header.clone(),
                    format!("rule {name:?}: a retention rule needs \"older_than\" (e.g. \"30d\")"),
                ));
            };
            if older_than.is_zero() {
                warnings.push(Warning(format!(
                    "{}:{}: rule {name:?}: older_than = \"0s\": deletes every finished run the rule matches at each sweep (but those keep_latest, keep_last_passed and pin_tags keep); set the age runs are kept for, e.g. \"30d\"",
                    loc.path,
                    key_line("older_than")
                )));
            }
            let pin_tag_patterns = r.pin_tags.clone().unwrap_or_default();
            let mut b = globset::GlobSetBuilder::new();
            for p in &pin_tag_patterns {
                if let Some(tag) = p.strip_prefix('!') {
                    return Err(at(
                        "pin_tags",
                        format!(
                            "{p:?}: pin_tags cannot exclude with \"!\"; list the tags whose runs are never deleted (\"{tag}\")"
                        ),
                    ));
                }
                b.add(
                    globset::Glob::new(p)
                        .map_err(|e| at("pin_tags", format!("invalid glob {p:?}: {}", e.kind())))?,
                );
            }
            let pin_tags = b.build().map_err(|e| at("pin_tags", e.to_string()))?;
            let max_deletions = r.max_deletions.unwrap_or(500);
            if filter.is_empty() {
                warnings.push(Warning(format!(
                    "{}:{}: rule {name:?}: deletes runs of every project and branch (no [rules.match] filter)",
                    loc.path,
                    loc.rule_line(i)
                )));
            }
            RuleKind::Retention(RetentionOptions {
                schedule,
                older_than,
                keep_latest: r.keep_latest.unwrap_or(0),
                keep_last_passed: r.keep_last_passed.unwrap_or(false),
                pin_tags,
                pin_tag_patterns,
                max_deletions,
            })
        }
        "summary" => {
            let events = r.events.clone().unwrap_or_else(|| {
                vec![
                    "RUN_FINISH".into(),
                    "RUN_TIMEOUT".into(),
                    "RUN_CANCELED".into(),
                ]
            });
            if events.is_empty() {
                return Err(at(
                    "events",
                    format!(
                        "the list is empty, so the rule would never run; remove the key for the default (RUN_FINISH, RUN_TIMEOUT, RUN_CANCELED) or list some of: {}",
                        crate::currents::RUN_EVENTS.join(", ")
                    ),
                ));
            }
            let mut norm = Vec::new();
            for e in events {
                // As the rule reads events: any case, and Currents' two spellings of
                // cancelled.
                let up = crate::rules::summary::normalize_event(&e);
                if !crate::currents::RUN_EVENTS.contains(&up.as_str()) {
                    return Err(at(
                        "events",
                        format!(
                            "unknown event {e:?}; expected some of: {}",
                            crate::currents::RUN_EVENTS.join(", ")
                        ),
                    ));
                }
                norm.push(up);
            }
            let template = match &r.template {
                None => None,
                Some(p) => {
                    let path = if Path::new(p).is_absolute() {
                        PathBuf::from(p)
                    } else {
                        base_dir.join(p)
                    };
                    let src = std::fs::read_to_string(&path).map_err(|e| {
                        at("template", format!("cannot read {}: {e}", path.display()))
                    })?;
                    let mut env = minijinja::Environment::new();
                    env.add_template_owned("summary", src.clone())
                        .map_err(|e| {
                            at(
                                "template",
                                format!("{} is not a valid template: {e}", path.display()),
                            )
                        })?;
                    Some((path, src))
                }
            };
            let comment = r.comment.unwrap_or(true);
            let commit_status = r.commit_status.unwrap_or(false);
            if !comment && !commit_status {
                warnings.push(Warning(format!(
                    "{}:{}: rule {name:?}: comment = false and commit_status = false: this summary rule does nothing",
                    loc.path,
                    loc.rule_line(i)
                )));
            }
            let status_context = match &r.status_context {
                None => "runwarden/{project}".into(),
                Some(t) => {
                    // An unfilled placeholder would reach GitHub as is, in the name of
                    // a check that branch protection may come to require.
                    check_placeholders(t, super::STATUS_CONTEXT_PLACEHOLDERS)
                        .map_err(|m| at("status_context", m))?;
                    t.clone()
                }
            };
            RuleKind::Summary(SummaryOptions {
                events: norm,
                comment,
                commit_status,
                status_context,
                only_failed: r.only_failed.unwrap_or(false),
                max_failed_specs: r.max_failed_specs.unwrap_or(10),
                template,
            })
        }
        _ => unreachable!("kind checked above"),
    };
    Ok(Rule {
        name,
        dry_run: r.dry_run,
        filter,
        kind,
        line: loc.rule_line(i),
    })
}

/// The frameworks Currents reports in a run's `meta.framework.type`
/// (`reference/currents-notes.md`); `match.frameworks` compares without case.
const FRAMEWORKS: &[&str] = &["pw", "cypress", "jest", "postman", "vitest"];

fn compile_match(
    m: RawMatch,
    name: &str,
    i: usize,
    loc: &Locator<'_>,
    warnings: &mut Vec<Warning>,
) -> Result<Filter, ConfigError> {
    let key_line = |key: &str| {
        loc.rule_key_span(i, key, true)
            .map_or_else(|| loc.rule_line(i), |s| loc.line_col(s.start).0)
    };
    for f in m.frameworks.iter().flatten() {
        if !FRAMEWORKS.iter().any(|k| k.eq_ignore_ascii_case(f)) {
            let hint = match f.to_ascii_lowercase().as_str() {
                "playwright" => Some("pw"),
                lower => suggest(lower, FRAMEWORKS),
            }
            .map(|b| format!("; did you mean {b:?}?"))
            .unwrap_or_default();
            warnings.push(Warning(format!(
                "{}:{}: rule {name:?}: match.frameworks: {f:?} is not a framework Currents reports ({}{hint}): no run matches it",
                loc.path,
                key_line("frameworks"),
                FRAMEWORKS.join(", ")
            )));
        }
    }
    let at = |key: &str, msg: String| {
        loc.err_at(
            loc.rule_key_span(i, key, true).or_else(|| loc.rule_span(i)),
            format!("rule {name:?}: match.{key}: {msg}"),
        )
    };
    // An empty list would match everything (`branches`) or nothing (the others): say
    // which the person meant instead of guessing.
    for (key, list, what) in [
        ("projects", &m.projects, "runs of every project"),
        ("branches", &m.branches, "runs on every branch"),
        ("tags", &m.tags, "runs whatever their tags"),
        ("authors", &m.authors, "runs by every author"),
        ("statuses", &m.statuses, "runs of every status"),
        (
            "completion_states",
            &m.completion_states,
            "runs in every completion state",
        ),
        ("frameworks", &m.frameworks, "runs of every framework"),
    ] {
        if list.as_ref().is_some_and(Vec::is_empty) {
            return Err(at(
                key,
                format!(
                    "the list is empty; remove the key to match {what}, or list at least one value"
                ),
            ));
        }
    }
    let globs = |key: &str, v: &Option<Vec<String>>| -> Result<Option<GlobList>, ConfigError> {
        v.as_ref()
            .map(|p| GlobList::new(p).map_err(|m| at(key, m)))
            .transpose()
    };
    let regex = |key: &str, v: &Option<String>| -> Result<Option<regex::Regex>, ConfigError> {
        v.as_ref()
            .map(|p| {
                regex::RegexBuilder::new(p)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| at(key, format!("invalid regex: {e}")))
            })
            .transpose()
    };
    let tags = match &m.tags {
        None => None,
        Some(p) => Some((
            p.clone(),
            Filter::compile_tags(p).map_err(|e| at("tags", e))?,
        )),
    };
    let tag_mode = match m.tag_mode.as_deref() {
        None | Some("any") => TagMode::Any,
        Some("all") => TagMode::All,
        Some("none") => TagMode::None,
        Some(o) => {
            return Err(at(
                "tag_mode",
                format!("unknown mode {o:?}; expected \"any\", \"all\" or \"none\""),
            ));
        }
    };
    let statuses = match &m.statuses {
        None => None,
        Some(v) => {
            let mut out = Vec::new();
            for s in v {
                let p = RunStatus::parse(s);
                if matches!(p, RunStatus::Unknown(_)) {
                    return Err(at(
                        "statuses",
                        format!(
                            "unknown status {s:?}; expected PASSED, FAILED, RUNNING or FAILING"
                        ),
                    ));
                }
                out.push(p);
            }
            Some(out)
        }
    };
    let completion_states = match &m.completion_states {
        None => None,
        Some(v) => {
            let mut out = Vec::new();
            for s in v {
                let p = CompletionState::parse(s);
                if matches!(p, CompletionState::Unknown(_)) {
                    return Err(at(
                        "completion_states",
                        format!(
                            "unknown state {s:?}; expected COMPLETE, IN_PROGRESS, CANCELED or TIMEOUT"
                        ),
                    ));
                }
                out.push(p);
            }
            Some(out)
        }
    };
    Ok(Filter {
        projects: m.projects.clone(),
        branches: globs("branches", &m.branches)?,
        tags,
        tag_mode,
        authors: globs("authors", &m.authors)?,
        statuses,
        completion_states,
        message: regex("message", &m.message)?,
        ci_build_id: regex("ci_build_id", &m.ci_build_id)?,
        frameworks: m.frameworks.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_problem_accepts_only_owner_slash_name() {
        for ok in [
            "acme/web",
            "ACME/Web",
            "a-b/c.d_e",
            "acme/.github",
            "my_emu/x",
        ] {
            assert_eq!(repo_problem(ok), None, "{ok}");
        }
        for bad in [
            "acme/web.git",
            "acme/web/",
            "/acme/web",
            "acme",
            "acme//web",
            "acme/.",
            "acme/..",
            " acme/web",
            "acme/wéb",
            "acme.corp/web",
            "",
        ] {
            assert!(repo_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn repo_hint_finds_the_owner_slash_name_meant() {
        for (value, hint) in [
            ("acme/web.git", Some("acme/web")),
            ("acme/web/", Some("acme/web")),
            ("/acme/web", Some("acme/web")),
            (" acme/web ", Some("acme/web")),
            ("ssh://git@github.com/Acme/Web.git", Some("Acme/Web")),
            ("git@github.com:acme/web.git", Some("acme/web")),
            ("github.com/acme/web/", Some("acme/web")),
            ("acme/wéb.git", None),
            ("acme/wébgit", None),
            ("acme", None),
            ("acme/web/tree/main", None),
            ("acme/web", None),
        ] {
            assert_eq!(repo_hint(value).as_deref(), hint, "{value}");
        }
    }

    /// The warning about timeout rules with polling off is for timeout rules only.
    #[test]
    fn only_timeout_rules_are_warned_about_with_polling_off() {
        let text = "[currents]\nprojects = [\"p\"]\npoll_interval = \"0s\"\n\
            [[rules]]\nname = \"t\"\nkind = \"timeout\"\nmax_duration = \"auto\"\nfallback = \"1h\"\n\
            [[rules]]\nname = \"s\"\nkind = \"supersede\"\n\
            [[rules]]\nname = \"o\"\nkind = \"orphan\"\n";
        let w: Vec<String> = load_str(text, "rules.toml", &[])
            .unwrap()
            .warnings
            .into_iter()
            .map(|w| w.0)
            .filter(|w| w.contains("polling is off"))
            .collect();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("rules.toml:4: rule \"t\": "), "{w:?}");
    }

    /// Two summary rules that comment share a PR's one sticky comment (each update
    /// renders it with the last event's rule): warned once, at the second, naming the
    /// first; a second summary rule posting only commit statuses is fine.
    #[test]
    fn a_second_commenting_summary_rule_is_warned_about() {
        let warned = |rules: &str| -> Vec<String> {
            load_str(
                &format!("[currents]\nprojects = [\"p\"]\n{rules}"),
                "rules.toml",
                &[],
            )
            .unwrap()
            .warnings
            .into_iter()
            .map(|w| w.0)
            .filter(|w| w.contains("one sticky comment"))
            .collect()
        };
        let w = warned(
            "[[rules]]\nname = \"a\"\nkind = \"summary\"\n\
             [[rules]]\nname = \"b\"\nkind = \"summary\"\ncommit_status = true\n",
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("rules.toml:6: rule \"b\": rule \"a\" comments too (line 3)"),
            "{w:?}"
        );
        let w = warned(
            "[[rules]]\nname = \"a\"\nkind = \"summary\"\n\
             [[rules]]\nname = \"b\"\nkind = \"summary\"\ncomment = false\ncommit_status = true\n",
        );
        assert!(w.is_empty(), "{w:?}");
    }
}
