//! Replicas starting together on one PostgreSQL database take turns on the migration
//! lock, however long a migration takes: the wait for that lock is not cut short by the
//! store's `lock_timeout` (which bounds every other lock wait).

use std::time::{Duration, Instant};

use runwarden::store::{Store, StoreOptions};
use sqlx::Connection as _;

#[path = "support/postgres.rs"]
mod pg;

/// CRC-32 (ISO-HDLC), as sqlx derives its migration lock's id from the database name.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in bytes {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn crc32_is_the_iso_hdlc_one() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}

#[tokio::test]
async fn a_replica_waits_for_a_migration_longer_than_its_lock_timeout() {
    let url = pg::fresh_database().await;
    // Another replica's migration, holding sqlx's migration lock.
    let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut holder)
        .await
        .unwrap();
    let lock_id = 0x3d32_ad9e_i64 * i64::from(crc32(db.as_bytes()));
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(lock_id)
        .execute(&mut holder)
        .await
        .unwrap();
    let options = StoreOptions {
        busy_timeout: Duration::from_millis(100),
        ..StoreOptions::default()
    };
    let opening = tokio::spawn({
        let url = url.clone();
        async move { Store::connect_with(&url, options).await }
    });
    // The opener waits on the lock for several times its lock_timeout.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waited: Option<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM (now() - a.state_change))::float8 \
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND NOT l.granted AND a.datname = $1",
        )
        .bind(&db)
        .fetch_optional(&mut holder)
        .await
        .unwrap();
        if waited.is_some_and(|s| s > 0.5) {
            break;
        }
        assert!(
            !opening.is_finished(),
            "the opener gave up: {:?}",
            opening.await.unwrap().err()
        );
        assert!(Instant::now() < deadline, "the opener never waited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!opening.is_finished(), "it still waits");
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(lock_id)
        .execute(&mut holder)
        .await
        .unwrap();
    let store = opening
        .await
        .unwrap()
        .expect("the store opens once the lock is free");
    store.ping().await.unwrap();
    let _ = holder.close().await;
}

/// Two processes opening a new SQLite file at the same moment (say `serve` and a cron
/// `sweep` after an upgrade) both find its migrations to apply: both open it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_opening_a_new_sqlite_store_together_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..20 {
        let url = format!(
            "sqlite://{}",
            dir.path().join(format!("{round}.db")).display()
        );
        let (a, b) = tokio::join!(
            runwarden::store::Store::connect(&url),
            runwarden::store::Store::connect(&url)
        );
        if let Err(e) = a.as_ref().and(b.as_ref()) {
            panic!("round {round}: {e:#}");
        }
    }
}
