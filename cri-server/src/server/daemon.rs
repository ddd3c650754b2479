//! Running berthd: prepare directories, claim the socket, serve both CRI services until
//! SIGTERM/SIGINT, then drain in-flight calls and remove the socket.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use proto::cri::image_service_server::ImageServiceServer;
use proto::cri::runtime_service_server::RuntimeServiceServer;
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::wrappers::UnixListenerStream;
use tracing::{info, warn};

use crate::config::Config;
use crate::metrics::grpc::GrpcMetricsLayer;
use crate::rpc::image_service::ImageServer;
use crate::rpc::runtime_service::Runtime;
use crate::server::socket::{ClaimedSocket, SocketError};
use crate::state::DaemonState;

/// Largest gRPC message berthd accepts or sends; kubelet uses the same limit.
pub const MAX_MESSAGE_SIZE: usize = 16 << 20;
/// How long in-flight calls may run after a shutdown signal before berthd exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why berthd stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error("{what} {path}: {source}")]
    Dir {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("install signal handlers: {0}")]
    Signals(io::Error),
    #[error("listen on {socket}: {source}")]
    Listen { socket: PathBuf, source: io::Error },
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("NRI socket {socket} (set [nri] socket_path, or enable = false): {source}")]
    Nri { socket: PathBuf, source: io::Error },
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error(transparent)]
    Streaming(#[from] crate::stream::server::StreamServerError),
    #[error(
        "listen on metrics address {address} (set [metrics] address, or \"\" to turn /metrics off): {source}"
    )]
    Metrics {
        address: SocketAddr,
        source: io::Error,
    },
}

/// Serves the CRI on `config.socket` until SIGTERM or SIGINT.
pub async fn serve(config: Config) -> Result<(), DaemonError> {
    prepare_dir(&config.root_dir)?;
    prepare_dir(&config.state_dir)?;
    for dir in private_dirs(&config) {
        prepare_private_dir(&dir)?;
    }
    let mut shutdown = ShutdownSignals::install()?;
    let mut claimed = ClaimedSocket::claim(&config.socket)?;
    let listener = tokio_listener(&mut claimed)?;
    let streaming = crate::stream::server::StreamServer::bind(&config.streaming).await?;
    let metrics_listener = bind_metrics(&config).await?;
    let state = Arc::new(DaemonState::new(config)?);
    state.streams.set_base_url(streaming.base_url().to_string());
    let stream_task = tokio::spawn(streaming.serve(state.clone()));
    crate::server::recovery::reconcile(&state).await;
    crate::lifecycle::exits::recover(&state).await;
    let exit_watcher = tokio::spawn(crate::lifecycle::exits::run(state.clone()));
    if let Some(nri) = &state.nri {
        crate::nri_plugins::start(nri, &state)
            .await
            .map_err(|source| DaemonError::Nri {
                socket: state.config.nri.socket_path.clone(),
                source,
            })?;
    }
    let metrics_server = metrics_listener.map(|l| serve_metrics(l, &state));

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .layer(GrpcMetricsLayer::new(state.metrics.clone()))
        .layer(crate::server::grpc_deadline::DeadlineLayer)
        .add_service(
            RuntimeServiceServer::new(Runtime::new(state.clone()))
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(
            ImageServiceServer::new(ImageServer::new(state.clone()))
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
            let _ = stop_rx.await;
        });
    tokio::pin!(server);
    info!(
        socket = %claimed.path().display(),
        version = env!("CARGO_PKG_VERSION"),
        cgroups = ?state.cgroup_layout,
        "berthd serving the CRI"
    );
    notify_systemd(crate::server::sd_notify::ready(claimed.path()), "READY=1");

    tokio::select! {
        res = &mut server => res?,
        sig = shutdown.next() => {
            info!(signal = sig, "shutting down: no new calls, draining in-flight ones");
            notify_systemd(crate::server::sd_notify::stopping(), "STOPPING=1");
            let _ = stop_tx.send(());
            // Event streams never end by themselves: end them so the drain can finish.
            state.events.close();
            match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
                Ok(res) => res?,
                Err(_) => warn!(grace = ?SHUTDOWN_GRACE, "in-flight calls still running; exiting anyway"),
            }
        }
    }
    // Stopped pods whose veth deletion still runs in the background: let it finish.
    if !state.pod_runtime.settle_network(SHUTDOWN_GRACE).await {
        warn!(grace = ?SHUTDOWN_GRACE, "pod network teardown still running; the next start finishes it");
    }
    stream_task.abort();
    exit_watcher.abort();
    if let Some(task) = metrics_server {
        task.abort();
    }
    drop(claimed);
    info!("berthd stopped");
    Ok(())
}

