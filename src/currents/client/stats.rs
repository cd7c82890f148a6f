//! Request counters, for `/metrics` ("API calls by status") and benchmarks.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Called once per HTTP attempt with the operation label (`get_run`, `cancel_run`, ...)
/// and the HTTP status, or `None` when no response arrived (timeout, transport error).
pub type RequestObserver = std::sync::Arc<dyn Fn(&str, Option<u16>) + Send + Sync>;

/// A snapshot of the requests a client (and all its clones) has sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// HTTP requests sent, every retry included.
    pub total_requests: u64,
    /// Requests by (operation label, HTTP status or `None` when no response arrived).
    pub by_op_status: BTreeMap<(&'static str, Option<u16>), u64>,
}

impl ClientStats {
    /// Requests of `op` that ended with `status`.
    pub fn count(&self, op: &str, status: Option<u16>) -> u64 {
        self.by_op_status
            .iter()
            .filter(|((o, s), _)| *o == op && *s == status)
            .map(|(_, n)| n)
            .sum()
    }

    /// All requests of `op`, whatever their outcome.
    pub fn requests_for(&self, op: &str) -> u64 {
        self.by_op_status
            .iter()
            .filter(|((o, _), _)| *o == op)
            .map(|(_, n)| n)
            .sum()
    }

    /// `(op, status label, count)` rows, e.g. for a Prometheus counter with labels
    /// `op` and `status`; the label is the numeric status or `error`.
    pub fn rows(&self) -> impl Iterator<Item = (&'static str, String, u64)> + '_ {
        self.by_op_status
            .iter()
            .map(|((op, st), n)| (*op, status_label(*st), *n))
    }
}

/// The metrics label of a status: `"200"`, `"503"`, or `"error"` without a response.
pub fn status_label(status: Option<u16>) -> String {
    status.map_or_else(|| "error".to_string(), |s| s.to_string())
}

#[derive(Default)]
pub(crate) struct StatsRecorder {
    total: AtomicU64,
    by: Mutex<HashMap<(&'static str, Option<u16>), u64>>,
}

impl StatsRecorder {
    pub(crate) fn record(&self, op: &'static str, status: Option<u16>) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut by = self.by.lock().unwrap_or_else(|e| e.into_inner());
        *by.entry((op, status)).or_default() += 1;
    }

    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    pub(crate) fn snapshot(&self) -> ClientStats {
        let by = self.by.lock().unwrap_or_else(|e| e.into_inner());
        ClientStats {
            total_requests: self.total(),
            by_op_status: by.iter().map(|(k, v)| (*k, *v)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_snapshots() {
        let r = StatsRecorder::default();
        r.record("get_run", Some(200));
        r.record("get_run", Some(200));
        r.record("get_run", Some(503));
        r.record("cancel_run", None);
        let s = r.snapshot();
        assert_eq!(s.total_requests, 4);
        assert_eq!(s.count("get_run", Some(200)), 2);
        assert_eq!(s.count("get_run", Some(503)), 1);
        assert_eq!(s.count("get_run", None), 0);
        assert_eq!(s.requests_for("get_run"), 3);
        assert_eq!(s.count("cancel_run", None), 1);
        let rows: Vec<_> = s.rows().collect();
        assert!(rows.contains(&("cancel_run", "error".to_string(), 1)));
        assert!(rows.contains(&("get_run", "503".to_string(), 1)));
    }
}
