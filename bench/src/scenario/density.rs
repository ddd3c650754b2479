//! *density*: N pods kept running per runtime; the runtime's memory (daemon and helpers, RSS
//! and PSS) measured idle before the first pod (after pre-pulling the image) and again with
//! all pods up, total and per pod. The daemon's RSS is also taken before the pre-pull.
//! Container workloads are not counted (see [`crate::memory`]).

use std::time::Duration;

use super::{Bench, progress};
use crate::memory::RuntimeMemory;
use crate::report::{TargetResult, Unit};
use crate::workload::{interleave, start_pod};

/// Runs the scenario: `pods` pods per runtime, measured `settle` after the last one started.
pub async fn run(b: &Bench, pods: usize, settle: Duration) -> Result<Vec<TargetResult>, String> {
    let mut results = b.results();
    // Before anything this run does (a fresh daemon's footprint if the image is new to it).
    let fresh: Vec<Option<f64>> = b
        .targets
        .iter()
        .map(|t| t.memory(&b.proc_root).ok().map(|m| m.daemon().rss_mib()))
        .collect();
    b.prepull(&[]).await?;
    tokio::time::sleep(settle).await;
    let mut idle: Vec<Option<RuntimeMemory>> = b
        .targets
        .iter()
        .zip(results.iter_mut())
        .map(|(t, r)| t.memory(&b.proc_root).map_err(|e| r.error(e)).ok())
        .collect();
    let mut running: Vec<Vec<String>> = vec![Vec::new(); b.targets.len()];
    let bar = progress((pods * b.targets.len()) as u64, "density");
    for i in 0..pods {
        for t in interleave(i, b.targets.len()) {
            bar.set_message(b.targets[t].name.clone());
            match start_pod(&b.workload, &b.targets[t], t, i, false).await {
                Ok(p) => {
                    results[t].sample("pod start total", p.timings.total());
                    running[t].push(p.pod_id);
                }
                Err(e) => results[t].error(format!("pod {i}: {e}")),
            }
            bar.inc(1);
            b.pause().await;
        }
    }
    bar.finish_and_clear();
    tokio::time::sleep(settle).await;
    let mut loaded: Vec<Option<RuntimeMemory>> = b
        .targets
        .iter()
        .zip(results.iter_mut())
        .map(|(t, r)| t.memory(&b.proc_root).map_err(|e| r.error(e)).ok())
        .collect();
    let bar = progress((pods * b.targets.len()) as u64, "density: removing pods");
    for i in 0..pods {
        for t in interleave(i, b.targets.len()) {
            if let Some(pod) = running[t].get(i)
                && let Err(e) = b.targets[t].remove_pod(pod).await
            {
                results[t].error(e);
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    for (t, r) in results.iter_mut().enumerate() {
        let n = running[t].len();
        r.metric("daemon RSS before pre-pull", Unit::Mib, fresh[t]);
        summarize(r, n, idle[t].take(), loaded[t].take());
    }
    Ok(results)
}

/// Turns the two memory snapshots of one runtime with `n` pods into figures.
pub fn summarize(
    r: &mut TargetResult,
    n: usize,
    idle: Option<RuntimeMemory>,
    loaded: Option<RuntimeMemory>,
) {
    let per_pod = |v: f64| (n > 0).then(|| v / n as f64);
    r.metric("pods running", Unit::Count, Some(n as f64));
    let idle_d = idle.as_ref().map(RuntimeMemory::daemon);
    let loaded_d = loaded.as_ref().map(RuntimeMemory::daemon);
    let helpers = loaded.as_ref().map(RuntimeMemory::helpers);
    r.metric("daemon RSS idle", Unit::Mib, idle_d.map(|u| u.rss_mib()));
    r.metric("daemon PSS idle", Unit::Mib, idle_d.map(|u| u.pss_mib()));
    r.metric(
        "daemon RSS with pods",
        Unit::Mib,
        loaded_d.map(|u| u.rss_mib()),
    );
    let growth = |f: fn(&crate::memory::Usage) -> f64| match (idle_d, loaded_d) {
        (Some(a), Some(b)) => per_pod(f(&b) - f(&a)),
        _ => None,
    };
    r.metric(
        "daemon RSS growth per pod",
        Unit::Mib,
        growth(|u| u.rss_mib()),
    );
    r.metric(
        "daemon PSS growth per pod",
        Unit::Mib,
        growth(|u| u.pss_mib()),
    );
    r.metric(
        "helper processes",
        Unit::Count,
        loaded.as_ref().map(|m| m.helper_count() as f64),
    );
    r.metric("helpers RSS total", Unit::Mib, helpers.map(|u| u.rss_mib()));
    r.metric("helpers PSS total", Unit::Mib, helpers.map(|u| u.pss_mib()));
    r.metric(
        "helpers RSS per pod",
        Unit::Mib,
        helpers.and_then(|u| per_pod(u.rss_mib())),
    );
    r.metric(
        "helpers PSS per pod",
        Unit::Mib,
        helpers.and_then(|u| per_pod(u.pss_mib())),
    );
    let total = loaded.as_ref().map(|m| m.daemon() + m.helpers());
    r.metric(
        "runtime PSS total with pods",
        Unit::Mib,
        total.map(|u| u.pss_mib()),
    );
    r.latency("pod start total");
    if let Some(m) = &loaded {
        for (comm, (count, u)) in m.helpers_by_command() {
            r.notes.push(format!(
                "{count} × {comm}: RSS {:.2} MiB, PSS {:.2} MiB each (mean)",
                u.rss_mib() / count as f64,
                u.pss_mib() / count as f64
            ));
        }
    }
    if let Some(m) = idle {
        r.memory.insert("idle".into(), m);
    }
    if let Some(m) = loaded {
        r.memory.insert("loaded".into(), m);
    }
    let errors = r.errors.len() as f64;
    r.metric("errors", Unit::Count, Some(errors));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{Member, Role, Usage};

    fn member(pid: u32, comm: &str, role: Role, rss_kib: u64, pss_kib: u64) -> Member {
        Member {
            pid,
            comm: comm.into(),
            role,
            usage: Usage { rss_kib, pss_kib },
        }
    }

    fn value(r: &TargetResult, name: &str) -> Option<f64> {
        r.metrics
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.value)
    }

    #[test]
    fn per_pod_figures_divide_helpers_and_daemon_growth_by_pods() {
        let idle = RuntimeMemory {
            members: vec![member(1, "berthd", Role::Daemon, 10 * 1024, 9 * 1024)],
        };
        let loaded = RuntimeMemory {
            members: vec![
                member(1, "berthd", Role::Daemon, 12 * 1024, 10 * 1024),
                member(2, "berth-shim", Role::Helper, 1024, 256),
                member(3, "berth-shim", Role::Helper, 1024, 256),
            ],
        };
        let mut r = TargetResult::default();
        summarize(&mut r, 2, Some(idle), Some(loaded));
        assert_eq!(value(&r, "daemon RSS idle"), Some(10.0));
        assert_eq!(value(&r, "daemon RSS growth per pod"), Some(1.0));
        assert_eq!(value(&r, "daemon PSS growth per pod"), Some(0.5));
        assert_eq!(value(&r, "helpers RSS per pod"), Some(1.0));
        assert_eq!(value(&r, "helpers PSS per pod"), Some(0.25));
        assert_eq!(value(&r, "helper processes"), Some(2.0));
        assert_eq!(value(&r, "runtime PSS total with pods"), Some(10.5));
        assert!(
            r.notes[0].starts_with("2 × berth-shim: RSS 1.00 MiB"),
            "{:?}",
            r.notes
        );
    }

    #[test]
    fn without_pods_or_snapshots_figures_are_na() {
        let mut r = TargetResult::default();
        summarize(&mut r, 0, None, None);
        assert_eq!(value(&r, "helpers RSS per pod"), None);
        assert_eq!(value(&r, "daemon RSS idle"), None);
    }
}
