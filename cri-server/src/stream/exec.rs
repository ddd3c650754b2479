//! Serving a streaming exec once the client has connected: start the process (on a terminal
//! for tty sessions), copy stdin/stdout/stderr, apply resizes, and report the exit on the
//! error stream.

use std::sync::Arc;
use std::time::Duration;

use proto::cri::ExecRequest;
use streaming::protocol::{self, Outcome};
use streaming::{RemoteCommand, Session};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tracing::{debug, warn};

use crate::container::exec_process::{self, ExecIo, StartError};
use crate::state::DaemonState;
use crate::stream::pty::Pty;

/// How long a tty exec waits for the client's first terminal size before starting.
const INITIAL_SIZE_WAIT: Duration = Duration::from_millis(200);
/// How long output is still forwarded after the process exited (its children may hold it).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Runs the exec and ends the session.
pub async fn serve(state: Arc<DaemonState>, req: ExecRequest, rc: RemoteCommand, session: Session) {
    let id = req.container_id.clone();
    // If the client leaves first, dropping the exec kills the process.
    serve_remote_command(rc, session, "exec", &id, |s| async move {
        run(&state, &req, s).await
    })
    .await
}

/// The client's streams of an exec or attach session, without the error stream.
pub struct Streams {
    pub stdin: Option<streaming::Reader>,
    pub stdout: Option<streaming::Writer>,
    pub stderr: Option<streaming::Writer>,
    pub resize: Option<tokio::sync::mpsc::Receiver<streaming::TermSize>>,
}

/// Runs `work` on the session's streams until it is done or the client leaves, writes the
/// outcome on the error stream and closes the session.
pub async fn serve_remote_command<F, Fut>(
    rc: RemoteCommand,
    session: Session,
    what: &str,
    container_id: &str,
    work: F,
) where
    F: FnOnce(Streams) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let RemoteCommand {
        protocol,
        stdin,
        stdout,
        stderr,
        resize,
        mut error,
    } = rc;
    let streams = Streams {
        stdin,
        stdout,
        stderr,
        resize,
    };
    let outcome = tokio::select! {
        outcome = work(streams) => outcome,
        () = session.closed() => Outcome::Error("client disconnected".into()),
    };
    debug!(container_id, ?outcome, "{what} session ended");
    if let Err(e) = protocol::write_status(&mut error, &protocol, &outcome).await {
        debug!(error = %e, "write {what} status");
    }
    drop(error);
    session.close().await;
}

async fn run(state: &DaemonState, req: &ExecRequest, s: Streams) -> Outcome {
    let (rec, pod) = match exec_process::recorded_running_container(state, &req.container_id) {
        Ok(found) => found,
        Err(status) => return Outcome::Error(status.message().to_string()),
    };
    let spec = match exec_process::exec_spec(state, &rec, &pod, &req.cmd, req.tty) {
        Ok(spec) => spec,
        Err(status) => return Outcome::Error(status.message().to_string()),
    };
    let shim = state.shim.clone();
    let result = if req.tty {
        run_tty(&shim, spec, s).await
    } else {
        run_pipes(&shim, spec, s).await
    };
    match result {
        Ok(0) => Outcome::Success,
        Ok(code) => Outcome::ExitCode {
            code,
            command: req.cmd.clone(),
        },
        Err(e) => {
            warn!(container_id = %rec.id, error = ?e, "exec failed to start");
            Outcome::Error(start_message(&e))
        }
    }
}

fn start_message(e: &StartError) -> String {
    match e {
        StartError::NotRunning(m) | StartError::Runtime(m) => m.clone(),
        StartError::Command { message, .. } => format!("failed to exec in container: {message}"),
    }
}

async fn run_pipes(
    shim: &runtime_core::shim::ShimBinary,
    spec: proto::shim::ExecSpec,
    s: Streams,
) -> Result<i32, StartError> {
    let io = ExecIo::Pipes {
        stdin: s.stdin.is_some(),
    };
    let mut running = exec_process::start(shim, spec, io).await?;
    let stdin = feed(s.stdin, running.stdin.take());
    let out = forward(running.stdout.take(), s.stdout);
    let err = forward(running.stderr.take(), s.stderr);
    let status = running.wait().await;
    stdin.abort();
    drain(out).await;
    drain(err).await;
    Ok(status.code)
}

async fn run_tty(
    shim: &runtime_core::shim::ShimBinary,
    spec: proto::shim::ExecSpec,
    s: Streams,
) -> Result<i32, StartError> {
    let (pty, secondary) =
        Pty::open().map_err(|e| StartError::Runtime(format!("open terminal: {e}")))?;
    let mut sizes = s.resize;
    // Clients send the terminal's size right after opening the session: give it a moment
    // so the command starts on a terminal of the right size, not 0x0.
    if let Some(rx) = sizes.as_mut()
        && let Ok(Some(size)) = tokio::time::timeout(INITIAL_SIZE_WAIT, rx.recv()).await
    {
        pty.resize(size.width, size.height);
    }
    let mut running = exec_process::start(shim, spec, ExecIo::Tty(secondary)).await?;
    let resizer = sizes.map(|mut sizes| {
        let pty = pty.clone();
        tokio::spawn(async move {
            while let Some(size) = sizes.recv().await {
                pty.resize(size.width, size.height);
            }
        })
    });
    let stdin = feed(s.stdin, Some(pty.clone()));
    let out = forward(Some(pty), s.stdout);
    let status = running.wait().await;
    stdin.abort();
    if let Some(r) = resizer {
        r.abort();
    }
    drain(out).await;
    Ok(status.code)
}

/// Copies client stdin to the process; closes the process's stdin at the client's EOF.
fn feed<W: AsyncWrite + Unpin + Send + 'static>(
    from: Option<streaming::Reader>,
    to: Option<W>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let (Some(mut from), Some(mut to)) = (from, to) {
            let _ = tokio::io::copy(&mut from, &mut to).await;
            let _ = to.shutdown().await;
        }
    })
}

/// Copies process output to the client, then ends that client stream.
fn forward<R: AsyncRead + Unpin + Send + 'static>(
    from: Option<R>,
    to: Option<streaming::Writer>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        match (from, to) {
            (Some(mut from), Some(mut to)) => {
                let _ = tokio::io::copy(&mut from, &mut to).await;
                let _ = to.shutdown().await;
            }
            // Nobody wants this output: read it anyway so the process never blocks on it.
            (Some(mut from), None) => {
                let _ = tokio::io::copy(&mut from, &mut tokio::io::sink()).await;
            }
            (None, Some(mut to)) => {
                let _ = to.shutdown().await;
            }
            (None, None) => {}
        }
    })
}

/// Waits for an output copy to finish, at most [`DRAIN_AFTER_EXIT`].
async fn drain(task: tokio::task::JoinHandle<()>) {
    let abort = task.abort_handle();
    if tokio::time::timeout(DRAIN_AFTER_EXIT, task).await.is_err() {
        abort.abort();
    }
}
