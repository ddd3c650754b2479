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

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::frame::{
    FLAG_FIN, FLAG_UNIDIRECTIONAL, Frame, FrameError, SETTINGS_INITIAL_WINDOW_SIZE, Setting,
    goaway, read_frame, rst,
};
use super::headers::{HeaderDecoder, HeaderEncoder, HeaderError, Headers};
use super::stream::Stream;
use crate::{Session, SessionControl, StreamError};

/// Which end of the connection this is: it decides stream id and ping id parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opens odd-numbered streams.
    Client,
    /// Accepts odd-numbered streams and answers each with a SYN_REPLY.
    Server,
}

/// The window SPDY/3.1 starts every stream and the session with.
pub const DEFAULT_WINDOW: i64 = 64 * 1024;
/// The window we advertise per stream: also the most a stream buffers.
pub const STREAM_WINDOW: u32 = 128 * 1024;
/// The session window we advertise.
pub const SESSION_WINDOW: u32 = 1024 * 1024;
/// Largest DATA frame we send.
pub const MAX_DATA_CHUNK: usize = 32 * 1024;
/// Bytes queued for the socket beyond which stream writers wait.
pub const MAX_QUEUED_BYTES: usize = 256 * 1024;
/// Live streams per connection; more are refused.
pub const MAX_STREAMS: usize = 1024;

const STREAM_UPDATE_THRESHOLD: u32 = STREAM_WINDOW / 4;
const SESSION_UPDATE_THRESHOLD: u32 = SESSION_WINDOW / 4;
const INCOMING_BACKLOG: usize = 32;
/// How long [`Connection::close`] waits for queued frames to reach the peer.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the read side stays open after close, so the peer's last bytes do not turn the
/// socket's close into a reset that could destroy our last frames in flight.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// A frame waiting for the writer task. Header blocks are compressed there, in wire order.
pub(super) enum Outgoing {
    Frame(Frame),
    Syn { stream_id: u32, headers: Headers },
    Reply { stream_id: u32, headers: Headers },
}

impl Outgoing {
    fn cost(&self) -> usize {
        match self {
            Outgoing::Frame(Frame::Data { data, .. }) => 8 + data.len(),
            Outgoing::Frame(_) => 16,
            Outgoing::Syn { .. } | Outgoing::Reply { .. } => 64,
        }
    }
}

pub(super) struct StreamState {
    pub buf: VecDeque<Bytes>,
    pub buffered: usize,
    /// The peer sent FIN.
    pub recv_fin: bool,
    /// Either side reset the stream.
    pub reset: bool,
    pub read_waker: Option<Waker>,
    /// Bytes consumed since the last stream WINDOW_UPDATE.
    pub recv_unacked: u32,
    pub reader_alive: bool,
    /// How much more we may send (once the peer enforces windows).
    pub send_window: i64,
    /// We sent FIN (or may not send: unidirectional).
    pub fin_sent: bool,
    pub writer_alive: bool,
    /// Client role: resolved by SYN_REPLY or RST_STREAM.
    pub reply: Option<oneshot::Sender<Result<(), StreamError>>>,
}

impl StreamState {
    fn new(send_window: i64, syn_flags: u8) -> StreamState {
        StreamState {
            buf: VecDeque::new(),
            buffered: 0,
            recv_fin: syn_flags & FLAG_FIN != 0,
            reset: false,
            read_waker: None,
            recv_unacked: 0,
            reader_alive: true,
            send_window,
            fin_sent: syn_flags & FLAG_UNIDIRECTIONAL != 0,
            writer_alive: true,
            reply: None,
        }
    }

    fn wake_reader(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
    }

    /// Drops buffered bytes, returning how many (to credit the session window).
    pub fn discard(&mut self) -> usize {
        self.buf.clear();
        std::mem::take(&mut self.buffered)
    }
}

pub(super) struct State {
    role: Role,
    pub streams: HashMap<u32, StreamState>,
    queue: VecDeque<Outgoing>,
    pub queued_bytes: usize,
    /// Stream writers waiting for window or queue space.
    pub send_waiters: Vec<Waker>,
    /// The peer showed it does SPDY/3.1 flow control: honour its windows.
    pub peer_flow_control: bool,
    peer_initial_window: i64,
    pub send_session_window: i64,
    /// Bytes consumed (or discarded) since the last session WINDOW_UPDATE.
    recv_session_unacked: u32,
    pub stream_updates_pending: bool,
    next_stream_id: u32,
    last_peer_stream_id: u32,
    goaway_received: bool,
    /// Close began: no new data either way, queued frames still go out.
    pub closing: bool,
    /// The writer sends what is queued, then shuts the socket's write side down.
    shutdown_when_drained: bool,
    /// The writer is gone (flushed and shut down, failed, or aborted).
    pub write_closed: bool,
    /// The peer's bytes ended (EOF, error, protocol error).
    pub read_closed: bool,
}

