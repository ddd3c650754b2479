//! SPDY/3.1 frames: the 8-byte frame header, the control frames Kubernetes clients use and DATA.
//!
//! Header blocks stay compressed here ([`Frame::SynStream`] carries the raw block): their zlib
//! context spans the connection, so [`super::headers`] inflates them in order. Keeping this layer
//! free of that state makes it deterministic, so encoding a decoded frame gives back its bytes.
//! Every length is checked before anything is allocated for it: a hostile peer gets an error,
//! never a panic or an outsized buffer.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;

/// Last frame the sender sends on a stream (control and DATA frames).
pub const FLAG_FIN: u8 = 0x01;
/// SYN_STREAM: the recipient may not send on this stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// Largest payload a frame header can describe (24-bit length).
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;
/// Largest control frame payload accepted. Control frames carry a compressed header block (which
/// may inflate to at most [`super::headers::MAX_HEADER_BLOCK`]) or a few fixed fields.
pub const MAX_CONTROL_PAYLOAD: usize = 512 * 1024;

/// Control frame types (SPDY/3.1 section 2.6; 5, NOOP, was dropped after SPDY/2).
pub const TYPE_SYN_STREAM: u16 = 1;
pub const TYPE_SYN_REPLY: u16 = 2;
pub const TYPE_RST_STREAM: u16 = 3;
pub const TYPE_SETTINGS: u16 = 4;
pub const TYPE_PING: u16 = 6;
pub const TYPE_GOAWAY: u16 = 7;
pub const TYPE_HEADERS: u16 = 8;
pub const TYPE_WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes.
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const UNSUPPORTED_VERSION: u32 = 4;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const FLOW_CONTROL_ERROR: u32 = 7;
    pub const STREAM_IN_USE: u32 = 8;
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
    pub const FRAME_TOO_LARGE: u32 = 11;
}

/// GOAWAY status codes.
pub mod goaway {
    pub const OK: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INTERNAL_ERROR: u32 = 2;
}

/// The SETTINGS id that sets the initial window of every stream.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

const STREAM_ID_MASK: u32 = 0x7fff_ffff;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        /// 0 (highest) to 7.
        priority: u8,
        slot: u8,
        flags: u8,
        /// The compressed name/value block.
        header_block: Bytes,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        header_block: Bytes,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        header_block: Bytes,
    },
    /// Stream 0 updates the session-level window.
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame type SPDY/3.1 does not define; receivers ignore it.
    Unknown {
        frame_type: u16,
        flags: u8,
        payload: Bytes,
    },
}

/// One SETTINGS entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

