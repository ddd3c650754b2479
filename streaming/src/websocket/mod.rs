//! WebSocket channel protocols: `v1`–`v5.channel.k8s.io` (and `base64.` variants) for exec and
//! attach, `v4.channel.k8s.io` / `portforward.k8s.io` for port-forward.
//!
//! berthd's HTTP layer reads the upgrade request, picks the subprotocol with
//! [`negotiate_remote_command`] or [`negotiate_port_forward`] (answering 403 when there is none,
//! as kubelet does), answers `101 Switching Protocols` with [`accept_key`] and the protocol,
//! and hands the upgraded connection to [`accept_remote_command`] or [`accept_port_forward`].
//! The wire format mirrors kubelet's server (apimachinery's `wsstream`): see [`frame`].
//! [`client`] is a client for tests.

pub mod client;
mod conn;
pub mod frame;
mod port_forward;
mod remote_command;

use std::time::Duration;

pub use port_forward::{accept_port_forward, accept_port_forward_with, parse_ports};
pub use remote_command::{accept_remote_command, accept_remote_command_with};

use crate::protocol::{self, WEBSOCKET_PORT_FORWARD, WEBSOCKET_REMOTE_COMMAND};

/// The subprotocol of a client that offered none: kubelet serves it as binary
/// `channel.k8s.io` (v1) framing, and the 101 response then names no protocol.
pub const NO_SUBPROTOCOL: &str = "";

/// Limits of one WebSocket session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// The session ends when no data message went either way for this long, or when one
    /// write cannot complete within it (a client that stopped reading). kubelet's and
    /// containerd's default stream idle timeout: 4 hours.
    pub idle_timeout: Duration,
    /// How long [`crate::Session::close`] may take to send what is queued, the close frame,
    /// and wait for the client's close reply before it drops the connection.
    pub close_timeout: Duration,
    /// The largest message accepted from the client (Go's `x/net/websocket` default).
    pub max_message_size: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            idle_timeout: Duration::from_secs(4 * 60 * 60),
            close_timeout: Duration::from_secs(60),
            max_message_size: 32 << 20,
        }
    }
}

/// The `Sec-WebSocket-Accept` value answering the client's `Sec-WebSocket-Key` (RFC 6455).
pub fn accept_key(client_key: &str) -> String {
    tokio_tungstenite::tungstenite::handshake::derive_accept_key(client_key.trim().as_bytes())
}

/// The remotecommand subprotocols served over WebSocket (exec and attach).
pub fn remote_command_protocols() -> &'static [&'static str] {
    WEBSOCKET_REMOTE_COMMAND
}

/// The port-forward subprotocols served over WebSocket.
pub fn port_forward_protocols() -> &'static [&'static str] {
    WEBSOCKET_PORT_FORWARD
}

/// Picks the exec/attach subprotocol from the `Sec-WebSocket-Protocol` values the client sent
/// (each may be a comma-separated list), in the client's order of preference.
/// [`NO_SUBPROTOCOL`] when the client offered none; `None` when nothing offered is served.
pub fn negotiate_remote_command(offered: &[&str]) -> Option<&'static str> {
    negotiate(offered, WEBSOCKET_REMOTE_COMMAND)
}

/// Picks the port-forward subprotocol, with the same rules as [`negotiate_remote_command`].
pub fn negotiate_port_forward(offered: &[&str]) -> Option<&'static str> {
    negotiate(offered, WEBSOCKET_PORT_FORWARD)
}

fn negotiate(offered: &[&str], supported: &[&'static str]) -> Option<&'static str> {
    let offered_any = offered
        .iter()
        .flat_map(|o| o.split(','))
        .any(|o| !o.trim().is_empty());
    if !offered_any {
        return Some(NO_SUBPROTOCOL);
    }
    protocol::negotiate(offered, supported)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{BASE64_V4, PORT_FORWARD, V1, V4, V5};

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn remote_command_negotiation_follows_client_order() {
        assert_eq!(negotiate_remote_command(&[V5, V4]), Some(V5));
        assert_eq!(
            negotiate_remote_command(&["v4.channel.k8s.io, v5.channel.k8s.io"]),
            Some(V4)
        );
        assert_eq!(negotiate_remote_command(&["bogus", V1]), Some(V1));
        assert_eq!(negotiate_remote_command(&[BASE64_V4]), Some(BASE64_V4));
        assert_eq!(negotiate_remote_command(&["bogus"]), None);
    }

    #[test]
    fn no_offered_protocol_is_served_as_v1_binary() {
        assert_eq!(negotiate_remote_command(&[]), Some(NO_SUBPROTOCOL));
        assert_eq!(negotiate_remote_command(&[" "]), Some(NO_SUBPROTOCOL));
        assert_eq!(negotiate_port_forward(&[]), Some(NO_SUBPROTOCOL));
    }

    #[test]
    fn port_forward_negotiation() {
        assert_eq!(negotiate_port_forward(&[V4]), Some(V4));
        assert_eq!(negotiate_port_forward(&[PORT_FORWARD]), Some(PORT_FORWARD));
        assert_eq!(negotiate_port_forward(&[V5]), None);
    }
}
