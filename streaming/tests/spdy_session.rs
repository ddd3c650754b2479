//! SPDY sessions end to end in memory: berth's client against berth's server, and a raw peer
//! (frames written by hand) for what a well-behaved client never does.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use streaming::protocol::{self, Outcome, V4};
use streaming::spdy::frame::{self, Frame, SETTINGS_INITIAL_WINDOW_SIZE, Setting, goaway};
use streaming::spdy::headers::{HeaderDecoder, HeaderEncoder, Headers};
use streaming::spdy::{
    Connection, Role, Stream, accept_port_forward, accept_remote_command, upgrade,
};
use streaming::{StreamError, StreamOptions};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};

const LONG: Duration = Duration::from_secs(20);

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LONG, f).await.expect("timed out")
}

fn all_stdio() -> StreamOptions {
    StreamOptions {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    }
}

fn typed(kind: &str) -> Headers {
    Headers::new().with("streamtype", kind)
}

/// Opens the exec streams in client-go's order: error, stdin, stdout, stderr.
async fn open_exec_streams(conn: &Connection) -> (Stream, Stream, Stream, Stream) {
    let error = conn.open_stream(typed("error")).await.unwrap();
    let stdin = conn.open_stream(typed("stdin")).await.unwrap();
    let stdout = conn.open_stream(typed("stdout")).await.unwrap();
    let stderr = conn.open_stream(typed("stderr")).await.unwrap();
    (error, stdin, stdout, stderr)
}

async fn read_all<R: AsyncRead + Unpin>(mut r: R) -> Vec<u8> {
    let mut out = Vec::new();
    within(r.read_to_end(&mut out)).await.unwrap();
    out
}

/// Deterministic bytes that are not all alike, so a lost or reordered chunk shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_round_trip_carries_stdio_status_and_eof() {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(accept_remote_command(server_io, V4, all_stdio(), LONG));
    let client = Connection::new(client_io, Role::Client);
    let (error, mut stdin, stdout, stderr) = within(open_exec_streams(&client)).await;
    let (mut cmd, session) = within(server).await.unwrap().unwrap();

    stdin.write_all(b"input").await.unwrap();
    stdin.shutdown().await.unwrap();
    assert_eq!(read_all(cmd.stdin.take().unwrap()).await, b"input");

    let mut out = cmd.stdout.take().unwrap();
    out.write_all(b"out").await.unwrap();
    out.shutdown().await.unwrap();
    let mut err = cmd.stderr.take().unwrap();
    err.write_all(b"err").await.unwrap();
    drop(err); // Dropping a writer ends the stream too.
    let outcome = Outcome::ExitCode {
        code: 3,
        command: vec!["false".into()],
    };
    protocol::write_status(&mut cmd.error, V4, &outcome)
        .await
        .unwrap();
    drop(cmd);
    within(session.close()).await;

    assert_eq!(read_all(stdout).await, b"out");
    assert_eq!(read_all(stderr).await, b"err");
    assert_eq!(read_all(error).await, protocol::status_bytes(V4, &outcome));
}

