//! Serving a streaming port-forward: each forwarded connection is dialled to
//! `localhost:<port>` inside the pod's network namespace and copied both ways; a connection
//! that cannot be made is reported on that connection's error stream.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use proto::cri::PortForwardRequest;
use streaming::{PortForwardStream, Session};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::debug;

use crate::state::DaemonState;

/// How long a dial inside the pod may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves forwarded connections until the client ends the session.
pub async fn serve(
    state: Arc<DaemonState>,
    req: PortForwardRequest,
    mut streams: mpsc::Receiver<PortForwardStream>,
    session: Session,
) {
    // A pod removed since the URL was minted has no network to dial into: refuse every
    // connection rather than fall back to berthd's own (the host's) network namespace.
    let netns = match crate::lifecycle::record::find_pod(&state, &req.pod_sandbox_id) {
        Ok(pod) => pod.host.netns.clone(),
        Err(status) => {
            refuse_all(&req.pod_sandbox_id, status.message(), streams, session).await;
            return;
        }
    };
    let pod_id = req.pod_sandbox_id.clone();
    let mut conns = tokio::task::JoinSet::new();
    let mut accepting = true;
    // Until the client leaves, or no more connections can come (WebSocket hands over one
    // per port at the start) and the open ones are done.
    while accepting || !conns.is_empty() {
        tokio::select! {
            next = streams.recv(), if accepting => match next {
                Some(stream) => {
                    conns.spawn(forward(pod_id.clone(), netns.clone(), stream));
                }
                None => accepting = false,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            () = session.closed() => break,
        }
    }
    conns.abort_all();
    debug!(pod_id = %pod_id, "port-forward session ended");
    session.close().await;
}

/// Answers each forwarded connection of a session whose pod is gone with `reason` on its
/// error stream, until the client leaves.
async fn refuse_all(
    pod_id: &str,
    reason: &str,
    mut streams: mpsc::Receiver<PortForwardStream>,
    session: Session,
) {
    debug!(pod_id = %pod_id, reason, "port-forward to a pod that is gone");
    loop {
        tokio::select! {
            next = streams.recv() => match next {
                Some(mut s) => {
                    let message = format!(
                        "error forwarding port {} to pod {pod_id}, uid : {reason}",
                        s.port
                    );
                    let _ = s.error.write_all(message.as_bytes()).await;
                    let _ = s.error.shutdown().await;
                    let _ = s.data_out.shutdown().await;
                }
                None => break,
            },
            () = session.closed() => break,
        }
    }
    session.close().await;
}

async fn forward(pod_id: String, netns: Option<PathBuf>, s: PortForwardStream) {
    let PortForwardStream {
        port,
        mut data_in,
        mut data_out,
        mut error,
    } = s;
    let conn = match dial(netns.clone(), port).await {
        Ok(conn) => conn,
        Err(e) => {
            let where_ = netns.map_or("the host network".to_string(), |p| {
                format!("network namespace {}", p.display())
            });
            let message = format!(
                "error forwarding port {port} to pod {pod_id}, uid : failed to connect to localhost:{port} inside {where_}: {e}"
            );
            debug!(pod_id = %pod_id, port, error = %e, "port-forward dial failed");
            let _ = error.write_all(message.as_bytes()).await;
            let _ = error.shutdown().await;
            let _ = data_out.shutdown().await;
            return;
        }
    };
    let (mut pod_r, mut pod_w) = conn.into_split();
    // Client → pod in the background; the connection is over once the pod side ends (as with
    // kubelet and containerd), whether or not the client half-closed.
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut data_in, &mut pod_w).await;
        let _ = pod_w.shutdown().await;
    });
    let _ = tokio::io::copy(&mut pod_r, &mut data_out).await;
    let _ = data_out.shutdown().await;
    let _ = error.shutdown().await;
    upstream.abort();
}

/// Connects to localhost:`port` (IPv4, then IPv6) in `netns` (the host's if None). The socket
/// is made on a throwaway thread that joined the namespace, so no runtime thread ever
/// changes namespace; the socket stays in the namespace it was made in.
async fn dial(netns: Option<PathBuf>, port: u16) -> io::Result<TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-dial".into())
        .spawn(move || {
            let _ = tx.send(dial_blocking(netns, port));
        })?;
    let std = rx
        .await
        .map_err(|_| io::Error::other("dial thread ended without an answer"))??;
    std.set_nonblocking(true)?;
    TcpStream::from_std(std)
}

fn dial_blocking(netns: Option<PathBuf>, port: u16) -> io::Result<std::net::TcpStream> {
    if let Some(path) = netns {
        let ns = std::fs::File::open(&path)?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    }
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match std::net::TcpStream::connect_timeout(&v4, DIAL_TIMEOUT) {
        Ok(s) => Ok(s),
        Err(e4) => {
            let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
            std::net::TcpStream::connect_timeout(&v6, DIAL_TIMEOUT)
                .map_err(|e6| io::Error::new(e4.kind(), format!("IPv4: {e4}, IPv6: {e6}")))
        }
    }
}
