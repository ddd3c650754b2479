//! A pod sandbox's host side: its files (hostname, hosts, resolv.conf), its cgroup, its shim
//! (which holds the namespaces) and its network. A start pins the network namespace (made
//! ahead of it, or by a thread while the files dir is made), then makes the cgroup, starts the
//! shim (one started ahead of it when there is one) and wires the network together, and
//! writes the files last, with the pod's IP; what it made is rolled back on failure, and
//! teardown is idempotent.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use proto::shim::ShimSpec;
use runtime_core::cgroups::{CgroupDriver, CgroupError, CgroupResources, Cgroups};
use runtime_core::shim::{self, client};
use runtime_core::steps::StepClock;
use runtime_core::userns::IdMap;
use tracing::{info, warn};

use crate::cni::{CniNetwork, CniPod, CniPortMapping};
use crate::dns::{self, DnsSettings};
use crate::network::{BridgeNetwork, PortMapping, Protocol};
use crate::sysctl;

/// Leaf cgroup, under the pod's, of a shared PID namespace's reaper.
pub const REAPER_CGROUP: &str = "berth-pod-init";

/// How long berthd waits for a shim to start or answer.
pub const SHIM_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors creating or tearing down a pod, each naming the pod and the step.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("{0}")]
    Invalid(String),
    #[error("pod {pod}: {step}: {message}")]
    Step {
        pod: String,
        step: &'static str,
        message: String,
        /// What kind of failure it was, kept from the OS error for the caller's answer.
        failure: Failure,
    },
}

/// The kind of a failed step that the caller can act on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Failure {
    #[default]
    Other,
    /// The disk (or the quota) is full: freeing space helps.
    NoSpace,
}

impl Failure {
    /// The kind of an I/O error.
    pub fn of(e: &std::io::Error) -> Failure {
        match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => Failure::NoSpace,
            _ => Failure::Other,
        }
    }
}

fn step_err<'a>(pod: &'a str, step: &'static str) -> impl FnOnce(String) -> PodError + 'a {
    move |message| PodError::Step {
        pod: pod.into(),
        step,
        message,
        failure: Failure::Other,
    }
}

/// A step's I/O error on `what`, keeping its kind.
fn step_io(pod: &str, step: &'static str, what: &str, e: &std::io::Error) -> PodError {
    PodError::Step {
        pod: pod.into(),
        step,
        message: format!("{what}: {e}"),
        failure: Failure::of(e),
    }
}

/// Which host namespaces a pod uses instead of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NamespaceModes {
    pub host_network: bool,
    pub host_ipc: bool,
    pub host_pid: bool,
    /// Containers share one PID namespace (namespace_options.pid == POD).
    pub shared_pid: bool,
}

/// Everything needed to start a pod's host side; built by cri-server from the CRI config.
#[derive(Debug, Clone, Default)]
pub struct PodSpec {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub hostname: String,
    pub dns: DnsSettings,
    pub sysctls: BTreeMap<String, String>,
    pub namespaces: NamespaceModes,
    /// Kubelet's cgroup parent (relative to the cgroup root); empty means `berth`.
    pub cgroup_parent: String,
    pub resources: CgroupResources,
    pub port_mappings: Vec<PortMapping>,
    /// The pod's own user namespace (kubelet's `hostUsers: false`); `None`: the host's.
    pub userns: Option<runtime_core::userns::IdMap>,
    /// The OCI runtime (RuntimeClass handler) the shim starts containers with; `None`: the
    /// native executor.
    pub oci_runtime: Option<proto::shim::OciRuntime>,
}

/// What a started pod holds on the host, persisted by cri-server.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PodHostState {
    pub shim_pid: u32,
    pub shim_socket: PathBuf,
    pub ns_dir: PathBuf,
    /// The pinned network namespace, absent for hostNetwork pods.
    pub netns: Option<PathBuf>,
    pub ips: Vec<String>,
    /// Relative cgroup path of the pod, empty if cgroups are unavailable.
    pub cgroup: String,
    /// Directory holding hostname, hosts and resolv.conf for containers.
    pub files_dir: PathBuf,
    /// Which network attached the pod: "bridge", "cni:<name>" or "" (host network).
    pub network: String,
}

/// The pod network berth uses: CNI when a config exists, else the built-in bridge.
pub enum Networking {
    Bridge(BridgeNetwork),
    Cni(CniNetwork),
}

impl Networking {
    fn label(&self) -> String {
        match self {
            Networking::Bridge(_) => "bridge".into(),
            Networking::Cni(n) => format!("cni:{}", n.name()),
        }
    }
}

/// Static settings of the pod runtime.
#[derive(Debug, Clone)]
pub struct PodRuntimeConfig {
    /// Volatile state dir (`/run/berth`).
    pub state_dir: PathBuf,
    /// The shim executable (berthd's sealed copy).
    pub shim_bin: runtime_core::shim::ShimBinary,
    /// The host resolv.conf copied into pods without DNS settings.
    pub host_resolv_conf: PathBuf,
}

