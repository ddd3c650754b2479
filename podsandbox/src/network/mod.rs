//! Built-in bridge network, used when no CNI config exists: a host bridge, a
//! veth pair per pod, host-local IPAM persisted on disk, all via netlink, plus
//! outbound NAT and hostPort DNAT in a berth-owned nftables table.
//!
//! State lives only on disk (IPAM files) and in the kernel (links, rules), so
//! [`BridgeNetwork::detach`] works after a crash or restart.
//!
//! Stopping a pod uses [`BridgeNetwork::detach_deferred`]: deleting a veth pair makes the kernel
//! wait for RCU grace periods (~15 ms here, most of a pod's teardown), so a background task
//! finishes it after the stop returns. It lets the kernel delete the pair with the pod's dying
//! network namespace (batched with every namespace dying meanwhile) and deletes it itself only
//! if that has not happened within a second; the pod's address stays allocated until its veth
//! is gone, so no other pod can get it while the old interface still answers for it. A crash
//! before the task finishes leaves an allocation that the next stop, the removal or the
//! start-up sweep of orphans detaches again.
//!
//! ```no_run
//! # async fn demo() -> Result<(), podsandbox::network::NetworkError> {
//! use podsandbox::network::{BridgeConfig, BridgeNetwork};
//! let net = BridgeNetwork::new(BridgeConfig {
//!     bridge: "berth0".into(),
//!     pod_cidr: "10.88.0.0/16".parse().expect("valid CIDR"),
//!     state_dir: "/var/lib/berth/network".into(),
//!     nft_table: "berth".into(),
//! })?;
//! let pod = net.attach("pod-1", "/run/netns/pod-1".as_ref(), &[]).await?;
//! println!("pod-1 has {}", pod.ip);
//! net.detach("pod-1", None).await?;
//! # Ok(()) }
//! ```

mod bridge;
mod error;
mod ipam;
mod netlink;
mod nft;
mod veth;

use std::collections::HashSet;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::Ipv4Net;
use rtnetlink::Handle;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use error::NetworkError;

use ipam::Ipam;
use netlink::Netlink;
use nft::{NftTable, PodRules};
use veth::PodSide;

/// Name of the pod's interface inside its network namespace.
const POD_INTERFACE: &str = "eth0";
/// Longest accepted pod id (it must fit an nftables comment).
const MAX_POD_ID_LEN: usize = 100;
/// Pod id used in errors of host-wide operations.
const HOST: &str = "(host)";

/// Settings of the built-in bridge network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeConfig {
    /// Bridge device name, e.g. `berth0` (at most 15 bytes).
    pub bridge: String,
    /// Pod addresses come from here; its first host is the gateway on the bridge.
    pub pod_cidr: Ipv4Net,
    /// Persistent directory for IPAM state, e.g. `/var/lib/berth/network`.
    pub state_dir: PathBuf,
    /// Name of the berth-owned nftables `ip` table, `berth` in production.
    pub nft_table: String,
}

/// Transport protocol of a hostPort mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

/// A hostPort: traffic to `host_ip:host_port` is DNATed to `pod_ip:container_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// Transport protocol matched.
    pub protocol: Protocol,
    /// Port the pod listens on.
    pub container_port: u16,
    /// Port opened on the host.
    pub host_port: u16,
    /// A local address to match; `None` (or `0.0.0.0`) means every local address.
    pub host_ip: Option<Ipv4Addr>,
}

/// How a pod is attached to the bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodAttachment {
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// Prefix length of the pod CIDR.
    pub prefix_len: u8,
    /// Default gateway: the bridge address.
    pub gateway: Ipv4Addr,
    /// Interface name inside the pod, `eth0`.
    pub interface: String,
    /// Host end of the pod's veth pair, `bth` + 12 hex chars.
    pub host_veth: String,
}

/// The built-in bridge network; cheap to create, touches the host only on use.
#[derive(Debug)]
pub struct BridgeNetwork {
    cfg: BridgeConfig,
    gateway: Ipv4Addr,
    ipam: Arc<Ipam>,
    nft: NftTable,
    /// Pods whose veth deletion runs in the background ([`BridgeNetwork::detach_deferred`]).
    deferred: Arc<Deferred>,
    /// Serializes host-level setup (bridge, sysctls, base nft rules) and remembers what is in
    /// place, so later pods skip it.
    host: tokio::sync::Mutex<HostSetup>,
}

