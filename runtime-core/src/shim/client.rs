//! berthd's side of the shim: spawn one for a pod and wait until it is ready, send requests.
//!
//! The client is async (tokio): berthd talks to shims from its runtime without a blocking
//! thread per call. It owns the protocol's framing on that side; the shim keeps the
//! synchronous framing of `proto::shim` (it has no async runtime).

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use proto::shim::{
    FrameError, MAX_FRAME_LEN, Ping, Pong, ShimRequest, ShimResponse, ShimSpec, Shutdown,
    shim_request::Kind,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::{ERROR_PREFIX, READY_PREFIX};

/// Failures talking to or starting a shim.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("start shim for pod {pod}: {message}")]
    Start { pod: String, message: String },
    #[error("start a shim: {message}")]
    Spare { message: String },
    #[error("spare shim {pid} is gone: {source}")]
    SpareGone { pid: u32, source: io::Error },
    #[error("shim at {socket}: {source}")]
    Connect { socket: PathBuf, source: io::Error },
    #[error("shim at {socket}: {source}")]
    Protocol { socket: PathBuf, source: FrameError },
    #[error("shim at {socket} refused: {message}")]
    Refused { socket: PathBuf, message: String },
}

impl ShimError {
    /// True when no shim answers on the socket: it exited or was killed (nothing listens), or
    /// it is exiting (it closed the listener with this connection still queued — the kernel
    /// resets the queued connection, which the async connect reports as its own error — or hung
    /// up without answering). A slow shim (a timeout) is not gone.
    pub fn is_gone(&self) -> bool {
        match self {
            ShimError::Connect { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::NotFound
                    | io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::ConnectionReset
            ),
            ShimError::Protocol {
                source: FrameError::Io(source),
                ..
            } => matches!(
                source.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ),
            ShimError::Protocol {
                source: FrameError::Closed,
                ..
            } => true,
            _ => false,
        }
    }
}

/// A shim started ahead of its pod ([`super::POD_ARG`]): detached, named
/// [`super::SPARE_NAME`], waiting for its spec. Dropping it closes its stdin, and it exits.
#[derive(Debug)]
pub struct SpareShim {
    pid: u32,
    spec_in: tokio::process::ChildStdin,
    lines: BufReader<tokio::process::ChildStdout>,
}

/// Starts a shim of the berthd whose state dir is `state_dir` and waits up to `timeout` until it
/// waits for its pod's spec. The shim is detached: it outlives berthd (a spare one only until
/// berthd's end of its stdin closes).
pub async fn spawn_spare(
    shim_bin: &super::ShimBinary,
    state_dir: &Path,
    timeout: Duration,
) -> Result<SpareShim, ShimError> {
    let fail = |message: String| ShimError::Spare { message };
    let mut command = tokio::process::Command::from(shim_bin.command());
    let mut child = command
        .arg(super::POD_ARG)
        .arg(state_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| fail(format!("exec {}: {e}", shim_bin.host_path().display())))?;
    let (Some(spec_in), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(fail("no stdio pipes".into()));
    };
    // The first process only forks the real shim and exits.
    let status = child.wait().await.map_err(|e| fail(format!("wait: {e}")))?;
    let mut lines = BufReader::new(stdout);
    let pid = pid_line(&mut lines, super::SPARE_PREFIX, "spare", timeout)
        .await
        .map_err(|e| fail(format!("{e} (its first process: {status})")))?;
    Ok(SpareShim {
        pid,
        spec_in,
        lines,
    })
}

impl SpareShim {
    /// The waiting shim's PID (it keeps it as the pod's shim).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Hands the shim `spec` and waits up to `timeout` for it to report ready; its PID.
    /// [`ShimError::SpareGone`] when it had exited before it was handed the spec (nothing of
    /// the pod was made: start another).
    pub async fn start(mut self, spec: &ShimSpec, timeout: Duration) -> Result<u32, ShimError> {
        let bytes = prost::Message::encode_to_vec(spec);
        if let Err(e) = self.spec_in.write_all(&bytes).await {
            return Err(ShimError::SpareGone {
                pid: self.pid,
                source: e,
            });
        }
        drop(self.spec_in);
        pid_line(&mut self.lines, READY_PREFIX, "readiness", timeout)
            .await
            .map_err(|message| ShimError::Start {
                pod: spec.pod_id.clone(),
                message,
            })
    }
}

/// The PID the shim's next line gives after `prefix` (`spare `, `ready `), read within
/// `timeout`; else the message of its `error ` line, or what else came. `what` names the line.
async fn pid_line(
    lines: &mut BufReader<tokio::process::ChildStdout>,
    prefix: &str,
    what: &str,
    timeout: Duration,
) -> Result<u32, String> {
    let line = read_line_within(lines, timeout)
        .await
        .map_err(|e| format!("read its {what} line: {e}"))?;
    if let Some(pid) = line.strip_prefix(prefix) {
        return pid
            .trim()
            .parse()
            .map_err(|_| format!("bad {what} line `{line}`"));
    }
    match line.strip_prefix(ERROR_PREFIX) {
        Some(msg) => Err(msg.trim().to_string()),
        None => Err(format!("exited without its {what} line")),
    }
}

