//! `GET /`: a read-only, server-rendered status page — rules with hit counts, recent
//! decisions, pending and failed actions, next schedule slots. No external assets,
//! readable on a phone, refreshes itself. Everything shown is also in `/api/*`. What it
//! reads from the store is read at most once per [`STATUS_PAGE_TTL`], however many ask.

use std::fmt::Write;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Html;
use chrono::{DateTime, SecondsFormat, Utc};

use super::AppState;
use crate::config::RuleKind;
use crate::store::{AuditEntry, SlotRecord};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:70rem;padding:1rem;color:#1b1f23;background:#fafbfc}\
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem}table{border-collapse:collapse;width:100%;font-size:.9rem}\
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #e1e4e8;vertical-align:top}\
.scroll{overflow-x:auto}.ok{color:#22863a}.bad{color:#cb2431}.muted{color:#6a737d}code{font-size:.85em}\
.pill{display:inline-block;padding:0 .4rem;border-radius:1rem;background:#eef;font-size:.8rem}\
@media (max-width:640px){.cards tr{display:block;border-bottom:1px solid #e1e4e8;padding:.4rem 0}\
.cards td{display:block;border:0;padding:.1rem .25rem}.cards tr:first-child{display:none}}";

/// Recent decisions shown.
const RECENT_SHOWN: i64 = 50;
/// Pending, and failed, actions shown (newest first); the rest are in `audit` and
/// `/api/actions`.
const ACTIONS_SHOWN: usize = 100;

/// What the page says in place of a section the store could not give.
const UNREADABLE: &str =
    "<p class=\"bad\">The store could not be read; see the log. Retrying on the next refresh.</p>";

/// A store read for the page: `None` (logged at WARN, without the payloads) when it
/// failed, so that an outage shows as such, never as "none" or 0.
fn read<T>(what: &str, r: crate::store::StoreResult<T>) -> Option<T> {
    r.map_err(|e| tracing::warn!(error = %e, what, "status page: cannot read the store"))
        .ok()
}

/// How long the page's store reads are reused: the requests within it share one set of
/// reads (single flight, see [`super::metrics::Metrics::status_page_reads`]), so that a
/// flood of this unauthenticated page cannot tie up the store's readers. The page says
/// when its data was read ("as of").
pub const STATUS_PAGE_TTL: Duration = Duration::from_secs(2);

/// What the page reads from the store; each `None` a read that failed.
pub struct PageData {
    /// When the reads were made.
    read_at: DateTime<Utc>,
    hits: Option<Vec<(String, i64)>>,
    recent: Option<Vec<AuditEntry>>,
    queue: Option<i64>,
    failed: Option<Vec<AuditEntry>>,
    pending: Option<Vec<AuditEntry>>,
    /// The last slot of each scheduled retention rule, by rule name.
    last_slots: Vec<(String, Option<Option<SlotRecord>>)>,
    /// Actions by state.
    counts: Option<Vec<(String, i64)>>,
}

/// The page's store reads (seven queries, and one per scheduled retention rule).
async fn read_all(state: &AppState) -> PageData {
    let read_at = Utc::now();
    let hits = read("rule hits", state.store.rule_hit_counts().await);
    let recent = read(
        "recent decisions",
        state.store.audit(None, None, RECENT_SHOWN).await,
    );
    let queue = read("queue depth", state.store.queue_depth().await);
    // From the store, not from the recent decisions: a failed action stays visible
    // however many decisions came after it (SPEC §6). One more than shown, to tell when
    // some are left out.
    let failed = read(
        "failed actions",
        state
            .store
            .failed_actions_audit(ACTIONS_SHOWN as i64 + 1)
            .await,
    );
    let pending = read(
        "pending actions",
        state
            .store
            .pending_actions_audit(ACTIONS_SHOWN as i64 + 1)
            .await,
    );
    // The last slot of each scheduled retention rule, and how its sweep ended.
    let mut last_slots = Vec::new();
    for r in &state.config.rules {
        if let RuleKind::Retention(o) = &r.kind
            && o.schedule.is_some()
        {
            let slot = read(
                "last schedule slot",
                state.store.latest_slot_record(&r.name).await,
            );
            last_slots.push((r.name.clone(), slot));
        }
    }
    // The headings' counts: every action in the state, not only those listed.
    let counts = read("actions by state", state.store.action_counts().await);
    PageData {
        read_at,
        hits,
        recent,
        queue,
        failed,
        pending,
        last_slots,
        counts,
    }
}

/// Renders the page: 200, or 503 when some of it could not be read from the store (the
/// page is still rendered, those sections saying so). What it shows from the store is
/// read at most once per [`STATUS_PAGE_TTL`] (2 s), whoever asks.
pub async fn page(State(state): State<AppState>) -> (StatusCode, Html<String>) {
    let cfg = &state.config;
    let data = state.metrics.status_page_reads(|| read_all(&state)).await;
    let PageData {
        read_at,
        hits,
        recent,
        queue,
        failed,
        pending,
        last_slots,
        counts,
    } = &*data;
    let count = |states: &[&str]| {
        counts.as_ref().map(|c| {
            c.iter()
                .filter(|(s, _)| states.contains(&s.as_str()))
                .map(|(_, n)| n)
                .sum::<i64>()
        })
    };
    let complete = last_slots.iter().all(|(_, slot)| slot.is_some())
        && counts.is_some()
        && hits.is_some()
        && recent.is_some()
        && queue.is_some()
        && failed.is_some()
        && pending.is_some();
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta http-equiv=\"refresh\" content=\"10\"><title>runwarden status</title><style>{STYLE}</style></head><body>\
<h1>runwarden</h1><p class=\"muted\">as of <time datetime=\"{}\">{}</time> · {} project(s) · {}{} · <a href=\"/metrics\">metrics</a></p>",
        read_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        read_at.format("%Y-%m-%d %H:%M:%S UTC"),
        cfg.currents.projects.len(),
        if cfg.dry_run {
            "<b>dry run</b> · "
        } else {
            ""
        },
        match queue {
            Some(n) => format!("{n} action(s) queued"),
            None => "<span class=\"bad\">queue unknown</span>".to_string(),
        },
    );
    if !complete {
        h.push_str("<p class=\"bad\">The store could not be read (see the log): what is marked so below is missing, not empty.</p>");
    }
    if let Some(wait) = state.github.as_ref().and_then(|g| g.rate_limit_wait()) {
        let until = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
        let _ = write!(
            h,
            "<p class=\"bad\">GitHub rate limit: nothing is sent to GitHub before {} ({} s); summaries wait for it.</p>",
            until.format("%H:%M:%S UTC"),
            wait.as_secs_f64().ceil() as u64
        );
    }
    h.push_str("<h2>Rules</h2><div class=\"scroll\"><table><tr><th>rule</th><th>kind</th><th>hits</th><th>next slot</th><th>last slot</th><th>mode</th></tr>");
    for r in &cfg.rules {
        let n = match &hits {
            Some(hits) => hits
                .iter()
                .find(|(x, _)| x == &r.name)
                .map_or(0, |(_, c)| *c)
                .to_string(),
            None => "?".to_string(),
        };
        let next = match &r.kind {
            RuleKind::Retention(o) => match &o.schedule {
                Some(s) => s
                    .next_after(&Utc::now())
                    .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                    .unwrap_or_default(),
                None => "on demand".to_string(),
            },
            _ => String::new(),
        };
        let last = match last_slots.iter().find(|(name, _)| *name == r.name) {
            None | Some((_, Some(None))) => String::new(),
            Some((_, None)) => "?".to_string(),
            Some((_, Some(Some(slot)))) => format!(
                "{}: {}",
                slot.slot_at.format("%Y-%m-%d %H:%M UTC"),
                match (&slot.summary, slot.finished_at) {
                    (Some(summary), _) => summary.as_str(),
                    (None, Some(_)) => "done",
                    (None, None) => "sweeping",
                }
            ),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td><span class=\"pill\">{}</span></td><td>{n}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.name),
            r.kind_name(),
            esc(&next),
            esc(&last),
            if r.is_dry_run(cfg.dry_run) {
                "dry run"
            } else {
                "live"
            }
        );
    }
    h.push_str("</table></div>");
    let section = |title: &str,
                   total: Option<i64>,
                   rows: &[&crate::store::AuditEntry],
                   h: &mut String| {
        match total {
            Some(n) => {
                let _ = write!(h, "<h2>{title} ({n})</h2>");
            }
            None => {
                let _ = write!(h, "<h2>{title}</h2>");
            }
        }
        if rows.is_empty() {
            h.push_str("<p class=\"muted\">none</p>");
            return;
        }
        h.push_str("<div class=\"scroll\"><table class=\"cards\"><tr><th>when</th><th>rule</th><th>action</th><th>run</th><th>outcome</th><th>reason</th></tr>");
        for e in rows {
            let class = match e.outcome.as_str() {
                "done" => "ok",
                "failed" => "bad",
                _ => "muted",
            };
            let err = e
                .error
                .as_deref()
                .map(|x| format!("<br><span class=\"bad\">{}</span>", esc(x)))
                .unwrap_or_default();
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code><br><span class=\"muted\">{}</span></td><td class=\"{class}\">{} ({} attempt(s))</td><td>{}{err}</td></tr>",
                esc(&e.at.format("%m-%d %H:%M:%S").to_string()),
                esc(&e.rule),
                esc(&e.action),
                esc(&e.run_id),
                esc(e.branch.as_deref().unwrap_or("")),
                esc(e.outcome.as_str()),
                e.attempts,
                esc(&e.reason)
            );
        }
        h.push_str("</table></div>");
    };
    // One row per action (the rules that decided it together), counted in the heading.
    for (title, rows, total) in [
        ("Failed actions", &failed, count(&["failed"])),
        ("Pending actions", &pending, count(&["pending", "running"])),
    ] {
        let Some(rows) = rows else {
            let _ = write!(h, "<h2>{title}</h2>{UNREADABLE}");
            continue;
        };
        let shown: Vec<_> = rows.iter().take(ACTIONS_SHOWN).collect();
        section(title, total, &shown, &mut h);
        if rows.len() > ACTIONS_SHOWN {
            let _ = write!(
                h,
                "<p class=\"muted\">Only the newest {ACTIONS_SHOWN} are shown; the others are in <code>runwarden audit</code> and <code>/api/actions</code>.</p>"
            );
        }
    }
    match &recent {
        Some(recent) => {
            let all: Vec<_> = recent.iter().collect();
            section("Recent decisions", Some(all.len() as i64), &all, &mut h);
        }
        None => {
            let _ = write!(h, "<h2>Recent decisions</h2>{UNREADABLE}");
        }
    }
    let _ = write!(
        h,
        "<p class=\"muted\">Read-only; read from the store at most every {} s. The same data: <code>/api/actions</code>, <code>/api/rules</code>.</p></body></html>",
        STATUS_PAGE_TTL.as_secs()
    );
    let status = if complete {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Html(h))
}
