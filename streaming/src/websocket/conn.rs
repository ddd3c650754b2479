//! One server-side WebSocket connection carrying numbered channels: a reader task that routes
//! received messages to per-channel byte streams, and a single writer task that owns the socket's
//! write half, fed by a bounded queue shared by every output channel.
//!
//! Back-pressure, not buffering: a channel writer waits for room in the queue, the reader waits
//! for the consumer of an input channel. Nothing waits forever: a connection with no data
//! message in either direction for the idle timeout, or a write that cannot complete within it,
//! ends the connection; every input then reads EOF and every output fails with `BrokenPipe`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_util::sync::{CancellationToken, PollSender};

use super::Config;
use super::frame::{self, Codec, Inbound};
use crate::SessionControl;

/// The largest payload one channel write turns into a message; bigger writes are split.
const MAX_PAYLOAD: usize = 32 * 1024;
/// Messages waiting for the writer task, across all output channels of one connection.
const OUTBOUND_QUEUE: usize = 16;
/// Payload chunks waiting for the consumer of one input channel.
const INBOUND_QUEUE: usize = 16;
/// Queued messages the writer hands to the socket before flushing it.
const WRITE_BATCH: usize = 16;

/// What the writer task is asked to do, in order.
pub(crate) enum Outbound {
    Message(Message),
    /// Send the close frame (1000, normal closure) and stop writing.
    Close,
}

/// A running connection: where output goes, and the session that ends it.
pub(crate) struct Conn {
    pub outbound: mpsc::Sender<Outbound>,
    pub session: WsSession,
}

/// Starts the reader and writer tasks over an upgraded connection. `inputs[n]` receives the
/// payloads of channel `n`; a `None` (or a channel beyond the list) drops what arrives, as
/// wsstream does for channels it does not read.
pub(crate) async fn start<S>(
    io: S,
    codec: Codec,
    close_signal: bool,
    inputs: Vec<Option<mpsc::Sender<Bytes>>>,
    config: Config,
) -> Conn
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_message_size));
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config)).await;
    let (sink, stream) = ws.split();
    let (outbound, queue) = mpsc::channel(OUTBOUND_QUEUE);
    let cancel = CancellationToken::new();
    let activity = Arc::new(Activity::new());
    let reader = Reader {
        stream,
        inputs,
        codec,
        close_signal,
        cancel: cancel.clone(),
        activity: activity.clone(),
        idle: config.idle_timeout,
    };
    let writer = Writer {
        sink,
        queue,
        cancel: cancel.clone(),
        activity,
        idle: config.idle_timeout,
    };
    let session = WsSession {
        outbound: outbound.clone(),
        ended: cancel,
        reader: AbortOnDrop(tokio::spawn(reader.run())),
        writer: AbortOnDrop(tokio::spawn(writer.run())),
        close_timeout: config.close_timeout,
    };
    Conn { outbound, session }
}

