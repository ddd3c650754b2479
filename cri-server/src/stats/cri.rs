//! The CRI view of stats samples (`ContainerStats`, `PodSandboxStats`), shared by the stats
//! RPCs; converting a sample updates the CPU rates kept in the cache.

use proto::cri::{
    ContainerAttributes, ContainerStats, CpuUsage, FilesystemIdentifier, FilesystemUsage,
    LinuxPodSandboxStats, MemoryUsage, NetworkInterfaceUsage, NetworkUsage, PodSandboxAttributes,
    PodSandboxStats, ProcessUsage, UInt64Value,
};

use crate::stats::cache::StatsCache;
use crate::stats::cpu::{CpuRates, CpuSample};
use crate::stats::fs::LayerUsage;
use crate::stats::net::{DEFAULT_INTERFACE, InterfaceCounters};
use crate::stats::sample::{CgroupSample, ContainerSample, NetworkSample, PodSample};

/// The CRI view of a container sample; updates the container's CPU rate.
pub fn container_stats(sample: &ContainerSample, rates: &CpuRates) -> ContainerStats {
    let rec = &sample.rec;
    ContainerStats {
        attributes: Some(ContainerAttributes {
            id: rec.id.clone(),
            metadata: Some(rec.metadata()),
            labels: rec.config.labels.clone(),
            annotations: rec.config.annotations.clone(),
        }),
        cpu: sample.cgroup.map(|c| cpu_usage(&rec.id, c, rates)),
        memory: sample.cgroup.map(memory_usage),
        writable_layer: sample.layer.as_ref().map(filesystem_usage),
        swap: None,
        // Pressure (PSI) figures are not read yet: io carries only them.
        io: None,
    }
}

/// The CRI view of a pod sample; updates the pod's and containers' CPU rates.
pub fn pod_stats(sample: &PodSample, cache: &StatsCache) -> PodSandboxStats {
    let rec = &sample.rec;
    let containers = sample
        .containers
        .iter()
        .map(|c| container_stats(c, cache.container_cpu()))
        .collect();
    PodSandboxStats {
        attributes: Some(PodSandboxAttributes {
            id: rec.id.clone(),
            metadata: Some(rec.metadata()),
            labels: rec.config.labels.clone(),
            annotations: rec.config.annotations.clone(),
        }),
        linux: Some(LinuxPodSandboxStats {
            cpu: sample
                .cgroup
                .map(|c| cpu_usage(&rec.id, c, cache.pod_cpu())),
            memory: sample.cgroup.map(memory_usage),
            network: sample.network.as_ref().map(network_usage),
            process: sample.cgroup.map(|c| ProcessUsage {
                timestamp: c.at_ns,
                process_count: Some(value(c.stats.pids)),
            }),
            containers,
            io: None,
        }),
        windows: None,
    }
}

/// CPU usage with the rate since `id`'s previous sample (absent on the first one).
fn cpu_usage(id: &str, c: CgroupSample, rates: &CpuRates) -> CpuUsage {
    let sample = CpuSample {
        usage_ns: c.stats.cpu_usage_ns,
        at_ns: c.at_ns,
    };
    CpuUsage {
        timestamp: c.at_ns,
        usage_core_nano_seconds: Some(value(c.stats.cpu_usage_ns)),
        usage_nano_cores: rates.observe(id, sample).map(value),
        psi: None,
    }
}

/// Memory usage; `available_bytes` only when the cgroup has a limit.
fn memory_usage(c: CgroupSample) -> MemoryUsage {
    let s = c.stats;
    MemoryUsage {
        timestamp: c.at_ns,
        working_set_bytes: Some(value(s.memory_working_set)),
        available_bytes: s
            .memory_limit
            .map(|limit| value(limit.saturating_sub(s.memory_working_set))),
        usage_bytes: Some(value(s.memory_usage)),
        rss_bytes: Some(value(s.memory_rss)),
        page_faults: Some(value(s.page_faults)),
        major_page_faults: Some(value(s.major_page_faults)),
        psi: None,
    }
}

fn filesystem_usage(layer: &LayerUsage) -> FilesystemUsage {
    FilesystemUsage {
        timestamp: layer.at_ns,
        fs_id: Some(FilesystemIdentifier {
            mountpoint: layer.mountpoint.clone(),
        }),
        used_bytes: Some(value(layer.bytes)),
        inodes_used: Some(value(layer.inodes)),
    }
}

/// Network usage: `eth0` (or the first interface) as the default one; like containerd,
/// `interfaces` lists every interface but loopback, the default included, which is what
/// kubelet's summary API shows.
fn network_usage(n: &NetworkSample) -> NetworkUsage {
    let interfaces: Vec<NetworkInterfaceUsage> = n.interfaces.iter().map(interface_usage).collect();
    let default_interface = n
        .interfaces
        .iter()
        .position(|i| i.name == DEFAULT_INTERFACE)
        .or((!interfaces.is_empty()).then_some(0))
        .map(|i| interfaces[i].clone());
    NetworkUsage {
        timestamp: n.at_ns,
        default_interface,
        interfaces,
    }
}

fn interface_usage(i: &InterfaceCounters) -> NetworkInterfaceUsage {
    NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: Some(value(i.rx_bytes)),
        rx_errors: Some(value(i.rx_errors)),
        tx_bytes: Some(value(i.tx_bytes)),
        tx_errors: Some(value(i.tx_errors)),
    }
}

/// A CRI `UInt64Value`.
pub fn value(value: u64) -> UInt64Value {
    UInt64Value { value }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, rx: u64) -> InterfaceCounters {
        InterfaceCounters {
            name: name.into(),
            rx_bytes: rx,
            ..Default::default()
        }
    }

    #[test]
    fn eth0_is_the_default_interface_and_stays_in_the_list() {
        let n = NetworkSample {
            interfaces: vec![iface("net1", 1), iface("eth0", 2)],
            at_ns: 7,
        };
        let usage = network_usage(&n);
        assert_eq!(usage.timestamp, 7);
        let default = usage.default_interface.expect("default");
        assert_eq!(
            (default.name.as_str(), default.rx_bytes),
            ("eth0", Some(value(2)))
        );
        assert_eq!(usage.interfaces.len(), 2);
    }

    #[test]
    fn without_eth0_the_first_interface_is_the_default() {
        let n = NetworkSample {
            interfaces: vec![iface("net1", 1)],
            at_ns: 1,
        };
        assert_eq!(
            network_usage(&n).default_interface.expect("default").name,
            "net1"
        );
        let none = NetworkSample {
            interfaces: vec![],
            at_ns: 1,
        };
        assert!(network_usage(&none).default_interface.is_none());
    }
}