/// Starts, stops and removes pods' host side.
pub struct PodRuntime {
    cfg: PodRuntimeConfig,
    networking: Networking,
    cgroups: Option<Cgroups>,
    /// The shim started ahead of the next pod ([`client::SpareShim`]): a pod's start hands
    /// its spec to the waiting shim instead of exec'ing one while its network and cgroup are
    /// made.
    spare_shim: Arc<Spare<client::SpareShim>>,
    /// A network namespace made ahead of the next pod (an fd on it keeps it): a pod's start
    /// pins it instead of waiting for a thread to make one (`unshare` alone costs ~0.6 ms).
    spare_netns: Arc<Spare<OwnedFd>>,
}

/// How long after a pod's start the next spare shim and namespace are made: kubelet creates and
/// starts the pod's containers right after RunPodSandbox, and exec'ing the next shim on the
/// same cores meanwhile slowed those calls and RunPodSandbox's own answer (berth-only
/// pod-start runs, two each, back to back: pod start 11.2–12.1 ms made at once, 10.4–10.8 ms
/// made 30 ms later).
const SPARE_DELAY: Duration = Duration::from_millis(30);

/// Something made ahead of the next pod, and made again once that pod's start is over
/// ([`SPARE_DELAY`] after it). One
/// at a time: pods that start together while the slot is empty make their own, as without it.
struct Spare<T> {
    slot: std::sync::Mutex<Option<T>>,
    /// The next one is being made.
    filling: AtomicBool,
}

impl<T: Send + 'static> Spare<T> {
    fn new() -> Arc<Spare<T>> {
        Arc::new(Spare {
            slot: std::sync::Mutex::new(None),
            filling: AtomicBool::new(false),
        })
    }

    fn take(&self) -> Option<T> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Makes the next one with `make` on the current tokio runtime, unless one waits or is
    /// being made; `what` names it in the log when making it fails.
    fn fill<F, Fut>(self: &Arc<Self>, what: &'static str, make: F)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, String>> + Send + 'static,
    {
        let empty = self
            .slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none();
        if !empty || self.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        let (spare, made) = (self.clone(), make());
        tokio::spawn(async move {
            tokio::time::sleep(SPARE_DELAY).await;
            match made.await {
                // None can be there while this one is made; one that is would be kept.
                Ok(made) => {
                    let mut slot = spare.slot.lock().unwrap_or_else(|p| p.into_inner());
                    slot.get_or_insert(made);
                }
                Err(e) => warn!(error = %e, "make {what} for the next pod"),
            }
            spare.filling.store(false, Ordering::Release);
        });
    }
}

struct Started {
    files: Option<PathBuf>,
    cgroup: Option<String>,
    /// The network namespace berthd pinned for the shim to join.
    netns_pin: Option<PathBuf>,
    shim_socket: Option<PathBuf>,
    shim_pid: u32,
    network: bool,
}

/// File in a pod's files dir naming its cgroup (relative to the hierarchy roots).
const POD_CGROUP_FILE: &str = "cgroup";

impl PodRuntime {
    /// `cgroups` is None on a host without usable cgroups (pods then run without limits).
    pub fn new(
        cfg: PodRuntimeConfig,
        networking: Networking,
        cgroups: Option<Cgroups>,
    ) -> PodRuntime {
        PodRuntime {
            cfg,
            networking,
            cgroups,
            spare_shim: Spare::new(),
            spare_netns: Spare::new(),
        }
    }

    /// Makes a shim and a network namespace for the next pod in the background, unless they
    /// wait or are being made (needs a tokio runtime). Called at start-up and after each pod's
    /// start.
    pub fn prepare_spare(&self) {
        let (bin, dir) = (self.cfg.shim_bin.clone(), self.cfg.state_dir.clone());
        self.spare_shim.fill("a shim", || async move {
            client::spawn_spare(&bin, &dir, SHIM_TIMEOUT)
                .await
                .map_err(|e| e.to_string())
        });
        self.spare_netns.fill("a network namespace", new_netns);
    }

    /// Starts the pod's shim: hands `spec` to the waiting spare if there is one (and it is
    /// alive), else execs one. Its PID.
    async fn start_shim(&self, spec: &ShimSpec) -> Result<u32, client::ShimError> {
        if let Some(spare) = self.spare_shim.take() {
            match spare.start(spec, SHIM_TIMEOUT).await {
                Err(client::ShimError::SpareGone { pid, source }) => {
                    warn!(pod = %spec.pod_id, spare = pid, error = %source, "spare shim gone; starting another");
                }
                started => return started,
            }
        }
        client::spawn(&self.cfg.shim_bin, spec, &self.cfg.state_dir, SHIM_TIMEOUT).await
    }

