//! `CheckpointContainer`.

use proto::cri::{CheckpointContainerRequest, CheckpointContainerResponse};
use tonic::Status;

use crate::errors::{area, not_implemented};
use crate::state::DaemonState;

pub async fn checkpoint_container(
    _state: &DaemonState,
    _req: &CheckpointContainerRequest,
) -> Result<CheckpointContainerResponse, Status> {
    Err(not_implemented("CheckpointContainer", area::CHECKPOINT))
}
