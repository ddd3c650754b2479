//! The state a SPDY/3.1 connection's tasks and streams share: streams with their windows and
//! buffers, the outgoing queue, and the wakers between them, behind one mutex that is never
//! held across an `.await` (see `session` for the flow-control rules).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::sync::{Notify, oneshot};

use super::frame::{
    FLAG_FIN, FLAG_UNIDIRECTIONAL, Frame, SETTINGS_INITIAL_WINDOW_SIZE, Setting, goaway,
};
use super::headers::Headers;
use crate::StreamError;

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

pub(super) const STREAM_UPDATE_THRESHOLD: u32 = STREAM_WINDOW / 4;
pub(super) const SESSION_UPDATE_THRESHOLD: u32 = SESSION_WINDOW / 4;

/// A frame waiting for the writer task. Header blocks are compressed there, in wire order.
pub(super) enum Outgoing {
    Frame(Frame),
    Syn { stream_id: u32, headers: Headers },
    Reply { stream_id: u32, headers: Headers },
}

impl Outgoing {
    pub(super) fn cost(&self) -> usize {
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
    pub(super) fn new(send_window: i64, syn_flags: u8) -> StreamState {
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

    pub(super) fn wake_reader(&mut self) {
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
    pub(super) role: Role,
    pub streams: HashMap<u32, StreamState>,
    pub(super) queue: VecDeque<Outgoing>,
    pub queued_bytes: usize,
    /// Stream writers waiting for window or queue space.
    pub send_waiters: Vec<Waker>,
    /// The peer showed it does SPDY/3.1 flow control: honour its windows.
    pub peer_flow_control: bool,
    pub(super) peer_initial_window: i64,
    pub send_session_window: i64,
    /// Bytes consumed (or discarded) since the last session WINDOW_UPDATE.
    pub(super) recv_session_unacked: u32,
    pub stream_updates_pending: bool,
    pub(super) next_stream_id: u32,
    pub(super) last_peer_stream_id: u32,
    pub(super) goaway_received: bool,
    /// Close began: no new data either way, queued frames still go out.
    pub closing: bool,
    /// The writer sends what is queued, then shuts the socket's write side down.
    pub(super) shutdown_when_drained: bool,
    /// The writer is gone (flushed and shut down, failed, or aborted).
    pub write_closed: bool,
    /// The peer's bytes ended (EOF, error, protocol error).
    pub read_closed: bool,
}

impl State {
    pub(super) fn new(role: Role) -> State {
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

    pub(super) fn wake_all(&mut self) {
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
    pub(super) fn take_batch(&mut self) -> (Vec<Outgoing>, usize) {
        let mut batch = Vec::new();
        if self.can_queue() {
            self.take_window_updates(&mut batch);
        }
        let cost = self.queue.iter().map(Outgoing::cost).sum();
        batch.extend(self.queue.drain(..));
        (batch, cost)
    }

    pub(super) fn take_window_updates(&mut self, batch: &mut Vec<Outgoing>) {
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
    pub(super) fn deliver(&mut self, stream_id: u32, data: &mut Bytes, copy: bool) -> bool {
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

    pub(super) fn remote_fin(&mut self, stream_id: u32) {
        if let Some(s) = self.streams.get_mut(&stream_id) {
            s.recv_fin = true;
            s.wake_reader();
        }
    }

    pub(super) fn reset_by_peer(&mut self, stream_id: u32, status: u32) {
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

    pub(super) fn replied(&mut self, stream_id: u32, flags: u8) {
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

    pub(super) fn apply_settings(&mut self, entries: &[Setting]) {
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

    pub(super) fn window_update(&mut self, stream_id: u32, delta: u32) {
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
    pub(super) fn begin_close(&mut self) {
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
    pub(super) fn read_ended(&mut self) {
        self.read_closed = true;
        for s in self.streams.values_mut() {
            s.reply = None;
        }
        self.wake_all();
    }

    pub(super) fn writer_ended(&mut self) {
        self.write_closed = true;
        self.queue.clear();
        self.queued_bytes = 0;
        self.wake_all();
    }
}

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// Something was queued for the writer task.
    pub writer_wake: Notify,
    /// A stream buffer or the outgoing queue has room again (the reader task waits on it).
    pub driver_wake: Notify,
    /// The peer's bytes ended or writing to it failed.
    pub(super) gone: Notify,
    /// When a frame last went either way, for the idle timeout.
    pub(super) activity: Activity,
}

/// Milliseconds since the connection started at which a frame last went either way.
pub(super) struct Activity {
    pub(super) origin: tokio::time::Instant,
    pub(super) last_ms: std::sync::atomic::AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Activity {
        Activity {
            origin: tokio::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub(super) fn touch(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn last(&self) -> tokio::time::Instant {
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
    pub(super) async fn gone(&self) {
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
