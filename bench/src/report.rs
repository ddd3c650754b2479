//! Results of a scenario: named figures per runtime, printed as a Markdown table with the
//! ratio of the first runtime to the second, or as JSON (with the raw samples).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::memory::RuntimeMemory;
use crate::stats::Summary;

/// Unit of a figure, deciding how it prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unit {
    Ms,
    Mib,
    PerSecond,
    Count,
    Seconds,
}

impl Unit {
    fn format(self, v: f64) -> String {
        match self {
            Unit::Ms => format!("{v:.1} ms"),
            Unit::Mib => format!("{v:.2} MiB"),
            Unit::PerSecond => format!("{v:.1}/s"),
            Unit::Count => format!("{v:.0}"),
            Unit::Seconds => format!("{v:.2} s"),
        }
    }
}

/// One named figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub unit: Unit,
    /// `None`: not measured (e.g. every call failed).
    pub value: Option<f64>,
}

/// One runtime's results in a scenario.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TargetResult {
    pub name: String,
    pub endpoint: String,
    /// `runtime_name runtime_version` from CRI `Version`.
    pub runtime: String,
    pub metrics: Vec<Metric>,
    /// Raw samples per step, in milliseconds, in the order taken.
    pub samples: BTreeMap<String, Vec<f64>>,
    /// Memory snapshots by moment (`idle`, `loaded`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub memory: BTreeMap<String, RuntimeMemory>,
    /// Free-form lines printed under the table (e.g. memory per helper command).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub errors: Vec<String>,
}

impl TargetResult {
    /// Adds a figure.
    pub fn metric(&mut self, name: impl Into<String>, unit: Unit, value: Option<f64>) {
        self.metrics.push(Metric {
            name: name.into(),
            unit,
            value,
        });
    }

    /// Adds p50/p95/p99/max of `step`'s samples (n/a when it has none).
    pub fn latency(&mut self, step: &str) {
        let s = self.samples.get(step).and_then(|v| Summary::of(v));
        for (label, get) in PERCENTILES {
            self.metric(format!("{step} {label}"), Unit::Ms, s.as_ref().map(get));
        }
    }

    /// Appends a sample of `step`.
    pub fn sample(&mut self, step: &str, value: f64) {
        self.samples
            .entry(step.to_string())
            .or_default()
            .push(value);
    }

    /// Records an error (the table shows the first few).
    pub fn error(&mut self, e: String) {
        self.errors.push(e);
    }
}

type Getter = fn(&Summary) -> f64;
const PERCENTILES: [(&str, Getter); 4] = [
    ("p50", |s| s.p50),
    ("p95", |s| s.p95),
    ("p99", |s| s.p99),
    ("max", |s| s.max),
];

/// A scenario's results on every runtime.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix: u64,
    pub params: BTreeMap<String, serde_json::Value>,
    pub targets: Vec<TargetResult>,
}

/// How many error messages per runtime the table shows.
const ERRORS_SHOWN: usize = 5;

