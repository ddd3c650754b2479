//! `PodSandboxStats` and `ListPodSandboxStats`.

use proto::cri::{
    ListPodSandboxStatsRequest, ListPodSandboxStatsResponse, PodSandboxStatsRequest,
    PodSandboxStatsResponse,
};
use tonic::Status;

use crate::errors::{area, not_implemented};
use crate::state::DaemonState;

pub async fn pod_sandbox_stats(
    _state: &DaemonState,
    _req: &PodSandboxStatsRequest,
) -> Result<PodSandboxStatsResponse, Status> {
    Err(not_implemented("PodSandboxStats", area::STATS))
}

pub async fn list_pod_sandbox_stats(
    _state: &DaemonState,
    _req: &ListPodSandboxStatsRequest,
) -> Result<ListPodSandboxStatsResponse, Status> {
    Err(not_implemented("ListPodSandboxStats", area::STATS))
}
