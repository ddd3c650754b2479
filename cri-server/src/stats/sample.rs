//! One read of the figures behind the stats and metrics RPCs: a container's cgroup and
//! writable layer, a pod's cgroup and network namespace. Reads come from cgroupfs and
//! /proc only (no shim round trip) and run on a blocking thread, all records of a call on
//! one thread.
//!
//! Anything that cannot be read (a container not started yet, a cgroup removed mid-call, a
//! host without cgroups) is simply absent from the sample: one vanished container never
//! fails a whole list.

use std::path::Path;

use runtime_core::cgroups::{Cgroup, CgroupError, CgroupMetrics, CgroupStats};
use tonic::Status;

use crate::stats::cache::StatsCache;
use crate::stats::fs::{self, FsCapacity, LayerUsage};
use crate::stats::net::{self, InterfaceCounters};
use crate::stats::proc::{self, ProcessCounts};
use crate::store::containers::ContainerRecord;
use crate::store::ids::now_ns;
use crate::store::pods::{PodPhase, PodRecord};

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

/// What could be read about one pod and its containers: for the stats, the cgroup's figures
/// (`C`) and each container's (`K`); [`PodMetricsSample`] holds more of both for the metrics.
#[derive(Debug, Clone)]
pub struct PodSample<C = CgroupSample, K = ContainerSample> {
    pub rec: PodRecord,
    pub cgroup: Option<C>,
    /// Absent for hostNetwork pods and pods that are not Ready.
    pub network: Option<NetworkSample>,
    pub containers: Vec<K>,
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
    sample_pods_with(cache, pods, "pod stats", sample_pod).await
}

/// Samples each pod with its containers for the metrics, on a blocking thread.
pub async fn sample_pods_for_metrics(
    cache: &StatsCache,
    pods: Vec<(PodRecord, Vec<ContainerRecord>)>,
) -> Result<Vec<PodMetricsSample>, Status> {
    sample_pods_with(cache, pods, "pod metrics", sample_pod_metrics).await
}

/// Runs `sample` on each pod with its containers, all on one blocking thread.
async fn sample_pods_with<T: Send + 'static>(
    cache: &StatsCache,
    pods: Vec<(PodRecord, Vec<ContainerRecord>)>,
    what: &'static str,
    sample: fn(&StatsCache, PodRecord, Vec<ContainerRecord>) -> T,
) -> Result<Vec<T>, Status> {
    let cache = cache.clone();
    tokio::task::spawn_blocking(move || {
        pods.into_iter()
            .map(|(pod, containers)| sample(&cache, pod, containers))
            .collect()
    })
    .await
    .map_err(|e| Status::internal(format!("{what} task: {e}")))
}

/// Reads one container's cgroup and writable layer.
fn sample_container(cache: &StatsCache, rec: ContainerRecord) -> ContainerSample {
    let cgroup = sample_cgroup(cache, &rec.cgroup, &rec.id);
    let layer = sample_layer(cache, &rec);
    ContainerSample { rec, cgroup, layer }
}

fn sample_layer(cache: &StatsCache, rec: &ContainerRecord) -> Option<LayerUsage> {
    match cache.layers().usage(&rec.id, &rec.upper) {
        Ok(usage) => Some(usage),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(container_id = %rec.id, upper = %rec.upper.display(), error = %e, "writable layer usage");
            None
        }
    }
}

/// Reads one pod's cgroup, network counters and containers.
fn sample_pod(cache: &StatsCache, rec: PodRecord, containers: Vec<ContainerRecord>) -> PodSample {
    sample_pod_with(cache, rec, containers, sample_cgroup, sample_container)
}

