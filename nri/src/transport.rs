//! NRI's transport: two ttrpc connections multiplexed over one unix socket connection.
//!
//! ## Wire format (containerd/nri `pkg/net/multiplex` and containerd/ttrpc)
//!
//! The socket connection (the *trunk*) carries frames `[conn id: u32 BE][length: u32 BE]
//! [payload]`. Connection 1 carries the ttrpc connection on which the **plugin** serves the
//! `Plugin` service (the runtime is the client); connection 2 carries the one on which the
//! **runtime** serves the `Runtime` service (`RegisterPlugin`, `UpdateContainers`). Opening a
//! connection is not signalled: both ends simply use the IDs. Each connection's frames,
//! concatenated, form a ttrpc byte stream of messages `[length: u32 BE][stream id: u32 BE]
//! [type: u8][flags: u8][payload]`, type 1 a request, 2 a response; the payload is a
//! protobuf `ttrpc.Request {service, method, payload, timeout_nano, metadata}` or
//! `ttrpc.Response {status: google.rpc.Status, payload}`. Clients use odd stream IDs, one
//! per call, counting up by two.
//!
//! The Go multiplexer hands each frame to ttrpc's 4 KiB `bufio.Reader` as one read and fails
//! on a frame bigger than the read buffer offered. Go's ttrpc writes a message through a
//! 4 KiB `bufio.Writer`, so a message goes out as at most two frames: the first 4096 bytes,
//! then the rest. [`frames`] splits messages exactly that way, which those readers accept.
//!
//! ## Why the framing is written here and not taken from the `ttrpc` crate
//!
//! containerd's Rust `ttrpc` crate generates its services and messages with rust-protobuf
//! (`ttrpc-codegen`), so it would bring a second protobuf type set beside the prost types
//! every berth crate uses, and its client and server own a real socket file descriptor:
//! running them over NRI's virtual connections would need a socketpair and a copying task per
//! direction. Unary ttrpc is a 10-byte header and two small messages, so berth frames it
//! itself over the multiplexed connection with prost types (the requests and responses
//! below mirror containerd/ttrpc's `request.proto`).

use std::collections::HashMap;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{oneshot, watch};

/// Mux connection of the `Plugin` service (served by the plugin).
pub const PLUGIN_SERVICE_CONN: u32 = 1;
/// Mux connection of the `Runtime` service (served by the runtime).
pub const RUNTIME_SERVICE_CONN: u32 = 2;

const MUX_HEADER_LEN: usize = 8;
const TTRPC_HEADER_LEN: usize = 10;
/// ttrpc's largest message payload (containerd/ttrpc `messageLengthMax`).
pub const TTRPC_MAX_MESSAGE: usize = 4 << 20;
/// Go's default `bufio` buffer size, which bounds the frames a Go peer can read.
const GO_BUFIO_SIZE: usize = 4096;
const TYPE_REQUEST: u8 = 1;
const TYPE_RESPONSE: u8 = 2;

/// The NRI service names (package `nri.pkg.api.v1alpha1`).
pub const PLUGIN_SERVICE: &str = "nri.pkg.api.v1alpha1.Plugin";
pub const RUNTIME_SERVICE: &str = "nri.pkg.api.v1alpha1.Runtime";

/// gRPC status codes used on the wire.
pub mod code {
    pub const UNKNOWN: i32 = 2;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const INTERNAL: i32 = 13;
}

/// containerd/ttrpc `Request`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TtrpcRequest {
    #[prost(string, tag = "1")]
    pub service: String,
    #[prost(string, tag = "2")]
    pub method: String,
    #[prost(bytes = "vec", tag = "3")]
    pub payload: Vec<u8>,
    #[prost(int64, tag = "4")]
    pub timeout_nano: i64,
    #[prost(message, repeated, tag = "5")]
    pub metadata: Vec<KeyValue>,
}

/// containerd/ttrpc `KeyValue` (request metadata).
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// containerd/ttrpc `Response`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TtrpcResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<RpcStatus>,
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
}

/// `google.rpc.Status` (details are not used by NRI and are skipped when decoding).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

