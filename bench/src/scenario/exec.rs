//! *exec*: ExecSync round-trip latency of `/bin/true` in a running busybox container, one pod
//! per runtime. A runtime that answers Unimplemented is reported as such and left out of the
//! remaining iterations.

use std::time::Instant;

use super::{Bench, progress};
use crate::report::{TargetResult, Unit};
use crate::stats::ms;
use crate::target::status;
use crate::workload::{interleave, start_pod};

/// The command run by every ExecSync.
const COMMAND: [&str; 1] = ["/bin/true"];

/// Runs `runs` ExecSync calls per runtime.
pub async fn run(b: &Bench, runs: usize) -> Result<Vec<TargetResult>, String> {
    b.prepull(&[]).await?;
    let mut results = b.results();
    let mut containers: Vec<Option<(String, String)>> = Vec::new();
    for (t, target) in b.targets.iter().enumerate() {
        match start_pod(&b.workload, target, t, 0, true).await {
            Ok(p) => containers.push(Some((p.pod_id, p.container_id))),
            Err(e) => {
                results[t].error(format!("start the exec pod: {e}"));
                containers.push(None);
            }
        }
    }
    let cmd: Vec<String> = COMMAND.map(String::from).to_vec();
    let mut active: Vec<bool> = containers.iter().map(Option::is_some).collect();
    let bar = progress((runs * b.targets.len()) as u64, "exec");
    for i in 0..runs {
        for t in interleave(i, b.targets.len()) {
            bar.inc(1);
            let Some((_, container)) = containers[t].as_ref().filter(|_| active[t]) else {
                continue;
            };
            let t0 = Instant::now();
            let answer = b.targets[t].exec_sync(container, &cmd).await;
            let elapsed = ms(t0.elapsed());
            let r = &mut results[t];
            match answer {
                Ok(resp) if resp.exit_code == 0 => r.sample("ExecSync", elapsed),
                Ok(resp) => r.error(format!("exec {i}: exit code {}", resp.exit_code)),
                Err(s) if s.code() == tonic::Code::Unimplemented => {
                    r.error(format!(
                        "ExecSync: {} (skipped the remaining runs)",
                        status(&s)
                    ));
                    active[t] = false;
                }
                Err(s) => r.error(format!("exec {i}: ExecSync: {}", status(&s))),
            }
            b.pause().await;
        }
    }
    bar.finish_and_clear();
    for (t, c) in containers.iter().enumerate() {
        if let Some((pod, _)) = c
            && let Err(e) = b.targets[t].remove_pod(pod).await
        {
            results[t].error(e);
        }
    }
    for r in &mut results {
        r.latency("ExecSync");
        let errors = r.errors.len() as f64;
        r.metric("errors", Unit::Count, Some(errors));
    }
    Ok(results)
}
