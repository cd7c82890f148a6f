//! What a run summary says (SPEC §4 `summary`): the sections of the sticky PR comment,
//! the comment body, and the commit status description. Pure: no I/O.
//!
//! # The comment is its own source of truth
//!
//! A body is the marker line, the visible Markdown, and one hidden state line:
//!
//! ```text
//! <!-- runwarden:summary -->
//! ...Markdown rendered from the sections...
//! <!-- runwarden:state {"v":1,"sections":[...]} -->
//! ```
//!
//! The state line holds every section as data ([`Section`]): which run it shows, for
//! which commit, created when, and what to display. An update reads the comment, parses
//! the state, merges the run's section in and renders the whole body again, so no
//! database has to agree with GitHub, and a body that would not change is not edited.
//! Inside the state line `<` and `>` are written as JSON `\u` escapes, so no value (a
//! branch called `-->`, say) can end the HTML comment early (an HTML comment only ends
//! at a `>`).
//!
//! # Custom templates
//!
//! A rule's `template` (minijinja) replaces the visible Markdown; runwarden still adds
//! the marker before it and the state line after it. The template gets:
//!
//! | variable | value |
//! |---|---|
//! | `sections` | every section, sorted by key (see below) |
//! | `current` | the section of the run that triggered this update |
//! | `pr` | `number`, `head_sha`, `head_ref` of the pull request |
//! | `dashboard_url` | `currents.dashboard_url` |
//!
//! Each section has: `key`, `project`, `branch`, `tags` (list), `run_id`, `run_url`,
//! `sha`, `short_sha`, `created_at` (RFC 3339), `outcome` (`passed`, `failed`, `running`,
//! `cancelled`, `timed_out`, `unknown`), `symbol` (✅ ❌ ⏳ 🚫 ⏱️ ❔), `label`
//! (`Passed`, ...), `failing` (a running run with failures), `counts` (`passed`, `failed`,
//! `flaky`, `pending`, `skipped`, `overall`, `retries`), `specs_done`, `specs_total`,
//! `duration_ms`, `duration` (`4m 12s`, or none), `failed_specs` (list of `spec`,
//! `group`, `failures`; at most `max_failed_specs`), `failed_specs_total`,
//! `failed_specs_more` (how many were left out), `groups` (per run group: `group`,
//! `counts`; only for runs with several groups), `cancelled` (`rule`, `reason`, `actor`,
//! or none), `timeout_ms`, `compact` (its failing-spec list and group table were left out
//! to fit the limit, see below), `is_current`, `is_head` (its commit is the PR's head).
//!
//! Every value a template prints is escaped as the default body escapes free text
//! (`text`): `@` cannot ping, `<`, `>` and `&` become entities, and Markdown characters
//! (and `$`, which GitHub reads as math) are backslash-escaped, since branch names, spec
//! paths, tags and cancel reasons come from whoever pushes. `{{ s.branch | code }}`
//! prints a code span instead (write that, not backticks around a value: escapes show
//! inside a code span), `| url` prints a link target (`[run]({{ s.run_url | url }})`,
//! whitespace, parentheses and angle brackets percent-encoded, so a value cannot end the
//! link or its line), `| text` escapes explicitly, and `| safe`
//! prints a string as it is, for Markdown the template writes itself. Text written in
//! the template is never escaped.
//!
//! # Bodies over GitHub's limit
//!
//! A body (marker, Markdown and state line together) over GitHub's 65,536-character limit
//! is shortened, and what is shown is always rendered from what is stored, so the comment
//! depends only on its sections, never on which run triggered the update:
//!
//! 1. Every section's failing-spec list and group table is left out, from the state line
//!    and the Markdown alike; such a section is marked `compact` in the state. While a
//!    section shows the same run it stays compact (a later event of that run does not
//!    bring the lists back only for the comment to outgrow the limit again, an edit on
//!    every event); a new run of the group starts full. The default body then says, in a
//!    note, that the summary was shortened and links to the newest section's run in
//!    Currents.
//! 2. If that is still too long, the Markdown is cut at a line, with the same note.
//!
//! Hundreds of sections on one PR: the oldest sections (never the current one) are dropped
//! first, while even the compact state line would take more than half the limit.
//!
//! Lengths are measured as [`github_len`] does: in UTF-16 code units, never fewer than
//! characters, so a body of Japanese spec paths (3 bytes a character in UTF-8) is posted
//! whole up to the limit, and cuts fall between characters.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::currents::{CompletionState, Run, RunStatus};

use super::client::{MAX_STATUS_DESCRIPTION, StatusState, truncate_chars};

/// First line of every runwarden summary comment.
pub const MARKER: &str = "<!-- runwarden:summary -->";
/// GitHub's limit on a comment body, in characters ("Body is too long (maximum is 65536
/// characters)"). Bodies are kept within it as [`github_len`] counts them.
pub const GITHUB_BODY_LIMIT: usize = 65_536;
/// The length of `s` as held against [`GITHUB_BODY_LIMIT`]: its UTF-16 code units.
///
/// GitHub states the limit in characters. Counted in UTF-8 bytes, a body of CJK text (3
/// bytes a character) was shortened at a third of what fits. UTF-16 code units are
/// characters, except that a character outside the Basic Multilingual Plane (most emoji,
/// `🚫` included) counts 2: the stricter of the two readings of "characters" in use
/// (code points, as Ruby's `String#length`; UTF-16 code units, as JavaScript's `length`
/// and a browser's `maxlength`). A body within the limit by this count is within it by
/// either reading, and within 4 × 65,536 UTF-8 bytes. A body GitHub refused would fail
/// the summary for good (a 422), while counting a rare astral character twice costs one
/// character of room.
pub fn github_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Version of the state line this build writes and reads.
pub const STATE_VERSION: u32 = 1;

const STATE_OPEN: &str = "<!-- runwarden:state ";
const STATE_CLOSE: &str = " -->";
const FOOTER: &str = "<sub>Kept up to date by runwarden: one section per project and run group, \
                      edited in place as runs progress.</sub>";

// ---------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------

/// How a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    Failed,
    Running,
    Cancelled,
    TimedOut,
    Unknown,
}