/// Why bytes are not a valid frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("unsupported SPDY version {0}")]
    UnsupportedVersion(u16),
    #[error("{kind} frame of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        kind: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("{kind} frame has an invalid length {len}")]
    InvalidLength { kind: &'static str, len: usize },
    #[error("{0} frame names stream 0")]
    ZeroStreamId(&'static str),
    #[error("connection ended in the middle of a frame")]
    Truncated,
    #[error("reading frame: {0}")]
    Io(#[from] std::io::Error),
}

/// The fixed 8-byte header of every frame.
#[derive(Debug, Clone, Copy)]
struct Head {
    control: bool,
    /// Version and type (control frames) or the stream id (DATA).
    word: u32,
    flags: u8,
    length: usize,
}

impl Head {
    fn parse(b: [u8; 8]) -> Head {
        let word = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        Head {
            control: word & 0x8000_0000 != 0,
            word: word & 0x7fff_ffff,
            flags: b[4],
            length: u32::from_be_bytes([0, b[5], b[6], b[7]]) as usize,
        }
    }

    /// Rejects frames whose announced size is over the limit, before reading the payload.
    fn check(&self) -> Result<(), FrameError> {
        if !self.control {
            return Ok(()); // The 24-bit length already caps DATA at MAX_PAYLOAD.
        }
        let version = (self.word >> 16) as u16;
        if version != VERSION {
            return Err(FrameError::UnsupportedVersion(version));
        }
        if self.length > MAX_CONTROL_PAYLOAD {
            return Err(FrameError::TooLarge {
                kind: "control",
                len: self.length,
                limit: MAX_CONTROL_PAYLOAD,
            });
        }
        Ok(())
    }

    fn frame(self, mut p: Bytes) -> Result<Frame, FrameError> {
        if !self.control {
            let stream_id = self.word & STREAM_ID_MASK;
            if stream_id == 0 {
                return Err(FrameError::ZeroStreamId("DATA"));
            }
            return Ok(Frame::Data {
                stream_id,
                flags: self.flags,
                data: p,
            });
        }
        let frame_type = (self.word & 0xffff) as u16;
        let flags = self.flags;
        let len = p.len();
        let frame = match frame_type {
            TYPE_SYN_STREAM => {
                at_least("SYN_STREAM", len, 10)?;
                let stream_id = nonzero("SYN_STREAM", p.get_u32() & STREAM_ID_MASK)?;
                let associated_to = p.get_u32() & STREAM_ID_MASK;
                let priority = p.get_u8() >> 5;
                let slot = p.get_u8();
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    slot,
                    flags,
                    header_block: p,
                }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                let kind = if frame_type == TYPE_SYN_REPLY {
                    "SYN_REPLY"
                } else {
                    "HEADERS"
                };
                at_least(kind, len, 4)?;
                let stream_id = nonzero(kind, p.get_u32() & STREAM_ID_MASK)?;
                if frame_type == TYPE_SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        header_block: p,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        header_block: p,
                    }
                }
            }
            TYPE_RST_STREAM => {
                exactly("RST_STREAM", len, 8)?;
                let stream_id = nonzero("RST_STREAM", p.get_u32() & STREAM_ID_MASK)?;
                Frame::RstStream {
                    stream_id,
                    status: p.get_u32(),
                }
            }
            TYPE_SETTINGS => {
                at_least("SETTINGS", len, 4)?;
                let count = p.get_u32() as usize;
                if count.checked_mul(8) != Some(p.len()) {
                    return Err(FrameError::InvalidLength {
                        kind: "SETTINGS",
                        len,
                    });
                }
                let entries = (0..count)
                    .map(|_| {
                        let word = p.get_u32();
                        Setting {
                            flags: (word >> 24) as u8,
                            id: word & 0x00ff_ffff,
                            value: p.get_u32(),
                        }
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            TYPE_PING => {
                exactly("PING", len, 4)?;
                Frame::Ping { id: p.get_u32() }
            }
            TYPE_GOAWAY => {
                exactly("GOAWAY", len, 8)?;
                Frame::GoAway {
                    last_good_stream_id: p.get_u32() & STREAM_ID_MASK,
                    status: p.get_u32(),
                }
            }
            TYPE_WINDOW_UPDATE => {
                exactly("WINDOW_UPDATE", len, 8)?;
                Frame::WindowUpdate {
                    stream_id: p.get_u32() & STREAM_ID_MASK,
                    delta: p.get_u32() & 0x7fff_ffff,
                }
            }
            frame_type => Frame::Unknown {
                frame_type,
                flags,
                payload: p,
            },
        };
        Ok(frame)
    }
}

fn at_least(kind: &'static str, len: usize, min: usize) -> Result<(), FrameError> {
    if len < min {
        return Err(FrameError::InvalidLength { kind, len });
    }
    Ok(())
}

fn exactly(kind: &'static str, len: usize, want: usize) -> Result<(), FrameError> {
    if len != want {
        return Err(FrameError::InvalidLength { kind, len });
    }
    Ok(())
}

fn nonzero(kind: &'static str, stream_id: u32) -> Result<u32, FrameError> {
    if stream_id == 0 {
        return Err(FrameError::ZeroStreamId(kind));
    }
    Ok(stream_id)
}

/// Decodes the first frame in `buf`: `Ok(None)` until `buf` holds all of it, else the frame and
/// the number of bytes it used.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some(head) = buf.first_chunk::<8>() else {
        return Ok(None);
    };
    let head = Head::parse(*head);
    head.check()?;
    let end = 8 + head.length;
    let Some(payload) = buf.get(8..end) else {
        return Ok(None);
    };
    Ok(Some((head.frame(Bytes::copy_from_slice(payload))?, end)))
}

