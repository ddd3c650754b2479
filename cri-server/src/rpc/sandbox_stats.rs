//! `PodSandboxStats` and `ListPodSandboxStats`: CPU, memory and process count from the pod
//! cgroup, network counters from the pod's network namespace, and the stats of each of the
//! pod's containers (see `docs/stats.md`).
//!
//! As in containerd, the list covers Ready pods only; asking for one pod by ID also answers
//! for a stopped pod, with whatever can still be read.

use proto::cri::{
    ListPodSandboxStatsRequest, ListPodSandboxStatsResponse, PodSandboxStatsRequest,
    PodSandboxStatsResponse,
};
use tonic::Status;

use crate::lifecycle::record::find_pod;
use crate::state::DaemonState;
use crate::stats::cri::pod_stats;
use crate::stats::sample::sample_pods;
use crate::stats::select::{select_ready_pods, with_containers};
use crate::store::containers;

pub async fn pod_sandbox_stats(
    state: &DaemonState,
    req: &PodSandboxStatsRequest,
) -> Result<PodSandboxStatsResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(Status::invalid_argument("pod_sandbox_id is required"));
    }
    let pod = find_pod(state, &req.pod_sandbox_id)?;
    let containers = containers::of_pod(&state.containers, &pod.id);
    let sample = sample_pods(&state.stats, vec![(pod, containers)])
        .await?
        .pop()
        .ok_or_else(|| Status::internal("pod stats: no sample"))?;
    Ok(PodSandboxStatsResponse {
        stats: Some(pod_stats(&sample, &state.stats)),
    })
}

pub async fn list_pod_sandbox_stats(
    state: &DaemonState,
    req: &ListPodSandboxStatsRequest,
) -> Result<ListPodSandboxStatsResponse, Status> {
    let pods = select_ready_pods(
        &state.pods,
        &state.containers,
        &state.stats,
        req.filter.as_ref(),
    );
    let samples = sample_pods(&state.stats, with_containers(&state.containers, pods)).await?;
    Ok(ListPodSandboxStatsResponse {
        stats: samples.iter().map(|s| pod_stats(s, &state.stats)).collect(),
    })
}