/// The host side as the last [`BridgeNetwork::ensure_host`] left it.
#[derive(Debug, Default)]
struct HostSetup {
    /// The sysctls and base nft rules are in place (later pods skip the `nft` process).
    base_ready: bool,
    /// The bridge's index once it was found (or made) up with the gateway address: later
    /// pods use it without asking the kernel (three round trips under this lock); a veth
    /// creation that finds it gone makes the bridge again (see `wire_pod`).
    bridge: Option<u32>,
}

/// What [`BridgeNetwork::wire_pod`] connects.
struct PodTarget<'a> {
    pod_id: &'a str,
    ip: Ipv4Addr,
    netns_path: &'a Path,
    netns: File,
    ports: &'a [PortMapping],
}

impl BridgeNetwork {
    /// Validates `cfg`; makes no change to the host.
    pub fn new(mut cfg: BridgeConfig) -> Result<BridgeNetwork, NetworkError> {
        validate_config(&cfg)?;
        cfg.pod_cidr = cfg.pod_cidr.trunc();
        let gateway = Ipv4Addr::from(u32::from(cfg.pod_cidr.network()) + 1);
        let ipam = Ipam::new(cfg.state_dir.join("ipam"), cfg.pod_cidr, gateway);
        let nft = NftTable {
            name: cfg.nft_table.clone(),
        };
        Ok(BridgeNetwork {
            cfg,
            gateway,
            ipam: Arc::new(ipam),
            nft,
            deferred: Arc::default(),
            host: tokio::sync::Mutex::default(),
        })
    }

    /// Connects the pod whose network namespace is bind-mounted at `netns` and
    /// installs its hostPorts; on failure everything it created is removed.
    pub async fn attach(
        &self,
        pod_id: &str,
        netns: &Path,
        ports: &[PortMapping],
    ) -> Result<PodAttachment, NetworkError> {
        validate_pod_id(pod_id)?;
        validate_ports(pod_id, ports)?;
        let netns_file = netlink::open_netns(pod_id, netns)?;
        let nl = Netlink::connect(pod_id)?;
        let bridge_index = self.ensure_host(&nl.handle, pod_id, false).await?;
        let ip = match self.ipam.allocate(pod_id) {
            // Stopped pods whose veth is still being deleted hold their addresses until it is
            // gone: in a full range, wait for them rather than fail.
            Err(NetworkError::IpamExhausted { .. }) if self.settle(DEFERRED_WAIT).await => {
                self.ipam.allocate(pod_id)?
            }
            other => other?,
        };
        let target = PodTarget {
            pod_id,
            ip,
            netns_path: netns,
            netns: netns_file,
            ports,
        };
        if let Err(e) = self.wire_pod(&nl.handle, bridge_index, target).await {
            self.rollback(&nl.handle, pod_id).await;
            return Err(e);
        }
        tracing::info!(pod_id, %ip, host_veth = %host_veth_name(pod_id), "pod attached to bridge");
        Ok(self.attachment_for(pod_id, ip))
    }

    /// Removes the pod's veth pair, hostPort rules and address; anything
    /// already gone is fine. `netns` is not needed (deleting the host end
    /// removes the pod end) and is accepted for parity with CNI DEL.
    pub async fn detach(&self, pod_id: &str, netns: Option<&Path>) -> Result<(), NetworkError> {
        validate_pod_id(pod_id)?;
        tracing::debug!(pod_id, netns = ?netns, "detaching pod from bridge");
        let nl = Netlink::connect(pod_id)?;
        self.remove_pod(&nl.handle, pod_id).await
    }