impl Outcome {
    pub fn symbol(self) -> &'static str {
        match self {
            Outcome::Passed => "✅",
            Outcome::Failed => "❌",
            Outcome::Running => "⏳",
            Outcome::Cancelled => "🚫",
            Outcome::TimedOut => "⏱️",
            Outcome::Unknown => "❔",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Passed => "Passed",
            Outcome::Failed => "Failed",
            Outcome::Running => "Running",
            Outcome::Cancelled => "Cancelled",
            Outcome::TimedOut => "Timed out",
            Outcome::Unknown => "Unknown",
        }
    }

    /// Finished one way or another.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Outcome::Running | Outcome::Unknown)
    }

    /// How a run stands, from the run as read and the event being handled (the event
    /// wins over a stale read that still says in progress). `cancelled_by_runwarden`:
    /// runwarden cancelled it, whatever the read says, unless the run completed first.
    pub fn of(run: &Run, event: &str, cancelled_by_runwarden: bool) -> Outcome {
        let failures = run.test_counts().failures;
        let by_status = || match run.status {
            RunStatus::Passed => Outcome::Passed,
            RunStatus::Failed | RunStatus::Failing => Outcome::Failed,
            _ if failures > 0 => Outcome::Failed,
            _ => Outcome::Passed,
        };
        match run.completion_state {
            CompletionState::Complete => by_status(),
            CompletionState::Canceled => Outcome::Cancelled,
            CompletionState::Timeout => Outcome::TimedOut,
            CompletionState::InProgress | CompletionState::Unknown(_) => {
                let timed_out = run.timeout.as_ref().is_some_and(|t| t.is_timeout);
                let cancelled = run
                    .cancellation
                    .as_ref()
                    .is_some_and(|c| c.canceled_at.is_some());
                if timed_out {
                    Outcome::TimedOut
                } else if cancelled_by_runwarden || cancelled {
                    Outcome::Cancelled
                } else {
                    match event.to_ascii_uppercase().as_str() {
                        "RUN_CANCELED" | "RUN_CANCELLED" => Outcome::Cancelled,
                        "RUN_TIMEOUT" => Outcome::TimedOut,
                        "RUN_FINISH" => by_status(),
                        _ => Outcome::Running,
                    }
                }
            }
        }
    }
}

/// Test counters of a run or group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub flaky: u64,
    pub pending: u64,
    pub skipped: u64,
    pub overall: u64,
    pub retries: u64,
}

impl From<crate::currents::TestCounts> for Counts {
    fn from(t: crate::currents::TestCounts) -> Counts {
        Counts {
            passed: t.passes,
            failed: t.failures,
            flaky: t.flaky,
            pending: t.pending,
            skipped: t.skipped,
            overall: t.overall,
            retries: t.retries,
        }
    }
}

/// A spec file with failed tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedSpec {
    pub spec: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub failures: u64,
}

/// One run group's counters (shown for runs with several groups).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupLine {
    pub group: String,
    pub counts: Counts,
}

/// Who cancelled a run, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelledBy {
    /// The runwarden rule that cancelled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who Currents says cancelled it, when it was not runwarden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// One section of the comment: the latest run of one project and run group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    /// Project, branch and sorted tags: see [`section_key`].
    pub key: String,
    pub project: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    pub run_id: String,
    pub run_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
    pub created_at: DateTime<Utc>,
    pub outcome: Outcome,
    /// Running with failures already.
    #[serde(default, skip_serializing_if = "is_false")]
    pub failing: bool,
    pub counts: Counts,
    #[serde(default)]
    pub specs_done: u64,
    #[serde(default)]
    pub specs_total: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_specs: Vec<FailedSpec>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_specs_total: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<CancelledBy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Its failing-spec list and group table were left out to keep the comment within
    /// GitHub's limit ([`render_body`]); it stays so while it shows this run
    /// (`merge_section` in the summary module).
    #[serde(default, skip_serializing_if = "is_false")]
    pub compact: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The key of a run's section: project, branch and sorted tags. Two runs with the same
/// key share a section; the newer one is shown.
pub fn section_key(run: &Run) -> String {
    let mut tags = run.tags.clone();
    tags.sort();
    tags.dedup();
    format!(
        "{}|{}|{}",
        run.project_id,
        run.branch().unwrap_or(""),
        tags.join(",")
    )
}

/// `{dashboard_url}/run/{run_id}`.
pub fn run_url(dashboard_url: &str, run_id: &str) -> String {
    format!("{}/run/{run_id}", dashboard_url.trim_end_matches('/'))
}

impl Section {
    /// The section showing `run` as of `event`. `cancelled_by`: (rule, reason) when
    /// runwarden cancelled the run.
    pub fn from_run(
        run: &Run,
        event: &str,
        cancelled_by: Option<(&str, &str)>,
        dashboard_url: &str,
        max_failed_specs: usize,
    ) -> Section {
        let outcome = Outcome::of(run, event, cancelled_by.is_some());
        let counts = Counts::from(run.test_counts());
        let instances = run.instance_counts();

        let mut failed: Vec<FailedSpec> = run
            .specs
            .iter()
            .filter_map(|s| {
                let failures = s.results.as_ref()?.stats.failures;
                (failures > 0).then(|| FailedSpec {
                    spec: s.spec.clone(),
                    group: s.group_id.clone().filter(|g| !g.is_empty()),
                    failures,
                })
            })
            .collect();
        failed.sort_by(|a, b| (&a.spec, &a.group).cmp(&(&b.spec, &b.group)));
        // Name the group only when the run has several.
        if run.groups.len() <= 1 {
            for f in &mut failed {
                f.group = None;
            }
        }
        let failed_specs_total = failed.len() as u64;
        failed.truncate(max_failed_specs);

        let mut groups: Vec<GroupLine> = if run.groups.len() > 1 {
            run.groups
                .iter()
                .map(|g| GroupLine {
                    group: g.group_id.clone(),
                    counts: Counts::from(g.tests),
                })
                .collect()
        } else {
            Vec::new()
        };
        groups.sort_by(|a, b| a.group.cmp(&b.group));

        let duration_ms = run.duration_ms.or_else(|| {
            if !outcome.is_terminal() {
                return None;
            }
            let end = run
                .specs
                .iter()
                .filter_map(|s| {
                    s.results
                        .as_ref()
                        .and_then(|r| r.stats.wall_clock_ended_at)
                        .or(s.completed_at)
                })
                .max()?;
            u64::try_from((end - run.created_at).num_milliseconds()).ok()
        });

        let cancelled = (outcome == Outcome::Cancelled).then(|| match cancelled_by {
            Some((rule, reason)) => CancelledBy {
                rule: Some(rule.to_string()),
                reason: Some(reason.to_string()).filter(|r| !r.is_empty()),
                actor: None,
            },
            None => CancelledBy {
                rule: None,
                reason: run
                    .cancellation
                    .as_ref()
                    .and_then(|c| c.reason.clone())
                    .filter(|r| !r.is_empty()),
                actor: run
                    .cancellation
                    .as_ref()
                    .and_then(|c| c.actor.clone())
                    .filter(|a| !a.is_empty()),
            },
        });

        let mut tags = run.tags.clone();
        tags.sort();
        tags.dedup();

        Section {
            key: section_key(run),
            project: run.project_id.clone(),
            branch: run.branch().map(str::to_string),
            tags,
            run_id: run.run_id.clone(),
            run_url: run_url(dashboard_url, &run.run_id),
            sha: run.sha().map(str::to_string),
            created_at: run.created_at,
            outcome,
            failing: outcome == Outcome::Running
                && (counts.failed > 0 || run.status == RunStatus::Failing),
            counts,
            specs_done: instances.complete,
            specs_total: instances.overall,
            duration_ms,
            failed_specs: failed,
            failed_specs_total,
            groups,
            cancelled,
            timeout_ms: (outcome == Outcome::TimedOut)
                .then(|| run.timeout.as_ref().and_then(|t| t.timeout_value_ms))
                .flatten(),
            compact: false,
        }
    }

