//! Prometheus metrics, rendered by hand in the text exposition format: counters keyed by
//! name and labels, one latency histogram (event to action), and the gauges read from
//! the store, computed at most once per [`STORE_GAUGES_TTL`] however many scrape (and,
//! kept here too, the status page's store reads, once per
//! [`super::status_page::STATUS_PAGE_TTL`]).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// A gauge: name, help, label text (see [`labels`]) and value.
pub type Gauge = (&'static str, &'static str, String, f64);

/// How long the gauges read from the store (`runwarden_store_up`, queue depth, events
/// pending, actions by state, decisions by outcome) are reused: scrapes within it share
/// one computation, so a flood of them cannot tie up the store's readers.
pub const STORE_GAUGES_TTL: Duration = Duration::from_secs(5);

/// How long one store check of `/readyz` answers for: the probe is outside the request
/// slots, so a flood of it must not become a flood of store reads.
pub const STORE_PING_TTL: Duration = Duration::from_secs(1);

/// Bucket upper bounds, in seconds, of the event-to-action latency histogram.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// All metrics of one process.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
    latency: Mutex<Histogram>,
    /// The last store gauges and when they were read.
    store_gauges: Shared<Arc<[Gauge]>>,
    /// The last `/readyz` store check and when it ran.
    store_ping: Shared<bool>,
    /// The last store reads of the status page and when they were made.
    status_page: Shared<Arc<super::status_page::PageData>>,
}

/// A value read from the store, reused by its callers for a TTL. The lock is held across
/// its computation: concurrent callers wait for the one computing it, then reuse its
/// result (single flight).
pub struct Shared<T> {
    last: tokio::sync::Mutex<Option<(Instant, T)>>,
}

impl<T> Default for Shared<T> {
    fn default() -> Self {
        Self {
            last: tokio::sync::Mutex::new(None),
        }
    }
}

impl<T: Clone> Shared<T> {
    /// The value `compute` gives, computed at most once per `ttl`: a caller within it
    /// gets the last result; concurrent callers after it wait for the first of them to
    /// compute the next one. A computation given up half-way (its request cancelled)
    /// leaves the next caller to compute.
    pub async fn get<F, Fut>(&self, ttl: Duration, compute: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let mut last = self.last.lock().await;
        if let Some((at, value)) = &*last
            && at.elapsed() < ttl
        {
            return value.clone();
        }
        let value = compute().await;
        *last = Some((Instant::now(), value.clone()));
        value
    }
}

/// Appends `v` escaped as a label value.
fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Renders `k="v",...` label text (one allocation: this runs for every webhook).
pub fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(
        pairs
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum::<usize>(),
    );
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        escape_into(&mut out, v);
        out.push('"');
    }
    out
}

const HELP: &[(&str, &str)] = &[
    (
        "runwarden_webhooks_total",
        "Webhooks received, by source and HTTP status.",
    ),
    (
        "runwarden_decisions_total",
        "Decisions recorded, by rule and action.",
    ),
    (
        "runwarden_actions_total",
        "Attempts at actions, by rule (the first that decided the action), rule kind, action and outcome: done, skipped or failed (finished), retry (failed, tried again) or postponed (held back by a rate limit, not counted as an attempt).",
    ),
    (
        "runwarden_actions_handed_over_total",
        "New actions leased to this process's executor in the transaction that recorded them (no separate claim).",
    ),
    (
        "runwarden_store_pruned_total",
        "Rows the store forgot under [store] keep_events and keep_audit, by table (events, runs, slots, decisions, actions).",
    ),
    (
        "runwarden_api_requests_total",
        "HTTP requests sent to the Currents and GitHub APIs (retries included), by api, operation and status (error: no response).",
    ),
    (
        "runwarden_events_processed_total",
        "Stored events processed, by source and result.",
    ),
    (
        "runwarden_schedule_slots_total",
        "Retention schedule slots fired, by rule and result.",
    ),
];

