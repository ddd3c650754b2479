//! Attach sessions held by the shim: a berthd connection that receives a container's output
//! (as [`AttachFrame`]s, besides the log) and feeds its stdin and terminal size.
//!
//! Everything here is non-blocking: the shim's single loop must never wait on a slow
//! attacher. Output for an attacher is queued up to [`MAX_QUEUED`]; an attacher that falls
//! further behind is disconnected (the log still has everything).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;

use proto::shim::{
    ATTACH_RESIZE, ATTACH_STDERR, ATTACH_STDIN, ATTACH_STDIN_CLOSE, ATTACH_STDOUT, AttachContainer,
    AttachFrame,
};

use crate::logs::Stream;

/// Output bytes queued for one attacher before it counts as stuck and is dropped.
pub const MAX_QUEUED: usize = 4 << 20;
/// Largest frame an attacher may send (stdin chunks are far smaller).
const MAX_INPUT_FRAME: usize = 1 << 20;

/// What an attacher asked of the container.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    Stdin(Vec<u8>),
    Resize { width: u16, height: u16 },
    StdinClose,
}

/// One attach session.
pub struct Attacher {
    stream: UnixStream,
    pub stdin: bool,
    stdout: bool,
    stderr: bool,
    out: Vec<u8>,
    inbuf: Vec<u8>,
    /// Send what is queued, then hang up.
    pub closing: bool,
}

impl Attacher {
    /// Takes over an accepted connection whose Attach request was granted.
    pub fn new(stream: UnixStream, req: &AttachContainer, has_stdin: bool) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Attacher {
            stream,
            stdin: req.stdin && has_stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            out: Vec::new(),
            inbuf: Vec::new(),
            closing: false,
        })
    }

    /// Whether this attacher gets `stream`'s output.
    pub fn wants(&self, stream: Stream) -> bool {
        match stream {
            Stream::Stdout => self.stdout,
            Stream::Stderr => self.stderr,
        }
    }

    /// Queues a frame; false if the attacher is too far behind and must be dropped.
    pub fn queue(&mut self, kind: u32, data: &[u8]) -> bool {
        let frame = AttachFrame {
            kind,
            data: data.to_vec(),
            ..Default::default()
        };
        let body = prost::Message::encode_to_vec(&frame);
        self.out
            .extend_from_slice(&(body.len() as u32).to_be_bytes());
        self.out.extend_from_slice(&body);
        self.out.len() <= MAX_QUEUED
    }

    /// Queues container output for this attacher if it wants that stream.
    pub fn queue_output(&mut self, stream: Stream, data: &[u8]) -> bool {
        if !self.wants(stream) {
            return true;
        }
        let kind = match stream {
            Stream::Stdout => ATTACH_STDOUT,
            Stream::Stderr => ATTACH_STDERR,
        };
        self.queue(kind, data)
    }

    /// Writes what it can; true once everything queued is sent.
    pub fn flush(&mut self) -> io::Result<bool> {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Reads what the attacher sent; the flag is true once it hung up. Reads at most
    /// `budget` bytes so a fast sender cannot starve the loop or outrun the container.
    pub fn read_input(&mut self, budget: usize) -> io::Result<(Vec<Input>, bool)> {
        let mut eof = false;
        let mut buf = [0u8; 16 * 1024];
        let mut taken = 0;
        while taken < budget {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    taken += n;
                    self.inbuf.extend_from_slice(&buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let inputs = decode_inputs(&mut self.inbuf)?;
        Ok((inputs, eof))
    }

    /// Whether there is output waiting to be written.
    pub fn wants_write(&self) -> bool {
        !self.out.is_empty()
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

/// Takes every complete frame off the front of `buf`.
fn decode_inputs(buf: &mut Vec<u8>) -> io::Result<Vec<Input>> {
    let mut inputs = Vec::new();
    let mut used = 0;
    while buf.len() - used >= 4 {
        let mut len = [0u8; 4];
        len.copy_from_slice(&buf[used..used + 4]);
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_INPUT_FRAME {
            return Err(io::Error::other(format!("attach frame of {len} bytes")));
        }
        if buf.len() - used - 4 < len {
            break;
        }
        let body = &buf[used + 4..used + 4 + len];
        let frame: AttachFrame = prost::Message::decode(body).map_err(io::Error::other)?;
        used += 4 + len;
        match frame.kind {
            ATTACH_STDIN => inputs.push(Input::Stdin(frame.data)),
            ATTACH_RESIZE => inputs.push(Input::Resize {
                width: frame.width.min(u16::MAX as u32) as u16,
                height: frame.height.min(u16::MAX as u32) as u16,
            }),
            ATTACH_STDIN_CLOSE => inputs.push(Input::StdinClose),
            _ => {}
        }
    }
    buf.drain(..used);
    Ok(inputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u32, data: &[u8], w: u32, h: u32) -> Vec<u8> {
        let body = prost::Message::encode_to_vec(&AttachFrame {
            kind,
            data: data.to_vec(),
            width: w,
            height: h,
        });
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend(body);
        out
    }

    #[test]
    fn partial_frames_wait_for_the_rest() {
        let mut bytes = frame(ATTACH_STDIN, b"hello", 0, 0);
        bytes.extend(frame(ATTACH_RESIZE, b"", 100, 30));
        let split = bytes.len() - 3;
        let mut buf = bytes[..split].to_vec();
        assert_eq!(
            decode_inputs(&mut buf).expect("decode"),
            vec![Input::Stdin(b"hello".to_vec())]
        );
        buf.extend_from_slice(&bytes[split..]);
        assert_eq!(
            decode_inputs(&mut buf).expect("decode"),
            vec![Input::Resize {
                width: 100,
                height: 30
            }]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_frame_is_an_error() {
        let mut buf = ((MAX_INPUT_FRAME + 1) as u32).to_be_bytes().to_vec();
        assert!(decode_inputs(&mut buf).is_err());
    }
}