/// Starts a shim for `spec` ([`spawn_spare`], then [`SpareShim::start`]) and waits up to
/// `timeout` for each step. Returns the shim's PID.
pub async fn spawn(
    shim_bin: &super::ShimBinary,
    spec: &ShimSpec,
    state_dir: &Path,
    timeout: Duration,
) -> Result<u32, ShimError> {
    let spare = spawn_spare(shim_bin, state_dir, timeout)
        .await
        .map_err(|e| ShimError::Start {
            pod: spec.pod_id.clone(),
            message: e.to_string(),
        })?;
    spare.start(spec, timeout).await
}

/// The next line the shim writes (without its end), waiting at most `timeout`.
async fn read_line_within(
    lines: &mut BufReader<tokio::process::ChildStdout>,
    timeout: Duration,
) -> io::Result<String> {
    let mut line = String::new();
    match tokio::time::timeout(timeout, lines.read_line(&mut line)).await {
        Ok(read) => read?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {timeout:?}"),
            ));
        }
    };
    Ok(line.trim_end().to_string())
}

/// Sends one request and reads the answer, all within `timeout` (a shim that does not answer
/// in time fails with a timed-out I/O error, which is not [`ShimError::is_gone`]).
pub async fn request(
    socket: &Path,
    req: ShimRequest,
    timeout: Duration,
) -> Result<ShimResponse, ShimError> {
    match tokio::time::timeout(timeout, exchange(socket, &req)).await {
        Ok(answer) => answer,
        Err(_) => Err(ShimError::Protocol {
            socket: socket.into(),
            source: FrameError::Io(io::ErrorKind::TimedOut.into()),
        }),
    }
}

async fn exchange(socket: &Path, req: &ShimRequest) -> Result<ShimResponse, ShimError> {
    let mut stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|source| ShimError::Connect {
            socket: socket.into(),
            source,
        })?;
    let proto_err = |source| ShimError::Protocol {
        socket: socket.into(),
        source,
    };
    write_frame_async(&mut stream, req)
        .await
        .map_err(proto_err)?;
    let resp: ShimResponse = read_frame_async(&mut stream, MAX_FRAME_LEN)
        .await
        .map_err(proto_err)?;
    if !resp.error.is_empty() {
        return Err(ShimError::Refused {
            socket: socket.into(),
            message: resp.error,
        });
    }
    Ok(resp)
}

/// Asks the shim who it is.
pub async fn ping(socket: &Path, timeout: Duration) -> Result<Pong, ShimError> {
    let resp = request(
        socket,
        ShimRequest {
            kind: Some(Kind::Ping(Ping {})),
        },
        timeout,
    )
    .await?;
    resp.pong.ok_or_else(|| ShimError::Refused {
        socket: socket.into(),
        message: "ping answered without pong".into(),
    })
}

/// Tells the shim to kill the pod's processes, unpin its namespaces and exit.
pub async fn shutdown(socket: &Path, timeout: Duration) -> Result<(), ShimError> {
    request(
        socket,
        ShimRequest {
            kind: Some(Kind::Shutdown(Shutdown {})),
        },
        timeout,
    )
    .await
    .map(|_| ())
}

/// Reads one frame of at most `max` bytes from an async stream: the protocol's framing
/// (`proto::shim`) for berthd, whose connections (requests, attach, exec control) are async.
pub async fn read_frame_async<M: prost::Message + Default, R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
) -> Result<M, FrameError> {
    let mut len_buf = [0u8; 4];
    match r.read_exact(&mut len_buf).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len_buf);
    if len > max {
        return Err(FrameError::TooLarge {
            len: len.into(),
            max,
        });
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).await?;
    Ok(M::decode(body.as_slice())?)
}

/// Writes one message as a frame to an async stream.
pub async fn write_frame_async<M: prost::Message, W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &M,
) -> Result<(), FrameError> {
    let len = msg.encoded_len();
    if len > MAX_FRAME_LEN as usize {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max: MAX_FRAME_LEN,
        });
    }
    let mut frame = Vec::with_capacity(4 + len);
    frame.extend_from_slice(&(len as u32).to_be_bytes());
    msg.encode(&mut frame)
        .map_err(|e| FrameError::Io(io::Error::other(e)))?;
    w.write_all(&frame).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(kind: io::ErrorKind) -> ShimError {
        ShimError::Connect {
            socket: "s".into(),
            source: kind.into(),
        }
    }

    fn protocol(source: FrameError) -> ShimError {
        ShimError::Protocol {
            socket: "s".into(),
            source,
        }
    }

    #[test]
    fn only_an_unreachable_or_hanging_up_shim_is_gone() {
        assert!(connect(io::ErrorKind::ConnectionRefused).is_gone());
        assert!(connect(io::ErrorKind::NotFound).is_gone());
        // A connection queued on the listener when the shim closed it is reset by the kernel.
        assert!(connect(io::ErrorKind::ConnectionReset).is_gone());
        assert!(protocol(FrameError::Io(io::ErrorKind::ConnectionReset.into())).is_gone());
        assert!(protocol(FrameError::Closed).is_gone());
        assert!(!connect(io::ErrorKind::PermissionDenied).is_gone());
        assert!(!protocol(FrameError::Io(io::ErrorKind::WouldBlock.into())).is_gone());
        let refused = ShimError::Refused {
            socket: "s".into(),
            message: "container x not found in this pod".into(),
        };
        assert!(!refused.is_gone());
    }
}
