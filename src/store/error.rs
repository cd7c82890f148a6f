//! Store errors, classified so that callers can tell "try again later" from bugs.

use std::sync::Arc;

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// What went wrong in the store.
///
/// [`StoreError::is_unavailable`] tells the errors worth another try (the executor writes
/// an action's outcome again on those only) from the others: a bad query, a constraint,
/// a damaged database file (`SQLITE_CORRUPT`) or a file that is no database
/// (`SQLITE_NOTADB`), which no retry mends.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot take the operation now: locked beyond the busy timeout,
    /// read-only, disk full, an I/O error, a connection lost or the pool exhausted.
    /// Not a damaged file: that is [`StoreError::Database`].
    #[error("store unavailable: {0}")]
    Unavailable(#[source] Arc<sqlx::Error>),
    /// The row the operation addresses does not exist.
    #[error("{what} {id} not found in the store")]
    NotFound {
        /// Kind of row: "delivery", "action", ...
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The caller passed a value the store does not accept (an unknown delivery source
    /// or action).
    #[error("invalid input to the store: {0}")]
    Invalid(String),
    /// A row holds a value this build does not understand (an unknown state, a timestamp
    /// out of range).
    #[error("corrupt store data: {0}")]
    Corrupt(String),
    /// The schema migrations could not be applied.
    #[error("cannot migrate the store: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Any other database error (a constraint violation, a bad query, a damaged database
    /// file or one that is not a database): retrying does not help.
    #[error("store error: {0}")]
    Database(#[source] Arc<sqlx::Error>),
}

impl StoreError {
    /// True when the operation may succeed if retried later (HTTP 503).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => is_unavailable(e),
            _ => false,
        }
    }

    pub(crate) fn not_found(what: &'static str, id: impl ToString) -> Self {
        StoreError::NotFound {
            what,
            id: id.to_string(),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::from(Arc::new(e))
    }
}

/// A database error shared by several operations (the members of one group commit, see
/// [`crate::store::Store::insert_delivery`]): each gets the same classification.
impl From<Arc<sqlx::Error>> for StoreError {
    fn from(e: Arc<sqlx::Error>) -> Self {
        if is_unavailable(&e) {
            StoreError::Unavailable(e)
        } else {
            StoreError::Database(e)
        }
    }
}

/// Whether a sqlx error means the database is (for now) unusable rather than the query
/// being wrong.
fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else { return false };
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                code.parse().is_ok_and(sqlite_code_is_unavailable)
            } else {
                sqlstate_is_unavailable(&code)
            }
        }
        _ => false,
    }
}

/// SQLite (extended) result codes meaning the database cannot take the operation now.
fn sqlite_code_is_unavailable(extended: i32) -> bool {
    // The primary result code is the low byte of the extended one.
    matches!(
        extended & 0xff,
        5   // SQLITE_BUSY: locked beyond busy_timeout
        | 6  // SQLITE_LOCKED
        | 7  // SQLITE_NOMEM
        | 8  // SQLITE_READONLY
        | 10 // SQLITE_IOERR
        | 13 // SQLITE_FULL: disk full
        | 14 // SQLITE_CANTOPEN
        | 15 // SQLITE_PROTOCOL
    )
    // Not SQLITE_CORRUPT (11) nor SQLITE_NOTADB (26): a damaged file, or one that is not
    // a database, stays so however often the write is tried again. They are
    // `StoreError::Database`: not retried, and the operator is told (the file needs
    // restoring from a backup, or `[store] url` names the wrong file).
}

/// PostgreSQL SQLSTATEs of the same kind: connection exceptions, insufficient resources
/// (disk full, out of memory, too many connections), operator intervention (shutdown),
/// system (I/O) errors, a read-only transaction (hot standby), lock_not_available, and a
/// transaction the server rolled back for a deadlock or a serialization failure (worth
/// another try, like SQLite's busy database).
fn sqlstate_is_unavailable(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || code.starts_with("58")
        || code == "25006"
        || code == "55P03"
        || code == "40P01"
        || code == "40001"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_codes_are_classified_by_primary_code() {
        let unavailable = sqlite_code_is_unavailable;
        assert!(unavailable(5)); // SQLITE_BUSY
        assert!(unavailable(517)); // SQLITE_BUSY_SNAPSHOT
        assert!(unavailable(8)); // SQLITE_READONLY
        assert!(unavailable(1032)); // SQLITE_READONLY_DBMOVED
        assert!(unavailable(13)); // SQLITE_FULL
        assert!(unavailable(266)); // SQLITE_IOERR_READ
        assert!(!unavailable(2067)); // SQLITE_CONSTRAINT_UNIQUE
        assert!(!unavailable(275)); // SQLITE_CONSTRAINT_CHECK
        assert!(!unavailable(1)); // SQLITE_ERROR (bad SQL)
        // A damaged file, or not a database at all: no retry makes it pass.
        assert!(!unavailable(11)); // SQLITE_CORRUPT
        assert!(!unavailable(267)); // SQLITE_CORRUPT_VTAB
        assert!(!unavailable(523)); // SQLITE_CORRUPT_SEQUENCE
        assert!(!unavailable(779)); // SQLITE_CORRUPT_INDEX
        assert!(!unavailable(26)); // SQLITE_NOTADB
    }

    #[test]
    fn postgres_sqlstates_are_classified() {
        let unavailable = sqlstate_is_unavailable;
        assert!(unavailable("08006")); // connection_failure
        assert!(unavailable("53100")); // disk_full
        assert!(unavailable("57P01")); // admin_shutdown
        assert!(unavailable("25006")); // read_only_sql_transaction
        assert!(unavailable("40P01")); // deadlock_detected
        assert!(unavailable("40001")); // serialization_failure
        assert!(!unavailable("23505")); // unique_violation
        assert!(!unavailable("42P01")); // undefined_table
    }

    #[test]
    fn transport_errors_are_unavailable_and_row_errors_are_not() {
        assert!(StoreError::from(sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(StoreError::from(sqlx::Error::PoolClosed).is_unavailable());
        let io = std::io::Error::other("disk on fire");
        assert!(StoreError::from(sqlx::Error::Io(io)).is_unavailable());
        assert!(!StoreError::from(sqlx::Error::RowNotFound).is_unavailable());
        assert!(!StoreError::not_found("action", 7).is_unavailable());
        assert_eq!(
            StoreError::not_found("action", 7).to_string(),
            "action 7 not found in the store"
        );
    }
}
