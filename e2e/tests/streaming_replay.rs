//! The recorded crictl sessions (`streaming/tests/fixtures/*.pcap`: crictl 1.36, client-go's
//! SPDY client, against containerd's CRI streaming server) replayed against a real berthd:
//! the client's own bytes — its upgrade request and every frame up to its GOAWAY — are sent
//! to a fresh berth URL, and what berth answers is compared with what containerd answered:
//! the negotiated protocol, a reply for every stream, and the same data on each stream.
//! Needs root (CI runs as root).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use e2e::containers::env;
use streaming::capture::{read_pcap, split_http};
use streaming::spdy::frame::{self, FLAG_FIN, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What one side of a session said.
#[derive(Debug, Default)]
struct Transcript {
    protocol: String,
    replied: BTreeSet<u32>,
    data: BTreeMap<u32, Vec<u8>>,
    finished: BTreeSet<u32>,
}

impl Transcript {
    fn add(&mut self, f: &Frame) {
        match f {
            Frame::SynReply { stream_id, .. } => {
                self.replied.insert(*stream_id);
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                self.data
                    .entry(*stream_id)
                    .or_default()
                    .extend_from_slice(data);
                if flags & FLAG_FIN != 0 {
                    self.finished.insert(*stream_id);
                }
            }
            Frame::RstStream { stream_id, .. } => {
                self.finished.insert(*stream_id);
            }
            _ => {}
        }
    }

    fn text(&self, stream: u32) -> String {
        String::from_utf8_lossy(self.data.get(&stream).map_or(&[][..], |d| d)).into_owned()
    }
}

fn protocol_of(head: &str) -> String {
    head.lines()
        .find_map(|l| l.strip_prefix("X-Stream-Protocol-Version: "))
        .unwrap_or_default()
        .to_string()
}

/// The recorded session: the client's request head and frames (up to its GOAWAY), and what
/// containerd answered.
fn recorded(name: &str) -> (String, Vec<u8>, Transcript) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../streaming/tests/fixtures")
        .join(format!("{name}.pcap"));
    let pcap = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let capture = read_pcap(&pcap).expect("capture");
    let (head, mut rest) = split_http(&capture.client).expect("client head");
    let mut frames = Vec::new();
    while let Ok(Some((f, used))) = frame::decode(rest) {
        if matches!(f, Frame::GoAway { .. }) {
            break;
        }
        frames.extend_from_slice(&rest[..used]);
        rest = &rest[used..];
    }
    let (server_head, mut server) = split_http(&capture.server).expect("server head");
    let mut theirs = Transcript {
        protocol: protocol_of(server_head),
        ..Default::default()
    };
    while let Ok(Some((f, used))) = frame::decode(server) {
        theirs.add(&f);
        server = &server[used..];
    }
    (head.to_string(), frames, theirs)
}

/// Sends the recorded client bytes to `url` and collects berth's answer until `done` holds
/// (or 15 s pass).
async fn replay(
    url: &str,
    head: &str,
    frames: &[u8],
    done: impl Fn(&Transcript) -> bool,
) -> Transcript {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (authority, path) = rest.split_once('/').expect("path");
    // The recorded head with our path and host; everything else as crictl sent it.
    let mut request = String::new();
    for (i, line) in head.split("\r\n").enumerate() {
        if i == 0 {
            request.push_str(&format!("POST /{path} HTTP/1.1\r\n"));
        } else if line.starts_with("Host: ") {
            request.push_str(&format!("Host: {authority}\r\n"));
        } else if !line.is_empty() {
            request.push_str(line);
            request.push_str("\r\n");
        }
    }
    request.push_str("\r\n");
    let mut conn = TcpStream::connect(authority).await.expect("connect");
    conn.write_all(request.as_bytes()).await.expect("request");
    conn.write_all(frames).await.expect("frames");
    let mut bytes = Vec::new();
    let mut ours = Transcript::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 16 * 1024];
    let mut head_len = None;
    loop {
        let n = match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        bytes.extend_from_slice(&buf[..n]);
        if head_len.is_none()
            && let Some((h, _)) = split_http(&bytes)
        {
            ours.protocol = protocol_of(h);
            head_len = Some(h.len());
        }
        let Some(start) = head_len else { continue };
        let mut at = start;
        let mut t = Transcript {
            protocol: ours.protocol.clone(),
            ..Default::default()
        };
        while let Ok(Some((f, used))) = frame::decode(&bytes[at..]) {
            t.add(&f);
            at += used;
        }
        ours = t;
        if done(&ours) {
            break;
        }
    }
    ours
}