/// The counters README lists on `GET /metrics`: their `# HELP` and `# TYPE` lines are
/// there before their first sample.
const ALWAYS: &[&str] = &[
    "runwarden_webhooks_total",
    "runwarden_decisions_total",
    "runwarden_actions_total",
    "runwarden_api_requests_total",
];

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `n` to a counter.
    pub fn add(&self, name: &'static str, labels: String, n: u64) {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        *c.entry((name, labels)).or_default() += n;
    }

    /// Sets a counter kept elsewhere (a client's request counts) to its current value.
    pub fn set(&self, name: &'static str, labels: String, n: u64) {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        c.insert((name, labels), n);
    }

    pub fn inc(&self, name: &'static str, pairs: &[(&str, &str)]) {
        self.add(name, labels(pairs), 1);
    }

    /// Reads a counter (tests, status page).
    pub fn get(&self, name: &'static str, pairs: &[(&str, &str)]) -> u64 {
        let c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        c.get(&(name, labels(pairs))).copied().unwrap_or(0)
    }

    /// Records one event-to-action latency.
    pub fn observe_latency(&self, seconds: f64) {
        let mut h = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }

    /// The gauges `compute` reads from the store, computed at most once per
    /// [`STORE_GAUGES_TTL`]: a caller within it gets the last result; concurrent callers
    /// after it wait for the first of them to compute the next one (single flight). A
    /// computation given up half-way (its scrape cancelled) leaves the next caller to
    /// compute.
    pub async fn store_gauges<F, Fut>(&self, compute: F) -> Arc<[Gauge]>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Vec<Gauge>>,
    {
        self.store_gauges
            .get(STORE_GAUGES_TTL, || async { compute().await.into() })
            .await
    }

    /// Whether the store answered `ping`, checked at most once per [`STORE_PING_TTL`]
    /// by one caller (single flight, as [`Metrics::store_gauges`]).
    pub async fn store_reachable<F, Fut>(&self, ping: F) -> bool
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = bool>,
    {
        self.store_ping.get(STORE_PING_TTL, ping).await
    }

    /// The store reads of the status page that `read` makes, made at most once per
    /// [`super::status_page::STATUS_PAGE_TTL`] by one caller (single flight, as
    /// [`Metrics::store_gauges`]): a flood of the unauthenticated page cannot tie up the
    /// store's readers.
    pub async fn status_page_reads<F, Fut>(&self, read: F) -> Arc<super::status_page::PageData>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = super::status_page::PageData>,
    {
        self.status_page
            .get(super::status_page::STATUS_PAGE_TTL, || async {
                Arc::new(read().await)
            })
            .await
    }

    /// The Prometheus text; `gauges` are point-in-time values computed by the caller
    /// (queue depth, actions by state).
    pub fn render(&self, gauges: &[(&str, &str, String, f64)]) -> String {
        self.render_parts(&[gauges])
    }

    /// [`Metrics::render`] of several lists of gauges, in order (a name's samples all
    /// in one list).
    pub fn render_parts(&self, parts: &[&[(&str, &str, String, f64)]]) -> String {
        let mut out = String::new();
        let c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        // The counters README lists are described from the start, samples or not; the
        // others from their first sample. Names in order, each block once.
        let mut names: Vec<&str> = ALWAYS.to_vec();
        names.extend(c.keys().map(|(n, _)| *n));
        names.sort_unstable();
        names.dedup();
        for name in names {
            let help = HELP
                .iter()
                .find(|(n, _)| *n == name)
                .map_or("runwarden counter.", |(_, h)| h);
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let samples = c
                .range((name, String::new())..)
                .take_while(|((n, _), _)| *n == name);
            for ((_, labels), v) in samples {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {v}");
                }
            }
        }
        drop(c);
        let mut last_g = "";
        for (name, help, labels, v) in parts.iter().flat_map(|p| p.iter()) {
            if *name != last_g {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
                last_g = name;
            }
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {v}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
        let h = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let name = "runwarden_event_to_action_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from receiving an event to finishing the action it caused.\n# TYPE {name} histogram"
        );
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", h.counts[i]);
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum {}", h.sum);
        let _ = writeln!(out, "{name}_count {}", h.count);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histogram() {
        let m = Metrics::new();
        m.inc(
            "runwarden_webhooks_total",
            &[("source", "github"), ("status", "202")],
        );
        m.inc(
            "runwarden_webhooks_total",
            &[("source", "github"), ("status", "202")],
        );
        m.observe_latency(0.003);
        let text = m.render(&[(
            "runwarden_queue_depth",
            "Actions waiting.",
            String::new(),
            4.0,
        )]);
        assert!(
            text.contains("runwarden_webhooks_total{source=\"github\",status=\"202\"} 2"),
            "{text}"
        );
        assert!(text.contains("runwarden_queue_depth 4"), "{text}");
        assert!(
            text.contains("runwarden_event_to_action_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("runwarden_event_to_action_seconds_bucket{le=\"0.0025\"} 0"),
            "{text}"
        );
        assert_eq!(
            m.get(
                "runwarden_webhooks_total",
                &[("source", "github"), ("status", "202")]
            ),
            2
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            labels(&[("rule", "a\"b\\c\nd"), ("kind", "supersede")]),
            "rule=\"a\\\"b\\\\c\\nd\",kind=\"supersede\""
        );
        assert_eq!(labels(&[]), "");
    }

    /// A counter without labels renders as `name value`, not `name{} value`.
    #[test]
    fn a_counter_without_labels_has_no_braces() {
        let m = Metrics::new();
        m.add("runwarden_actions_handed_over_total", String::new(), 7);
        let text = m.render(&[]);
        assert!(
            text.lines()
                .any(|l| l == "runwarden_actions_handed_over_total 7"),
            "{text}"
        );
        assert!(!text.contains("{}"), "{text}");
    }

    /// The counters README lists are described before their first sample, once each.
    #[test]
    fn listed_counters_are_described_from_the_start() {
        let m = Metrics::new();
        let text = m.render(&[]);
        // The names themselves are checked against README's list end to end
        // (`serve::fresh_metrics_describe_the_listed_counters_and_write_no_empty_braces`).
        for name in ALWAYS {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}: {text}");
            assert!(
                text.contains(&format!("# TYPE {name} counter\n")),
                "{name}: {text}"
            );
        }
        m.inc(
            "runwarden_decisions_total",
            &[("rule", "r"), ("action", "cancel")],
        );
        m.inc(
            "runwarden_decisions_total",
            &[("rule", "s"), ("action", "cancel")],
        );
        let text = m.render(&[]);
        assert_eq!(
            text.matches("# TYPE runwarden_decisions_total counter")
                .count(),
            1,
            "{text}"
        );
    }

    /// Concurrent scrapes share one computation of the store gauges, later ones within
    /// [`STORE_GAUGES_TTL`] reuse it, and the first after it computes them again.
    #[tokio::test(start_paused = true)]
    async fn store_gauges_are_computed_once_per_ttl_by_one_caller() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let m = Metrics::new();
        let runs = AtomicUsize::new(0);
        let compute = || async {
            let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
            // A slow store: the other callers arrive meanwhile.
            tokio::time::sleep(Duration::from_millis(200)).await;
            vec![("g", "A gauge.", String::new(), n as f64)]
        };
        let got = futures::future::join_all((0..20).map(|_| m.store_gauges(compute))).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(got.iter().all(|g| g[0].3 == 1.0));
        tokio::time::advance(STORE_GAUGES_TTL - Duration::from_millis(300)).await;
        assert_eq!(m.store_gauges(compute).await[0].3, 1.0);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_millis(400)).await;
        assert_eq!(m.store_gauges(compute).await[0].3, 2.0);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    /// A flood of `/readyz` makes one store check per [`STORE_PING_TTL`], and a store
    /// that stopped answering shows once it is over.
    #[tokio::test(start_paused = true)]
    async fn readiness_checks_the_store_once_per_ttl_by_one_caller() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let m = Metrics::new();
        let pings = AtomicUsize::new(0);
        let up = std::sync::atomic::AtomicBool::new(true);
        let ping = || async {
            pings.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            up.load(Ordering::SeqCst)
        };
        let got = futures::future::join_all((0..50).map(|_| m.store_reachable(ping))).await;
        assert!(got.iter().all(|ok| *ok));
        assert_eq!(pings.load(Ordering::SeqCst), 1);
        up.store(false, Ordering::SeqCst);
        assert!(
            m.store_reachable(ping).await,
            "within the TTL: the last answer"
        );
        tokio::time::advance(STORE_PING_TTL).await;
        assert!(!m.store_reachable(ping).await);
        assert_eq!(pings.load(Ordering::SeqCst), 2);
    }
}