    /// Checks a spec before anything is created.
    pub fn validate(&self, spec: &PodSpec) -> Result<BTreeMap<String, String>, PodError> {
        if !spec.namespaces.host_network && !spec.hostname.is_empty() {
            dns::validate_hostname(&spec.hostname)
                .map_err(|e| PodError::Invalid(format!("config.hostname: {e}")))?;
        }
        dns::resolv_conf(&spec.dns, "").map_err(|e| PodError::Invalid(e.to_string()))?;
        let parent = match &self.cgroups {
            Some(cg) => cg.validate_parent(&spec.cgroup_parent),
            None if spec.cgroup_parent.is_empty() => Ok(()),
            None => Cgroups::validate_path(&spec.cgroup_parent),
        };
        parent.map_err(|e| PodError::Invalid(format!("linux.cgroup_parent: {e}")))?;
        if spec.namespaces.host_network && !spec.port_mappings.is_empty() {
            warn!(pod = %spec.id, "port mappings ignored for a hostNetwork pod");
        }
        sysctl::validate(
            &spec.sysctls,
            !spec.namespaces.host_network,
            !spec.namespaces.host_ipc,
        )
        .map_err(|e| PodError::Invalid(format!("linux.sysctls: {e}")))
    }

    fn files_dir(&self, id: &str) -> PathBuf {
        self.cfg.state_dir.join("pods").join(id)
    }

    fn ns_dir(&self, id: &str) -> PathBuf {
        self.cfg.state_dir.join("ns").join(id)
    }

    fn shim_socket(&self, id: &str) -> PathBuf {
        self.cfg.state_dir.join("shims").join(format!("{id}.sock"))
    }

    /// The pod cgroup path for a spec (per the cgroup driver); `None` without cgroups or for a
    /// `cgroup_parent` the driver refuses.
    pub fn cgroup_path(&self, spec: &PodSpec) -> Option<String> {
        let cg = self.cgroups.as_ref()?;
        cg.pod_path(&spec.cgroup_parent, &spec.id).ok()
    }

    /// Creates files, cgroup, shim (namespaces) and network; on failure undoes what it did.
    pub async fn start(
        &self,
        spec: &PodSpec,
        clock: &mut StepClock,
    ) -> Result<PodHostState, PodError> {
        let sysctls = self.validate(spec)?;
        clock.mark("validate");
        let mut done = Started {
            files: None,
            cgroup: None,
            netns_pin: None,
            shim_socket: None,
            shim_pid: 0,
            network: false,
        };
        let started = match self.try_start(spec, sysctls, &mut done, clock).await {
            Ok(state) => Ok(state),
            Err(e) => {
                warn!(pod = %spec.id, error = %e, "pod start failed; rolling back");
                self.rollback(spec, done).await;
                Err(e)
            }
        };
        self.prepare_spare();
        started
    }

