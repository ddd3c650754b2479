//! `Attach`: validate the request and hand out a streaming URL (the session is served when
//! the client connects: see `stream_attach`).

use proto::cri::{AttachRequest, AttachResponse};
use tonic::Status;

use crate::container::exec_process::running_container;
use crate::state::DaemonState;
use crate::state::stream_tokens::{StreamRequest, check_streams};

pub async fn attach(state: &DaemonState, req: &AttachRequest) -> Result<AttachResponse, Status> {
    check_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
    let (rec, _) = running_container(state, &req.container_id).await?;
    if req.stdin && !rec.config.stdin {
        return Err(Status::failed_precondition(format!(
            "container {} was created without stdin: attach without stdin",
            rec.id
        )));
    }
    let mut req = req.clone();
    req.container_id = rec.id;
    let url = state.streams.mint(StreamRequest::Attach(req))?;
    Ok(AttachResponse { url })
}
