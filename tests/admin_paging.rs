//! `GET /api/actions` pages: the body stays the JSON array `audit --format json` prints;
//! when more entries match than `limit`, a `Link: <...>; rel="next"` header (RFC 8288)
//! gives the URL of the next page (the same query, and `before`: a cursor). Following it
//! until there is none reads every entry once, newest first, even among entries decided
//! in the same millisecond and with entries recorded between pages.

mod common;

use chrono::{DateTime, Duration, DurationRound, Utc};
use common::*;
use runwarden::store::{NewDecision, Store};

/// A rule whose name needs percent-encoding in a URL (`&`, `/`, `?`, a space, non-ASCII).
const ODD_RULE: &str = "nightly & more/ä?";

fn rules() -> String {
    format!(
        "{SUPERSEDE}[[rules]]\nname = \"{ODD_RULE}\"\nkind = \"supersede\"\n[rules.match]\nbranches = [\"nightly\"]\n"
    )
}

const SUPERSEDE: &str = "[[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\n[rules.match]\nbranches = [\"*\", \"!main\"]\n";

/// A decision of `rule` about `run` (its own action key), made at `at`.
fn decision(rule: &str, run: &str, at: DateTime<Utc>, dry_run: bool) -> NewDecision {
    NewDecision {
        at,
        rule: rule.into(),
        kind: "supersede".into(),
        action: "cancel".into(),
        run_id: run.into(),
        project_id: PROJECT.into(),
        branch: Some("feat/x".into()),
        sha: Some("c0ffee".into()),
        reason: format!("{rule} cancels {run}"),
        dry_run,
        // Never due while the test runs: the executor leaves it alone.
        not_before: (!dry_run).then(|| Utc::now() + Duration::days(1)),
        action_key: format!("cancel:{run}"),
        payload: None,
        skip: None,
    }
}

/// What one `GET` of a page answered.
struct Page {
    status: u16,
    body: serde_json::Value,
    /// The `rel="next"` URL of the `Link` header, as sent (a path and query).
    next: Option<String>,
}

async fn get(app: &TestApp, path_and_query: &str) -> Page {
    let r = app
        .http
        .get(app.url(path_and_query))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let links: Vec<_> = r.headers().get_all("link").iter().collect();
    assert!(links.len() <= 1, "{links:?}");
    let next = links.first().map(|v| {
        let v = v.to_str().expect("a Link header in ASCII");
        let url = v
            .strip_prefix('<')
            .and_then(|v| v.strip_suffix(">; rel=\"next\""))
            .unwrap_or_else(|| panic!("not a rel=\"next\" link: {v}"));
        assert!(url.starts_with("/api/actions?"), "{url}");
        // Percent-encoded: nothing that would need it in a URL, nor `>` ending it early.
        assert!(
            url.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/?=&%+-_.~".contains(&b)),
            "{url}"
        );
        url.to_string()
    });
    let body = r.json().await.unwrap();
    Page { status, body, next }
}

/// Every page from `first` on, following `rel="next"`: each page's entries (their
/// `run_id`, unique per entry here). Checks each page is a JSON array of at most
/// `limit` entries, every page but the last has a `Link` and the last has none. Runs
/// `between` after the first page.
async fn walk(
    app: &TestApp,
    first: &str,
    limit: usize,
    between: impl AsyncFnOnce(),
) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut url = Some(first.to_string());
    let mut between = Some(between);
    while let Some(u) = url {
        let page = get(app, &u).await;
        assert_eq!(page.status, 200, "{u}: {}", page.body);
        let entries = page.body.as_array().expect("the body is a JSON array");
        assert!(entries.len() <= limit, "{u}: {} entries", entries.len());
        if page.next.is_some() {
            assert_eq!(entries.len(), limit, "{u}: a page before the last is full");
        }
        pages.push(
            entries
                .iter()
                .map(|e| e["run_id"].as_str().unwrap().to_string())
                .collect(),
        );
        url = page.next;
        if let Some(f) = between.take() {
            f().await;
        }
        assert!(pages.len() <= 100, "no end to the pages");
    }
    pages
}

/// The runs of `decisions` (recorded in this order) as the audit orders them: newest
/// decision first, and among those decided in the same millisecond the one recorded last.
fn newest_first(decisions: &[NewDecision]) -> Vec<String> {
    let mut order: Vec<_> = decisions.iter().enumerate().collect();
    order.sort_by_key(|(i, d)| std::cmp::Reverse((d.at, *i)));
    order.into_iter().map(|(_, d)| d.run_id.clone()).collect()
}

