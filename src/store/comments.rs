//! Sticky PR summary comments (SPEC §4 `summary`): the comment of each pull request, and
//! its sections, one per project and run group.
//!
//! Repository names are compared case-insensitively (stored lower case).

use chrono::{DateTime, Utc};

use super::runs::text;
use super::{Store, StoreError, StoreResult, from_ms, to_ms};

/// The sticky comment of one pull request as last written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommentRecord {
    /// GitHub's comment id (edited in place).
    pub comment_id: u64,
    /// Hash of the body last written: an unchanged body is not edited again.
    pub body_hash: String,
    /// The sections rendered into the body, as JSON.
    pub sections_json: String,
}

/// A section to write with [`Store::upsert_section_if_newer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionUpdate {
    /// `owner/name`.
    pub repo: String,
    pub pr: u64,
    /// The project and run group the section shows.
    pub section_key: String,
    /// The commit of the run shown.
    pub sha: String,
    /// The PR's head sha when known: a section for the head is never replaced by one for
    /// another commit.
    pub head_sha: Option<String>,
    pub run_id: String,
    /// The run's `createdAt`: orders runs when the head is not known or not involved.
    pub run_created_at: DateTime<Utc>,
    pub body: String,
    pub updated_at: DateTime<Utc>,
}

/// A stored section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionRecord {
    pub section_key: String,
    pub sha: String,
    pub run_id: String,
    pub run_created_at: DateTime<Utc>,
    pub body: String,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct SectionRow {
    section_key: String,
    sha: String,
    run_id: String,
    run_created_at: i64,
    body: String,
    updated_at: i64,
}

impl TryFrom<SectionRow> for SectionRecord {
    type Error = StoreError;
    fn try_from(r: SectionRow) -> StoreResult<SectionRecord> {
        Ok(SectionRecord {
            section_key: r.section_key,
            sha: r.sha,
            run_id: r.run_id,
            run_created_at: from_ms(r.run_created_at)?,
            body: r.body,
            updated_at: from_ms(r.updated_at)?,
        })
    }
}

/// Whether `new` may replace the stored section `old` ("a run for a commit that is no
/// longer the PR's head never overwrites a newer one", SPEC §4):
/// - a section for the head sha replaces one for another commit, and is never replaced
///   by one for another commit;
/// - otherwise the newer run wins (`run_created_at`; equal: the same run's later event).
pub fn section_replaces(new: &SectionUpdate, old: &SectionRecord) -> bool {
    if let Some(head) = new.head_sha.as_deref() {
        let new_is_head = new.sha == head;
        let old_is_head = old.sha == head;
        if new_is_head != old_is_head {
            return new_is_head;
        }
    }
    new.run_created_at >= old.run_created_at
}

fn pr_number(pr: u64) -> StoreResult<i64> {
    i64::try_from(pr).map_err(|_| StoreError::Corrupt(format!("PR number {pr} out of range")))
}

