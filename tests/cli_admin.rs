//! The operator's commands around the bot, as child processes against an in-process
//! simulator: `webhooks install` on a project other deployments of the bot share,
//! `audit` on a store it must only read, and `serve`'s shutdown while another process
//! holds the store's write lock.

#[path = "support/child.rs"]
mod child;

use std::time::{Duration, Instant};

use child::*;
use runwarden::commands::webhooks::{self, Change};
use runwarden::currents::{CurrentsClient, RUN_EVENTS, Webhook, WebhookSpec};
use runwarden::store::Store;
use sqlx::Connection as _;

const SUPERSEDE: &str = "[[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\n";

const PROD: &str = "https://bot.example.com/webhooks/currents";
const STAGING: &str = "https://staging.example.com/webhooks/currents";

/// Production's webhook on the shared project: labelled `runwarden`, its own secret.
fn production_hook(w: &World) -> Webhook {
    let hook = w
        .sim
        .create_webhook(
            PROJECT,
            WebhookSpec {
                url: Some(PROD.into()),
                headers: Some(serde_json::json!({"x-webhook-secret": "prod-secret"}).to_string()),
                hook_events: Some(RUN_EVENTS.iter().map(|e| e.to_string()).collect()),
                label: Some(webhooks::LABEL.into()),
            },
        )
        .unwrap();
    w.sim.clear_log();
    hook
}

fn secret_of(hook: &Webhook) -> String {
    let headers: serde_json::Value =
        serde_json::from_str(hook.headers.as_deref().unwrap_or("{}")).unwrap();
    headers["x-webhook-secret"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn hook(w: &World, id: &str) -> Webhook {
    w.sim
        .list_webhooks(PROJECT)
        .unwrap()
        .into_iter()
        .find(|h| h.hook_id == id)
        .unwrap_or_else(|| panic!("webhook {id} is gone"))
}

/// A staging bot installing its URL on a project production's bot shares gets a webhook
/// of its own; production's, labelled `runwarden` too, is left exactly as it was and
/// named on stderr. `--dry-run` says the same and sends nothing; a second install changes
/// nothing.
#[tokio::test(flavor = "multi_thread")]
async fn webhooks_install_leaves_another_deployments_webhook_alone() {
    let w = World::sqlite(SUPERSEDE, Env::default()).await;
    let prod = production_hook(&w);

    let (status, out, err) = w
        .run(&["webhooks", "install", "--url", STAGING, "--dry-run"])
        .await;
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("would be created"), "{out}");
    assert!(
        err.contains("another runwarden webhook")
            && err.contains(PROD)
            && err.contains("not changed"),
        "{err}"
    );
    assert!(
        w.sim.mutation_log().is_empty(),
        "{:?}",
        w.sim.mutation_log()
    );

    let (status, out, err) = w.run(&["webhooks", "install", "--url", STAGING]).await;
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("created") && out.contains(STAGING), "{out}");
    assert!(err.contains(PROD) && err.contains("not changed"), "{err}");
    let hooks = w.sim.list_webhooks(PROJECT).unwrap();
    assert_eq!(hooks.len(), 2, "{hooks:?}");
    assert!(
        hook(&w, &prod.hook_id) == prod,
        "production's webhook was changed"
    );
    let staging = hooks.iter().find(|h| h.url == STAGING).unwrap();
    assert_eq!(secret_of(staging), Env::default().currents_webhook_secret);
    assert_eq!(staging.label.as_deref(), Some(webhooks::LABEL));

    w.sim.clear_log();
    let (status, out, err) = w.run(&["webhooks", "install", "--url", STAGING]).await;
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("already up to date"), "{out}");
    assert!(err.contains(PROD), "{err}");
    assert!(
        w.sim.mutation_log().is_empty(),
        "{:?}",
        w.sim.mutation_log()
    );
    assert_eq!(w.sim.list_webhooks(PROJECT).unwrap().len(), 2);
    assert!(hook(&w, &prod.hook_id) == prod);
    // No secret reaches the output.
    assert!(!format!("{out}{err}").contains("prod-secret"));
}

