//! `PortForward`: validate the request and hand out a streaming URL.

use proto::cri::{PortForwardRequest, PortForwardResponse};
use tonic::Status;

use crate::errors::{area, not_implemented};
use crate::state::DaemonState;

pub async fn port_forward(
    _state: &DaemonState,
    _req: &PortForwardRequest,
) -> Result<PortForwardResponse, Status> {
    Err(not_implemented("PortForward", area::STREAMING))
}