    async fn try_start(
        &self,
        spec: &PodSpec,
        sysctls: BTreeMap<String, String>,
        done: &mut Started,
        clock: &mut StepClock,
    ) -> Result<PodHostState, PodError> {
        let id = spec.id.as_str();
        let ns_dir = self.ns_dir(id);
        let netns = (!spec.namespaces.host_network).then(|| ns_dir.join(shim::NS_NET));
        // Without a user namespace (which must own it), berthd makes the network namespace
        // itself so the network is wired while the shim starts, instead of after. Its thread
        // starts first and works while the pod's files and cgroup are made.
        let premade_net = netns.as_ref().filter(|_| spec.userns.is_none());
        let pending_net = match premade_net {
            Some(pin) => {
                done.netns_pin = Some(pin.clone());
                let made = match self.spare_netns.take() {
                    Some(netns) => pin_netns(&ns_dir, pin, &netns).map(|()| None),
                    None => Ok(Some(start_netns(&ns_dir, pin))),
                };
                made.map_err(step_err(id, "create network namespace"))?
            }
            None => None,
        };
        let files_and_cgroup = self.files_and_cgroup(spec, done);
        clock.mark("files");
        // Awaited whatever the steps above did: a rollback must not race the pinning.
        let made_net = match pending_net {
            Some(pending) => Some(pending.await),
            None => None,
        };
        let (files_dir, cgroup) = files_and_cgroup?;
        if let Some(made) = made_net {
            made.map_err(step_err(id, "create network namespace"))?;
        }
        if premade_net.is_some() {
            // Waiting for the namespace a thread made (none when one made ahead was pinned).
            clock.mark("netns");
        }
        let socket = self.shim_socket(id);
        let systemd = self
            .cgroups
            .as_ref()
            .is_some_and(|cg| cg.driver() == CgroupDriver::Systemd);

        let shim_spec = ShimSpec {
            pod_id: id.into(),
            socket_path: socket.display().to_string(),
            ns_dir: ns_dir.display().to_string(),
            new_net: !spec.namespaces.host_network,
            new_ipc: !spec.namespaces.host_ipc,
            new_uts: !spec.namespaces.host_network,
            new_pid: spec.namespaces.shared_pid && !spec.namespaces.host_pid,
            hostname: spec.hostname.clone(),
            sysctls,
            log_path: files_dir.join("shim.log").display().to_string(),
            cgroup_procs: Vec::new(),
            userns_uids: spec
                .userns
                .as_ref()
                .map(|m| IdMap::to_proto(&m.uids))
                .unwrap_or_default(),
            userns_gids: spec
                .userns
                .as_ref()
                .map(|m| IdMap::to_proto(&m.gids))
                .unwrap_or_default(),
            oci_runtime: spec.oci_runtime.clone(),
            join_net: premade_net.is_some(),
        };
        done.shim_socket = Some(socket.clone());
        let spawn = async {
            self.start_shim(&shim_spec)
                .await
                .map_err(|e| step_err(id, "start shim")(e.to_string()))
        };
        // The pod's cgroup is made alongside: nothing in it runs before the shim answers.
        let make_cgroup = self.make_pod_cgroup(spec, &cgroup);
        let mut ips = None;
        let (shim, made_cgroup) = match premade_net {
            Some(pin) => {
                done.network = true;
                let (shim, network, made_cgroup) =
                    tokio::join!(spawn, self.attach_network(spec, pin), make_cgroup);
                clock.mark("shim_network_cgroup");
                ips = Some(network);
                (shim, made_cgroup)
            }
            None => {
                let (shim, made_cgroup) = tokio::join!(spawn, make_cgroup);
                clock.mark("shim_spawn");
                (shim, made_cgroup)
            }
        };
        // Everything that was made is in `done` before any error returns.
        if let Ok(pid) = &shim {
            done.shim_pid = *pid;
        }
        if let Ok(true) = &made_cgroup {
            done.cgroup = Some(cgroup.clone());
        }
        // The shim's failure first: a shim that fails unpins the namespaces the network was
        // being wired into, which fails that too.
        let shim_pid = shim?;
        made_cgroup?;
        let ips = ips.transpose()?;
        if let (Some(cg), true) = (&self.cgroups, systemd) {
            done.cgroup = Some(cgroup.clone());
            let (cg, path, resources) = (cg.clone(), cgroup.clone(), spec.resources.clone());
            tokio::task::spawn_blocking(move || {
                cg.create_pod(&path, &resources, shim_pid).map(drop)
            })
            .await
            .map_err(|e| step_err(id, "create pod scope")(e.to_string()))?
            .map_err(|e| step_err(id, "create pod scope")(e.to_string()))?;
            clock.mark("systemd_scope");
        }
        failpoint::hit("run_pod.after_shim");
        if shim_spec.new_pid {
            self.join_reaper_to_cgroup(id, &socket, &cgroup).await;
        }
        clock.mark("shim_cgroup");

        let ips = match (ips, &netns) {
            (Some(ips), _) => ips,
            (None, Some(path)) => {
                done.network = true;
                let ips = self.attach_network(spec, path).await?;
                clock.mark("network");
                ips
            }
            (None, None) => Vec::new(),
        };
        failpoint::hit("run_pod.after_network");
        // Written once the pod's IP is known (`hosts` names it): nothing reads them before
        // RunPodSandbox answers.
        let ip = ips.first().and_then(|ip| ip.parse::<IpAddr>().ok());
        self.write_files(spec, &files_dir, ip)?;
        clock.mark("hosts_file");
        info!(pod = %id, shim_pid, ips = ?ips, "pod sandbox started");
        Ok(PodHostState {
            shim_pid,
            shim_socket: socket,
            ns_dir,
            netns,
            ips,
            cgroup,
            files_dir,
            network: if spec.namespaces.host_network {
                String::new()
            } else {
                self.networking.label()
            },
        })
    }

    /// Makes the pod's files directory (its files are written at the end of its start) and
    /// names its cgroup in it; returns the directory and the cgroup path.
    fn files_and_cgroup(
        &self,
        spec: &PodSpec,
        done: &mut Started,
    ) -> Result<(PathBuf, String), PodError> {
        let id = spec.id.as_str();
        let files_dir = self.files_dir(id);
        done.files = Some(files_dir.clone());
        std::fs::create_dir_all(&files_dir).map_err(|e| {
            step_io(
                id,
                "write pod files",
                &format!("create {}", files_dir.display()),
                &e,
            )
        })?;
        let cgroup = match &self.cgroups {
            Some(cg) => {
                let path = cg
                    .pod_path(&spec.cgroup_parent, id)
                    .map_err(|e| PodError::Invalid(format!("linux.cgroup_parent: {e}")))?;
                // Named beside the pod's files first, so the start-up sweep can find the
                // cgroup of a pod whose record is lost (its parent is kubelet's choice).
                std::fs::write(files_dir.join(POD_CGROUP_FILE), &path)
                    .map_err(|e| step_io(id, "record pod cgroup", POD_CGROUP_FILE, &e))?;
                path
            }
            None => String::new(),
        };
        Ok((files_dir, cgroup))
    }

    /// Makes the pod's cgroup on a blocking thread (cgroupfs driver; the systemd driver's
    /// scope is made after the shim, holding it); true when it made one.
    async fn make_pod_cgroup(&self, spec: &PodSpec, path: &str) -> Result<bool, PodError> {
        let Some(cg) = self.cgroups.as_ref() else {
            return Ok(false);
        };
        if path.is_empty() || cg.driver() == CgroupDriver::Systemd {
            return Ok(false);
        }
        let (cg, path, resources) = (cg.clone(), path.to_string(), spec.resources.clone());
        tokio::task::spawn_blocking(move || cg.create_pod(&path, &resources, 0).map(drop))
            .await
            .map_err(|e| e.to_string())
            .and_then(|made| made.map_err(|e| e.to_string()))
            .map_err(step_err(&spec.id, "create pod cgroup"))?;
        Ok(true)
    }

