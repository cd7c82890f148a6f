//! Another connection holding a SQLite database's write lock, as another process would:
//! the store's writers wait (in SQLite's busy handler) until it is let go.

use sqlx::Connection as _;

/// Opens `url` (`sqlite://PATH`) and takes its write lock (`BEGIN IMMEDIATE`).
pub async fn hold_write_lock(url: &str) -> sqlx::SqliteConnection {
    let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// Lets the lock go (nothing was written under it).
pub async fn release(mut conn: sqlx::SqliteConnection) {
    sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
}
