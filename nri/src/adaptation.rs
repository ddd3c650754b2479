//! The runtime side of NRI: accepts plugins on the NRI socket (and launches pre-installed
//! ones), registers, configures and synchronizes them, and relays pod and container
//! lifecycle events to them in index order.
//!
//! Ordering with Synchronize: every event a runtime call relays, and the runtime state change
//! it belongs to, happen under [`Nri::guard`] (a shared lock); a joining plugin's
//! synchronization takes the lock exclusively, from the snapshot of pods and containers it is
//! sent until it is in the plugin list. So a pod or container is either in a plugin's
//! Synchronize set or its events reach the plugin afterwards; none is lost.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use proto::nri as api;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::transport::{
    BoxFuture, CallError, Handler, Incoming, PLUGIN_SERVICE, Peer, RUNTIME_SERVICE, RpcStatus, code,
};

/// Environment a launched plugin finds its name, index and socket fd in (as containerd).
pub const PLUGIN_NAME_ENV: &str = "NRI_PLUGIN_NAME";
pub const PLUGIN_IDX_ENV: &str = "NRI_PLUGIN_IDX";
pub const PLUGIN_SOCKET_ENV: &str = "NRI_PLUGIN_SOCKET";

/// How the runtime side runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where external plugins connect; unused with `disable_connections`.
    pub socket_path: PathBuf,
    /// Pre-installed plugins (`NN-name` executables) launched at start.
    pub plugin_path: PathBuf,
    /// Their configs (`NN-name.conf` or `name.conf`).
    pub plugin_config_path: PathBuf,
    pub registration_timeout: Duration,
    pub request_timeout: Duration,
    /// Do not listen for external plugins.
    pub disable_connections: bool,
    pub runtime_name: String,
    pub runtime_version: String,
}

/// What NRI needs from the runtime: its current pods and containers, and applying the
/// updates plugins ask for.
pub trait RuntimeState: Send + Sync {
    fn snapshot(&self) -> (Vec<api::PodSandbox>, Vec<api::Container>);
    /// Applies updates; returns those that failed.
    fn update_containers(
        &self,
        updates: Vec<api::ContainerUpdate>,
    ) -> BoxFuture<Vec<api::ContainerUpdate>>;
}

/// Why a relayed event failed.
#[derive(Debug, thiserror::Error)]
pub enum NriError {
    #[error("NRI plugin {plugin}: {method} failed: {message}")]
    Plugin {
        plugin: String,
        method: &'static str,
        message: String,
    },
    #[error("NRI plugin {plugin}: {method} timed out after {timeout:?}; the plugin was dropped")]
    Timeout {
        plugin: String,
        method: &'static str,
        timeout: Duration,
    },
}

/// Bit of `event` in a subscription mask (containerd/nri `EventMask`).
pub fn event_bit(event: api::Event) -> i32 {
    1 << (event as i32 - 1)
}

/// Every event a plugin can subscribe to.
pub fn valid_events() -> i32 {
    (1 << (api::Event::Last as i32 - 1)) - 1
}

struct Plugin {
    name: String,
    idx: String,
    events: i32,
    peer: Arc<Peer>,
    child: Mutex<Option<tokio::process::Child>>,
}

impl Plugin {
    fn full_name(&self) -> String {
        format!("{}-{}", self.idx, self.name)
    }

    fn subscribed(&self, event: api::Event) -> bool {
        self.events & event_bit(event) != 0
    }

    fn close(&self) {
        self.peer.close();
        if let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = child.start_kill();
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
        }
    }
}

/// The NRI runtime side.
pub struct Nri {
    cfg: Config,
    plugins: RwLock<Vec<Arc<Plugin>>>,
    sync: tokio::sync::RwLock<()>,
    state: std::sync::OnceLock<Arc<dyn RuntimeState>>,
}

impl Nri {
    pub fn new(cfg: Config) -> Arc<Nri> {
        Arc::new(Nri {
            cfg,
            plugins: RwLock::new(Vec::new()),
            sync: tokio::sync::RwLock::new(()),
            state: std::sync::OnceLock::new(),
        })
    }

