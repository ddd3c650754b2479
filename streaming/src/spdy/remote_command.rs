//! Server side of exec and attach over SPDY: wait for the client's streams as kubelet does.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::STREAM_TYPE;
use super::session::Connection;
use super::shared::Role;
use super::stream::Stream;
use crate::protocol::{self, has_resize};
use crate::{Reader, RemoteCommand, Session, StreamError, StreamOptions, Writer};

/// How many streams kubelet waits for: `error` always, one per requested stdio stream (none for
/// stderr with a tty), and `resize` for a tty on protocols that have it (v3 and later).
pub fn expected_streams(protocol: &str, opts: StreamOptions) -> usize {
    1 + usize::from(opts.stdin)
        + usize::from(opts.stdout)
        + usize::from(opts.stderr && !opts.tty)
        + usize::from(opts.tty && has_resize(protocol))
}

/// Serves an exec or attach session on an upgraded connection: waits up to `timeout` for the
/// client to open the streams `opts` imply under `protocol` (as negotiated) and returns them.
///
/// Like kubelet, every stream with a known `streamtype` counts toward the expected number (a
/// repeated type replaces the earlier stream) and unknown types are ignored. Streams the
/// server only reads from keep their sending half open until the session closes, except
/// stdin under `channel.k8s.io` (v1, also what a client that negotiated nothing gets), which
/// is closed at once as v1 kubelets do.
pub async fn accept_remote_command<IO>(
    io: IO,
    protocol: &str,
    opts: StreamOptions,
    timeout: Duration,
) -> Result<(RemoteCommand, Session), StreamError>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut conn = Connection::new(io, Role::Server);
    let want = expected_streams(protocol, opts);
    let collected = match tokio::time::timeout(timeout, collect(&mut conn, protocol, want)).await {
        Ok(Ok(collected)) => collected,
        Ok(Err(e)) => {
            conn.close().await;
            return Err(e);
        }
        Err(_) => {
            tracing::debug!(protocol, want, "client did not open its streams in time");
            conn.close().await;
            return Err(StreamError::Timeout(timeout));
        }
    };
    collected.into_remote_command(conn, protocol)
}

#[derive(Default)]
struct Collected {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

async fn collect(
    conn: &mut Connection,
    protocol: &str,
    want: usize,
) -> Result<Collected, StreamError> {
    let mut c = Collected::default();
    let mut received = 0;
    while received < want {
        let stream = conn.accept().await.ok_or_else(|| {
            StreamError::Protocol("connection ended before the client opened its streams".into())
        })?;
        let kind = stream.headers().get(STREAM_TYPE).unwrap_or_default();
        let slot = match kind {
            "error" => &mut c.error,
            "stdin" => &mut c.stdin,
            "stdout" => &mut c.stdout,
            "stderr" => &mut c.stderr,
            "resize" if has_resize(protocol) => &mut c.resize,
            other => {
                tracing::warn!(
                    stream_type = other,
                    protocol,
                    "ignoring unexpected stream type"
                );
                continue;
            }
        };
        *slot = Some(stream);
        received += 1;
    }
    Ok(c)
}

impl Collected {
    fn into_remote_command(
        self,
        conn: Connection,
        protocol: &str,
    ) -> Result<(RemoteCommand, Session), StreamError> {
        let Some(error) = self.error else {
            return Err(StreamError::Protocol(
                "client opened no error stream".into(),
            ));
        };
        let mut keep = Vec::new();
        let stdin = self.stdin.map(|s| {
            let (reader, writer) = s.into_split();
            // kubelet serves a client that negotiated nothing as v1.
            if protocol != protocol::V1 && !protocol.is_empty() {
                keep.push(writer);
            }
            Box::new(reader) as Reader
        });
        let resize = self.resize.map(|s| {
            let (reader, writer) = s.into_split();
            keep.push(writer);
            protocol::resize_events(reader)
        });
        let writer = |s: Stream| Box::new(s.into_split().1) as Writer;
        let command = RemoteCommand {
            protocol: protocol.to_string(),
            stdin,
            stdout: self.stdout.map(writer),
            stderr: self.stderr.map(writer),
            resize,
            error: writer(error),
        };
        Ok((command, conn.into_session_keeping(keep)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{V1, V2, V3, V4};

    fn opts(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> StreamOptions {
        StreamOptions {
            stdin,
            stdout,
            stderr,
            tty,
        }
    }

    #[test]
    fn expected_streams_follow_kubelet_per_protocol() {
        assert_eq!(expected_streams(V4, opts(true, true, true, false)), 4);
        assert_eq!(expected_streams(V4, opts(false, true, true, false)), 3);
        // tty: no stderr stream, a resize stream on v3+.
        assert_eq!(expected_streams(V4, opts(true, true, true, true)), 4);
        assert_eq!(expected_streams(V3, opts(true, true, false, true)), 4);
        assert_eq!(expected_streams(V2, opts(true, true, false, true)), 3);
        assert_eq!(expected_streams(V1, opts(true, true, false, true)), 3);
    }
}
