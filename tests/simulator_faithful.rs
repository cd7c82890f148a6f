//! The simulator's Currents API against the reference (`shared/reference/runs-api.txt`,
//! `currents-notes.md`): shapes and semantics a client can tell apart from the real API.

use std::time::Duration;

use runwarden::simulator::{self, NewProject, NewRun, SimConfig, SimHandle};
use serde_json::Value;
use tokio::net::TcpListener;

const KEY: &str = "sim-key";

async fn sim() -> SimHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    simulator::spawn(listener, SimConfig::default())
        .await
        .expect("spawn simulator")
}

/// GET `{base}{path}` with the API key: status and JSON body.
async fn get(s: &SimHandle, path: &str) -> (u16, Value) {
    let r = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
        .get(format!("{}{}", s.base_url, path))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json body"))
}

/// A project with two in-progress runs (Playwright and Cypress), 2 of 4 specs reported.
async fn two_running_runs() -> (SimHandle, Vec<String>) {
    let s = sim().await;
    s.add_project(NewProject {
        project_id: Some("bAYZ4a".into()),
        repo: Some("acme/web".into()),
        ..Default::default()
    })
    .unwrap();
    let mut ids = Vec::new();
    for framework in ["pw", "cypress"] {
        let run = s
            .add_run(NewRun {
                project: Some("bAYZ4a".into()),
                framework: Some(framework.into()),
                state: Some("running".into()),
                specs: Some(4),
                completed: Some(2),
                emit: Some(false),
                ..Default::default()
            })
            .unwrap();
        ids.push(run.run_id);
    }
    (s, ids)
}

/// `currents-notes.md` §1.4 (line 198): a list item is "the run without `specs`, plus
/// `cursor` and `durationMs`" (nullable in the OpenAPI copy's `RunFeedItem`): the key is
/// there on a run still in progress too, as `null`; and on the full run.
#[tokio::test]
async fn in_progress_runs_carry_a_null_duration() {
    let (s, ids) = two_running_runs().await;
    let (st, page) = get(&s, "/v1/projects/bAYZ4a/runs").await;
    assert_eq!(st, 200);
    let items = page["data"].as_array().expect("data");
    assert_eq!(items.len(), 2);
    for item in items {
        assert_eq!(item["completionState"], "IN_PROGRESS");
        let obj = item.as_object().unwrap();
        assert_eq!(
            obj.get("durationMs"),
            Some(&Value::Null),
            "feed item: {item}"
        );
        assert!(obj.contains_key("cursor"), "feed item: {item}");
        assert!(!obj.contains_key("specs"), "feed item: {item}");
    }
    for id in &ids {
        let (st, body) = get(&s, &format!("/v1/runs/{id}")).await;
        assert_eq!(st, 200);
        let run = body["data"].as_object().unwrap();
        assert_eq!(run.get("durationMs"), Some(&Value::Null), "run: {body}");
    }
    s.shutdown().await;
}

/// `runs-api.txt` (Get Run, `specs[].results`: `videoUrl`, `stats`, `screenshots`,
/// `flaky`) and `currents-notes.md` §1.4 (line 166, the Playwright run:
/// `"results": {"flaky":0,"videoUrl":null,"screenshots":[], ...}`): a reported spec's
/// results carry `videoUrl` and `screenshots` even without any, for both frameworks.
#[tokio::test]
async fn spec_results_carry_video_url_and_screenshots() {
    let (s, ids) = two_running_runs().await;
    for id in &ids {
        let (st, body) = get(&s, &format!("/v1/runs/{id}")).await;
        assert_eq!(st, 200);
        let run = &body["data"];
        let specs = run["specs"].as_array().expect("specs");
        let done: Vec<&Value> = specs.iter().filter(|s| !s["results"].is_null()).collect();
        assert_eq!(done.len(), 2, "two specs have reported: {run}");
        for spec in done {
            let results = spec["results"].as_object().unwrap();
            assert_eq!(results.get("videoUrl"), Some(&Value::Null), "{spec}");
            assert_eq!(
                results.get("screenshots"),
                Some(&Value::Array(Vec::new())),
                "{spec}"
            );
        }
    }
    s.shutdown().await;
}

/// GitHub's `GET /repos/{o}/{r}/commits/{sha}/pulls` "lists the merged pull request that
/// introduced the commit to the repository. If the commit is not present in the default
/// branch, will only return open pull requests." The simulator listed every PR that had
/// the commit, in any state, so a client could count on closed PRs real GitHub does not
/// give: now an open PR is listed, and a closed one only when merged into the default
/// branch with a merge commit (not squashed or rebased, not closed unmerged, not merged
/// into another branch).
#[tokio::test]
async fn the_pulls_of_a_commit_are_the_open_ones_and_the_one_merged_with_it() {
    use runwarden::simulator::NewPr;
    let s = sim().await;
    // number, state, merged, merge method, base, listed
    type Case = (
        u64,
        Option<&'static str>,
        Option<bool>,
        Option<&'static str>,
        Option<&'static str>,
        bool,
    );
    let cases: [Case; 6] = [
        (1, None, None, None, None, true),
        (2, None, Some(true), None, None, true),
        (3, None, Some(true), Some("squash"), None, false),
        (4, None, Some(true), Some("rebase"), None, false),
        (5, Some("closed"), None, None, None, false),
        (
            6,
            None,
            Some(true),
            Some("merge"),
            Some("release/1.x"),
            false,
        ),
    ];
    for (i, (number, state, merged, method, base, _)) in cases.iter().enumerate() {
        let sha = format!("{:x}", 0xabc0 + i).repeat(10);
        s.add_pr(NewPr {
            repo: "acme/web".into(),
            number: Some(*number),
            head_ref: Some(format!("feat/{number}")),
            head_sha: Some(sha),
            state: state.map(str::to_string),
            merged: *merged,
            merge_method: method.map(str::to_string),
            base_ref: base.map(str::to_string),
            ..Default::default()
        })
        .unwrap();
    }
    for (i, (number, .., listed)) in cases.iter().enumerate() {
        let sha = format!("{:x}", 0xabc0 + i).repeat(10);
        let r = reqwest::Client::new()
            .get(format!(
                "{}/repos/acme/web/commits/{sha}/pulls",
                s.github_url()
            ))
            .header("authorization", "token ghp_test")
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200, "PR {number}");
        let prs: Value = r.json().await.expect("json body");
        let numbers: Vec<u64> = prs
            .as_array()
            .expect("an array")
            .iter()
            .filter_map(|p| p["number"].as_u64())
            .collect();
        let expected: Vec<u64> = if *listed { vec![*number] } else { vec![] };
        assert_eq!(numbers, expected, "PR {number}");
    }
    // A merge method the simulator does not know is refused.
    let bad = s.add_pr(NewPr {
        repo: "acme/web".into(),
        number: Some(9),
        head_ref: Some("feat/9".into()),
        merged: Some(true),
        merge_method: Some("octopus".into()),
        ..Default::default()
    });
    assert!(bad.is_err(), "{bad:?}");
}
