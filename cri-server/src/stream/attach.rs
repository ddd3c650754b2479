//! Serving a streaming attach: a connection to the pod's shim, which holds the container's
//! stdio, carries its output to the client and the client's stdin and resizes back. Several
//! clients may attach at once; the log keeps receiving everything.

use std::sync::Arc;

use proto::cri::AttachRequest;
use proto::shim::{
    ATTACH_EXITED, ATTACH_RESIZE, ATTACH_STDERR, ATTACH_STDIN, ATTACH_STDIN_CLOSE, ATTACH_STDOUT,
    AttachContainer, AttachFrame, ShimRequest, ShimResponse, shim_request::Kind,
};
use streaming::protocol::Outcome;
use streaming::{RemoteCommand, Session};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::Mutex;
use tracing::debug;

use crate::container::exec_process;
use crate::state::DaemonState;
use crate::stream::exec::{Streams, serve_remote_command};
use runtime_core::shim::client::{read_frame_async, write_frame_async};

/// Largest frame berthd accepts from a shim.
const MAX_FRAME: u32 = 1 << 20;

/// Runs the attach session and ends it.
pub async fn serve(
    state: Arc<DaemonState>,
    req: AttachRequest,
    rc: RemoteCommand,
    session: Session,
) {
    let id = req.container_id.clone();
    serve_remote_command(rc, session, "attach", &id, |s| async move {
        run(&state, &req, s).await
    })
    .await
}

async fn run(state: &DaemonState, req: &AttachRequest, streams: Streams) -> Outcome {
    let Streams {
        stdin,
        mut stdout,
        mut stderr,
        resize,
    } = streams;
    let (rec, pod) = match exec_process::recorded_running_container(state, &req.container_id) {
        Ok(found) => found,
        Err(status) => return Outcome::Error(status.message().to_string()),
    };
    let conn = match connect(&pod.host.shim_socket, req, &rec.id).await {
        Ok(conn) => conn,
        Err(e) => return Outcome::Error(format!("attach to container {}: {e}", rec.id)),
    };
    let (mut from_shim, to_shim) = conn.into_split();
    // Held here for the whole session: dropping the last write half would half-close the
    // connection, which the shim takes as the attacher leaving.
    let to_shim = Arc::new(Mutex::new(to_shim));
    let input = tokio::spawn(send_stdin(stdin, to_shim.clone()));
    let resizer = tokio::spawn(send_resizes(resize, to_shim.clone()));
    loop {
        let frame = match read_frame(&mut from_shim).await {
            Ok(frame) => frame,
            Err(e) => {
                debug!(container_id = %rec.id, error = %e, "attach connection to the shim ended");
                break;
            }
        };
        let sink = match frame.kind {
            ATTACH_STDOUT => stdout.as_mut(),
            ATTACH_STDERR => stderr.as_mut().or(stdout.as_mut()),
            ATTACH_EXITED => break,
            _ => None,
        };
        if let Some(sink) = sink
            && sink.write_all(&frame.data).await.is_err()
        {
            break;
        }
    }
    input.abort();
    resizer.abort();
    drop(to_shim);
    for w in [stdout.as_mut(), stderr.as_mut()].into_iter().flatten() {
        let _ = w.shutdown().await;
    }
    Outcome::Success
}

async fn connect(
    socket: &std::path::Path,
    req: &AttachRequest,
    id: &str,
) -> Result<UnixStream, String> {
    let mut conn = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connect to the pod's shim: {e}"))?;
    let request = ShimRequest {
        kind: Some(Kind::Attach(AttachContainer {
            id: id.to_string(),
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
        })),
    };
    write_frame_async(&mut conn, &request)
        .await
        .map_err(|e| format!("send attach request: {e}"))?;
    let response: ShimResponse = read_frame_async(&mut conn, MAX_FRAME)
        .await
        .map_err(|e| format!("read attach answer: {e}"))?;
    if !response.error.is_empty() {
        return Err(response.error);
    }
    Ok(conn)
}

async fn send_stdin(
    stdin: Option<streaming::Reader>,
    to_shim: Arc<Mutex<tokio::net::unix::OwnedWriteHalf>>,
) {
    let Some(mut stdin) = stdin else { return };
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = stdin.read(&mut buf).await.unwrap_or(0);
        let frame = if n == 0 {
            AttachFrame {
                kind: ATTACH_STDIN_CLOSE,
                ..Default::default()
            }
        } else {
            AttachFrame {
                kind: ATTACH_STDIN,
                data: buf[..n].to_vec(),
                ..Default::default()
            }
        };
        let mut w = to_shim.lock().await;
        if write_frame_async(&mut *w, &frame).await.is_err() || n == 0 {
            return;
        }
    }
}

async fn send_resizes(
    resize: Option<tokio::sync::mpsc::Receiver<streaming::TermSize>>,
    to_shim: Arc<Mutex<tokio::net::unix::OwnedWriteHalf>>,
) {
    let Some(mut sizes) = resize else { return };
    while let Some(size) = sizes.recv().await {
        let frame = AttachFrame {
            kind: ATTACH_RESIZE,
            width: size.width.into(),
            height: size.height.into(),
            ..Default::default()
        };
        let mut w = to_shim.lock().await;
        if write_frame_async(&mut *w, &frame).await.is_err() {
            return;
        }
    }
}

async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<AttachFrame, proto::shim::FrameError> {
    read_frame_async(r, MAX_FRAME).await
}