/// When a data message last went either way: the idle clock.
struct Activity {
    origin: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.origin + std::time::Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

type Sink<S> = SplitSink<WebSocketStream<S>, Message>;
type Stream<S> = SplitStream<WebSocketStream<S>>;

/// Owns the read half: routes data messages to input channels, answers pings (tungstenite
/// queues the pong and flushes it on the next read), and ends the connection on close, error
/// or idleness.
struct Reader<S> {
    stream: Stream<S>,
    inputs: Vec<Option<mpsc::Sender<Bytes>>>,
    codec: Codec,
    close_signal: bool,
    cancel: CancellationToken,
    activity: Arc<Activity>,
    idle: std::time::Duration,
}

/// Why the reader stopped routing messages.
enum Stop {
    Continue,
    End(&'static str),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Reader<S> {
    async fn run(mut self) {
        let reason = loop {
            let deadline = self.activity.last() + self.idle;
            let next = tokio::select! {
                _ = self.cancel.cancelled() => break "connection ended",
                _ = tokio::time::sleep_until(deadline) => {
                    if self.activity.last() + self.idle <= Instant::now() {
                        break "idle timeout";
                    }
                    continue;
                }
                next = self.stream.next() => next,
            };
            let message = match next {
                None => break "closed",
                Some(Err(err)) => {
                    tracing::debug!(error = %err, "websocket read failed");
                    break "read error";
                }
                Some(Ok(Message::Close(frame))) => {
                    tracing::debug!(code = ?frame.map(|f| f.code), "websocket close from client");
                    // Keep reading: the next read flushes tungstenite's close reply and ends.
                    continue;
                }
                Some(Ok(message)) => message,
            };
            let Some(data) = frame::message_bytes(message) else {
                continue;
            };
            self.activity.touch();
            if let Stop::End(reason) = self.route(&data).await {
                break reason;
            }
        };
        tracing::debug!(reason, "websocket session reader done");
        // Dropping the senders gives every input EOF; cancelling stops the writer.
        self.inputs.clear();
        self.cancel.cancel();
    }

    async fn route(&mut self, data: &[u8]) -> Stop {
        match frame::decode(self.codec, self.close_signal, data) {
            Inbound::Empty => Stop::Continue,
            Inbound::Data { channel, payload } => self.deliver(channel, payload).await,
            Inbound::Close { channel } => {
                if usize::from(channel) >= self.inputs.len() {
                    return Stop::End("close signal for an unknown channel");
                }
                tracing::debug!(channel, "client closed channel");
                self.inputs[usize::from(channel)] = None;
                Stop::Continue
            }
            Inbound::BadPayload { channel } => {
                tracing::debug!(channel, "dropping message that is not valid base64");
                Stop::Continue
            }
            Inbound::BadCloseSignal { len } => {
                tracing::debug!(len, "malformed close signal");
                Stop::End("malformed close signal")
            }
        }
    }

    async fn deliver(&mut self, channel: u8, payload: Bytes) -> Stop {
        let index = usize::from(channel);
        let Some(Some(input)) = self.inputs.get(index) else {
            return Stop::Continue;
        };
        if payload.is_empty() {
            return Stop::Continue;
        }
        tokio::select! {
            sent = input.send(payload) => {
                if sent.is_err() {
                    // The consumer is gone; later data on this channel is dropped.
                    self.inputs[index] = None;
                }
                Stop::Continue
            }
            _ = self.cancel.cancelled() => Stop::End("connection ended"),
        }
    }
}

/// Owns the write half: sends queued messages in order, a batch per flush.
struct Writer<S> {
    sink: Sink<S>,
    queue: mpsc::Receiver<Outbound>,
    cancel: CancellationToken,
    activity: Arc<Activity>,
    idle: std::time::Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Writer<S> {
    async fn run(mut self) {
        loop {
            let next = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                next = self.queue.recv() => next,
            };
            let Some(first) = next else { break };
            let cancel = self.cancel.clone();
            let idle = self.idle;
            let written = tokio::select! {
                written = timeout(idle, self.write_batch(first)) => written,
                _ = cancel.cancelled() => break,
            };
            match written {
                Ok(Ok(Written::More)) => {}
                Ok(Ok(Written::Closed)) => {
                    tracing::debug!("websocket close frame sent");
                    return;
                }
                Ok(Err(err)) => {
                    tracing::debug!(error = %err, "websocket write failed");
                    break;
                }
                Err(_) => {
                    tracing::warn!(timeout = ?idle, "websocket client stopped reading; ending the session");
                    break;
                }
            }
        }
        self.cancel.cancel();
    }

    /// Sends `first` and whatever else is already queued, then flushes.
    async fn write_batch(
        &mut self,
        first: Outbound,
    ) -> Result<Written, tokio_tungstenite::tungstenite::Error> {
        let mut next = Some(first);
        let mut count = 0;
        while let Some(item) = next.take() {
            match item {
                Outbound::Message(message) => {
                    self.activity.touch();
                    self.sink.feed(message).await?;
                }
                Outbound::Close => {
                    let frame = CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    };
                    self.sink.send(Message::Close(Some(frame))).await?;
                    return Ok(Written::Closed);
                }
            }
            count += 1;
            if count < WRITE_BATCH {
                next = self.queue.try_recv().ok();
            }
        }
        self.sink.flush().await?;
        Ok(Written::More)
    }
}

enum Written {
    More,
    Closed,
}

/// Aborts a task when dropped, so a dropped session stops its tasks and closes the socket.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The [`SessionControl`] of a WebSocket connection.
pub(crate) struct WsSession {
    outbound: mpsc::Sender<Outbound>,
    /// Fired when the connection is over: the client closed, vanished or idled out, or a
    /// write failed.
    ended: CancellationToken,
    reader: AbortOnDrop,
    writer: AbortOnDrop,
    close_timeout: std::time::Duration,
}

impl SessionControl for WsSession {
    /// Queues the close frame behind everything written so far, then waits for the client's
    /// close reply (or its disconnect) so that no unread input makes the kernel reset the
    /// connection and discard output the client has not read yet. Bounded by the close
    /// timeout; then the tasks are aborted and the socket closed.
    fn close(self: Box<Self>) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async move {
            let WsSession {
                outbound,
                ended: _,
                mut reader,
                writer,
                close_timeout,
            } = *self;
            let handshake = async {
                if outbound.send(Outbound::Close).await.is_ok() {
                    let _ = (&mut reader.0).await;
                }
            };
            if timeout(close_timeout, handshake).await.is_err() {
                tracing::debug!(timeout = ?close_timeout, "websocket client did not finish the close handshake");
            }
            drop(writer);
            drop(reader);
        })
    }

    /// Resolves once the connection is over (client gone, idle timeout, failed write).
    fn closed(&self) -> Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(self.ended.cancelled())
    }
}

