//! The WebSocket transport end to end over loopback TCP: the test server upgrades with hyper
//! the way berthd does (negotiate, 101 with `Sec-WebSocket-Accept`, hand over the upgraded
//! connection), the client is `streaming::websocket::client`.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use streaming::protocol::{BASE64_V4, Outcome, V1, V4, V5, status_bytes, write_status};
use streaming::websocket::client::{self, ClientSession};
use streaming::websocket::frame::{ERROR, STDERR, STDIN, STDOUT};
use streaming::websocket::{self, Config};
use streaming::{StreamError, StreamOptions, TermSize};

/// Bounds every test so a hang fails instead of blocking the suite.
const GUARD: Duration = Duration::from_secs(30);

type Negotiate = fn(&[&str]) -> Option<&'static str>;

/// An upgraded connection as berthd's HTTP layer hands it over.
struct Upgrade {
    io: TokioIo<Upgraded>,
    protocol: &'static str,
    query: String,
}

/// Serves one HTTP connection on loopback; returns the `ws://` URL (with `path_and_query`)
/// and where the upgraded connection arrives.
async fn server(
    negotiate: Negotiate,
    path_and_query: &str,
) -> (String, oneshot::Receiver<Upgrade>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    let tx = Arc::new(Mutex::new(Some(tx)));
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let service = service_fn(move |req| {
            let tx = tx.clone();
            async move { Ok::<_, Infallible>(upgrade(req, negotiate, tx)) }
        });
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades()
            .await;
    });
    (format!("ws://{addr}{path_and_query}"), rx)
}

fn upgrade(
    req: Request<Incoming>,
    negotiate: Negotiate,
    tx: Arc<Mutex<Option<oneshot::Sender<Upgrade>>>>,
) -> Response<Empty<Bytes>> {
    let offered: Vec<&str> = req
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let Some(protocol) = negotiate(&offered) else {
        let mut refused = Response::new(Empty::new());
        *refused.status_mut() = StatusCode::FORBIDDEN;
        return refused;
    };
    let key = req
        .headers()
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    tokio::spawn(async move {
        let upgraded = hyper::upgrade::on(req).await.unwrap();
        let upgrade = Upgrade {
            io: TokioIo::new(upgraded),
            protocol,
            query,
        };
        if let Some(tx) = tx.lock().unwrap().take() {
            let _ = tx.send(upgrade);
        }
    });
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Accept", websocket::accept_key(&key));
    if !protocol.is_empty() {
        response = response.header("Sec-WebSocket-Protocol", protocol);
    }
    response.body(Empty::new()).unwrap()
}

fn all_streams() -> StreamOptions {
    StreamOptions {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    }
}

async fn guarded<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(GUARD, fut).await.expect("test hung")
}

#[tokio::test]
async fn exec_v4_carries_stdin_stdout_stderr_resize_and_status() {
    let (url, upgraded) = server(websocket::negotiate_remote_command, "/exec/token").await;
    let outcome = Outcome::ExitCode {
        code: 7,
        command: vec!["sh".into()],
    };
    let server_outcome = outcome.clone();
    let server = tokio::spawn(async move {
        let up = upgraded.await.unwrap();
        let opts = StreamOptions {
            tty: true,
            ..all_streams()
        };
        let (mut cmd, session) = websocket::accept_remote_command(up.io, up.protocol, opts)
            .await
            .unwrap();
        assert_eq!(cmd.protocol, V4);
        let mut stdin = cmd.stdin.take().unwrap();
        let mut line = [0u8; 6];
        stdin.read_exact(&mut line).await.unwrap();
        let mut stdout = cmd.stdout.take().unwrap();
        stdout.write_all(b"out:").await.unwrap();
        stdout.write_all(&line).await.unwrap();
        cmd.stderr
            .take()
            .unwrap()
            .write_all(b"err\n")
            .await
            .unwrap();
        let size = cmd.resize.as_mut().unwrap().recv().await;
        write_status(&mut cmd.error, &cmd.protocol, &server_outcome)
            .await
            .unwrap();
        session.close().await;
        size
    });

    let mut client = client::connect(&url, &[V4, V1]).await.unwrap();
    assert_eq!(client.protocol(), V4);
    // kubelet's "connection established" notice: an empty message on stdout.
    assert_eq!(client.recv().await.unwrap(), Some((STDOUT, Bytes::new())));
    client.send(STDIN, b"hello\n").await.unwrap();
    client
        .send_resize(TermSize {
            width: 100,
            height: 30,
        })
        .await
        .unwrap();
    let output = guarded(client.read_to_close()).await.unwrap();

    assert_eq!(output.channel(STDOUT), b"out:hello\n");
    assert_eq!(output.channel(STDERR), b"err\n");
    assert_eq!(output.channel(ERROR), status_bytes(V4, &outcome));
    assert_eq!(output.close_code, Some(1000));
    assert_eq!(
        guarded(server).await.unwrap(),
        Some(TermSize {
            width: 100,
            height: 30
        })
    );
}

