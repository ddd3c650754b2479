//! Port-forward over WebSocket: for the i-th requested port, channel 2i carries data both ways
//! and channel 2i+1 carries the server's error text. The server opens each channel with the
//! port as a little-endian `u16` (data channel first), as kubelet does.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::conn::{self, ChannelReader, ChannelWriter, Outbound};
use super::frame::{self, Codec};
use super::{Config, NO_SUBPROTOCOL};
use crate::protocol::WEBSOCKET_PORT_FORWARD;
use crate::{PortForwardStream, Session, StreamError};

/// The most ports one session can carry: two channels each, below the reserved channel 255.
const MAX_PORTS: usize = 127;

/// Serves a port-forward session for `ports` (from the CRI request or [`parse_ports`]) on an
/// upgraded connection whose 101 response named `protocol`, with [`Config::default`].
/// The receiver yields one stream per port, in order. Validate the ports before upgrading:
/// an empty or oversized list is refused here, after the 101.
pub async fn accept_port_forward<S>(
    io: S,
    protocol: &str,
    ports: Vec<u16>,
) -> Result<(mpsc::Receiver<PortForwardStream>, Session), StreamError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    accept_port_forward_with(io, protocol, ports, Config::default()).await
}

/// [`accept_port_forward`] with explicit limits. A stream's `data_in` reads EOF only when the
/// connection ends (these protocols have no per-channel close).
pub async fn accept_port_forward_with<S>(
    io: S,
    protocol: &str,
    ports: Vec<u16>,
    config: Config,
) -> Result<(mpsc::Receiver<PortForwardStream>, Session), StreamError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let protocol = served_protocol(protocol)?;
    check_ports(&ports)?;
    let codec = Codec::for_protocol(protocol);
    let mut inputs = Vec::with_capacity(ports.len() * 2);
    let mut readers = Vec::with_capacity(ports.len());
    for _ in &ports {
        let (tx, reader) = ChannelReader::pair();
        inputs.push(Some(tx));
        inputs.push(None);
        readers.push(reader);
    }
    let conn = conn::start(io, codec, false, inputs, config).await;

    let (streams_tx, streams) = mpsc::channel(ports.len());
    for ((index, port), data_in) in ports.iter().copied().enumerate().zip(readers) {
        let data = channel_number(index * 2);
        let error = channel_number(index * 2 + 1);
        for channel in [data, error] {
            let prefix = frame::encode(codec, channel, &frame::port_prefix(port));
            conn.outbound
                .send(Outbound::Message(prefix))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        }
        let stream = PortForwardStream {
            port,
            data_in: Box::new(data_in),
            data_out: Box::new(ChannelWriter::new(&conn.outbound, data, codec)),
            error: Box::new(ChannelWriter::new(&conn.outbound, error, codec)),
        };
        // Capacity is one per port, so this never waits.
        let _ = streams_tx.send(stream).await;
    }
    tracing::debug!(protocol, ?ports, "websocket port-forward session open");
    Ok((streams, Session::new(Box::new(conn.session))))
}

fn channel_number(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

fn check_ports(ports: &[u16]) -> Result<(), StreamError> {
    if ports.is_empty() {
        return Err(StreamError::Protocol(
            "port-forward needs at least one port".into(),
        ));
    }
    if ports.len() > MAX_PORTS {
        return Err(StreamError::Protocol(format!(
            "port-forward over websocket carries at most {MAX_PORTS} ports, got {}",
            ports.len()
        )));
    }
    if ports.contains(&0) {
        return Err(StreamError::Protocol("port 0 cannot be forwarded".into()));
    }
    Ok(())
}

fn served_protocol(protocol: &str) -> Result<&'static str, StreamError> {
    if protocol == NO_SUBPROTOCOL {
        return Ok(NO_SUBPROTOCOL);
    }
    WEBSOCKET_PORT_FORWARD
        .iter()
        .copied()
        .find(|p| *p == protocol)
        .ok_or_else(|| {
            StreamError::Protocol(format!(
                "websocket port-forward subprotocol {protocol:?} is not served"
            ))
        })
}

/// The ports of a port-forward URL query, kubelet's way: every `port` parameter (berth also
/// takes `ports`), each a comma-separated list of ports 1–65535, in order. The error names
/// the parameter and value, like kubelet's.
pub fn parse_ports(query: &str) -> Result<Vec<u16>, String> {
    let query = query.strip_prefix('?').unwrap_or(query);
    let mut ports = Vec::new();
    let mut seen = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "port" && key != "ports" {
            continue;
        }
        seen = true;
        let value = percent_decode(value)?;
        if value.is_empty() {
            return Err(format!("query parameter {key:?} cannot be empty"));
        }
        for part in value.split(',') {
            let port: u16 = part
                .trim()
                .parse()
                .map_err(|err| format!("unable to parse {value:?} as a port: {err}"))?;
            if port == 0 {
                return Err(format!("port {value:?} must be > 0"));
            }
            ports.push(port);
        }
    }
    if !seen {
        return Err("query parameter \"port\" is required".into());
    }
    Ok(ports)
}

/// Decodes `%XX` escapes (and `+` as space) of one query value.
fn percent_decode(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("invalid escape in query value {value:?}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("query value {value:?} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_from_comma_lists_and_repeated_parameters() {
        assert_eq!(parse_ports("port=80,8080"), Ok(vec![80, 8080]));
        assert_eq!(parse_ports("?port=80&port=443"), Ok(vec![80, 443]));
        assert_eq!(parse_ports("ports=80%2C8080&x=1"), Ok(vec![80, 8080]));
    }

    #[test]
    fn ports_errors_name_the_problem() {
        assert_eq!(
            parse_ports("x=1"),
            Err("query parameter \"port\" is required".to_string())
        );
        assert_eq!(
            parse_ports("port="),
            Err("query parameter \"port\" cannot be empty".to_string())
        );
        assert!(parse_ports("port=0").unwrap_err().contains("must be > 0"));
        assert!(parse_ports("port=70000").unwrap_err().contains("\"70000\""));
        assert!(
            parse_ports("port=80,x")
                .unwrap_err()
                .contains("unable to parse")
        );
    }

    #[test]
    fn port_lists_are_checked() {
        assert!(check_ports(&[]).is_err());
        assert!(check_ports(&[0]).is_err());
        assert!(check_ports(&vec![1; MAX_PORTS + 1]).is_err());
        assert!(check_ports(&[80, 8080]).is_ok());
    }
}
