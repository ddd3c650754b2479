//! *pod-start*: N pods one after another per runtime, each RunPodSandbox + CreateContainer +
//! StartContainer of a busybox `sleep`, timed per step and in total; then the time until the
//! container's first log line, and the teardown (StopPodSandbox + RemovePodSandbox), which
//! is not part of the total.

use std::time::Instant;

use super::{Bench, progress};
use crate::report::{TargetResult, Unit};
use crate::stats::ms;
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

/// Runs the scenario with `pods` pods per runtime.
pub async fn run(b: &Bench, pods: usize) -> Result<Vec<TargetResult>, String> {
    b.prepull(&[]).await?;
    let mut results = b.results();
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
    for r in &mut results {
        for step in STEPS {
            r.latency(step);
        }
        let errors = r.errors.len() as f64;
        r.metric("errors", Unit::Count, Some(errors));
    }
    Ok(results)
}