impl RpcStatus {
    pub fn new(code: i32, message: impl Into<String>) -> RpcStatus {
        RpcStatus {
            code,
            message: message.into(),
        }
    }
}

/// Why a call to the peer failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("connection closed")]
    Closed,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{message} (code {code})")]
    Status { code: i32, message: String },
    #[error("answer does not decode: {0}")]
    Decode(String),
    #[error("message of {0} bytes exceeds the ttrpc limit")]
    TooLarge(usize),
}

/// A served call: service, method, the request payload and the caller's deadline.
pub struct Incoming {
    pub service: String,
    pub method: String,
    pub payload: Vec<u8>,
    pub timeout: Option<Duration>,
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// Serves calls arriving on the served connection.
pub type Handler = Arc<dyn Fn(Incoming) -> BoxFuture<Result<Vec<u8>, RpcStatus>> + Send + Sync>;

/// One end of an NRI connection: a ttrpc client on one mux connection and a ttrpc server on
/// the other.
pub struct Peer {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    raw_fd: i32,
    client_conn: u32,
    server_conn: u32,
    pending: Mutex<HashMap<u32, oneshot::Sender<TtrpcResponse>>>,
    next_stream: AtomicU32,
    closed: watch::Sender<bool>,
}

impl Peer {
    /// Starts serving `stream`: calls go out on `client_conn`, calls arriving on
    /// `server_conn` go to `handler`.
    pub fn start(
        stream: UnixStream,
        client_conn: u32,
        server_conn: u32,
        handler: Handler,
    ) -> Arc<Peer> {
        let raw_fd = stream.as_raw_fd();
        let (read, write) = stream.into_split();
        let (closed, _) = watch::channel(false);
        let peer = Arc::new(Peer {
            writer: tokio::sync::Mutex::new(write),
            raw_fd,
            client_conn,
            server_conn,
            pending: Mutex::new(HashMap::new()),
            next_stream: AtomicU32::new(1),
            closed,
        });
        tokio::spawn(read_loop(peer.clone(), read, handler));
        peer
    }

    /// The runtime's end of a plugin connection.
    pub fn runtime_side(stream: UnixStream, handler: Handler) -> Arc<Peer> {
        Peer::start(stream, PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN, handler)
    }

    /// A plugin's end of its connection to the runtime.
    pub fn plugin_side(stream: UnixStream, handler: Handler) -> Arc<Peer> {
        Peer::start(stream, RUNTIME_SERVICE_CONN, PLUGIN_SERVICE_CONN, handler)
    }

