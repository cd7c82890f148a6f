//! The GitHub webhook events runwarden understands, parsed into its own small types
//! (not full octocrab payloads): `push`, `pull_request` (closed), `workflow_run`
//! (completed) and `ping`. Everything else is ignored.
//!
//! A closed pull request is a [`Trigger::PullRequestClosed`] only when its head branch is
//! the base repository's own (`pull_request.head.repo` names `repository`, in any case): a
//! pull request from a fork, or from a fork since deleted (`head.repo` null), is ignored,
//! since its branch (often the fork's `main`) is not the base's branch of that name.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::rules::Trigger;

/// A GitHub event, reduced to what the rules need: the rules' own [`Trigger`] for
/// `push`, `pull_request` closed and `workflow_run` completed.
// One value per webhook, moved once into the processor: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum GithubEvent {
    Trigger(Trigger),
    Ping,
    /// A known event type with an action runwarden does not act on, or another event.
    Ignored(String),
}

/// Why a payload could not be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed {event} payload: {detail}")]
pub struct ParseError {
    pub event: String,
    pub detail: String,
}

#[derive(Deserialize, Serialize)]
struct Repo {
    full_name: String,
}

#[derive(Deserialize, Serialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    repository: PushRepo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    head_commit: Option<HeadCommit>,
}

#[derive(Deserialize, Serialize)]
struct PushRepo {
    full_name: String,
    /// When the push happened, in Unix seconds (a push payload's form; an RFC 3339 string
    /// is read too, anything else as absent).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "unix_seconds"
    )]
    pushed_at: Option<i64>,
}

fn unix_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => {
            DateTime::parse_from_rfc3339(&s).ok().map(|t| t.timestamp())
        }
        _ => None,
    })
}

#[derive(Deserialize, Serialize)]
struct HeadCommit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timestamp: Option<DateTime<chrono::FixedOffset>>,
}

#[derive(Deserialize, Serialize)]
struct PrPayload {
    action: String,
    number: u64,
    pull_request: Pr,
    repository: Repo,
}

#[derive(Deserialize, Serialize)]
struct Pr {
    head: PrHead,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    closed_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize, Serialize)]
struct PrHead {
    #[serde(rename = "ref")]
    git_ref: String,
    /// The repository of the head branch: `Some(Some(_))` for an object, `Some(None)` for
    /// `null` (the fork was deleted), `None` when the key is absent: GitHub always sends
    /// it, so only a payload stored by a version that did not keep it (an event queued at
    /// an upgrade) lacks it, and it is read as that version read it, as the base's own
    /// branch. Kept, so that a stored payload reads to the same event.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    repo: Option<Option<Repo>>,
}

/// `#[serde(deserialize_with)]` helper: a key that is present (even as `null`) is
/// `Some`, so that `null` and an absent key can be told apart.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize, Serialize)]
struct WorkflowPayload {
    action: String,
    workflow_run: WorkflowRun,
    repository: Repo,
}

#[derive(Deserialize, Serialize)]
struct WorkflowRun {
    id: u64,
    #[serde(default = "one")]
    run_attempt: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    head_branch: Option<String>,
    head_sha: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    updated_at: Option<DateTime<Utc>>,
    /// The workflow's name and file, for orphan rules' `workflows`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
}

fn one() -> u64 {
    1
}

