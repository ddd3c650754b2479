//! The streaming server: the HTTP endpoint behind the URLs `Exec`, `Attach` and
//! `PortForward` return. `POST|GET /{exec,attach,portforward}/<token>` upgrades to SPDY/3.1
//! (what kubelet, kubectl and crictl speak by default) or WebSocket, then the session is
//! served by `stream_exec`, `stream_attach` or `stream_port_forward`.
//!
//! Hardening: unknown, expired or reused tokens get 404 before any upgrade; request headers
//! must arrive within [`HEADER_TIMEOUT`] and fit [`MAX_HEADER_BYTES`]; request bodies are
//! refused; at most [`MAX_SESSIONS`] sessions run at once (503 beyond); TLS when configured.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_LENGTH, HeaderValue, UPGRADE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use streaming::protocol::{self, PORT_FORWARD, SPDY_REMOTE_COMMAND};
use streaming::{StreamOptions, websocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::config::StreamingConfig;
use crate::state::DaemonState;
use crate::state::stream_tokens::StreamRequest;
use crate::stream::{attach, exec, port_forward};

/// How long a client may take to send the request headers (and the TLS handshake).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head accepted.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Sessions served at once.
pub const MAX_SESSIONS: usize = 512;
/// How long a SPDY client may take to open the streams of its session.
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A bound streaming listener, not yet serving.
pub struct StreamServer {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    base_url: String,
    idle_timeout: Duration,
}

/// Why the streaming server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StreamServerError {
    #[error("listen on {address} (streaming.address): {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("streaming TLS ({what}): {reason}")]
    Tls { what: String, reason: String },
}

impl StreamServer {
    /// Binds the configured address and loads the TLS certificate if there is one.
    pub async fn bind(config: &StreamingConfig) -> Result<StreamServer, StreamServerError> {
        let tls = load_tls(config)?;
        let listener = TcpListener::bind(config.address).await.map_err(|source| {
            StreamServerError::Listen {
                address: config.address,
                source,
            }
        })?;
        let mut local = listener
            .local_addr()
            .map_err(|source| StreamServerError::Listen {
                address: config.address,
                source,
            })?;
        if local.ip().is_unspecified() {
            warn!(address = %local, "streaming server listens on every address; URLs name 127.0.0.1");
            local.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        Ok(StreamServer {
            listener,
            tls,
            base_url: format!("{scheme}://{local}"),
            idle_timeout: Duration::from_secs(config.idle_timeout_seconds),
        })
    }

    /// The URL prefix of every streaming URL, e.g. `http://127.0.0.1:40215`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Serves until the task is aborted.
    pub async fn serve(self, state: Arc<DaemonState>) {
        info!(url = %self.base_url, "streaming server listening");
        let shared = Arc::new(Shared {
            state,
            sessions: Semaphore::new(MAX_SESSIONS),
            idle_timeout: self.idle_timeout,
        });
        loop {
            let (conn, peer) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "streaming accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let shared = shared.clone();
            let tls = self.tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(tls) => match tokio::time::timeout(HEADER_TIMEOUT, tls.accept(conn)).await
                    {
                        Ok(Ok(conn)) => serve_connection(conn, shared).await,
                        Ok(Err(e)) => debug!(%peer, error = %e, "streaming TLS handshake failed"),
                        Err(_) => debug!(%peer, "streaming TLS handshake timed out"),
                    },
                    None => serve_connection(conn, shared).await,
                }
            });
        }
    }
}

struct Shared {
    state: Arc<DaemonState>,
    sessions: Semaphore,
    idle_timeout: Duration,
}

async fn serve_connection<S>(conn: S, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let service = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(route(req, shared)) }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        // Header names as Go servers (kubelet, containerd) write them: `X-Stream-Protocol-Version`.
        .title_case_headers(true)
        .serve_connection(TokioIo::new(conn), service)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        debug!(error = %e, "streaming connection");
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.into())));
    *resp.status_mut() = status;
    resp
}

