//! `StopContainer`: stopping a stopped container succeeds, and so does stopping one that
//! does not exist (CRI idempotence: kubelet retries stops of containers that may already be
//! gone, and critest checks it). The stop itself is `container::stop`.

use std::time::Duration;

use proto::cri::{StopContainerRequest, StopContainerResponse};
use tonic::Status;

use crate::container::stop::stop;
use crate::state::DaemonState;
use crate::store::records::Lookup;

pub async fn stop_container(
    state: &DaemonState,
    req: &StopContainerRequest,
) -> Result<StopContainerResponse, Status> {
    if req.container_id.is_empty() {
        return Err(Status::invalid_argument("container_id is required"));
    }
    let id = match state.containers.lookup(&req.container_id) {
        Lookup::Found(rec) => rec.id,
        Lookup::Missing => return Ok(StopContainerResponse {}),
        Lookup::Ambiguous(n) => {
            return Err(Status::not_found(format!(
                "container id prefix {} matches {n} containers",
                req.container_id
            )));
        }
    };
    let lock = state.containers.lock_for(&id);
    let _guard = lock.lock().await;
    // Another call may have removed it while this one waited for the lock: stopped enough.
    let Some(rec) = state.containers.get(&id) else {
        return Ok(StopContainerResponse {});
    };
    let timeout = Duration::from_secs(req.timeout.max(0) as u64);
    stop(state, rec, timeout).await?;
    Ok(StopContainerResponse {})
}