    /// Leaves out the failing-spec list and the group table (the counts stay), marking
    /// the section `compact` when there was anything to leave out.
    pub fn make_compact(&mut self) {
        if !self.failed_specs.is_empty() || !self.groups.is_empty() {
            self.failed_specs.clear();
            self.groups.clear();
            self.compact = true;
        }
    }

    /// Whether the run failed in a way `only_failed` reports: failed or timed out, or
    /// any failed test.
    pub fn is_failure(&self) -> bool {
        matches!(self.outcome, Outcome::Failed | Outcome::TimedOut) || self.counts.failed > 0
    }

    pub fn short_sha(&self) -> Option<String> {
        self.sha.as_deref().map(short)
    }
}

fn short(s: &str) -> String {
    s.chars().take(7).collect()
}

/// The sections of a comment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryDoc {
    pub sections: Vec<Section>,
}

#[derive(Serialize, Deserialize)]
struct StateLine {
    v: u32,
    sections: Vec<Section>,
}

/// Why a comment's state could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Written by a newer runwarden: leave it alone rather than lose what it says.
    #[error("the comment was written by a newer runwarden (state v{0}); not editing it")]
    NewerVersion(u32),
}

impl SummaryDoc {
    /// The sections stored in a comment body. A body without a state line, or with one
    /// that does not parse (edited by hand), has none: the next update rewrites it.
    pub fn parse(body: &str) -> Result<SummaryDoc, StateError> {
        let Some(start) = body.rfind(STATE_OPEN) else {
            return Ok(SummaryDoc::default());
        };
        let rest = &body[start + STATE_OPEN.len()..];
        let Some(end) = rest.find(STATE_CLOSE) else {
            return Ok(SummaryDoc::default());
        };
        let json = &rest[..end];
        let v = serde_json::from_str::<serde_json::Value>(json)
            .ok()
            .and_then(|v| v.get("v").and_then(serde_json::Value::as_u64));
        match v {
            Some(v) if v > u64::from(STATE_VERSION) => {
                Err(StateError::NewerVersion(v.try_into().unwrap_or(u32::MAX)))
            }
            _ => match serde_json::from_str::<StateLine>(json) {
                Ok(s) => {
                    let mut doc = SummaryDoc {
                        sections: s.sections,
                    };
                    doc.sort();
                    Ok(doc)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable runwarden state in a summary comment; rewriting it");
                    Ok(SummaryDoc::default())
                }
            },
        }
    }

    pub fn get(&self, key: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.key == key)
    }

    pub fn sort(&mut self) {
        self.sections.sort_by(|a, b| a.key.cmp(&b.key));
    }

    /// The hidden state line.
    fn state_line(&self) -> String {
        let json = serde_json::to_string(&StateLine {
            v: STATE_VERSION,
            sections: self.sections.clone(),
        })
        .unwrap_or_else(|_| String::from("{}"));
        // Only strings contain these characters, where the \u escapes are equivalent.
        // Without a `>` nothing can end the HTML comment (`-->`, `--!>`), and without a
        // `<` nothing can open another; `-` needs no escape (it did cost 6 bytes each).
        let json = json.replace('<', "\\u003c").replace('>', "\\u003e");
        format!("{STATE_OPEN}{json}{STATE_CLOSE}")
    }

    /// Every section [`Section::make_compact`].
    pub fn compacted(&self) -> SummaryDoc {
        let mut doc = self.clone();
        for s in &mut doc.sections {
            s.make_compact();
        }
        doc
    }
}

// ---------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------

/// The pull request a body is rendered for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrInfo {
    pub number: u64,
    pub head_sha: String,
    pub head_ref: String,
}

/// Everything besides the sections that a body depends on.
#[derive(Debug, Clone)]
pub struct RenderInput<'a> {
    pub pr: &'a PrInfo,
    /// Key of the section this update is for.
    pub current_key: &'a str,
    pub dashboard_url: &'a str,
    /// `(path, source)` of a minijinja template replacing the default Markdown.
    pub template: Option<&'a (std::path::PathBuf, String)>,
    /// Maximum body length, as [`github_len`] counts it ([`GITHUB_BODY_LIMIT`] in
    /// production).
    pub limit: usize,
}

/// A template that does not render.
#[derive(Debug, Clone, thiserror::Error)]
#[error("summary template {path}: {message}")]
pub struct TemplateError {
    pub path: String,
    pub message: String,
}