/// Answers one request: an error, or `101 Switching Protocols` with the session started.
fn route(req: Request<Incoming>, shared: Arc<Shared>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST");
    }
    let mut parts = req.uri().path().trim_start_matches('/').splitn(2, '/');
    let (kind, token) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !matches!(kind, "exec" | "attach" | "portforward") || token.is_empty() {
        return text(StatusCode::NOT_FOUND, "not found");
    }
    let has_body = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() != "0");
    if has_body {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "streaming requests carry no body",
        );
    }
    let Some(stream_req) = shared.state.streams.redeem(kind, token) else {
        return text(
            StatusCode::NOT_FOUND,
            "unknown, expired or already used streaming token",
        );
    };
    let Ok(permit) = shared.sessions.try_acquire() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many streaming sessions",
        );
    };
    permit.forget();
    let resp = match upgrade_kind(&req) {
        Some(Upgrade::Spdy) => upgrade_spdy(req, stream_req, shared.clone()),
        Some(Upgrade::WebSocket) => upgrade_websocket(req, stream_req, shared.clone()),
        None => text(
            StatusCode::BAD_REQUEST,
            "upgrade to SPDY/3.1 or websocket required",
        ),
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        shared.sessions.add_permits(1);
    }
    resp
}

enum Upgrade {
    Spdy,
    WebSocket,
}

fn upgrade_kind(req: &Request<Incoming>) -> Option<Upgrade> {
    let upgrade = req
        .headers()
        .get(UPGRADE)?
        .to_str()
        .ok()?
        .to_ascii_lowercase();
    match upgrade.as_str() {
        "spdy/3.1" => Some(Upgrade::Spdy),
        "websocket" => Some(Upgrade::WebSocket),
        _ => None,
    }
}

fn header_values<'a>(req: &'a Request<Incoming>, name: &str) -> Vec<&'a str> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

fn stream_options(req: &StreamRequest) -> StreamOptions {
    match req {
        StreamRequest::Exec(r) => StreamOptions {
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            tty: r.tty,
        },
        StreamRequest::Attach(r) => StreamOptions {
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            tty: r.tty,
        },
        StreamRequest::PortForward(_) => StreamOptions::default(),
    }
}

fn switching(upgrade: &'static str) -> Response<Full<Bytes>> {
    let mut resp = text(StatusCode::SWITCHING_PROTOCOLS, "");
    let h = resp.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static(upgrade));
    resp
}

fn upgrade_spdy(
    mut req: Request<Incoming>,
    stream_req: StreamRequest,
    shared: Arc<Shared>,
) -> Response<Full<Bytes>> {
    let offered = header_values(&req, "x-stream-protocol-version");
    let supported: &[&'static str] = match stream_req {
        StreamRequest::PortForward(_) => &[PORT_FORWARD],
        _ => SPDY_REMOTE_COMMAND,
    };
    // A client that names no protocol gets the oldest one, as kubelet does.
    let chosen = if offered.is_empty() {
        supported[supported.len() - 1]
    } else {
        match protocol::negotiate(&offered, supported) {
            Some(p) => p,
            None => {
                return text(
                    StatusCode::FORBIDDEN,
                    format!(
                        "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}"
                    ),
                );
            }
        }
    };
    let mut resp = switching("SPDY/3.1");
    resp.headers_mut().insert(
        "X-Stream-Protocol-Version",
        HeaderValue::from_static(chosen),
    );
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = match on_upgrade.await {
            Ok(up) => TokioIo::new(up),
            Err(e) => {
                debug!(error = %e, "SPDY upgrade failed");
                shared.sessions.add_permits(1);
                return;
            }
        };
        run_spdy(io, chosen, stream_req, &shared).await;
        shared.sessions.add_permits(1);
    });
    resp
}

async fn run_spdy(
    io: TokioIo<hyper::upgrade::Upgraded>,
    chosen: &'static str,
    stream_req: StreamRequest,
    shared: &Shared,
) {
    let state = shared.state.clone();
    let opts = stream_options(&stream_req);
    match stream_req {
        StreamRequest::PortForward(r) => {
            match streaming::spdy::accept_port_forward(io, STREAM_CREATION_TIMEOUT).await {
                Ok((streams, session)) => port_forward::serve(state, r, streams, session).await,
                Err(e) => debug!(error = %e, "SPDY port-forward session"),
            }
        }
        StreamRequest::Exec(r) => {
            match streaming::spdy::accept_remote_command(io, chosen, opts, STREAM_CREATION_TIMEOUT)
                .await
            {
                Ok((rc, mut session)) => {
                    session.set_idle_timeout(shared.idle_timeout);
                    exec::serve(state, r, rc, session).await
                }
                Err(e) => debug!(error = %e, "SPDY exec session"),
            }
        }
        StreamRequest::Attach(r) => {
            match streaming::spdy::accept_remote_command(io, chosen, opts, STREAM_CREATION_TIMEOUT)
                .await
            {
                Ok((rc, mut session)) => {
                    session.set_idle_timeout(shared.idle_timeout);
                    attach::serve(state, r, rc, session).await
                }
                Err(e) => debug!(error = %e, "SPDY attach session"),
            }
        }
    }
}

