//! `RemoveContainer`: removing an unknown container succeeds; the removal itself is
//! `container::remove`.

use proto::cri::{RemoveContainerRequest, RemoveContainerResponse};
use tonic::Status;

use crate::container::remove::remove;
use crate::state::DaemonState;

pub async fn remove_container(
    state: &DaemonState,
    req: &RemoveContainerRequest,
) -> Result<RemoveContainerResponse, Status> {
    if req.container_id.is_empty() {
        return Err(Status::invalid_argument("container_id is required"));
    }
    let Some(id) = state.containers.find(&req.container_id).map(|c| c.id) else {
        return Ok(RemoveContainerResponse {});
    };
    let lock = state.containers.lock_for(&id);
    let _guard = lock.lock().await;
    // Another call may have started or removed it while this one waited for the lock.
    let Some(rec) = state.containers.get(&id) else {
        return Ok(RemoveContainerResponse {});
    };
    remove(state, rec).await?;
    Ok(RemoveContainerResponse {})
}
