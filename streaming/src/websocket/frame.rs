//! The channel framing of the `*.channel.k8s.io` WebSocket protocols, as bytes.
//!
//! Every data message starts with the channel it belongs to. Binary protocols send binary
//! messages `[channel, payload…]`; the `base64.` variants send text messages made of the
//! channel as an ASCII digit (`'0' + channel`) and the payload in standard, padded base64.
//! `v5.channel.k8s.io` adds one control message, `[255, channel]`: the sender will write no
//! more on that channel (client-go sends it when stdin ends).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use tokio_tungstenite::tungstenite::Message;

/// Channel numbers of exec and attach, by convention the POSIX file descriptors plus two.
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
/// Where the server writes the outcome (a `Status` on v4+, a bare message before).
pub const ERROR: u8 = 3;
/// Where the client writes terminal sizes as JSON `{"Width":…,"Height":…}`.
pub const RESIZE: u8 = 4;
/// The first byte of a v5 close signal, `[255, channel]`.
pub const CLOSE_SIGNAL: u8 = 255;

/// How payloads travel: raw in binary messages, or base64 in text messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Binary,
    Base64,
}

impl Codec {
    /// The codec a negotiated subprotocol uses (`""`, the no-subprotocol case, is binary).
    pub fn for_protocol(protocol: &str) -> Codec {
        if protocol.starts_with("base64.") || protocol.contains(".base64.") {
            Codec::Base64
        } else {
            Codec::Binary
        }
    }
}

/// The message carrying `data` on `channel`.
pub fn encode(codec: Codec, channel: u8, data: &[u8]) -> Message {
    match codec {
        Codec::Binary => {
            let mut frame = Vec::with_capacity(data.len() + 1);
            frame.push(channel);
            frame.extend_from_slice(data);
            Message::Binary(frame.into())
        }
        Codec::Base64 => {
            let mut text = String::with_capacity(1 + data.len().div_ceil(3) * 4);
            text.push(char::from(b'0'.wrapping_add(channel)));
            STANDARD.encode_string(data, &mut text);
            Message::Text(text.into())
        }
    }
}

/// The v5 message saying the sender closed `channel`.
pub fn close_signal(channel: u8) -> Message {
    Message::Binary(Bytes::copy_from_slice(&[CLOSE_SIGNAL, channel]))
}

/// The first message the server writes on each channel of a forwarded port: the port, as a
/// little-endian `u16`, so the client can tell which port the channel belongs to.
pub fn port_prefix(port: u16) -> [u8; 2] {
    port.to_le_bytes()
}

/// One received data message, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// Payload for `channel` (possibly empty).
    Data { channel: u8, payload: Bytes },
    /// A v5 close signal for `channel`.
    Close { channel: u8 },
    /// An empty message, which carries nothing.
    Empty,
    /// A payload that is not valid base64; wsstream drops such a message.
    BadPayload { channel: u8 },
    /// A close signal that is not exactly `[255, channel]`; wsstream ends the connection.
    BadCloseSignal { len: usize },
}

/// Decodes the bytes of a received text or binary message. `close_signal` says whether the
/// protocol has v5's close signal; without it, 255 is just a channel nobody reads.
pub fn decode(codec: Codec, close_signal: bool, data: &[u8]) -> Inbound {
    let Some((&first, payload)) = data.split_first() else {
        return Inbound::Empty;
    };
    if close_signal && first == CLOSE_SIGNAL {
        return match payload {
            [channel] => Inbound::Close { channel: *channel },
            _ => Inbound::BadCloseSignal { len: data.len() },
        };
    }
    match codec {
        Codec::Binary => Inbound::Data {
            channel: first,
            payload: Bytes::copy_from_slice(payload),
        },
        Codec::Base64 => {
            let channel = first.wrapping_sub(b'0');
            match STANDARD.decode(payload) {
                Ok(bytes) => Inbound::Data {
                    channel,
                    payload: bytes.into(),
                },
                Err(_) => Inbound::BadPayload { channel },
            }
        }
    }
}

