//! `ListMetricDescriptors` and `ListPodSandboxMetrics`: cAdvisor-named metrics for kubelet's
//! `/metrics/cadvisor` when it takes pod and container stats from the runtime
//! (`PodAndContainerStatsFromCRI`). Every metric carries cAdvisor's label keys `container`,
//! `id`, `image`, `name`, `namespace`, `pod` (plus `cpu`, `interface`, `device`,
//! `failure_type`/`scope` where cAdvisor has them); network metrics are on the pod.
//!
//! CRI metric values are integers, so `container_cpu_usage_seconds_total` is whole seconds
//! (as in CRI-O). The figures come from the same sampling as the stats RPCs.

use proto::cri::{
    ContainerMetrics, ListMetricDescriptorsRequest, ListMetricDescriptorsResponse,
    ListPodSandboxMetricsRequest, ListPodSandboxMetricsResponse, Metric, MetricDescriptor,
    MetricType, PodSandboxMetrics,
};
use tonic::Status;

use crate::container_stats::value;
use crate::sandbox_stats::{select_ready_pods, with_containers};
use crate::state::DaemonState;
use crate::stats_fs::LayerUsage;
use crate::stats_sample::{CgroupSample, ContainerSample, NetworkSample, PodSample, sample_pods};

/// cAdvisor's label keys, in its order; every metric starts with these.
pub const BASE_LABEL_KEYS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

/// One metric berth reports: its descriptor and type.
#[derive(Debug)]
pub struct MetricDef {
    pub name: &'static str,
    pub help: &'static str,
    /// Label keys after [`BASE_LABEL_KEYS`].
    pub extra_keys: &'static [&'static str],
    pub kind: MetricType,
}

const fn def(
    name: &'static str,
    help: &'static str,
    extra_keys: &'static [&'static str],
    kind: MetricType,
) -> MetricDef {
    MetricDef {
        name,
        help,
        extra_keys,
        kind,
    }
}

use MetricType::{Counter, Gauge};

pub const CPU_USAGE: MetricDef = def(
    "container_cpu_usage_seconds_total",
    "Cumulative cpu time consumed in seconds.",
    &["cpu"],
    Counter,
);
pub const MEMORY_USAGE: MetricDef = def(
    "container_memory_usage_bytes",
    "Current memory usage in bytes, including all memory regardless of when it was accessed",
    &[],
    Gauge,
);
pub const MEMORY_WORKING_SET: MetricDef = def(
    "container_memory_working_set_bytes",
    "Current working set in bytes.",
    &[],
    Gauge,
);
pub const MEMORY_RSS: MetricDef = def("container_memory_rss", "Size of RSS in bytes.", &[], Gauge);
pub const MEMORY_FAILURES: MetricDef = def(
    "container_memory_failures_total",
    "Cumulative count of memory allocation failures.",
    &["failure_type", "scope"],
    Counter,
);
pub const MEMORY_LIMIT: MetricDef = def(
    "container_spec_memory_limit_bytes",
    "Memory limit for the container.",
    &[],
    Gauge,
);
pub const OOM_EVENTS: MetricDef = def(
    "container_oom_events_total",
    "Count of out of memory events observed for the container",
    &[],
    Counter,
);
pub const FS_USAGE: MetricDef = def(
    "container_fs_usage_bytes",
    "Number of bytes that are consumed by the container on this filesystem.",
    &["device"],
    Gauge,
);
pub const LAST_SEEN: MetricDef = def(
    "container_last_seen",
    "Last time a container was seen by the exporter",
    &[],
    Gauge,
);
const NET: &[&str] = &["interface"];
pub const NET_RX_BYTES: MetricDef = def(
    "container_network_receive_bytes_total",
    "Cumulative count of bytes received",
    NET,
    Counter,
);
pub const NET_RX_PACKETS: MetricDef = def(
    "container_network_receive_packets_total",
    "Cumulative count of packets received",
    NET,
    Counter,
);
pub const NET_RX_DROPPED: MetricDef = def(
    "container_network_receive_packets_dropped_total",
    "Cumulative count of packets dropped while receiving",
    NET,
    Counter,
);
pub const NET_RX_ERRORS: MetricDef = def(
    "container_network_receive_errors_total",
    "Cumulative count of errors encountered while receiving",
    NET,
    Counter,
);
pub const NET_TX_BYTES: MetricDef = def(
    "container_network_transmit_bytes_total",
    "Cumulative count of bytes transmitted",
    NET,
    Counter,
);
pub const NET_TX_PACKETS: MetricDef = def(
    "container_network_transmit_packets_total",
    "Cumulative count of packets transmitted",
    NET,
    Counter,
);
pub const NET_TX_DROPPED: MetricDef = def(
    "container_network_transmit_packets_dropped_total",
    "Cumulative count of packets dropped while transmitting",
    NET,
    Counter,
);
pub const NET_TX_ERRORS: MetricDef = def(
    "container_network_transmit_errors_total",
    "Cumulative count of errors encountered while transmitting",
    NET,
    Counter,
);

