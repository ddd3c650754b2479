//! Client side of the SPDY upgrade, as client-go does it: what berth's tests use to reach
//! berthd's streaming server like kubectl or crictl.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::session::Connection;
use super::shared::Role;
use crate::StreamError;

/// Largest HTTP response head accepted before the upgrade.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Connects to a streaming URL (`http://host:port/exec/<token>`, as the CRI `Exec`, `Attach`
/// and `PortForward` calls return) and upgrades it, offering `protocols` in order of
/// preference. Returns the protocol the server chose and the connection.
pub async fn dial(url: &str, protocols: &[&str]) -> Result<(String, Connection), StreamError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| StreamError::Protocol(format!("not an http:// URL: {url}")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let tcp = TcpStream::connect(authority).await?;
    upgrade(tcp, authority, path, protocols).await
}

/// Upgrades an HTTP/1.1 connection to SPDY/3.1 with client-go's request (`POST`, `Connection:
/// Upgrade`, `Upgrade: SPDY/3.1`, one `X-Stream-Protocol-Version` per offered protocol) and
/// starts a client [`Connection`] on it. The protocol is empty if the server named none.
pub async fn upgrade<IO>(
    mut io: IO,
    host: &str,
    path: &str,
    protocols: &[&str],
) -> Result<(String, Connection), StreamError>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: berth-spdy-client\r\n\
         Content-Length: 0\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    );
    for p in protocols {
        request.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    request.push_str("\r\n");
    io.write_all(request.as_bytes()).await?;
    io.flush().await?;
    let head = read_head(&mut io).await?;
    let protocol = check_response(&head)?;
    Ok((protocol, Connection::new(io, Role::Client)))
}

/// Reads the response head byte by byte: the server may send SPDY frames right behind it, and
/// they belong to the connection.
async fn read_head<IO: AsyncRead + Unpin>(io: &mut IO) -> Result<String, StreamError> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_RESPONSE_HEAD {
            return Err(StreamError::Protocol("HTTP response head too large".into()));
        }
        let byte = io.read_u8().await?;
        head.push(byte);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// The negotiated protocol from a `101 Switching Protocols` head, or why the upgrade failed.
fn check_response(head: &str) -> Result<String, StreamError> {
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("101") {
        return Err(StreamError::Protocol(format!(
            "server refused the SPDY upgrade: {status}"
        )));
    }
    let protocol = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| {
            name.trim()
                .eq_ignore_ascii_case("X-Stream-Protocol-Version")
        })
        .map(|(_, value)| value.trim().to_string())
        .unwrap_or_default();
    Ok(protocol)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switching_protocols_yields_the_chosen_protocol() {
        let head = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
                    X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n";
        assert_eq!(check_response(head).unwrap(), "v4.channel.k8s.io");
    }

    #[test]
    fn other_statuses_are_errors() {
        let err = check_response("HTTP/1.1 403 Forbidden\r\n\r\n").unwrap_err();
        assert!(err.to_string().contains("403 Forbidden"), "{err}");
    }
}