/// The bytes of a received message, whichever kind it is; `None` for control messages.
/// wsstream reads text and binary messages alike: the codec, not the message kind, decides.
pub fn message_bytes(message: Message) -> Option<Bytes> {
    match message {
        Message::Binary(bytes) => Some(bytes),
        Message::Text(text) => Some(text.into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of(message: Message) -> Vec<u8> {
        message_bytes(message).expect("data message").to_vec()
    }

    #[test]
    fn binary_stdout_message_is_channel_byte_then_payload() {
        let message = encode(Codec::Binary, STDOUT, b"hi\n");
        assert!(message.is_binary());
        assert_eq!(bytes_of(message), [1, b'h', b'i', b'\n']);
    }

    #[test]
    fn empty_write_is_the_bare_channel_byte() {
        assert_eq!(bytes_of(encode(Codec::Binary, STDOUT, b"")), [1]);
        let text = encode(Codec::Base64, STDOUT, b"");
        assert!(text.is_text());
        assert_eq!(bytes_of(text), b"1");
    }

    #[test]
    fn base64_message_is_ascii_channel_digit_then_padded_base64() {
        // wsstream's documented example: "\n" on stdout reads as "1Cg==".
        let message = encode(Codec::Base64, STDOUT, b"\n");
        assert!(message.is_text());
        assert_eq!(bytes_of(message), b"1Cg==");
        assert_eq!(
            bytes_of(encode(Codec::Base64, ERROR, b"foo\n")),
            b"3Zm9vCg=="
        );
    }

    #[test]
    fn close_signal_is_255_then_channel() {
        assert_eq!(bytes_of(close_signal(STDIN)), [255, 0]);
        assert!(close_signal(STDIN).is_binary());
    }

    #[test]
    fn port_prefix_is_little_endian() {
        assert_eq!(port_prefix(8080), [0x90, 0x1f]);
        assert_eq!(port_prefix(80), [80, 0]);
    }

    #[test]
    fn decode_binary_data_and_v5_close_signal() {
        assert_eq!(
            decode(Codec::Binary, true, &[0, b'a']),
            Inbound::Data {
                channel: 0,
                payload: Bytes::from_static(b"a")
            }
        );
        assert_eq!(
            decode(Codec::Binary, true, &[255, 0]),
            Inbound::Close { channel: 0 }
        );
        assert_eq!(
            decode(Codec::Binary, true, &[255, 0, 1]),
            Inbound::BadCloseSignal { len: 3 }
        );
        assert_eq!(decode(Codec::Binary, true, &[]), Inbound::Empty);
    }

    #[test]
    fn before_v5_255_is_an_ordinary_channel() {
        assert_eq!(
            decode(Codec::Binary, false, &[255, 0]),
            Inbound::Data {
                channel: 255,
                payload: Bytes::from_static(&[0])
            }
        );
    }

    #[test]
    fn decode_base64_text() {
        // "foo\n" on stdin.
        assert_eq!(
            decode(Codec::Base64, false, b"0Zm9vCg=="),
            Inbound::Data {
                channel: 0,
                payload: Bytes::from_static(b"foo\n")
            }
        );
        assert_eq!(
            decode(Codec::Base64, false, b"0!!"),
            Inbound::BadPayload { channel: 0 }
        );
    }

    #[test]
    fn codec_follows_protocol_name() {
        assert_eq!(
            Codec::for_protocol("v4.base64.channel.k8s.io"),
            Codec::Base64
        );
        assert_eq!(Codec::for_protocol("base64.channel.k8s.io"), Codec::Base64);
        assert_eq!(Codec::for_protocol("v5.channel.k8s.io"), Codec::Binary);
        assert_eq!(Codec::for_protocol(""), Codec::Binary);
    }
}