/// The whole comment body for `doc`, within `input.limit` ([`github_len`]). The Markdown
/// is always rendered from the sections the state line stores (see the module docs), so
/// the default body does not depend on which run triggered the update (a template may,
/// through `current`).
pub fn render_body(doc: &SummaryDoc, input: &RenderInput<'_>) -> Result<String, TemplateError> {
    let fitted = fit_sections(doc, input);
    // The sections as they are, when the whole body fits.
    let state = fitted.state_line();
    let body = assemble(&visible(&fitted, input)?, &state);
    if github_len(&body) <= input.limit {
        return Ok(body);
    }
    // Else without any failing-spec list or group table, in the state and the Markdown
    // alike; if even that is too long, the Markdown cut at a line.
    let slim = fitted.compacted();
    let state = slim.state_line();
    let budget = input
        .limit
        .saturating_sub(github_len(MARKER) + github_len(&state) + 4);
    let shown = visible(&slim, input)?;
    let shown = if github_len(&shown) <= budget {
        shown
    } else {
        let note = truncation_note(&note_url(&slim, input));
        let text = match input.template {
            Some(_) => shown,
            None => render_default(&slim, None),
        };
        hard_cut(&text, budget.saturating_sub(github_len(&note) + 2), &note)
    };
    Ok(assemble(&shown, &state))
}

/// Marker, Markdown and state line: the body.
fn assemble(visible: &str, state: &str) -> String {
    format!("{MARKER}\n{}\n\n{state}", visible.trim_end())
}

/// The Markdown of `doc`: the rule's template, or the default body, with the note that
/// the summary was shortened when a section is compact.
fn visible(doc: &SummaryDoc, input: &RenderInput<'_>) -> Result<String, TemplateError> {
    match input.template {
        Some((path, source)) => render_template(doc, input, path, source),
        None => {
            let note = doc
                .sections
                .iter()
                .any(|s| s.compact)
                .then(|| truncation_note(&note_url(doc, input)));
            Ok(render_default(doc, note.as_deref()))
        }
    }
}

/// What the note of a shortened summary links: the run of the newest section (the one
/// created last; by key among equals), else the dashboard. Never the run that triggered
/// the update, so that an update by another run does not edit the comment for the link
/// alone.
fn note_url(doc: &SummaryDoc, input: &RenderInput<'_>) -> String {
    doc.sections
        .iter()
        .max_by(|a, b| (a.created_at, &a.key).cmp(&(b.created_at, &b.key)))
        .map(|s| s.run_url.clone())
        .unwrap_or_else(|| input.dashboard_url.to_string())
}

/// `doc` without its oldest sections (never the current one) while even its compact
/// state line would take more than half the limit: hundreds of sections on one PR.
fn fit_sections(doc: &SummaryDoc, input: &RenderInput<'_>) -> SummaryDoc {
    let mut doc = doc.clone();
    while doc.sections.len() > 1 && github_len(&doc.compacted().state_line()) > input.limit / 2 {
        let oldest = doc
            .sections
            .iter()
            .enumerate()
            .filter(|(_, s)| s.key != input.current_key)
            .min_by_key(|(_, s)| s.created_at)
            .map(|(i, _)| i);
        match oldest {
            Some(i) => {
                let gone = doc.sections.remove(i);
                tracing::warn!(key = %gone.key, run_id = %gone.run_id,
                    "summary comment too large; dropping its oldest section");
            }
            None => break,
        }
    }
    doc
}

fn truncation_note(url: &str) -> String {
    format!(
        "> [!NOTE]\n> This summary was shortened to fit GitHub's 65,536-character comment \
         limit. [See the full results in Currents]({}).",
        link_url(url)
    )
}

/// `text` cut at the last line break within `max` ([`github_len`]), then `note`. The cut
/// falls between characters; a text within `max` is kept whole.
fn hard_cut(text: &str, max: usize, note: &str) -> String {
    let mut used = 0;
    let end = text
        .char_indices()
        .find(|(_, c)| {
            used += c.len_utf16();
            used > max
        })
        .map_or(text.len(), |(i, _)| i);
    let cut = &text[..end];
    let cut = match cut.rfind('\n') {
        Some(i) if end < text.len() => &cut[..i],
        _ => cut,
    };
    format!("{}\n\n{note}", cut.trim_end())
}