/// Every metric berth reports, in `ListMetricDescriptors` order.
pub const METRICS: [&MetricDef; 17] = [
    &CPU_USAGE,
    &MEMORY_USAGE,
    &MEMORY_WORKING_SET,
    &MEMORY_RSS,
    &MEMORY_FAILURES,
    &MEMORY_LIMIT,
    &OOM_EVENTS,
    &FS_USAGE,
    &LAST_SEEN,
    &NET_RX_BYTES,
    &NET_RX_PACKETS,
    &NET_RX_DROPPED,
    &NET_RX_ERRORS,
    &NET_TX_BYTES,
    &NET_TX_PACKETS,
    &NET_TX_DROPPED,
    &NET_TX_ERRORS,
];

pub async fn list_metric_descriptors(
    _state: &DaemonState,
    _req: &ListMetricDescriptorsRequest,
) -> Result<ListMetricDescriptorsResponse, Status> {
    Ok(ListMetricDescriptorsResponse {
        descriptors: METRICS.iter().map(|m| descriptor(m)).collect(),
    })
}

pub async fn list_pod_sandbox_metrics(
    state: &DaemonState,
    _req: &ListPodSandboxMetricsRequest,
) -> Result<ListPodSandboxMetricsResponse, Status> {
    let pods = select_ready_pods(state, None);
    let samples = sample_pods(&state.stats, with_containers(state, pods)).await?;
    Ok(ListPodSandboxMetricsResponse {
        pod_metrics: samples.iter().map(pod_metrics).collect(),
    })
}

fn descriptor(m: &MetricDef) -> MetricDescriptor {
    MetricDescriptor {
        name: m.name.into(),
        help: m.help.into(),
        label_keys: BASE_LABEL_KEYS
            .iter()
            .chain(m.extra_keys)
            .map(|k| k.to_string())
            .collect(),
    }
}

/// The metrics of one pod: its cgroup and network on the pod, each container's own.
pub fn pod_metrics(sample: &PodSample) -> PodSandboxMetrics {
    let meta = sample.rec.metadata();
    let labels = vec![
        String::new(),
        cgroup_id(&sample.rec.host.cgroup),
        String::new(),
        sample.rec.id.clone(),
        meta.namespace.clone(),
        meta.name.clone(),
    ];
    let mut metrics = Vec::new();
    if let Some(c) = sample.cgroup {
        metrics.extend(cgroup_metrics(&labels, c));
    }
    if let Some(n) = &sample.network {
        metrics.extend(network_metrics(&labels, n));
    }
    let container_metrics = sample
        .containers
        .iter()
        .filter(|c| c.cgroup.is_some() || c.layer.is_some())
        .map(|c| ContainerMetrics {
            container_id: c.rec.id.clone(),
            metrics: container_metrics(c, &meta.namespace, &meta.name),
        })
        .collect();
    PodSandboxMetrics {
        pod_sandbox_id: sample.rec.id.clone(),
        metrics,
        container_metrics,
    }
}

/// cAdvisor's `id` label: the cgroup path from the hierarchy root.
fn cgroup_id(cgroup: &str) -> String {
    if cgroup.is_empty() {
        String::new()
    } else {
        format!("/{}", cgroup.trim_start_matches('/'))
    }
}

fn container_metrics(c: &ContainerSample, namespace: &str, pod: &str) -> Vec<Metric> {
    let labels = vec![
        c.rec.metadata().name,
        cgroup_id(&c.rec.cgroup),
        c.rec.image.clone(),
        c.rec.id.clone(),
        namespace.to_string(),
        pod.to_string(),
    ];
    let mut metrics = Vec::new();
    if let Some(cg) = c.cgroup {
        metrics.extend(cgroup_metrics(&labels, cg));
    }
    if let Some(layer) = &c.layer {
        metrics.push(fs_usage(&labels, layer));
    }
    metrics
}

fn metric(def: &MetricDef, base: &[String], extra: &[&str], at_ns: i64, v: u64) -> Metric {
    Metric {
        name: def.name.into(),
        timestamp: at_ns,
        metric_type: def.kind as i32,
        label_values: base
            .iter()
            .cloned()
            .chain(extra.iter().map(|s| s.to_string()))
            .collect(),
        value: Some(value(v)),
    }
}

/// CPU, memory, OOM and last-seen metrics of a cgroup.
fn cgroup_metrics(labels: &[String], c: CgroupSample) -> Vec<Metric> {
    let (s, at) = (c.stats, c.at_ns);
    let m = |def: &MetricDef, extra: &[&str], v: u64| metric(def, labels, extra, at, v);
    let mut out = vec![
        m(&CPU_USAGE, &["total"], s.cpu_usage_ns / 1_000_000_000),
        m(&MEMORY_USAGE, &[], s.memory_usage),
        m(&MEMORY_WORKING_SET, &[], s.memory_working_set),
        m(&MEMORY_RSS, &[], s.memory_rss),
        m(&MEMORY_FAILURES, &["pgfault", "hierarchy"], s.page_faults),
        m(
            &MEMORY_FAILURES,
            &["pgmajfault", "hierarchy"],
            s.major_page_faults,
        ),
        m(&OOM_EVENTS, &[], s.oom_kills),
        m(
            &LAST_SEEN,
            &[],
            u64::try_from(at / 1_000_000_000).unwrap_or(0),
        ),
    ];
    // cAdvisor reports 0 for an unlimited container.
    out.push(m(&MEMORY_LIMIT, &[], s.memory_limit.unwrap_or(0)));
    out
}