/// Reads one frame: `Ok(None)` when the stream ends cleanly between frames. The payload buffer
/// grows as bytes arrive, so a header announcing a large frame costs nothing until it is sent.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>, FrameError> {
    let mut head = [0u8; 8];
    let mut filled = 0;
    while filled < head.len() {
        match r.read(&mut head[filled..]).await? {
            0 if filled == 0 => return Ok(None),
            0 => return Err(FrameError::Truncated),
            n => filled += n,
        }
    }
    let head = Head::parse(head);
    head.check()?;
    let mut payload = Vec::with_capacity(head.length.min(64 * 1024));
    let n = r.take(head.length as u64).read_to_end(&mut payload).await?;
    if n != head.length {
        return Err(FrameError::Truncated);
    }
    head.frame(Bytes::from(payload)).map(Some)
}

impl Frame {
    /// Appends the wire form of the frame. Lengths beyond the 24-bit field are the caller's bug:
    /// the session never builds such frames.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                slot,
                flags,
                header_block,
            } => {
                control_head(out, TYPE_SYN_STREAM, *flags, 10 + header_block.len());
                out.put_u32(stream_id & STREAM_ID_MASK);
                out.put_u32(associated_to & STREAM_ID_MASK);
                out.put_u8((priority & 0x7) << 5);
                out.put_u8(*slot);
                out.put_slice(header_block);
            }
            Frame::SynReply {
                stream_id,
                flags,
                header_block,
            } => {
                control_head(out, TYPE_SYN_REPLY, *flags, 4 + header_block.len());
                out.put_u32(stream_id & STREAM_ID_MASK);
                out.put_slice(header_block);
            }
            Frame::RstStream { stream_id, status } => {
                control_head(out, TYPE_RST_STREAM, 0, 8);
                out.put_u32(stream_id & STREAM_ID_MASK);
                out.put_u32(*status);
            }
            Frame::Settings { flags, entries } => {
                control_head(out, TYPE_SETTINGS, *flags, 4 + 8 * entries.len());
                out.put_u32(entries.len() as u32);
                for e in entries {
                    out.put_u32(((e.flags as u32) << 24) | (e.id & 0x00ff_ffff));
                    out.put_u32(e.value);
                }
            }
            Frame::Ping { id } => {
                control_head(out, TYPE_PING, 0, 4);
                out.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                control_head(out, TYPE_GOAWAY, 0, 8);
                out.put_u32(last_good_stream_id & STREAM_ID_MASK);
                out.put_u32(*status);
            }
            Frame::Headers {
                stream_id,
                flags,
                header_block,
            } => {
                control_head(out, TYPE_HEADERS, *flags, 4 + header_block.len());
                out.put_u32(stream_id & STREAM_ID_MASK);
                out.put_slice(header_block);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control_head(out, TYPE_WINDOW_UPDATE, 0, 8);
                out.put_u32(stream_id & STREAM_ID_MASK);
                out.put_u32(delta & 0x7fff_ffff);
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                out.put_u32(stream_id & STREAM_ID_MASK);
                put_flags_length(out, *flags, data.len());
                out.put_slice(data);
            }
            Frame::Unknown {
                frame_type,
                flags,
                payload,
            } => {
                control_head(out, *frame_type, *flags, payload.len());
                out.put_slice(payload);
            }
        }
    }

    /// The wire form as one buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }
}

fn control_head(out: &mut BytesMut, frame_type: u16, flags: u8, length: usize) {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(frame_type);
    put_flags_length(out, flags, length);
}

