//! `PortForward`: validate the request and hand out a streaming URL (connections are dialled
//! inside the pod's network namespace when the client opens them: see `stream_port_forward`).

use proto::cri::{PortForwardRequest, PortForwardResponse};
use tonic::Status;

use crate::state::DaemonState;
use crate::state::stream_tokens::StreamRequest;
use crate::store::pods::PodPhase;

pub async fn port_forward(
    state: &DaemonState,
    req: &PortForwardRequest,
) -> Result<PortForwardResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(Status::invalid_argument("pod_sandbox_id is required"));
    }
    if let Some(bad) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
        return Err(Status::invalid_argument(format!(
            "port {bad} is not a valid TCP port (1-65535)"
        )));
    }
    let pod = crate::lifecycle::record::find_pod(state, &req.pod_sandbox_id)?;
    if pod.phase != PodPhase::Ready {
        return Err(Status::failed_precondition(format!(
            "pod sandbox {} is not ready",
            pod.id
        )));
    }
    let mut req = req.clone();
    req.pod_sandbox_id = pod.id;
    let url = state.streams.mint(StreamRequest::PortForward(req))?;
    Ok(PortForwardResponse { url })
}
