//! `Exec`: validate the request and hand out a streaming URL (the exec itself runs when the
//! client connects: see `stream_exec`).

use proto::cri::{ExecRequest, ExecResponse};
use tonic::Status;

use crate::container::exec_process::running_container;
use crate::state::DaemonState;
use crate::stream::tokens::StreamRequest;

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

/// kubelet's rules for the streams of an exec or attach: at least one, and a terminal merges
/// stderr into stdout.
pub fn check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<(), Status> {
    if !(stdin || stdout || stderr) {
        return Err(Status::invalid_argument(
            "one of stdin, stdout, or stderr must be set",
        ));
    }
    if tty && stderr {
        return Err(Status::invalid_argument(
            "tty and stderr cannot both be set: a terminal merges stderr into stdout",
        ));
    }
    Ok(())
}