/// The webhook at the URL installed is the one updated (a rotated secret, missing
/// events), in place; the other deployment's stays as it was.
#[tokio::test(flavor = "multi_thread")]
async fn webhooks_install_updates_the_webhook_at_its_url_in_place() {
    let w = World::sqlite(SUPERSEDE, Env::default()).await;
    let prod = production_hook(&w);
    let old = w
        .sim
        .create_webhook(
            PROJECT,
            WebhookSpec {
                url: Some(STAGING.into()),
                headers: Some(serde_json::json!({"x-webhook-secret": "old-secret"}).to_string()),
                hook_events: Some(vec!["RUN_FINISH".into()]),
                label: Some(webhooks::LABEL.into()),
            },
        )
        .unwrap();
    w.sim.clear_log();
    let (status, out, err) = w.run(&["webhooks", "install", "--url", STAGING]).await;
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains(&format!("webhook {} updated", old.hook_id)),
        "{out}"
    );
    assert_eq!(w.sim.list_webhooks(PROJECT).unwrap().len(), 2);
    let now = hook(&w, &old.hook_id);
    assert_eq!(now.url, STAGING);
    assert_eq!(secret_of(&now), Env::default().currents_webhook_secret);
    assert_eq!(now.hook_events.len(), RUN_EVENTS.len());
    assert!(
        hook(&w, &prod.hook_id) == prod,
        "production's webhook was changed"
    );
}

/// `--replace` (what `webhooks::install_one_with` takes as `replace`) points another
/// runwarden webhook at the URL when none points there yet, in a dry run only says so;
/// once a webhook points at the URL, the others are left alone even so.
#[tokio::test(flavor = "multi_thread")]
async fn replace_points_the_other_runwarden_webhook_at_the_url() {
    let w = World::sqlite(SUPERSEDE, Env::default()).await;
    let prod = production_hook(&w);
    let client = CurrentsClient::new(runwarden::currents::client::ClientOptions {
        base_url: url::Url::parse(&w.sim.currents_url()).unwrap(),
        api_key: runwarden::secret::Secret::new(w.env.currents_api_key.clone()),
        max_requests_per_second: 0,
        ..Default::default()
    })
    .unwrap();
    let install = |dry_run: bool, replace: bool| {
        webhooks::install_one_with(
            &client,
            PROJECT,
            STAGING,
            "x-webhook-secret",
            "staging-secret",
            dry_run,
            replace,
        )
    };
    let planned = install(true, true).await.unwrap();
    assert_eq!(
        planned.change,
        Change::Replaced {
            hook_id: prod.hook_id.clone(),
            previous_url: PROD.into()
        }
    );
    assert!(planned.others.is_empty());
    assert!(
        w.sim.mutation_log().is_empty(),
        "{:?}",
        w.sim.mutation_log()
    );
    assert!(hook(&w, &prod.hook_id) == prod);

    let done = install(false, true).await.unwrap();
    assert_eq!(done.change, planned.change);
    let hooks = w.sim.list_webhooks(PROJECT).unwrap();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0].hook_id, prod.hook_id);
    assert_eq!(hooks[0].url, STAGING);
    assert_eq!(secret_of(&hooks[0]), "staging-secret");

    // Production installs its URL again (a webhook of its own: nothing points there);
    // staging's `--replace` then leaves it alone, its own being in place.
    let client_prod = &client;
    let again = webhooks::install_one_with(
        client_prod,
        PROJECT,
        PROD,
        "x-webhook-secret",
        "prod-secret",
        false,
        false,
    )
    .await
    .unwrap();
    assert!(matches!(again.change, Change::Created(_)), "{again:?}");
    assert_eq!(again.others, [(prod.hook_id.clone(), STAGING.to_string())]);
    w.sim.clear_log();
    let kept = install(false, true).await.unwrap();
    assert_eq!(kept.change, Change::Unchanged(prod.hook_id.clone()));
    assert_eq!(kept.others.len(), 1);
    assert_eq!(kept.others[0].1, PROD);
    assert!(
        w.sim.mutation_log().is_empty(),
        "{:?}",
        w.sim.mutation_log()
    );
}

