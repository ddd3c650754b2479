//! What the SPDY and WebSocket transports share: subprotocol names and negotiation, the exit
//! `Status` object written on the error stream, and resize events.

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::TermSize;

/// `X-Stream-Protocol-Version` / WebSocket subprotocol names of the remotecommand protocol.
pub const V1: &str = "channel.k8s.io";
pub const V2: &str = "v2.channel.k8s.io";
pub const V3: &str = "v3.channel.k8s.io";
pub const V4: &str = "v4.channel.k8s.io";
pub const V5: &str = "v5.channel.k8s.io";
/// The port-forward protocol over SPDY and WebSocket.
pub const PORT_FORWARD: &str = "portforward.k8s.io";

/// Remotecommand versions served over SPDY, as kubelet's own server does (v5's close signal is
/// a WebSocket matter: SPDY closes stdin with a FIN).
pub const SPDY_REMOTE_COMMAND: &[&str] = &[V4, V3, V2, V1];

/// The `base64.` variants of the channel protocol: text messages, an ASCII channel digit and a
/// base64 payload (for clients that cannot send binary WebSocket messages).
pub const BASE64_V1: &str = "base64.channel.k8s.io";
pub const BASE64_V4: &str = "v4.base64.channel.k8s.io";

/// Remotecommand versions served over WebSocket, most capable first: kubelet's own set
/// (`v4`, `channel.k8s.io` and their `base64.` variants), the apiserver's `v5` (stdin close
/// signal) and `v3`/`v2`, which client-go's WebSocket executor also understands.
pub const WEBSOCKET_REMOTE_COMMAND: &[&str] = &[V5, V4, BASE64_V4, V3, V2, V1, BASE64_V1];

/// Port-forward protocols served over WebSocket: kubelet's `v4.channel.k8s.io` and its base64
/// variant, plus `portforward.k8s.io` (binary channels) named in berth's design.
pub const WEBSOCKET_PORT_FORWARD: &[&str] = &[V4, BASE64_V4, PORT_FORWARD];

/// The first of the client's offered protocols that the server supports, kubelet's rule
/// (the client lists in order of preference). `None` when there is no overlap.
pub fn negotiate<'a>(offered: &[&str], supported: &[&'a str]) -> Option<&'a str> {
    offered
        .iter()
        .flat_map(|o| o.split(','))
        .map(str::trim)
        .find_map(|o| supported.iter().copied().find(|s| *s == o))
}

/// Whether `protocol` carries the exit status as a JSON `Status` (v4 and later, including
/// WebSocket's `v4.base64.channel.k8s.io`) rather than a bare error message (v1–v3).
pub fn has_json_status(protocol: &str) -> bool {
    matches!(protocol, V4 | V5 | BASE64_V4)
}

/// Whether `protocol` has a resize stream (v3 and later).
pub fn has_resize(protocol: &str) -> bool {
    matches!(protocol, V3 | V4 | V5)
}

/// How a remote command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exited with status 0.
    Success,
    /// Exited non-zero (or by a signal, reported as 128 + signal number).
    ExitCode { code: i32, command: Vec<String> },
    /// Could not run, or the runtime failed: the message the client prints.
    Error(String),
}

/// The bytes written on the error stream for `outcome` under `protocol`: a Kubernetes
/// `metav1.Status` as kubelet encodes it (field order and Go's HTML-safe escaping included)
/// for v4+, the bare message for older protocols, nothing for success on older protocols.
pub fn status_bytes(protocol: &str, outcome: &Outcome) -> Vec<u8> {
    let json = has_json_status(protocol);
    match outcome {
        Outcome::Success if json => br#"{"metadata":{},"status":"Success"}"#.to_vec(),
        Outcome::Success => Vec::new(),
        Outcome::ExitCode { code, command } => {
            let message = format!(
                "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                command.join(" ")
            );
            if !json {
                return message.into_bytes();
            }
            format!(
                r#"{{"metadata":{{}},"status":"Failure","message":{},"reason":"NonZeroExitCode","details":{{"causes":[{{"reason":"ExitCode","message":"{code}"}}]}}}}"#,
                go_json_string(&message)
            )
            .into_bytes()
        }
        Outcome::Error(message) if json => format!(
            r#"{{"metadata":{{}},"status":"Failure","message":{},"reason":"InternalError","code":500}}"#,
            go_json_string(message)
        )
        .into_bytes(),
        Outcome::Error(message) => message.clone().into_bytes(),
    }
}