    /// Listens on the NRI socket (unless connections are disabled) and launches the
    /// pre-installed plugins; `state` answers Synchronize and applies plugins' updates.
    pub async fn start(self: &Arc<Self>, state: Arc<dyn RuntimeState>) -> std::io::Result<()> {
        let _ = self.state.set(state);
        if !self.cfg.disable_connections {
            let listener = bind(&self.cfg.socket_path)?;
            info!(socket = %self.cfg.socket_path.display(), "NRI: accepting plugins");
            let me = Arc::downgrade(self);
            tokio::spawn(accept_loop(me, listener));
        }
        self.launch_preinstalled().await;
        Ok(())
    }

    /// Held by a runtime call from before it relays its first event until its state change
    /// is recorded (see the module docs).
    pub async fn guard(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.sync.read().await
    }

    /// Names (`NN-name`) of the registered plugins, in call order.
    pub fn plugin_names(&self) -> Vec<String> {
        self.plugin_list().iter().map(|p| p.full_name()).collect()
    }

    pub async fn run_pod_sandbox(&self, pod: &api::PodSandbox) -> Result<(), NriError> {
        let req = api::RunPodSandboxRequest {
            pod: Some(pod.clone()),
        };
        self.relay::<_, api::RunPodSandboxResponse>(
            api::Event::RunPodSandbox,
            "RunPodSandbox",
            &req,
        )
        .await
        .map(drop)
    }

    pub async fn stop_pod_sandbox(&self, pod: &api::PodSandbox) -> Result<(), NriError> {
        let req = api::StopPodSandboxRequest {
            pod: Some(pod.clone()),
        };
        self.relay::<_, api::StopPodSandboxResponse>(
            api::Event::StopPodSandbox,
            "StopPodSandbox",
            &req,
        )
        .await
        .map(drop)
    }

    pub async fn remove_pod_sandbox(&self, pod: &api::PodSandbox) -> Result<(), NriError> {
        let req = api::RemovePodSandboxRequest {
            pod: Some(pod.clone()),
        };
        self.relay::<_, api::RemovePodSandboxResponse>(
            api::Event::RemovePodSandbox,
            "RemovePodSandbox",
            &req,
        )
        .await
        .map(drop)
    }

    /// Asks every subscribed plugin, in order, for adjustments to a container being created;
    /// each plugin's adjustments, in order, and the updates to other containers they asked for.
    pub async fn create_container(
        &self,
        pod: &api::PodSandbox,
        ctr: &api::Container,
    ) -> Result<
        (
            Vec<(String, api::ContainerAdjustment)>,
            Vec<api::ContainerUpdate>,
        ),
        NriError,
    > {
        let req = api::CreateContainerRequest {
            pod: Some(pod.clone()),
            container: Some(ctr.clone()),
        };
        let answers = self
            .relay::<_, api::CreateContainerResponse>(
                api::Event::CreateContainer,
                "CreateContainer",
                &req,
            )
            .await?;
        let mut adjust = Vec::new();
        let mut updates = Vec::new();
        for (plugin, resp) in answers {
            if let Some(a) = resp.adjust {
                adjust.push((plugin, a));
            }
            updates.extend(resp.update);
        }
        Ok((adjust, updates))
    }

    pub async fn post_create_container(
        &self,
        pod: &api::PodSandbox,
        ctr: &api::Container,
    ) -> Result<(), NriError> {
        let req = api::PostCreateContainerRequest {
            pod: Some(pod.clone()),
            container: Some(ctr.clone()),
        };
        self.relay::<_, api::PostCreateContainerResponse>(
            api::Event::PostCreateContainer,
            "PostCreateContainer",
            &req,
        )
        .await
        .map(drop)
    }

    pub async fn start_container(
        &self,
        pod: &api::PodSandbox,
        ctr: &api::Container,
    ) -> Result<(), NriError> {
        let req = api::StartContainerRequest {
            pod: Some(pod.clone()),
            container: Some(ctr.clone()),
        };
        self.relay::<_, api::StartContainerResponse>(
            api::Event::StartContainer,
            "StartContainer",
            &req,
        )
        .await
        .map(drop)
    }

    pub async fn post_start_container(
        &self,
        pod: &api::PodSandbox,
        ctr: &api::Container,
    ) -> Result<(), NriError> {
        let req = api::PostStartContainerRequest {
            pod: Some(pod.clone()),
            container: Some(ctr.clone()),
        };
        self.relay::<_, api::PostStartContainerResponse>(
            api::Event::PostStartContainer,
            "PostStartContainer",
            &req,
        )
        .await
        .map(drop)
    }