/// Counts what passes through a writer, to see where back-pressure stops it.
struct Counting<W> {
    inner: W,
    count: Arc<AtomicUsize>,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counting<W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = poll {
            self.count.fetch_add(n, Ordering::SeqCst);
        }
        poll
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn spawn_counted_write<W>(
    writer: W,
    data: Vec<u8>,
) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>)
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let count = Arc::new(AtomicUsize::new(0));
    let mut w = Counting {
        inner: writer,
        count: count.clone(),
    };
    let task = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    });
    (count, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_hold_writers_at_the_stream_window_then_everything_arrives() {
    const SIZE: usize = 4 << 20;
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(accept_remote_command(server_io, V4, all_stdio(), LONG));
    let client = Connection::new(client_io, Role::Client);
    let (_error, stdin, stdout, _stderr) = within(open_exec_streams(&client)).await;
    let (mut cmd, session) = within(server).await.unwrap().unwrap();

    let down = pattern(SIZE, 1);
    let up = pattern(SIZE, 2);
    let (sent_down, down_task) = spawn_counted_write(cmd.stdout.take().unwrap(), down.clone());
    let (sent_up, up_task) = spawn_counted_write(stdin.into_split().1, up.clone());

    // Nobody reads yet: each writer stops at the window the other side advertised.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let window = streaming::spdy::STREAM_WINDOW as usize;
    assert!(
        sent_down.load(Ordering::SeqCst) <= window,
        "server → client ran past the window"
    );
    assert!(
        sent_up.load(Ordering::SeqCst) <= window,
        "client → server ran past the window"
    );
    assert!(sent_down.load(Ordering::SeqCst) > 0);

    // Both readers drain, the second one slowly: all bytes arrive in order.
    let stdin_reader = cmd.stdin.take().unwrap();
    let slow = tokio::spawn(async move {
        let mut r = stdin_reader;
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 7919];
        loop {
            let n = r.read(&mut chunk).await.unwrap();
            if n == 0 {
                break got;
            }
            let before = got.len();
            got.extend_from_slice(&chunk[..n]);
            if before / (64 * 1024) != got.len() / (64 * 1024) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    assert_eq!(read_all(stdout).await, down);
    assert_eq!(within(slow).await.unwrap(), up);
    within(down_task).await.unwrap();
    within(up_task).await.unwrap();
    drop(cmd);
    within(session.close()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_ends_reads_and_writes_without_hanging() {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(accept_remote_command(server_io, V4, all_stdio(), LONG));
    let client = Connection::new(client_io, Role::Client);
    let streams = within(open_exec_streams(&client)).await;
    let (mut cmd, session) = within(server).await.unwrap().unwrap();
    drop(streams);
    drop(client);

    within(session.closed()).await;
    assert_eq!(read_all(cmd.stdin.take().unwrap()).await, b"");
    let mut stdout = cmd.stdout.take().unwrap();
    let chunk = vec![7u8; 64 * 1024];
    let failed = within(async {
        loop {
            if stdout.write_all(&chunk).await.is_err() {
                break true;
            }
        }
    })
    .await;
    assert!(failed);
    within(session.close()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_opens_its_streams_times_out() {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(accept_remote_command(
        server_io,
        V4,
        all_stdio(),
        Duration::from_millis(300),
    ));
    let client = Connection::new(client_io, Role::Client);
    let _error = within(client.open_stream(typed("error"))).await.unwrap();
    let _bogus = within(client.open_stream(typed("bogus"))).await.unwrap();
    match within(server).await.unwrap() {
        Err(StreamError::Timeout(d)) => assert_eq!(d, Duration::from_millis(300)),
        other => panic!("want a timeout, got {:?}", other.err()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tty_sessions_have_no_stderr_and_deliver_resizes() {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let opts = StreamOptions {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: true,
    };
    let server = tokio::spawn(accept_remote_command(server_io, V4, opts, LONG));
    let client = Connection::new(client_io, Role::Client);
    let _error = within(client.open_stream(typed("error"))).await.unwrap();
    let _stdin = within(client.open_stream(typed("stdin"))).await.unwrap();
    let _stdout = within(client.open_stream(typed("stdout"))).await.unwrap();
    let mut resize = within(client.open_stream(typed("resize"))).await.unwrap();
    let (mut cmd, session) = within(server).await.unwrap().unwrap();
    assert!(cmd.stderr.is_none());
    resize
        .write_all(b"{\"Width\":80,\"Height\":24}\n{\"Width\":120,\"Height\":40}\n")
        .await
        .unwrap();
    let sizes = cmd.resize.as_mut().unwrap();
    assert_eq!(within(sizes.recv()).await.unwrap().width, 80);
    assert_eq!(within(sizes.recv()).await.unwrap().height, 40);
    within(session.close()).await;
}

// ---------------------------------------------------------------------------------------------
// a raw peer

/// A peer that writes frames by hand, as a hostile or minimal client would.
struct RawPeer {
    io: DuplexStream,
    enc: HeaderEncoder,
    dec: HeaderDecoder,
    buf: BytesMut,
}

impl RawPeer {
    fn new(io: DuplexStream) -> RawPeer {
        RawPeer {
            io,
            enc: HeaderEncoder::new(),
            dec: HeaderDecoder::new(),
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, f: Frame) {
        self.io.write_all(&f.to_bytes()).await.unwrap();
    }

    async fn open(&mut self, stream_id: u32, headers: Headers) {
        let header_block = self.enc.encode(&headers).unwrap();
        self.send(Frame::SynStream {
            stream_id,
            associated_to: 0,
            priority: 0,
            slot: 0,
            flags: 0,
            header_block,
        })
        .await;
    }

    /// The next frame from the server other than SETTINGS and WINDOW_UPDATE; `None` at EOF.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            match self.next_any().await? {
                Frame::Settings { .. } | Frame::WindowUpdate { .. } => continue,
                f => return Some(f),
            }
        }
    }

    async fn next_any(&mut self) -> Option<Frame> {
        loop {
            if let Some((f, used)) = frame::decode(&self.buf).unwrap() {
                let _ = self.buf.split_to(used);
                if let Frame::SynReply { header_block, .. } = &f {
                    self.dec.decode(header_block).unwrap();
                }
                return Some(f);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = within(self.io.read(&mut chunk)).await.unwrap();
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Frames until EOF.
    async fn rest(&mut self) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(f) = self.next_any().await {
            out.push(f);
        }
        out
    }
}

fn data_len(frames: &[Frame], id: u32) -> usize {
    frames
        .iter()
        .map(|f| match f {
            Frame::Data {
                stream_id, data, ..
            } if *stream_id == id => data.len(),
            _ => 0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_flow_control_like_spdystream_is_never_stalled() {
    const SIZE: usize = 1 << 20;
    let (peer_io, server_io) = tokio::io::duplex(64 * 1024);
    let opts = StreamOptions {
        stdin: false,
        stdout: true,
        stderr: false,
        tty: false,
    };
    let server = tokio::spawn(accept_remote_command(server_io, V4, opts, LONG));
    let mut peer = RawPeer::new(peer_io);
    peer.open(1, typed("error")).await;
    peer.open(3, typed("stdout")).await;
    let (mut cmd, session) = within(server).await.unwrap().unwrap();
    let payload = pattern(SIZE, 3);
    let writer = tokio::spawn({
        let mut out = cmd.stdout.take().unwrap();
        let payload = payload.clone();
        async move {
            out.write_all(&payload).await.unwrap();
            out.shutdown().await.unwrap();
        }
    });
    // Read without ever sending WINDOW_UPDATE.
    let mut got = Vec::new();
    while got.len() < SIZE {
        if let Frame::Data {
            stream_id: 3, data, ..
        } = peer.next().await.expect("more data")
        {
            got.extend_from_slice(&data);
        }
    }
    assert_eq!(got, payload);
    within(writer).await.unwrap();
    drop(cmd);
    within(session.close()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peers_announced_window_is_never_exceeded() {
    let (peer_io, server_io) = tokio::io::duplex(64 * 1024);
    let opts = StreamOptions {
        stdin: false,
        stdout: true,
        stderr: false,
        tty: false,
    };
    let server = tokio::spawn(accept_remote_command(server_io, V4, opts, LONG));
    let mut peer = RawPeer::new(peer_io);
    peer.send(Frame::Settings {
        flags: 0,
        entries: vec![Setting {
            flags: 0,
            id: SETTINGS_INITIAL_WINDOW_SIZE,
            value: 1000,
        }],
    })
    .await;
    peer.open(1, typed("error")).await;
    peer.open(3, typed("stdout")).await;
    let (mut cmd, session) = within(server).await.unwrap().unwrap();
    let writer = tokio::spawn({
        let mut out = cmd.stdout.take().unwrap();
        async move { out.write_all(&[9u8; 5000]).await }
    });
    let mut got = 0;
    while got < 1000 {
        if let Some(Frame::Data {
            stream_id: 3, data, ..
        }) = peer.next().await
        {
            got += data.len();
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(got, 1000);
    assert!(
        !writer.is_finished(),
        "the writer waits for a window update"
    );
    peer.send(Frame::WindowUpdate {
        stream_id: 3,
        delta: 4000,
    })
    .await;
    while got < 5000 {
        if let Some(Frame::Data {
            stream_id: 3, data, ..
        }) = peer.next().await
        {
            got += data.len();
        }
    }
    within(writer).await.unwrap().unwrap();
    drop(cmd);
    within(session.close()).await;
    assert_eq!(data_len(&peer.rest().await, 3), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_echoed() {
    let (peer_io, server_io) = tokio::io::duplex(64 * 1024);
    let conn = Connection::new(server_io, Role::Server);
    let mut peer = RawPeer::new(peer_io);
    peer.send(Frame::Ping { id: 1 }).await;
    assert_eq!(peer.next().await, Some(Frame::Ping { id: 1 }));
    // A ping with the server's own parity is a reply, not a request.
    peer.send(Frame::Ping { id: 2 }).await;
    peer.send(Frame::Ping { id: 3 }).await;
    assert_eq!(peer.next().await, Some(Frame::Ping { id: 3 }));
    drop(conn);
}

async fn expect_protocol_goaway(
    mut peer: RawPeer,
    server: tokio::task::JoinHandle<
        Result<(streaming::RemoteCommand, streaming::Session), StreamError>,
    >,
) {
    assert!(matches!(
        within(server).await.unwrap(),
        Err(StreamError::Protocol(_))
    ));
    let frames = peer.rest().await;
    assert!(
        frames.iter().any(|f| matches!(
            f,
            Frame::GoAway {
                status: goaway::PROTOCOL_ERROR,
                ..
            }
        )),
        "{frames:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_control_frames_end_the_session() {
    let (peer_io, server_io) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(accept_remote_command(server_io, V4, all_stdio(), LONG));
    let mut peer = RawPeer::new(peer_io);
    // A SYN_STREAM announcing 1 MiB: rejected from its header, before any payload arrives.
    peer.io
        .write_all(&[0x80, 0x03, 0x00, 0x01, 0x00, 0x10, 0x00, 0x00])
        .await
        .unwrap();
    expect_protocol_goaway(peer, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_blocks_inflating_too_far_end_the_session() {
    let (peer_io, server_io) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(accept_remote_command(server_io, V4, all_stdio(), LONG));
    let mut peer = RawPeer::new(peer_io);
    let bomb = "a".repeat(300 * 1024);
    peer.open(1, typed("error").with("x", &bomb)).await;
    expect_protocol_goaway(peer, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_ends_the_session_without_panicking() {
    let (peer_io, server_io) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(accept_remote_command(server_io, V4, all_stdio(), LONG));
    let mut peer = RawPeer::new(peer_io);
    // A SYN_STREAM whose header block is not zlib.
    peer.send(Frame::SynStream {
        stream_id: 1,
        associated_to: 0,
        priority: 0,
        slot: 0,
        flags: 0,
        header_block: Bytes::from_static(b"definitely not deflate"),
    })
    .await;
    expect_protocol_goaway(peer, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_stream_fails_the_servers_writes() {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(accept_remote_command(server_io, V4, all_stdio(), LONG));
    let client = Connection::new(client_io, Role::Client);
    let (_error, _stdin, stdout, _stderr) = within(open_exec_streams(&client)).await;
    let (mut cmd, session) = within(server).await.unwrap().unwrap();
    stdout.cancel();
    let mut out = cmd.stdout.take().unwrap();
    let failed = within(async {
        loop {
            if out.write_all(b"x").await.is_err() {
                break true;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(failed);
    within(session.close()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_with_the_wrong_id_parity_are_reset() {
    let (peer_io, server_io) = tokio::io::duplex(64 * 1024);
    let _conn = Connection::new(server_io, Role::Server);
    let mut peer = RawPeer::new(peer_io);
    peer.open(2, typed("error")).await;
    assert!(matches!(
        peer.next().await,
        Some(Frame::RstStream { stream_id: 2, .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// port-forward

fn pf_headers(kind: &str, port: &str, request: &str) -> Headers {
    Headers::new()
        .with("streamtype", kind)
        .with("port", port)
        .with("requestID", request)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_pairs_streams_by_request_id() {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let (mut forwards, session) = accept_port_forward(server_io, LONG).await.unwrap();
    let client = Connection::new(client_io, Role::Client);
    // Two connections whose streams interleave.
    let e0 = within(client.open_stream(pf_headers("error", "8080", "0")))
        .await
        .unwrap();
    let e1 = within(client.open_stream(pf_headers("error", "9090", "1")))
        .await
        .unwrap();
    let d1 = within(client.open_stream(pf_headers("data", "9090", "1")))
        .await
        .unwrap();
    let d0 = within(client.open_stream(pf_headers("data", "8080", "0")))
        .await
        .unwrap();
    let first = within(forwards.recv()).await.unwrap();
    let second = within(forwards.recv()).await.unwrap();
    assert_eq!((first.port, second.port), (9090, 8080));
    for (fwd, (mut d, e)) in [(first, (d1, e1)), (second, (d0, e0))] {
        let port = fwd.port;
        let echo = tokio::spawn(async move {
            let mut data_in = fwd.data_in;
            let mut data_out = fwd.data_out;
            tokio::io::copy(&mut data_in, &mut data_out).await.unwrap();
            data_out.shutdown().await.unwrap();
            drop(fwd.error);
        });
        let msg = format!("to {port}");
        d.write_all(msg.as_bytes()).await.unwrap();
        d.shutdown().await.unwrap();
        assert_eq!(read_all(d).await, msg.as_bytes());
        within(echo).await.unwrap();
        assert_eq!(read_all(e).await, b"", "no error for port {port}");
    }
    drop(client);
    assert!(within(forwards.recv()).await.is_none());
    within(session.close()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_reports_bad_ports_and_missing_halves_on_the_error_stream() {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let (mut forwards, session) = accept_port_forward(server_io, Duration::from_millis(300))
        .await
        .unwrap();
    let client = Connection::new(client_io, Role::Client);
    let bad_error = within(client.open_stream(pf_headers("error", "http", "7")))
        .await
        .unwrap();
    let _bad_data = within(client.open_stream(pf_headers("data", "http", "7")))
        .await
        .unwrap();
    let message = String::from_utf8(read_all(bad_error).await).unwrap();
    assert!(
        message.contains("unable to parse \"http\" as a port"),
        "{message}"
    );

    let zero = within(client.open_stream(pf_headers("error", "0", "8")))
        .await
        .unwrap();
    let _zero_data = within(client.open_stream(pf_headers("data", "0", "8")))
        .await
        .unwrap();
    let message = String::from_utf8(read_all(zero).await).unwrap();
    assert!(message.contains("must be > 0"), "{message}");

    let lonely = within(client.open_stream(pf_headers("error", "80", "9")))
        .await
        .unwrap();
    let message = String::from_utf8(read_all(lonely).await).unwrap();
    assert!(
        message.contains("timed out waiting for streams"),
        "{message}"
    );

    drop(client);
    assert!(within(forwards.recv()).await.is_none());
    within(session.close()).await;
}

// ---------------------------------------------------------------------------------------------
// the client's HTTP upgrade

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_negotiates_over_tcp_like_client_go() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await.unwrap());
        }
        let head = String::from_utf8(head).unwrap();
        let offered: Vec<&str> = head
            .lines()
            .filter_map(|l| l.strip_prefix("X-Stream-Protocol-Version: "))
            .collect();
        assert!(head.starts_with("POST /exec/token HTTP/1.1\r\n"));
        assert!(head.contains("Upgrade: SPDY/3.1\r\n"));
        let chosen = protocol::negotiate(&offered, protocol::SPDY_REMOTE_COMMAND).unwrap();
        tcp.write_all(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
                 X-Stream-Protocol-Version: {chosen}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let opts = StreamOptions {
            stdin: false,
            stdout: true,
            stderr: false,
            tty: false,
        };
        let (mut cmd, session) = accept_remote_command(tcp, chosen, opts, LONG)
            .await
            .unwrap();
        cmd.stdout
            .take()
            .unwrap()
            .write_all(b"over tcp")
            .await
            .unwrap();
        protocol::write_status(&mut cmd.error, chosen, &Outcome::Success)
            .await
            .unwrap();
        drop(cmd);
        session.close().await;
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (chosen, conn) = within(upgrade(
        tcp,
        &addr.to_string(),
        "/exec/token",
        &[protocol::V5, V4, protocol::V3],
    ))
    .await
    .unwrap();
    assert_eq!(chosen, V4);
    let error = within(conn.open_stream(typed("error"))).await.unwrap();
    let stdout = within(conn.open_stream(typed("stdout"))).await.unwrap();
    assert_eq!(read_all(stdout).await, b"over tcp");
    assert_eq!(
        read_all(error).await,
        protocol::status_bytes(V4, &Outcome::Success)
    );
    within(server).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_session_counts_as_gone_and_traffic_keeps_it_alive() {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(accept_remote_command(server_io, V4, all_stdio(), LONG));
    let client = Connection::new(client_io, Role::Client);
    let (_error, mut stdin, _stdout, _stderr) = within(open_exec_streams(&client)).await;
    let (mut cmd, mut session) = within(server).await.unwrap().unwrap();
    session.set_idle_timeout(Duration::from_millis(300));
    // Traffic every 100 ms for 600 ms: still alive.
    let mut input = cmd.stdin.take().unwrap();
    for _ in 0..6 {
        stdin.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        within(input.read_exact(&mut b)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(50), session.closed())
            .await
            .is_err(),
        "a busy session must not count as idle"
    );
    // Silence: gone within the timeout (plus slack).
    within(session.closed()).await;
    session.close().await;
}
