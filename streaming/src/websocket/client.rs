//! A client of the channel protocols, for tests: connects with the `Sec-WebSocket-Protocol`
//! offer, sends on channels (and the v5 close signal), and reads `(channel, bytes)` messages
//! until the server closes the connection.

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::frame::{self, Codec, Inbound, RESIZE};
use crate::TermSize;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("websocket: {0}")]
    WebSocket(Box<tungstenite::Error>),
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl From<tungstenite::Error> for ClientError {
    fn from(err: tungstenite::Error) -> ClientError {
        ClientError::WebSocket(Box::new(err))
    }
}

/// Connects to `url` (`ws://host:port/exec/<token>`) offering `protocols` in order of
/// preference (none: no `Sec-WebSocket-Protocol` header). The session's
/// [`ClientSession::protocol`] is what the server chose.
pub async fn connect(url: &str, protocols: &[&str]) -> Result<ClientSession, ClientError> {
    let mut request = url.into_client_request()?;
    if !protocols.is_empty() {
        let offer = HeaderValue::from_str(&protocols.join(", "))
            .map_err(|err| ClientError::Protocol(format!("subprotocol offer: {err}")))?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", offer);
    }
    let (socket, response) =
        tokio_tungstenite::connect_async_with_config(request, None, true).await?;
    let protocol = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let codec = Codec::for_protocol(&protocol);
    let (sink, stream) = socket.split();
    Ok(ClientSession {
        sender: ClientSender { sink, codec },
        receiver: ClientReceiver {
            stream,
            codec,
            close_code: None,
        },
        protocol,
    })
}

/// A connected client: both halves, usable from one task; [`ClientSession::into_split`] to
/// send and receive from different tasks.
pub struct ClientSession {
    sender: ClientSender,
    receiver: ClientReceiver,
    protocol: String,
}

impl ClientSession {
    /// The subprotocol the server chose (`""` when it named none).
    pub fn protocol(&self) -> &str {
        &self.protocol
    }

    pub async fn send(&mut self, channel: u8, data: &[u8]) -> Result<(), ClientError> {
        self.sender.send(channel, data).await
    }

    pub async fn send_close_signal(&mut self, channel: u8) -> Result<(), ClientError> {
        self.sender.send_close_signal(channel).await
    }

    pub async fn send_resize(&mut self, size: TermSize) -> Result<(), ClientError> {
        self.sender.send_resize(size).await
    }

    pub async fn recv(&mut self) -> Result<Option<(u8, Bytes)>, ClientError> {
        self.receiver.recv().await
    }

    pub async fn read_to_close(&mut self) -> Result<ChannelOutput, ClientError> {
        self.receiver.read_to_close().await
    }

    /// Sends a normal close frame and reads until the server completes the handshake.
    pub async fn close(mut self) -> Result<ChannelOutput, ClientError> {
        self.sender.close().await?;
        self.receiver.read_to_close().await
    }

    pub fn into_split(self) -> (ClientSender, ClientReceiver) {
        (self.sender, self.receiver)
    }
}

/// The sending half of a client.
pub struct ClientSender {
    sink: SplitSink<Socket, Message>,
    codec: Codec,
}

impl ClientSender {
    /// Sends `data` on `channel` in the session's framing.
    pub async fn send(&mut self, channel: u8, data: &[u8]) -> Result<(), ClientError> {
        Ok(self
            .sink
            .send(frame::encode(self.codec, channel, data))
            .await?)
    }

    /// Sends v5's `[255, channel]`: this side writes no more on `channel`.
    pub async fn send_close_signal(&mut self, channel: u8) -> Result<(), ClientError> {
        Ok(self.sink.send(frame::close_signal(channel)).await?)
    }

    /// Sends a terminal size on the resize channel, as client-go's JSON encoder writes it.
    pub async fn send_resize(&mut self, size: TermSize) -> Result<(), ClientError> {
        let json = format!("{{\"Width\":{},\"Height\":{}}}\n", size.width, size.height);
        self.send(RESIZE, json.as_bytes()).await
    }

    /// Sends any message as is (raw frames for protocol tests).
    pub async fn send_raw(&mut self, message: Message) -> Result<(), ClientError> {
        Ok(self.sink.send(message).await?)
    }

    /// Sends a normal (1000) close frame.
    pub async fn close(&mut self) -> Result<(), ClientError> {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        Ok(self.sink.send(Message::Close(Some(frame))).await?)
    }
}

/// The receiving half of a client.
pub struct ClientReceiver {
    stream: SplitStream<Socket>,
    codec: Codec,
    close_code: Option<u16>,
}

impl ClientReceiver {
    /// The next message as `(channel, payload)`; `None` once the connection is closed.
    /// An empty payload is a real message (the server's "channel open" notice).
    pub async fn recv(&mut self) -> Result<Option<(u8, Bytes)>, ClientError> {
        while let Some(message) = self.recv_raw().await? {
            let Some(data) = frame::message_bytes(message) else {
                continue;
            };
            match frame::decode(self.codec, false, &data) {
                Inbound::Data { channel, payload } => return Ok(Some((channel, payload))),
                Inbound::Empty => continue,
                other => return Err(ClientError::Protocol(format!("bad message: {other:?}"))),
            }
        }
        Ok(None)
    }

    /// The next data or close message as received (control frames are skipped); `None` once
    /// the connection is closed. Records the close frame's code.
    pub async fn recv_raw(&mut self) -> Result<Option<Message>, ClientError> {
        loop {
            match self.stream.next().await {
                None
                | Some(Err(tungstenite::Error::ConnectionClosed))
                | Some(Err(tungstenite::Error::AlreadyClosed)) => return Ok(None),
                Some(Err(err)) => return Err(err.into()),
                Some(Ok(Message::Close(frame))) => {
                    self.close_code = Some(frame.map_or(1005, |f| u16::from(f.code)));
                }
                Some(Ok(Message::Binary(b))) => return Ok(Some(Message::Binary(b))),
                Some(Ok(Message::Text(t))) => return Ok(Some(Message::Text(t))),
                Some(Ok(_)) => {}
            }
        }
    }

    /// Every message until the server closes the connection (after the error channel's
    /// status, for exec), with the close code.
    pub async fn read_to_close(&mut self) -> Result<ChannelOutput, ClientError> {
        let mut messages = Vec::new();
        while let Some(message) = self.recv().await? {
            messages.push(message);
        }
        Ok(ChannelOutput {
            messages,
            close_code: self.close_code,
        })
    }

    /// The status code of the server's close frame, once received (1005: none given).
    pub fn close_code(&self) -> Option<u16> {
        self.close_code
    }
}

/// What a client read from a whole session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelOutput {
    /// Every message, in order, as `(channel, payload)`.
    pub messages: Vec<(u8, Bytes)>,
    /// The server's close code (1000 for a normal end), if it sent a close frame.
    pub close_code: Option<u16>,
}

impl ChannelOutput {
    /// Everything received on `channel`, concatenated.
    pub fn channel(&self, channel: u8) -> Vec<u8> {
        self.messages
            .iter()
            .filter(|(c, _)| *c == channel)
            .flat_map(|(_, data)| data.iter().copied())
            .collect()
    }
}
