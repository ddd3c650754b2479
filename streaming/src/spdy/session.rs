//! A SPDY/3.1 connection: a reader task that decodes and dispatches frames, a writer task that
//! owns the socket's write half and the header compressor, and streams in between.
//!
//! All shared state sits behind one mutex that is never held across an `.await`. Memory is
//! bounded in both directions: each stream buffers at most the window it advertised (a peer that
//! ignores windows, as client-go's spdystream does, stalls the reader task and so meets TCP
//! back-pressure instead), and stream writers wait while the outgoing queue is full.
//!
//! Flow control: we advertise our windows (SETTINGS, session WINDOW_UPDATE) and credit them as
//! the consumer reads. We honour the peer's windows once it shows it speaks SPDY/3.1 flow
//! control, by a SETTINGS_INITIAL_WINDOW_SIZE or a WINDOW_UPDATE. spdystream, which kubectl,
//! crictl and kubelet use, never does: it ignores windows and never updates them, so enforcing
//! the 64 KiB default against it would stall every session after 64 KiB.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::frame::{
    FLAG_FIN, Frame, FrameError, SETTINGS_INITIAL_WINDOW_SIZE, Setting, goaway, read_frame, rst,
};
use super::headers::{HeaderDecoder, HeaderEncoder, HeaderError, Headers};
use super::shared::{
    Activity, DEFAULT_WINDOW, MAX_QUEUED_BYTES, MAX_STREAMS, Outgoing, Role,
    SESSION_UPDATE_THRESHOLD, SESSION_WINDOW, STREAM_WINDOW, Shared, State, StreamState,
};
use super::stream::Stream;
use crate::{Session, SessionControl, StreamError};

const INCOMING_BACKLOG: usize = 32;
/// How long [`Connection::close`] waits for queued frames to reach the peer.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the read side stays open after close, so the peer's last bytes do not turn the
/// socket's close into a reset that could destroy our last frames in flight.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// Why the reader task ended the session.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Header(#[from] HeaderError),
}

/// A SPDY/3.1 connection over an upgraded byte stream, in either role.
///
/// Peer-opened streams arrive through [`Connection::accept`] (already answered with a
/// SYN_REPLY); [`Connection::open_stream`] opens our own. Dropping the connection aborts it;
/// [`Connection::close`] ends it cleanly.
pub struct Connection {
    shared: Arc<Shared>,
    incoming: mpsc::Receiver<Stream>,
    tasks: Tasks,
}

