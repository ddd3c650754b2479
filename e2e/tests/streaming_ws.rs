//! Streaming over WebSocket end to end: `Exec`, `Attach` and `PortForward` URLs from a real
//! berthd, driven with the `v4`/`v5.channel.k8s.io` and `portforward.k8s.io` protocols the
//! way kubectl's WebSocket client speaks them. Needs root (CI runs as root).

use std::time::Duration;

use e2e::containers::env;
use proto::cri::{AttachRequest, ExecRequest, PortForwardRequest};
use streaming::TermSize;
use streaming::protocol::{self, Outcome, V4, V5};
use streaming::websocket::client::{self, ClientSession};
use streaming::websocket::frame::{ERROR, STDERR, STDIN, STDOUT};
use tonic::Code;

fn ws(url: &str) -> String {
    url.replacen("http://", "ws://", 1)
}

async fn connect(url: &str, protocols: &[&str]) -> ClientSession {
    tokio::time::timeout(
        Duration::from_secs(10),
        client::connect(&ws(url), protocols),
    )
    .await
    .expect("connect in time")
    .expect("websocket connect")
}

#[tokio::test]
async fn websocket_exec_pipes_stdin_and_reports_exit_codes() {
    let Some(e) = env().await else { return };
    let (_, id) = e
        .run_container("wsexec", &["/bin/sh", "-c", "exec sleep 3600"], |c| {
            c.stdin = false;
            c.tty = false;
        })
        .await;

    // stdin piped to cat, closed with v5's close signal.
    let url = e.exec_url(&id, &["cat"], true, false).await;
    let mut s = connect(&url, &[V5, V4]).await;
    assert_eq!(s.protocol(), V5);
    s.send(STDIN, b"hello\nworld\n").await.expect("stdin");
    s.send_close_signal(STDIN).await.expect("close stdin");
    let out = tokio::time::timeout(Duration::from_secs(10), s.read_to_close())
        .await
        .expect("session ends")
        .expect("read");
    assert_eq!(out.channel(STDOUT), b"hello\nworld\n");
    assert_eq!(
        out.channel(ERROR),
        protocol::status_bytes(V5, &Outcome::Success)
    );

    // A non-zero exit is a Failure Status with the exit code, byte for byte as kubelet sends it.
    let cmd = ["sh", "-c", "echo out; echo err >&2; exit 7"];
    let url = e.exec_url(&id, &cmd, false, false).await;
    let mut s = connect(&url, &[V4]).await;
    let out = s.read_to_close().await.expect("read");
    assert_eq!(out.channel(STDOUT), b"out\n");
    assert_eq!(out.channel(STDERR), b"err\n");
    let want = protocol::status_bytes(
        V4,
        &Outcome::ExitCode {
            code: 7,
            command: cmd.iter().map(|s| s.to_string()).collect(),
        },
    );
    assert_eq!(
        String::from_utf8_lossy(&out.channel(ERROR)),
        String::from_utf8_lossy(&want)
    );
}

#[tokio::test]
async fn websocket_exec_tty_gets_a_terminal_and_resizes() {
    let Some(e) = env().await else { return };
    let (_, id) = e
        .run_container("wstty", &["/bin/sh", "-c", "exec sleep 3600"], |c| {
            c.stdin = false;
            c.tty = false;
        })
        .await;
    let url = e
        .exec_url(&id, &["sh", "-c", "read go; stty size; exit 3"], true, true)
        .await;
    let mut s = connect(&url, &[V5]).await;
    s.send_resize(TermSize {
        width: 100,
        height: 30,
    })
    .await
    .expect("resize");
    s.send(STDIN, b"go\r").await.expect("stdin");
    let out = tokio::time::timeout(Duration::from_secs(10), s.read_to_close())
        .await
        .expect("session ends")
        .expect("read");
    let stdout = String::from_utf8_lossy(&out.channel(STDOUT)).into_owned();
    assert!(stdout.contains("30 100"), "{stdout:?}");
    assert!(
        out.channel(STDERR).is_empty(),
        "a terminal has no separate stderr"
    );
    let error = String::from_utf8_lossy(&out.channel(ERROR)).into_owned();
    assert!(error.contains("\"ExitCode\",\"message\":\"3\""), "{error}");
}

