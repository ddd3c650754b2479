//! The plugin side of NRI, for plugins written in Rust (and berth's tests): connects to a
//! runtime's NRI socket, registers, answers `Configure` with the subscribed events and hands
//! every other call to an [`EventHandler`] as a decoded [`Event`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use proto::nri as api;
use tokio::net::UnixStream;

use crate::transport::{
    BoxFuture, CallError, Handler, Incoming, PLUGIN_SERVICE, Peer, RUNTIME_SERVICE, RpcStatus, code,
};

/// A call from the runtime, decoded.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Event {
    /// The plugin's configuration (answered by the stub with the subscribed events; an error
    /// fails the registration).
    Configure(api::ConfigureRequest),
    Synchronize(api::SynchronizeRequest),
    RunPodSandbox(api::PodSandbox),
    StopPodSandbox(api::PodSandbox),
    RemovePodSandbox(api::PodSandbox),
    CreateContainer(api::PodSandbox, api::Container),
    PostCreateContainer(api::PodSandbox, api::Container),
    StartContainer(api::PodSandbox, api::Container),
    PostStartContainer(api::PodSandbox, api::Container),
    UpdateContainer(api::PodSandbox, api::Container, api::LinuxResources),
    PostUpdateContainer(api::PodSandbox, api::Container),
    StopContainer(api::PodSandbox, api::Container),
    RemoveContainer(api::PodSandbox, api::Container),
    Shutdown,
}

impl Event {
    /// The RPC name.
    pub fn method(&self) -> &'static str {
        match self {
            Event::Configure(_) => "Configure",
            Event::Synchronize(_) => "Synchronize",
            Event::RunPodSandbox(_) => "RunPodSandbox",
            Event::StopPodSandbox(_) => "StopPodSandbox",
            Event::RemovePodSandbox(_) => "RemovePodSandbox",
            Event::CreateContainer(..) => "CreateContainer",
            Event::PostCreateContainer(..) => "PostCreateContainer",
            Event::StartContainer(..) => "StartContainer",
            Event::PostStartContainer(..) => "PostStartContainer",
            Event::UpdateContainer(..) => "UpdateContainer",
            Event::PostUpdateContainer(..) => "PostUpdateContainer",
            Event::StopContainer(..) => "StopContainer",
            Event::RemoveContainer(..) => "RemoveContainer",
            Event::Shutdown => "Shutdown",
        }
    }

    /// The container the event is about, if any.
    pub fn container(&self) -> Option<&api::Container> {
        match self {
            Event::CreateContainer(_, c)
            | Event::PostCreateContainer(_, c)
            | Event::StartContainer(_, c)
            | Event::PostStartContainer(_, c)
            | Event::UpdateContainer(_, c, _)
            | Event::PostUpdateContainer(_, c)
            | Event::StopContainer(_, c)
            | Event::RemoveContainer(_, c) => Some(c),
            _ => None,
        }
    }
}

/// A plugin's answer to an event.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    /// For `CreateContainer`: the adjustments to the new container.
    pub adjust: Option<api::ContainerAdjustment>,
    /// For `Synchronize`, `CreateContainer`, `UpdateContainer`, `StopContainer`: updates to
    /// existing containers.
    pub update: Vec<api::ContainerUpdate>,
}

pub type EventHandler = Arc<dyn Fn(Event) -> BoxFuture<Result<Reply, RpcStatus>> + Send + Sync>;

/// A plugin's live connection to the runtime.
pub struct Stub {
    peer: Arc<Peer>,
}

