//! A pod's host-side spec (`podsandbox::pod::PodSpec`) from its CRI config; every refusal
//! names the field.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::error::Error;
use podsandbox::dns::DnsSettings;
use podsandbox::network::{PortMapping, Protocol};
use podsandbox::pod::{NamespaceModes, PodSpec};
use proto::cri::{self, LinuxContainerResources, NamespaceMode, PodSandboxConfig};
use runtime_core::cgroups::CgroupResources;

/// The pod's host-side spec from its CRI config; every refusal names the field.
pub fn pod_spec(id: &str, c: &PodSandboxConfig) -> Result<PodSpec, Error> {
    let m = c
        .metadata
        .as_ref()
        .ok_or_else(|| Error::invalid("config.metadata is required"))?;
    for (field, value) in [
        ("name", &m.name),
        ("namespace", &m.namespace),
        ("uid", &m.uid),
    ] {
        if value.is_empty() {
            return Err(Error::invalid(format!(
                "config.metadata.{field} is required"
            )));
        }
    }
    let linux = c.linux.clone().unwrap_or_default();
    let ns = linux
        .security_context
        .as_ref()
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let namespaces = namespace_modes(&ns)?;
    let labelled = linux
        .security_context
        .as_ref()
        .and_then(|s| s.selinux_options.as_ref())
        .is_some_and(|o| {
            !(o.user.is_empty() && o.role.is_empty() && o.r#type.is_empty() && o.level.is_empty())
        });
    if labelled && selinux_enabled() {
        return Err(Error::failed_precondition(
            "config.linux.security_context.selinux_options: berth does not apply SELinux labels, and SELinux is enabled on this host",
        ));
    }
    // As containerd and CRI-O: a pod without a hostname gets the node's (kubelet always sets
    // one for real pods; the pod's name need not be a valid host name).
    let hostname = if c.hostname.is_empty() {
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .map_err(|e| Error::internal(format!("read the node's hostname: {e}")))?
    } else {
        c.hostname.clone()
    };
    let dns = c
        .dns_config
        .as_ref()
        .map_or_else(DnsSettings::default, |d| DnsSettings {
            servers: d.servers.clone(),
            searches: d.searches.clone(),
            options: d.options.clone(),
        });
    Ok(PodSpec {
        id: id.into(),
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        hostname,
        dns,
        sysctls: linux
            .sysctls
            .clone()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        namespaces,
        cgroup_parent: linux.cgroup_parent.clone(),
        resources: pod_resources(linux.resources.as_ref(), linux.overhead.as_ref()),
        port_mappings: port_mappings(&c.port_mappings)?,
        userns: crate::container::userns::pod_user_namespace(c)?,
        oci_runtime: None,
    })
}

fn namespace_modes(ns: &cri::NamespaceOption) -> Result<NamespaceModes, Error> {
    let mode = |v: i32, field: &str| {
        NamespaceMode::try_from(v).map_err(|_| {
            Error::invalid(format!(
                "config.linux.security_context.namespace_options.{field}: unknown mode {v}"
            ))
        })
    };
    let (network, ipc, pid) = (
        mode(ns.network, "network")?,
        mode(ns.ipc, "ipc")?,
        mode(ns.pid, "pid")?,
    );
    if pid == NamespaceMode::Target {
        return Err(Error::invalid(
            "config.linux.security_context.namespace_options.pid: TARGET is for containers, not pods",
        ));
    }
    Ok(NamespaceModes {
        host_network: network == NamespaceMode::Node,
        host_ipc: ipc == NamespaceMode::Node,
        host_pid: pid == NamespaceMode::Node,
        shared_pid: pid == NamespaceMode::Pod,
    })
}

fn port_mappings(ports: &[cri::PortMapping]) -> Result<Vec<PortMapping>, Error> {
    let mut out = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        if p.host_port == 0 {
            continue; // no host port requested: nothing to map
        }
        let field = |f: &str| format!("config.port_mappings[{i}].{f}");
        let port = |v: i32, f: &str| {
            u16::try_from(v)
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| Error::invalid(format!("{} must be 1..65535, got {v}", field(f))))
        };
        let protocol = match cri::Protocol::try_from(p.protocol) {
            Ok(cri::Protocol::Tcp) => Protocol::Tcp,
            Ok(cri::Protocol::Udp) => Protocol::Udp,
            Ok(cri::Protocol::Sctp) => Protocol::Sctp,
            Err(_) => {
                return Err(Error::invalid(format!(
                    "{}: unknown protocol {}",
                    field("protocol"),
                    p.protocol
                )));
            }
        };
        let host_ip = match p.host_ip.as_str() {
            "" | "0.0.0.0" => None,
            s => Some(s.parse::<Ipv4Addr>().map_err(|_| {
                Error::invalid(format!(
                    "{}: `{s}` is not an IPv4 address",
                    field("host_ip")
                ))
            })?),
        };
        out.push(PortMapping {
            protocol,
            container_port: port(p.container_port, "container_port")?,
            host_port: port(p.host_port, "host_port")?,
            host_ip,
        });
    }
    Ok(out)
}

/// The pod cgroup's limits: the pod's resources plus its overhead.
fn pod_resources(
    res: Option<&LinuxContainerResources>,
    overhead: Option<&LinuxContainerResources>,
) -> CgroupResources {
    let pos = |v: i64| (v > 0).then_some(v);
    let sum = |f: fn(&LinuxContainerResources) -> i64| {
        let total: i64 = [res, overhead]
            .into_iter()
            .flatten()
            .map(f)
            .filter(|v| *v > 0)
            .sum();
        pos(total)
    };
    let period = res.and_then(|r| pos(r.cpu_period)).map(|p| p as u64);
    CgroupResources {
        cpu_shares: sum(|r| r.cpu_shares).map(|v| v as u64),
        cpu_quota: period.and(sum(|r| r.cpu_quota)),
        cpu_period: period,
        memory_limit: sum(|r| r.memory_limit_in_bytes),
        ..Default::default()
    }
}

/// Whether the host enforces SELinux labels. Without SELinux, labels and relabel requests are
/// meaningless and, as in containerd and CRI-O, ignored.
pub fn selinux_enabled() -> bool {
    std::path::Path::new("/sys/fs/selinux/enforce").exists()
}