fn put_flags_length(out: &mut BytesMut, flags: u8, length: usize) {
    debug_assert!(length <= MAX_PAYLOAD);
    out.put_u32(((flags as u32) << 24) | (length as u32 & 0x00ff_ffff));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: Frame) {
        let bytes = frame.to_bytes();
        let (decoded, used) = decode(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(decoded, frame);
    }

    #[test]
    fn every_frame_type_round_trips() {
        round_trip(Frame::SynStream {
            stream_id: 5,
            associated_to: 0,
            priority: 3,
            slot: 0,
            flags: FLAG_FIN | FLAG_UNIDIRECTIONAL,
            header_block: Bytes::from_static(b"\x78\xf9"),
        });
        round_trip(Frame::SynReply {
            stream_id: 5,
            flags: 0,
            header_block: Bytes::from_static(b"abc"),
        });
        round_trip(Frame::RstStream {
            stream_id: 7,
            status: rst::CANCEL,
        });
        round_trip(Frame::Settings {
            flags: 0,
            entries: vec![Setting {
                flags: 0,
                id: SETTINGS_INITIAL_WINDOW_SIZE,
                value: 65536,
            }],
        });
        round_trip(Frame::Ping { id: 1 });
        round_trip(Frame::GoAway {
            last_good_stream_id: 7,
            status: goaway::OK,
        });
        round_trip(Frame::Headers {
            stream_id: 1,
            flags: FLAG_FIN,
            header_block: Bytes::new(),
        });
        round_trip(Frame::WindowUpdate {
            stream_id: 0,
            delta: 1 << 20,
        });
        round_trip(Frame::Data {
            stream_id: 3,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"hello\nworld\n"),
        });
        round_trip(Frame::Unknown {
            frame_type: 10,
            flags: 0,
            payload: Bytes::from_static(b"credential"),
        });
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let bytes = Frame::Ping { id: 9 }.to_bytes();
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).unwrap().is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn oversized_control_frames_are_rejected_from_the_header() {
        let mut head = BytesMut::new();
        control_head(&mut head, TYPE_SYN_STREAM, 0, MAX_CONTROL_PAYLOAD + 1);
        assert!(matches!(decode(&head), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn wrong_version_and_lengths_are_errors() {
        let mut b = BytesMut::from(&Frame::Ping { id: 1 }.to_bytes()[..]);
        b[1] = 2;
        assert!(matches!(decode(&b), Err(FrameError::UnsupportedVersion(2))));
        let mut short = BytesMut::new();
        control_head(&mut short, TYPE_RST_STREAM, 0, 4);
        short.put_u32(1);
        assert!(matches!(
            decode(&short),
            Err(FrameError::InvalidLength { .. })
        ));
        let mut settings = BytesMut::new();
        control_head(&mut settings, TYPE_SETTINGS, 0, 12);
        settings.put_u32(5);
        settings.put_u64(0);
        assert!(matches!(
            decode(&settings),
            Err(FrameError::InvalidLength { .. })
        ));
        let data = Frame::Data {
            stream_id: 1,
            flags: 0,
            data: Bytes::new(),
        }
        .to_bytes();
        let mut zero = BytesMut::from(&data[..]);
        zero[3] = 0;
        assert!(matches!(decode(&zero), Err(FrameError::ZeroStreamId(_))));
    }

    /// A tiny xorshift generator: deterministic "random" input without a dependency.
    fn noise(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn random_and_truncated_bytes_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let valid = [
            Frame::Settings {
                flags: 0,
                entries: vec![Setting {
                    flags: 1,
                    id: 7,
                    value: 9,
                }],
            }
            .to_bytes(),
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                slot: 0,
                flags: 0,
                header_block: Bytes::from_static(&[1, 2, 3]),
            }
            .to_bytes(),
        ];
        for round in 0..20_000 {
            let len = (noise(&mut seed) % 40) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| noise(&mut seed) as u8).collect();
            if round % 3 == 0 {
                // A plausible control header with a random type and length.
                buf.splice(0..0, [0x80, 0x03]);
            }
            if round % 5 == 0 {
                let v = &valid[round % valid.len()];
                let cut = (noise(&mut seed) as usize) % (v.len() + 1);
                buf = v[..cut].to_vec();
                if let Some(b) = buf.get_mut(cut / 2) {
                    *b ^= noise(&mut seed) as u8;
                }
            }
            let _ = decode(&buf);
        }
    }

    #[tokio::test]
    async fn read_frame_reports_truncation_and_clean_end() {
        let bytes = Frame::GoAway {
            last_good_stream_id: 1,
            status: 0,
        }
        .to_bytes();
        let mut whole: &[u8] = &bytes;
        assert!(read_frame(&mut whole).await.unwrap().is_some());
        assert!(read_frame(&mut whole).await.unwrap().is_none());
        let mut cut: &[u8] = &bytes[..10];
        assert!(matches!(
            read_frame(&mut cut).await,
            Err(FrameError::Truncated)
        ));
    }
}
