//! The Kubernetes streaming protocols behind exec, attach and port-forward, transport only.
//!
//! kubelet hands clients (kubectl, crictl) a URL on berthd's streaming server; the client
//! upgrades the HTTP connection to SPDY/3.1 ([`spdy`]) or WebSocket ([`websocket`]) and
//! multiplexes stdin/stdout/stderr/error/resize (exec, attach) or per-port data/error streams
//! (port-forward) over it. Each transport turns an upgraded connection into the same
//! transport-neutral shapes, [`RemoteCommand`] and [`PortForwardStream`], so the code that runs
//! the command or dials the port never knows which transport carried it. [`protocol`] holds
//! what both share: subprotocol negotiation, the exit `Status` object, resize events.
//! No CRI knowledge lives here.

pub mod capture;
pub mod protocol;
pub mod spdy;
pub mod websocket;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// A boxed byte source (client → server).
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// A boxed byte sink (server → client).
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Which streams an exec or attach session carries: fixed by the CRI request the URL was
/// minted for, not by the client's URL query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// A terminal size sent on the resize stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermSize {
    pub width: u16,
    pub height: u16,
}

/// The server's view of one exec or attach session, whatever the transport.
///
/// Reading `stdin` ends (EOF) when the client closes its stdin (SPDY FIN, WebSocket v5 close
/// signal) or disconnects. The server writes the outcome once on `error` with
/// [`protocol::write_status`], then calls [`Session::close`].
pub struct RemoteCommand {
    /// The negotiated subprotocol, e.g. `v4.channel.k8s.io`.
    pub protocol: String,
    pub stdin: Option<Reader>,
    pub stdout: Option<Writer>,
    pub stderr: Option<Writer>,
    /// Terminal sizes, in order (tty sessions on protocols that have a resize stream).
    pub resize: Option<mpsc::Receiver<TermSize>>,
    pub error: Writer,
}

/// One forwarded connection of a port-forward session: bytes for `port` inside the pod.
pub struct PortForwardStream {
    pub port: u16,
    /// Client → pod bytes; EOF when the client half-closes.
    pub data_in: Reader,
    /// Pod → client bytes.
    pub data_out: Writer,
    /// Where a failure for this connection (e.g. dial refused) is reported as text.
    pub error: Writer,
}

/// A live upgraded connection. Dropping it aborts the connection; [`Session::close`] flushes
/// what the server wrote and closes it cleanly.
pub struct Session {
    inner: Box<dyn SessionControl>,
}

impl Session {
    /// Wraps a transport's session control.
    pub fn new(inner: Box<dyn SessionControl>) -> Session {
        Session { inner }
    }

    /// Flushes every stream, ends the session (SPDY GOAWAY, WebSocket close frame) and shuts
    /// the connection down.
    pub async fn close(self) {
        self.inner.close().await
    }

    /// Resolves once the client is gone (connection closed or broken), so a server waiting
    /// on something else (an attach with no output) can give up its resources.
    pub async fn closed(&self) {
        self.inner.closed().await
    }

    /// Ends the session (as if the client left: [`Session::closed`] resolves) once no data
    /// has gone either way for `idle`, like kubelet's stream idle timeout.
    pub fn set_idle_timeout(&mut self, idle: std::time::Duration) {
        self.inner.set_idle_timeout(idle)
    }
}

/// What a transport implements behind [`Session`].
pub trait SessionControl: Send + Sync {
    fn close(self: Box<Self>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

    /// Resolves once the client is gone; transports that cannot tell never resolve.
    fn closed(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::pending())
    }

    /// See [`Session::set_idle_timeout`]; transports with their own idle limit ignore it.
    fn set_idle_timeout(&mut self, _idle: std::time::Duration) {}
}

/// Why a session could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("client did not open the expected streams within {0:?}")]
    Timeout(std::time::Duration),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
}
