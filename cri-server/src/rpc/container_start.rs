//! `StartContainer`: the container's home starts it (`container::start`).

use proto::cri::{StartContainerRequest, StartContainerResponse};
use tonic::Status;

use crate::state::DaemonState;

pub async fn start_container(
    state: &DaemonState,
    req: &StartContainerRequest,
) -> Result<StartContainerResponse, Status> {
    let id = req.container_id.as_str();
    if id.is_empty() {
        return Err(Status::invalid_argument("container_id is required"));
    }
    crate::container::start::start(state, id).await?;
    Ok(StartContainerResponse {})
}
