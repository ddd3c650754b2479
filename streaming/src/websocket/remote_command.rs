//! Exec and attach over WebSocket: channels 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize.

use tokio::io::{AsyncRead, AsyncWrite};

use super::conn::{self, ChannelReader, ChannelWriter, Outbound};
use super::frame::{self, Codec, ERROR, RESIZE, STDERR, STDIN, STDOUT};
use super::{Config, NO_SUBPROTOCOL};
use crate::protocol::{self, V5, WEBSOCKET_REMOTE_COMMAND};
use crate::{RemoteCommand, Session, StreamError, StreamOptions};

/// Serves an exec or attach session on an upgraded connection whose 101 response named
/// `protocol` (a value from [`super::negotiate_remote_command`]), with [`Config::default`].
pub async fn accept_remote_command<S>(
    io: S,
    protocol: &str,
    opts: StreamOptions,
) -> Result<(RemoteCommand, Session), StreamError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    accept_remote_command_with(io, protocol, opts, Config::default()).await
}

/// [`accept_remote_command`] with explicit limits.
///
/// Like kubelet, the server first writes an empty message on the lowest output channel it
/// opened (stdout, else stderr, else error) so the client knows the session is up. Resize
/// events are delivered for tty sessions, on every protocol version (WebSocket always has
/// channel 4). Stdin reads EOF at the v5 close signal or when the connection ends.
pub async fn accept_remote_command_with<S>(
    io: S,
    protocol: &str,
    opts: StreamOptions,
    config: Config,
) -> Result<(RemoteCommand, Session), StreamError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let protocol = served_protocol(protocol)?;
    let codec = Codec::for_protocol(protocol);
    let (stdin_tx, stdin) = input(opts.stdin);
    let (resize_tx, resize) = input(opts.tty);
    let mut inputs = vec![None; usize::from(RESIZE) + 1];
    inputs[usize::from(STDIN)] = stdin_tx;
    inputs[usize::from(RESIZE)] = resize_tx;
    let conn = conn::start(io, codec, protocol == V5, inputs, config).await;

    let first = if opts.stdout {
        STDOUT
    } else if opts.stderr {
        STDERR
    } else {
        ERROR
    };
    conn.outbound
        .send(Outbound::Message(frame::encode(codec, first, &[])))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;

    let writer =
        |channel| -> crate::Writer { Box::new(ChannelWriter::new(&conn.outbound, channel, codec)) };
    let command = RemoteCommand {
        protocol: protocol.to_string(),
        stdin: stdin.map(|r| Box::new(r) as crate::Reader),
        stdout: opts.stdout.then(|| writer(STDOUT)),
        stderr: opts.stderr.then(|| writer(STDERR)),
        resize: resize.map(protocol::resize_events),
        error: writer(ERROR),
    };
    tracing::debug!(protocol, ?opts, "websocket remote command session open");
    Ok((command, Session::new(Box::new(conn.session))))
}

/// The served protocol named `protocol` (as a `'static` name), or a protocol error.
fn served_protocol(protocol: &str) -> Result<&'static str, StreamError> {
    if protocol == NO_SUBPROTOCOL {
        return Ok(NO_SUBPROTOCOL);
    }
    WEBSOCKET_REMOTE_COMMAND
        .iter()
        .copied()
        .find(|p| *p == protocol)
        .ok_or_else(|| {
            StreamError::Protocol(format!(
                "websocket remotecommand subprotocol {protocol:?} is not served"
            ))
        })
}

/// An input channel when `open`, else nothing (what arrives on it is dropped).
fn input(
    open: bool,
) -> (
    Option<tokio::sync::mpsc::Sender<bytes::Bytes>>,
    Option<ChannelReader>,
) {
    if open {
        let (tx, reader) = ChannelReader::pair();
        (Some(tx), Some(reader))
    } else {
        (None, None)
    }
}