#[tokio::test]
async fn v5_close_signal_gives_stdin_eof() {
    let (url, upgraded) = server(websocket::negotiate_remote_command, "/exec/token").await;
    let server = tokio::spawn(async move {
        let up = upgraded.await.unwrap();
        let (mut cmd, session) =
            websocket::accept_remote_command(up.io, up.protocol, all_streams())
                .await
                .unwrap();
        let mut input = Vec::new();
        cmd.stdin
            .take()
            .unwrap()
            .read_to_end(&mut input)
            .await
            .unwrap();
        cmd.stdout.take().unwrap().write_all(&input).await.unwrap();
        write_status(&mut cmd.error, &cmd.protocol, &Outcome::Success)
            .await
            .unwrap();
        session.close().await;
    });

    let mut client = client::connect(&url, &[V5, V4]).await.unwrap();
    assert_eq!(client.protocol(), V5);
    client.send(STDIN, b"abc").await.unwrap();
    client.send(STDIN, b"def").await.unwrap();
    client.send_close_signal(STDIN).await.unwrap();
    let output = guarded(client.read_to_close()).await.unwrap();

    assert_eq!(output.channel(STDOUT), b"abcdef");
    assert_eq!(
        output.channel(ERROR),
        br#"{"metadata":{},"status":"Success"}"#
    );
    assert_eq!(output.close_code, Some(1000));
    guarded(server).await.unwrap();
}

#[tokio::test]
async fn v4_has_no_close_signal_so_stdin_ends_only_at_disconnect() {
    let (url, upgraded) = server(websocket::negotiate_remote_command, "/exec/token").await;
    let server = tokio::spawn(async move {
        let up = upgraded.await.unwrap();
        let (mut cmd, session) =
            websocket::accept_remote_command(up.io, up.protocol, all_streams())
                .await
                .unwrap();
        let mut stdin = cmd.stdin.take().unwrap();
        // [255, 0] is no signal on v4, just a message for channel 255, which nobody reads:
        // stdin stays open and the data after it arrives.
        let mut got = [0u8; 7];
        stdin.read_exact(&mut got).await.unwrap();
        let mut stdout = cmd.stdout.take().unwrap();
        stdout.write_all(b"got:").await.unwrap();
        stdout.write_all(&got).await.unwrap();
        let mut rest = Vec::new();
        stdin.read_to_end(&mut rest).await.unwrap();
        session.close().await;
        rest
    });

    let mut client = client::connect(&url, &[V4]).await.unwrap();
    client.send(STDIN, b"one").await.unwrap();
    client.send_close_signal(STDIN).await.unwrap();
    client.send(STDIN, b"more").await.unwrap();
    let mut stdout = Vec::new();
    while stdout.len() < b"got:onemore".len() {
        let (channel, data) = guarded(client.recv()).await.unwrap().unwrap();
        if channel == STDOUT {
            stdout.extend_from_slice(&data);
        }
    }
    assert_eq!(stdout, b"got:onemore");
    // Vanish without a close frame: only now does the server's stdin end.
    drop(client);
    assert!(guarded(server).await.unwrap().is_empty());
}

#[tokio::test]
async fn base64_protocol_round_trips_as_text_messages() {
    let (url, upgraded) = server(websocket::negotiate_remote_command, "/exec/token").await;
    let server = tokio::spawn(async move {
        let up = upgraded.await.unwrap();
        let (mut cmd, session) =
            websocket::accept_remote_command(up.io, up.protocol, all_streams())
                .await
                .unwrap();
        let mut input = [0u8; 10];
        cmd.stdin
            .take()
            .unwrap()
            .read_exact(&mut input)
            .await
            .unwrap();
        cmd.stdout.take().unwrap().write_all(&input).await.unwrap();
        write_status(&mut cmd.error, &cmd.protocol, &Outcome::Success)
            .await
            .unwrap();
        session.close().await;
    });

    let client = client::connect(&url, &[BASE64_V4]).await.unwrap();
    assert_eq!(client.protocol(), BASE64_V4);
    let (mut tx, mut rx) = client.into_split();
    assert_eq!(rx.recv_raw().await.unwrap(), Some(Message::text("1")));
    tx.send(STDIN, b"hello").await.unwrap();
    // The same framing written by hand: '0' then base64("world").
    tx.send_raw(Message::text("0d29ybGQ=")).await.unwrap();
    assert_eq!(
        guarded(rx.recv_raw()).await.unwrap(),
        Some(Message::text("1aGVsbG93b3JsZA=="))
    );
    let rest = guarded(rx.read_to_close()).await.unwrap();
    assert_eq!(
        rest.channel(ERROR),
        br#"{"metadata":{},"status":"Success"}"#
    );
    assert_eq!(rest.close_code, Some(1000));
    guarded(server).await.unwrap();
}

