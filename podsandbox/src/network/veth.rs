//! The veth pair of a pod: host end on the bridge, peer as `eth0` in the pod.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, RawFd};

use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::error::{NetworkError, netlink_err};
use super::netlink::{delete_link, is_errno, link_index, set_up};

/// The loopback device's index in every network namespace (the kernel's `LOOPBACK_IFINDEX`).
const LOOPBACK_INDEX: u32 = 1;

/// Address settings of the pod end of the pair.
#[derive(Debug, Clone)]
pub(crate) struct PodSide {
    pub(crate) pod_id: String,
    pub(crate) temp_name: String,
    pub(crate) interface: String,
    pub(crate) ip: Ipv4Addr,
    pub(crate) prefix_len: u8,
    pub(crate) gateway: Ipv4Addr,
}

/// Creates the veth pair with its peer end born inside the pod namespace open as `netns`
/// (moving a device between namespaces afterwards costs the kernel an RCU grace period,
/// ~20 ms per pod), and its host end up and on the bridge `bridge_index` in the same request.
/// A stale host end of the same name (a crash between attach and detach) is deleted and the
/// pair created again.
pub(crate) async fn create_pair_in(
    handle: &Handle,
    pod_id: &str,
    host: &str,
    peer: &str,
    netns: &File,
    bridge_index: u32,
) -> Result<(), NetworkError> {
    let create = || {
        let mut msg = LinkVeth::new(host, peer)
            .controller(bridge_index)
            .up()
            .build();
        put_peer_in_netns(&mut msg, netns.as_raw_fd());
        handle.link().add(msg).execute()
    };
    match create().await {
        Err(e) if is_errno(&e, libc::EEXIST) => {
            if delete_link(handle, pod_id, host).await? {
                tracing::warn!(pod_id, device = host, "removed stale host veth");
            }
            create().await
        }
        other => other,
    }
    .map_err(netlink_err(pod_id, host, "create veth pair"))
}

/// Adds `IFLA_NET_NS_FD` to the peer part of a veth creation request.
fn put_peer_in_netns(msg: &mut LinkMessage, netns_fd: RawFd) {
    for attr in &mut msg.attributes {
        let LinkAttribute::LinkInfo(infos) = attr else {
            continue;
        };
        for info in infos {
            if let LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))) = info {
                peer.attributes.push(LinkAttribute::NetNsFd(netns_fd));
            }
        }
    }
}

/// Inside the pod namespace: renames the peer, sets its address, brings it and
/// `lo` up and adds the default route via the gateway.
pub(crate) async fn configure_pod_side(handle: Handle, side: PodSide) -> Result<(), NetworkError> {
    let (pod_id, iface) = (side.pod_id.as_str(), side.interface.as_str());
    let index = link_index(&handle, pod_id, &side.temp_name).await?;
    // Renamed while down, then up, in one request (the kernel renames before it changes flags).
    let rename = LinkUnspec::new_with_index(index).name(iface).up().build();
    let req = handle.link().set(rename).execute();
    req.await.map_err(netlink_err(
        pod_id,
        iface,
        "rename pod veth and bring it up",
    ))?;
    let add = handle
        .address()
        .add(index, IpAddr::V4(side.ip), side.prefix_len);
    add.execute()
        .await
        .map_err(netlink_err(pod_id, iface, "add address"))?;
    // The loopback device is the first of every network namespace: index 1.
    set_up(&handle, pod_id, "lo", LOOPBACK_INDEX).await?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(side.gateway)
        .output_interface(index)
        .build();
    let req = handle.route().add(route).execute();
    req.await
        .map_err(netlink_err(pod_id, iface, "add default route"))
}

/// Enables hairpin on the host end's bridge port, so a pod can reach itself through its own
/// hostPort.
pub(crate) async fn enable_hairpin(
    handle: &Handle,
    pod_id: &str,
    host: &str,
) -> Result<(), NetworkError> {
    let index = link_index(handle, pod_id, host).await?;
    let port = LinkBridgePort::new(index).hairpin(true).build();
    let req = handle.link().set_port(port).execute();
    req.await
        .map_err(netlink_err(pod_id, host, "enable hairpin"))
}