/// The tables of a SQLite file, sorted.
async fn sqlite_tables(path: &std::path::Path) -> Vec<String> {
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", path.display()))
        .await
        .unwrap();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let _ = conn.close().await;
    tables
}

/// `[store] url` naming another application's database: `audit` refuses it with a clear
/// error and adds none of runwarden's tables to it.
#[tokio::test(flavor = "multi_thread")]
async fn audit_refuses_a_database_without_runwardens_schema_and_leaves_it_alone() {
    let w = World::sqlite(SUPERSEDE, Env::default()).await;
    let mut other =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", w.db.display()))
            .await
            .unwrap();
    sqlx::raw_sql("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        .execute(&mut other)
        .await
        .unwrap();
    other.close().await.unwrap();

    let (status, out, err) = w.run(&["audit"]).await;
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("does not hold runwarden's schema") && err.contains("customers"),
        "{err}"
    );
    assert!(!out.contains("no recorded decisions"), "{out}");
    assert_eq!(sqlite_tables(&w.db).await, ["customers"]);
}

/// An empty database file (nothing recorded there) is reported as such, and stays empty:
/// `audit` creates no table.
#[tokio::test(flavor = "multi_thread")]
async fn audit_of_an_empty_database_says_nothing_recorded_and_creates_no_table() {
    let w = World::sqlite(SUPERSEDE, Env::default()).await;
    std::fs::write(&w.db, b"").unwrap();
    let (status, out, err) = w.run(&["audit"]).await;
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("nothing recorded yet"), "{out}");
    let (status, out, err) = w.run(&["audit", "--format", "json"]).await;
    assert!(status.success(), "{out}{err}");
    assert_eq!(out.trim(), "[]");
    assert!(err.contains("nothing recorded yet"), "{err}");
    assert_eq!(
        std::fs::metadata(&w.db).unwrap().len(),
        0,
        "audit wrote to it"
    );
    assert!(sqlite_tables(&w.db).await.is_empty());
}

