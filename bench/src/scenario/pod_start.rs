//! *pod-start*: N pods one after another per runtime, each RunPodSandbox + CreateContainer +
//! StartContainer of a busybox `sleep`, timed per step and in total; then the time until the
//! container's first log line, and the teardown (StopPodSandbox + RemovePodSandbox), which
//! is not part of the total.

use std::time::Instant;

use super::{Bench, progress};
use crate::report::{TargetResult, Unit};
use crate::stats::ms;
use crate::steps;
use crate::workload::{interleave, start_pod};

/// Step names, as they appear in the table and in the JSON samples.
pub const STEPS: [&str; 6] = [
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "total",
    "start→first log line",
    "teardown",
];

/// berthd's and berth-shim's step names in the order they happen, for the breakdown.
const STEP_ORDER: &[&str] = &[
    // RunPodSandbox
    "validate",
    "reserve",
    "files",
    "cgroup",
    "netns",
    "shim_spawn_and_network",
    "shim_network_cgroup",
    "shim_spawn",
    "systemd_scope",
    "shim_cgroup",
    "network",
    "hosts_file",
    "nri",
    "record_ready",
    // StartContainer (berthd, then berth-shim's inside its `shim` round trip)
    "find",
    "record_created",
    "message",
    "shim",
    "record_running",
    "post_start",
    "shim/open_log",
    "shim/seccomp",
    "shim/stdio",
    "shim/plan",
    "shim/idmaps",
    "shim/overlay",
    "shim/fork",
    "shim/child_prepare",
    "shim/child_namespaces",
    "shim/child_isolate",
    "shim/child_system_mounts",
    "shim/child_cri_mounts",
    "shim/child_pivot_root",
    "shim/child_credentials",
    "shim/child_exec",
    "shim/record",
    // StopPodSandbox, RemovePodSandbox
    "record_notready",
    "kill",
    "shim_shutdown",
    "containers",
    "cgroup_and_files",
    "record",
];

/// Each target's step totals from its metrics endpoint, None where it has none (containerd),
/// it could not be read, or an earlier target is the same daemon (two handlers of one berthd:
/// its steps are those of both, printed once).
async fn scrape_steps(b: &Bench) -> Vec<Option<steps::StepTotals>> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for t in &b.targets {
        let addr = t.metrics_address().await.filter(|a| !seen.contains(a));
        seen.extend(addr.clone());
        let totals = match addr {
            Some(addr) => steps::scrape(&addr).await.ok(),
            None => None,
        };
        out.push(totals);
    }
    out
}

/// Runs the scenario with `pods` pods per runtime.
pub async fn run(b: &Bench, pods: usize) -> Result<Vec<TargetResult>, String> {
    b.prepull(&[]).await?;
    let mut results = b.results();
    let steps_before = scrape_steps(b).await;
    let bar = progress((pods * b.targets.len()) as u64, "pod-start");
    for i in 0..pods {
        for t in interleave(i, b.targets.len()) {
            let target = &b.targets[t];
            bar.set_message(target.name.clone());
            let r = &mut results[t];
            match start_pod(&b.workload, target, t, i, true).await {
                Ok(pod) => {
                    let tm = pod.timings;
                    r.sample(STEPS[0], tm.run);
                    r.sample(STEPS[1], tm.create);
                    r.sample(STEPS[2], tm.start);
                    r.sample(STEPS[3], tm.total());
                    match tm.first_log {
                        Some(v) => r.sample(STEPS[4], v),
                        None => r.error(format!("pod {i}: no log line within 10 s")),
                    }
                    let t0 = Instant::now();
                    match target.remove_pod(&pod.pod_id).await {
                        Ok(()) => r.sample(STEPS[5], ms(t0.elapsed())),
                        Err(e) => r.error(format!("pod {i}: {e}")),
                    }
                }
                Err(e) => r.error(format!("pod {i}: {e}")),
            }
            bar.inc(1);
            b.pause().await;
        }
    }
    bar.finish_and_clear();
    let steps_after = scrape_steps(b).await;
    for (r, (before, after)) in results
        .iter_mut()
        .zip(steps_before.iter().zip(&steps_after))
    {
        if let (Some(before), Some(after)) = (before, after) {
            r.notes.extend(steps::breakdown(before, after, STEP_ORDER));
        }
    }
    for r in &mut results {
        for step in STEPS {
            r.latency(step);
        }
        let errors = r.errors.len() as f64;
        r.metric("errors", Unit::Count, Some(errors));
    }
    Ok(results)
}