fn render_default(doc: &SummaryDoc, note: Option<&str>) -> String {
    let mut out = String::from("### Currents test runs\n");
    if doc.sections.is_empty() {
        out.push_str("\nNo runs yet.\n");
    }
    for s in &doc.sections {
        out.push('\n');
        out.push_str(render_section(s).trim_end());
        out.push('\n');
    }
    if let Some(note) = note {
        out.push('\n');
        out.push_str(note);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(FOOTER);
    out.push('\n');
    out
}

/// One section. A compact section has neither failing-spec list nor group table left:
/// it shows the counts and how many specs failed.
fn render_section(s: &Section) -> String {
    let mut out = String::new();
    // Heading: outcome, project, branch, tags.
    let mut heading = format!(
        "#### {} {}: {}",
        s.outcome.symbol(),
        s.outcome.label(),
        code(&s.project)
    );
    if let Some(b) = &s.branch {
        heading.push_str(&format!(" on {}", code(b)));
    }
    if !s.tags.is_empty() {
        let tags: Vec<String> = s.tags.iter().map(|t| code(t)).collect();
        heading.push_str(&format!(" (tags {})", tags.join(", ")));
    }
    out.push_str(&heading);
    out.push_str("\n\n");

    // What happened, in words, when counters alone do not say it.
    match s.outcome {
        Outcome::Running => {
            let mut line = if s.specs_total > 0 {
                format!("{} of {} spec files done", s.specs_done, s.specs_total)
            } else {
                "Started".to_string()
            };
            if s.failing {
                line.push_str(&format!(
                    "; {} failed so far",
                    plural(s.counts.failed, "test", "tests")
                ));
            }
            out.push_str(&line);
            out.push_str(".\n\n");
        }
        Outcome::Cancelled => {
            if let Some(c) = &s.cancelled {
                out.push_str(&format!("> {}\n\n", cancel_sentence(c)));
            }
        }
        Outcome::TimedOut => {
            let mut line = "> The run timed out".to_string();
            if let Some(ms) = s.timeout_ms {
                line.push_str(&format!(" (limit {})", fmt_duration(ms)));
            }
            line.push_str(&format!(
                " with {} of {} spec files done.",
                s.specs_done, s.specs_total
            ));
            out.push_str(&line);
            out.push_str("\n\n");
        }
        _ => {}
    }

    // Counters.
    let has_results = s.counts.overall > 0 || s.counts != Counts::default();
    if has_results {
        if !s.groups.is_empty() {
            out.push_str("| Group | Passed | Failed | Flaky | Pending | Skipped |\n");
            out.push_str("|---|---:|---:|---:|---:|---:|\n");
            for g in &s.groups {
                out.push_str(&format!(
                    "| {} | {} |\n",
                    table_code(&g.group),
                    count_cells(&g.counts)
                ));
            }
            out.push_str(&format!("| **Total** | {} |\n\n", count_cells(&s.counts)));
        } else {
            out.push_str("| Passed | Failed | Flaky | Pending | Skipped |\n");
            out.push_str("|---:|---:|---:|---:|---:|\n");
            out.push_str(&format!("| {} |\n\n", count_cells(&s.counts)));
        }
    }

    // Commit, duration, link.
    let mut meta = Vec::new();
    if let Some(sha) = s.short_sha() {
        meta.push(format!("Commit {}", code(&sha)));
    }
    if let Some(ms) = s.duration_ms {
        meta.push(format!("Duration {}", fmt_duration(ms)));
    }
    meta.push(format!(
        "[View run {} in Currents]({})",
        code(&short(&s.run_id)),
        link_url(&s.run_url)
    ));
    out.push_str(&meta.join(" · "));
    out.push_str("\n\n");

    // Failing specs.
    if s.failed_specs_total > 0 {
        if !s.failed_specs.is_empty() {
            let shown = s.failed_specs.len() as u64;
            out.push_str(&format!(
                "**Failing specs** ({})\n\n",
                if shown < s.failed_specs_total {
                    format!("{shown} of {}", s.failed_specs_total)
                } else {
                    s.failed_specs_total.to_string()
                }
            ));
            for f in &s.failed_specs {
                let group = f
                    .group
                    .as_deref()
                    .map(|g| format!(" in {}", code(g)))
                    .unwrap_or_default();
                out.push_str(&format!(
                    "- {}{group}: {} failed\n",
                    code(&f.spec),
                    plural(f.failures, "test", "tests")
                ));
            }
            if shown < s.failed_specs_total {
                let more = s.failed_specs_total - shown;
                out.push_str(&format!(
                    "- …and {more} more {} in the run\n",
                    if more == 1 { "spec" } else { "specs" }
                ));
            }
            out.push('\n');
        } else {
            out.push_str(&format!(
                "**Failing specs**: {}, listed in the run.\n\n",
                s.failed_specs_total
            ));
        }
    }
    out
}

fn cancel_sentence(c: &CancelledBy) -> String {
    let mut line = match (&c.rule, &c.actor) {
        (Some(rule), _) => format!("Cancelled by runwarden, rule {}", code(rule)),
        (None, Some(actor)) => format!("Cancelled by {}", code(actor)),
        (None, None) => "Cancelled".to_string(),
    };
    match &c.reason {
        Some(r) => {
            line.push_str(": ");
            line.push_str(&text(r));
            if !r.ends_with('.') {
                line.push('.');
            }
        }
        None => line.push('.'),
    }
    line
}

fn count_cells(c: &Counts) -> String {
    format!(
        "{} | {} | {} | {} | {}",
        c.passed, c.failed, c.flaky, c.pending, c.skipped
    )
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `4m 12s`, `42s`, `1h 05m`; `<1s` under a second (not `0s`, which reads as "no time").
pub fn fmt_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => "<1s".to_string(),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// An inline code span holding `s` verbatim (one line).
fn code(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    let mut longest = 0;
    let mut run = 0;
    for c in s.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    let fence = "`".repeat(longest + 1);
    if longest > 0 || s.starts_with(' ') || s.ends_with(' ') {
        format!("{fence} {s} {fence}")
    } else {
        format!("{fence}{s}{fence}")
    }
}

/// A code span inside a table cell (`|` must be escaped even there).
///
/// GitHub (cmark-gfm) splits a row into cells before it reads any code span: a backslash
/// and the punctuation character after it are one escaped pair, and only then is the
/// backslash of each `\|` dropped. So a name with a backslash right before a pipe (`a\|b`)
/// cannot be shown exactly in a code span there: escaped as `a\\|b`, its `\\` is a pair
/// and the `|` after it ends the cell, and the row's counts move one column over. Such a
/// name is shown as escaped plain text instead, which the table reads back exactly.
fn table_code(s: &str) -> String {
    if s.contains("\\|") {
        return text(s);
    }
    code(s).replace('|', "\\|")
}

/// Plain text with Markdown and HTML neutralised, and no `@mention` pings.
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' | '\r' => out.push(' '),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '@' => out.push_str("@\u{200b}"),
            // `$`: GitHub renders `$...$` as math.
            '\\' | '`' | '*' | '_' | '[' | ']' | '#' | '|' | '~' | '!' | '$' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// A URL safe inside Markdown `(...)`: spaces, line breaks and other whitespace or control
/// characters, parentheses and angle brackets percent-encoded, so that no value can end
/// the link target, or the line, and go on as Markdown of its own (an `@team` on a line
/// of its own pings the team).
fn link_url(u: &str) -> String {
    let mut out = String::with_capacity(u.len());
    for c in u.chars() {
        if c.is_whitespace() || c.is_control() || matches!(c, '(' | ')' | '<' | '>') {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Templates
// ---------------------------------------------------------------------------------------

#[derive(Serialize)]
struct SectionView<'a> {
    #[serde(flatten)]
    section: &'a Section,
    symbol: &'static str,
    label: &'static str,
    short_sha: Option<String>,
    duration: Option<String>,
    failed_specs_more: u64,
    is_current: bool,
    is_head: bool,
}

fn view<'a>(s: &'a Section, input: &RenderInput<'_>) -> SectionView<'a> {
    SectionView {
        section: s,
        symbol: s.outcome.symbol(),
        label: s.outcome.label(),
        short_sha: s.short_sha(),
        duration: s.duration_ms.map(fmt_duration),
        failed_specs_more: s
            .failed_specs_total
            .saturating_sub(s.failed_specs.len() as u64),
        is_current: s.key == input.current_key,
        is_head: s.sha.as_deref() == Some(input.pr.head_sha.as_str()),
    }
}

/// The auto-escape mode of custom templates: every printed value goes through [`text`].
const MARKDOWN_ESCAPE: minijinja::AutoEscape = minijinja::AutoEscape::Custom("markdown");

/// Prints a value into a custom template: safe strings (`|safe`, `|code`, `|text`) as
/// they are, anything else through [`text`] while [`MARKDOWN_ESCAPE`] is on (it is,
/// unless the template turns it off with `{% autoescape false %}`).
fn markdown_formatter(
    out: &mut minijinja::Output<'_>,
    state: &minijinja::State<'_, '_>,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    if state.auto_escape() == MARKDOWN_ESCAPE && !value.is_safe() {
        let s = match value.as_str() {
            Some(s) => text(s),
            None => text(&value.to_string()),
        };
        out.write_str(&s).map_err(minijinja::Error::from)
    } else {
        minijinja::escape_formatter(out, state, value)
    }
}

/// The string a filter works on: nothing for a missing value (`none` or undefined).
fn filter_input(v: &minijinja::Value) -> Option<String> {
    if v.is_undefined() || v.is_none() {
        None
    } else {
        Some(v.as_str().map_or_else(|| v.to_string(), str::to_string))
    }
}

/// `{{ x | code }}`: `x` as an inline code span, as the default body shows names.
fn code_filter(v: &minijinja::Value) -> minijinja::Value {
    minijinja::Value::from_safe_string(filter_input(v).map(|s| code(&s)).unwrap_or_default())
}

/// `{{ x | text }}`: `x` escaped as plain text (what printing it does anyway), marked safe.
fn text_filter(v: &minijinja::Value) -> minijinja::Value {
    minijinja::Value::from_safe_string(filter_input(v).map(|s| text(&s)).unwrap_or_default())
}

/// `{{ x | url }}`: `x` as a link target (`[label]({{ s.run_url | url }})`), with the
/// characters that would end or break a Markdown link percent-encoded, and no backslash
/// escapes (which a bare URL would show), marked safe.
fn url_filter(v: &minijinja::Value) -> minijinja::Value {
    minijinja::Value::from_safe_string(filter_input(v).map(|s| link_url(&s)).unwrap_or_default())
}

/// The visible Markdown from a rule's custom template.
///
/// Every value the template prints is escaped with [`text`] (as the default body
/// escapes free text): no `@mention` pings, no HTML, no Markdown from branch names,
/// spec paths, tags or cancel reasons. `|code` prints a value as a code span, `|text`
/// escapes explicitly, and `|safe` prints a string as it is (for Markdown the template
/// writes itself). No context value is pre-rendered Markdown, so none is passed as safe.
fn render_template(
    doc: &SummaryDoc,
    input: &RenderInput<'_>,
    path: &std::path::Path,
    source: &str,
) -> Result<String, TemplateError> {
    let err = |e: minijinja::Error| TemplateError {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    env.set_auto_escape_callback(|_| MARKDOWN_ESCAPE);
    env.set_formatter(markdown_formatter);
    env.add_filter("code", code_filter);
    env.add_filter("text", text_filter);
    env.add_filter("url", url_filter);
    env.add_template("summary", source).map_err(err)?;
    let sections: Vec<SectionView<'_>> = doc.sections.iter().map(|s| view(s, input)).collect();
    let current = doc.get(input.current_key).map(|s| view(s, input));
    let ctx = minijinja::context! {
        sections => sections,
        current => current,
        pr => input.pr,
        dashboard_url => input.dashboard_url,
    };
    let out = env
        .get_template("summary")
        .map_err(err)?
        .render(ctx)
        .map_err(err)?;
    // The template must not forge or break runwarden's own markers.
    Ok(out
        .replace(MARKER, "")
        .replace(STATE_OPEN, "<!-- runwarden-state "))
}

// ---------------------------------------------------------------------------------------
// Commit statuses
// ---------------------------------------------------------------------------------------

/// The commit status for a section: state and a description within 140 characters.
///
/// Passed → `success`; failed and timed out → `failure` (as Currents reports a timeout);
/// running → `pending`; cancelled and unknown → `error` (the tests did not complete).
pub fn status_for(s: &Section) -> (StatusState, String) {
    let c = &s.counts;
    let dur = s
        .duration_ms
        .map(|ms| format!(" in {}", fmt_duration(ms)))
        .unwrap_or_default();
    let (state, text) = match s.outcome {
        Outcome::Passed => {
            let mut t = format!("Passed: {} passed", c.passed);
            if c.flaky > 0 {
                t.push_str(&format!(", {} flaky", c.flaky));
            }
            if c.skipped > 0 {
                t.push_str(&format!(", {} skipped", c.skipped));
            }
            (StatusState::Success, format!("{t}{dur}"))
        }
        Outcome::Failed => (
            StatusState::Failure,
            format!("Failed: {} failed, {} passed{dur}", c.failed, c.passed),
        ),
        Outcome::TimedOut => (
            StatusState::Failure,
            format!(
                "Timed out: {} failed, {} passed, {}/{} specs done",
                c.failed, c.passed, s.specs_done, s.specs_total
            ),
        ),
        Outcome::Running => {
            let mut t = if s.specs_total > 0 {
                format!("Running: {}/{} specs done", s.specs_done, s.specs_total)
            } else {
                "Running".to_string()
            };
            if c.failed > 0 {
                t.push_str(&format!(", {} failed so far", c.failed));
            }
            (StatusState::Pending, t)
        }
        Outcome::Cancelled => {
            let t = match &s.cancelled {
                Some(CancelledBy {
                    rule: Some(rule),
                    reason,
                    ..
                }) => match reason {
                    Some(r) => format!("Cancelled by runwarden ({rule}): {r}"),
                    None => format!("Cancelled by runwarden ({rule})"),
                },
                Some(CancelledBy {
                    actor: Some(a),
                    reason,
                    ..
                }) => match reason {
                    Some(r) => format!("Cancelled by {a}: {r}"),
                    None => format!("Cancelled by {a}"),
                },
                _ => "Cancelled".to_string(),
            };
            (StatusState::Error, t)
        }
        Outcome::Unknown => (StatusState::Error, "Run state unknown".to_string()),
    };
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    (state, truncate_chars(&one_line, MAX_STATUS_DESCRIPTION))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_spans_survive_backticks_and_pipes() {
        assert_eq!(code("a"), "`a`");
        assert_eq!(code("a`b"), "`` a`b ``");
        assert_eq!(code("x\ny"), "`x y`");
        assert_eq!(table_code("a|b"), "`a\\|b`");
        // A backslash before a pipe cannot stay in a code span in a table cell.
        assert_eq!(table_code("a\\|b"), "a\\\\\\|b");
    }

    #[test]
    fn text_neutralises_markdown_html_and_mentions() {
        let t = text("<img src=x> @octocat *bold* [x](y)");
        assert!(!t.contains('<') && !t.contains("@o"), "{t}");
        assert!(t.contains("\\*bold\\*"), "{t}");
    }

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(0), "<1s");
        assert_eq!(fmt_duration(999), "<1s");
        assert_eq!(fmt_duration(1_000), "1s");
        assert_eq!(fmt_duration(42_000), "42s");
        assert_eq!(fmt_duration(252_000), "4m 12s");
        assert_eq!(fmt_duration(3_900_000), "1h 05m");
    }

    fn section(key: &str, branch: &str) -> Section {
        Section {
            key: key.into(),
            project: "p".into(),
            branch: Some(branch.into()),
            tags: vec![],
            run_id: "r1".into(),
            run_url: "https://app.currents.dev/run/r1".into(),
            sha: Some("abc".into()),
            created_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            outcome: Outcome::Passed,
            failing: false,
            counts: Counts::default(),
            specs_done: 0,
            specs_total: 0,
            duration_ms: None,
            failed_specs: vec![],
            failed_specs_total: 0,
            groups: vec![],
            cancelled: None,
            timeout_ms: None,
            compact: false,
        }
    }

    #[test]
    fn lengths_are_utf16_code_units() {
        assert_eq!(github_len("abc"), 3);
        // One character, 3 bytes in UTF-8.
        assert_eq!(github_len("テ"), 1);
        assert_eq!(github_len("✅❌⏳"), 3);
        // Outside the Basic Multilingual Plane: one character, 2 code units, 4 bytes.
        assert_eq!(github_len("🚫"), 2);
    }

    /// A hard cut counts code units, not bytes, and falls between characters.
    #[test]
    fn a_hard_cut_counts_code_units_and_keeps_whole_characters() {
        // "ab\n" 3, "テテ\n" 3 more: 6; the first "🚫" would make 8.
        let text = "ab\nテテ\n🚫🚫\nxyz";
        assert_eq!(hard_cut(text, 7, "N"), "ab\nテテ\n\nN");
        assert_eq!(hard_cut(text, 8, "N"), "ab\nテテ\n\nN");
        // The line "🚫🚫" ends at 10, its line break at 11.
        assert_eq!(hard_cut(text, 10, "N"), "ab\nテテ\n\nN");
        assert_eq!(hard_cut(text, 11, "N"), "ab\nテテ\n🚫🚫\n\nN");
        assert_eq!(hard_cut(text, 100, "N"), format!("{text}\n\nN"));
        // No line break within the budget: cut inside the line, between characters.
        assert_eq!(hard_cut("テテテテ", 2, "N"), "テテ\n\nN");
        assert_eq!(hard_cut("🚫🚫", 3, "N"), "🚫\n\nN");
    }

    /// Random sections of multi-byte text (CJK, accents, astral emoji, Markdown
    /// characters), with and without a template that prints far too much: the body stays
    /// within the limit in code units (so in characters), keeps its state, and a body
    /// that fits is posted whole.
    mod bodies {
        use super::*;
        use proptest::prelude::*;

        fn text(max: usize) -> impl Strategy<Value = String> {
            prop::collection::vec(
                prop::sample::select(vec![
                    'a', 'Z', '/', '-', ' ', 'テ', '日', 'é', 'ß', '🚫', '😀', '`', '|', '<', '>',
                    '@', '\n', '*',
                ]),
                0..max,
            )
            .prop_map(String::from_iter)
        }

        fn a_section() -> impl Strategy<Value = Section> {
            (
                text(60),
                prop::collection::vec(text(20), 0..4),
                prop::collection::vec((text(3_000), 1u64..5), 0..30),
                prop::option::of(text(300)),
                0u64..3600,
            )
                .prop_map(|(branch, tags, specs, reason, minute)| {
                    let mut s = super::section("", &branch);
                    s.tags = tags;
                    s.key = format!("p|{branch}|{}", s.tags.join(","));
                    s.created_at += chrono::Duration::minutes(minute as i64);
                    s.outcome = if reason.is_some() {
                        Outcome::Cancelled
                    } else {
                        Outcome::Failed
                    };
                    s.cancelled = reason.map(|r| CancelledBy {
                        rule: Some("cancel-superseded".into()),
                        reason: Some(r),
                        actor: None,
                    });
                    s.failed_specs_total = specs.len() as u64;
                    s.failed_specs = specs
                        .into_iter()
                        .map(|(spec, failures)| FailedSpec {
                            spec,
                            group: None,
                            failures,
                        })
                        .collect();
                    s
                })
        }

        fn render(
            doc: &SummaryDoc,
            template: Option<&(std::path::PathBuf, String)>,
            limit: usize,
        ) -> String {
            let pr = PrInfo {
                number: 1,
                head_sha: "abc".into(),
                head_ref: "b".into(),
            };
            render_body(
                doc,
                &RenderInput {
                    pr: &pr,
                    current_key: &doc.sections[0].key,
                    dashboard_url: "https://app.currents.dev",
                    template,
                    limit,
                },
            )
            .unwrap()
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 96,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn bodies_of_multibyte_text_stay_within_the_limit_and_are_whole_when_they_fit(
                sections in prop::collection::vec(a_section(), 1..5),
                lines in prop::option::of(0usize..3_000),
                limit in prop_oneof![4_000usize..20_000, Just(GITHUB_BODY_LIMIT)],
            ) {
                let mut doc = SummaryDoc::default();
                for s in sections {
                    if doc.get(&s.key).is_none() {
                        doc.sections.push(s);
                    }
                }
                let template = lines.map(|n| (
                    std::path::PathBuf::from("t.md"),
                    format!(
                        "{{% for i in range({n}) %}}- {{{{ current.branch }}}} テスト 🚫 \
                         {{{{ i }}}}\n{{% endfor %}}"
                    ),
                ));
                // Measured here, not with `github_len`: the property checks it too.
                let units = |s: &str| s.encode_utf16().count();
                let body = render(&doc, template.as_ref(), limit);
                prop_assert!(units(&body) <= limit, "{} code units over {limit}", units(&body));
                prop_assert!(body.chars().count() <= limit);
                prop_assert!(body.starts_with(MARKER));
                let state = SummaryDoc::parse(&body).unwrap();
                let current = &doc.sections[0].key;
                prop_assert!(state.get(current).is_some(), "the current section stays");
                let whole = render(&doc, template.as_ref(), usize::MAX);
                if units(&whole) <= limit {
                    prop_assert!(
                        body == whole,
                        "a body that fits is posted whole: {} of {} code units posted",
                        units(&body),
                        units(&whole)
                    );
                } else {
                    prop_assert!(body != whole);
                }
            }
        }
    }

    #[test]
    fn state_round_trips_and_cannot_be_broken_by_values() {
        let doc = SummaryDoc {
            sections: vec![
                section("k1", "evil --> <!-- runwarden:state {} -->"),
                section("k2", "-"),
            ],
        };
        let line = doc.state_line();
        assert_eq!(line.matches("-->").count(), 1, "{line}");
        let body = format!("{MARKER}\nhello\n{line}");
        assert_eq!(SummaryDoc::parse(&body).unwrap(), doc);
    }

    #[test]
    fn a_newer_state_version_is_left_alone() {
        let body = format!("{MARKER}\n{STATE_OPEN}{{\"v\":2,\"sections\":[]}}{STATE_CLOSE}");
        assert_eq!(SummaryDoc::parse(&body), Err(StateError::NewerVersion(2)));
        // Garbage or no state: no sections.
        assert_eq!(SummaryDoc::parse("hello").unwrap(), SummaryDoc::default());
        let garbage = format!("{MARKER}\n{STATE_OPEN}{{nope{STATE_CLOSE}");
        assert_eq!(SummaryDoc::parse(&garbage).unwrap(), SummaryDoc::default());
    }

    #[test]
    fn status_descriptions_stay_within_140_characters() {
        let mut s = section("k", "b");
        s.outcome = Outcome::Cancelled;
        s.cancelled = Some(CancelledBy {
            rule: Some("cancel-superseded".into()),
            reason: Some("x".repeat(500)),
            actor: None,
        });
        let (state, d) = status_for(&s);
        assert_eq!(state, StatusState::Error);
        assert_eq!(d.chars().count(), MAX_STATUS_DESCRIPTION);
        assert!(d.starts_with("Cancelled by runwarden (cancel-superseded): xxx"));
    }

    #[test]
    fn templates_cannot_forge_the_state_line() {
        let forged = format!("{MARKER} {STATE_OPEN}{{\"v\":1,\"sections\":[]}}{STATE_CLOSE}");
        let (doc, body) = body_with("b", &forged);
        assert_eq!(body.matches(MARKER).count(), 1);
        assert_eq!(SummaryDoc::parse(&body).unwrap(), doc);
    }

    /// The document of one section on `branch`, and the whole body `template` renders
    /// for it.
    fn body_with(branch: &str, template: &str) -> (SummaryDoc, String) {
        let doc = SummaryDoc {
            sections: vec![section("k", branch)],
        };
        let pr = PrInfo {
            number: 1,
            head_sha: "abc".into(),
            head_ref: branch.into(),
        };
        let t = (std::path::PathBuf::from("t.md"), template.to_string());
        let body = render_body(
            &doc,
            &RenderInput {
                pr: &pr,
                current_key: "k",
                dashboard_url: "https://app.currents.dev",
                template: Some(&t),
                limit: GITHUB_BODY_LIMIT,
            },
        )
        .unwrap();
        (doc, body)
    }

    /// The visible part of the body a template renders for one section on `branch`.
    fn render_with(branch: &str, template: &str) -> String {
        let (_, body) = body_with(branch, template);
        let visible = body.strip_prefix(MARKER).unwrap();
        visible[..visible.find(STATE_OPEN).unwrap()]
            .trim()
            .to_string()
    }

    const EVIL: &str = "@org/team<img src=x> *b* [l](u)";

    #[test]
    fn templates_escape_every_printed_value() {
        for t in [
            "{% for s in sections %}{{ s.branch }}{% endfor %}",
            "{{ current.branch }}",
            "{{ pr.head_ref }}",
            "{{ current.branch | text }}",
            "{{ current.branch | e }}",
            "{{ [current.branch, pr.head_ref] | join(' ') }}",
            "{{ current.branch ~ '!' }}",
        ] {
            let out = render_with(EVIL, t);
            assert!(!out.contains("@org"), "{t}: {out}");
            assert!(!out.contains('<'), "{t}: {out}");
            assert!(
                out.contains("@\u{200b}org/team&lt;img src=x&gt; \\*b\\* \\[l\\](u)"),
                "{t}: {out}"
            );
        }
        // `|text` is escaped once, not twice.
        assert_eq!(render_with(EVIL, "{{ current.branch | text }}"), text(EVIL));
        // Numbers and missing values print as before (`|` here is the template's own text).
        assert_eq!(
            render_with(
                "b",
                "{{ pr.number }}|{{ current.nope }}|{{ current.duration }}"
            ),
            "1||None"
        );
    }

    #[test]
    fn templates_can_print_code_spans_and_their_own_markdown() {
        assert_eq!(
            render_with(EVIL, "{{ current.branch | code }}"),
            format!("`{EVIL}`")
        );
        assert_eq!(render_with("a`b", "{{ pr.head_ref | code }}"), "`` a`b ``");
        assert_eq!(render_with("b", "{{ current.nope | code }}."), ".");
        assert_eq!(render_with("b", "{{ \"**bold**\" | safe }}"), "**bold**");
        // A link target: no backslash escapes, what would break the link encoded.
        assert_eq!(
            render_with("b", "[run]({{ \"https://x.test/run_1 (2)\" | url }})"),
            "[run](https://x.test/run_1%20%282%29)"
        );
        assert_eq!(
            render_with("b", "**{{ current.label }}** <br>"),
            "**Passed** <br>"
        );
        assert_eq!(
            render_with(
                EVIL,
                "{% autoescape false %}{{ current.branch }}{% endautoescape %}"
            ),
            EVIL
        );
    }
}
