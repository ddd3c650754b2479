//! `Attach`: validate the request and hand out a streaming URL.

use proto::cri::{AttachRequest, AttachResponse};
use tonic::Status;

use crate::errors::{area, not_implemented};
use crate::state::DaemonState;

pub async fn attach(_state: &DaemonState, _req: &AttachRequest) -> Result<AttachResponse, Status> {
    Err(not_implemented("Attach", area::STREAMING))
}