impl Connection {
    /// Starts the reader and writer tasks over `io`, announcing our windows.
    pub fn new<IO>(io: IO, role: Role) -> Connection
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let mut state = State::new(role);
        state.push(Outgoing::Frame(Frame::Settings {
            flags: 0,
            entries: vec![Setting {
                flags: 0,
                id: SETTINGS_INITIAL_WINDOW_SIZE,
                value: STREAM_WINDOW,
            }],
        }));
        state.push(Outgoing::Frame(Frame::WindowUpdate {
            stream_id: 0,
            delta: SESSION_WINDOW - DEFAULT_WINDOW as u32,
        }));
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            writer_wake: Notify::new(),
            driver_wake: Notify::new(),
            gone: Notify::new(),
            activity: Activity::new(),
        });
        let (read, write) = tokio::io::split(io);
        let (tx, incoming) = mpsc::channel(INCOMING_BACKLOG);
        let reader = tokio::spawn(read_loop(shared.clone(), read, tx));
        let writer = tokio::spawn(write_loop(shared.clone(), write));
        shared.writer_wake.notify_one();
        Connection {
            shared: shared.clone(),
            incoming,
            tasks: Tasks {
                shared,
                reader: Some(reader),
                writer: Some(writer),
                watchdog: None,
            },
        }
    }

    /// The next stream the peer opened; `None` once no more can come (connection gone or the
    /// peer sent GOAWAY).
    pub async fn accept(&mut self) -> Option<Stream> {
        self.incoming.recv().await
    }

    /// Opens a stream carrying `headers` and waits for the peer's SYN_REPLY.
    pub async fn open_stream(&self, headers: Headers) -> Result<Stream, StreamError> {
        let (tx, rx) = oneshot::channel();
        let stream_id = {
            let mut st = self.shared.lock();
            if st.goaway_received || st.closing || st.read_closed || !st.can_queue() {
                return Err(StreamError::Protocol("the SPDY session is closed".into()));
            }
            let id = st.next_stream_id;
            if id > 0x7fff_ffff || st.streams.len() >= MAX_STREAMS {
                return Err(StreamError::Protocol("no stream ids left".into()));
            }
            st.next_stream_id += 2;
            let mut s = StreamState::new(st.peer_initial_window, 0);
            s.reply = Some(tx);
            st.streams.insert(id, s);
            st.push(Outgoing::Syn {
                stream_id: id,
                headers: headers.clone(),
            });
            id
        };
        self.shared.writer_wake.notify_one();
        // Built before waiting: if this future is dropped, the handles clean the stream up.
        let stream = Stream::new(self.shared.clone(), stream_id, headers);
        match rx.await {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StreamError::Protocol(format!(
                "connection ended before stream {stream_id} was answered"
            ))),
        }
    }

    /// Flushes what streams wrote, sends FIN on every open stream and GOAWAY, and shuts the
    /// connection down.
    pub async fn close(self) {
        close_session(self.tasks, Vec::new()).await;
    }

    /// The connection as a transport-neutral [`Session`]; streams the peer opens from now on
    /// are refused.
    pub fn into_session(self) -> Session {
        self.into_parts().1
    }

    /// The incoming streams and the [`Session`] that closes the connection.
    pub fn into_parts(self) -> (mpsc::Receiver<Stream>, Session) {
        (
            self.incoming,
            Session::new(Box::new(Control::new(self.tasks))),
        )
    }

    /// Like [`Connection::into_session`], keeping `writers` open until the session closes
    /// (streams the protocol requires but the server never writes, as kubelet keeps them).
    pub(super) fn into_session_keeping(self, writers: Vec<super::stream::StreamWriter>) -> Session {
        let mut control = Control::new(self.tasks);
        control.keep = writers;
        Session::new(Box::new(control))
    }
}

/// The tasks of a connection: aborted when dropped unless a close took them.
struct Tasks {
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
    /// Ends an idle session, when an idle timeout is set.
    watchdog: Option<JoinHandle<()>>,
}

impl Tasks {
    /// Watches for `idle` without a frame either way; then the session counts as gone.
    fn watch_idle(&mut self, idle: Duration) {
        if let Some(old) = self.watchdog.take() {
            old.abort();
        }
        let shared = self.shared.clone();
        shared.activity.touch();
        self.watchdog = Some(tokio::spawn(async move {
            loop {
                let deadline = shared.activity.last() + idle;
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep_until(deadline).await;
            }
            tracing::debug!(?idle, "SPDY session idle: closing it");
            shared.lock().read_ended();
            shared.gone.notify_waiters();
        }));
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in [self.reader.take(), self.writer.take(), self.watchdog.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        let mut st = self.shared.lock();
        st.closing = true;
        st.read_ended();
        st.writer_ended();
        drop(st);
        self.shared.gone.notify_waiters();
    }
}

/// [`SessionControl`] for SPDY.
struct Control {
    tasks: Tasks,
    keep: Vec<super::stream::StreamWriter>,
}

impl Control {
    fn new(tasks: Tasks) -> Control {
        Control {
            tasks,
            keep: Vec::new(),
        }
    }
}

impl SessionControl for Control {
    fn close(self: Box<Self>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let Control { tasks, keep } = *self;
        Box::pin(close_session(tasks, keep))
    }

    fn closed(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(self.tasks.shared.gone())
    }

    fn set_idle_timeout(&mut self, idle: Duration) {
        self.tasks.watch_idle(idle);
    }
}

async fn close_session(mut tasks: Tasks, keep: Vec<super::stream::StreamWriter>) {
    drop(keep);
    if let Some(watchdog) = tasks.watchdog.take() {
        watchdog.abort();
    }
    tasks.shared.lock().begin_close();
    tasks.shared.writer_wake.notify_one();
    tasks.shared.driver_wake.notify_one();
    if let Some(mut writer) = tasks.writer.take()
        && tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, &mut writer)
            .await
            .is_err()
    {
        tracing::debug!("SPDY peer did not take our last frames in time, aborting");
        writer.abort();
    }
    if let Some(mut reader) = tasks.reader.take() {
        tokio::spawn(async move {
            if tokio::time::timeout(CLOSE_LINGER, &mut reader)
                .await
                .is_err()
            {
                reader.abort();
            }
        });
    }
}

