//! A store on a new, empty database of either backend, and `both!`, which runs a test on
//! each: the harness of `tests/store.rs` and `tests/store_sql.rs`.
//!
//! The including test file declares `mod pg` (`support/postgres.rs`) beside this module,
//! with `#[macro_use]` on this one so that `both!` is in scope:
//!
//! ```ignore
//! #[path = "support/postgres.rs"]
//! mod pg;
//! #[macro_use]
//! #[path = "support/temp_store.rs"]
//! mod temp_store;
//! use temp_store::{Db, TempStore};
//! ```

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use runwarden::store::Store;

/// The backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A store on a new, empty database: a SQLite file in a temp dir, or a fresh PostgreSQL
/// database (`support/postgres.rs`).
pub struct TempStore {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    pub url: String,
    pub db: Db,
    pub store: Store,
}

impl TempStore {
    pub async fn new(db: Db) -> TempStore {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runwarden.db");
        let url = match db {
            Db::Sqlite => sqlite_url(&path),
            Db::Postgres => super::pg::fresh_database().await,
        };
        let store = Store::connect(&url).await.unwrap();
        TempStore {
            _dir: dir,
            path,
            url,
            db,
            store,
        }
    }

    /// The SQLite file (SQLite-only tests).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Another handle on the same database (another process, as far as the store can
    /// tell).
    pub async fn reopen(&self) -> Store {
        Store::connect(&self.url).await.unwrap()
    }
}

/// The store URL of a SQLite file.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// `both!(name, ...)`: for each `async fn name(db: Db)` of the including file, a module
/// `name` with the tests `sqlite` and `postgres`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name(super::Db::Sqlite).await
                }

                #[tokio::test]
                async fn postgres() {
                    super::$name(super::Db::Postgres).await
                }
            }
        )*
    };
}
