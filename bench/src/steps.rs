//! The per-step breakdown of a runtime's operations, read from its Prometheus metrics: berthd
//! times each step of StartContainer, RunPodSandbox, StopPodSandbox and RemovePodSandbox in
//! `berth_operation_step_duration_seconds`. Scraped before and after a scenario, the change
//! of each step's sum and count gives its mean over the scenario's calls.

use std::collections::BTreeMap;

const METRIC: &str = "berth_operation_step_duration_seconds";

/// Sum (seconds) and count of each (operation, step).
pub type StepTotals = BTreeMap<(String, String), (f64, u64)>;

/// Fetches `http://<addr>/metrics` and reads the step histograms from it.
pub async fn scrape(addr: &str) -> Result<StepTotals, String> {
    let resp = e2e::http::get(addr, "/metrics")
        .await
        .map_err(|e| format!("scrape: {e}"))?;
    if resp.status != 200 {
        return Err(format!(
            "GET http://{addr}/metrics: {} {}",
            resp.status,
            resp.body_text()
        ));
    }
    Ok(parse(&resp.body_text()))
}

/// Reads the `_sum` and `_count` series of the step histogram from a text exposition.
pub fn parse(text: &str) -> StepTotals {
    let mut totals = StepTotals::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(METRIC) else {
            continue;
        };
        let (is_sum, rest) = if let Some(r) = rest.strip_prefix("_sum{") {
            (true, r)
        } else if let Some(r) = rest.strip_prefix("_count{") {
            (false, r)
        } else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let (Some(op), Some(step)) = (label(labels, "operation"), label(labels, "step")) else {
            continue;
        };
        let entry = totals.entry((op, step)).or_insert((0.0, 0));
        if is_sum {
            entry.0 = value.trim().parse().unwrap_or(0.0);
        } else {
            entry.1 = value.trim().parse().unwrap_or(0);
        }
    }
    totals
}

fn label(labels: &str, name: &str) -> Option<String> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let len = labels[start..].find('"')?;
    Some(labels[start..start + len].to_string())
}

/// One line per operation: each step's mean in ms over the calls between the two scrapes, in
/// the order of `order` (steps not listed there last, by name); berth-shim's steps, named
/// `shim/…`, are shown inside the `shim` round trip.
pub fn breakdown(before: &StepTotals, after: &StepTotals, order: &[&str]) -> Vec<String> {
    let mut ops: BTreeMap<&str, Vec<(&str, f64)>> = BTreeMap::new();
    for ((op, step), (sum, count)) in after {
        let (sum0, count0) = before
            .get(&(op.clone(), step.clone()))
            .copied()
            .unwrap_or((0.0, 0));
        let n = count.saturating_sub(count0);
        if n == 0 {
            continue;
        }
        let mean_ms = (sum - sum0) / n as f64 * 1000.0;
        ops.entry(op).or_default().push((step, mean_ms));
    }
    let rank = |name: &str| order.iter().position(|o| *o == name).unwrap_or(order.len());
    let mut lines = Vec::new();
    for (op, mut steps) in ops {
        steps.sort_by(|a, b| rank(a.0).cmp(&rank(b.0)).then(a.0.cmp(b.0)));
        let fmt = |list: &[&(&str, f64)]| {
            list.iter()
                .map(|(s, ms)| format!("{} {ms:.2}", s.trim_start_matches("shim/")))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let own: Vec<&(&str, f64)> = steps.iter().filter(|s| !s.0.starts_with("shim/")).collect();
        let shim: Vec<&(&str, f64)> = steps.iter().filter(|s| s.0.starts_with("shim/")).collect();
        let total: f64 = own.iter().map(|s| s.1).sum();
        let mut line = format!("{op} steps, mean ms (sum {total:.2}): {}", fmt(&own));
        if !shim.is_empty() {
            line.push_str(&format!("; inside shim: {}", fmt(&shim)));
        }
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP berth_operation_step_duration_seconds Time each step took.
# TYPE berth_operation_step_duration_seconds histogram
berth_operation_step_duration_seconds_bucket{operation="StartContainer",step="shim",le="0.01"} 1
berth_operation_step_duration_seconds_sum{operation="StartContainer",step="shim"} 0.030
berth_operation_step_duration_seconds_count{operation="StartContainer",step="shim"} 2
berth_operation_step_duration_seconds_sum{operation="StartContainer",step="find"} 0.001
berth_operation_step_duration_seconds_count{operation="StartContainer",step="find"} 2
berth_operation_step_duration_seconds_sum{operation="StartContainer",step="shim/fork"} 0.004
berth_operation_step_duration_seconds_count{operation="StartContainer",step="shim/fork"} 2
berth_grpc_requests_total{method="x",code="OK"} 3
"#;

    #[test]
    fn parses_sums_and_counts_of_the_step_histogram_only() {
        let t = parse(TEXT);
        assert_eq!(t.len(), 3);
        assert_eq!(
            t[&("StartContainer".to_string(), "shim".to_string())],
            (0.030, 2)
        );
    }

    #[test]
    fn breakdown_is_the_mean_between_scrapes_in_the_given_order() {
        let after = parse(TEXT);
        let mut before = after.clone();
        before.insert(("StartContainer".into(), "shim".into()), (0.010, 1));
        before.remove(&("StartContainer".to_string(), "find".to_string()));
        before.remove(&("StartContainer".to_string(), "shim/fork".to_string()));
        let lines = breakdown(&before, &after, &["find", "shim"]);
        assert_eq!(
            lines,
            [
                "StartContainer steps, mean ms (sum 20.50): find 0.50, shim 20.00; inside shim: fork 2.00"
            ]
        );
    }

    #[test]
    fn no_new_calls_no_line() {
        let t = parse(TEXT);
        assert!(breakdown(&t, &t, &[]).is_empty());
    }
}
