//! *burst*: N pods (kubelet's default maximum is 110) started at once by C concurrent clients,
//! as kubelet's pod workers do after a node comes up or a Deployment scales: the wall time
//! until every container is Running (its StartContainer returned), each pod's own start time
//! (RunPodSandbox + CreateContainer + StartContainer) and errors, for every C given. The pods
//! of one burst are removed (untimed, with the same concurrency) before the next; the runtimes
//! take turns per burst and never run at the same time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use futures_util::future::join_all;

use super::{Bench, progress};
use crate::report::{TargetResult, Unit};
use crate::stats::ms;
use crate::target::Target;
use crate::workload::{Workload, interleave, start_pod};

/// Parameters of a burst run.
#[derive(Debug, Clone)]
pub struct Burst {
    /// Pods per burst.
    pub pods: usize,
    /// Concurrent clients of each burst, one burst per entry.
    pub clients: Vec<usize>,
    /// Bursts per client count and runtime; the wall time reported is their median.
    pub rounds: usize,
}

/// The sample name for bursts of `clients` clients.
pub fn step(clients: usize) -> String {
    format!("pod start, {}", of_clients(clients))
}

/// The metric name of the wall time of bursts of `clients` clients.
pub fn wall(clients: usize) -> String {
    format!("all Running, {}", of_clients(clients))
}

fn of_clients(n: usize) -> String {
    match n {
        1 => "1 client".into(),
        n => format!("{n} clients"),
    }
}

/// Runs the scenario.
pub async fn run(b: &Bench, burst: &Burst) -> Result<Vec<TargetResult>, String> {
    b.prepull(&[]).await?;
    let rounds = burst.rounds.max(1);
    let mut results = b.results();
    let bar = progress(
        (burst.clients.len() * rounds * b.targets.len()) as u64,
        "burst",
    );
    // Pod numbers stay unique over the run, so names never collide with a pod being removed.
    let counter = AtomicUsize::new(0);
    for (k, &clients) in burst.clients.iter().enumerate() {
        let mut walls: Vec<Vec<f64>> = vec![Vec::new(); b.targets.len()];
        for round in 0..rounds {
            for t in interleave(k * rounds + round, b.targets.len()) {
                let target = &b.targets[t];
                bar.set_message(format!("{} × {clients}", target.name));
                let first = counter.fetch_add(burst.pods, Ordering::Relaxed);
                let next = AtomicUsize::new(0);
                let started = Instant::now();
                let workers = (0..clients.max(1))
                    .map(|_| starter(&b.workload, target, t, first, burst.pods, &next));
                let outcomes: Vec<_> = join_all(workers).await.into_iter().flatten().collect();
                walls[t].push(ms(started.elapsed()) / 1000.0);
                let mut pods = Vec::new();
                for outcome in outcomes {
                    match outcome {
                        Ok((pod_id, took)) => {
                            results[t].sample(&step(clients), took);
                            pods.push(pod_id);
                        }
                        Err(e) => results[t].error(e),
                    }
                }
                for e in remove_all(target, pods, clients).await {
                    results[t].error(e);
                }
                bar.inc(1);
                b.pause().await;
            }
        }
        for (r, mut w) in results.iter_mut().zip(walls) {
            w.sort_by(f64::total_cmp);
            r.metric(wall(clients), Unit::Seconds, w.get(w.len() / 2).copied());
        }
    }
    bar.finish_and_clear();
    for r in &mut results {
        for &clients in &burst.clients {
            r.latency(&step(clients));
        }
        let errors = r.errors.len() as f64;
        r.metric("errors", Unit::Count, Some(errors));
    }
    Ok(results)
}

/// Starts pods `first + next` until `pods` are taken; per pod, its ID and start time in ms.
async fn starter(
    w: &Workload,
    target: &Target,
    t: usize,
    first: usize,
    pods: usize,
    next: &AtomicUsize,
) -> Vec<Result<(String, f64), String>> {
    let mut out = Vec::new();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= pods {
            return out;
        }
        let n = first + i;
        out.push(
            start_pod(w, target, t, n, false)
                .await
                .map(|pod| (pod.pod_id, pod.timings.total()))
                .map_err(|e| format!("pod {n}: {e}")),
        );
    }
}

/// Removes `pods` with `clients` concurrent removals; the errors.
async fn remove_all(target: &Target, pods: Vec<String>, clients: usize) -> Vec<String> {
    let queue = std::sync::Mutex::new(pods);
    let remover = || async {
        let mut errors = Vec::new();
        loop {
            let pod = match queue.lock() {
                Ok(mut q) => q.pop(),
                Err(_) => None,
            };
            let Some(pod) = pod else {
                return errors;
            };
            if let Err(e) = target.remove_pod(&pod).await {
                errors.push(format!("remove {pod}: {e}"));
            }
        }
    };
    join_all((0..clients.max(1)).map(|_| remover()))
        .await
        .into_iter()
        .flatten()
        .collect()
}
