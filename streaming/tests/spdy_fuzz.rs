//! A server connection fed random frame sequences (valid, malformed, hostile windows) never
//! panics and never hangs. One test per binary: it installs a panic hook to see panics in
//! spawned tasks, which tokio would otherwise swallow.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use streaming::spdy::frame::{FLAG_FIN, Frame, SETTINGS_INITIAL_WINDOW_SIZE, Setting};
use streaming::spdy::headers::{HeaderEncoder, Headers};
use streaming::spdy::{Connection, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// xorshift: deterministic noise without a dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Up to `max` random bytes.
    fn bytes(&mut self, max: u64) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn random_frame(noise: &mut Noise, enc: &mut HeaderEncoder, next_id: &mut u32) -> Vec<u8> {
    let stream_id = (noise.below(12) as u32) | 1;
    // Mostly well-formed frames, so sessions live long enough to reach the stream paths.
    let frame = match noise.below(100) {
        0..=11 => {
            let id = *next_id;
            *next_id += 2;
            let headers = Headers::new().with("streamtype", "stdin");
            Frame::SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                slot: 0,
                flags: (noise.below(4)) as u8,
                header_block: enc.encode(&headers).unwrap(),
            }
        }
        12..=39 => Frame::Data {
            stream_id,
            flags: if noise.below(4) == 0 { FLAG_FIN } else { 0 },
            data: Bytes::from(noise.bytes(70_000)),
        },
        40..=49 => Frame::WindowUpdate {
            stream_id: stream_id * noise.below(2) as u32,
            delta: noise.next() as u32,
        },
        50..=57 => Frame::Settings {
            flags: 0,
            entries: vec![Setting {
                flags: 0,
                id: SETTINGS_INITIAL_WINDOW_SIZE,
                value: [0, 1, 1000, u32::MAX][noise.below(4) as usize],
            }],
        },
        58..=65 => Frame::RstStream {
            stream_id,
            status: noise.below(12) as u32,
        },
        66..=75 => Frame::Ping {
            id: noise.next() as u32,
        },
        76..=85 => Frame::Headers {
            stream_id,
            flags: FLAG_FIN,
            header_block: enc.encode(&Headers::new()).unwrap(),
        },
        86..=95 => Frame::Unknown {
            frame_type: 10 + noise.below(100) as u16,
            flags: 0,
            payload: Bytes::from(noise.bytes(40)),
        },
        96..=98 => {
            // A control frame header with a random type and payload: often malformed.
            let mut raw = vec![0x80, 0x03, 0, noise.below(12) as u8, 0, 0, 0];
            let len = noise.below(40) as u8;
            raw.push(len);
            raw.extend((0..len).map(|_| noise.next() as u8));
            return raw;
        }
        _ => return noise.bytes(24),
    };
    frame.to_bytes().to_vec()
}

/// Accepts every stream and uses both halves until they end.
fn serve(mut conn: Connection, accepted: Arc<AtomicUsize>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(stream) = conn.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let (mut r, mut w) = stream.into_split();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = r.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                let chunk = vec![5u8; 50_000];
                for _ in 0..4 {
                    if w.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                let _ = w.shutdown().await;
            });
        }
        conn.close().await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_frame_sequences_never_panic_or_hang() {
    let panics = Arc::new(AtomicUsize::new(0));
    let hook_panics = panics.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        hook_panics.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let accepted = Arc::new(AtomicUsize::new(0));
    let mut noise = Noise(0x2545_f491_4f6c_dd1d);
    for _session in 0..100 {
        let (peer, server_io) = tokio::io::duplex(32 * 1024);
        let server = serve(Connection::new(server_io, Role::Server), accepted.clone());
        let (mut from_server, mut to_server) = tokio::io::split(peer);
        let drain = tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = from_server.read_to_end(&mut sink).await;
        });
        let mut enc = HeaderEncoder::new();
        let mut next_id = 1;
        for _ in 0..noise.below(80) {
            let bytes = random_frame(&mut noise, &mut enc, &mut next_id);
            if tokio::time::timeout(Duration::from_secs(5), to_server.write_all(&bytes))
                .await
                .map_or(true, |r| r.is_err())
            {
                break; // The server stopped reading (ended the session or applies back-pressure).
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), to_server.shutdown()).await;
        tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .expect("server connection ends after the peer is gone")
            .expect("server task");
        drain.abort();
    }
    assert_eq!(panics.load(Ordering::SeqCst), 0, "a task panicked");
    assert!(
        accepted.load(Ordering::SeqCst) > 150,
        "sessions lived long enough to open streams: {}",
        accepted.load(Ordering::SeqCst)
    );
}