/// The server's side of one output channel: each write becomes one message (split above
/// 32 KiB), queued in order with the other channels' messages.
pub(crate) struct ChannelWriter {
    queue: PollSender<Outbound>,
    channel: u8,
    codec: Codec,
    shut: bool,
}

impl ChannelWriter {
    pub(crate) fn new(outbound: &mpsc::Sender<Outbound>, channel: u8, codec: Codec) -> Self {
        ChannelWriter {
            queue: PollSender::new(outbound.clone()),
            channel,
            codec,
            shut: false,
        }
    }
}

fn connection_gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "websocket connection closed")
}

impl AsyncWrite for ChannelWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.shut {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(self.queue.poll_reserve(cx)).map_err(|_| connection_gone())?;
        let len = buf.len().min(MAX_PAYLOAD);
        let message = frame::encode(self.codec, self.channel, &buf[..len]);
        self.queue
            .send_item(Outbound::Message(message))
            .map_err(|_| connection_gone())?;
        Poll::Ready(Ok(len))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written data is already queued, in order; the session's close flushes the queue.
        if self.queue.is_closed() {
            return Poll::Ready(Err(connection_gone()));
        }
        Poll::Ready(Ok(()))
    }

    /// Ends this channel locally; the WebSocket protocols have no server-side channel close.
    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shut = true;
        self.queue.close();
        Poll::Ready(Ok(()))
    }
}

/// The server's side of one input channel: the payloads the client sent, in order; EOF when
/// the client closes the channel (v5) or the connection ends.
pub(crate) struct ChannelReader {
    chunks: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChannelReader {
    /// An input channel and the sender the connection's reader feeds it with.
    pub(crate) fn pair() -> (mpsc::Sender<Bytes>, ChannelReader) {
        let (tx, chunks) = mpsc::channel(INBOUND_QUEUE);
        let reader = ChannelReader {
            chunks,
            current: Bytes::new(),
        };
        (tx, reader)
    }
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.current.is_empty() {
            match ready!(self.chunks.poll_recv(cx)) {
                Some(chunk) => self.current = chunk,
                None => return Poll::Ready(Ok(())),
            }
        }
        let len = self.current.len().min(buf.remaining());
        buf.put_slice(&self.current[..len]);
        self.current.advance(len);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::websocket::frame::STDOUT;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn wire_bytes_of_a_stdout_message_and_the_close_frame() {
        let (server_io, mut client_io) = tokio::io::duplex(4096);
        let conn = start(
            server_io,
            Codec::Binary,
            false,
            Vec::new(),
            Config::default(),
        )
        .await;
        let mut stdout = ChannelWriter::new(&conn.outbound, STDOUT, Codec::Binary);
        stdout.write_all(b"hi").await.unwrap();
        let close = tokio::spawn(crate::Session::new(Box::new(conn.session)).close());

        // Unmasked binary frame, FIN set: 0x82, length 3, channel 1, "hi"; then the close
        // frame: 0x88, length 2, status 1000 (0x03e8) big-endian.
        let mut wire = [0u8; 9];
        client_io.read_exact(&mut wire).await.unwrap();
        assert_eq!(wire, [0x82, 3, 1, b'h', b'i', 0x88, 2, 0x03, 0xe8]);

        // The client's masked close reply (mask 0) completes the handshake.
        client_io
            .write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8])
            .await
            .unwrap();
        close.await.unwrap();
        let mut rest = Vec::new();
        client_io.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "nothing after the close frame: {rest:?}");
    }

    #[tokio::test]
    async fn big_writes_are_split_into_bounded_messages() {
        let (server_io, client_io) = tokio::io::duplex(1 << 20);
        let conn = start(
            server_io,
            Codec::Binary,
            false,
            Vec::new(),
            Config::default(),
        )
        .await;
        let mut stdout = ChannelWriter::new(&conn.outbound, STDOUT, Codec::Binary);
        let n = stdout.write(&vec![7u8; MAX_PAYLOAD + 10]).await.unwrap();
        assert_eq!(n, MAX_PAYLOAD);
        drop(client_io);
    }

    #[tokio::test]
    async fn channel_reader_skips_nothing_and_ends_at_sender_drop() {
        let (tx, mut reader) = ChannelReader::pair();
        tx.send(Bytes::from_static(b"ab")).await.unwrap();
        tx.send(Bytes::from_static(b"c")).await.unwrap();
        drop(tx);
        let mut all = Vec::new();
        reader.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"abc");
    }
}