    /// Detaches a stopped pod, finishing in the background: its hostPort rules (if
    /// `has_ports`; a pod without host ports has none) are removed before this returns, so its
    /// ports are free at once; a task on the current tokio runtime waits for its veth pair to
    /// go with its network namespace (deleting it after [`NETNS_GRACE`] if it has not) and then
    /// releases its address. A pod already being detached is left to that task.
    /// [`BridgeNetwork::settle`] waits for the tasks.
    pub async fn detach_deferred(&self, pod_id: &str, has_ports: bool) -> Result<(), NetworkError> {
        validate_pod_id(pod_id)?;
        if has_ports {
            self.nft.remove_pod(pod_id, &pod_chain_name(pod_id)).await?;
        }
        if !self.deferred.begin(pod_id) {
            return Ok(());
        }
        let (ipam, deferred, pod_id) =
            (self.ipam.clone(), self.deferred.clone(), pod_id.to_string());
        tokio::spawn(async move {
            let host = host_veth_name(&pod_id);
            let gone = match Netlink::connect(&pod_id) {
                Ok(nl) => netlink::await_link_gone(&nl.handle, &pod_id, &host, NETNS_GRACE).await,
                Err(e) => Err(e),
            };
            // The address is freed only once nothing holds it; on failure the next stop,
            // the pod's removal or the start-up sweep detaches it again.
            match gone.and_then(|deleted| Ok((deleted, ipam.release(&pod_id)?))) {
                Ok((deleted_here, released)) => {
                    tracing::info!(pod_id, deleted_here, released = ?released, "pod detached from bridge");
                }
                Err(e) => tracing::warn!(pod_id, error = %e, "detaching pod from bridge"),
            }
            deferred.end(&pod_id);
        });
        Ok(())
    }

    /// Waits until no background detach ([`BridgeNetwork::detach_deferred`]) is running, at most
    /// `timeout`; true if none is.
    pub async fn settle(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.deferred.idle())
            .await
            .is_ok()
    }

    /// The pod's attachment according to the persisted IPAM state.
    pub fn attachment(&self, pod_id: &str) -> Option<PodAttachment> {
        match self.ipam.lookup(pod_id) {
            Ok(ip) => ip.map(|ip| self.attachment_for(pod_id, ip)),
            Err(e) => {
                tracing::warn!(pod_id, error = %e, "reading IPAM state");
                None
            }
        }
    }

    /// Ids of the pods holding an address, for leak reconciliation.
    pub fn list_attached(&self) -> Vec<String> {
        match self.ipam.allocations(HOST) {
            Ok(allocations) => {
                let mut pods: Vec<String> = allocations.into_iter().map(|(_, pod)| pod).collect();
                pods.sort();
                pods.dedup();
                pods
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading IPAM state");
                Vec::new()
            }
        }
    }

    /// Deletes the bridge and the nftables table (for tests and uninstall);
    /// pods still attached lose connectivity but keep their addresses.
    pub async fn teardown_host(&self) -> Result<(), NetworkError> {
        let nl = Netlink::connect(HOST)?;
        *self.host.lock().await = HostSetup::default();
        netlink::delete_link(&nl.handle, HOST, &self.cfg.bridge).await?;
        self.nft.delete(HOST).await?;
        tracing::info!(bridge = %self.cfg.bridge, table = %self.nft.name, "pod network host setup removed");
        Ok(())
    }

    /// Bridge, sysctls and base nft rules; returns the bridge index. The first call (and
    /// one with `recheck`, after a veth creation failed) finds or makes the bridge; later ones
    /// answer the index it found.
    async fn ensure_host(
        &self,
        handle: &Handle,
        pod_id: &str,
        recheck: bool,
    ) -> Result<u32, NetworkError> {
        let mut host = self.host.lock().await;
        if let (Some(index), false) = (host.bridge, recheck) {
            return Ok(index);
        }
        let known = host.bridge.take();
        let (bridge, prefix) = (&self.cfg.bridge, self.cfg.pod_cidr.prefix_len());
        let index = bridge::ensure_bridge(handle, pod_id, bridge, self.gateway, prefix).await?;
        // A bridge made again needs its sysctls again.
        if !host.base_ready || known.is_some_and(|k| k != index) {
            bridge::enable_sysctls(pod_id, bridge)?;
            self.nft.ensure_base(pod_id, self.cfg.pod_cidr).await?;
            host.base_ready = true;
        }
        host.bridge = Some(index);
        Ok(index)
    }

    /// Creates the veth pair, configures the pod end, plugs the host end and
    /// installs the hostPort rules.
    async fn wire_pod(
        &self,
        handle: &Handle,
        bridge_index: u32,
        target: PodTarget<'_>,
    ) -> Result<(), NetworkError> {
        let pod_id = target.pod_id;
        let (host, peer) = (host_veth_name(pod_id), temp_peer_name(pod_id));
        let create =
            |bridge| veth::create_pair_in(handle, pod_id, &host, &peer, &target.netns, bridge);
        match create(bridge_index).await {
            // The bridge may be gone (EINVAL: no device has its index) or its index now
            // another kind of device's (EOPNOTSUPP): find it by name (or make it) again, and
            // retry once if it is another. The same bridge: the refusal was not about it.
            Err(e) if e.is_netlink_errno(libc::EINVAL) || e.is_netlink_errno(libc::EOPNOTSUPP) => {
                let index = self.ensure_host(handle, pod_id, true).await?;
                if index == bridge_index {
                    return Err(e);
                }
                tracing::warn!(pod_id, bridge = %self.cfg.bridge, "pod bridge was gone; made it again");
                create(index).await?;
            }
            other => other?,
        }
        let side = PodSide {
            pod_id: pod_id.to_string(),
            temp_name: peer,
            interface: POD_INTERFACE.to_string(),
            ip: target.ip,
            prefix_len: self.cfg.pod_cidr.prefix_len(),
            gateway: self.gateway,
        };
        netlink::in_netns(pod_id, target.netns_path, target.netns, |h| {
            veth::configure_pod_side(h, side)
        })
        .await?;
        veth::enable_hairpin(handle, pod_id, &host).await?;
        let rules = PodRules {
            pod_id,
            chain: pod_chain_name(pod_id),
            ip: target.ip,
            ports: target.ports,
        };
        self.nft.add_pod(&rules).await
    }

    /// Deletes the pod's veth, rules and address file, in that order, so the
    /// address is only freed once nothing refers to it.
    async fn remove_pod(&self, handle: &Handle, pod_id: &str) -> Result<(), NetworkError> {
        let host = host_veth_name(pod_id);
        let had_veth = netlink::delete_link(handle, pod_id, &host).await?;
        self.nft.remove_pod(pod_id, &pod_chain_name(pod_id)).await?;
        let released = self.ipam.release(pod_id)?;
        tracing::info!(pod_id, had_veth, released = ?released, "pod detached from bridge");
        Ok(())
    }

    /// Undoes a failed attach; errors are logged since the attach error wins.
    async fn rollback(&self, handle: &Handle, pod_id: &str) {
        if let Err(e) = self.remove_pod(handle, pod_id).await {
            tracing::warn!(pod_id, error = %e, "rolling back failed attach");
        }
    }

    fn attachment_for(&self, pod_id: &str, ip: Ipv4Addr) -> PodAttachment {
        PodAttachment {
            ip,
            prefix_len: self.cfg.pod_cidr.prefix_len(),
            gateway: self.gateway,
            interface: POD_INTERFACE.to_string(),
            host_veth: host_veth_name(pod_id),
        }
    }
}

