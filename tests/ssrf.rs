//! SSRF and scope: the bot never requests a URL taken from a payload. URLs inside
//! webhooks point at a canary listener; it must never be contacted, and every request
//! the bot makes goes to the configured Currents and GitHub hosts (the simulator).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use serde_json::json;

#[tokio::test]
async fn urls_in_payloads_are_never_requested() {
    let canary = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let canary_url = format!("http://{}", canary.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((_sock, _)) = canary.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
        }
    });
    let rules = "[[rules]]\nname = \"sup\"\nkind = \"supersede\"\n\n[[rules]]\nname = \"orphans\"\nkind = \"orphan\"\ngrace = \"0s\"\n\n[[rules]]\nname = \"pr-summary\"\nkind = \"summary\"\n";
    let app = spawn_app(rules).await;
    let mut r = run("feat/s", "aaa", 5);
    r.remote_origin = Some(format!("{canary_url}/acme/web.git"));
    r.ci_build_id = Some("acme/web-9-1".into());
    let victim = app.sim.add_run(r).unwrap();

    // A Currents webhook whose runUrl points elsewhere is refused before any request.
    let r = app
        .http
        .post(app.url("/webhooks/currents"))
        .header("x-webhook-secret", CURRENTS_SECRET)
        .json(&json!({"event": "RUN_FINISH", "runUrl": format!("{canary_url}/run/{}", victim.run_id)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // GitHub payloads full of URLs: processed, the URLs ignored.
    let push = json!({"ref": "refs/heads/feat/s", "after": "bbb", "deleted": false,
        "repository": {"full_name": "acme/web", "url": canary_url, "hooks_url": canary_url, "html_url": canary_url},
        "head_commit": {"timestamp": chrono::Utc::now().to_rfc3339(), "url": canary_url},
        "compare": canary_url});
    assert_eq!(app.github_hook("push", "ssrf-1", &push).await.status(), 202);
    let wf = json!({"action": "completed", "repository": {"full_name": "acme/web", "url": canary_url},
        "workflow_run": {"id": 9, "run_attempt": 1, "head_branch": "feat/s", "head_sha": "aaa",
            "url": canary_url, "jobs_url": canary_url, "logs_url": canary_url, "updated_at": chrono::Utc::now().to_rfc3339()}});
    assert_eq!(
        app.github_hook("workflow_run", "ssrf-2", &wf)
            .await
            .status(),
        202
    );
    // A real run event too, so the summary path (repo from remoteOrigin) runs.
    assert_eq!(
        app.currents_hook("RUN_CANCELED", &victim.run_id)
            .await
            .status(),
        202
    );
    app.wait_audit("decisions carried out", 15, |a| {
        a.iter()
            .any(|e| e.action == "cancel" && e.outcome.as_str() == "done")
            && a.iter()
                .filter(|e| e.action == "summarize")
                .all(|e| e.outcome.as_str() != "planned")
    })
    .await;
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the canary was contacted");
    // Everything the simulator logged came from the bot's configured clients.
    assert!(
        app.sim
            .mutation_log()
            .iter()
            .all(|e| e.api == "currents" || e.api == "github")
    );
}