async fn record(store: &Store, decisions: &[NewDecision]) {
    // One at a time: each decision's id follows the order above.
    for d in decisions {
        store
            .record_decisions(std::slice::from_ref(d))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn the_pages_of_api_actions_follow_link_next_and_show_each_entry_once() {
    let app = spawn_app(&rules()).await;
    let store = &app.bot.ctx.store;
    let now = Utc::now().duration_trunc(Duration::seconds(1)).unwrap();
    let recent = now - Duration::minutes(10);
    let old = now - Duration::days(3);
    // Recent dry-run decisions, several in the same millisecond, recorded out of time
    // order; and three live ones decided three days ago (two in the same millisecond),
    // whose actions fail now: changed since, so `since=1h` shows them too.
    let ms = Duration::milliseconds;
    let mut decisions = Vec::new();
    for (i, offset) in [0, 0, 0, 5, 5, 2, 9, 9, 1].into_iter().enumerate() {
        let rule = if i % 3 == 0 {
            ODD_RULE
        } else {
            "cancel-superseded"
        };
        decisions.push(decision(
            rule,
            &format!("run-{i}"),
            recent + ms(offset),
            true,
        ));
    }
    let live = [
        decision("cancel-superseded", "run-old-0", old, false),
        decision(ODD_RULE, "run-old-1", old, false),
        decision("cancel-superseded", "run-old-2", old - ms(1), false),
    ];
    decisions.extend(live.iter().cloned());
    record(store, &decisions).await;
    // Changed after they were created, even within one millisecond.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    for d in &live {
        let action = store.action_by_key(&d.action_key).await.unwrap().unwrap();
        assert!(store.fail_action(action.id, "HTTP 500").await.unwrap());
    }
    let all = newest_first(&decisions);
    assert_eq!(all.len(), 12);

    // Four at a time; an entry recorded after the first page is newer than all of them,
    // on none of the later pages.
    let pages = walk(&app, "/api/actions?limit=4", 4, async || {
        record(
            store,
            &[decision("cancel-superseded", "run-new", now, true)],
        )
        .await;
    })
    .await;
    assert_eq!(pages.len(), 3, "{pages:?}");
    assert_eq!(pages.concat(), all);
    let with_new: Vec<_> = std::iter::once("run-new".to_string())
        .chain(all.iter().cloned())
        .collect();

    // One at a time, and five: every entry once, in order (several pages end inside a
    // group of entries of one millisecond).
    for limit in [1, 5] {
        let pages = walk(
            &app,
            &format!("/api/actions?limit={limit}"),
            limit,
            async || {},
        )
        .await;
        assert_eq!(pages.len(), with_new.len().div_ceil(limit), "{pages:?}");
        assert_eq!(pages.concat(), with_new, "limit {limit}");
    }

    // `since` (here with a space: percent-encoded in the link) keeps the older entries
    // whose action changed since then: the same entries, the last pages from those
    // (two of them decided in the same millisecond).
    for limit in [1, 2] {
        let first = format!("/api/actions?since=1h%2030m&limit={limit}");
        let pages = walk(&app, &first, limit, async || {}).await;
        assert_eq!(pages.len(), with_new.len().div_ceil(limit), "{pages:?}");
        assert_eq!(pages.concat(), with_new, "limit {limit}");
    }
    let page = get(&app, "/api/actions?since=1h%2030m&limit=2").await;
    let next = page.next.unwrap();
    assert!(next.contains("since=1h+30m&"), "{next}");

    // Of one rule whose name must be percent-encoded: the link keeps it.
    let odd: Vec<_> = with_new
        .iter()
        .filter(|run| {
            decisions
                .iter()
                .any(|d| &d.run_id == *run && d.rule == ODD_RULE)
        })
        .cloned()
        .collect();
    assert_eq!(odd.len(), 4);
    let first = format!(
        "/api/actions?rule={}&limit=3",
        url::form_urlencoded::byte_serialize(ODD_RULE.as_bytes()).collect::<String>()
    );
    let pages = walk(&app, &first, 3, async || {}).await;
    assert_eq!(pages.len(), 2, "{pages:?}");
    assert_eq!(pages.concat(), odd);
    let page = get(&app, &first).await;
    let next = page.next.unwrap();
    assert!(
        next.starts_with("/api/actions?rule=nightly+%26+more%2F%C3%A4%3F&limit=3&before="),
        "{next}"
    );

    // A limit that covers everything: no link, also when it is exactly the total.
    for limit in [13, 14, 500] {
        let page = get(&app, &format!("/api/actions?limit={limit}")).await;
        let runs: Vec<_> = page
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["run_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(runs, with_new, "limit {limit}");
        assert_eq!(page.next, None, "limit {limit}");
    }
    let page = get(&app, "/api/actions").await;
    assert_eq!(page.body.as_array().unwrap().len(), 13);
    assert_eq!(page.next, None);
    // A cursor past the oldest entry: an empty page, no link.
    let page = get(&app, "/api/actions?before=0_1").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.body, serde_json::json!([]));
    assert_eq!(page.next, None);
}

#[tokio::test]
async fn a_before_that_is_not_a_cursor_is_a_bad_request() {
    let app = spawn_app(SUPERSEDE).await;
    for before in [
        "x",
        "12",
        "12_",
        "_3",
        "1_2_3",
        "1.5_2",
        "",
        "9999999999999999999_1",
    ] {
        let page = get(&app, &format!("/api/actions?before={before}")).await;
        assert_eq!(page.status, 400, "{before:?}: {}", page.body);
        let message = page.body["error"].as_str().unwrap_or_default();
        assert!(message.starts_with("before: "), "{before:?}: {}", page.body);
        assert_eq!(page.next, None);
    }
}
