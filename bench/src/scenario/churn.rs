//! *churn*: M concurrent workers per runtime, each creating a pod (with its container) and
//! deleting it again, for T seconds: completed pods per second and errors. The T seconds are
//! split into rounds that alternate between the runtimes, which never run at the same time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use super::{Bench, progress};
use crate::report::{TargetResult, Unit};
use crate::stats::ms;
use crate::target::Target;
use crate::workload::{Workload, interleave, start_pod};

/// Parameters of a churn run.
#[derive(Debug, Clone, Copy)]
pub struct Churn {
    pub workers: usize,
    /// Total time each runtime churns.
    pub duration: Duration,
    /// Rounds the time is split into (alternating runtimes).
    pub rounds: usize,
}

/// What one runtime achieved over its rounds.
#[derive(Debug, Default)]
struct Tally {
    completed: usize,
    elapsed: Duration,
}

/// Runs the scenario.
pub async fn run(b: &Bench, c: Churn) -> Result<Vec<TargetResult>, String> {
    b.prepull(&[]).await?;
    let rounds = c.rounds.max(1);
    let slice = c.duration / rounds as u32;
    let mut results = b.results();
    let mut tallies: Vec<Tally> = b.targets.iter().map(|_| Tally::default()).collect();
    let counter = AtomicUsize::new(0);
    let bar = progress((rounds * b.targets.len()) as u64, "churn");
    for round in 0..rounds {
        for t in interleave(round, b.targets.len()) {
            bar.set_message(b.targets[t].name.clone());
            let started = Instant::now();
            let deadline = started + slice;
            let workers =
                (0..c.workers).map(|_| worker(&b.workload, &b.targets[t], t, deadline, &counter));
            for outcome in join_all(workers).await {
                for (lifecycle, err) in outcome {
                    match err {
                        None => {
                            tallies[t].completed += 1;
                            results[t].sample("pod lifecycle", lifecycle);
                        }
                        Some(e) => results[t].error(e),
                    }
                }
            }
            tallies[t].elapsed += started.elapsed();
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    for (r, tally) in results.iter_mut().zip(&tallies) {
        let secs = tally.elapsed.as_secs_f64();
        r.metric("pods completed", Unit::Count, Some(tally.completed as f64));
        r.metric("time churning", Unit::Seconds, Some(secs));
        r.metric(
            "pods/s",
            Unit::PerSecond,
            (secs > 0.0).then(|| tally.completed as f64 / secs),
        );
        r.latency("pod lifecycle");
        let errors = r.errors.len() as f64;
        r.metric("errors", Unit::Count, Some(errors));
    }
    Ok(results)
}

/// Creates and deletes pods until `deadline`; per pod, its lifecycle time in ms and an error.
async fn worker(
    w: &Workload,
    target: &Target,
    t: usize,
    deadline: Instant,
    counter: &AtomicUsize,
) -> Vec<(f64, Option<String>)> {
    let mut out = Vec::new();
    while Instant::now() < deadline {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let t0 = Instant::now();
        let result = match start_pod(w, target, t, n, false).await {
            Ok(pod) => target.remove_pod(&pod.pod_id).await,
            Err(e) => Err(e),
        };
        out.push((
            ms(t0.elapsed()),
            result.err().map(|e| format!("pod {n}: {e}")),
        ));
    }
    out
}
