//! `ContainerStats` and `ListContainerStats`: CPU and memory from the container's cgroup,
//! writable-layer usage from its overlay upper directory (see `docs/stats.md`).
//!
//! Like containerd, every container in the store is listed: one without a cgroup (created,
//! or exited and cleaned up) carries its attributes and writable layer only.

use std::collections::HashSet;

use proto::cri::{
    ContainerAttributes, ContainerStats, ContainerStatsFilter, ContainerStatsRequest,
    ContainerStatsResponse, CpuUsage, FilesystemIdentifier, FilesystemUsage,
    ListContainerStatsRequest, ListContainerStatsResponse, MemoryUsage, UInt64Value,
};
use tonic::Status;

use crate::lifecycle::record::find;
use crate::state::DaemonState;
use crate::stats::cpu::{CpuRates, CpuSample};
use crate::stats::fs::LayerUsage;
use crate::stats::sample::{CgroupSample, ContainerSample, sample_containers};
use crate::store::containers::ContainerRecord;

pub async fn container_stats(
    state: &DaemonState,
    req: &ContainerStatsRequest,
) -> Result<ContainerStatsResponse, Status> {
    if req.container_id.is_empty() {
        return Err(Status::invalid_argument("container_id is required"));
    }
    let rec = find(state, &req.container_id)?;
    let sample = sample_containers(&state.stats, vec![rec])
        .await?
        .pop()
        .ok_or_else(|| Status::internal("container stats: no sample"))?;
    Ok(ContainerStatsResponse {
        stats: Some(to_cri(&sample, state.stats.container_cpu())),
    })
}

pub async fn list_container_stats(
    state: &DaemonState,
    req: &ListContainerStatsRequest,
) -> Result<ListContainerStatsResponse, Status> {
    let filter = req.filter.as_ref();
    let all = state.containers.list();
    // The ID filter names one container, exactly or by unique prefix; none matches nothing.
    let wanted = match filter.map(|f| f.id.as_str()).filter(|id| !id.is_empty()) {
        Some(id) => match state.containers.find(id) {
            Some(rec) => Some(rec.id),
            None => return Ok(ListContainerStatsResponse::default()),
        },
        None => {
            forget_removed(state, &all);
            None
        }
    };
    let selected = all
        .into_iter()
        .filter(|r| wanted.as_ref().is_none_or(|id| &r.id == id) && matches(r, filter))
        .collect();
    let samples = sample_containers(&state.stats, selected).await?;
    let rates = state.stats.container_cpu();
    Ok(ListContainerStatsResponse {
        stats: samples.iter().map(|s| to_cri(s, rates)).collect(),
    })
}

/// Drops cached samples of containers no longer in `all` (the whole store).
pub fn forget_removed(state: &DaemonState, all: &[ContainerRecord]) {
    let known: HashSet<&str> = all.iter().map(|r| r.id.as_str()).collect();
    state.stats.container_cpu().retain(|id| known.contains(id));
    state.stats.layers().retain(|id| known.contains(id));
}

/// The pod and label parts of the filter, as `ListContainers` applies them: the pod ID as a
/// prefix, every selector label present with its value.
fn matches(rec: &ContainerRecord, filter: Option<&ContainerStatsFilter>) -> bool {
    let Some(f) = filter else { return true };
    if !f.pod_sandbox_id.is_empty() && !rec.pod_id.starts_with(&f.pod_sandbox_id) {
        return false;
    }
    crate::rpc::sandbox_list::state_and_labels_match(None, 0, &f.label_selector, &rec.config.labels)
}

/// The CRI view of a sample; updates the container's CPU rate.
pub fn to_cri(sample: &ContainerSample, rates: &CpuRates) -> ContainerStats {
    let rec = &sample.rec;
    ContainerStats {
        attributes: Some(ContainerAttributes {
            id: rec.id.clone(),
            metadata: Some(rec.metadata()),
            labels: rec.config.labels.clone(),
            annotations: rec.config.annotations.clone(),
        }),
        cpu: sample.cgroup.map(|c| cpu_usage(&rec.id, c, rates)),
        memory: sample.cgroup.map(memory_usage),
        writable_layer: sample.layer.as_ref().map(filesystem_usage),
        swap: None,
        // Pressure (PSI) figures are not read yet: io carries only them.
        io: None,
    }
}

/// CPU usage with the rate since `id`'s previous sample (absent on the first one).
pub fn cpu_usage(id: &str, c: CgroupSample, rates: &CpuRates) -> CpuUsage {
    let sample = CpuSample {
        usage_ns: c.stats.cpu_usage_ns,
        at_ns: c.at_ns,
    };
    CpuUsage {
        timestamp: c.at_ns,
        usage_core_nano_seconds: Some(value(c.stats.cpu_usage_ns)),
        usage_nano_cores: rates.observe(id, sample).map(value),
        psi: None,
    }
}

/// Memory usage; `available_bytes` only when the cgroup has a limit.
pub fn memory_usage(c: CgroupSample) -> MemoryUsage {
    let s = c.stats;
    MemoryUsage {
        timestamp: c.at_ns,
        working_set_bytes: Some(value(s.memory_working_set)),
        available_bytes: s
            .memory_limit
            .map(|limit| value(limit.saturating_sub(s.memory_working_set))),
        usage_bytes: Some(value(s.memory_usage)),
        rss_bytes: Some(value(s.memory_rss)),
        page_faults: Some(value(s.page_faults)),
        major_page_faults: Some(value(s.major_page_faults)),
        psi: None,
    }
}

fn filesystem_usage(layer: &LayerUsage) -> FilesystemUsage {
    FilesystemUsage {
        timestamp: layer.at_ns,
        fs_id: Some(FilesystemIdentifier {
            mountpoint: layer.mountpoint.clone(),
        }),
        used_bytes: Some(value(layer.bytes)),
        inodes_used: Some(value(layer.inodes)),
    }
}

/// A CRI `UInt64Value`.
pub fn value(value: u64) -> UInt64Value {
    UInt64Value { value }
}
