//! `PodSandboxStats` and `ListPodSandboxStats`: CPU, memory and process count from the pod
//! cgroup, network counters from the pod's network namespace, and the stats of each of the
//! pod's containers (see `docs/stats.md`).
//!
//! As in containerd, the list covers Ready pods only; asking for one pod by ID also answers
//! for a stopped pod, with whatever can still be read.

use std::collections::HashSet;

use proto::cri::{
    LinuxPodSandboxStats, ListPodSandboxStatsRequest, ListPodSandboxStatsResponse,
    NetworkInterfaceUsage, NetworkUsage, PodSandboxAttributes, PodSandboxStats,
    PodSandboxStatsFilter, PodSandboxStatsRequest, PodSandboxStatsResponse, ProcessUsage,
};
use tonic::Status;

use crate::lifecycle::record::find_pod;
use crate::rpc::container_stats::{self, cpu_usage, memory_usage, value};
use crate::state::DaemonState;
use crate::stats::cache::StatsCache;
use crate::stats::net::{DEFAULT_INTERFACE, InterfaceCounters};
use crate::stats::sample::{NetworkSample, PodSample, sample_pods};
use crate::store::containers::{self, ContainerRecord};
use crate::store::pods::{Lookup, PodPhase, PodRecord};

pub async fn pod_sandbox_stats(
    state: &DaemonState,
    req: &PodSandboxStatsRequest,
) -> Result<PodSandboxStatsResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(Status::invalid_argument("pod_sandbox_id is required"));
    }
    let pod = find_pod(state, &req.pod_sandbox_id)?;
    let containers = containers::of_pod(&state.containers, &pod.id);
    let sample = sample_pods(&state.stats, vec![(pod, containers)])
        .await?
        .pop()
        .ok_or_else(|| Status::internal("pod stats: no sample"))?;
    Ok(PodSandboxStatsResponse {
        stats: Some(to_cri(&sample, &state.stats)),
    })
}

pub async fn list_pod_sandbox_stats(
    state: &DaemonState,
    req: &ListPodSandboxStatsRequest,
) -> Result<ListPodSandboxStatsResponse, Status> {
    let pods = select_ready_pods(state, req.filter.as_ref());
    let samples = sample_pods(&state.stats, with_containers(state, pods)).await?;
    Ok(ListPodSandboxStatsResponse {
        stats: samples.iter().map(|s| to_cri(s, &state.stats)).collect(),
    })
}

/// Ready pods matching the filter: the ID exactly or as a unique prefix (as
/// `ListPodSandbox`), every selector label present with its value. An unfiltered call also
/// drops cached samples of removed pods and containers.
pub fn select_ready_pods(
    state: &DaemonState,
    filter: Option<&PodSandboxStatsFilter>,
) -> Vec<PodRecord> {
    let candidates = match filter.map(|f| f.id.as_str()).filter(|id| !id.is_empty()) {
        Some(id) => match state.pods.lookup(id) {
            Lookup::Found(rec) => vec![*rec],
            Lookup::Missing | Lookup::Ambiguous(_) => Vec::new(),
        },
        None => {
            let all = state.pods.list();
            let known: HashSet<&str> = all.iter().map(|p| p.id.as_str()).collect();
            state.stats.pod_cpu().retain(|id| known.contains(id));
            container_stats::forget_removed(state, &state.containers.list());
            all
        }
    };
    let labels_match = |rec: &PodRecord| {
        filter.is_none_or(|f| {
            crate::rpc::sandbox_list::state_and_labels_match(
                None,
                0,
                &f.label_selector,
                &rec.config.labels,
            )
        })
    };
    candidates
        .into_iter()
        .filter(|rec| rec.phase == PodPhase::Ready && labels_match(rec))
        .collect()
}

/// Pairs each pod with its containers.
pub fn with_containers(
    state: &DaemonState,
    pods: Vec<PodRecord>,
) -> Vec<(PodRecord, Vec<ContainerRecord>)> {
    let mut containers = state.containers.list();
    pods.into_iter()
        .map(|pod| {
            let (mine, rest) = containers.drain(..).partition(|c| c.pod_id == pod.id);
            containers = rest;
            (pod, mine)
        })
        .collect()
}

/// The CRI view of a pod sample; updates the pod's and containers' CPU rates.
pub fn to_cri(sample: &PodSample, cache: &StatsCache) -> PodSandboxStats {
    let rec = &sample.rec;
    let containers = sample
        .containers
        .iter()
        .map(|c| container_stats::to_cri(c, cache.container_cpu()))
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
