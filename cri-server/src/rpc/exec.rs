//! `Exec`: validate the request and hand out a streaming URL (the exec itself runs when the
//! client connects: see `stream_exec`).

use proto::cri::{ExecRequest, ExecResponse};
use tonic::Status;

use crate::container::exec_process::running_container;
use crate::state::DaemonState;
use crate::state::stream_tokens::{StreamRequest, check_streams};

pub async fn exec(state: &DaemonState, req: &ExecRequest) -> Result<ExecResponse, Status> {
    if req.cmd.is_empty() {
        return Err(Status::invalid_argument("cmd is required"));
    }
    check_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
    let (rec, _) = running_container(state, &req.container_id).await?;
    let mut req = req.clone();
    req.container_id = rec.id;
    let url = state.streams.mint(StreamRequest::Exec(req))?;
    Ok(ExecResponse { url })
}