/// A store migrated by a newer runwarden (a migration this binary does not know): `audit`
/// refuses it, saying so, and migrates nothing. A store of this version is read as usual
/// (`no recorded decisions` when it is empty), without a write.
#[tokio::test(flavor = "multi_thread")]
async fn audit_refuses_a_newer_schema_and_reads_its_own_without_writing() {
    let w = World::sqlite(SUPERSEDE, Env::default()).await;
    // A store of this version with one decision in it.
    let store = Store::connect(&w.store_url()).await.unwrap();
    store
        .record_decisions(&[runwarden::store::NewDecision {
            at: chrono::Utc::now(),
            rule: "cancel-superseded".into(),
            kind: "supersede".into(),
            action: "cancel".into(),
            run_id: "r-old".into(),
            project_id: PROJECT.into(),
            branch: Some("feat/ro".into()),
            sha: Some("a1".into()),
            reason: "superseded by r-new".into(),
            dry_run: false,
            not_before: None,
            action_key: "cancel:r-old".into(),
            payload: None,
            skip: None,
        }])
        .await
        .unwrap();
    store.close().await;
    drop(store);
    // SQLite folds the log back into the database and deletes it when the last
    // connection closes (which sqlx finishes on a thread of its own).
    let wal = format!("{}-wal", w.db.display());
    eventually("the store's connections to close", 10, || async {
        (!std::path::Path::new(&wal).exists()).then_some(())
    })
    .await;
    // The database and its log (a reader may create an empty log beside a WAL database
    // whose log is gone: SQLite's own, not a write).
    let files = |w: &World| {
        ["", "-wal"]
            .map(|suffix| std::fs::read(format!("{}{suffix}", w.db.display())).unwrap_or_default())
    };
    let before = files(&w);
    let (status, out, err) = w.run(&["audit", "--format", "json"]).await;
    assert!(status.success(), "{out}{err}");
    let entries: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(entries[0]["rule"], "cancel-superseded", "{entries:#}");
    assert!(files(&w) == before, "audit wrote to the store");

    let mut conn = sqlx::SqliteConnection::connect(&w.store_url())
        .await
        .unwrap();
    sqlx::raw_sql(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99991231000000, 'from the future', 1, x'00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let versions = || async {
        let mut conn = sqlx::SqliteConnection::connect(&w.store_url())
            .await
            .unwrap();
        let v: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY 1")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        v
    };
    conn.close().await.unwrap();
    let before = (versions().await, files(&w)[0].clone());
    let (status, out, err) = w.run(&["audit", "--format", "json"]).await;
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("newer runwarden") && err.contains("99991231000000"),
        "{err}"
    );
    assert!(out.trim().is_empty(), "{out}");
    assert!(
        (versions().await, files(&w)[0].clone()) == before,
        "audit migrated the store"
    );

    // A store one migration behind this binary (right after an upgrade, its older
    // replicas still running): read as it is, with a warning, and not migrated.
    let mut conn = sqlx::SqliteConnection::connect(&w.store_url())
        .await
        .unwrap();
    let newest: i64 = sqlx::query_scalar(
        "SELECT max(version) FROM _sqlx_migrations WHERE version < 99991231000000",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    sqlx::raw_sql(&format!(
        "DELETE FROM _sqlx_migrations WHERE version IN (99991231000000, {newest})"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let before = versions().await;
    let (status, out, err) = w.run(&["audit", "--format", "json"]).await;
    assert!(status.success(), "{out}{err}");
    assert!(err.contains("older than runwarden"), "{err}");
    let entries: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(entries[0]["rule"], "cancel-superseded", "{entries:#}");
    assert_eq!(versions().await, before, "audit migrated the store");
}

/// The read-only store on SQLite and PostgreSQL: nothing there yet is `None`, a store of
/// this version opens and reads, any write through it fails, and a foreign or newer
/// schema is refused, without migrating anything.
#[tokio::test(flavor = "multi_thread")]
async fn the_read_only_store_reads_and_never_writes_on_either_backend() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = |name: &str| format!("sqlite://{}", dir.path().join(name).display());
    std::fs::write(dir.path().join("empty.db"), b"").unwrap();
    let empty = [sqlite("empty.db"), child::postgres::fresh_database().await];
    for url in &empty {
        assert!(
            Store::connect_read_only(url).await.unwrap().is_none(),
            "{url}"
        );
    }
    let (lite, pg) = (sqlite("rw.db"), child::postgres::fresh_database().await);
    for url in [&lite, &pg] {
        Store::connect(url).await.unwrap().close().await;
        let store = Store::connect_read_only(url)
            .await
            .unwrap()
            .expect("a store of this version");
        assert!(store.audit(None, None, 10).await.unwrap().is_empty());
        let write = store
            .try_acquire_lease("probe", "me", Duration::from_secs(5), chrono::Utc::now())
            .await;
        assert!(write.is_err(), "{url}: a write went through: {write:?}");
        store.close().await;
    }
    // A newer schema, on PostgreSQL.
    let mut conn = sqlx::PgConnection::connect(&pg).await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99991231000000, 'from the future', true, '\\x00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let err = Store::connect_read_only(&pg).await.unwrap_err();
    assert!(format!("{err:#}").contains("newer runwarden"), "{err:#}");
    // Another application's database, on PostgreSQL: refused, left as it was.
    let foreign = child::postgres::fresh_database().await;
    let mut other = sqlx::PgConnection::connect(&foreign).await.unwrap();
    sqlx::raw_sql("CREATE TABLE customers (id BIGINT PRIMARY KEY)")
        .execute(&mut other)
        .await
        .unwrap();
    let err = Store::connect_read_only(&foreign).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("does not hold runwarden's schema") && text.contains("customers"),
        "{text}"
    );
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_catalog.pg_tables WHERE schemaname = current_schema()",
    )
    .fetch_all(&mut other)
    .await
    .unwrap();
    assert_eq!(tables, ["customers"]);
    let _ = other.close().await;
    let _ = conn.close().await;
}