fn fs_usage(labels: &[String], layer: &LayerUsage) -> Metric {
    metric(
        &FS_USAGE,
        labels,
        &[layer.mountpoint.as_str()],
        layer.at_ns,
        layer.bytes,
    )
}

/// The eight network counters of each interface.
fn network_metrics(labels: &[String], n: &NetworkSample) -> Vec<Metric> {
    let mut out = Vec::new();
    for i in &n.interfaces {
        let name = [i.name.as_str()];
        for (def, v) in [
            (&NET_RX_BYTES, i.rx_bytes),
            (&NET_RX_PACKETS, i.rx_packets),
            (&NET_RX_DROPPED, i.rx_dropped),
            (&NET_RX_ERRORS, i.rx_errors),
            (&NET_TX_BYTES, i.tx_bytes),
            (&NET_TX_PACKETS, i.tx_packets),
            (&NET_TX_DROPPED, i.tx_dropped),
            (&NET_TX_ERRORS, i.tx_errors),
        ] {
            out.push(metric(def, labels, &name, n.at_ns, v));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use runtime_core::cgroups::CgroupStats;

    use super::*;
    use crate::stats_net::InterfaceCounters;

    fn labels() -> Vec<String> {
        BASE_LABEL_KEYS.iter().map(|k| format!("v-{k}")).collect()
    }

    /// kubelet drops a metric whose label values do not match its descriptor's keys.
    fn assert_matches_descriptor(m: &Metric) {
        let def = METRICS
            .iter()
            .find(|d| d.name == m.name)
            .unwrap_or_else(|| panic!("{} has no descriptor", m.name));
        assert_eq!(
            m.label_values.len(),
            descriptor(def).label_keys.len(),
            "{}",
            m.name
        );
        assert_eq!(m.metric_type, def.kind as i32, "{}", m.name);
        assert!(m.timestamp > 0, "{}", m.name);
    }

    #[test]
    fn descriptor_names_are_unique_and_keys_start_with_cadvisors() {
        let names: HashSet<&str> = METRICS.iter().map(|m| m.name).collect();
        assert_eq!(names.len(), METRICS.len());
        let cpu = descriptor(&CPU_USAGE);
        assert_eq!(
            cpu.label_keys,
            [
                "container",
                "id",
                "image",
                "name",
                "namespace",
                "pod",
                "cpu"
            ]
        );
    }

    #[test]
    fn cgroup_metrics_convert_units_and_match_their_descriptors() {
        let sample = CgroupSample {
            stats: CgroupStats {
                cpu_usage_ns: 2_600_000_000,
                memory_usage: 100,
                memory_working_set: 80,
                memory_rss: 60,
                page_faults: 5,
                major_page_faults: 1,
                pids: 3,
                oom_kills: 0,
                memory_limit: Some(4096),
            },
            at_ns: 1_700_000_000_123_456_789,
        };
        let metrics = cgroup_metrics(&labels(), sample);
        metrics.iter().for_each(assert_matches_descriptor);
        let get = |name: &str| {
            metrics
                .iter()
                .find(|m| m.name == name)
                .and_then(|m| m.value.as_ref())
                .map(|v| v.value)
        };
        assert_eq!(get(CPU_USAGE.name), Some(2), "whole seconds");
        assert_eq!(get(MEMORY_WORKING_SET.name), Some(80));
        assert_eq!(get(MEMORY_LIMIT.name), Some(4096));
        assert_eq!(get(LAST_SEEN.name), Some(1_700_000_000));
    }

    #[test]
    fn network_metrics_cover_each_interface() {
        let n = NetworkSample {
            interfaces: vec![
                InterfaceCounters {
                    name: "eth0".into(),
                    rx_bytes: 10,
                    tx_bytes: 20,
                    ..Default::default()
                },
                InterfaceCounters {
                    name: "net1".into(),
                    ..Default::default()
                },
            ],
            at_ns: 1,
        };
        let metrics = network_metrics(&labels(), &n);
        assert_eq!(metrics.len(), 16);
        metrics.iter().for_each(assert_matches_descriptor);
        let rx = metrics
            .iter()
            .find(|m| {
                m.name == NET_RX_BYTES.name && m.label_values.last().is_some_and(|l| l == "eth0")
            })
            .expect("eth0 rx");
        assert_eq!(rx.value, Some(value(10)));
    }

    #[test]
    fn cgroup_ids_are_absolute_paths() {
        assert_eq!(cgroup_id("kubepods/pod1/abc"), "/kubepods/pod1/abc");
        assert_eq!(cgroup_id(""), "");
    }
}