/// Deserializes `body`; only a payload that fails is read again, with
/// `serde_path_to_error`, for a message that names the field (the common case pays for
/// one plain pass).
fn parse<'a, T: Deserialize<'a>>(event: &str, body: &'a [u8]) -> Result<T, ParseError> {
    if let Ok(v) = serde_json::from_slice(body) {
        return Ok(v);
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize::<_, T>(de).map_err(|e| ParseError {
        event: event.to_string(),
        detail: e.to_string(),
    })
}

/// A handled payload, deserialized into the fields runwarden reads.
enum Payload {
    Ping,
    Push(PushPayload),
    PullRequest(PrPayload),
    WorkflowRun(WorkflowPayload),
    Other(String),
}

impl Payload {
    fn read(event: &str, body: &[u8]) -> Result<Payload, ParseError> {
        Ok(match event {
            "ping" => {
                // Read whole (not skipped): a string of invalid UTF-8 is refused.
                let _: serde_json::Value = parse(event, body)?;
                Payload::Ping
            }
            "push" => Payload::Push(parse(event, body)?),
            "pull_request" => Payload::PullRequest(parse(event, body)?),
            "workflow_run" => Payload::WorkflowRun(parse(event, body)?),
            other => Payload::Other(other.to_string()),
        })
    }

    /// The fields read, as JSON of GitHub's own shape: [`parse_event`] reads it to the
    /// same event as the whole payload.
    fn kept(&self) -> String {
        let v = match self {
            Payload::Push(p) => serde_json::to_string(p),
            Payload::PullRequest(p) => serde_json::to_string(p),
            Payload::WorkflowRun(p) => serde_json::to_string(p),
            Payload::Ping | Payload::Other(_) => Ok("{}".to_string()),
        };
        // Plain structs of strings, numbers and times: serializing cannot fail.
        v.unwrap_or_else(|_| "{}".to_string())
    }

    fn into_event(self, received_at: DateTime<Utc>) -> GithubEvent {
        match self {
            Payload::Ping => GithubEvent::Ping,
            Payload::Push(p) => {
                let Some(branch) = p.git_ref.strip_prefix("refs/heads/") else {
                    return GithubEvent::Ignored(format!("push to {}", p.git_ref));
                };
                let deleted = p.deleted || p.after.chars().all(|c| c == '0');
                GithubEvent::Trigger(Trigger::Push {
                    repo: p.repository.full_name.to_ascii_lowercase(),
                    branch: branch.to_string(),
                    head_sha: p.after,
                    deleted,
                    // The push's own time; else its head commit's, which is older
                    // when the commit was rebased or pushed late; never later than
                    // the event's arrival.
                    pushed_at: p
                        .repository
                        .pushed_at
                        .and_then(|s| DateTime::from_timestamp(s, 0))
                        .or_else(|| {
                            p.head_commit
                                .and_then(|h| h.timestamp)
                                .map(|t| t.with_timezone(&Utc))
                        })
                        .map(|t| t.min(received_at))
                        .unwrap_or(received_at),
                })
            }
            Payload::PullRequest(p) => {
                if p.action != "closed" {
                    return GithubEvent::Ignored(format!("pull_request {}", p.action));
                }
                // Only a branch of the base repository itself is the base's branch: a
                // fork's `main` is not the base's `main` (see the module's doc).
                let base = &p.repository.full_name;
                match &p.pull_request.head.repo {
                    Some(Some(head)) if head.full_name.eq_ignore_ascii_case(base) => {}
                    Some(Some(head)) => {
                        return GithubEvent::Ignored(format!(
                            "pull_request closed from fork {}",
                            head.full_name.to_ascii_lowercase()
                        ));
                    }
                    Some(None) => {
                        return GithubEvent::Ignored(
                            "pull_request closed without a head repository".into(),
                        );
                    }
                    // Stored by a version that did not keep it (see `PrHead::repo`).
                    None => {}
                }
                GithubEvent::Trigger(Trigger::PullRequestClosed {
                    repo: p.repository.full_name.to_ascii_lowercase(),
                    branch: p.pull_request.head.git_ref,
                    number: p.number,
                    closed_at: p.pull_request.closed_at.unwrap_or(received_at),
                })
            }
            Payload::WorkflowRun(p) => {
                if p.action != "completed" {
                    return GithubEvent::Ignored(format!("workflow_run {}", p.action));
                }
                GithubEvent::Trigger(Trigger::WorkflowRunCompleted {
                    repo: p.repository.full_name.to_ascii_lowercase(),
                    run_id: p.workflow_run.id,
                    run_attempt: p.workflow_run.run_attempt,
                    head_branch: p.workflow_run.head_branch.filter(|b| !b.is_empty()),
                    head_sha: p.workflow_run.head_sha,
                    completed_at: p.workflow_run.updated_at.unwrap_or(received_at),
                    workflow_name: p.workflow_run.name.filter(|n| !n.is_empty()),
                    workflow_path: p.workflow_run.path.filter(|n| !n.is_empty()),
                })
            }
            Payload::Other(other) => GithubEvent::Ignored(other),
        }
    }
}

/// Parses a payload by its `X-GitHub-Event` type. `received_at` stands in for times the
/// payload does not carry.
pub fn parse_event(
    event: &str,
    body: &[u8],
    received_at: DateTime<Utc>,
) -> Result<GithubEvent, ParseError> {
    Ok(Payload::read(event, body)?.into_event(received_at))
}

/// A payload read at intake: the event, and what of the payload is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadEvent {
    pub event: GithubEvent,
    /// The fields runwarden reads (see [`parse_event`]), as JSON of GitHub's own shape,
    /// a few hundred bytes: what the store keeps of the payload. [`parse_event`] reads it,
    /// with the same `received_at`, to the same event as the whole payload. The rest of a
    /// payload (up to 25 MiB for GitHub; a `push` is typically several KiB) is not kept.
    pub kept: String,
}

