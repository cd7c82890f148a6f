//! A realistic sample world for `runwarden simulate` and `runwarden demo`.

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::github_api::{NewPr, SimPr};
use super::ids;
use super::names;
use super::world::{GroupsSpec, NewProject, NewRun, SimError, World};

/// What [`seed_sample`] created, with the runs each rule kind should find.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    pub projects: Vec<String>,
    pub runs: usize,
    /// Older in-progress run on `feat/coupons` (project `bAYZ4a`), superseded by
    /// `superseding` (a newer commit on the same branch).
    pub superseded: String,
    pub superseding: String,
    /// In-progress run on `main` of `bAYZ4a`, created 3 h ago, idle for 100 min.
    pub stuck: String,
    /// In-progress run of `emdaGd` whose CI build id is `acme/api-14523678-1`
    /// (GitHub workflow run 14523678, attempt 1), as if its CI job had died.
    pub orphan: String,
    /// A run of `DgTfZV` that progresses by itself on every tick.
    pub live: String,
    /// Failed run of `bAYZ4a` on `fix/login-redirect` (PR #102), for summaries.
    pub failed_pr_run: String,
    pub prs: Vec<SimPr>,
}

fn sha(rng: &mut StdRng) -> String {
    ids::random_hex(rng, 40)
}

/// Fills `world` with three projects (`bAYZ4a` Playwright on `acme/web`, `emdaGd`
/// Cypress on `acme/api`, `DgTfZV` Playwright on `acme/mobile`), a month of history
/// plus a few runs older than 90 days, in-progress runs for each rule kind, and open PRs.
pub fn seed_sample(world: &World, now: DateTime<Utc>) -> Result<Sample, SimError> {
    let mut rng = StdRng::seed_from_u64(world.config().seed ^ 0x5eed);
    let projects = [
        ("bAYZ4a", "web", "acme/web", "pw"),
        ("emdaGd", "api", "acme/api", "cypress"),
        ("DgTfZV", "mobile", "acme/mobile", "pw"),
    ];
    for (id, name, repo, fw) in projects {
        if world.project(id).is_none() {
            world.add_project(NewProject {
                project_id: Some(id.into()),
                name: Some(name.into()),
                repo: Some(repo.into()),
                framework: Some(fw.into()),
                created_at: Some(now - Duration::days(400)),
                inactivity_timeout_seconds: Some(7200),
                default_branch_name: Some("main".into()),
                fail_fast: Some(false),
            })?;
        }
    }

    // History: ~30 days of finished runs, plus a handful older than 90 days.
    let mut history = Vec::new();
    for (pi, (id, _, repo, _)) in projects.iter().enumerate() {
        let mut hours_ago: Vec<i64> = (0..36).map(|i| 1 + i * 20 + rng.gen_range(0..15)).collect();
        hours_ago.extend([95 * 24, 120 * 24, 150 * 24, 200 * 24]);
        for (i, h) in hours_ago.into_iter().enumerate() {
            let created = now - Duration::hours(h) - Duration::minutes(rng.gen_range(0..59));
            let branch = if i % 3 == 0 {
                names::FEATURE_BRANCHES[(i + pi) % names::FEATURE_BRANCHES.len()].to_string()
            } else {
                "main".to_string()
            };
            let r: f64 = rng.r#gen();
            let state = if r < 0.72 {
                "passed"
            } else if r < 0.9 {
                "failed"
            } else if r < 0.96 {
                "canceled"
            } else {
                "timeout"
            };
            let (author, email) = names::AUTHORS[rng.gen_range(0..names::AUTHORS.len())];
            history.push(NewRun {
                project: Some(id.to_string()),
                branch: Some(branch),
                sha: Some(sha(&mut rng)),
                author: Some(author.into()),
                author_email: Some(email.into()),
                message: Some(names::MESSAGES[rng.gen_range(0..names::MESSAGES.len())].into()),
                remote_origin: Some(format!("https://github.com/{repo}")),
                created_at: Some(created),
                state: Some(state.into()),
                groups: Some(GroupsSpec::Count(if pi == 1 { 1 } else { 2 })),
                specs: Some(rng.gen_range(3..7)),
                duration_ms: Some(rng.gen_range(240_000..900_000)),
                tags: if i % 5 == 0 {
                    vec!["nightly".into()]
                } else {
                    vec![]
                },
                emit: Some(false),
                ..Default::default()
            });
        }
    }
    world.add_runs(history)?;

    let failed_sha = sha(&mut rng);
    let failed_pr_run = world.add_run(NewRun {
        project: Some("bAYZ4a".into()),
        branch: Some("fix/login-redirect".into()),
        sha: Some(failed_sha.clone()),
        author: Some("Grace Hopper".into()),
        message: Some("fix login redirect loop".into()),
        remote_origin: Some("https://github.com/acme/web".into()),
        created_at: Some(now - Duration::minutes(35)),
        state: Some("failed".into()),
        failed: Some(2),
        groups: Some(GroupsSpec::Count(2)),
        specs: Some(5),
        duration_ms: Some(11 * 60_000),
        emit: Some(false),
        ..Default::default()
    })?;

    // Supersede: two in-progress runs on feat/coupons, different commits.
    let old_sha = sha(&mut rng);
    let new_sha = sha(&mut rng);
    let superseded = world.add_run(NewRun {
        project: Some("bAYZ4a".into()),
        branch: Some("feat/coupons".into()),
        sha: Some(old_sha.clone()),
        author: Some("Ada Lovelace".into()),
        message: Some("feat: add coupon codes".into()),
        remote_origin: Some("https://github.com/acme/web".into()),
        created_at: Some(now - Duration::minutes(12)),
        groups: Some(GroupsSpec::Count(2)),
        specs: Some(6),
        completed: Some(4),
        last_progress_at: Some(now - Duration::minutes(2)),
        ..Default::default()
    })?;
    let superseding = world.add_run(NewRun {
        project: Some("bAYZ4a".into()),
        branch: Some("feat/coupons".into()),
        sha: Some(new_sha.clone()),
        author: Some("Ada Lovelace".into()),
        message: Some("feat: coupon codes, review fixes".into()),
        remote_origin: Some("https://github.com/acme/web".into()),
        created_at: Some(now - Duration::minutes(2)),
        groups: Some(GroupsSpec::Count(2)),
        specs: Some(6),
        completed: Some(1),
        last_progress_at: Some(now - Duration::seconds(30)),
        ..Default::default()
    })?;

    // Timeout: a run on main that stopped making progress.
    let stuck = world.add_run(NewRun {
        project: Some("bAYZ4a".into()),
        branch: Some("main".into()),
        sha: Some(sha(&mut rng)),
        author: Some("Linus Chen".into()),
        message: Some("perf: cache user permissions".into()),
        remote_origin: Some("https://github.com/acme/web".into()),
        created_at: Some(now - Duration::hours(3)),
        groups: Some(GroupsSpec::Count(2)),
        specs: Some(8),
        completed: Some(5),
        last_progress_at: Some(now - Duration::minutes(100)),
        ..Default::default()
    })?;

    // Orphan: the CI job of this run is gone.
    let orphan = world.add_run(NewRun {
        project: Some("emdaGd".into()),
        branch: Some("feat/invoices".into()),
        sha: Some(sha(&mut rng)),
        ci_build_id: Some("acme/api-14523678-1".into()),
        author: Some("Margaret Hamilton".into()),
        message: Some("feat: invoices endpoint".into()),
        remote_origin: Some("https://github.com/acme/api".into()),
        created_at: Some(now - Duration::minutes(25)),
        specs: Some(6),
        completed: Some(2),
        last_progress_at: Some(now - Duration::minutes(15)),
        ..Default::default()
    })?;

    // A run that keeps moving when the ticker runs.
    let live = world.add_run(NewRun {
        project: Some("DgTfZV".into()),
        branch: Some("main".into()),
        sha: Some(sha(&mut rng)),
        author: Some("Alan Kay".into()),
        message: Some("chore(deps): bump playwright to 1.52.0".into()),
        remote_origin: Some("https://github.com/acme/mobile".into()),
        created_at: Some(now - Duration::minutes(4)),
        groups: Some(GroupsSpec::Count(2)),
        specs: Some(5),
        completed: Some(1),
        last_progress_at: Some(now - Duration::minutes(1)),
        auto: true,
        ..Default::default()
    })?;

    let mut prs = Vec::new();
    prs.push(world.add_pr(NewPr {
        repo: "acme/web".into(),
        number: Some(101),
        head_ref: Some("feat/coupons".into()),
        head_sha: Some(old_sha),
        title: Some("feat: coupon codes".into()),
        author: Some("ada".into()),
        ..Default::default()
    })?);
    // The second commit is a push to the same PR.
    prs[0] = world.add_pr(NewPr {
        repo: "acme/web".into(),
        number: Some(101),
        head_sha: Some(new_sha),
        ..Default::default()
    })?;
    prs.push(world.add_pr(NewPr {
        repo: "acme/web".into(),
        number: Some(102),
        head_ref: Some("fix/login-redirect".into()),
        head_sha: Some(failed_sha),
        title: Some("Fix login redirect loop".into()),
        author: Some("grace".into()),
        ..Default::default()
    })?);
    prs.push(world.add_pr(NewPr {
        repo: "acme/api".into(),
        number: Some(7),
        head_ref: Some("feat/invoices".into()),
        head_sha: orphan.sha().map(str::to_string),
        title: Some("Invoices endpoint".into()),
        author: Some("margaret".into()),
        ..Default::default()
    })?);

    Ok(Sample {
        projects: projects.iter().map(|p| p.0.to_string()).collect(),
        runs: world.run_count(),
        superseded: superseded.run_id,
        superseding: superseding.run_id,
        stuck: stuck.run_id,
        orphan: orphan.run_id,
        live: live.run_id,
        failed_pr_run: failed_pr_run.run_id,
        prs,
    })
}
