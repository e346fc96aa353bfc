//! Prometheus metrics: counters of commands, approvals and run outcomes, and a histogram of
//! step durations, rendered as Prometheus text at `GET /metrics`.

use std::{collections::BTreeMap, sync::Mutex};

const BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// Process-wide metrics.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
    steps: Mutex<BTreeMap<String, Histogram>>,
}

impl Metrics {
    /// Adds one to `name{labels}`; `labels` is already in Prometheus form (`a="b"`).
    pub fn inc(&self, name: &'static str, labels: String) {
        if let Ok(mut c) = self.counters.lock() {
            *c.entry((name, labels)).or_default() += 1;
        }
    }

    /// Records a step duration.
    pub fn step_duration(&self, kind: &str, seconds: f64) {
        if let Ok(mut h) = self.steps.lock() {
            let h = h.entry(kind.to_string()).or_default();
            if h.counts.is_empty() {
                h.counts = vec![0; BUCKETS.len()];
            }
            for (i, b) in BUCKETS.iter().enumerate() {
                if seconds <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum += seconds;
            h.count += 1;
        }
    }

    /// Prometheus text; `runs` are the stored run counts by state.
    /// `runs` is `None` when the store could not be read: the process's own counters still
    /// render (they matter most then), with `drbot_store_up 0` and no run gauge.
    pub fn render(&self, runs: Option<&[(String, i64)]>) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "# HELP drbot_store_up Whether the store answered this scrape.
\
             # TYPE drbot_store_up gauge\ndrbot_store_up {}\n",
            u8::from(runs.is_some())
        ));
        let help = [
            (
                "drbot_commands_total",
                "Commands received, by subcommand, platform and outcome.",
            ),
            (
                "drbot_approvals_total",
                "Approval clicks and commands, by outcome.",
            ),
        ];
        let counters = self.counters.lock().map(|c| c.clone()).unwrap_or_default();
        for (name, text) in help {
            out.push_str(&format!("# HELP {name} {text}\n# TYPE {name} counter\n"));
            for ((n, labels), v) in counters.iter().filter(|((n, _), _)| *n == name) {
                out.push_str(&format!("{n}{{{labels}}} {v}\n"));
            }
        }
        if let Some(runs) = runs {
            out.push_str(
                "# HELP drbot_runs Runs in the store, by state.\n# TYPE drbot_runs gauge\n",
            );
            for (state, n) in runs {
                out.push_str(&format!("drbot_runs{{state=\"{state}\"}} {n}\n"));
            }
        }
        out.push_str(
            "# HELP drbot_step_duration_seconds Step attempt durations, by step type.\n\
             # TYPE drbot_step_duration_seconds histogram\n",
        );
        if let Ok(steps) = self.steps.lock() {
            for (kind, h) in steps.iter() {
                for (i, b) in BUCKETS.iter().enumerate() {
                    out.push_str(&format!(
                        "drbot_step_duration_seconds_bucket{{kind=\"{kind}\",le=\"{b}\"}} {}\n",
                        h.counts[i]
                    ));
                }
                out.push_str(&format!(
                    "drbot_step_duration_seconds_bucket{{kind=\"{kind}\",le=\"+Inf\"}} {}\n\
                     drbot_step_duration_seconds_sum{{kind=\"{kind}\"}} {}\n\
                     drbot_step_duration_seconds_count{{kind=\"{kind}\"}} {}\n",
                    h.count, h.sum, h.count
                ));
            }
        }
        out
    }
}

/// Escapes a label value.
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