#[tokio::test]
async fn websocket_attach_fans_out_to_several_clients_and_feeds_stdin() {
    let Some(e) = env().await else { return };
    let script = "while read l; do echo \"got $l\"; done";
    let (_, id) = e
        .run_container("wsatt", &["/bin/sh", "-c", script], |c| {
            c.stdin = true;
            c.tty = false;
        })
        .await;
    let mut watcher = connect(&e.attach_url(&id, false).await, &[V5]).await;
    let mut writer = connect(&e.attach_url(&id, true).await, &[V5]).await;
    // Give both sessions a moment to be registered by the shim before writing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    writer.send(STDIN, b"ping\n").await.expect("stdin");
    for s in [&mut watcher, &mut writer] {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&seen).contains("got ping") {
            let msg = tokio::time::timeout_at(deadline, s.recv())
                .await
                .expect("output in time")
                .expect("recv")
                .expect("open");
            if msg.0 == STDOUT {
                seen.extend_from_slice(&msg.1);
            }
        }
    }
    // The log got it too.
    let log = std::path::Path::new(&e.pod("wsatt").log_directory).join("wsatt/0.log");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("got ping"), "{text}");

    // Attaching with stdin to a container created without stdin is refused clearly.
    let (_, plain) = e
        .run_container("wsplain", &["/bin/sh", "-c", "exec sleep 3600"], |c| {
            c.stdin = false;
            c.tty = false;
        })
        .await;
    let err =
        e.d.runtime()
            .await
            .expect("client")
            .attach(AttachRequest {
                container_id: plain,
                stdin: true,
                tty: false,
                stdout: true,
                stderr: false,
            })
            .await
            .expect_err("no stdin");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
}

#[tokio::test]
async fn websocket_port_forward_reaches_the_pod_and_reports_refused_ports() {
    let Some(e) = env().await else { return };
    let (pod, _) = e.run_web_server("wspf", 8080).await;
    let url = e.port_forward_url(&pod, &[8080, 8081]).await;
    let mut s = connect(&format!("{url}?ports=8080,8081"), &[protocol::PORT_FORWARD]).await;
    s.send(0, b"GET /index.html HTTP/1.0\r\n\r\n")
        .await
        .expect("request");
    let mut data = Vec::new();
    let mut refused = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(String::from_utf8_lossy(&data).contains("hello-from-pod") && refused.len() > 2) {
        let Ok(Ok(Some((channel, bytes)))) = tokio::time::timeout_at(deadline, s.recv()).await
        else {
            break;
        };
        match channel {
            0 => data.extend_from_slice(&bytes),
            3 => refused.extend_from_slice(&bytes),
            _ => {}
        }
    }
    // Each channel starts with its port, little endian.
    assert_eq!(&data[..2], &8080u16.to_le_bytes(), "{data:?}");
    let body = String::from_utf8_lossy(&data[2..]).into_owned();
    assert!(
        body.contains("200 OK") && body.contains("hello-from-pod"),
        "{body}"
    );
    let refused = String::from_utf8_lossy(&refused[2.min(refused.len())..]).into_owned();
    assert!(
        refused.contains("8081") && refused.contains("refused"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn streaming_urls_are_single_use_and_requests_are_validated() {
    let Some(e) = env().await else { return };
    let (_, id) = e
        .run_container("wstok", &["/bin/sh", "-c", "exec sleep 3600"], |c| {
            c.stdin = false;
            c.tty = false;
        })
        .await;
    let url = e.exec_url(&id, &["true"], false, false).await;
    let mut s = connect(&url, &[V5]).await;
    let out = s.read_to_close().await.expect("read");
    assert_eq!(
        out.channel(ERROR),
        protocol::status_bytes(V5, &Outcome::Success)
    );
    let again = client::connect(&ws(&url), &[V5]).await;
    assert!(again.is_err(), "a used token must be refused");
    let (host, path) = url
        .strip_prefix("http://")
        .and_then(|r| r.split_once('/'))
        .expect("http URL");
    let resp = e2e::http::get(host, &format!("/{path}"))
        .await
        .expect("GET");
    assert_eq!(resp.status, 404, "reused token: {}", resp.body_text());
    let resp = e2e::http::get(host, "/exec/not-a-token")
        .await
        .expect("GET");
    assert_eq!(resp.status, 404);

    let mut rt = e.d.runtime().await.expect("client");
    let base = ExecRequest {
        container_id: id.clone(),
        cmd: vec!["true".into()],
        stdout: true,
        ..Default::default()
    };
    let bad = [
        ExecRequest {
            cmd: vec![],
            ..base.clone()
        },
        ExecRequest {
            stdout: false,
            ..base.clone()
        },
        ExecRequest {
            tty: true,
            stderr: true,
            ..base.clone()
        },
    ];
    for req in bad {
        let err = rt.exec(req.clone()).await.expect_err("invalid");
        assert_eq!(err.code(), Code::InvalidArgument, "{req:?}: {err:?}");
    }
    let err = rt
        .exec(ExecRequest {
            container_id: "nope".into(),
            ..base.clone()
        })
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound);
    let err = rt
        .port_forward(PortForwardRequest {
            pod_sandbox_id: "nope".into(),
            port: vec![],
        })
        .await
        .expect_err("unknown pod");
    assert_eq!(err.code(), Code::NotFound);
}

/// A throwaway CA and a server certificate for 127.0.0.1 it signed:
/// (dir, CA cert, server cert, server key).
fn test_certificates() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let dir = tempfile::tempdir().expect("tls dir");
    let p = |name: &str| dir.path().join(name);
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .current_dir(dir.path())
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run openssl (scripts/install-deps.sh installs it)");
        assert!(status.success(), "openssl {args:?} failed");
    };
    std::fs::write(
        p("leaf.ext"),
        "basicConstraints = critical,CA:FALSE\nsubjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth\n",
    )
    .expect("extensions");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=berth-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "leaf.ext",
        "-out",
        "cert.pem",
    ]);
    let (ca, cert, key) = (p("ca.pem"), p("cert.pem"), p("key.pem"));
    (dir, ca, cert, key)
}

