//! `StopPodSandbox`: kill the pod's processes, release its network and namespaces.
//! Idempotent: stopping a stopped or unknown pod succeeds, as the CRI requires.

use proto::cri::{StopPodSandboxRequest, StopPodSandboxResponse};
use tonic::Status;

use crate::pod::stop::stop;
use crate::state::DaemonState;

pub async fn stop_pod_sandbox(
    state: &DaemonState,
    req: &StopPodSandboxRequest,
) -> Result<StopPodSandboxResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(Status::invalid_argument("pod_sandbox_id is required"));
    }
    stop(state, &req.pod_sandbox_id).await?;
    Ok(StopPodSandboxResponse {})
}
