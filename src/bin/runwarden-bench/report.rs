//! Results: one row per measured figure, printed as a table and written as JSON.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;

/// Which way a figure should go relative to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    /// measured >= target (throughput, share of the ceiling).
    AtLeast,
    /// measured <= target (latency, memory, ratio to the floor).
    AtMost,
    /// measured == target (request counts).
    Equal,
    /// Shown for context, no target.
    Info,
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Short machine name, e.g. `webhook_ack_per_s`.
    pub name: String,
    /// What was measured, in words.
    pub label: String,
    pub measured: f64,
    pub unit: String,
    /// The limit or ceiling it is compared with (measured in the same run, or computed).
    pub limit: Option<f64>,
    /// What the limit is, in words ("bare HMAC handler", "rate cap alone", "minimum").
    pub limit_label: String,
    /// `measured / limit`.
    pub ratio: Option<f64>,
    pub goal: Goal,
    /// The value `measured` (or `ratio`, when `target_on_ratio`) is held to.
    pub target: Option<f64>,
    pub target_on_ratio: bool,
    /// `None` for informational rows.
    pub pass: Option<bool>,
    /// Extra detail (counts, percentiles, conditions).
    pub note: String,
}

impl Row {
    /// An informational row (no target).
    pub fn info(name: &str, label: &str, measured: f64, unit: &str) -> Row {
        Row {
            name: name.into(),
            label: label.into(),
            measured,
            unit: unit.into(),
            limit: None,
            limit_label: String::new(),
            ratio: None,
            goal: Goal::Info,
            target: None,
            target_on_ratio: false,
            pass: None,
            note: String::new(),
        }
    }

    /// A row held to `target` on the measured value.
    pub fn target(
        name: &str,
        label: &str,
        measured: f64,
        unit: &str,
        goal: Goal,
        target: f64,
    ) -> Row {
        let mut r = Row::info(name, label, measured, unit);
        r.goal = goal;
        r.target = Some(target);
        r.evaluate();
        r
    }

    /// Sets the limit (and the ratio measured/limit).
    pub fn limit(mut self, limit: f64, label: &str) -> Row {
        self.limit = Some(limit);
        self.limit_label = label.into();
        self.ratio = (limit != 0.0).then(|| self.measured / limit);
        self.evaluate();
        self
    }

    /// Holds the ratio (rather than the measured value) to `target`.
    pub fn ratio_target(mut self, goal: Goal, target: f64) -> Row {
        self.goal = goal;
        self.target = Some(target);
        self.target_on_ratio = true;
        self.evaluate();
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }

    fn evaluate(&mut self) {
        let v = if self.target_on_ratio {
            self.ratio
        } else {
            Some(self.measured)
        };
        self.pass = match (self.goal, self.target, v) {
            (Goal::Info, _, _) | (_, None, _) => None,
            (_, Some(_), None) => Some(false),
            (Goal::AtLeast, Some(t), Some(v)) => Some(v >= t),
            (Goal::AtMost, Some(t), Some(v)) => Some(v <= t),
            (Goal::Equal, Some(t), Some(v)) => Some((v - t).abs() < 1e-9),
        };
    }

    fn target_text(&self) -> String {
        let Some(t) = self.target else {
            return String::new();
        };
        let op = match self.goal {
            Goal::AtLeast => ">=",
            Goal::AtMost => "<=",
            Goal::Equal => "=",
            Goal::Info => "",
        };
        if self.target_on_ratio {
            if self.goal == Goal::AtLeast && t < 1.0 {
                format!("ratio {op} {:.0}%", t * 100.0)
            } else {
                format!("ratio {op} {}", num(t))
            }
        } else {
            format!("{op} {} {}", num(t), self.unit)
        }
    }

    fn verdict(&self) -> &'static str {
        match self.pass {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None => "info",
        }
    }

    /// One line for the progress log.
    pub fn one_line(&self) -> String {
        let mut s = format!("{}: {} {}", self.label, num(self.measured), self.unit);
        if let (Some(l), Some(r)) = (self.limit, self.ratio) {
            s.push_str(&format!(
                " vs {} {} ({}) = {}",
                num(l),
                self.unit,
                self.limit_label,
                ratio(r)
            ));
        }
        if self.target.is_some() {
            s.push_str(&format!(
                " [target {}: {}]",
                self.target_text(),
                self.verdict()
            ));
        }
        if !self.note.is_empty() {
            s.push_str(&format!(" — {}", self.note));
        }
        s
    }
}