#[tokio::test]
async fn streaming_server_speaks_tls_when_configured() {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{self, RootCertStore};

    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: containers need root");
        return;
    }
    let (_tls_dir, ca, cert, key) = test_certificates();
    let extra = format!(
        "[streaming]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let Some(e) = e2e::containers::env_with(&extra).await else {
        return;
    };
    let (_, id) = e
        .run_container("wstls", &["/bin/sh", "-c", "exec sleep 3600"], |c| {
            c.stdin = false;
            c.tty = false;
        })
        .await;
    let url = e.exec_url(&id, &["echo", "over-tls"], false, false).await;
    let rest = url.strip_prefix("https://").expect("an https URL");
    let (authority, path) = rest.split_once('/').expect("path");

    // Plain http on the TLS port gets nowhere.
    let plain = e2e::http::get(authority, "/exec/x").await;
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status != 404));

    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&ca).expect("ca") {
        roots.add(c.expect("cert")).expect("root");
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("wss://{authority}/{path}"),
    )
    .map(|mut r| {
        r.headers_mut()
            .insert("Sec-WebSocket-Protocol", V5.parse().expect("header"));
        r
    })
    .expect("request");
    let (mut ws, _) = tokio_tungstenite::client_async(request, tls)
        .await
        .expect("websocket over TLS");
    let mut stdout = Vec::new();
    use futures_util::StreamExt;
    while let Some(Ok(msg)) = ws.next().await {
        let data = msg.into_data();
        if data.first() == Some(&STDOUT) {
            stdout.extend_from_slice(&data[1..]);
        }
    }
    assert_eq!(stdout, b"over-tls\n");
}

#[tokio::test]
async fn streaming_server_drops_clients_that_never_send_a_request() {
    use tokio::io::AsyncReadExt;
    let Some(e) = env().await else { return };
    let (_, id) = e
        .run_container("wsslow", &["/bin/sh", "-c", "exec sleep 3600"], |c| {
            c.stdin = false;
            c.tty = false;
        })
        .await;
    let url = e.exec_url(&id, &["true"], false, false).await;
    let authority = url
        .strip_prefix("http://")
        .and_then(|r| r.split('/').next())
        .expect("authority")
        .to_string();
    let mut idle = tokio::net::TcpStream::connect(&authority)
        .await
        .expect("connect");
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(20), idle.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(_)) | Ok(Err(_))),
        "the server must hang up on a client that sends nothing"
    );
}