    /// Relays a resource update; the updates plugins ask for (to this or other containers).
    pub async fn update_container(
        &self,
        pod: &api::PodSandbox,
        ctr: &api::Container,
        resources: &api::LinuxResources,
    ) -> Result<Vec<api::ContainerUpdate>, NriError> {
        let req = api::UpdateContainerRequest {
            pod: Some(pod.clone()),
            container: Some(ctr.clone()),
            linux_resources: Some(resources.clone()),
        };
        let answers = self
            .relay::<_, api::UpdateContainerResponse>(
                api::Event::UpdateContainer,
                "UpdateContainer",
                &req,
            )
            .await?;
        Ok(answers.into_iter().flat_map(|(_, r)| r.update).collect())
    }

    pub async fn post_update_container(
        &self,
        pod: &api::PodSandbox,
        ctr: &api::Container,
    ) -> Result<(), NriError> {
        let req = api::PostUpdateContainerRequest {
            pod: Some(pod.clone()),
            container: Some(ctr.clone()),
        };
        self.relay::<_, api::PostUpdateContainerResponse>(
            api::Event::PostUpdateContainer,
            "PostUpdateContainer",
            &req,
        )
        .await
        .map(drop)
    }

    /// Relays a container stop; the updates plugins ask for (to other containers).
    pub async fn stop_container(
        &self,
        pod: &api::PodSandbox,
        ctr: &api::Container,
    ) -> Result<Vec<api::ContainerUpdate>, NriError> {
        let req = api::StopContainerRequest {
            pod: Some(pod.clone()),
            container: Some(ctr.clone()),
        };
        let answers = self
            .relay::<_, api::StopContainerResponse>(
                api::Event::StopContainer,
                "StopContainer",
                &req,
            )
            .await?;
        Ok(answers.into_iter().flat_map(|(_, r)| r.update).collect())
    }

    pub async fn remove_container(
        &self,
        pod: &api::PodSandbox,
        ctr: &api::Container,
    ) -> Result<(), NriError> {
        let req = api::RemoveContainerRequest {
            pod: Some(pod.clone()),
            container: Some(ctr.clone()),
        };
        self.relay::<_, api::RemoveContainerResponse>(
            api::Event::RemoveContainer,
            "RemoveContainer",
            &req,
        )
        .await
        .map(drop)
    }

    /// Applies updates plugins asked for in an event's answer; failures are logged.
    pub async fn apply_updates(&self, updates: Vec<api::ContainerUpdate>) {
        if updates.is_empty() {
            return;
        }
        if let Some(state) = self.state.get() {
            for failed in state.update_containers(updates).await {
                warn!(container_id = %failed.container_id, "NRI: a plugin's container update failed");
            }
        }
    }

