//! The host bridge: created on first use, up, holding the pod gateway address.

use std::net::{IpAddr, Ipv4Addr};

use rtnetlink::{Handle, LinkBridge};

use super::error::{NetworkError, netlink_err};
use super::netlink::{find_link, is_errno, link_index, set_up};

/// Makes sure bridge `name` exists, is up and holds `gateway/prefix_len`;
/// returns its index. Safe to repeat.
pub(crate) async fn ensure_bridge(
    handle: &Handle,
    pod_id: &str,
    name: &str,
    gateway: Ipv4Addr,
    prefix_len: u8,
) -> Result<u32, NetworkError> {
    let index = match find_link(handle, pod_id, name).await? {
        Some(link) => link.header.index,
        None => create_bridge(handle, pod_id, name).await?,
    };
    set_up(handle, pod_id, name, index).await?;
    let add = handle.address().add(index, IpAddr::V4(gateway), prefix_len);
    add.replace()
        .execute()
        .await
        .map_err(netlink_err(pod_id, name, "add gateway address"))?;
    Ok(index)
}

/// Creates the bridge, tolerating a concurrent creator.
async fn create_bridge(handle: &Handle, pod_id: &str, name: &str) -> Result<u32, NetworkError> {
    tracing::info!(pod_id, bridge = name, "creating pod network bridge");
    match handle
        .link()
        .add(LinkBridge::new(name).build())
        .execute()
        .await
    {
        Ok(()) => {}
        Err(e) if is_errno(&e, libc::EEXIST) => {}
        Err(e) => return Err(netlink_err(pod_id, name, "create bridge")(e)),
    }
    link_index(handle, pod_id, name).await
}

/// Enables the sysctls the pod network needs: forwarding, and `route_localnet`
/// on the bridge only, so DNATed `127.0.0.1` hostPort traffic can leave through it.
pub(crate) fn enable_sysctls(pod_id: &str, bridge: &str) -> Result<(), NetworkError> {
    write_sysctl(pod_id, &format!("net/ipv4/conf/{bridge}/route_localnet"))?;
    write_sysctl(pod_id, "net/ipv4/ip_forward")
}

/// Sets a boolean sysctl to 1 unless it already is.
fn write_sysctl(pod_id: &str, key: &str) -> Result<(), NetworkError> {
    let path = format!("/proc/sys/{key}");
    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(&path, "1").map_err(|source| NetworkError::Sysctl {
        pod_id: pod_id.to_string(),
        key: key.replace('/', "."),
        source,
    })
}