/// The writer task: compresses header blocks in order and writes batches of frames.
async fn write_loop<W: AsyncWrite + Unpin>(shared: Arc<Shared>, mut io: W) {
    let mut encoder = HeaderEncoder::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let result: Result<(), String> = loop {
        let (batch, cost, shutdown) = {
            let mut st = shared.lock();
            let (batch, cost) = st.take_batch();
            (batch, cost, st.shutdown_when_drained)
        };
        if batch.is_empty() {
            if shutdown {
                let _ = io.flush().await;
                let _ = io.shutdown().await;
                break Ok(());
            }
            shared.writer_wake.notified().await;
            continue;
        }
        if let Err(e) = encode_batch(&mut encoder, batch, &mut buf) {
            break Err(e.to_string());
        }
        if let Err(e) = write_out(&mut io, &buf).await {
            break Err(e.to_string());
        }
        shared.activity.touch();
        buf.clear();
        {
            let mut st = shared.lock();
            st.queued_bytes = st.queued_bytes.saturating_sub(cost);
            st.wake_senders();
        }
        shared.driver_wake.notify_one();
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "SPDY connection write failed");
    }
    shared.lock().writer_ended();
    shared.driver_wake.notify_one();
    shared.gone.notify_waiters();
}

async fn write_out<W: AsyncWrite + Unpin>(io: &mut W, buf: &[u8]) -> std::io::Result<()> {
    io.write_all(buf).await?;
    io.flush().await
}

fn encode_batch(
    encoder: &mut HeaderEncoder,
    batch: Vec<Outgoing>,
    buf: &mut BytesMut,
) -> Result<(), HeaderError> {
    for out in batch {
        let frame = match out {
            Outgoing::Frame(f) => f,
            Outgoing::Syn { stream_id, headers } => Frame::SynStream {
                stream_id,
                associated_to: 0,
                priority: 0,
                slot: 0,
                flags: 0,
                header_block: encoder.encode(&headers)?,
            },
            Outgoing::Reply { stream_id, headers } => Frame::SynReply {
                stream_id,
                flags: 0,
                header_block: encoder.encode(&headers)?,
            },
        };
        frame.encode(buf);
    }
    Ok(())
}

