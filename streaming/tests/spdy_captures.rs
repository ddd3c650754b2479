//! The SPDY codec and server against sessions recorded between crictl (client-go's SPDY client)
//! and containerd's CRI streaming server: `shared/fixtures/streaming/*.pcap`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use streaming::capture::{Capture, read_pcap, split_http};
use streaming::protocol::{self, Outcome, V4};
use streaming::spdy::frame::{self, FLAG_FIN, Frame, rst};
use streaming::spdy::headers::{HeaderDecoder, HeaderEncoder, Headers};
use streaming::spdy::{accept_port_forward, accept_remote_command};
use streaming::{StreamOptions, TermSize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------------
// pcap reading

/// The recorded sessions, copied into the repository from the project's shared fixtures
/// (`shared/fixtures/streaming/`, README included) so every checkout can replay them.
fn fixtures() -> Option<PathBuf> {
    Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
}

fn load(name: &str) -> Option<Capture> {
    let path = fixtures()?.join(format!("{name}.pcap"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Some(read_pcap(&bytes).expect("a streaming session in the capture"))
}

/// Splits the HTTP head from the SPDY bytes behind it.
fn after_http(bytes: &[u8]) -> (&str, &[u8]) {
    split_http(bytes).expect("end of HTTP head")
}

// ---------------------------------------------------------------------------------------------
// decoding a whole direction

/// Every frame of one direction. client-go writes a frame field by field, so a client cut off
/// mid-write leaves the start of a frame at the end (`80 03`, a control frame's first bytes):
/// that tail must be shorter than a frame header.
fn frames(bytes: &[u8]) -> Vec<Frame> {
    frames_and_tail(bytes).0
}

fn frames_and_tail(mut bytes: &[u8]) -> (Vec<Frame>, &[u8]) {
    let mut out = Vec::new();
    while let Some((f, used)) = frame::decode(bytes).expect("valid frame") {
        out.push(f);
        bytes = &bytes[used..];
    }
    assert!(bytes.len() < 8, "{} trailing bytes", bytes.len());
    (out, bytes)
}

/// What one direction said: headers per opened/replied stream, data per stream, FINs, the rest.
#[derive(Default, Debug)]
struct Transcript {
    opened: BTreeMap<u32, Vec<(String, String)>>,
    replied: Vec<u32>,
    data: BTreeMap<u32, Vec<u8>>,
    fin: Vec<u32>,
    resets: Vec<(u32, u32)>,
    goaway: Option<(u32, u32)>,
    header_blocks: Vec<Bytes>,
}

fn transcript(frames: &[Frame]) -> Transcript {
    let mut t = Transcript::default();
    let mut dec = HeaderDecoder::new();
    let pairs = |h: &Headers| {
        h.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect::<Vec<_>>()
    };
    for f in frames {
        match f {
            Frame::SynStream {
                stream_id,
                header_block,
                ..
            } => {
                let h = dec.decode(header_block).expect("client header block");
                t.opened.insert(*stream_id, pairs(&h));
                t.header_blocks.push(header_block.clone());
            }
            Frame::SynReply {
                stream_id,
                header_block,
                ..
            } => {
                assert!(dec.decode(header_block).expect("reply block").is_empty());
                t.replied.push(*stream_id);
                t.header_blocks.push(header_block.clone());
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                t.data
                    .entry(*stream_id)
                    .or_default()
                    .extend_from_slice(data);
                if flags & FLAG_FIN != 0 {
                    t.fin.push(*stream_id);
                }
            }
            Frame::RstStream { stream_id, status } => t.resets.push((*stream_id, *status)),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => t.goaway = Some((*last_good_stream_id, *status)),
            Frame::Settings { .. } | Frame::WindowUpdate { .. } | Frame::Ping { .. } => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
    t
}

fn stream_types(t: &Transcript) -> Vec<(u32, String)> {
    t.opened
        .iter()
        .map(|(id, h)| {
            let ty = h
                .iter()
                .find(|(n, _)| n == "streamtype")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            (*id, ty)
        })
        .collect()
}

fn types(list: &[(u32, &str)]) -> Vec<(u32, String)> {
    list.iter().map(|(id, t)| (*id, t.to_string())).collect()
}

fn exit_status(code: i32, command: &[&str]) -> Vec<u8> {
    protocol::status_bytes(
        V4,
        &Outcome::ExitCode {
            code,
            command: command.iter().map(|s| s.to_string()).collect(),
        },
    )
}

// ---------------------------------------------------------------------------------------------
// the codec against the recordings

#[test]
fn client_upgrade_offers_every_remotecommand_version() {
    let Some(c) = load("exec-spdy-stdin") else {
        return;
    };
    let (head, _) = after_http(&c.client);
    assert!(head.starts_with("POST /exec/"), "{head}");
    assert!(head.contains("Upgrade: SPDY/3.1\r\n"));
    let offered: Vec<&str> = head
        .lines()
        .filter_map(|l| l.strip_prefix("X-Stream-Protocol-Version: "))
        .collect();
    assert_eq!(
        offered,
        [
            "v5.channel.k8s.io",
            "v4.channel.k8s.io",
            "v3.channel.k8s.io",
            "v2.channel.k8s.io",
            "channel.k8s.io"
        ]
    );
    assert_eq!(
        protocol::negotiate(&offered, protocol::SPDY_REMOTE_COMMAND),
        Some(V4)
    );
    let (reply, _) = after_http(&c.server);
    assert!(reply.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(reply.contains("X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"));
}

#[test]
fn exec_with_stdin_capture_decodes() {
    let Some(c) = load("exec-spdy-stdin") else {
        return;
    };
    let client = transcript(&frames(after_http(&c.client).1));
    assert_eq!(
        stream_types(&client),
        types(&[(1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr")])
    );
    assert_eq!(client.data[&3], b"hello\nworld\n");
    assert_eq!(client.fin, [3]);
    let server = transcript(&frames(after_http(&c.server).1));
    assert_eq!(server.replied, [1, 3, 5, 7]);
    assert_eq!(server.data[&5], b"hello\nworld\n");
    assert_eq!(
        server.data[&1],
        protocol::status_bytes(V4, &Outcome::Success)
    );
    assert_eq!(server.fin, [7, 5]);
    assert_eq!(server.resets, [(1, rst::CANCEL), (3, rst::CANCEL)]);
    assert_eq!(server.goaway, Some((7, 0)));
}

#[test]
fn exec_exit_code_capture_decodes() {
    let Some(c) = load("exec-spdy-exitcode") else {
        return;
    };
    let client = transcript(&frames(after_http(&c.client).1));
    assert_eq!(
        stream_types(&client),
        types(&[(1, "error"), (3, "stdout"), (5, "stderr")])
    );
    assert!(client.data.is_empty());
    let server = transcript(&frames(after_http(&c.server).1));
    assert_eq!(server.replied, [1, 3, 5]);
    assert_eq!(server.data[&3], b"out\n");
    assert_eq!(server.data[&5], b"err\n");
    assert_eq!(
        server.data[&1],
        exit_status(7, &["sh", "-c", "echo out; echo err >&2; exit 7"])
    );
}

#[test]
fn exec_tty_capture_decodes() {
    let Some(c) = load("exec-spdy-tty") else {
        return;
    };
    let client = transcript(&frames(after_http(&c.client).1));
    assert_eq!(
        stream_types(&client),
        types(&[(1, "error"), (3, "stdin"), (5, "stdout"), (7, "resize")])
    );
    assert_eq!(client.data[&7], b"{\"Width\":100,\"Height\":30}\n");
    assert_eq!(
        protocol::parse_resize(client.data[&7].trim_ascii()),
        Some(TermSize {
            width: 100,
            height: 30
        })
    );
    let server = transcript(&frames(after_http(&c.server).1));
    assert_eq!(server.replied, [1, 3, 5, 7]);
    assert_eq!(server.data[&5], b"30 100\r\n");
    assert_eq!(
        server.data[&1],
        exit_status(3, &["sh", "-c", "stty size; exit 3"])
    );
}

#[test]
fn attach_capture_decodes() {
    let Some(c) = load("attach-spdy") else {
        return;
    };
    let (head, rest) = after_http(&c.client);
    assert!(head.starts_with("POST /attach/"));
    let client = transcript(&frames(rest));
    assert_eq!(
        stream_types(&client),
        types(&[(1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr")])
    );
    assert_eq!(client.data[&3], b"ping\n");
    let server = transcript(&frames(after_http(&c.server).1));
    assert_eq!(server.data[&5], b"got ping\n");
}

#[test]
fn port_forward_capture_decodes_with_request_ids() {
    let Some(c) = load("portforward-spdy") else {
        return;
    };
    let (head, rest) = after_http(&c.client);
    assert!(head.contains("X-Stream-Protocol-Version: portforward.k8s.io\r\n"));
    let client = transcript(&frames(rest));
    let pairs = |l: &[(&str, &str)]| {
        l.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect::<Vec<_>>()
    };
    // Wire order and casing exactly as client-go sends them.
    assert_eq!(
        client.opened[&1],
        pairs(&[("requestid", "0"), ("streamtype", "error"), ("port", "80")])
    );
    assert_eq!(
        client.opened[&3],
        pairs(&[("port", "80"), ("requestid", "0"), ("streamtype", "data")])
    );
    assert!(client.data[&3].starts_with(b"GET /index.html HTTP/1.1\r\n"));
    // The client closes its side of the error stream at once.
    assert_eq!(client.fin, [1, 3]);
    assert_eq!(client.goaway, Some((0, 0)));
    let server = transcript(&frames(after_http(&c.server).1));
    assert_eq!(server.replied, [1, 3]);
    assert!(server.data[&3].ends_with(b"hello-from-pod\n"));
    assert!(server.data[&1].is_empty(), "no error text");
}

const CAPTURES: [&str; 5] = [
    "exec-spdy-stdin",
    "exec-spdy-exitcode",
    "exec-spdy-tty",
    "attach-spdy",
    "portforward-spdy",
];

#[test]
fn re_encoding_decoded_frames_reproduces_the_recorded_bytes() {
    for name in CAPTURES {
        let Some(c) = load(name) else {
            return;
        };
        for bytes in [after_http(&c.client).1, after_http(&c.server).1] {
            let (frames, tail) = frames_and_tail(bytes);
            let mut out = BytesMut::new();
            for f in frames {
                f.encode(&mut out);
            }
            out.extend_from_slice(tail);
            assert_eq!(&out[..], bytes, "{name}");
        }
    }
}

#[test]
fn our_header_blocks_start_like_client_go_and_inflate_in_a_fresh_context() {
    for name in CAPTURES {
        let Some(c) = load(name) else {
            return;
        };
        let client = transcript(&frames(after_http(&c.client).1));
        let mut enc = HeaderEncoder::new();
        let mut dec = HeaderDecoder::new();
        for (i, (_, pairs)) in client.opened.iter().enumerate() {
            let mut h = Headers::new();
            for (n, v) in pairs {
                h.insert(n, v);
            }
            let block = enc.encode(&h).unwrap();
            if i == 0 {
                // zlib header (best compression, preset dictionary) and the SPDY/3 dictionary
                // id, as Go's compress/zlib writes them.
                assert_eq!(block[..6], client.header_blocks[0][..6], "{name}");
            }
            assert_eq!(dec.decode(&block).unwrap(), h, "{name}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// replaying the client half against berth's server

/// Feeds the recorded client frames to a server over an in-memory pipe; returns our server's
/// end, the task collecting everything the server writes back, and the client's write end
/// (kept open so the session is not cut short).
async fn replay(
    name: &str,
) -> Option<(
    tokio::io::DuplexStream,
    tokio::task::JoinHandle<Vec<u8>>,
    tokio::io::WriteHalf<tokio::io::DuplexStream>,
)> {
    let c = load(name)?;
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (mut from_server, mut to_server) = tokio::io::split(client);
    // The pipe holds the whole recording: the server reads it when it starts.
    to_server.write_all(after_http(&c.client).1).await.unwrap();
    let collected = tokio::spawn(async move {
        let mut out = Vec::new();
        let _ = from_server.read_to_end(&mut out).await;
        out
    });
    Some((server, collected, to_server))
}

const LONG: Duration = Duration::from_secs(10);

async fn with_timeout<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LONG, f).await.expect("timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_exec_stdin_session_reaches_the_server_and_gets_replies() {
    let Some((io, collected, client_end)) = replay("exec-spdy-stdin").await else {
        return;
    };
    let opts = StreamOptions {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let (mut cmd, session) = with_timeout(accept_remote_command(io, V4, opts, LONG))
        .await
        .unwrap();
    assert_eq!(cmd.protocol, V4);
    assert!(cmd.resize.is_none());
    let mut stdin = Vec::new();
    with_timeout(cmd.stdin.take().unwrap().read_to_end(&mut stdin))
        .await
        .unwrap();
    assert_eq!(stdin, b"hello\nworld\n");
    let mut stdout = cmd.stdout.take().unwrap();
    stdout.write_all(&stdin).await.unwrap();
    stdout.shutdown().await.unwrap();
    protocol::write_status(&mut cmd.error, V4, &Outcome::Success)
        .await
        .unwrap();
    drop(cmd);
    with_timeout(session.close()).await;
    drop(client_end);
    let server = transcript(&frames(&with_timeout(collected).await.unwrap()));
    assert_eq!(server.replied, [1, 3, 5, 7]);
    assert_eq!(server.data[&5], b"hello\nworld\n");
    assert_eq!(
        server.data[&1],
        protocol::status_bytes(V4, &Outcome::Success)
    );
    assert!(server.fin.contains(&5) && server.fin.contains(&1));
    assert_eq!(server.goaway, Some((7, 0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_exit_code_session_has_no_stdin() {
    let Some((io, collected, client_end)) = replay("exec-spdy-exitcode").await else {
        return;
    };
    let opts = StreamOptions {
        stdin: false,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let (mut cmd, session) = with_timeout(accept_remote_command(io, V4, opts, LONG))
        .await
        .unwrap();
    assert!(cmd.stdin.is_none());
    cmd.stdout
        .take()
        .unwrap()
        .write_all(b"out\n")
        .await
        .unwrap();
    cmd.stderr
        .take()
        .unwrap()
        .write_all(b"err\n")
        .await
        .unwrap();
    let outcome = Outcome::ExitCode {
        code: 7,
        command: vec![
            "sh".into(),
            "-c".into(),
            "echo out; echo err >&2; exit 7".into(),
        ],
    };
    protocol::write_status(&mut cmd.error, V4, &outcome)
        .await
        .unwrap();
    drop(cmd);
    with_timeout(session.close()).await;
    drop(client_end);
    let server = transcript(&frames(&with_timeout(collected).await.unwrap()));
    assert_eq!(server.replied, [1, 3, 5]);
    assert_eq!(server.data[&3], b"out\n");
    assert_eq!(server.data[&5], b"err\n");
    // Byte for byte what containerd sent on the error stream.
    let c = load("exec-spdy-exitcode").unwrap();
    let recorded = transcript(&frames(after_http(&c.server).1));
    assert_eq!(server.data[&1], recorded.data[&1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_tty_session_yields_the_terminal_size() {
    let Some((io, collected, client_end)) = replay("exec-spdy-tty").await else {
        return;
    };
    let opts = StreamOptions {
        stdin: true,
        stdout: true,
        stderr: false,
        tty: true,
    };
    let (mut cmd, session) = with_timeout(accept_remote_command(io, V4, opts, LONG))
        .await
        .unwrap();
    assert!(cmd.stderr.is_none());
    let mut resize = cmd.resize.take().expect("resize stream");
    assert_eq!(
        with_timeout(resize.recv()).await,
        Some(TermSize {
            width: 100,
            height: 30
        })
    );
    drop(cmd);
    with_timeout(session.close()).await;
    drop(client_end);
    let server = transcript(&frames(&with_timeout(collected).await.unwrap()));
    assert_eq!(server.replied, [1, 3, 5, 7]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_attach_session_delivers_stdin() {
    let Some((io, _collected, _client_end)) = replay("attach-spdy").await else {
        return;
    };
    let opts = StreamOptions {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let (mut cmd, session) = with_timeout(accept_remote_command(io, V4, opts, LONG))
        .await
        .unwrap();
    let mut stdin = Vec::new();
    with_timeout(cmd.stdin.take().unwrap().read_to_end(&mut stdin))
        .await
        .unwrap();
    assert_eq!(stdin, b"ping\n");
    with_timeout(session.close()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_port_forward_session_yields_one_connection_on_port_80() {
    let Some((io, collected, client_end)) = replay("portforward-spdy").await else {
        return;
    };
    let (mut forwards, session) = accept_port_forward(io, LONG).await.unwrap();
    let mut fwd = with_timeout(forwards.recv()).await.expect("a stream pair");
    assert_eq!(fwd.port, 80);
    let mut request = Vec::new();
    with_timeout(fwd.data_in.read_to_end(&mut request))
        .await
        .unwrap();
    assert!(request.starts_with(b"GET /index.html HTTP/1.1\r\n"));
    fwd.data_out
        .write_all(b"HTTP/1.1 200 OK\r\n\r\nhello-from-pod\n")
        .await
        .unwrap();
    fwd.data_out.shutdown().await.unwrap();
    // The client sent GOAWAY: no more connections come.
    assert!(with_timeout(forwards.recv()).await.is_none());
    drop(fwd);
    with_timeout(session.close()).await;
    drop(client_end);
    let server = transcript(&frames(&with_timeout(collected).await.unwrap()));
    assert_eq!(server.replied, [1, 3]);
    assert!(server.data[&3].ends_with(b"hello-from-pod\n"));
    assert!(server.fin.contains(&3));
}
