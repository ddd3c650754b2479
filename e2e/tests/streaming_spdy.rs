//! Streaming over SPDY/3.1 end to end, as kubectl, crictl and kubelet's own client speak it:
//! `Exec`, `Attach` and `PortForward` URLs from a real berthd, driven with the project's SPDY
//! client (the same framing module berthd serves with, checked against recorded crictl
//! sessions in the `streaming` crate). Needs root (CI runs as root).

use std::time::Duration;

use e2e::containers::env;
use streaming::protocol::{self, Outcome, PORT_FORWARD, V1, V2, V3, V4, V5};
use streaming::spdy::{self, Connection, Headers, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What client-go offers, newest first.
const CLIENT_PROTOCOLS: [&str; 5] = [V5, V4, V3, V2, V1];

async fn dial(url: &str, protocols: &[&str]) -> (String, Connection) {
    tokio::time::timeout(Duration::from_secs(10), spdy::dial(url, protocols))
        .await
        .expect("dial in time")
        .expect("SPDY upgrade")
}

async fn open(conn: &Connection, headers: &[(&str, &str)]) -> Stream {
    let mut h = Headers::new();
    for (k, v) in headers {
        h.insert(k, v);
    }
    conn.open_stream(h).await.expect("open stream")
}

async fn read_all(s: &mut Stream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out))
        .await
        .expect("stream ends in time")
        .expect("read");
    out
}

#[tokio::test]
async fn spdy_exec_negotiates_v4_pipes_stdin_and_reports_exit_codes() {
    let Some(e) = env().await else { return };
    let (_, id) = e
        .run_container("spexec", &["/bin/sh", "-c", "exec sleep 3600"], |c| {
            c.stdin = false
        })
        .await;

    // printf 'hello\nworld\n' | kubectl exec -i <pod> -- cat
    let url = e.exec_url(&id, &["cat"], true, false).await;
    let (chosen, conn) = dial(&url, &CLIENT_PROTOCOLS).await;
    assert_eq!(chosen, V4, "kubelet's choice for a client offering v5..v1");
    // client-go opens the error stream first, then stdin, stdout, stderr.
    let mut error = open(&conn, &[("streamtype", "error")]).await;
    let mut stdin = open(&conn, &[("streamtype", "stdin")]).await;
    let mut stdout = open(&conn, &[("streamtype", "stdout")]).await;
    let mut stderr = open(&conn, &[("streamtype", "stderr")]).await;
    stdin.write_all(b"hello\nworld\n").await.expect("stdin");
    stdin.shutdown().await.expect("close stdin");
    assert_eq!(read_all(&mut stdout).await, b"hello\nworld\n");
    assert!(read_all(&mut stderr).await.is_empty());
    assert_eq!(
        read_all(&mut error).await,
        protocol::status_bytes(V4, &Outcome::Success)
    );
    conn.close().await;

    // A non-zero exit: the error stream carries kubelet's Status, byte for byte.
    let cmd = ["sh", "-c", "echo out; echo err >&2; exit 7"];
    let url = e.exec_url(&id, &cmd, false, false).await;
    let (_, conn) = dial(&url, &CLIENT_PROTOCOLS).await;
    let mut error = open(&conn, &[("streamtype", "error")]).await;
    let mut stdout = open(&conn, &[("streamtype", "stdout")]).await;
    let mut stderr = open(&conn, &[("streamtype", "stderr")]).await;
    assert_eq!(read_all(&mut stdout).await, b"out\n");
    assert_eq!(read_all(&mut stderr).await, b"err\n");
    let want = protocol::status_bytes(
        V4,
        &Outcome::ExitCode {
            code: 7,
            command: cmd.iter().map(|s| s.to_string()).collect(),
        },
    );
    assert_eq!(
        String::from_utf8_lossy(&read_all(&mut error).await),
        String::from_utf8_lossy(&want)
    );
    conn.close().await;
}

