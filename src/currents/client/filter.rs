//! Query parameters of the list-runs and find-run endpoints (`currents-notes.md` §1.5, §1.6).

use chrono::{DateTime, SecondsFormat, Utc};

use crate::currents::models::{CompletionState, RunStatus};

/// Largest page the API serves (`limit` 1..=50).
pub const MAX_PAGE_SIZE: u8 = 50;

/// How `tags` combine in [`RunFilter`]: the API default is `AND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TagOperator {
    And,
    Or,
}

impl TagOperator {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::And => "AND",
            Self::Or => "OR",
        }
    }
}

/// Server-side filters of `GET /projects/{projectId}/runs`. All filters are AND-ed by the
/// API; an empty filter lists every run, newest first.
///
/// Serialised as the API expects: `branches[]=a&branches[]=b`, `tags[]=..`, `authors[]=..`,
/// `tag_operator=AND|OR`, `search=..`, `status=PASSED&status=FAILED` and
/// `completion_state=..` repeated without brackets, `date_start`/`date_end` as RFC 3339
/// UTC (`2026-01-01T00:00:00.000Z`), and `limit`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFilter {
    /// Exact branch names (`meta.commit.branch`).
    pub branches: Vec<String>,
    pub tags: Vec<String>,
    pub tag_operator: Option<TagOperator>,
    /// Git author names.
    pub authors: Vec<String>,
    /// Case-insensitive match on ciBuildId or commit message (the API caps it at 200 chars).
    pub search: Option<String>,
    pub status: Vec<RunStatus>,
    pub completion_state: Vec<CompletionState>,
    /// Runs created at or after.
    pub date_start: Option<DateTime<Utc>>,
    /// Runs created before.
    pub date_end: Option<DateTime<Utc>>,
    /// Page size, clamped to 1..=50; `None` means 50. This is **not** a cap on the total
    /// number of runs a stream yields: use `StreamExt::take` for that.
    pub limit: Option<u8>,
}

impl RunFilter {
    /// Runs still in progress, e.g. for supersede and timeout rules.
    pub fn in_progress() -> Self {
        Self {
            completion_state: vec![CompletionState::InProgress],
            ..Self::default()
        }
    }

    /// The effective page size (1..=50).
    pub fn page_size(&self) -> u8 {
        self.limit.unwrap_or(MAX_PAGE_SIZE).clamp(1, MAX_PAGE_SIZE)
    }

    /// The query pairs, in a stable order, without the cursor.
    pub fn query_pairs(&self) -> Vec<(&'static str, String)> {
        let mut q: Vec<(&'static str, String)> = vec![("limit", self.page_size().to_string())];
        q.extend(self.branches.iter().map(|b| ("branches[]", b.clone())));
        q.extend(self.tags.iter().map(|t| ("tags[]", t.clone())));
        if let Some(op) = self.tag_operator {
            q.push(("tag_operator", op.as_str().to_string()));
        }
        q.extend(self.authors.iter().map(|a| ("authors[]", a.clone())));
        if let Some(s) = self.search.as_deref().filter(|s| !s.is_empty()) {
            q.push(("search", s.to_string()));
        }
        q.extend(
            self.status
                .iter()
                .map(|s| ("status", s.as_str().to_string())),
        );
        q.extend(
            self.completion_state
                .iter()
                .map(|c| ("completion_state", c.as_str().to_string())),
        );
        if let Some(d) = self.date_start {
            q.push(("date_start", iso(d)));
        }
        if let Some(d) = self.date_end {
            q.push(("date_end", iso(d)));
        }
        q
    }
}

/// How [`find_run`](super::CurrentsClient::find_run) identifies a run
/// (`GET /runs/find`; the API returns the most recent *completed* run that matches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindBy {
    /// Exact `meta.ciBuildId`.
    CiBuildId(String),
    /// Branch, optionally narrowed by tags (sent as `tags[]`).
    Branch { branch: String, tags: Vec<String> },
}

impl FindBy {
    pub(crate) fn query_pairs(&self, project_id: &str) -> Vec<(&'static str, String)> {
        let mut q = vec![("projectId", project_id.to_string())];
        match self {
            Self::CiBuildId(id) => q.push(("ciBuildId", id.clone())),
            Self::Branch { branch, tags } => {
                q.push(("branch", branch.clone()));
                q.extend(tags.iter().map(|t| ("tags[]", t.clone())));
            }
        }
        q
    }
}

fn iso(d: DateTime<Utc>) -> String {
    d.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn encode(pairs: &[(&str, String)]) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            s.append_pair(k, v);
        }
        s.finish()
    }

    #[test]
    fn empty_filter_sends_only_limit() {
        assert_eq!(
            RunFilter::default().query_pairs(),
            vec![("limit", "50".to_string())]
        );
    }

    #[test]
    fn full_filter_serialises_like_the_reference() {
        let f = RunFilter {
            branches: vec!["main".into(), "feat/x".into()],
            tags: vec!["smoke".into()],
            tag_operator: Some(TagOperator::Or),
            authors: vec!["Jane Doe".into()],
            search: Some("build-1".into()),
            status: vec![RunStatus::Passed, RunStatus::Failed],
            completion_state: vec![CompletionState::InProgress],
            date_start: Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()),
            date_end: Some(Utc.with_ymd_and_hms(2026, 2, 1, 12, 30, 0).unwrap()),
            limit: Some(20),
        };
        assert_eq!(
            encode(&f.query_pairs()),
            "limit=20&branches%5B%5D=main&branches%5B%5D=feat%2Fx&tags%5B%5D=smoke&tag_operator=OR\
             &authors%5B%5D=Jane+Doe&search=build-1&status=PASSED&status=FAILED\
             &completion_state=IN_PROGRESS&date_start=2026-01-01T00%3A00%3A00.000Z\
             &date_end=2026-02-01T12%3A30%3A00.000Z"
        );
    }

    #[test]
    fn page_size_is_clamped() {
        assert_eq!(
            RunFilter {
                limit: Some(0),
                ..Default::default()
            }
            .page_size(),
            1
        );
        assert_eq!(
            RunFilter {
                limit: Some(200),
                ..Default::default()
            }
            .page_size(),
            50
        );
        assert_eq!(
            RunFilter {
                limit: Some(7),
                ..Default::default()
            }
            .page_size(),
            7
        );
        assert_eq!(
            RunFilter::in_progress().query_pairs()[1],
            ("completion_state", "IN_PROGRESS".into())
        );
    }

    #[test]
    fn find_by_pairs() {
        assert_eq!(
            FindBy::CiBuildId("b-1".into()).query_pairs("P"),
            vec![("projectId", "P".into()), ("ciBuildId", "b-1".into())]
        );
        assert_eq!(
            FindBy::Branch {
                branch: "main".into(),
                tags: vec!["a".into(), "b".into()]
            }
            .query_pairs("P"),
            vec![
                ("projectId", "P".into()),
                ("branch", "main".into()),
                ("tags[]", "a".into()),
                ("tags[]", "b".into())
            ]
        );
    }
}
