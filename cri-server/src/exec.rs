//! `Exec`: validate the request and hand out a streaming URL.

use proto::cri::{ExecRequest, ExecResponse};
use tonic::Status;

use crate::errors::{area, not_implemented};
use crate::state::DaemonState;

pub async fn exec(_state: &DaemonState, _req: &ExecRequest) -> Result<ExecResponse, Status> {
    Err(not_implemented("Exec", area::STREAMING))
}
