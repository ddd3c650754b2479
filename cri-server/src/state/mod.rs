//! What every RPC handler shares: the effective config, facts about the host, the stores,
//! and the shared parts `DaemonState` holds, which sit here beside it because they use
//! nothing above it: the container event hub (`event_hub`), the exit watcher's inotify
//! state (`exit_watcher`), the Prometheus registry (`metrics_registry`) and the streaming
//! tokens (`stream_tokens`). The stats cache is `stats::cache` (the stats folder is below
//! this one: it uses only the stores).

pub mod event_hub;
pub mod exit_watcher;
pub mod metrics_registry;
pub mod stream_tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use images::{Credential, Images, RegistryOptions};
use podsandbox::cni::{CniNetwork, CniSettings};
use podsandbox::network::{BridgeConfig, BridgeNetwork};
use podsandbox::pod::{Networking, PodRuntime, PodRuntimeConfig};
use runtime_core::cgroups::{self, CgroupLayout, Cgroups};
use runtime_core::shim::ShimBinary;

use crate::config::{Config, RegistryConfig};
use crate::state::event_hub::EventHub;
use crate::state::exit_watcher::ExitWatcher;
use crate::state::metrics_registry::Metrics;
use crate::store::containers::ContainerStore;
use crate::store::kubelet::KubeletConfig;
use crate::store::pods::PodStore;

/// Shared daemon state handed to the gRPC services.
pub struct DaemonState {
    pub config: Config,
    /// The host's cgroup layout, or why it could not be detected.
    pub cgroup_layout: Result<CgroupLayout, String>,
    pub images: Images,
    pub pods: PodStore,
    pub containers: ContainerStore,
    pub pod_runtime: PodRuntime,
    /// The shim executable: a sealed copy that shims and exec helpers run from.
    pub shim: ShimBinary,
    /// Pending streaming URLs (Exec, Attach, PortForward).
    pub streams: crate::state::stream_tokens::StreamTokens,
    /// Container lifecycle events for `GetContainerEvents` subscribers.
    pub events: EventHub,
    /// Watches running containers' exit records.
    pub exits: ExitWatcher,
    /// What kubelet said through `UpdateRuntimeConfig`.
    pub kubelet_config: KubeletConfig,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Where `/metrics` is served, once bound (unset while starting or when turned off).
    pub metrics_address: OnceLock<SocketAddr>,
    /// CPU samples and writable-layer walks kept between stats calls.
    pub stats: crate::stats::cache::StatsCache,
    /// NRI, when `[nri] enable` is set.
    pub nri: Option<crate::nri_runtime::NriHooks>,
}

/// Why the daemon state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("image store: {0}")]
    Images(#[from] images::ImageError),
    #[error("pod or container store {path}: {source}")]
    Pods {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pod network: {0}")]
    Network(String),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("shim binary: {0}")]
    Shim(std::io::Error),
    #[error(
        "cgroups: {0}; berth does not run containers without cgroups (no device filter would confine them)"
    )]
    Cgroups(String),
}

impl DaemonState {
    /// Builds the state for `config`: probes the host, opens the image store (sweeping what an
    /// interrupted pull left behind), loads pod records and picks the pod network.
    pub fn new(config: Config) -> Result<DaemonState, StateError> {
        let cgroup_layout =
            cgroups::detect_layout("/sys/fs/cgroup".as_ref()).map_err(|e| e.to_string());
        let images = Images::open(
            &config.root_dir,
            registry_options(&config.registry),
            config.registry.max_concurrent_downloads,
        )?;
        let pods =
            crate::store::pods::open(&config.root_dir).map_err(|source| StateError::Pods {
                path: config.root_dir.join("pods"),
                source,
            })?;
        let containers = crate::store::containers::open(&config.root_dir).map_err(|source| {
            StateError::Pods {
                path: config.root_dir.join("containers"),
                source,
            }
        })?;
        let shim = ShimBinary::sealed(shim_binary(&config)).map_err(StateError::Shim)?;
        let pod_runtime = pod_runtime(&config, &shim)?;
        let streams = crate::state::stream_tokens::StreamTokens::new(Duration::from_secs(
            config.streaming.token_ttl_seconds,
        ));
        let events = EventHub::new(config.events.subscriber_queue);
        let kubelet_config = KubeletConfig::open(&config.root_dir);
        let nri = config
            .nri
            .enable
            .then(|| crate::nri_runtime::NriHooks::new(&config.nri));
        Ok(DaemonState {
            streams,
            config,
            cgroup_layout,
            images,
            pods,
            containers,
            pod_runtime,
            shim,
            events,
            exits: ExitWatcher::new(),
            kubelet_config,
            metrics: Arc::new(Metrics::new()?),
            metrics_address: OnceLock::new(),
            stats: crate::stats::cache::StatsCache::detect(),
            nri,
        })
    }
}