/// How long a background detach waits for the kernel to delete a stopped pod's veth with its
/// network namespace before deleting it itself.
const NETNS_GRACE: Duration = Duration::from_secs(1);

/// How long an attach that found no free address waits for background detaches to free some.
const DEFERRED_WAIT: Duration = Duration::from_secs(2);

/// The pods being detached in the background.
#[derive(Debug, Default)]
struct Deferred {
    pods: Mutex<HashSet<String>>,
    idle: tokio::sync::Notify,
}

impl Deferred {
    /// Marks `pod_id` as being detached; false if it already is.
    fn begin(&self, pod_id: &str) -> bool {
        self.pods
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pod_id.to_string())
    }

    fn end(&self, pod_id: &str) {
        let mut pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
        pods.remove(pod_id);
        if pods.is_empty() {
            self.idle.notify_waiters();
        }
    }

    /// Returns once no pod is being detached.
    async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self
                .pods
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
            {
                return;
            }
            notified.await;
        }
    }
}

/// 12 hex chars of SHA-256 of the pod id: short, stable device/chain names.
fn pod_hash(pod_id: &str) -> String {
    let digest = Sha256::digest(pod_id.as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Host end of the pod's veth pair (15 bytes, the kernel maximum).
fn host_veth_name(pod_id: &str) -> String {
    format!("bth{}", pod_hash(pod_id))
}

/// Temporary name of the pod end until it is renamed inside the pod.
fn temp_peer_name(pod_id: &str) -> String {
    format!("btp{}", pod_hash(pod_id))
}

/// The pod's own nftables chain holding its DNAT rules.
fn pod_chain_name(pod_id: &str) -> String {
    format!("pod-{}", pod_hash(pod_id))
}

fn validate_config(cfg: &BridgeConfig) -> Result<(), NetworkError> {
    let invalid = |reason: String| Err(NetworkError::InvalidConfig { reason });
    let name_ok = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if cfg.bridge.is_empty() || cfg.bridge.len() > 15 || !name_ok(&cfg.bridge) {
        return invalid(format!(
            "bridge name {:?} must be 1-15 of [A-Za-z0-9_-]",
            cfg.bridge
        ));
    }
    if cfg.nft_table.is_empty() || cfg.nft_table.len() > 64 || !name_ok(&cfg.nft_table) {
        return invalid(format!(
            "nft table {:?} must be 1-64 of [A-Za-z0-9_-]",
            cfg.nft_table
        ));
    }
    if !cfg.nft_table.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return invalid(format!(
            "nft table {:?} must start with a letter",
            cfg.nft_table
        ));
    }
    if cfg.pod_cidr.prefix_len() > 30 {
        return invalid(format!(
            "pod CIDR {} has no room for pods (prefix > 30)",
            cfg.pod_cidr
        ));
    }
    Ok(())
}

fn validate_pod_id(pod_id: &str) -> Result<(), NetworkError> {
    let ok_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let reason = if pod_id.is_empty() {
        "empty"
    } else if pod_id.len() > MAX_POD_ID_LEN {
        "longer than 100 bytes"
    } else if !pod_id.bytes().all(ok_char) {
        "only [A-Za-z0-9._-] allowed"
    } else {
        return Ok(());
    };
    Err(NetworkError::InvalidPodId {
        pod_id: pod_id.to_string(),
        reason: reason.to_string(),
    })
}

fn validate_ports(pod_id: &str, ports: &[PortMapping]) -> Result<(), NetworkError> {
    let mut seen = HashSet::new();
    for port in ports {
        let reason = if port.host_port == 0 || port.container_port == 0 {
            format!("port 0 in {port:?}")
        } else if !seen.insert((
            port.protocol,
            port.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            port.host_port,
        )) {
            format!("host port {} mapped twice", port.host_port)
        } else {
            continue;
        };
        return Err(NetworkError::InvalidPortMapping {
            pod_id: pod_id.to_string(),
            reason,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BridgeConfig {
        BridgeConfig {
            bridge: "berth0".into(),
            pod_cidr: "10.88.0.7/16".parse().expect("cidr"),
            state_dir: "/nonexistent".into(),
            nft_table: "berth".into(),
        }
    }

    #[test]
    fn names_fit_the_kernel_limit_and_are_stable() {
        let name = host_veth_name("0123456789abcdef");
        assert_eq!(name.len(), 15);
        assert_eq!(name, host_veth_name("0123456789abcdef"));
        assert_ne!(name, host_veth_name("0123456789abcdeg"));
        assert_eq!(temp_peer_name("x").len(), 15);
    }

    #[test]
    fn new_derives_gateway_and_rejects_bad_config() {
        let net = BridgeNetwork::new(config()).expect("valid config");
        assert_eq!(net.gateway, Ipv4Addr::new(10, 88, 0, 1));
        let long = BridgeConfig {
            bridge: "a-very-long-bridge".into(),
            ..config()
        };
        assert!(matches!(
            BridgeNetwork::new(long),
            Err(NetworkError::InvalidConfig { .. })
        ));
        let tiny = BridgeConfig {
            pod_cidr: "10.88.0.0/31".parse().expect("cidr"),
            ..config()
        };
        assert!(BridgeNetwork::new(tiny).is_err());
    }

    #[test]
    fn pod_ids_and_ports_are_validated() {
        assert!(validate_pod_id("abc-123_x.y").is_ok());
        assert!(validate_pod_id("").is_err());
        assert!(validate_pod_id("a\"b").is_err());
        let port = PortMapping {
            protocol: Protocol::Tcp,
            container_port: 80,
            host_port: 8080,
            host_ip: None,
        };
        assert!(validate_ports("p", &[port]).is_ok());
        assert!(validate_ports("p", &[port, port]).is_err());
        let zero = PortMapping {
            host_port: 0,
            ..port
        };
        assert!(validate_ports("p", &[zero]).is_err());
    }
}