fn upgrade_websocket(
    mut req: Request<Incoming>,
    stream_req: StreamRequest,
    shared: Arc<Shared>,
) -> Response<Full<Bytes>> {
    let Some(key) = req
        .headers()
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
    else {
        return text(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is required");
    };
    let accept = websocket::accept_key(key);
    let offered = header_values(&req, "sec-websocket-protocol");
    let (chosen, ports) = match &stream_req {
        StreamRequest::PortForward(r) => {
            let ports = match ports_for(&req, r) {
                Ok(p) => p,
                Err(e) => return text(StatusCode::BAD_REQUEST, e),
            };
            (websocket::negotiate_port_forward(&offered), ports)
        }
        _ => (websocket::negotiate_remote_command(&offered), Vec::new()),
    };
    let Some(chosen) = chosen else {
        return text(
            StatusCode::FORBIDDEN,
            format!("unable to upgrade: no supported subprotocol in {offered:?}"),
        );
    };
    let mut resp = switching("websocket");
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert("Sec-WebSocket-Accept", v);
    }
    if !chosen.is_empty() {
        h.insert("Sec-WebSocket-Protocol", HeaderValue::from_static(chosen));
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = match on_upgrade.await {
            Ok(up) => TokioIo::new(up),
            Err(e) => {
                debug!(error = %e, "websocket upgrade failed");
                shared.sessions.add_permits(1);
                return;
            }
        };
        run_websocket(io, chosen, ports, stream_req, &shared).await;
        shared.sessions.add_permits(1);
    });
    resp
}

/// Ports of a WebSocket port-forward: the URL's `port`/`ports` query (kubelet's and the API
/// server's), else the CRI request's.
fn ports_for(
    req: &Request<Incoming>,
    r: &proto::cri::PortForwardRequest,
) -> Result<Vec<u16>, String> {
    let query = req.uri().query().unwrap_or("");
    if query
        .split('&')
        .any(|kv| kv.starts_with("ports=") || kv.starts_with("port="))
    {
        return websocket::parse_ports(query);
    }
    let ports: Vec<u16> = r
        .port
        .iter()
        .filter_map(|p| u16::try_from(*p).ok())
        .collect();
    if ports.is_empty() {
        return Err("port-forward over websocket needs ports (the `ports` query parameter)".into());
    }
    Ok(ports)
}

async fn run_websocket(
    io: TokioIo<hyper::upgrade::Upgraded>,
    chosen: &'static str,
    ports: Vec<u16>,
    stream_req: StreamRequest,
    shared: &Shared,
) {
    let state = shared.state.clone();
    let opts = stream_options(&stream_req);
    let config = websocket::Config {
        idle_timeout: shared.idle_timeout,
        ..Default::default()
    };
    match stream_req {
        StreamRequest::PortForward(r) => {
            match websocket::accept_port_forward_with(io, chosen, ports, config).await {
                Ok((streams, session)) => port_forward::serve(state, r, streams, session).await,
                Err(e) => debug!(error = %e, "websocket port-forward session"),
            }
        }
        StreamRequest::Exec(r) => {
            match websocket::accept_remote_command_with(io, chosen, opts, config).await {
                Ok((rc, session)) => exec::serve(state, r, rc, session).await,
                Err(e) => debug!(error = %e, "websocket exec session"),
            }
        }
        StreamRequest::Attach(r) => {
            match websocket::accept_remote_command_with(io, chosen, opts, config).await {
                Ok((rc, session)) => attach::serve(state, r, rc, session).await,
                Err(e) => debug!(error = %e, "websocket attach session"),
            }
        }
    }
}

/// The TLS acceptor for the configured certificate, if any.
fn load_tls(config: &StreamingConfig) -> Result<Option<TlsAcceptor>, StreamServerError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    if config.tls_cert_file.as_os_str().is_empty() {
        return Ok(None);
    }
    let err = |what: &std::path::Path, reason: String| StreamServerError::Tls {
        what: what.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(&config.tls_cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| err(&config.tls_cert_file, e.to_string()))?;
    if certs.is_empty() {
        return Err(err(
            &config.tls_cert_file,
            "no certificate in the file".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&config.tls_key_file)
        .map_err(|e| err(&config.tls_key_file, e.to_string()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let server = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(&config.tls_cert_file, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| err(&config.tls_key_file, e.to_string()))?;
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}