#[tokio::test]
async fn no_subprotocol_is_served_as_v1_binary_with_bare_error_text() {
    let (url, upgraded) = server(websocket::negotiate_remote_command, "/attach/token").await;
    let server = tokio::spawn(async move {
        let up = upgraded.await.unwrap();
        let opts = StreamOptions {
            stderr: true,
            ..StreamOptions::default()
        };
        let (mut cmd, session) = websocket::accept_remote_command(up.io, up.protocol, opts)
            .await
            .unwrap();
        assert_eq!(cmd.protocol, "");
        assert!(cmd.stdin.is_none() && cmd.stdout.is_none() && cmd.resize.is_none());
        write_status(
            &mut cmd.error,
            &cmd.protocol,
            &Outcome::Error("boom".into()),
        )
        .await
        .unwrap();
        session.close().await;
    });

    let mut client = client::connect(&url, &[]).await.unwrap();
    assert_eq!(client.protocol(), "");
    let output = guarded(client.read_to_close()).await.unwrap();
    // Without stdout, the notice goes to stderr, the lowest channel the server writes.
    assert_eq!(output.messages[0], (STDERR, Bytes::new()));
    assert_eq!(output.channel(ERROR), b"boom");
    assert_eq!(output.close_code, Some(1000));
    guarded(server).await.unwrap();
}

#[tokio::test]
async fn unserved_protocol_is_refused_at_upgrade_and_at_accept() {
    let (url, _upgraded) = server(websocket::negotiate_remote_command, "/exec/token").await;
    let refused = client::connect(&url, &["v9.channel.k8s.io"]).await;
    assert!(
        refused.is_err(),
        "upgrade with an unserved protocol must fail"
    );

    let (io, _peer) = tokio::io::duplex(64);
    let accepted = websocket::accept_remote_command(io, "v9.channel.k8s.io", all_streams()).await;
    assert!(matches!(accepted, Err(StreamError::Protocol(_))));
}

#[tokio::test]
async fn port_forward_two_ports_carries_data_and_errors() {
    let (url, upgraded) = server(
        websocket::negotiate_port_forward,
        "/portforward/token?port=80,8080",
    )
    .await;
    let server = tokio::spawn(async move {
        let up = upgraded.await.unwrap();
        let ports = websocket::parse_ports(&up.query).unwrap();
        let (mut streams, session) = websocket::accept_port_forward(up.io, up.protocol, ports)
            .await
            .unwrap();
        let mut web = streams.recv().await.unwrap();
        let mut alt = streams.recv().await.unwrap();
        assert!(streams.recv().await.is_none());
        assert_eq!((web.port, alt.port), (80, 8080));
        let mut ping = [0u8; 4];
        web.data_in.read_exact(&mut ping).await.unwrap();
        assert_eq!(&ping, b"ping");
        web.data_out.write_all(b"pong").await.unwrap();
        alt.error.write_all(b"dial refused").await.unwrap();
        session.close().await;
    });

    let mut client = client::connect(&url, &[V4]).await.unwrap();
    assert_eq!(client.protocol(), V4);
    // Each channel opens with its port, little-endian: data then error, port by port.
    for (channel, prefix) in [
        (0u8, [80u8, 0]),
        (1, [80, 0]),
        (2, [0x90, 0x1f]),
        (3, [0x90, 0x1f]),
    ] {
        assert_eq!(
            guarded(client.recv()).await.unwrap(),
            Some((channel, Bytes::copy_from_slice(&prefix)))
        );
    }
    client.send(0, b"ping").await.unwrap();
    let output = guarded(client.read_to_close()).await.unwrap();
    assert_eq!(output.channel(0), b"pong");
    assert_eq!(output.channel(3), b"dial refused");
    assert_eq!(output.close_code, Some(1000));
    guarded(server).await.unwrap();
}

#[tokio::test]
async fn vanished_client_gives_stdin_eof_and_failing_output() {
    let (url, upgraded) = server(websocket::negotiate_remote_command, "/exec/token").await;
    let server = tokio::spawn(async move {
        let up = upgraded.await.unwrap();
        let (mut cmd, session) =
            websocket::accept_remote_command(up.io, up.protocol, all_streams())
                .await
                .unwrap();
        let mut input = Vec::new();
        cmd.stdin
            .take()
            .unwrap()
            .read_to_end(&mut input)
            .await
            .unwrap();
        // The client is gone: output must fail rather than queue or block forever.
        let mut stdout = cmd.stdout.take().unwrap();
        let chunk = vec![b'x'; 16 * 1024];
        let failed = loop {
            if let Err(err) = stdout.write_all(&chunk).await {
                break err;
            }
        };
        session.close().await;
        (input, failed.kind())
    });

    let mut client = client::connect(&url, &[V5]).await.unwrap();
    client.send(STDIN, b"partial").await.unwrap();
    assert_eq!(client.recv().await.unwrap(), Some((STDOUT, Bytes::new())));
    drop(client);

    let (input, kind) = guarded(server).await.unwrap();
    assert_eq!(input, b"partial");
    assert_eq!(kind, std::io::ErrorKind::BrokenPipe);
}

