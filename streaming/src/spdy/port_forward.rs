//! Server side of port-forward over SPDY: pair each forwarded connection's `error` and `data`
//! streams by `requestid`, as kubelet does.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::session::Connection;
use super::shared::Role;
use super::stream::Stream;
use super::{PORT, REQUEST_ID, STREAM_TYPE};
use crate::{PortForwardStream, Session, StreamError};

/// Serves a port-forward session on an upgraded connection. Each complete stream pair comes
/// out of the receiver as one [`PortForwardStream`]; the receiver ends when no more can come
/// (the connection ended or the client sent GOAWAY), after which the caller lets its
/// forwarders finish and closes the [`Session`].
///
/// A pair whose other half does not arrive within `stream_creation_timeout`, or whose `port`
/// header is missing or invalid, gets the reason written on its error stream (which the client
/// prints) and is closed; streams of another type are reset.
pub async fn accept_port_forward<IO>(
    io: IO,
    stream_creation_timeout: Duration,
) -> Result<(mpsc::Receiver<PortForwardStream>, Session), StreamError>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (incoming, session) = Connection::new(io, Role::Server).into_parts();
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(pair_streams(incoming, tx, stream_creation_timeout));
    Ok((rx, session))
}

/// Half of a pair waiting for the other.
struct Pending {
    error: Option<Stream>,
    data: Option<Stream>,
    deadline: Instant,
}

async fn pair_streams(
    mut incoming: mpsc::Receiver<Stream>,
    tx: mpsc::Sender<PortForwardStream>,
    timeout: Duration,
) {
    let mut pairs: HashMap<String, Pending> = HashMap::new();
    loop {
        let next_deadline = pairs.values().map(|p| p.deadline).min();
        tokio::select! {
            stream = incoming.recv() => {
                let Some(stream) = stream else { break };
                if let Some(forward) = add(&mut pairs, stream, timeout)
                    && tx.send(forward).await.is_err()
                {
                    break;
                }
            }
            _ = sleep_until(next_deadline), if next_deadline.is_some() => expire(&mut pairs),
            _ = tx.closed() => break,
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline).await;
    }
}

/// Files a stream under its request; returns the pair once both halves are there and valid.
fn add(
    pairs: &mut HashMap<String, Pending>,
    stream: Stream,
    timeout: Duration,
) -> Option<PortForwardStream> {
    let kind = stream.headers().get(STREAM_TYPE).unwrap_or_default();
    let is_error = match kind {
        "error" => true,
        "data" => false,
        other => {
            tracing::warn!(
                stream_type = other,
                "port-forward: resetting stream of unknown type"
            );
            stream.cancel();
            return None;
        }
    };
    let request_id = request_id(&stream, is_error);
    let pending = pairs.entry(request_id.clone()).or_insert_with(|| Pending {
        error: None,
        data: None,
        deadline: Instant::now() + timeout,
    });
    let slot = if is_error {
        &mut pending.error
    } else {
        &mut pending.data
    };
    if slot.is_some() {
        tracing::warn!(
            request_id,
            stream_type = kind,
            "port-forward: stream already assigned"
        );
        stream.cancel();
        return None;
    }
    *slot = Some(stream);
    if pending.error.is_none() || pending.data.is_none() {
        return None;
    }
    let pending = pairs.remove(&request_id)?;
    let (error, data) = (pending.error?, pending.data?);
    let port = parse_port(&error).and_then(|_| parse_port(&data));
    match port {
        Ok(port) => Some(forward(port, error, data)),
        Err(message) => {
            tracing::warn!(request_id, message, "port-forward: bad port header");
            data.cancel();
            tokio::spawn(report(error, message));
            None
        }
    }
}

/// The request a stream belongs to: its `requestid` header, or for clients too old to send
/// one, kubelet's guess from consecutive stream ids (error = id, data = id - 2).
fn request_id(stream: &Stream, is_error: bool) -> String {
    match stream.headers().get(REQUEST_ID) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ if is_error => stream.id().to_string(),
        _ => stream.id().saturating_sub(2).to_string(),
    }
}

/// The `port` header as kubelet validates it, or the message for the client.
fn parse_port(stream: &Stream) -> Result<u16, String> {
    let value = stream.headers().get(PORT).unwrap_or_default();
    if value.is_empty() {
        return Err(format!("{PORT:?} header is required"));
    }
    match value.parse::<u16>() {
        Ok(0) => Err(format!("port {value:?} must be > 0")),
        Ok(port) => Ok(port),
        Err(e) => Err(format!("unable to parse {value:?} as a port: {e}")),
    }
}

fn forward(port: u16, error: Stream, data: Stream) -> PortForwardStream {
    let (_, error) = error.into_split();
    let (data_in, data_out) = data.into_split();
    PortForwardStream {
        port,
        data_in: Box::new(data_in),
        data_out: Box::new(data_out),
        error: Box::new(error),
    }
}

/// Fails every pair past its deadline.
fn expire(pairs: &mut HashMap<String, Pending>) {
    let now = Instant::now();
    let expired: Vec<String> = pairs
        .iter()
        .filter(|(_, p)| p.deadline <= now)
        .map(|(id, _)| id.clone())
        .collect();
    for request_id in expired {
        let Some(pending) = pairs.remove(&request_id) else {
            continue;
        };
        tracing::warn!(
            request_id,
            "port-forward: timed out waiting for the stream pair"
        );
        if let Some(data) = pending.data {
            data.cancel();
        }
        if let Some(error) = pending.error {
            let message = format!("request {request_id}: timed out waiting for streams");
            tokio::spawn(report(error, message));
        }
    }
}

/// Writes `message` on an error stream and closes it: the client prints it.
async fn report(error: Stream, message: String) {
    let (_, mut writer) = error.into_split();
    if writer.write_all(message.as_bytes()).await.is_ok() {
        let _ = writer.shutdown().await;
    }
}
