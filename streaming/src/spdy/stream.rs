//! The two halves of a SPDY stream as `AsyncRead` / `AsyncWrite`.
//!
//! Reading credits the windows we advertised, so the peer may send more; writing waits for the
//! peer's window (when it enforces one) and for room in the connection's outgoing queue, so a
//! slow peer slows the writer down instead of growing a buffer. Shutting the writer down sends
//! FIN; dropping it does too. Dropping the reader discards what arrives from then on.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::frame::{Frame, rst};
use super::headers::Headers;
use super::shared::{MAX_DATA_CHUNK, MAX_QUEUED_BYTES, Outgoing, Shared};

/// One stream of a connection: the headers it was opened with and its two halves.
pub struct Stream {
    id: u32,
    headers: Headers,
    reader: StreamReader,
    writer: StreamWriter,
}

impl Stream {
    pub(super) fn new(shared: Arc<Shared>, id: u32, headers: Headers) -> Stream {
        Stream {
            id,
            headers,
            reader: StreamReader {
                shared: shared.clone(),
                id,
            },
            writer: StreamWriter { shared, id },
        }
    }

    /// The stream id (odd when the client opened it).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The headers of the SYN_STREAM that opened it.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The receiving and sending halves, to use from different tasks.
    pub fn into_split(self) -> (StreamReader, StreamWriter) {
        (self.reader, self.writer)
    }

    /// Aborts the stream in both directions with RST_STREAM `status` (see
    /// [`super::frame::rst`]).
    pub fn reset(self, status: u32) {
        let mut st = self.reader.shared.lock();
        let can_queue = st.can_queue();
        let Some(s) = st.streams.get_mut(&self.id) else {
            return;
        };
        if s.reset {
            return;
        }
        s.reset = true;
        let discarded = s.discard();
        st.credit_session(discarded);
        if can_queue {
            st.push(Outgoing::Frame(Frame::RstStream {
                stream_id: self.id,
                status,
            }));
        }
        drop(st);
        self.reader.shared.writer_wake.notify_one();
        // The reader task may be waiting for room in this stream's buffer.
        self.reader.shared.driver_wake.notify_one();
    }

    /// Aborts the stream as a server does when it refuses one (RST_STREAM CANCEL).
    pub fn cancel(self) {
        self.reset(rst::CANCEL)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.writer).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_shutdown(cx)
    }
}

/// The receiving half of a stream. Reads end (EOF) at the peer's FIN, when the connection ends
/// or closes; they fail if the stream was reset.
pub struct StreamReader {
    shared: Arc<Shared>,
    id: u32,
}

impl StreamReader {
    /// The stream id, for logs.
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl AsyncRead for StreamReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let mut guard = self.shared.lock();
        let st = &mut *guard;
        let ended = st.closing || st.read_closed;
        let Some(s) = st.streams.get_mut(&self.id) else {
            return Poll::Ready(Ok(()));
        };
        let Some(front) = s.buf.front_mut() else {
            if s.reset {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    format!("SPDY stream {} was reset", self.id),
                )));
            }
            if s.recv_fin || ended {
                return Poll::Ready(Ok(()));
            }
            s.read_waker = Some(cx.waker().clone());
            return Poll::Pending;
        };
        let n = front.len().min(buf.remaining());
        buf.put_slice(&front[..n]);
        front.advance(n);
        if front.is_empty() {
            s.buf.pop_front();
        }
        s.buffered -= n;
        let mut wake_writer = false;
        if !s.recv_fin && !s.reset {
            s.recv_unacked = s.recv_unacked.saturating_add(n as u32);
            if s.recv_unacked >= super::shared::STREAM_WINDOW / 4 {
                st.stream_updates_pending = true;
                wake_writer = true;
            }
        }
        wake_writer |= st.credit_session(n);
        drop(guard);
        if wake_writer {
            self.shared.writer_wake.notify_one();
        }
        self.shared.driver_wake.notify_one();
        Poll::Ready(Ok(()))
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if let Some(s) = st.streams.get_mut(&self.id) {
            s.reader_alive = false;
            s.read_waker = None;
            let discarded = s.discard();
            st.credit_session(discarded);
            st.maybe_remove(self.id);
        }
        drop(st);
        self.shared.driver_wake.notify_one();
    }
}

/// The sending half of a stream. `poll_flush` returns at once: frames are queued in order and
/// [`crate::Session::close`] flushes them.
pub struct StreamWriter {
    shared: Arc<Shared>,
    id: u32,
}

impl StreamWriter {
    /// The stream id, for logs.
    pub fn id(&self) -> u32 {
        self.id
    }
}

fn closed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, what.to_string())
}

impl AsyncWrite for StreamWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut guard = self.shared.lock();
        let st = &mut *guard;
        if st.closing || !st.can_queue() {
            return Poll::Ready(Err(closed("the SPDY session is closed")));
        }
        let Some(s) = st.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(closed("the SPDY stream is gone")));
        };
        if s.reset {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                format!("SPDY stream {} was reset", self.id),
            )));
        }
        if s.fin_sent {
            return Poll::Ready(Err(closed("write after the SPDY stream was closed")));
        }
        let mut n = buf.len().min(MAX_DATA_CHUNK);
        let mut blocked = st.queued_bytes >= MAX_QUEUED_BYTES;
        if st.peer_flow_control && !blocked {
            let window = s.send_window.min(st.send_session_window);
            if window <= 0 {
                if st.read_closed {
                    return Poll::Ready(Err(closed(
                        "the SPDY peer is gone and its flow-control window is closed",
                    )));
                }
                blocked = true;
            } else {
                n = n.min(window as usize);
            }
        }
        if blocked {
            if !st.send_waiters.iter().any(|w| w.will_wake(cx.waker())) {
                st.send_waiters.push(cx.waker().clone());
            }
            return Poll::Pending;
        }
        s.send_window -= n as i64;
        st.send_session_window -= n as i64;
        st.push(Outgoing::Frame(Frame::Data {
            stream_id: self.id,
            flags: 0,
            data: Bytes::copy_from_slice(&buf[..n]),
        }));
        drop(guard);
        self.shared.writer_wake.notify_one();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        let can_queue = st.can_queue() && !st.closing;
        let Some(s) = st.streams.get_mut(&self.id) else {
            return Poll::Ready(Ok(()));
        };
        if s.fin_sent || s.reset {
            return Poll::Ready(Ok(()));
        }
        if !can_queue {
            return Poll::Ready(Err(closed("the SPDY session is closed")));
        }
        s.fin_sent = true;
        st.push_fin(self.id);
        drop(st);
        self.shared.writer_wake.notify_one();
        Poll::Ready(Ok(()))
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        let can_queue = st.can_queue();
        let Some(s) = st.streams.get_mut(&self.id) else {
            return;
        };
        s.writer_alive = false;
        let fin = !s.fin_sent && !s.reset && can_queue;
        s.fin_sent = true;
        if fin {
            st.push_fin(self.id);
        }
        st.maybe_remove(self.id);
        drop(st);
        if fin {
            self.shared.writer_wake.notify_one();
        }
    }
}