/// Writes the outcome on the error stream and ends it.
pub async fn write_status<W: AsyncWrite + Unpin + ?Sized>(
    error: &mut W,
    protocol: &str,
    outcome: &Outcome,
) -> std::io::Result<()> {
    let bytes = status_bytes(protocol, outcome);
    if !bytes.is_empty() {
        error.write_all(&bytes).await?;
    }
    error.shutdown().await
}

/// A JSON string literal as Go's `encoding/json` writes it: `<`, `>` and `&` escaped as
/// `\u003c`, `\u003e`, `\u0026` (plus U+2028/U+2029), so clients comparing bytes see the same.
pub fn go_json_string(s: &str) -> String {
    let plain = serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string());
    let mut out = String::with_capacity(plain.len());
    for c in plain.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireSize {
    width: u16,
    height: u16,
}

/// Parses one resize message, `{"Width":100,"Height":30}`.
pub fn parse_resize(bytes: &[u8]) -> Option<TermSize> {
    let s: WireSize = serde_json::from_slice(bytes).ok()?;
    Some(TermSize {
        width: s.width,
        height: s.height,
    })
}

/// Decodes a resize stream (concatenated JSON objects, as client-go's encoder writes them)
/// into terminal sizes until it ends or carries garbage. Each object is at most 4 KiB.
pub fn resize_events<R: AsyncRead + Send + Unpin + 'static>(
    mut reader: R,
) -> mpsc::Receiver<TermSize> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        loop {
            while let Some((size, used)) = next_object(&buf) {
                buf.drain(..used);
                if let Some(size) = size
                    && tx.send(size).await.is_err()
                {
                    return;
                }
            }
            if buf.len() > 4096 {
                return;
            }
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
    rx
}

/// The first complete JSON value in `buf` and the bytes it used (leading whitespace
/// included); the size is `None` for a complete value that is not a resize object.
fn next_object(buf: &[u8]) -> Option<(Option<TermSize>, usize)> {
    let mut stream = serde_json::Deserializer::from_slice(buf).into_iter::<serde_json::Value>();
    match stream.next() {
        Some(Ok(value)) => {
            let used = stream.byte_offset();
            let size = serde_json::from_value::<WireSize>(value)
                .ok()
                .map(|s| TermSize {
                    width: s.width,
                    height: s.height,
                });
            Some((size, used))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_client_preference() {
        let offered = [V5, V4, V3, V2, V1];
        assert_eq!(negotiate(&offered, SPDY_REMOTE_COMMAND), Some(V4));
        assert_eq!(negotiate(&[V2, V4], SPDY_REMOTE_COMMAND), Some(V2));
        assert_eq!(
            negotiate(
                &["v4.channel.k8s.io, v3.channel.k8s.io"],
                SPDY_REMOTE_COMMAND
            ),
            Some(V4)
        );
        assert_eq!(negotiate(&["bogus"], SPDY_REMOTE_COMMAND), None);
    }

    #[test]
    fn non_zero_exit_status_matches_kubelet_bytes() {
        let outcome = Outcome::ExitCode {
            code: 7,
            command: vec![
                "sh".into(),
                "-c".into(),
                "echo out; echo err >&2; exit 7".into(),
            ],
        };
        // The error-stream payload of the recorded exec-spdy-exitcode session.
        let want = r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c echo out; echo err \u003e\u00262; exit 7], exit code 7","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"7"}]}}"#;
        assert_eq!(String::from_utf8(status_bytes(V4, &outcome)).unwrap(), want);
    }

    #[test]
    fn success_is_a_status_on_v4_and_nothing_before() {
        assert_eq!(
            status_bytes(V4, &Outcome::Success),
            br#"{"metadata":{},"status":"Success"}"#
        );
        assert!(status_bytes(V3, &Outcome::Success).is_empty());
        assert_eq!(status_bytes(V1, &Outcome::Error("boom".into())), b"boom");
    }

    #[test]
    fn resize_messages_parse() {
        assert_eq!(
            parse_resize(br#"{"Width":100,"Height":30}"#),
            Some(TermSize {
                width: 100,
                height: 30
            })
        );
        assert_eq!(parse_resize(b"nope"), None);
    }

    #[tokio::test]
    async fn resize_stream_yields_concatenated_objects() {
        let data: &[u8] = b"{\"Width\":100,\"Height\":30}\n{\"Width\":80,\"Height\":24}\n";
        let mut rx = resize_events(data);
        assert_eq!(
            rx.recv().await,
            Some(TermSize {
                width: 100,
                height: 30
            })
        );
        assert_eq!(
            rx.recv().await,
            Some(TermSize {
                width: 80,
                height: 24
            })
        );
        assert_eq!(rx.recv().await, None);
    }
}
