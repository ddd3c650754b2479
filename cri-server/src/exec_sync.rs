//! `ExecSync`: run a command in a running container and return its output and exit code.

use proto::cri::{ExecSyncRequest, ExecSyncResponse};
use tonic::Status;

use crate::errors::{area, not_implemented};
use crate::state::DaemonState;

pub async fn exec_sync(
    _state: &DaemonState,
    _req: &ExecSyncRequest,
) -> Result<ExecSyncResponse, Status> {
    Err(not_implemented("ExecSync", area::STREAMING))
}