/// [`parse_event`], and the part of the payload to store.
pub fn read_event(
    event: &str,
    body: &[u8],
    received_at: DateTime<Utc>,
) -> Result<ReadEvent, ParseError> {
    let payload = Payload::read(event, body)?;
    let kept = payload.kept();
    Ok(ReadEvent {
        event: payload.into_event(received_at),
        kept,
    })
}

/// The event types runwarden stores and acts on.
pub fn is_handled(event: &str) -> bool {
    matches!(event, "push" | "pull_request" | "workflow_run" | "ping")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-01-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn push_to_a_branch() {
        let body = br#"{"ref":"refs/heads/feat/x","before":"a","after":"9c1e","deleted":false,
            "repository":{"full_name":"Acme/Web"},"head_commit":{"timestamp":"2026-01-01T11:59:00+00:00"}}"#;
        assert_eq!(
            parse_event("push", body, now()).unwrap(),
            GithubEvent::Trigger(Trigger::Push {
                repo: "acme/web".into(),
                branch: "feat/x".into(),
                head_sha: "9c1e".into(),
                deleted: false,
                pushed_at: "2026-01-01T11:59:00Z".parse().unwrap(),
            })
        );
    }

    #[test]
    fn a_push_is_timed_by_the_push_not_by_its_commit() {
        // A rebased commit keeps its old time; the push happened at 11:59:30.
        let body = br#"{"ref":"refs/heads/feat/x","after":"9c1e","repository":{"full_name":"a/b","pushed_at":1767268770},
            "head_commit":{"timestamp":"2026-01-01T09:00:00+00:00"}}"#;
        let pushed_at = |body: &[u8]| match parse_event("push", body, now()).unwrap() {
            GithubEvent::Trigger(Trigger::Push { pushed_at, .. }) => pushed_at.to_rfc3339(),
            other => panic!("{other:?}"),
        };
        assert_eq!(pushed_at(body), "2026-01-01T11:59:30+00:00");
        // What is stored reads back to the same time.
        let kept = read_event("push", body, now()).unwrap().kept;
        assert_eq!(
            pushed_at(kept.as_bytes()),
            "2026-01-01T11:59:30+00:00",
            "{kept}"
        );
        let body = br#"{"ref":"refs/heads/x","after":"9c1e","repository":{"full_name":"a/b","pushed_at":"2026-01-01T11:58:00Z"}}"#;
        assert_eq!(pushed_at(body), "2026-01-01T11:58:00+00:00");
        // Never later than the event's arrival; an odd value is as if absent.
        let body = br#"{"ref":"refs/heads/x","after":"9c1e","repository":{"full_name":"a/b","pushed_at":1893456000}}"#;
        assert_eq!(pushed_at(body), "2026-01-01T12:00:00+00:00");
        let body = br#"{"ref":"refs/heads/x","after":"9c1e","repository":{"full_name":"a/b","pushed_at":null},
            "head_commit":{"timestamp":"2026-01-01T09:00:00+00:00"}}"#;
        assert_eq!(pushed_at(body), "2026-01-01T09:00:00+00:00");
    }

    #[test]
    fn branch_deletion_and_tags() {
        let body = br#"{"ref":"refs/heads/feat/x","after":"0000000000000000000000000000000000000000","deleted":true,"repository":{"full_name":"a/b"}}"#;
        assert!(matches!(
            parse_event("push", body, now()).unwrap(),
            GithubEvent::Trigger(Trigger::Push { deleted: true, .. })
        ));
        let body = br#"{"ref":"refs/tags/v1","after":"1","repository":{"full_name":"a/b"}}"#;
        assert!(matches!(
            parse_event("push", body, now()).unwrap(),
            GithubEvent::Ignored(_)
        ));
    }

    fn pr_closed(head_repo: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "action": "closed", "number": 12,
            "pull_request": {"head": {"ref": "main", "sha": "abc", "repo": head_repo},
                             "closed_at": "2026-01-01T11:00:00Z"},
            "repository": {"full_name": "acme/web"}
        }))
        .unwrap()
    }

    #[test]
    fn a_closed_pull_request_of_the_same_repository_deletes_its_branch() {
        let body = pr_closed(serde_json::json!({"full_name": "Acme/Web", "fork": false}));
        let closed = GithubEvent::Trigger(Trigger::PullRequestClosed {
            repo: "acme/web".into(),
            branch: "main".into(),
            number: 12,
            closed_at: "2026-01-01T11:00:00Z".parse().unwrap(),
        });
        assert_eq!(parse_event("pull_request", &body, now()).unwrap(), closed);
        // What is stored keeps the head repository, and reads back to the same trigger.
        let read = read_event("pull_request", &body, now()).unwrap();
        assert_eq!(read.event, closed);
        let kept: serde_json::Value = serde_json::from_str(&read.kept).unwrap();
        assert_eq!(
            kept["pull_request"]["head"]["repo"],
            serde_json::json!({"full_name": "Acme/Web"})
        );
        assert_eq!(
            parse_event("pull_request", read.kept.as_bytes(), now()).unwrap(),
            closed
        );
    }

    #[test]
    fn a_closed_pull_request_from_a_fork_deletes_no_branch_of_the_base() {
        // A fork's `main` is not the base repository's `main`; a deleted fork (`repo`
        // null) or no head repository at all names no branch of the base either.
        for head_repo in [
            serde_json::json!({"full_name": "contrib/web", "fork": true}),
            serde_json::Value::Null,
        ] {
            let body = pr_closed(head_repo.clone());
            for ev in [
                parse_event("pull_request", &body, now()).unwrap(),
                read_event("pull_request", &body, now()).unwrap().event,
            ] {
                assert!(matches!(ev, GithubEvent::Ignored(_)), "{head_repo}: {ev:?}");
            }
        }
        // A payload stored by a version that did not keep `head.repo` (GitHub always sends
        // it) reads as that version read it: the base's own branch.
        let body = br#"{"action":"closed","number":12,"pull_request":{"head":{"ref":"main"}},
            "repository":{"full_name":"acme/web"}}"#;
        assert!(matches!(
            parse_event("pull_request", body, now()).unwrap(),
            GithubEvent::Trigger(Trigger::PullRequestClosed { .. })
        ));
        // A deleted fork's `null` survives being stored and read back.
        let stored = read_event("pull_request", &pr_closed(serde_json::Value::Null), now())
            .unwrap()
            .kept;
        assert!(stored.contains(r#""repo":null"#), "{stored}");
        assert!(matches!(
            parse_event("pull_request", stored.as_bytes(), now()).unwrap(),
            GithubEvent::Ignored(_)
        ));
    }

    #[test]
    fn workflow_run_completed() {
        let body = br#"{"action":"completed","repository":{"full_name":"a/b"},
            "workflow_run":{"id":42,"run_attempt":2,"head_branch":"main","head_sha":"abc","updated_at":"2026-01-01T11:00:00Z"}}"#;
        assert!(matches!(
            parse_event("workflow_run", body, now()).unwrap(),
            GithubEvent::Trigger(Trigger::WorkflowRunCompleted {
                run_id: 42,
                run_attempt: 2,
                ..
            })
        ));
        // The workflow's name and file survive being stored and read back.
        let body = br#"{"action":"completed","repository":{"full_name":"a/b"},
            "workflow_run":{"id":42,"head_sha":"abc","name":"E2E","path":".github/workflows/e2e.yml"}}"#;
        let stored = read_event("workflow_run", body, now()).unwrap().kept;
        match parse_event("workflow_run", stored.as_bytes(), now()).unwrap() {
            GithubEvent::Trigger(Trigger::WorkflowRunCompleted {
                workflow_name,
                workflow_path,
                ..
            }) => {
                assert_eq!(workflow_name.as_deref(), Some("E2E"));
                assert_eq!(workflow_path.as_deref(), Some(".github/workflows/e2e.yml"));
            }
            other => panic!("{other:?}"),
        }
        let body = br#"{"action":"requested","repository":{"full_name":"a/b"},"workflow_run":{"id":42,"head_sha":"abc"}}"#;
        assert!(matches!(
            parse_event("workflow_run", body, now()).unwrap(),
            GithubEvent::Ignored(_)
        ));
    }

    #[test]
    fn malformed_payloads_name_the_path() {
        let e = parse_event("push", br#"{"ref":1}"#, now()).unwrap_err();
        assert!(e.detail.contains("ref"), "{e}");
        assert!(parse_event("pull_request", b"not json", now()).is_err());
    }
}
