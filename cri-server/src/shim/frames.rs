//! The shim protocol's framing (a big-endian `u32` length, then a prost message) over async
//! streams, for berthd's long-lived shim connections (attach, exec control).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Reads one message of at most `max` bytes.
pub async fn read_message<M: prost::Message + Default, R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> std::io::Result<M> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(std::io::Error::other(format!(
            "shim message of {len} bytes (limit {max})"
        )));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    M::decode(body.as_slice()).map_err(std::io::Error::other)
}

/// Writes one message.
pub async fn write_message<M: prost::Message, W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &M,
) -> std::io::Result<()> {
    let body = msg.encode_to_vec();
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend(body);
    w.write_all(&frame).await
}