#[tokio::test]
async fn spdy_exec_tty_resizes_the_terminal() {
    let Some(e) = env().await else { return };
    let (_, id) = e
        .run_container("sptty", &["/bin/sh", "-c", "exec sleep 3600"], |c| {
            c.stdin = false
        })
        .await;
    // kubectl exec -it <pod> -- sh -c 'read go; stty size; exit 3' from a 30x100 terminal
    let url = e
        .exec_url(&id, &["sh", "-c", "read go; stty size; exit 3"], true, true)
        .await;
    let (_, conn) = dial(&url, &CLIENT_PROTOCOLS).await;
    let mut error = open(&conn, &[("streamtype", "error")]).await;
    let mut stdin = open(&conn, &[("streamtype", "stdin")]).await;
    let mut stdout = open(&conn, &[("streamtype", "stdout")]).await;
    let mut resize = open(&conn, &[("streamtype", "resize")]).await;
    resize
        .write_all(b"{\"Width\":100,\"Height\":30}\n")
        .await
        .expect("resize");
    // Let the size land before the shell asks for it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stdin.write_all(b"go\r").await.expect("stdin");
    let out = String::from_utf8_lossy(&read_all(&mut stdout).await).into_owned();
    assert!(out.contains("30 100"), "{out:?}");
    let status = String::from_utf8_lossy(&read_all(&mut error).await).into_owned();
    assert!(
        status.contains("\"reason\":\"NonZeroExitCode\""),
        "{status}"
    );
    assert!(status.contains("\"message\":\"3\""), "{status}");
    conn.close().await;
}

#[tokio::test]
async fn spdy_attach_feeds_stdin_and_reads_output() {
    let Some(e) = env().await else { return };
    let (_, id) = e
        .run_container(
            "spatt",
            &["/bin/sh", "-c", "while read l; do echo \"got $l\"; done"],
            |c| c.stdin = true,
        )
        .await;
    let url = e.attach_url(&id, true).await;
    let (_, conn) = dial(&url, &CLIENT_PROTOCOLS).await;
    let _error = open(&conn, &[("streamtype", "error")]).await;
    let mut stdin = open(&conn, &[("streamtype", "stdin")]).await;
    let mut stdout = open(&conn, &[("streamtype", "stdout")]).await;
    let _stderr = open(&conn, &[("streamtype", "stderr")]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stdin.write_all(b"ping\n").await.expect("stdin");
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("got ping") {
        let n = tokio::time::timeout(Duration::from_secs(10), stdout.read(&mut buf))
            .await
            .expect("output in time")
            .expect("read");
        assert!(n > 0, "stdout ended early: {seen:?}");
        seen.extend_from_slice(&buf[..n]);
    }
    conn.close().await;
}

#[tokio::test]
async fn spdy_port_forward_serves_several_connections_and_reports_refused_ports() {
    let Some(e) = env().await else { return };
    let (pod, _) = e.run_web_server("sppf", 8080).await;
    let url = e.port_forward_url(&pod, &[]).await;
    let (chosen, conn) = dial(&url, &[PORT_FORWARD]).await;
    assert_eq!(chosen, PORT_FORWARD);
    // Two connections to the same port in one session, as two curls through kubectl would.
    for request_id in ["0", "1"] {
        let mut error = open(
            &conn,
            &[
                ("streamtype", "error"),
                ("port", "8080"),
                ("requestid", request_id),
            ],
        )
        .await;
        let mut data = open(
            &conn,
            &[
                ("streamtype", "data"),
                ("port", "8080"),
                ("requestid", request_id),
            ],
        )
        .await;
        data.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
            .await
            .expect("request");
        let body = String::from_utf8_lossy(&read_all(&mut data).await).into_owned();
        assert!(
            body.contains("200 OK") && body.contains("hello-from-pod"),
            "{body}"
        );
        assert!(read_all(&mut error).await.is_empty());
    }
    // Nothing listens on 8081: the error stream says so.
    let mut error = open(
        &conn,
        &[
            ("streamtype", "error"),
            ("port", "8081"),
            ("requestid", "2"),
        ],
    )
    .await;
    let _data = open(
        &conn,
        &[("streamtype", "data"), ("port", "8081"), ("requestid", "2")],
    )
    .await;
    let message = String::from_utf8_lossy(&read_all(&mut error).await).into_owned();
    assert!(
        message.contains("error forwarding port 8081") && message.contains("refused"),
        "{message}"
    );
    conn.close().await;
}