/// SIGTERM while another process holds the SQLite store's write lock: the leases this
/// process would give back cannot be written, and the shutdown does not wait for them
/// past its short deadline (before, three writes each waited out the 5 s busy timeout:
/// 20 s, past Docker's 10 s stop timeout). What was not given back is logged; it
/// expires on its own.
#[tokio::test(flavor = "multi_thread")]
async fn a_shutdown_with_the_store_locked_elsewhere_ends_within_the_stop_timeout() {
    let w = World::sqlite(SUPERSEDE, Env::default()).await;
    let bot = w.serve().await;
    let store = w.store().await;
    let holder = eventually("the processor lease", 20, || async {
        store
            .lease_holder(runwarden::commands::serve::PROCESSOR_LEASE)
            .await
            .unwrap()
    })
    .await;
    store.close().await;
    drop(store);

    let mut locker = sqlx::SqliteConnection::connect(&w.store_url())
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .unwrap();
    let began = Instant::now();
    let (status, logs) = bot.terminate(Duration::from_secs(60)).await;
    let took = began.elapsed();
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut locker)
        .await
        .unwrap();
    locker.close().await.unwrap();

    assert!(status.success(), "graceful exit 0, got {status}: {logs:#?}");
    assert!(
        took < Duration::from_secs(9),
        "exited {took:?} after SIGTERM: {logs:#?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.contains("WARN") && l.contains("not given back")),
        "what was not given back is logged: {logs:#?}"
    );
    // Still there, to expire on its own.
    let store = w.store().await;
    assert_eq!(
        store
            .lease_holder(runwarden::commands::serve::PROCESSOR_LEASE)
            .await
            .unwrap()
            .map(|(h, _)| h),
        Some(holder.0)
    );
}

/// Finding: an admin token that is not ASCII (`RUNWARDEN_ADMIN_TOKEN=pässwort`) could
/// never authenticate: the header was read as visible ASCII only, so every request was
/// a 401. The header's bytes are compared as sent: the right token is a 200, another
/// (ASCII look-alike, one byte more or less) still a 401.
#[tokio::test(flavor = "multi_thread")]
async fn an_admin_token_that_is_not_ascii_authenticates() {
    let token = "pässwort";
    let w = World::new(
        SUPERSEDE,
        Env {
            admin_token: token.into(),
            ..Env::default()
        },
    )
    .await;
    let bot = w.serve().await;
    let rules_with = |value: &str| {
        let value = reqwest::header::HeaderValue::from_bytes(value.as_bytes()).unwrap();
        w.http
            .get(bot.url("/api/rules"))
            .header(reqwest::header::AUTHORIZATION, value)
            .send()
    };
    let r = rules_with(&format!("Bearer {token}")).await.unwrap();
    assert_eq!(r.status(), 200);
    let rules: serde_json::Value = r.json().await.unwrap();
    assert_eq!(rules[0]["name"], "cancel-superseded", "{rules}");
    for wrong in ["passwort", "päss", "pässwort!", "PÄSSWORT", "pässwörter"] {
        let r = rules_with(&format!("Bearer {wrong}")).await.unwrap();
        assert_eq!(r.status(), 401, "{wrong}");
    }
    bot.kill().await;
}