impl State {
    fn new(role: Role) -> State {
        State {
            role,
            streams: HashMap::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            send_waiters: Vec::new(),
            peer_flow_control: false,
            peer_initial_window: DEFAULT_WINDOW,
            send_session_window: DEFAULT_WINDOW,
            recv_session_unacked: 0,
            stream_updates_pending: false,
            next_stream_id: if role == Role::Client { 1 } else { 2 },
            last_peer_stream_id: 0,
            goaway_received: false,
            closing: false,
            shutdown_when_drained: false,
            write_closed: false,
            read_closed: false,
        }
    }

    /// Whether frames pushed now will still be written.
    pub fn can_queue(&self) -> bool {
        !self.shutdown_when_drained && !self.write_closed
    }

    pub fn push(&mut self, out: Outgoing) {
        self.queued_bytes += out.cost();
        self.queue.push_back(out);
    }

    pub fn push_fin(&mut self, stream_id: u32) {
        self.push(Outgoing::Frame(Frame::Data {
            stream_id,
            flags: FLAG_FIN,
            data: Bytes::new(),
        }));
    }

    /// Counts consumed or discarded bytes toward the next session WINDOW_UPDATE; true when
    /// the writer should send one.
    pub fn credit_session(&mut self, n: usize) -> bool {
        self.recv_session_unacked = self.recv_session_unacked.saturating_add(n as u32);
        self.recv_session_unacked >= SESSION_UPDATE_THRESHOLD
    }

    pub fn wake_senders(&mut self) {
        for w in self.send_waiters.drain(..) {
            w.wake();
        }
    }

    fn wake_all(&mut self) {
        self.wake_senders();
        for s in self.streams.values_mut() {
            s.wake_reader();
        }
    }

    /// Forgets a stream whose handles are both gone.
    pub fn maybe_remove(&mut self, id: u32) {
        if self
            .streams
            .get(&id)
            .is_some_and(|s| !s.reader_alive && !s.writer_alive)
        {
            self.streams.remove(&id);
        }
    }

    /// What the writer sends next: due window updates first, then the queue.
    fn take_batch(&mut self) -> (Vec<Outgoing>, usize) {
        let mut batch = Vec::new();
        if self.can_queue() {
            self.take_window_updates(&mut batch);
        }
        let cost = self.queue.iter().map(Outgoing::cost).sum();
        batch.extend(self.queue.drain(..));
        (batch, cost)
    }

    fn take_window_updates(&mut self, batch: &mut Vec<Outgoing>) {
        if self.recv_session_unacked >= SESSION_UPDATE_THRESHOLD {
            batch.push(Outgoing::Frame(Frame::WindowUpdate {
                stream_id: 0,
                delta: std::mem::take(&mut self.recv_session_unacked),
            }));
        }
        if !std::mem::take(&mut self.stream_updates_pending) {
            return;
        }
        for (&stream_id, s) in &mut self.streams {
            if s.recv_unacked >= STREAM_UPDATE_THRESHOLD && !s.recv_fin && !s.reset {
                batch.push(Outgoing::Frame(Frame::WindowUpdate {
                    stream_id,
                    delta: std::mem::take(&mut s.recv_unacked),
                }));
            }
        }
    }

    /// Hands DATA to a stream's buffer as far as it has room. `Ok(true)` when all of `data`
    /// was taken or discarded, `Ok(false)` when the stream is full and the rest must wait.
    fn deliver(&mut self, stream_id: u32, data: &mut Bytes, copy: bool) -> bool {
        let closing = self.closing;
        let Some(s) = self
            .streams
            .get_mut(&stream_id)
            .filter(|s| !closing && s.reader_alive && !s.reset && !s.recv_fin)
        else {
            // Unknown, finished, reset or unread stream: drop the bytes, keep the session
            // window open.
            let n = data.len();
            data.clear();
            self.credit_session(n);
            return true;
        };
        let room = (STREAM_WINDOW as usize).saturating_sub(s.buffered);
        if room == 0 && !data.is_empty() {
            return false;
        }
        let n = room.min(data.len());
        if n > 0 {
            let chunk = if copy {
                let c = Bytes::copy_from_slice(&data[..n]);
                data.advance(n);
                c
            } else {
                data.split_to(n)
            };
            s.buffered += n;
            s.buf.push_back(chunk);
            s.wake_reader();
        }
        data.is_empty()
    }

