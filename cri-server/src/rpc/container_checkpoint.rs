//! `CheckpointContainer`: berth does not checkpoint containers (no CRIU integration), and says
//! so plainly instead of pretending the feature is on its way.

use proto::cri::{CheckpointContainerRequest, CheckpointContainerResponse};
use tonic::Status;

use crate::state::DaemonState;

/// Always `Unimplemented`, with a message kubelet's checkpoint API passes on to the user.
pub async fn checkpoint_container(
    _state: &DaemonState,
    _req: &CheckpointContainerRequest,
) -> Result<CheckpointContainerResponse, Status> {
    Err(Status::unimplemented(
        "CheckpointContainer: berth does not support checkpointing containers \
         (no checkpoint/restore support, e.g. CRIU, is built in)",
    ))
}