fn pod_runtime(config: &Config, shim: &ShimBinary) -> Result<PodRuntime, StateError> {
    let networking = networking(config)?;
    // Fail closed: without cgroups a container would have no device filter, and CAP_MKNOD
    // (in the default set) would let it open the host's disks.
    let cgroups = Cgroups::detect()
        .map_err(|e| StateError::Cgroups(e.to_string()))?
        .with_driver(config.cgroup_driver);
    if config.cgroup_driver == runtime_core::cgroups::CgroupDriver::Systemd {
        runtime_core::cgroups::systemd::check_available()
            .map_err(|e| StateError::Cgroups(format!("cgroup_driver = \"systemd\": {e}")))?;
    }
    let cfg = PodRuntimeConfig {
        state_dir: config.state_dir.clone(),
        shim_bin: shim.clone(),
        host_resolv_conf: "/etc/resolv.conf".into(),
    };
    Ok(PodRuntime::new(cfg, networking, Some(cgroups)))
}

/// CNI when a network config exists in `cni.conf_dir`, else the built-in bridge.
fn networking(config: &Config) -> Result<Networking, StateError> {
    let settings = CniSettings {
        conf_dir: config.cni.conf_dir.clone(),
        bin_dirs: config.cni.bin_dirs.clone(),
        cache_dir: config.root_dir.join("network").join("cni-cache"),
        timeout: Duration::from_secs(config.cni.plugin_timeout_seconds),
    };
    if let Some(cni) =
        CniNetwork::load(&settings).map_err(|e| StateError::Network(e.to_string()))?
    {
        tracing::info!(
            network = cni.name(),
            version = cni.cni_version(),
            "pod network: CNI"
        );
        return Ok(Networking::Cni(cni));
    }
    let bridge = BridgeNetwork::new(BridgeConfig {
        bridge: config.network.bridge.clone(),
        pod_cidr: config.network.pod_cidr,
        state_dir: config.root_dir.join("network"),
        nft_table: config.network.nft_table.clone(),
    })
    .map_err(|e| StateError::Network(e.to_string()))?;
    tracing::info!(bridge = %config.network.bridge, cidr = %config.network.pod_cidr, "pod network: built-in bridge");
    Ok(Networking::Bridge(bridge))
}

/// The configured shim, or `berth-shim` beside the running berthd.
fn shim_binary(config: &Config) -> PathBuf {
    if !config.shim_path.as_os_str().is_empty() {
        return config.shim_path.clone();
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("berth-shim")))
        .unwrap_or_else(|| PathBuf::from("/usr/local/bin/berth-shim"))
}

/// The image crate's view of the registry settings (credentials were validated with the
/// config, so any that fail to decode here are skipped).
fn registry_options(r: &RegistryConfig) -> RegistryOptions {
    let credentials = r
        .credentials
        .iter()
        .filter_map(|(host, c)| {
            Credential::from_fields(&c.username, &c.password, &c.auth, &c.identity_token, "")
                .ok()
                .flatten()
                .map(|cred| (host.clone(), cred))
        })
        .collect();
    RegistryOptions {
        insecure: r.insecure.clone(),
        mirrors: r.mirrors.clone(),
        credentials,
    }
}