/// Reads one pod's cgroup (with `cgroup`), network counters and containers (with
/// `container`).
fn sample_pod_with<C, K>(
    cache: &StatsCache,
    rec: PodRecord,
    containers: Vec<ContainerRecord>,
    cgroup: fn(&StatsCache, &str, &str) -> Option<C>,
    container: fn(&StatsCache, ContainerRecord) -> K,
) -> PodSample<C, K> {
    let cgroup = cgroup(cache, &rec.host.cgroup, &rec.id);
    let network = if rec.phase == PodPhase::Ready {
        sample_network(&rec)
    } else {
        None
    };
    let containers = containers
        .into_iter()
        .map(|c| container(cache, c))
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
    read_cgroup(cache, path, owner, |c| c.stats())
        .map(|(stats, at_ns)| CgroupSample { stats, at_ns })
}

/// What `read` returns for cgroup `path` and when it was read, if the cgroup exists and reads
/// cleanly.
fn read_cgroup<T>(
    cache: &StatsCache,
    path: &str,
    owner: &str,
    read: impl FnOnce(&dyn Cgroup) -> Result<T, CgroupError>,
) -> Option<(T, i64)> {
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
    match read(cgroup.as_ref()) {
        Ok(figures) => Some((figures, at_ns)),
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
    match net::pod_interfaces(&rec.host) {
        Ok(interfaces) => interfaces.map(|interfaces| NetworkSample { interfaces, at_ns }),
        Err(e) => {
            tracing::debug!(pod_id = %rec.id, error = %e, "pod network counters");
            None
        }
    }
}

/// Everything the metrics report about a cgroup: its figures, its processes' descriptors, the
/// names of the block devices it did I/O on (in `metrics.block_io` order), and when it was read.
#[derive(Debug, Clone)]
pub struct CgroupMetricsSample {
    pub metrics: CgroupMetrics,
    pub procs: ProcessCounts,
    pub device_names: Vec<String>,
    pub at_ns: i64,
}

/// What the metrics report about one container.
#[derive(Debug, Clone)]
pub struct ContainerMetricsSample {
    pub rec: ContainerRecord,
    pub cgroup: Option<CgroupMetricsSample>,
    pub layer: Option<LayerUsage>,
    /// The filesystem holding the writable layer.
    pub fs: Option<FsCapacity>,
    /// The soft open-files limit of the container's process (absent if unlimited or exited).
    pub open_files_limit: Option<u64>,
}

/// What the metrics report about one pod and its containers.
pub type PodMetricsSample = PodSample<CgroupMetricsSample, ContainerMetricsSample>;

fn sample_pod_metrics(
    cache: &StatsCache,
    rec: PodRecord,
    containers: Vec<ContainerRecord>,
) -> PodMetricsSample {
    sample_pod_with(
        cache,
        rec,
        containers,
        sample_cgroup_metrics,
        sample_container_metrics,
    )
}

fn sample_container_metrics(cache: &StatsCache, rec: ContainerRecord) -> ContainerMetricsSample {
    let cgroup = sample_cgroup_metrics(cache, &rec.cgroup, &rec.id);
    let layer = sample_layer(cache, &rec);
    let fs = layer
        .as_ref()
        .and_then(|_| fs::fs_capacity(&rec.upper).ok());
    let open_files_limit = (cgroup.is_some() && rec.pid != 0)
        .then(|| proc::open_files_soft_limit(Path::new("/proc"), rec.pid))
        .flatten();
    ContainerMetricsSample {
        rec,
        cgroup,
        layer,
        fs,
        open_files_limit,
    }
}

fn sample_cgroup_metrics(
    cache: &StatsCache,
    path: &str,
    owner: &str,
) -> Option<CgroupMetricsSample> {
    let (metrics, at_ns) = read_cgroup(cache, path, owner, |c| c.metrics())?;
    let procs = proc::process_counts(Path::new("/proc"), &metrics.processes);
    let device_names = metrics
        .block_io
        .iter()
        .map(|d| fs::block_device_name(Path::new("/sys"), d.major, d.minor))
        .collect();
    Some(CgroupMetricsSample {
        metrics,
        procs,
        device_names,
        at_ns,
    })
}