impl Store {
    /// The sticky comment of a pull request, if one was written.
    pub async fn get_comment(&self, repo: &str, pr: u64) -> StoreResult<Option<CommentRecord>> {
        let row: Option<(i64, String, String)> = sqlx::query_as(
            "SELECT comment_id, body_hash, sections_json FROM pr_comments \
             WHERE repo = $1 AND pr = $2",
        )
        .bind(text(&repo.to_ascii_lowercase()))
        .bind(pr_number(pr)?)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(comment_id, body_hash, sections_json)| {
            Ok(CommentRecord {
                comment_id: u64::try_from(comment_id).map_err(|_| {
                    StoreError::Corrupt(format!("comment id {comment_id} out of range"))
                })?,
                body_hash,
                sections_json,
            })
        })
        .transpose()
    }

    /// Records the sticky comment of a pull request (after posting or editing it).
    pub async fn put_comment(
        &self,
        repo: &str,
        pr: u64,
        comment: &CommentRecord,
    ) -> StoreResult<()> {
        let comment_id = i64::try_from(comment.comment_id).map_err(|_| {
            StoreError::Corrupt(format!("comment id {} out of range", comment.comment_id))
        })?;
        sqlx::query(
            "INSERT INTO pr_comments (repo, pr, comment_id, body_hash, sections_json, \
                 updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (repo, pr) DO UPDATE SET \
                 comment_id = excluded.comment_id, \
                 body_hash = excluded.body_hash, \
                 sections_json = excluded.sections_json, \
                 updated_at = excluded.updated_at",
        )
        .bind(text(&repo.to_ascii_lowercase()))
        .bind(pr_number(pr)?)
        .bind(comment_id)
        .bind(text(&comment.body_hash))
        .bind(text(&comment.sections_json))
        .bind(to_ms(Utc::now()))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Writes a section unless the stored one is newer (see [`section_replaces`]).
    /// Returns whether it was written.
    pub async fn upsert_section_if_newer(&self, s: &SectionUpdate) -> StoreResult<bool> {
        let repo = s.repo.to_ascii_lowercase();
        let pr = pr_number(s.pr)?;
        let mut tx = self.begin_write().await?;
        let old: Option<SectionRow> = sqlx::query_as(
            "SELECT section_key, sha, run_id, run_created_at, body, updated_at \
             FROM pr_sections WHERE repo = $1 AND pr = $2 AND section_key = $3",
        )
        .bind(text(&repo))
        .bind(pr)
        .bind(text(&s.section_key))
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(old) = old
            && !section_replaces(s, &SectionRecord::try_from(old)?)
        {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO pr_sections (repo, pr, section_key, sha, run_id, run_created_at, \
                 body, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (repo, pr, section_key) DO UPDATE SET \
                 sha = excluded.sha, \
                 run_id = excluded.run_id, \
                 run_created_at = excluded.run_created_at, \
                 body = excluded.body, \
                 updated_at = excluded.updated_at",
        )
        .bind(text(&repo))
        .bind(pr)
        .bind(text(&s.section_key))
        .bind(text(&s.sha))
        .bind(text(&s.run_id))
        .bind(to_ms(s.run_created_at))
        .bind(text(&s.body))
        .bind(to_ms(s.updated_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The sections of a pull request's comment, by key.
    pub async fn sections(&self, repo: &str, pr: u64) -> StoreResult<Vec<SectionRecord>> {
        let rows: Vec<SectionRow> = sqlx::query_as(
            "SELECT section_key, sha, run_id, run_created_at, body, updated_at \
             FROM pr_sections WHERE repo = $1 AND pr = $2 ORDER BY section_key",
        )
        .bind(text(&repo.to_ascii_lowercase()))
        .bind(pr_number(pr)?)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(SectionRecord::try_from).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        from_ms(1_767_225_600_000 + s * 1000).unwrap()
    }

    fn update(sha: &str, head: Option<&str>, created: i64) -> SectionUpdate {
        SectionUpdate {
            repo: "acme/web".into(),
            pr: 7,
            section_key: "bAYZ4a".into(),
            sha: sha.into(),
            head_sha: head.map(Into::into),
            run_id: format!("run-{sha}-{created}"),
            run_created_at: t(created),
            body: format!("{sha} at {created}"),
            updated_at: t(created + 100),
        }
    }

    fn stored(sha: &str, created: i64) -> SectionRecord {
        let u = update(sha, None, created);
        SectionRecord {
            section_key: u.section_key,
            sha: u.sha,
            run_id: u.run_id,
            run_created_at: u.run_created_at,
            body: u.body,
            updated_at: u.updated_at,
        }
    }

    #[test]
    fn the_head_section_is_never_replaced_by_another_commit() {
        // A re-run of the old commit, created later, still does not replace the head.
        assert!(!section_replaces(
            &update("old", Some("new"), 50),
            &stored("new", 10)
        ));
        // The head replaces an older commit's section even if its run is older.
        assert!(section_replaces(
            &update("new", Some("new"), 5),
            &stored("old", 10)
        ));
    }

    #[test]
    fn without_the_head_the_newer_run_wins() {
        assert!(section_replaces(&update("b", None, 20), &stored("a", 10)));
        assert!(!section_replaces(&update("a", None, 10), &stored("b", 20)));
        // The same run's next event (equal createdAt) replaces it.
        assert!(section_replaces(&update("a", None, 10), &stored("a", 10)));
        // Both for the head: the newer run wins.
        assert!(!section_replaces(
            &update("h", Some("h"), 5),
            &stored("h", 10)
        ));
    }

    #[tokio::test]
    async fn comments_are_keyed_case_insensitively_by_repo() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        assert_eq!(store.get_comment("acme/web", 7).await.unwrap(), None);
        let c = CommentRecord {
            comment_id: 42,
            body_hash: "h1".into(),
            sections_json: "{}".into(),
        };
        store.put_comment("Acme/Web", 7, &c).await.unwrap();
        assert_eq!(store.get_comment("acme/web", 7).await.unwrap(), Some(c));
        assert_eq!(store.get_comment("acme/web", 8).await.unwrap(), None);
        let c2 = CommentRecord {
            comment_id: 42,
            body_hash: "h2".into(),
            sections_json: r#"{"bAYZ4a":"x"}"#.into(),
        };
        store.put_comment("acme/web", 7, &c2).await.unwrap();
        assert_eq!(store.get_comment("ACME/WEB", 7).await.unwrap(), Some(c2));
    }
}
