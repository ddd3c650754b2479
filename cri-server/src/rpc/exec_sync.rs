//! `ExecSync`: run a command in a running container and return its output and exit code.
//!
//! Output is captured up to [`MAX_OUTPUT`] per stream (the rest is read and dropped, so the
//! command never blocks on a full pipe). A `timeout` (seconds, 0 = none) kills the command
//! and answers `DeadlineExceeded`, which kubelet turns into a probe timeout. A command that
//! cannot start (not found, not executable) answers like a shell: exit code 127 or 126 with
//! the reason on stderr.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::cri::{ExecSyncRequest, ExecSyncResponse};
use tokio::io::{AsyncRead, AsyncReadExt};
use tonic::Status;
use tracing::debug;

use crate::container::exec_process::{self, ExecIo, StartError};
use crate::state::DaemonState;

/// Output kept per stream.
pub const MAX_OUTPUT: usize = 16 << 20;
/// Output kept in all: the answer must fit the 16 MiB gRPC message limit of kubelet and
/// crictl (and berthd), with room for the rest of the message.
pub const MAX_TOTAL_OUTPUT: usize = (16 << 20) - (64 << 10);
/// How long output is still read after the command exited (its children may hold the pipes).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

pub async fn exec_sync(
    state: &DaemonState,
    req: &ExecSyncRequest,
) -> Result<ExecSyncResponse, Status> {
    if req.cmd.is_empty() {
        return Err(Status::invalid_argument("cmd is required"));
    }
    if req.timeout < 0 {
        return Err(Status::invalid_argument(format!(
            "timeout must not be negative, got {}",
            req.timeout
        )));
    }
    let (rec, pod) = exec_process::recorded_running_container(state, &req.container_id)?;
    let spec = exec_process::exec_spec(state, &rec, &pod, &req.cmd, false)?;
    let shim = state.shim.clone();
    let mut running = match exec_process::start(&shim, spec, ExecIo::Pipes { stdin: false }).await {
        Ok(r) => r,
        Err(e @ StartError::Command { .. }) => {
            return Ok(ExecSyncResponse {
                stdout: Vec::new(),
                stderr: format!("{}\n", command_error(&e)).into_bytes(),
                exit_code: e.exit_code(),
            });
        }
        Err(e) => return Err(e.error().into()),
    };
    let stdout = Captured::start(running.stdout.take());
    let stderr = Captured::start(running.stderr.take());
    let status = if req.timeout > 0 {
        let limit = Duration::from_secs(req.timeout as u64);
        match tokio::time::timeout(limit, running.wait()).await {
            Ok(status) => status,
            Err(_) => {
                running.kill();
                let _ = running.wait().await;
                return Err(Status::deadline_exceeded(format!(
                    "command {:?} in container {} timed out after {}s and was killed",
                    req.cmd, rec.id, req.timeout
                )));
            }
        }
    } else {
        running.wait().await
    };
    let (stdout, stderr) = fit(stdout.finish().await, stderr.finish().await);
    debug!(container_id = %rec.id, exit_code = status.code, "ExecSync");
    Ok(ExecSyncResponse {
        stdout,
        stderr,
        exit_code: status.code,
    })
}

/// Trims the larger stream so both fit [`MAX_TOTAL_OUTPUT`].
fn fit(mut stdout: Vec<u8>, mut stderr: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    while stdout.len() + stderr.len() > MAX_TOTAL_OUTPUT {
        let excess = stdout.len() + stderr.len() - MAX_TOTAL_OUTPUT;
        let larger = if stdout.len() >= stderr.len() {
            &mut stdout
        } else {
            &mut stderr
        };
        let keep = larger.len().saturating_sub(excess);
        larger.truncate(keep);
    }
    (stdout, stderr)
}

fn command_error(e: &StartError) -> String {
    match e {
        StartError::Command { message, .. } => message.clone(),
        other => format!("{other:?}"),
    }
}

/// One output stream being read in the background, up to [`MAX_OUTPUT`] bytes kept.
struct Captured {
    kept: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Captured {
    fn start<R: AsyncRead + Unpin + Send + 'static>(stream: Option<R>) -> Captured {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let sink = kept.clone();
        let task = tokio::spawn(async move {
            let Some(mut stream) = stream else { return };
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = stream.read(&mut buf).await {
                let mut kept = sink.lock().unwrap_or_else(|p| p.into_inner());
                let room = MAX_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        });
        Captured { kept, task }
    }

    /// What was read, once the stream ends or [`DRAIN_AFTER_EXIT`] passed (a child of the
    /// command may keep the pipe open forever).
    async fn finish(mut self) -> Vec<u8> {
        let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, &mut self.task).await;
        self.task.abort();
        std::mem::take(&mut *self.kept.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_trimmed_from_the_larger_stream() {
        let (out, err) = fit(vec![1; MAX_OUTPUT], vec![2; 10]);
        assert_eq!(out.len() + err.len(), MAX_TOTAL_OUTPUT);
        assert_eq!(err.len(), 10);
        let (out, err) = fit(vec![1; 5], vec![2; 7]);
        assert_eq!((out.len(), err.len()), (5, 7));
        let (out, err) = fit(vec![1; MAX_OUTPUT], vec![2; MAX_OUTPUT]);
        assert_eq!(out.len() + err.len(), MAX_TOTAL_OUTPUT);
    }
}
