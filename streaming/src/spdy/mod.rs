//! SPDY/3.1 as Kubernetes clients speak it (client-go's spdystream): frames, zlib header
//! blocks with the SPDY/3 dictionary, and sessions in server and client roles.
//!
//! berthd's HTTP layer answers the upgrade (`101 Switching Protocols`, `Upgrade: SPDY/3.1`,
//! the protocol chosen with [`crate::protocol::negotiate`]) and hands the upgraded connection
//! to [`accept_remote_command`] (exec, attach) or [`accept_port_forward`]. Clients open one
//! stream per channel, named by a `streamtype` header (`error`, `stdin`, `stdout`, `stderr`,
//! `resize`; port-forward: `error` and `data`, with `port` and `requestid`), and the server
//! answers each with a SYN_REPLY, as kubelet does.
//!
//! The client role ([`dial`], [`upgrade`], [`Connection::open_stream`]) is what berth's tests
//! use to talk to berthd as kubectl or crictl would.
//!
//! Layers: [`frame`] (the wire format, stateless), [`headers`] (header blocks and their
//! connection-long zlib contexts), [`Connection`] (streams, flow control, close).

mod client;
pub mod frame;
pub mod headers;
mod port_forward;
mod remote_command;
mod session;
mod shared;
mod stream;

pub use client::{dial, upgrade};
pub use headers::Headers;
pub use port_forward::accept_port_forward;
pub use remote_command::{accept_remote_command, expected_streams};
pub use session::Connection;
pub use shared::{MAX_DATA_CHUNK, Role, SESSION_WINDOW, STREAM_WINDOW};
pub use stream::{Stream, StreamReader, StreamWriter};

/// The header naming a stream's channel.
pub const STREAM_TYPE: &str = "streamtype";
/// Port-forward: the port in the pod this stream pair connects to.
pub const PORT: &str = "port";
/// Port-forward: pairs a connection's `error` and `data` streams.
pub const REQUEST_ID: &str = "requestid";