/// The reader task.
async fn read_loop<R: AsyncRead + Unpin>(shared: Arc<Shared>, io: R, tx: mpsc::Sender<Stream>) {
    let mut reader = BufReader::with_capacity(64 * 1024, io);
    let mut driver = Driver {
        shared,
        decoder: HeaderDecoder::new(),
        incoming: Some(tx),
    };
    loop {
        let result = match read_frame(&mut reader).await {
            Ok(Some(frame)) => {
                driver.shared.activity.touch();
                driver.dispatch(frame).await
            }
            Ok(None) => break,
            Err(FrameError::Io(e)) => {
                tracing::debug!(error = %e, "SPDY connection read failed");
                break;
            }
            Err(FrameError::Truncated) => break,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = result {
            driver.protocol_error(&e);
            break;
        }
    }
    driver.shared.lock().read_ended();
    driver.shared.gone.notify_waiters();
}

struct Driver {
    shared: Arc<Shared>,
    decoder: HeaderDecoder,
    /// Where peer-opened streams go; dropped on GOAWAY so the acceptor sees the end.
    incoming: Option<mpsc::Sender<Stream>>,
}

impl Driver {
    async fn dispatch(&mut self, frame: Frame) -> Result<(), SessionError> {
        self.wait_queue_room().await;
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                header_block,
                ..
            } => {
                let headers = self.decoder.decode(&header_block)?;
                self.peer_stream(stream_id, flags, headers);
            }
            Frame::SynReply {
                stream_id,
                flags,
                header_block,
            } => {
                self.decoder.decode(&header_block)?;
                self.shared.lock().replied(stream_id, flags);
            }
            Frame::Headers {
                stream_id,
                flags,
                header_block,
            } => {
                self.decoder.decode(&header_block)?;
                if flags & FLAG_FIN != 0 {
                    self.shared.lock().remote_fin(stream_id);
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => self.data(stream_id, flags, data).await,
            Frame::RstStream { stream_id, status } => {
                self.shared.lock().reset_by_peer(stream_id, status)
            }
            Frame::Settings { entries, .. } => self.shared.lock().apply_settings(&entries),
            Frame::Ping { id } => self.ping(id),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                tracing::debug!(last_good_stream_id, status, "SPDY peer sent GOAWAY");
                self.shared.lock().goaway_received = true;
                self.incoming = None;
            }
            Frame::WindowUpdate { stream_id, delta } => {
                self.shared.lock().window_update(stream_id, delta)
            }
            Frame::Unknown { .. } => {}
        }
        Ok(())
    }

    /// Stops reading while our outgoing queue is far over its bound: a peer that floods us
    /// with frames to answer (PING, SYN_STREAM) but does not read meets back-pressure.
    async fn wait_queue_room(&self) {
        loop {
            {
                let st = self.shared.lock();
                if st.queued_bytes < 2 * MAX_QUEUED_BYTES || !st.can_queue() {
                    return;
                }
            }
            self.shared.driver_wake.notified().await;
        }
    }

    fn queue(&self, out: Outgoing) {
        let mut st = self.shared.lock();
        if st.can_queue() {
            st.push(out);
            drop(st);
            self.shared.writer_wake.notify_one();
        }
    }

    fn peer_stream(&mut self, stream_id: u32, flags: u8, headers: Headers) {
        let mut st = self.shared.lock();
        if st.closing {
            return;
        }
        let peer_parity = if st.role == Role::Server { 1 } else { 0 };
        if stream_id % 2 != peer_parity || stream_id <= st.last_peer_stream_id {
            drop(st);
            tracing::debug!(stream_id, "SPDY peer opened a stream with an invalid id");
            return self.queue(rst_frame(stream_id, rst::PROTOCOL_ERROR));
        }
        st.last_peer_stream_id = stream_id;
        let permit = match &self.incoming {
            Some(tx) if st.streams.len() < MAX_STREAMS => tx.try_reserve().ok(),
            _ => None,
        };
        let Some(permit) = permit else {
            drop(st);
            tracing::debug!(stream_id, "refusing SPDY stream");
            return self.queue(rst_frame(stream_id, rst::REFUSED_STREAM));
        };
        let window = st.peer_initial_window;
        st.streams
            .insert(stream_id, StreamState::new(window, flags));
        if st.can_queue() {
            st.push(Outgoing::Reply {
                stream_id,
                headers: Headers::new(),
            });
        }
        drop(st);
        self.shared.writer_wake.notify_one();
        permit.send(Stream::new(self.shared.clone(), stream_id, headers));
    }

    async fn data(&mut self, stream_id: u32, flags: u8, mut data: Bytes) {
        // A frame larger than a stream buffer is copied out in pieces, so the buffers never pin
        // a big allocation.
        let copy = data.len() > STREAM_WINDOW as usize;
        loop {
            let (done, wake_writer) = {
                let mut st = self.shared.lock();
                let done = st.deliver(stream_id, &mut data, copy);
                (done, st.recv_session_unacked >= SESSION_UPDATE_THRESHOLD)
            };
            if wake_writer {
                self.shared.writer_wake.notify_one();
            }
            if done {
                break;
            }
            self.shared.driver_wake.notified().await;
        }
        if flags & FLAG_FIN != 0 {
            self.shared.lock().remote_fin(stream_id);
        }
    }

    fn ping(&self, id: u32) {
        let ours = if self.shared.lock().role == Role::Client {
            1
        } else {
            0
        };
        if id % 2 != ours {
            self.queue(Outgoing::Frame(Frame::Ping { id }));
        }
    }

    /// A malformed frame or header block: the zlib context may be lost, so the session ends
    /// with GOAWAY(PROTOCOL_ERROR).
    fn protocol_error(&mut self, e: &SessionError) {
        tracing::debug!(error = %e, "SPDY protocol error, ending the session");
        let mut st = self.shared.lock();
        if st.can_queue() {
            let last = st.last_peer_stream_id;
            st.push(Outgoing::Frame(Frame::GoAway {
                last_good_stream_id: last,
                status: goaway::PROTOCOL_ERROR,
            }));
        }
        st.shutdown_when_drained = true;
        drop(st);
        self.shared.writer_wake.notify_one();
        self.incoming = None;
    }
}

fn rst_frame(stream_id: u32, status: u32) -> Outgoing {
    Outgoing::Frame(Frame::RstStream { stream_id, status })
}
