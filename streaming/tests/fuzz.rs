//! Randomized tests of the parsers that read bytes from untrusted streaming clients: SPDY
//! frames, SPDY header blocks (zlib-compressed name/value lists), whole SPDY sessions,
//! WebSocket channel frames, resize messages and port lists. Each runs a bounded number of
//! cases from a fixed seed (`BERTH_FUZZ_SEED` and `BERTH_FUZZ_CASES` change them), on the
//! stable toolchain under `cargo nextest`; the property is that bad input gives an error,
//! never a panic, a hang or an unbounded allocation.

use std::time::Duration;

use bytes::BytesMut;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use streaming::protocol::parse_resize;
use streaming::spdy::frame::{self, Frame, Setting};
use streaming::spdy::headers::{HeaderDecoder, HeaderEncoder, Headers};
use streaming::spdy::{Connection, Role};
use streaming::websocket::frame::{Codec, Inbound, decode as ws_decode, encode as ws_encode};
use streaming::websocket::parse_ports;
use tokio::io::AsyncWriteExt;

fn rng(test: &str) -> StdRng {
    let seed = std::env::var("BERTH_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_b0e7_u64);
    eprintln!("{test}: seed {seed} (set BERTH_FUZZ_SEED to replay another)");
    StdRng::seed_from_u64(seed ^ test.len() as u64)
}

fn cases(default: usize) -> usize {
    std::env::var("BERTH_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn random_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let mut v = vec![0u8; rng.random_range(0..=max)];
    rng.fill_bytes(&mut v);
    v
}

/// Flips, overwrites, truncates or extends `data` a few times.
fn mutate(rng: &mut StdRng, mut data: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.random_range(1..4) {
        match rng.random_range(0..4) {
            0 if !data.is_empty() => {
                let i = rng.random_range(0..data.len());
                data[i] ^= 1 << rng.random_range(0..8);
            }
            1 if !data.is_empty() => {
                let i = rng.random_range(0..data.len());
                data[i] = rng.random();
            }
            2 => data.truncate(rng.random_range(0..=data.len())),
            _ => data.extend(random_bytes(rng, 16)),
        }
    }
    data
}

fn random_frame(rng: &mut StdRng) -> Frame {
    let id = rng.random_range(1..=0x7fff_ffff);
    match rng.random_range(0..8) {
        0 => Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: rng.random_range(0..8),
            slot: 0,
            flags: rng.random_range(0..4),
            header_block: random_bytes(rng, 64).into(),
        },
        1 => Frame::SynReply {
            stream_id: id,
            flags: rng.random_range(0..2),
            header_block: random_bytes(rng, 64).into(),
        },
        2 => Frame::RstStream {
            stream_id: id,
            status: rng.random_range(1..12),
        },
        3 => Frame::Settings {
            flags: 0,
            entries: (0..rng.random_range(0..4))
                .map(|_| Setting {
                    flags: 0,
                    id: rng.random_range(1..8),
                    value: rng.random(),
                })
                .collect(),
        },
        4 => Frame::Ping { id: rng.random() },
        5 => Frame::WindowUpdate {
            stream_id: id,
            delta: rng.random_range(1..0x7fff_ffff),
        },
        6 => Frame::GoAway {
            last_good_stream_id: id,
            status: rng.random_range(0..3),
        },
        _ => Frame::Data {
            stream_id: id,
            flags: rng.random_range(0..2),
            data: random_bytes(rng, 256).into(),
        },
    }
}

#[test]
fn spdy_frame_decode_never_panics_and_never_overreads() {
    let mut rng = rng("spdy_frame_decode");
    for _ in 0..cases(20_000) {
        let input = if rng.random_bool(0.5) {
            random_bytes(&mut rng, 64)
        } else {
            let mut out = BytesMut::new();
            random_frame(&mut rng).encode(&mut out);
            mutate(&mut rng, out.to_vec())
        };
        if let Ok(Some((_, used))) = frame::decode(&input) {
            assert!(used <= input.len(), "{input:?}");
        }
    }
}

#[test]
fn spdy_frames_round_trip() {
    let mut rng = rng("spdy_frames_round_trip");
    for _ in 0..cases(5_000) {
        let f = random_frame(&mut rng);
        let mut out = BytesMut::new();
        f.encode(&mut out);
        let (back, used) = frame::decode(&out)
            .unwrap_or_else(|e| panic!("{f:?}: {e}"))
            .unwrap_or_else(|| panic!("{f:?}: incomplete"));
        assert_eq!((back, used), (f, out.len()));
    }
}

#[test]
fn spdy_header_blocks_never_panic_and_round_trip() {
    let mut rng = rng("spdy_header_blocks");
    for _ in 0..cases(3_000) {
        // Uncompressed blocks from random bytes and from mutated valid blocks.
        let mut h = Headers::new();
        for _ in 0..rng.random_range(0..4) {
            let name: String = (0..rng.random_range(1..8))
                .map(|_| rng.random_range(b'a'..=b'z') as char)
                .collect();
            h.insert(&name, &format!("v{}", rng.random::<u16>()));
        }
        let block = h.to_block();
        assert_eq!(Headers::from_block(&block).expect("round trip"), h);
        let _ = Headers::from_block(&mutate(&mut rng, block));
        let _ = Headers::from_block(&random_bytes(&mut rng, 64));
        // Compressed: a valid block, then garbage on the same zlib context.
        let mut enc = HeaderEncoder::new();
        let mut dec = HeaderDecoder::new();
        let compressed = enc.encode(&h).expect("encode");
        assert_eq!(dec.decode(&compressed).expect("decode"), h);
        let _ = dec.decode(&mutate(&mut rng, compressed.to_vec()));
        let _ = HeaderDecoder::new().decode(&random_bytes(&mut rng, 64));
    }
}

#[test]
fn spdy_header_block_bomb_is_refused() {
    // 64 MiB of zeros deflate to ~64 KiB: inflating must stop at the block limit.
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut z, &vec![0u8; 64 << 20]).expect("deflate");
    let bomb = z.finish().expect("deflate");
    let err = HeaderDecoder::new().decode(&bomb).expect_err("bomb");
    assert!(err.to_string().contains("beyond"), "{err}");
}