    /// Moves the reaper of the pod's own PID namespace (the shim tells its PID) into the pod's
    /// cgroup.
    async fn join_reaper_to_cgroup(&self, id: &str, socket: &Path, cgroup: &str) {
        let (Some(cg), false) = (&self.cgroups, cgroup.is_empty()) else {
            return;
        };
        let sock = socket.to_path_buf();
        let pong = client::ping(&sock, SHIM_TIMEOUT).await;
        if let Ok(p) = pong
            && p.reaper_pid != 0
        {
            // A leaf of its own: cgroup v2 forbids processes in a cgroup whose children
            // (the containers' cgroups) have controllers enabled.
            let leaf = format!("{cgroup}/{REAPER_CGROUP}");
            let joined = cg
                .create(&leaf, &CgroupResources::default())
                .and_then(|c| c.add_process(p.reaper_pid));
            if let Err(e) = joined {
                warn!(pod = %id, error = %e, "move pid namespace reaper into the pod cgroup");
            }
        }
    }

    /// Writes the pod's hostname, hosts (naming `ip`) and resolv.conf into `dir`, which
    /// `files_and_cgroup` made.
    fn write_files(&self, spec: &PodSpec, dir: &Path, ip: Option<IpAddr>) -> Result<(), PodError> {
        let host_resolv = std::fs::read_to_string(&self.cfg.host_resolv_conf).unwrap_or_default();
        let resolv = dns::resolv_conf(&spec.dns, &host_resolv)
            .map_err(|e| PodError::Invalid(e.to_string()))?;
        let hostname = if spec.namespaces.host_network {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            spec.hostname.clone()
        };
        for (name, content) in [
            ("resolv.conf", resolv),
            ("hosts", dns::hosts(&hostname, ip)),
            ("hostname", format!("{hostname}\n")),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, content).map_err(|e| {
                step_io(&spec.id, "write pod files", &path.display().to_string(), &e)
            })?;
            give_to_userns_root(&path, spec.userns.as_ref())
                .map_err(|e| step_err(&spec.id, "write pod files")(e))?;
        }
        Ok(())
    }

    async fn attach_network(&self, spec: &PodSpec, netns: &Path) -> Result<Vec<String>, PodError> {
        let id = spec.id.as_str();
        match &self.networking {
            Networking::Bridge(net) => {
                let a = net
                    .attach(id, netns, &spec.port_mappings)
                    .await
                    .map_err(|e| step_err(id, "attach pod network")(e.to_string()))?;
                Ok(vec![a.ip.to_string()])
            }
            Networking::Cni(net) => {
                let ports = cni_ports(&spec.port_mappings);
                let pod = cni_pod(spec, netns, &ports);
                let result = net
                    .add(&pod)
                    .await
                    .map_err(|e| step_err(id, "CNI ADD")(e.to_string()))?;
                Ok(result.ips.iter().map(|ip| ip.addr().to_string()).collect())
            }
        }
    }

    /// Detaches a stopped pod's network: the built-in bridge finishes in the background
    /// (see [`BridgeNetwork::detach_deferred`]), a CNI plugin's DEL is waited for.
    async fn stop_network(&self, spec: &PodSpec, netns: Option<&Path>) -> Result<(), PodError> {
        match &self.networking {
            Networking::Bridge(net) => net
                .detach_deferred(&spec.id, !spec.port_mappings.is_empty())
                .await
                .map_err(|e| step_err(&spec.id, "detach pod network")(e.to_string())),
            Networking::Cni(_) => self.detach_network(spec, netns).await,
        }
    }

    /// Waits until the network of every stopped pod is fully detached, at most `timeout`;
    /// true if it is (at shutdown, so nothing is left half done).
    pub async fn settle_network(&self, timeout: Duration) -> bool {
        match &self.networking {
            Networking::Bridge(net) => net.settle(timeout).await,
            Networking::Cni(_) => true,
        }
    }

    async fn detach_network(&self, spec: &PodSpec, netns: Option<&Path>) -> Result<(), PodError> {
        let id = spec.id.as_str();
        match &self.networking {
            Networking::Bridge(net) => net
                .detach(id, netns)
                .await
                .map_err(|e| step_err(id, "detach pod network")(e.to_string())),
            Networking::Cni(net) => {
                let ports = cni_ports(&spec.port_mappings);
                let fallback = PathBuf::new();
                let pod = cni_pod(spec, netns.unwrap_or(&fallback), &ports);
                net.del(&pod)
                    .await
                    .map_err(|e| step_err(id, "CNI DEL")(e.to_string()))
            }
        }
    }

    /// Removes host state that belongs to no pod in `known` (by pod ID): pinned namespaces,
    /// shims (asked to shut down), pod file dirs and built-in network addresses. Returns
    /// what was removed, for the log. Run at start-up, after every record is loaded.
    pub async fn sweep_orphans(&self, known: &std::collections::HashSet<String>) -> Vec<String> {
        let mut removed = Vec::new();
        let unknown = |dir: PathBuf, strip: &str| -> Vec<(String, PathBuf)> {
            std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_str()?.trim_end_matches(strip).to_string();
                    (!known.contains(&name)).then(|| (name, e.path()))
                })
                .collect()
        };
        for (id, socket) in unknown(self.cfg.state_dir.join("shims"), ".sock") {
            let sock = socket.clone();
            let _ = client::shutdown(&sock, SHIM_TIMEOUT).await;
            let _ = std::fs::remove_file(&socket);
            removed.push(format!("shim of {id}"));
        }
        for (id, dir) in unknown(self.cfg.state_dir.join("ns"), "") {
            unpin_namespaces(&dir);
            removed.push(format!("namespaces of {id}"));
        }
        for (id, dir) in unknown(self.cfg.state_dir.join("pods"), "") {
            if let (Some(cg), Ok(path)) = (
                &self.cgroups,
                std::fs::read_to_string(dir.join(POD_CGROUP_FILE)),
            ) && Cgroups::check_path(path.trim()).is_ok()
            {
                remove_cgroup(cg, &id, path.trim());
                removed.push(format!("cgroup of {id}"));
            }
            let _ = std::fs::remove_dir_all(&dir);
            removed.push(format!("files of {id}"));
        }
        if let Networking::Bridge(bridge) = &self.networking {
            for id in bridge
                .list_attached()
                .into_iter()
                .filter(|id| !known.contains(id))
            {
                if let Err(e) = bridge.detach(&id, None).await {
                    warn!(pod = %id, error = %e, "release orphan address");
                }
                removed.push(format!("address of {id}"));
            }
        }
        removed
    }

    /// Undoes whatever a start interrupted by a crash may have done (network, shim and its
    /// pinned namespaces, cgroup, files): every step is assumed done, and undoing one that
    /// never happened is a no-op. Run at start-up for pods whose creation never finished.
    pub async fn abandon(&self, spec: &PodSpec) {
        let socket = self.shim_socket(&spec.id);
        let sock = socket.clone();
        // The shim's pid, if it is alive, lets a shim that ignores shutdown be killed.
        let shim_pid = client::ping(&sock, SHIM_TIMEOUT)
            .await
            .map_or(0, |p| p.shim_pid);
        let done = Started {
            files: Some(self.files_dir(&spec.id)),
            cgroup: self.cgroup_path(spec),
            // A start cut short before the shim ran may have left berthd's network pin.
            netns_pin: (!spec.namespaces.host_network)
                .then(|| self.ns_dir(&spec.id).join(shim::NS_NET)),
            shim_socket: Some(socket),
            shim_pid,
            network: !spec.namespaces.host_network,
        };
        info!(pod = %spec.id, shim_pid, "undoing an interrupted pod start");
        self.rollback(spec, done).await;
    }

    async fn rollback(&self, spec: &PodSpec, done: Started) {
        if done.network {
            let netns = self.ns_dir(&spec.id).join(shim::NS_NET);
            if let Err(e) = self.detach_network(spec, Some(&netns)).await {
                warn!(pod = %spec.id, error = %e, "rollback: detach network");
            }
        }
        if let Some(socket) = done.shim_socket {
            self.stop_shim(&spec.id, &socket, done.shim_pid).await;
        }
        if done.netns_pin.is_some() {
            // The shim unpins what it joined; if it never started, nothing else does.
            unpin_namespaces(&self.ns_dir(&spec.id));
        }
        if let (Some(cg), Some(path)) = (&self.cgroups, done.cgroup) {
            remove_cgroup(cg, &spec.id, &path);
        }
        if let Some(dir) = done.files {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// Stops a pod: kills its processes, detaches its network, stops its shim and unpins its
    /// namespaces. Idempotent: every step tolerates what is already gone.
    pub async fn stop(&self, spec: &PodSpec, state: &PodHostState) -> Result<(), PodError> {
        self.stop_timed(spec, state, &mut StepClock::start()).await
    }

    /// [`stop`](Self::stop), marking each step on `clock`.
    pub async fn stop_timed(
        &self,
        spec: &PodSpec,
        state: &PodHostState,
        clock: &mut StepClock,
    ) -> Result<(), PodError> {
        if let (Some(cg), false) = (&self.cgroups, state.cgroup.is_empty()) {
            // Signalling and waiting for the processes to die blocks: not on a runtime thread.
            let (cg, path) = (cg.clone(), state.cgroup.clone());
            match tokio::task::spawn_blocking(move || cg.kill_pod(&path)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(pod = %spec.id, error = %e, "kill pod processes"),
                Err(e) => warn!(pod = %spec.id, error = %e, "kill pod processes"),
            }
        }
        clock.mark("kill");
        failpoint::hit("stop_pod.after_kill");
        if !state.network.is_empty() {
            self.stop_network(spec, state.netns.as_deref()).await?;
        }
        clock.mark("network");
        failpoint::hit("stop_pod.after_network");
        self.stop_shim(&spec.id, &state.shim_socket, state.shim_pid)
            .await;
        clock.mark("shim_shutdown");
        Ok(())
    }

    /// Removes what a stopped pod still holds: its cgroup and files.
    pub async fn remove(&self, spec: &PodSpec, state: &PodHostState) -> Result<(), PodError> {
        if let (Some(cg), false) = (&self.cgroups, state.cgroup.is_empty()) {
            remove_cgroup(cg, &spec.id, &state.cgroup);
        }
        failpoint::hit("remove_pod.after_cgroup");
        match std::fs::remove_dir_all(&state.files_dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(step_err(&spec.id, "remove pod files")(e.to_string())),
        }
    }

    /// Asks the shim to shut down; if it does not answer, kills it by PID (after checking the
    /// PID is still a berth-shim) and unpins the namespaces itself. Returns once it has exited
    /// (or after [`SHIM_TIMEOUT`]).
    async fn stop_shim(&self, id: &str, socket: &Path, pid: u32) {
        // Taken before asking, so it names this shim even if its PID is reused afterwards.
        let ours = pid != 0 && is_shim(pid);
        let exit = ours
            .then(|| runtime_core::executor::pidfd_open(pid as i32).ok())
            .flatten();
        let sock = socket.to_path_buf();
        let asked = client::shutdown(&sock, SHIM_TIMEOUT).await;
        if !matches!(asked, Ok(())) {
            if ours {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            unpin_namespaces(&self.ns_dir(id));
            let _ = std::fs::remove_file(socket);
        }
        // The shim answers before it exits: a stopped pod has no shim left when this returns.
        if let Some(fd) = exit
            && !wait_exit(fd, SHIM_TIMEOUT).await
        {
            warn!(pod = %id, shim_pid = pid, "shim still running after its shutdown");
        }
    }

    /// Where a container's cgroup goes under its pod's; `None` without cgroups.
    pub fn container_cgroup_path(&self, pod_cgroup: &str, id: &str) -> Option<String> {
        (self.cgroups.is_some() && !pod_cgroup.is_empty())
            .then(|| format!("{pod_cgroup}/{}", &id[..id.len().min(12)]))
    }

    /// Starts creating container cgroup `path` with `resources` on a blocking thread, now
    /// (not when the future is first polled), so the caller can do other work meanwhile; the
    /// future gives the `cgroup.procs` files the container process joins. A cgroup the
    /// kernel refuses a limit of is removed again.
    pub fn make_container_cgroup(
        &self,
        path: &str,
        resources: CgroupResources,
    ) -> impl Future<Output = Result<Vec<PathBuf>, String>> + use<> {
        let made = self.cgroups.clone().map(|cg| {
            let path = path.to_string();
            tokio::task::spawn_blocking(move || {
                cg.create(&path, &resources)
                    .map(|c| c.procs_files())
                    .map_err(|e| e.to_string())
            })
        });
        async move {
            match made {
                Some(task) => task.await.map_err(|e| e.to_string())?,
                None => Err("no cgroups on this host".into()),
            }
        }
    }

    /// The `cgroup.procs` files of an existing container cgroup (what an exec joins); empty
    /// without cgroups or if the cgroup is gone.
    pub fn container_cgroup_procs(&self, path: &str) -> Vec<PathBuf> {
        match (&self.cgroups, path.is_empty()) {
            (Some(cg), false) => cg
                .open(path)
                .ok()
                .flatten()
                .map(|c| c.procs_files())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Writes new limits to an existing container cgroup (fields left unset keep their
    /// values); `Ok(false)` without cgroups or when the cgroup does not exist.
    pub fn update_container_cgroup(
        &self,
        path: &str,
        resources: &CgroupResources,
    ) -> Result<bool, CgroupError> {
        let (Some(cg), false) = (&self.cgroups, path.is_empty()) else {
            return Ok(false);
        };
        match cg.open(path)? {
            Some(c) => c.apply(resources).map(|()| true),
            None => Ok(false),
        }
    }

    /// Kills what is left in a container's cgroup and removes it; absent is fine.
    pub fn remove_container_cgroup(&self, path: &str) {
        if let (Some(cg), false) = (&self.cgroups, path.is_empty()) {
            remove_cgroup(cg, path, path);
        }
    }

    /// Whether the container cgroup saw an OOM kill.
    pub fn container_oom_killed(&self, path: &str) -> bool {
        match (&self.cgroups, path.is_empty()) {
            (Some(cg), false) => cg
                .open(path)
                .ok()
                .flatten()
                .is_some_and(|c| c.oom_killed().unwrap_or(false)),
            _ => false,
        }
    }

    /// Whether the pod network can take pods.
    pub fn network_status(&self) -> Result<String, String> {
        Ok(self.networking.label())
    }

    /// Asks a pod's shim if it is alive.
    pub async fn shim_alive(&self, state: &PodHostState) -> bool {
        client::ping(&state.shim_socket, Duration::from_secs(2))
            .await
            .is_ok()
    }
}

fn remove_cgroup(cg: &Cgroups, pod: &str, path: &str) {
    if let Err(e) = cg.remove_pod(path) {
        warn!(pod, cgroup = path, error = %e, "remove pod cgroup");
    }
}

/// Waits until the process of `pidfd` has exited, at most `timeout`; whether it has.
async fn wait_exit(pidfd: std::os::fd::OwnedFd, timeout: Duration) -> bool {
    // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open for as long as it is
    // registered, and `as_raw_fd` always returns that one descriptor.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
    };
    let Ok(fd) = registered else {
        return false;
    };
    tokio::time::timeout(timeout, fd.readable())
        .await
        .is_ok_and(|ready| ready.is_ok())
}

/// True if `pid` runs the berth-shim binary (so a recycled PID is never killed).
fn is_shim(pid: u32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| {
        p.file_name().is_some_and(|n| {
            let name = n.to_string_lossy();
            // Run from berthd's sealed copy: `/memfd:berth-shim (deleted)`.
            name.starts_with("berth-shim") || name.starts_with("memfd:berth-shim")
        })
    })
}

/// In a pod with its own user namespace, gives a file its containers mount (hosts,
/// resolv.conf, hostname) to the namespace's root, so it is theirs as in any pod.
fn give_to_userns_root(path: &Path, userns: Option<&IdMap>) -> Result<(), String> {
    let Some(map) = userns else { return Ok(()) };
    let (Some(uid), Some(gid)) = (map.host_uid(0), map.host_gid(0)) else {
        return Ok(());
    };
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .map_err(|e| format!("give {} to the user namespace's root: {e}", path.display()))
}

/// Creates `ns_dir` (0711, as the shim makes it) and the empty file `pin` a namespace is
/// bind-mounted on.
fn pin_file(ns_dir: &Path, pin: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(ns_dir)
        .map_err(|e| format!("create {}: {e}", ns_dir.display()))?;
    std::fs::File::create(pin).map_err(|e| format!("create {}: {e}", pin.display()))?;
    Ok(())
}

/// Pins the network namespace `netns` (made ahead by [`new_netns`]) at `pin` inside `ns_dir`.
fn pin_netns(ns_dir: &Path, pin: &Path, netns: &OwnedFd) -> Result<(), String> {
    pin_file(ns_dir, pin)?;
    nix::mount::mount(
        Some(format!("/proc/self/fd/{}", netns.as_raw_fd()).as_str()),
        pin,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("pin network namespace at {}: {e}", pin.display()))
}

/// Makes a new network namespace with its loopback down (the pod's network attach brings it
/// up) and answers an fd on it, which keeps it. A thread of its own enters the namespace and
/// ends, so no runtime thread is left in it.
async fn new_netns() -> Result<OwnedFd, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-netns".into())
        .spawn(move || {
            let made = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("unshare network namespace: {e}"))
                .and_then(|()| {
                    std::fs::File::open("/proc/thread-self/ns/net")
                        .map(OwnedFd::from)
                        .map_err(|e| format!("open the new network namespace: {e}"))
                });
            let _ = tx.send(made);
        })
        .map_err(|e| format!("start a thread for the network namespace: {e}"))?;
    rx.await
        .map_err(|_| "network namespace thread ended without an answer".to_string())?
}

/// Starts making a new network namespace ([`new_netns`]) pinned at `pin` inside `ns_dir`; the
/// future answers when it is pinned. Used when no namespace was made ahead.
fn start_netns(ns_dir: &Path, pin: &Path) -> impl Future<Output = Result<(), String>> + use<> {
    let (ns_dir, pin) = (ns_dir.to_path_buf(), pin.to_path_buf());
    let made = tokio::spawn(new_netns());
    async move {
        let netns = made
            .await
            .map_err(|e| format!("network namespace task: {e}"))??;
        pin_netns(&ns_dir, &pin, &netns)
    }
}

/// Unmounts and removes whatever namespace pins are left in `ns_dir`.
fn unpin_namespaces(ns_dir: &Path) {
    for name in [
        shim::NS_NET,
        shim::NS_IPC,
        shim::NS_UTS,
        shim::NS_PID,
        shim::NS_USER,
    ] {
        let p = ns_dir.join(name);
        let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&p);
    }
    let _ = std::fs::remove_dir(ns_dir);
}