#[tokio::test]
async fn malformed_v5_close_signal_ends_the_session() {
    let (url, upgraded) = server(websocket::negotiate_remote_command, "/exec/token").await;
    let server = tokio::spawn(async move {
        let up = upgraded.await.unwrap();
        let (mut cmd, _session) =
            websocket::accept_remote_command(up.io, up.protocol, all_streams())
                .await
                .unwrap();
        let mut input = Vec::new();
        cmd.stdin
            .take()
            .unwrap()
            .read_to_end(&mut input)
            .await
            .unwrap();
        input
    });

    let client = client::connect(&url, &[V5]).await.unwrap();
    let (mut tx, mut rx) = client.into_split();
    tx.send(STDIN, b"a").await.unwrap();
    tx.send_raw(Message::binary(vec![255u8, 0, 0]))
        .await
        .unwrap();
    assert_eq!(guarded(server).await.unwrap(), b"a");
    // The server dropped the connection: the client's reads end.
    let _ = guarded(rx.read_to_close()).await;
}

#[tokio::test]
async fn idle_session_ends_after_the_idle_timeout() {
    let (url, upgraded) = server(websocket::negotiate_remote_command, "/exec/token").await;
    let server = tokio::spawn(async move {
        let up = upgraded.await.unwrap();
        let config = Config {
            idle_timeout: Duration::from_millis(300),
            ..Config::default()
        };
        let (mut cmd, session) =
            websocket::accept_remote_command_with(up.io, up.protocol, all_streams(), config)
                .await
                .unwrap();
        let mut input = Vec::new();
        cmd.stdin
            .take()
            .unwrap()
            .read_to_end(&mut input)
            .await
            .unwrap();
        session.close().await;
        input
    });

    let mut client: ClientSession = client::connect(&url, &[V5]).await.unwrap();
    assert_eq!(client.recv().await.unwrap(), Some((STDOUT, Bytes::new())));
    // Say nothing: the server gives up, stdin ends and the connection goes away.
    assert!(guarded(server).await.unwrap().is_empty());
    let _ = guarded(client.read_to_close()).await;
}

#[tokio::test]
async fn pings_are_answered_with_pongs() {
    let (url, upgraded) = server(websocket::negotiate_remote_command, "/exec/token").await;
    let server = tokio::spawn(async move {
        let up = upgraded.await.unwrap();
        let (mut cmd, session) =
            websocket::accept_remote_command(up.io, up.protocol, all_streams())
                .await
                .unwrap();
        let mut input = Vec::new();
        cmd.stdin
            .take()
            .unwrap()
            .read_to_end(&mut input)
            .await
            .unwrap();
        session.close().await;
    });

    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", V5.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws.send(Message::Ping(Bytes::from_static(b"hb")))
        .await
        .unwrap();
    loop {
        match guarded(ws.next()).await.unwrap().unwrap() {
            Message::Pong(data) => {
                assert_eq!(data, Bytes::from_static(b"hb"));
                break;
            }
            Message::Binary(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    ws.send(Message::binary(vec![255u8, STDIN])).await.unwrap();
    // Read on until the server's close frame, which the client answers.
    while let Some(Ok(_)) = guarded(ws.next()).await {}
    guarded(server).await.unwrap();
}

#[tokio::test]
async fn session_closed_resolves_when_the_client_leaves() {
    let (url, upgraded) = server(websocket::negotiate_remote_command, "/attach/token").await;
    let (ready_tx, ready_rx) = oneshot::channel();
    let server = tokio::spawn(async move {
        let up = upgraded.await.unwrap();
        let opts = StreamOptions {
            stdout: true,
            ..StreamOptions::default()
        };
        let (_cmd, session) = websocket::accept_remote_command(up.io, up.protocol, opts)
            .await
            .unwrap();
        let _ = ready_tx.send(());
        // An attach with no output and no stdin notices the client leaving only this way.
        session.closed().await;
        session.close().await;
    });

    let mut client = client::connect(&url, &[V5]).await.unwrap();
    assert_eq!(client.recv().await.unwrap(), Some((STDOUT, Bytes::new())));
    ready_rx.await.unwrap();
    drop(client);
    guarded(server).await.unwrap();
}