/// Logs the outcome of a systemd notification; a failed one is logged, never fatal.
fn notify_systemd(result: io::Result<bool>, what: &str) {
    match result {
        Ok(true) => info!(state = what, "notified systemd"),
        Ok(false) => {}
        Err(e) => warn!(state = what, error = %e, "cannot notify systemd (NOTIFY_SOCKET)"),
    }
}

/// Binds `/metrics` unless it is turned off; before anything else is set up, so a taken port
/// fails the start cleanly.
async fn bind_metrics(config: &Config) -> Result<Option<tokio::net::TcpListener>, DaemonError> {
    let Some(address) = config.metrics.address.0 else {
        info!("metrics endpoint turned off ([metrics] address is empty)");
        return Ok(None);
    };
    crate::metrics::http::bind(address)
        .await
        .map(Some)
        .map_err(|source| DaemonError::Metrics { address, source })
}

/// Serves `/metrics` on `listener` in a task; the bound address goes to the log and `Status`.
fn serve_metrics(
    listener: tokio::net::TcpListener,
    state: &Arc<DaemonState>,
) -> tokio::task::JoinHandle<()> {
    match listener.local_addr() {
        Ok(bound) => {
            let _ = state.metrics_address.set(bound);
            info!(address = %bound, "serving Prometheus metrics at http://{bound}/metrics");
        }
        Err(e) => warn!(error = %e, "metrics listener has no local address"),
    }
    tokio::spawn(crate::metrics::http::serve(listener, state.clone()))
}

fn tokio_listener(claimed: &mut ClaimedSocket) -> Result<tokio::net::UnixListener, DaemonError> {
    let socket = claimed.path().to_path_buf();
    let listen_err = |source| DaemonError::Listen {
        socket: socket.clone(),
        source,
    };
    let std_listener = claimed
        .take_listener()
        .ok_or_else(|| listen_err(io::Error::other("listener already taken")))?;
    std_listener.set_nonblocking(true).map_err(listen_err)?;
    tokio::net::UnixListener::from_std(std_listener).map_err(listen_err)
}

/// Directories holding container and image file trees, which only root may enter: a host user
/// must not reach a container's root or writable layer (or an image layer), where a container
/// or an image can plant setuid binaries or device nodes (CVE-2021-41091 class).
fn private_dirs(config: &Config) -> [PathBuf; 3] {
    [
        config.state_dir.join("rootfs"),
        config.root_dir.join("containers"),
        config.root_dir.join("snapshots"),
    ]
}

/// Creates `dir` with mode 0700, or sets 0700 on an existing one (made by an older berthd).
fn prepare_private_dir(dir: &Path) -> Result<(), DaemonError> {
    create_dir(dir, 0o700)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| dir_error(dir, "restrict directory to root", e))
}

/// Creates a state directory (mode 0711) if missing; an existing one is left as it is.
fn prepare_dir(dir: &Path) -> Result<(), DaemonError> {
    create_dir(dir, 0o711)?;
    let meta = fs::metadata(dir).map_err(|e| dir_error(dir, "stat directory", e))?;
    if !meta.is_dir() {
        return Err(dir_error(
            dir,
            "use directory",
            io::Error::other("not a directory"),
        ));
    }
    if meta.permissions().mode() & 0o002 != 0 {
        warn!(dir = %dir.display(), "state directory is world-writable");
    }
    Ok(())
}

/// Creates `dir` and its missing parents with `mode`.
fn create_dir(dir: &Path, mode: u32) -> Result<(), DaemonError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|e| dir_error(dir, "create directory", e))
}

fn dir_error(dir: &Path, what: &'static str, source: io::Error) -> DaemonError {
    DaemonError::Dir {
        what,
        path: dir.into(),
        source,
    }
}

/// SIGTERM and SIGINT, installed before the socket is claimed so no signal is missed.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> Result<ShutdownSignals, DaemonError> {
        Ok(ShutdownSignals {
            term: signal(SignalKind::terminate()).map_err(DaemonError::Signals)?,
            int: signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
