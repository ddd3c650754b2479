//! `RunPodSandbox`: check the request and let the pod's home run it (`pod::run`, which
//! reserves the pod's name, creates its host side and undoes it all on failure).

use proto::cri::{RunPodSandboxRequest, RunPodSandboxResponse};
use tonic::Status;

use crate::state::DaemonState;

/// Creates and starts a pod sandbox; on any failure nothing of it remains.
pub async fn run_pod_sandbox(
    state: &DaemonState,
    req: &RunPodSandboxRequest,
) -> Result<RunPodSandboxResponse, Status> {
    let config = req
        .config
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("config is required"))?;
    let id = crate::pod::run::run(state, config, &req.runtime_handler).await?;
    Ok(RunPodSandboxResponse { pod_sandbox_id: id })
}
