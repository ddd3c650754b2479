//! Errors of the built-in bridge network.

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Why a bridge network operation failed; every message names the pod (or
/// `host`), the device or file involved, and the reason.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The [`BridgeConfig`](super::BridgeConfig) cannot be used.
    #[error("invalid bridge network config: {reason}")]
    InvalidConfig { reason: String },

    /// The pod id cannot be used in file names and nftables comments.
    #[error("invalid pod id {pod_id:?}: {reason}")]
    InvalidPodId { pod_id: String, reason: String },

    /// A port mapping is unusable (zero port, duplicate host port).
    #[error("pod {pod_id}: invalid port mapping: {reason}")]
    InvalidPortMapping { pod_id: String, reason: String },

    /// The pod already holds an address; detach it first.
    #[error("pod {pod_id} is already attached with address {ip}")]
    AlreadyAttached { pod_id: String, ip: Ipv4Addr },

    /// The pod's network namespace file could not be opened or entered.
    #[error("pod {pod_id}: network namespace {}: {source}", path.display())]
    Netns {
        pod_id: String,
        path: PathBuf,
        source: io::Error,
    },

    /// A netlink request failed.
    #[error("pod {pod_id}: {action} (device {device}): {source}")]
    Netlink {
        pod_id: String,
        device: String,
        action: &'static str,
        source: Box<rtnetlink::Error>,
    },

    /// A device that must exist (just created or moved) is missing.
    #[error("pod {pod_id}: device {device} not found")]
    LinkNotFound { pod_id: String, device: String },

    /// Opening a netlink socket or running the namespace worker failed.
    #[error("pod {pod_id}: {action}: {source}")]
    Io {
        pod_id: String,
        action: &'static str,
        source: io::Error,
    },

    /// A host-local IPAM file could not be read or written.
    #[error("pod {pod_id}: IPAM file {}: {source}", path.display())]
    Ipam {
        pod_id: String,
        path: PathBuf,
        source: io::Error,
    },

    /// Every address of the pod CIDR is allocated.
    #[error("pod {pod_id}: no free address left in {cidr}")]
    IpamExhausted {
        pod_id: String,
        cidr: ipnet::Ipv4Net,
    },

    /// A sysctl could not be written.
    #[error("pod {pod_id}: set sysctl {key}: {source}")]
    Sysctl {
        pod_id: String,
        key: String,
        source: io::Error,
    },

    /// The `nft` binary failed or printed something unexpected.
    #[error("pod {pod_id}: nftables table {table}: {reason}")]
    Nft {
        pod_id: String,
        table: String,
        reason: String,
    },
}

impl NetworkError {
    /// True when it is a netlink request the kernel refused with `errno`.
    pub(crate) fn is_netlink_errno(&self, errno: i32) -> bool {
        matches!(self, NetworkError::Netlink { source, .. } if super::netlink::is_errno(source, errno))
    }
}

/// Builds a mapper from an rtnetlink error to [`NetworkError::Netlink`].
pub(crate) fn netlink_err(
    pod_id: &str,
    device: &str,
    action: &'static str,
) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let (pod_id, device) = (pod_id.to_string(), device.to_string());
    move |source| NetworkError::Netlink {
        pod_id,
        device,
        action,
        source: Box::new(source),
    }
}

/// Builds a mapper from an I/O error to [`NetworkError::Io`].
pub(crate) fn io_err(pod_id: &str, action: &'static str) -> impl FnOnce(io::Error) -> NetworkError {
    let pod_id = pod_id.to_string();
    move |source| NetworkError::Io {
        pod_id,
        action,
        source,
    }
}