/// A number for people: integers without decimals, small values with 3 significant digits.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if a >= 100.0 || (v.fract() == 0.0 && a < 1e15) {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn ratio(r: f64) -> String {
    if r < 10.0 {
        format!("{r:.2}x")
    } else {
        format!("{r:.0}x")
    }
}

/// The machine the figures were taken on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub mem_total_mib: u64,
    pub kernel: String,
    pub rustc: String,
    pub git_commit: String,
    pub git_dirty: bool,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total_mib = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let out = |cmd: &str, args: &[&str]| {
            std::process::Command::new(cmd)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default()
        };
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            mem_total_mib,
            kernel,
            rustc: out("rustc", &["--version"]),
            git_commit: out("git", &["rev-parse", "--short", "HEAD"]),
            git_dirty: !out("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty(),
        }
    }
}

/// The 1-minute load average (a figure taken under load says so).
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

#[derive(Debug, Serialize)]
struct FigureResult {
    figure: String,
    rows: Vec<Row>,
    error: Option<String>,
    /// 1-minute load average when the figure started.
    load_before: f64,
    seconds: f64,
}

/// Everything one run of the suite measured.
#[derive(Debug)]
pub struct Report {
    machine: Machine,
    quick: bool,
    started_at: chrono::DateTime<chrono::Utc>,
    figures: Vec<FigureResult>,
    total: Duration,
}

impl Report {
    pub fn new(machine: Machine, quick: bool) -> Report {
        Report {
            machine,
            quick,
            started_at: chrono::Utc::now(),
            figures: Vec::new(),
            total: Duration::ZERO,
        }
    }

    pub fn add(&mut self, figure: &str, rows: Vec<Row>, load_before: f64, took: Duration) {
        self.figures.push(FigureResult {
            figure: figure.into(),
            rows,
            error: None,
            load_before,
            seconds: took.as_secs_f64(),
        });
    }

    pub fn error(&mut self, figure: &str, error: String, load_before: f64, took: Duration) {
        self.figures.push(FigureResult {
            figure: figure.into(),
            rows: Vec::new(),
            error: Some(error),
            load_before,
            seconds: took.as_secs_f64(),
        });
    }

    pub fn finish(&mut self, total: Duration) {
        self.total = total;
    }

    pub fn any_failed(&self) -> bool {
        self.figures
            .iter()
            .any(|f| f.error.is_some() || f.rows.iter().any(|r| r.pass == Some(false)))
    }

    /// The results table (Markdown, so it can be pasted into BENCHMARKS.md).
    pub fn table(&self) -> String {
        let m = &self.machine;
        let mut out = format!(
            "runwarden-bench{} — {} x {}, {} MiB, {} {}, load {:.1} at the end, {:.0} s\n\n",
            if self.quick { " --quick" } else { "" },
            m.nproc,
            m.cpu_model,
            m.mem_total_mib,
            m.git_commit,
            if m.git_dirty { "(dirty)" } else { "" },
            loadavg(),
            self.total.as_secs_f64()
        );
        out.push_str("| figure | measured | limit / ceiling | ratio | target | result |\n");
        out.push_str("|---|---|---|---|---|---|\n");
        for f in &self.figures {
            if let Some(e) = &f.error {
                out.push_str(&format!(
                    "| {} | error: {} | | | | ERROR |\n",
                    f.figure,
                    e.replace('|', "/")
                ));
                continue;
            }
            for r in &f.rows {
                let limit = match r.limit {
                    Some(l) => format!("{} {} ({})", num(l), r.unit, r.limit_label),
                    None => String::new(),
                };
                let measured = if r.note.is_empty() {
                    format!("{} {}", num(r.measured), r.unit)
                } else {
                    format!(
                        "{} {} <br><sub>{}</sub>",
                        num(r.measured),
                        r.unit,
                        r.note.replace('|', "/")
                    )
                };
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} |\n",
                    r.label,
                    measured,
                    limit,
                    r.ratio.map(ratio).unwrap_or_default(),
                    r.target_text(),
                    r.verdict()
                ));
            }
        }
        let loads: Vec<String> = self
            .figures
            .iter()
            .map(|f| format!("{} {:.1}", f.figure, f.load_before))
            .collect();
        out.push_str(&format!(
            "\n1-min load average when each figure started: {}\n",
            loads.join(", ")
        ));
        out
    }

    pub fn json(&self) -> String {
        let v = json!({
            "suite": "runwarden-bench",
            "quick": self.quick,
            "started_at": self.started_at,
            "seconds": self.total.as_secs_f64(),
            "machine": self.machine,
            "load_at_end": loadavg(),
            "figures": self.figures,
        });
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }
}