fn cni_ports(ports: &[PortMapping]) -> Vec<CniPortMapping> {
    ports
        .iter()
        .map(|p| CniPortMapping {
            host_port: p.host_port,
            container_port: p.container_port,
            protocol: match p.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
                Protocol::Sctp => "sctp",
            }
            .into(),
            host_ip: p.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        })
        .collect()
}

fn cni_pod<'a>(spec: &'a PodSpec, netns: &'a Path, ports: &'a [CniPortMapping]) -> CniPod<'a> {
    CniPod {
        id: &spec.id,
        netns,
        ifname: "eth0",
        name: &spec.name,
        namespace: &spec.namespace,
        uid: &spec.uid,
        port_mappings: ports,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_kept_as_no_space() {
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let quota = std::io::Error::from_raw_os_error(libc::EDQUOT);
        let denied = std::io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(Failure::of(&full), Failure::NoSpace);
        assert_eq!(Failure::of(&quota), Failure::NoSpace);
        assert_eq!(Failure::of(&denied), Failure::Other);
        let PodError::Step {
            failure, message, ..
        } = step_io("p", "write pod files", "hosts", &full)
        else {
            panic!("not a step error");
        };
        assert_eq!(failure, Failure::NoSpace);
        assert!(message.starts_with("hosts: "), "{message}");
    }
}