impl Report {
    /// The human table: one row per figure, one column per runtime, then the first runtime's
    /// value divided by the second's (left blank for counts).
    pub fn table(&self) -> String {
        let mut out = String::new();
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(out, "scenario {} ({})", self.scenario, params.join(", "));
        for t in &self.targets {
            let _ = writeln!(out, "  {}: {} on {}", t.name, t.runtime, t.endpoint);
        }
        out.push('\n');
        let mut header = vec!["metric".to_string()];
        header.extend(self.targets.iter().map(|t| t.name.clone()));
        let ratio = self.targets.len() == 2;
        if ratio {
            header.push(format!(
                "{} / {}",
                self.targets[0].name, self.targets[1].name
            ));
        }
        let _ = writeln!(out, "| {} |", header.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
        for (name, unit) in self.metric_names() {
            let values: Vec<Option<f64>> = self
                .targets
                .iter()
                .map(|t| {
                    t.metrics
                        .iter()
                        .find(|m| m.name == name)
                        .and_then(|m| m.value)
                })
                .collect();
            let mut row = vec![name.clone()];
            row.extend(
                values
                    .iter()
                    .map(|v| v.map_or("n/a".to_string(), |v| unit.format(v))),
            );
            if ratio {
                // Counts (pods, errors) are context, not figures to compare.
                let r = match unit {
                    Unit::Count => String::new(),
                    _ => format_ratio(values[0], values[1]),
                };
                row.push(r);
            }
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        for t in &self.targets {
            for note in &t.notes {
                let _ = writeln!(out, "{}: {note}", t.name);
            }
            if !t.errors.is_empty() {
                let _ = writeln!(out, "{}: {} error(s)", t.name, t.errors.len());
                for e in t.errors.iter().take(ERRORS_SHOWN) {
                    let _ = writeln!(out, "  {e}");
                }
            }
        }
        out
    }

    /// Every figure's name in first-seen order, with its unit.
    fn metric_names(&self) -> Vec<(String, Unit)> {
        let mut names: Vec<(String, Unit)> = Vec::new();
        for m in self.targets.iter().flat_map(|t| &t.metrics) {
            if !names.iter().any(|(n, _)| *n == m.name) {
                names.push((m.name.clone(), m.unit));
            }
        }
        names
    }
}

/// `a / b` as `0.12x`, or `n/a` when either is missing or b is zero.
pub fn format_ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => {
            let r = a / b;
            if r < 0.095 {
                format!("{r:.3}x")
            } else {
                format!("{r:.2}x")
            }
        }
        _ => "n/a".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str, samples: &[f64]) -> TargetResult {
        let mut t = TargetResult {
            name: name.into(),
            ..Default::default()
        };
        for s in samples {
            t.sample("total", *s);
        }
        t.latency("total");
        t
    }

    #[test]
    fn table_has_a_row_per_metric_and_a_ratio_column() {
        let r = Report {
            scenario: "pod-start".into(),
            started_unix: 0,
            params: BTreeMap::from([("pods".to_string(), serde_json::json!(4))]),
            targets: vec![
                target("berth", &[10.0, 20.0, 30.0, 40.0]),
                target("containerd", &[100.0, 200.0, 300.0, 400.0]),
            ],
        };
        let table = r.table();
        assert!(
            table.contains("| metric | berth | containerd | berth / containerd |"),
            "{table}"
        );
        assert!(
            table.contains("| total p50 | 20.0 ms | 200.0 ms | 0.10x |"),
            "{table}"
        );
        assert!(
            table.contains("| total max | 40.0 ms | 400.0 ms | 0.10x |"),
            "{table}"
        );
    }

    #[test]
    fn missing_values_print_na_and_no_ratio() {
        let r = Report {
            scenario: "exec".into(),
            started_unix: 0,
            params: BTreeMap::new(),
            targets: vec![target("berth", &[]), target("containerd", &[2.0])],
        };
        assert!(r.table().contains("| total p50 | n/a | 2.0 ms | n/a |"));
    }

    #[test]
    fn ratio_formats() {
        assert_eq!(format_ratio(Some(1.0), Some(4.0)), "0.25x");
        assert_eq!(format_ratio(Some(1.0), Some(40.0)), "0.025x");
        assert_eq!(format_ratio(Some(1.0), Some(0.0)), "n/a");
        assert_eq!(format_ratio(None, Some(1.0)), "n/a");
    }

    #[test]
    fn report_round_trips_through_json() {
        let r = Report {
            scenario: "pod-start".into(),
            started_unix: 1,
            params: BTreeMap::new(),
            targets: vec![target("berth", &[1.0, 2.0])],
        };
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.targets[0].samples["total"], vec![1.0, 2.0]);
        assert_eq!(back.targets[0].metrics, r.targets[0].metrics);
    }
}