#[tokio::test]
async fn spdy_sessions_survive_random_peers() {
    let mut rng = rng("spdy_sessions");
    for _ in 0..cases(200) {
        let (ours, mut peer) = tokio::io::duplex(64 * 1024);
        let conn = Connection::new(ours, Role::Server);
        let (mut incoming, session) = conn.into_parts();
        let mut wire = Vec::new();
        for _ in 0..rng.random_range(1..6) {
            let mut out = BytesMut::new();
            random_frame(&mut rng).encode(&mut out);
            wire.extend(if rng.random_bool(0.3) {
                mutate(&mut rng, out.to_vec())
            } else {
                out.to_vec()
            });
        }
        let _ = peer.write_all(&wire).await;
        drop(peer);
        // The session must end (peer gone or protocol error) without panicking or hanging.
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            while incoming.recv().await.is_some() {}
            session.closed().await;
        })
        .await;
        assert!(ended.is_ok(), "session did not end after {wire:?}");
    }
}

#[test]
fn websocket_channel_frames_never_panic_and_round_trip() {
    let mut rng = rng("websocket_frames");
    for _ in 0..cases(20_000) {
        let codec = if rng.random_bool(0.5) {
            Codec::Binary
        } else {
            Codec::Base64
        };
        let close = rng.random_bool(0.5);
        let _ = ws_decode(codec, close, &random_bytes(&mut rng, 64));
        let channel = rng.random_range(0..5);
        let payload = random_bytes(&mut rng, 64);
        let message = ws_encode(codec, channel, &payload);
        let data = streaming::websocket::frame::message_bytes(message).expect("data message");
        match ws_decode(codec, close, &data) {
            Inbound::Data {
                channel: c,
                payload: p,
            } => assert_eq!((c, p.as_ref()), (channel, payload.as_slice())),
            other => panic!("{codec:?} {channel} {payload:?}: {other:?}"),
        }
        let _ = ws_decode(codec, close, &mutate(&mut rng, data.to_vec()));
    }
}

#[test]
fn resize_messages_and_port_lists_never_panic() {
    let mut rng = rng("resize_and_ports");
    for _ in 0..cases(10_000) {
        let _ = parse_resize(&random_bytes(&mut rng, 32));
        let valid = format!(
            r#"{{"Width":{},"Height":{}}}"#,
            rng.random::<u16>(),
            rng.random::<u16>()
        );
        let _ = parse_resize(&mutate(&mut rng, valid.into_bytes()));
        let ports = format!("?port={}&port={}", rng.random::<u32>(), rng.random::<u16>());
        let ports = String::from_utf8_lossy(&mutate(&mut rng, ports.into_bytes())).into_owned();
        if let Ok(list) = parse_ports(&ports) {
            assert!(list.iter().all(|p| *p != 0), "{ports}: {list:?}");
        }
    }
}