impl Stub {
    /// Connects to the runtime's NRI socket, registers as `idx-name` subscribed to `events`
    /// (an event mask, see [`crate::event_bit`]), and serves the runtime's calls with
    /// `handler`. Returns once the runtime registered the plugin and synchronized it (from
    /// then on every event the plugin subscribed to reaches it).
    pub async fn connect(
        socket: &Path,
        name: &str,
        idx: &str,
        events: i32,
        handler: EventHandler,
    ) -> Result<Stub, CallError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|_| CallError::Closed)?;
        Stub::over(stream, name, idx, events, handler).await
    }

    /// Like [`Stub::connect`] over a connection the runtime made: a plugin berthd launched
    /// finds it as the fd named by `NRI_PLUGIN_SOCKET` (see [`Stub::launched`]).
    pub async fn over(
        stream: UnixStream,
        name: &str,
        idx: &str,
        events: i32,
        handler: EventHandler,
    ) -> Result<Stub, CallError> {
        let (synced_tx, mut synced) = tokio::sync::watch::channel(false);
        let synced_tx = Arc::new(synced_tx);
        let serve: Handler = Arc::new(move |inc: Incoming| {
            let handler = handler.clone();
            let synced_tx = synced_tx.clone();
            Box::pin(async move {
                let sync = inc.method == "Synchronize";
                let answer = serve_plugin(inc, events, handler).await;
                if sync && answer.is_ok() {
                    synced_tx.send_replace(true);
                }
                answer
            })
        });
        let peer = Peer::plugin_side(stream, serve);
        let req = api::RegisterPluginRequest {
            plugin_name: name.into(),
            plugin_idx: idx.into(),
            nri_version: "v0.12.1".into(),
        };
        peer.call::<_, api::Empty>(
            RUNTIME_SERVICE,
            "RegisterPlugin",
            &req,
            Duration::from_secs(5),
        )
        .await?;
        let wait = Duration::from_secs(30);
        tokio::select! {
            r = tokio::time::timeout(wait, synced.wait_for(|s| *s)) => match r {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Err(CallError::Closed),
                Err(_) => return Err(CallError::Timeout(wait)),
            },
            _ = peer.closed() => return Err(CallError::Closed),
        }
        Ok(Stub { peer })
    }

    /// For a plugin the runtime launched: its connection (fd `NRI_PLUGIN_SOCKET`), name
    /// (`NRI_PLUGIN_NAME`) and index (`NRI_PLUGIN_IDX`) from the environment.
    pub fn launched() -> std::io::Result<(UnixStream, String, String)> {
        use std::os::fd::FromRawFd;
        let var = |k: &str| {
            std::env::var(k).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::NotFound, format!("{k} is not set"))
            })
        };
        let fd: i32 = var(crate::adaptation::PLUGIN_SOCKET_ENV)?
            .parse()
            .map_err(|_| std::io::Error::other("NRI_PLUGIN_SOCKET is not a file descriptor"))?;
        // The fd is checked to be a socket before it is owned.
        let st = nix::sys::stat::fstat(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })
            .map_err(std::io::Error::from)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            return Err(std::io::Error::other("NRI_PLUGIN_SOCKET is not a socket"));
        }
        // SAFETY: the runtime passed this fd to us alone; it is a socket (checked above).
        let std_stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
        std_stream.set_nonblocking(true)?;
        let stream = UnixStream::from_std(std_stream)?;
        Ok((
            stream,
            var(crate::adaptation::PLUGIN_NAME_ENV)?,
            var(crate::adaptation::PLUGIN_IDX_ENV)?,
        ))
    }

    /// Asks the runtime to update containers; returns the updates that failed.
    pub async fn update_containers(
        &self,
        update: Vec<api::ContainerUpdate>,
    ) -> Result<Vec<api::ContainerUpdate>, CallError> {
        let req = api::UpdateContainersRequest {
            update,
            evict: Vec::new(),
        };
        let resp: api::UpdateContainersResponse = self
            .peer
            .call(
                RUNTIME_SERVICE,
                "UpdateContainers",
                &req,
                Duration::from_secs(10),
            )
            .await?;
        Ok(resp.failed)
    }

    /// Disconnects.
    pub fn close(&self) {
        self.peer.close();
    }

    /// Resolves when the runtime closed the connection (or [`Stub::close`] was called).
    pub async fn closed(&self) {
        self.peer.closed().await;
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.peer.close();
    }
}

fn bad(e: prost::DecodeError) -> RpcStatus {
    RpcStatus::new(code::INVALID_ARGUMENT, e.to_string())
}