    /// Calls `service.method` and decodes the answer, waiting at most `timeout`.
    pub async fn call<Req: prost::Message, Resp: prost::Message + Default>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        if self.is_closed() {
            return Err(CallError::Closed);
        }
        let request = TtrpcRequest {
            service: service.into(),
            method: method.into(),
            payload: req.encode_to_vec(),
            timeout_nano: i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX),
            metadata: Vec::new(),
        };
        let sid = self.next_stream.fetch_add(2, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending_map().insert(sid, tx);
        if let Err(e) = self
            .send(
                self.client_conn,
                sid,
                TYPE_REQUEST,
                &prost::Message::encode_to_vec(&request),
            )
            .await
        {
            self.pending_map().remove(&sid);
            return Err(e);
        }
        let answer = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(a)) => a,
            Ok(Err(_)) => return Err(CallError::Closed),
            Err(_) => {
                self.pending_map().remove(&sid);
                return Err(CallError::Timeout(timeout));
            }
        };
        if let Some(s) = answer.status.filter(|s| s.code != 0) {
            return Err(CallError::Status {
                code: s.code,
                message: s.message,
            });
        }
        Resp::decode(answer.payload.as_slice()).map_err(|e| CallError::Decode(e.to_string()))
    }

    /// Closes the connection: pending calls fail, the peer sees end of file.
    pub fn close(&self) {
        let _ = nix::sys::socket::shutdown(self.raw_fd, nix::sys::socket::Shutdown::Both);
        self.mark_closed();
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Resolves once the connection is closed (by either end).
    pub async fn closed(&self) {
        let mut rx = self.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    fn mark_closed(&self) {
        self.closed.send_replace(true);
        self.pending_map().clear();
    }

    fn pending_map(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u32, oneshot::Sender<TtrpcResponse>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn send(&self, conn: u32, sid: u32, kind: u8, payload: &[u8]) -> Result<(), CallError> {
        if payload.len() > TTRPC_MAX_MESSAGE {
            return Err(CallError::TooLarge(payload.len()));
        }
        let bytes = frames(conn, sid, kind, payload);
        let mut w = self.writer.lock().await;
        if w.write_all(&bytes).await.is_err() {
            drop(w);
            self.close();
            return Err(CallError::Closed);
        }
        Ok(())
    }
}

/// One ttrpc message as the mux frames a Go peer writes for it (see the module docs).
pub fn frames(conn: u32, sid: u32, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(TTRPC_HEADER_LEN + payload.len());
    msg.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    msg.extend_from_slice(&sid.to_be_bytes());
    msg.push(kind);
    msg.push(0);
    msg.extend_from_slice(payload);
    let mut out = Vec::with_capacity(msg.len() + 2 * MUX_HEADER_LEN);
    let split = msg.len().min(GO_BUFIO_SIZE);
    for chunk in [&msg[..split], &msg[split..]] {
        if chunk.is_empty() {
            continue;
        }
        out.extend_from_slice(&conn.to_be_bytes());
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// Splits complete ttrpc messages off the front of `buf`: `(stream id, type, payload)`.
/// `Err` when a message announces more than ttrpc allows.
pub fn take_messages(buf: &mut Vec<u8>) -> Result<Vec<(u32, u8, Vec<u8>)>, usize> {
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() - at >= TTRPC_HEADER_LEN {
        let h = &buf[at..at + TTRPC_HEADER_LEN];
        let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        if len > TTRPC_MAX_MESSAGE {
            return Err(len);
        }
        if buf.len() - at < TTRPC_HEADER_LEN + len {
            break;
        }
        let sid = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let kind = h[8];
        let start = at + TTRPC_HEADER_LEN;
        out.push((sid, kind, buf[start..start + len].to_vec()));
        at = start + len;
    }
    buf.drain(..at);
    Ok(out)
}

async fn read_loop(peer: Arc<Peer>, mut read: OwnedReadHalf, handler: Handler) {
    let mut client_buf = Vec::new();
    let mut server_buf = Vec::new();
    let mut header = [0u8; MUX_HEADER_LEN];
    loop {
        if read.read_exact(&mut header).await.is_err() {
            break;
        }
        let conn = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if len > TTRPC_MAX_MESSAGE + TTRPC_HEADER_LEN {
            tracing::warn!(len, "NRI: oversized mux frame; closing the connection");
            break;
        }
        let mut payload = vec![0u8; len];
        if read.read_exact(&mut payload).await.is_err() {
            break;
        }
        let buf = if conn == peer.client_conn {
            &mut client_buf
        } else if conn == peer.server_conn {
            &mut server_buf
        } else {
            continue; // a connection nobody opened: dropped, as the Go mux does
        };
        buf.extend_from_slice(&payload);
        let Ok(messages) = take_messages(buf) else {
            tracing::warn!("NRI: oversized ttrpc message; closing the connection");
            break;
        };
        for (sid, kind, body) in messages {
            if conn == peer.client_conn {
                if kind != TYPE_RESPONSE {
                    continue;
                }
                let Ok(resp) = <TtrpcResponse as prost::Message>::decode(body.as_slice()) else {
                    continue;
                };
                if let Some(tx) = peer.pending_map().remove(&sid) {
                    let _ = tx.send(resp);
                }
            } else if kind == TYPE_REQUEST {
                let peer = peer.clone();
                let handler = handler.clone();
                tokio::spawn(async move {
                    let answer = match <TtrpcRequest as prost::Message>::decode(body.as_slice()) {
                        Ok(req) => {
                            let timeout = (req.timeout_nano > 0)
                                .then(|| Duration::from_nanos(req.timeout_nano as u64));
                            handler(Incoming {
                                service: req.service,
                                method: req.method,
                                payload: req.payload,
                                timeout,
                            })
                            .await
                        }
                        Err(e) => Err(RpcStatus::new(code::INVALID_ARGUMENT, e.to_string())),
                    };
                    let resp = match answer {
                        Ok(payload) => TtrpcResponse {
                            status: None,
                            payload,
                        },
                        Err(status) => TtrpcResponse {
                            status: Some(status),
                            payload: Vec::new(),
                        },
                    };
                    let bytes = prost::Message::encode_to_vec(&resp);
                    let _ = peer
                        .send(peer.server_conn, sid, TYPE_RESPONSE, &bytes)
                        .await;
                });
            }
        }
    }
    peer.close();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_message_is_one_frame_with_mux_and_ttrpc_headers() {
        let f = frames(2, 1, TYPE_REQUEST, b"abc");
        assert_eq!(&f[0..4], &2u32.to_be_bytes());
        assert_eq!(&f[4..8], &13u32.to_be_bytes());
        assert_eq!(&f[8..12], &3u32.to_be_bytes());
        assert_eq!(&f[12..16], &1u32.to_be_bytes());
        assert_eq!(f[16], TYPE_REQUEST);
        assert_eq!(f[17], 0);
        assert_eq!(&f[18..], b"abc");
    }

    #[test]
    fn big_message_is_split_like_go_bufio_and_reassembles() {
        let payload: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let f = frames(1, 7, TYPE_RESPONSE, &payload);
        let first = u32::from_be_bytes([f[4], f[5], f[6], f[7]]) as usize;
        assert_eq!(first, GO_BUFIO_SIZE);
        let second_at = MUX_HEADER_LEN + first;
        let second = u32::from_be_bytes([
            f[second_at + 4],
            f[second_at + 5],
            f[second_at + 6],
            f[second_at + 7],
        ]) as usize;
        assert_eq!(first + second, payload.len() + TTRPC_HEADER_LEN);
        let mut stream = f[MUX_HEADER_LEN..second_at].to_vec();
        assert!(take_messages(&mut stream).expect("ok").is_empty());
        stream.extend_from_slice(&f[second_at + MUX_HEADER_LEN..]);
        let msgs = take_messages(&mut stream).expect("ok");
        assert_eq!(msgs, vec![(7, TYPE_RESPONSE, payload)]);
        assert!(stream.is_empty());
    }

    #[test]
    fn oversized_announcement_is_refused() {
        let mut buf = ((TTRPC_MAX_MESSAGE + 1) as u32).to_be_bytes().to_vec();
        buf.extend_from_slice(&[0; 6]);
        assert!(take_messages(&mut buf).is_err());
    }

    #[tokio::test]
    async fn calls_cross_between_plugin_and_runtime_ends() {
        let (a, b) = UnixStream::pair().expect("pair");
        let echo: Handler = Arc::new(|inc: Incoming| {
            Box::pin(async move {
                if inc.method == "Fail" {
                    return Err(RpcStatus::new(code::UNKNOWN, "induced"));
                }
                Ok(inc.payload)
            })
        });
        let runtime = Peer::runtime_side(a, echo.clone());
        let plugin = Peer::plugin_side(b, echo);
        let req = proto::nri::RegisterPluginRequest {
            plugin_name: "x".into(),
            plugin_idx: "10".into(),
            nri_version: String::new(),
        };
        let got: proto::nri::RegisterPluginRequest = plugin
            .call(
                RUNTIME_SERVICE,
                "RegisterPlugin",
                &req,
                Duration::from_secs(5),
            )
            .await
            .expect("call");
        assert_eq!(got, req);
        let err = runtime
            .call::<_, proto::nri::Empty>(
                PLUGIN_SERVICE,
                "Fail",
                &proto::nri::Empty {},
                Duration::from_secs(5),
            )
            .await
            .expect_err("fails");
        assert!(matches!(err, CallError::Status { code: 2, .. }), "{err}");
        plugin.close();
        runtime.closed().await;
        let err = runtime
            .call::<_, proto::nri::Empty>(
                PLUGIN_SERVICE,
                "X",
                &proto::nri::Empty {},
                Duration::from_secs(1),
            )
            .await
            .expect_err("closed");
        assert!(matches!(err, CallError::Closed));
    }
}