/// Same protocol, a reply for every stream containerd replied to, same data on `streams`.
fn assert_same(ours: &Transcript, theirs: &Transcript, streams: &[u32]) {
    assert_eq!(ours.protocol, theirs.protocol);
    assert!(
        theirs.replied.is_subset(&ours.replied),
        "replies: ours {:?}, containerd's {:?}",
        ours.replied,
        theirs.replied
    );
    for s in streams {
        assert_eq!(ours.text(*s), theirs.text(*s), "stream {s}");
    }
}

#[tokio::test]
async fn recorded_exec_sessions_get_the_answers_containerd_gave() {
    let Some(e) = env().await else { return };
    let (_, id) = e
        .run_container("replay", &["/bin/sh", "-c", "exec sleep 3600"], |c| {
            c.stdin = false
        })
        .await;

    // printf 'hello\nworld\n' | crictl exec -i <web> cat
    let (head, frames, theirs) = recorded("exec-spdy-stdin");
    let url = e.exec_url(&id, &["cat"], true, false).await;
    let ours = replay(&url, &head, &frames, |t| t.finished.contains(&1)).await;
    assert_same(&ours, &theirs, &[1, 5, 7]);
    assert_eq!(ours.text(5), "hello\nworld\n");

    // crictl exec <web> sh -c 'echo out; echo err >&2; exit 7'
    let (head, frames, theirs) = recorded("exec-spdy-exitcode");
    let cmd = ["sh", "-c", "echo out; echo err >&2; exit 7"];
    let url = e.exec_url(&id, &cmd, false, false).await;
    let ours = replay(&url, &head, &frames, |t| t.finished.contains(&1)).await;
    assert_same(&ours, &theirs, &[1, 3, 5]);
    assert!(ours.text(1).contains("NonZeroExitCode"), "{}", ours.text(1));

    // crictl exec -it <web> sh -c 'stty size; exit 3' from a 30x100 terminal
    let (head, frames, theirs) = recorded("exec-spdy-tty");
    let url = e
        .exec_url(&id, &["sh", "-c", "stty size; exit 3"], true, true)
        .await;
    let ours = replay(&url, &head, &frames, |t| t.finished.contains(&1)).await;
    assert_same(&ours, &theirs, &[1, 5]);
    assert_eq!(ours.text(5), "30 100\r\n");
}

#[tokio::test]
async fn recorded_attach_and_port_forward_sessions_get_the_answers_containerd_gave() {
    let Some(e) = env().await else { return };
    // (echo ping; sleep 1) | crictl attach -i <att>
    let (_, att) = e
        .run_container(
            "att",
            &["/bin/sh", "-c", "while read l; do echo \"got $l\"; done"],
            |c| c.stdin = true,
        )
        .await;
    let (head, frames, theirs) = recorded("attach-spdy");
    let url = e.attach_url(&att, true).await;
    let ours = replay(&url, &head, &frames, |t| t.text(5).contains("got ping")).await;
    assert_eq!(ours.protocol, theirs.protocol);
    assert_eq!(ours.text(5), theirs.text(5));

    // crictl port-forward <pod> 18080:80, then curl 127.0.0.1:18080/index.html
    let (pod, _) = e.run_web_server("web", 80).await;
    let (head, frames, theirs) = recorded("portforward-spdy");
    let url = e.port_forward_url(&pod, &[80]).await;
    let data_stream = *theirs
        .data
        .keys()
        .find(|s| String::from_utf8_lossy(&theirs.data[s]).contains("hello-from-pod"))
        .expect("containerd's data stream");
    let ours = replay(&url, &head, &frames, |t| t.finished.contains(&data_stream)).await;
    assert_eq!(ours.protocol, theirs.protocol);
    assert!(theirs.replied.is_subset(&ours.replied), "{ours:?}");
    // Same response apart from the dates busybox httpd puts in it.
    let strip = |s: String| {
        s.lines()
            .filter(|l| {
                !l.starts_with("Date:")
                    && !l.starts_with("Last-Modified:")
                    && !l.starts_with("ETag:")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        strip(ours.text(data_stream)),
        strip(theirs.text(data_stream))
    );
}