    fn plugin_list(&self) -> Vec<Arc<Plugin>> {
        self.plugins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn drop_plugin(&self, plugin: &Arc<Plugin>, why: &str) {
        plugin.close();
        let mut list = self.plugins.write().unwrap_or_else(|p| p.into_inner());
        let before = list.len();
        list.retain(|p| !Arc::ptr_eq(p, plugin));
        if list.len() != before {
            info!(plugin = %plugin.full_name(), why, "NRI: plugin dropped");
        }
    }

    /// Calls `method` on every plugin subscribed to `event`, in order. A plugin whose
    /// connection is gone is dropped and skipped; one that answers with an error fails the
    /// event; one that does not answer in time is dropped and fails the event.
    async fn relay<Req: prost::Message, Resp: prost::Message + Default>(
        &self,
        event: api::Event,
        method: &'static str,
        req: &Req,
    ) -> Result<Vec<(String, Resp)>, NriError> {
        let mut out = Vec::new();
        for plugin in self.plugin_list() {
            if !plugin.subscribed(event) {
                continue;
            }
            let timeout = self.cfg.request_timeout;
            match plugin
                .peer
                .call::<Req, Resp>(PLUGIN_SERVICE, method, req, timeout)
                .await
            {
                Ok(resp) => out.push((plugin.full_name(), resp)),
                Err(CallError::Closed) => self.drop_plugin(&plugin, "connection closed"),
                Err(CallError::Timeout(timeout)) => {
                    self.drop_plugin(&plugin, "request timed out");
                    return Err(NriError::Timeout {
                        plugin: plugin.full_name(),
                        method,
                        timeout,
                    });
                }
                Err(e) => {
                    return Err(NriError::Plugin {
                        plugin: plugin.full_name(),
                        method,
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(out)
    }

    async fn launch_preinstalled(self: &Arc<Self>) {
        let dir = &self.cfg.plugin_path;
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for file in names {
            let Some((idx, base)) = split_plugin_file(&file) else {
                warn!(file, dir = %dir.display(), "NRI: ignoring plugin file not named NN-name");
                continue;
            };
            if let Err(e) = self.launch(dir, &file, idx, base).await {
                warn!(plugin = file, error = %e, "NRI: pre-installed plugin failed to start");
            }
        }
    }

    async fn launch(
        self: &Arc<Self>,
        dir: &Path,
        file: &str,
        idx: &str,
        base: &str,
    ) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let config = plugin_config(&self.cfg.plugin_config_path, idx, base)?;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let theirs_fd = theirs.as_raw_fd();
        let mut cmd = tokio::process::Command::new(dir.join(file));
        cmd.env_clear()
            .env(PLUGIN_NAME_ENV, base)
            .env(PLUGIN_IDX_ENV, idx)
            .env(PLUGIN_SOCKET_ENV, "3")
            .kill_on_drop(true);
        // SAFETY: only async-signal-safe calls (dup2) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(theirs_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(theirs);
        ours.set_nonblocking(true)?;
        let stream = UnixStream::from_std(ours)?;
        let nri = self.clone();
        let name = format!("{idx}-{base}");
        tokio::spawn(async move {
            if let Err(e) = nri.register(stream, Some(config), Some(child)).await {
                warn!(plugin = name, error = %e, "NRI: pre-installed plugin did not register");
            }
        });
        Ok(())
    }

    /// Registers, configures and synchronizes a plugin connected on `stream`.
    async fn register(
        self: Arc<Self>,
        stream: UnixStream,
        config: Option<String>,
        child: Option<tokio::process::Child>,
    ) -> Result<(), String> {
        let (reg_tx, reg_rx) = oneshot::channel::<(String, String)>();
        let reg_tx = Arc::new(Mutex::new(Some(reg_tx)));
        let weak = Arc::downgrade(&self);
        let handler: Handler = Arc::new(move |inc: Incoming| {
            let reg_tx = reg_tx.clone();
            let weak = weak.clone();
            Box::pin(serve_runtime(inc, reg_tx, weak))
        });
        let peer = Peer::runtime_side(stream, handler);
        let fail = |peer: &Peer, child: Option<tokio::process::Child>, why: String| {
            peer.close();
            if let Some(mut c) = child {
                let _ = c.start_kill();
            }
            Err(why)
        };
        let registered = tokio::select! {
            r = reg_rx => r.ok(),
            _ = tokio::time::sleep(self.cfg.registration_timeout) => None,
            _ = peer.closed() => None,
        };
        let Some((name, idx)) = registered else {
            return fail(&peer, child, "no registration in time".into());
        };
        let config = config.unwrap_or_default();
        let creq = api::ConfigureRequest {
            config,
            runtime_name: self.cfg.runtime_name.clone(),
            runtime_version: self.cfg.runtime_version.clone(),
            registration_timeout: self.cfg.registration_timeout.as_millis() as i64,
            request_timeout: self.cfg.request_timeout.as_millis() as i64,
            nri_version: "v0.12.1".into(),
        };
        let events = match peer
            .call::<_, api::ConfigureResponse>(
                PLUGIN_SERVICE,
                "Configure",
                &creq,
                self.cfg.request_timeout,
            )
            .await
        {
            Ok(r) if r.events & !valid_events() != 0 => {
                return fail(&peer, child, format!("invalid events 0x{:x}", r.events));
            }
            Ok(r) if r.events == 0 => valid_events(),
            Ok(r) => r.events,
            Err(e) => return fail(&peer, child, format!("Configure: {e}")),
        };
        let plugin = Arc::new(Plugin {
            name,
            idx,
            events,
            peer: peer.clone(),
            child: Mutex::new(child),
        });
        {
            // Exclusive: no event is relayed, and no pod or container created, between the
            // snapshot and the plugin joining the list.
            let _sync = self.sync.write().await;
            let (pods, containers) = match self.state.get() {
                Some(s) => s.snapshot(),
                None => (Vec::new(), Vec::new()),
            };
            let sreq = api::SynchronizeRequest {
                pods,
                containers,
                more: false,
            };
            // Synchronize is the last step of registration: it gets the registration timeout.
            let timeout = self.cfg.registration_timeout.max(self.cfg.request_timeout);
            match peer
                .call::<_, api::SynchronizeResponse>(PLUGIN_SERVICE, "Synchronize", &sreq, timeout)
                .await
            {
                Ok(r) => {
                    if !r.update.is_empty()
                        && let Some(state) = self.state.get()
                    {
                        for failed in state.update_containers(r.update).await {
                            warn!(plugin = %plugin.full_name(), container_id = %failed.container_id, "NRI: synchronize update failed");
                        }
                    }
                }
                Err(e) => {
                    plugin.close();
                    return Err(format!("Synchronize: {e}"));
                }
            }
            let mut list = self.plugins.write().unwrap_or_else(|p| p.into_inner());
            list.push(plugin.clone());
            list.sort_by(|a, b| (&a.idx, &a.name).cmp(&(&b.idx, &b.name)));
        }
        info!(plugin = %plugin.full_name(), events = format!("0x{events:x}"), "NRI: plugin registered");
        let weak = Arc::downgrade(&self);
        tokio::spawn(async move {
            plugin.peer.closed().await;
            if let Some(nri) = weak.upgrade() {
                nri.drop_plugin(&plugin, "connection closed");
            }
        });
        Ok(())
    }
}

/// `NN-name` → (`NN`, `name`).
pub fn split_plugin_file(file: &str) -> Option<(&str, &str)> {
    let (idx, base) = file.split_once('-')?;
    (valid_index(idx) && !base.is_empty()).then_some((idx, base))
}

/// A plugin index is two decimal digits.
pub fn valid_index(idx: &str) -> bool {
    idx.len() == 2 && idx.bytes().all(|b| b.is_ascii_digit())
}

fn plugin_config(dir: &Path, idx: &str, base: &str) -> std::io::Result<String> {
    for name in [format!("{idx}-{base}.conf"), format!("{base}.conf")] {
        match std::fs::read_to_string(dir.join(&name)) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(String::new())
}

type RegSender = Arc<Mutex<Option<oneshot::Sender<(String, String)>>>>;

/// The `Runtime` service a plugin calls.
async fn serve_runtime(
    inc: Incoming,
    reg_tx: RegSender,
    nri: Weak<Nri>,
) -> Result<Vec<u8>, RpcStatus> {
    use prost::Message;
    if inc.service != RUNTIME_SERVICE {
        return Err(RpcStatus::new(
            code::UNIMPLEMENTED,
            format!("service {} not found", inc.service),
        ));
    }
    match inc.method.as_str() {
        "RegisterPlugin" => {
            let req = api::RegisterPluginRequest::decode(inc.payload.as_slice())
                .map_err(|e| RpcStatus::new(code::INVALID_ARGUMENT, e.to_string()))?;
            if req.plugin_name.is_empty() {
                return Err(RpcStatus::new(
                    code::INVALID_ARGUMENT,
                    "invalid plugin name: empty",
                ));
            }
            if !valid_index(&req.plugin_idx) {
                return Err(RpcStatus::new(
                    code::INVALID_ARGUMENT,
                    format!(
                        "invalid plugin index {:?}: must be two digits",
                        req.plugin_idx
                    ),
                ));
            }
            let tx = reg_tx.lock().unwrap_or_else(|p| p.into_inner()).take();
            match tx {
                Some(tx) => {
                    let _ = tx.send((req.plugin_name, req.plugin_idx));
                    Ok(api::Empty {}.encode_to_vec())
                }
                None => Err(RpcStatus::new(
                    code::INVALID_ARGUMENT,
                    "plugin already registered",
                )),
            }
        }
        "UpdateContainers" => {
            let req = api::UpdateContainersRequest::decode(inc.payload.as_slice())
                .map_err(|e| RpcStatus::new(code::INVALID_ARGUMENT, e.to_string()))?;
            let Some(nri) = nri.upgrade() else {
                return Err(RpcStatus::new(code::INTERNAL, "runtime shutting down"));
            };
            let failed = match nri.state.get() {
                Some(state) => state.update_containers(req.update).await,
                None => req.update,
            };
            Ok(api::UpdateContainersResponse { failed }.encode_to_vec())
        }
        m => Err(RpcStatus::new(
            code::UNIMPLEMENTED,
            format!("method {m} not found"),
        )),
    }
}

async fn accept_loop(nri: Weak<Nri>, listener: UnixListener) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!(error = %e, "NRI: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(me) = nri.upgrade() else { return };
        tokio::spawn(async move {
            if let Err(e) = me.register(stream, None, None).await {
                warn!(error = %e, "NRI: external plugin did not register");
            }
        });
    }
}

/// Binds the NRI socket (mode 0700 directory, 0600 socket: plugins run as root), replacing a
/// stale socket file left by an earlier run.
fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is served by another process", path.display()),
            ));
        }
        Err(_) => {
            let _ = std::fs::remove_file(path);
        }
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

impl Drop for Nri {
    fn drop(&mut self) {
        for p in self.plugin_list() {
            p.peer.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use super::*;
    use crate::plugin::{Event, EventHandler, Reply, Stub};

    struct NoState;

    impl RuntimeState for NoState {
        fn snapshot(&self) -> (Vec<api::PodSandbox>, Vec<api::Container>) {
            (
                vec![api::PodSandbox {
                    id: "existing".into(),
                    ..Default::default()
                }],
                Vec::new(),
            )
        }

        fn update_containers(
            &self,
            updates: Vec<api::ContainerUpdate>,
        ) -> BoxFuture<Vec<api::ContainerUpdate>> {
            Box::pin(async move { updates })
        }
    }

    fn config(dir: &Path) -> Config {
        Config {
            socket_path: dir.join("nri.sock"),
            plugin_path: dir.join("plugins"),
            plugin_config_path: dir.join("conf"),
            registration_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(2),
            disable_connections: false,
            runtime_name: "berth".into(),
            runtime_version: "test".into(),
        }
    }

    #[test]
    fn event_masks_and_plugin_file_names_follow_containerd() {
        assert_eq!(event_bit(api::Event::RunPodSandbox), 1);
        assert_eq!(event_bit(api::Event::CreateContainer), 1 << 3);
        assert_eq!(valid_events(), (1 << 14) - 1);
        assert_eq!(split_plugin_file("10-topology"), Some(("10", "topology")));
        assert_eq!(split_plugin_file("10-a-b"), Some(("10", "a-b")));
        for bad in ["topology", "1-x", "100-x", "ab-x", "10-"] {
            assert_eq!(split_plugin_file(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn plugins_register_synchronize_get_events_in_index_order_and_drop_on_close() {
        let dir = tempfile::tempdir().expect("dir");
        let nri = Nri::new(config(dir.path()));
        nri.start(Arc::new(NoState)).await.expect("start");
        let sock = dir.path().join("nri.sock");
        let order: Arc<StdMutex<Vec<String>>> = Arc::default();
        let handler = |name: &'static str| -> EventHandler {
            let order = order.clone();
            Arc::new(move |ev: Event| {
                match &ev {
                    Event::Synchronize(req) => {
                        assert_eq!(req.pods.len(), 1, "synchronized with the runtime's pods");
                    }
                    Event::RunPodSandbox(_) => order.lock().expect("order").push(name.into()),
                    _ => {}
                }
                Box::pin(async { Ok(Reply::default()) })
            })
        };
        let err = Stub::connect(&sock, "bad", "1", valid_events(), handler("bad"))
            .await
            .err()
            .expect("a one-digit index is refused");
        assert!(err.to_string().contains("two digits"), "{err}");
        let b = Stub::connect(&sock, "b", "20", valid_events(), handler("b"))
            .await
            .expect("b");
        let a = Stub::connect(&sock, "a", "10", valid_events(), handler("a"))
            .await
            .expect("a");
        {
            // As a runtime call does: once it holds the guard, every synchronized plugin is in.
            let _guard = nri.guard().await;
            assert_eq!(nri.plugin_names(), ["10-a", "20-b"]);
            nri.run_pod_sandbox(&api::PodSandbox::default())
                .await
                .expect("relayed");
        }
        assert_eq!(*order.lock().expect("order"), ["a", "b"]);
        a.close();
        drop(a);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while nri.plugin_names().len() != 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "closed plugin not dropped"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(nri.plugin_names(), ["20-b"]);
        drop(b);
    }
}
