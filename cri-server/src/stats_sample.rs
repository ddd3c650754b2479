//! One read of the figures behind the stats and metrics RPCs: a container's cgroup and
//! writable layer, a pod's cgroup and network namespace. Reads come from cgroupfs and
//! /proc only (no shim round trip) and run on a blocking thread, all records of a call on
//! one thread.
//!
//! Anything that cannot be read (a container not started yet, a cgroup removed mid-call, a
//! host without cgroups) is simply absent from the sample: one vanished container never
//! fails a whole list.

use runtime_core::cgroups::CgroupStats;
use tonic::Status;

use crate::container_store::ContainerRecord;
use crate::pod_store::{PodPhase, PodRecord};
use crate::sandbox_run::now_ns;
use crate::stats_cache::StatsCache;
use crate::stats_fs::LayerUsage;
use crate::stats_net::{self, InterfaceCounters};

/// Cgroup figures and when they were read (nanoseconds since the epoch).
#[derive(Debug, Clone, Copy)]
pub struct CgroupSample {
    pub stats: CgroupStats,
    pub at_ns: i64,
}

/// Network interface counters of a pod and when they were read.
#[derive(Debug, Clone)]
pub struct NetworkSample {
    pub interfaces: Vec<InterfaceCounters>,
    pub at_ns: i64,
}

/// What could be read about one container.
#[derive(Debug, Clone)]
pub struct ContainerSample {
    pub rec: ContainerRecord,
    /// Absent while the container has no cgroup (created, removed, or no cgroups on the host).
    pub cgroup: Option<CgroupSample>,
    /// Absent once the upper directory is gone.
    pub layer: Option<LayerUsage>,
}

/// What could be read about one pod and its containers.
#[derive(Debug, Clone)]
pub struct PodSample {
    pub rec: PodRecord,
    pub cgroup: Option<CgroupSample>,
    /// Absent for hostNetwork pods and pods that are not Ready.
    pub network: Option<NetworkSample>,
    pub containers: Vec<ContainerSample>,
}

/// Samples `recs` on a blocking thread.
pub async fn sample_containers(
    cache: &StatsCache,
    recs: Vec<ContainerRecord>,
) -> Result<Vec<ContainerSample>, Status> {
    let cache = cache.clone();
    tokio::task::spawn_blocking(move || {
        recs.into_iter()
            .map(|rec| sample_container(&cache, rec))
            .collect()
    })
    .await
    .map_err(|e| Status::internal(format!("container stats task: {e}")))
}

/// Samples each pod with its containers on a blocking thread.
pub async fn sample_pods(
    cache: &StatsCache,
    pods: Vec<(PodRecord, Vec<ContainerRecord>)>,
) -> Result<Vec<PodSample>, Status> {
    let cache = cache.clone();
    tokio::task::spawn_blocking(move || {
        pods.into_iter()
            .map(|(pod, containers)| sample_pod(&cache, pod, containers))
            .collect()
    })
    .await
    .map_err(|e| Status::internal(format!("pod stats task: {e}")))
}

/// Reads one container's cgroup and writable layer.
pub fn sample_container(cache: &StatsCache, rec: ContainerRecord) -> ContainerSample {
    let cgroup = sample_cgroup(cache, &rec.cgroup, &rec.id);
    let layer = match cache.layers().usage(&rec.id, &rec.upper) {
        Ok(usage) => Some(usage),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(container_id = %rec.id, upper = %rec.upper.display(), error = %e, "writable layer usage");
            None
        }
    };
    ContainerSample { rec, cgroup, layer }
}

/// Reads one pod's cgroup, network counters and containers.
pub fn sample_pod(
    cache: &StatsCache,
    rec: PodRecord,
    containers: Vec<ContainerRecord>,
) -> PodSample {
    let cgroup = sample_cgroup(cache, &rec.host.cgroup, &rec.id);
    let network = if rec.phase == PodPhase::Ready {
        sample_network(&rec)
    } else {
        None
    };
    let containers = containers
        .into_iter()
        .map(|c| sample_container(cache, c))
        .collect();
    PodSample {
        rec,
        cgroup,
        network,
        containers,
    }
}

/// The figures of cgroup `path`, if it exists and reads cleanly.
fn sample_cgroup(cache: &StatsCache, path: &str, owner: &str) -> Option<CgroupSample> {
    if path.is_empty() {
        return None;
    }
    let cgroup = match cache.cgroups()?.open(path) {
        Ok(Some(cgroup)) => cgroup,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(id = owner, cgroup = path, error = %e, "open cgroup for stats");
            return None;
        }
    };
    let at_ns = now_ns();
    match cgroup.stats() {
        Ok(stats) => Some(CgroupSample { stats, at_ns }),
        Err(e) => {
            // Removed between open and read: the container just went away.
            let gone = matches!(cache.cgroups().map(|c| c.open(path)), Some(Ok(None)));
            if !gone {
                tracing::warn!(id = owner, cgroup = path, error = %e, "read cgroup stats");
            }
            None
        }
    }
}

fn sample_network(rec: &PodRecord) -> Option<NetworkSample> {
    let at_ns = now_ns();
    match stats_net::pod_interfaces(&rec.host) {
        Ok(interfaces) => interfaces.map(|interfaces| NetworkSample { interfaces, at_ns }),
        Err(e) => {
            tracing::debug!(pod_id = %rec.id, error = %e, "pod network counters");
            None
        }
    }
}