async fn serve_plugin(
    inc: Incoming,
    events: i32,
    handler: EventHandler,
) -> Result<Vec<u8>, RpcStatus> {
    if inc.service != PLUGIN_SERVICE {
        return Err(RpcStatus::new(
            code::UNIMPLEMENTED,
            format!("service {} not found", inc.service),
        ));
    }
    let p = inc.payload.as_slice();
    let pc = |pod: Option<api::PodSandbox>, ctr: Option<api::Container>| {
        (pod.unwrap_or_default(), ctr.unwrap_or_default())
    };
    let event = match inc.method.as_str() {
        "Configure" => {
            let req = api::ConfigureRequest::decode(p).map_err(bad)?;
            handler(Event::Configure(req)).await?;
            return Ok(api::ConfigureResponse { events }.encode_to_vec());
        }
        "Synchronize" => Event::Synchronize(api::SynchronizeRequest::decode(p).map_err(bad)?),
        "Shutdown" => Event::Shutdown,
        "RunPodSandbox" => {
            let r = api::RunPodSandboxRequest::decode(p).map_err(bad)?;
            Event::RunPodSandbox(r.pod.unwrap_or_default())
        }
        "StopPodSandbox" => {
            let r = api::StopPodSandboxRequest::decode(p).map_err(bad)?;
            Event::StopPodSandbox(r.pod.unwrap_or_default())
        }
        "RemovePodSandbox" => {
            let r = api::RemovePodSandboxRequest::decode(p).map_err(bad)?;
            Event::RemovePodSandbox(r.pod.unwrap_or_default())
        }
        "CreateContainer" => {
            let r = api::CreateContainerRequest::decode(p).map_err(bad)?;
            let (pod, c) = pc(r.pod, r.container);
            Event::CreateContainer(pod, c)
        }
        "PostCreateContainer" => {
            let r = api::PostCreateContainerRequest::decode(p).map_err(bad)?;
            let (pod, c) = pc(r.pod, r.container);
            Event::PostCreateContainer(pod, c)
        }
        "StartContainer" => {
            let r = api::StartContainerRequest::decode(p).map_err(bad)?;
            let (pod, c) = pc(r.pod, r.container);
            Event::StartContainer(pod, c)
        }
        "PostStartContainer" => {
            let r = api::PostStartContainerRequest::decode(p).map_err(bad)?;
            let (pod, c) = pc(r.pod, r.container);
            Event::PostStartContainer(pod, c)
        }
        "UpdateContainer" => {
            let r = api::UpdateContainerRequest::decode(p).map_err(bad)?;
            let (pod, c) = pc(r.pod, r.container);
            Event::UpdateContainer(pod, c, r.linux_resources.unwrap_or_default())
        }
        "PostUpdateContainer" => {
            let r = api::PostUpdateContainerRequest::decode(p).map_err(bad)?;
            let (pod, c) = pc(r.pod, r.container);
            Event::PostUpdateContainer(pod, c)
        }
        "StopContainer" => {
            let r = api::StopContainerRequest::decode(p).map_err(bad)?;
            let (pod, c) = pc(r.pod, r.container);
            Event::StopContainer(pod, c)
        }
        "RemoveContainer" => {
            let r = api::RemoveContainerRequest::decode(p).map_err(bad)?;
            let (pod, c) = pc(r.pod, r.container);
            Event::RemoveContainer(pod, c)
        }
        m => {
            return Err(RpcStatus::new(
                code::UNIMPLEMENTED,
                format!("method {m} not found"),
            ));
        }
    };
    let method = event.method();
    let reply = handler(event).await?;
    Ok(match method {
        "Synchronize" => api::SynchronizeResponse {
            update: reply.update,
            more: false,
        }
        .encode_to_vec(),
        "CreateContainer" => api::CreateContainerResponse {
            adjust: reply.adjust,
            update: reply.update,
            evict: Vec::new(),
        }
        .encode_to_vec(),
        "UpdateContainer" => api::UpdateContainerResponse {
            update: reply.update,
            evict: Vec::new(),
        }
        .encode_to_vec(),
        "StopContainer" => api::StopContainerResponse {
            update: reply.update,
        }
        .encode_to_vec(),
        // Every other response message is empty.
        _ => Vec::new(),
    })
}