    fn remote_fin(&mut self, stream_id: u32) {
        if let Some(s) = self.streams.get_mut(&stream_id) {
            s.recv_fin = true;
            s.wake_reader();
        }
    }

    fn reset_by_peer(&mut self, stream_id: u32, status: u32) {
        let Some(s) = self.streams.get_mut(&stream_id) else {
            return;
        };
        tracing::debug!(stream_id, status, "stream reset by peer");
        s.reset = true;
        let discarded = s.discard();
        s.wake_reader();
        if let Some(reply) = s.reply.take() {
            let _ = reply.send(Err(StreamError::Protocol(format!(
                "peer reset stream {stream_id} (status {status})"
            ))));
        }
        self.credit_session(discarded);
        self.wake_senders();
    }

    fn replied(&mut self, stream_id: u32, flags: u8) {
        if let Some(s) = self.streams.get_mut(&stream_id) {
            if let Some(reply) = s.reply.take() {
                let _ = reply.send(Ok(()));
            }
            if flags & FLAG_FIN != 0 {
                s.recv_fin = true;
                s.wake_reader();
            }
        }
    }

    fn apply_settings(&mut self, entries: &[Setting]) {
        for e in entries {
            if e.id == SETTINGS_INITIAL_WINDOW_SIZE {
                let window = i64::from(e.value.min(0x7fff_ffff));
                let delta = window - self.peer_initial_window;
                for s in self.streams.values_mut() {
                    s.send_window += delta;
                }
                self.peer_initial_window = window;
                self.peer_flow_control = true;
            }
        }
        self.wake_senders();
    }

    fn window_update(&mut self, stream_id: u32, delta: u32) {
        self.peer_flow_control = true;
        let delta = i64::from(delta);
        if stream_id == 0 {
            self.send_session_window = (self.send_session_window + delta).min(i64::from(i32::MAX));
        } else if let Some(s) = self.streams.get_mut(&stream_id) {
            s.send_window = (s.send_window + delta).min(i64::from(i32::MAX));
        }
        self.wake_senders();
    }

    /// Starts a graceful close: FIN on every stream we may still write, then GOAWAY.
    fn begin_close(&mut self) {
        if self.closing {
            return;
        }
        self.closing = true;
        if self.can_queue() {
            let open: Vec<u32> = self
                .streams
                .iter_mut()
                .filter(|(_, s)| !s.fin_sent && !s.reset)
                .map(|(&id, s)| {
                    s.fin_sent = true;
                    id
                })
                .collect();
            for id in open {
                self.push_fin(id);
            }
            self.push(Outgoing::Frame(Frame::GoAway {
                last_good_stream_id: self.last_peer_stream_id,
                status: goaway::OK,
            }));
        }
        self.shutdown_when_drained = true;
        self.wake_all();
    }

    /// The peer's bytes ended: readers see EOF once drained, pending opens fail.
    fn read_ended(&mut self) {
        self.read_closed = true;
        for s in self.streams.values_mut() {
            s.reply = None;
        }
        self.wake_all();
    }

    fn writer_ended(&mut self) {
        self.write_closed = true;
        self.queue.clear();
        self.queued_bytes = 0;
        self.wake_all();
    }
}

pub(super) struct Shared {
    state: Mutex<State>,
    /// Something was queued for the writer task.
    pub writer_wake: Notify,
    /// A stream buffer or the outgoing queue has room again (the reader task waits on it).
    pub driver_wake: Notify,
    /// The peer's bytes ended or writing to it failed.
    gone: Notify,
    /// When a frame last went either way, for the idle timeout.
    activity: Activity,
}

/// Milliseconds since the connection started at which a frame last went either way.
struct Activity {
    origin: tokio::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            origin: tokio::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn last(&self) -> tokio::time::Instant {
        let ms = self.last_ms.load(std::sync::atomic::Ordering::Relaxed);
        self.origin + Duration::from_millis(ms)
    }
}

impl Shared {
    /// The state; a panic elsewhere while holding the lock does not take the session down.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves once the peer is gone: its bytes ended, or writing to it failed.
    async fn gone(&self) {
        loop {
            let notified = self.gone.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.lock();
                if st.read_closed || st.write_closed {
                    return;
                }
            }
            notified.await;
        }
    }
}

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
