//! `ContainerStats` and `ListContainerStats`: CPU and memory from the container's cgroup,
//! writable-layer usage from its overlay upper directory (see `docs/stats.md`).
//!
//! Like containerd, every container in the store is listed: one without a cgroup (created,
//! or exited and cleaned up) carries its attributes and writable layer only.

use proto::cri::{
    ContainerStatsFilter, ContainerStatsRequest, ContainerStatsResponse, ListContainerStatsRequest,
    ListContainerStatsResponse,
};
use tonic::Status;

use crate::lifecycle::record::find;
use crate::state::DaemonState;
use crate::stats::cri;
use crate::stats::sample::sample_containers;
use crate::stats::select::forget_removed;
use crate::store::containers::ContainerRecord;
use crate::store::filter::state_and_labels_match;

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
        stats: Some(cri::container_stats(&sample, state.stats.container_cpu())),
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
            forget_removed(&state.stats, &all);
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
        stats: samples
            .iter()
            .map(|s| cri::container_stats(s, rates))
            .collect(),
    })
}

/// The pod and label parts of the filter, as `ListContainers` applies them: the pod ID as a
/// prefix, every selector label present with its value.
fn matches(rec: &ContainerRecord, filter: Option<&ContainerStatsFilter>) -> bool {
    let Some(f) = filter else { return true };
    if !f.pod_sandbox_id.is_empty() && !rec.pod_id.starts_with(&f.pod_sandbox_id) {
        return false;
    }
    state_and_labels_match(None, 0, &f.label_selector, &rec.config.labels)
}
