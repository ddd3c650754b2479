//! The metrics behind `ListMetricDescriptors` and `ListPodSandboxMetrics` (`rpc::pod_metrics`):
//! cAdvisor-named metrics for kubelet's `/metrics/cadvisor` when it takes pod and container stats from the runtime
//! (`PodAndContainerStatsFromCRI`). Every metric carries cAdvisor's label keys `container`,
//! `id`, `image`, `name`, `namespace`, `pod` (plus `cpu`, `interface`, `device`, `major`,
//! `minor`, `operation`, `pagesize`, `ulimit`, `failure_type`/`scope` where cAdvisor has
//! them); network metrics are on the pod.
//!
//! CRI metric values are integers, so seconds are whole seconds (as in CRI-O). The figures
//! come from cgroupfs ([`Cgroup::metrics`](runtime_core::cgroups::Cgroup::metrics)), `/proc`
//! and `statvfs`; docs/stats.md lists where each one comes from.

use proto::cri::{ContainerMetrics, Metric, MetricDescriptor, MetricType, PodSandboxMetrics};
use runtime_core::cgroups::CgroupMetrics;

use crate::stats::cri::value;
use crate::stats::fs::{FsCapacity, LayerUsage};
use crate::stats::sample::{
    CgroupMetricsSample, ContainerMetricsSample, NetworkSample, PodMetricsSample,
};
use crate::store::ids::now_ns;

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

const NONE: &[&str] = &[];
const DEVICE: &[&str] = &["device"];
const NET: &[&str] = &["interface"];
const PAGESIZE: &[&str] = &["pagesize"];

pub const CPU_USAGE: MetricDef = def(
    "container_cpu_usage_seconds_total",
    "Cumulative cpu time consumed in seconds.",
    &["cpu"],
    Counter,
);
pub const CPU_USER: MetricDef = def(
    "container_cpu_user_seconds_total",
    "Cumulative user cpu time consumed in seconds.",
    NONE,
    Counter,
);
pub const CPU_SYSTEM: MetricDef = def(
    "container_cpu_system_seconds_total",
    "Cumulative system cpu time consumed in seconds.",
    NONE,
    Counter,
);
pub const CFS_PERIODS: MetricDef = def(
    "container_cpu_cfs_periods_total",
    "Number of elapsed enforcement period intervals.",
    NONE,
    Counter,
);
pub const CFS_THROTTLED_PERIODS: MetricDef = def(
    "container_cpu_cfs_throttled_periods_total",
    "Number of throttled period intervals.",
    NONE,
    Counter,
);
pub const CFS_THROTTLED_SECONDS: MetricDef = def(
    "container_cpu_cfs_throttled_seconds_total",
    "Total time duration the container has been throttled.",
    NONE,
    Counter,
);
pub const MEMORY_USAGE: MetricDef = def(
    "container_memory_usage_bytes",
    "Current memory usage in bytes, including all memory regardless of when it was accessed",
    NONE,
    Gauge,
);
pub const MEMORY_MAX_USAGE: MetricDef = def(
    "container_memory_max_usage_bytes",
    "Maximum memory usage recorded in bytes",
    NONE,
    Gauge,
);
pub const MEMORY_WORKING_SET: MetricDef = def(
    "container_memory_working_set_bytes",
    "Current working set in bytes.",
    NONE,
    Gauge,
);
pub const MEMORY_RSS: MetricDef = def("container_memory_rss", "Size of RSS in bytes.", NONE, Gauge);
pub const MEMORY_CACHE: MetricDef = def(
    "container_memory_cache",
    "Number of bytes of page cache memory.",
    NONE,
    Gauge,
);
pub const MEMORY_MAPPED_FILE: MetricDef = def(
    "container_memory_mapped_file",
    "Size of memory mapped files in bytes.",
    NONE,
    Gauge,
);
pub const MEMORY_KERNEL: MetricDef = def(
    "container_memory_kernel_usage",
    "Size of kernel memory allocated in bytes.",
    NONE,
    Gauge,
);
pub const MEMORY_SWAP: MetricDef = def(
    "container_memory_swap",
    "Container swap usage in bytes.",
    NONE,
    Gauge,
);
pub const MEMORY_FAILCNT: MetricDef = def(
    "container_memory_failcnt",
    "Number of memory usage hits limits",
    NONE,
    Counter,
);
pub const MEMORY_FAILURES: MetricDef = def(
    "container_memory_failures_total",
    "Cumulative count of memory allocation failures.",
    &["failure_type", "scope"],
    Counter,
);
pub const OOM_EVENTS: MetricDef = def(
    "container_oom_events_total",
    "Count of out of memory events observed for the container",
    NONE,
    Counter,
);
pub const SPEC_CPU_PERIOD: MetricDef = def(
    "container_spec_cpu_period",
    "CPU period of the container.",
    NONE,
    Gauge,
);
pub const SPEC_CPU_QUOTA: MetricDef = def(
    "container_spec_cpu_quota",
    "CPU quota of the container.",
    NONE,
    Gauge,
);
pub const SPEC_CPU_SHARES: MetricDef = def(
    "container_spec_cpu_shares",
    "CPU share of the container.",
    NONE,
    Gauge,
);
pub const MEMORY_LIMIT: MetricDef = def(
    "container_spec_memory_limit_bytes",
    "Memory limit for the container.",
    NONE,
    Gauge,
);
pub const SPEC_MEMORY_RESERVATION: MetricDef = def(
    "container_spec_memory_reservation_limit_bytes",
    "Memory reservation limit for the container.",
    NONE,
    Gauge,
);
pub const SPEC_MEMORY_SWAP_LIMIT: MetricDef = def(
    "container_spec_memory_swap_limit_bytes",
    "Memory swap limit for the container.",
    NONE,
    Gauge,
);
pub const START_TIME: MetricDef = def(
    "container_start_time_seconds",
    "Start time of the container since unix epoch in seconds.",
    NONE,
    Gauge,
);
pub const LAST_SEEN: MetricDef = def(
    "container_last_seen",
    "Last time a container was seen by the exporter",
    NONE,
    Gauge,
);
pub const PROCESSES: MetricDef = def(
    "container_processes",
    "Number of processes running inside the container.",
    NONE,
    Gauge,
);
pub const THREADS: MetricDef = def(
    "container_threads",
    "Number of threads running inside the container",
    NONE,
    Gauge,
);
pub const THREADS_MAX: MetricDef = def(
    "container_threads_max",
    "Maximum number of threads allowed inside the container, infinity if value is zero",
    NONE,
    Gauge,
);
pub const FILE_DESCRIPTORS: MetricDef = def(
    "container_file_descriptors",
    "Number of open file descriptors for the container.",
    NONE,
    Gauge,
);
pub const SOCKETS: MetricDef = def(
    "container_sockets",
    "Number of open sockets for the container.",
    NONE,
    Gauge,
);
pub const ULIMITS_SOFT: MetricDef = def(
    "container_ulimits_soft",
    "Soft ulimit values for the container root process. Unlimited if -1, except priority and nice",
    &["ulimit"],
    Gauge,
);
pub const FS_USAGE: MetricDef = def(
    "container_fs_usage_bytes",
    "Number of bytes that are consumed by the container on this filesystem.",
    DEVICE,
    Gauge,
);
pub const FS_LIMIT: MetricDef = def(
    "container_fs_limit_bytes",
    "Number of bytes that can be consumed by the container on this filesystem.",
    DEVICE,
    Gauge,
);
pub const FS_INODES_TOTAL: MetricDef = def(
    "container_fs_inodes_total",
    "Number of Inodes",
    DEVICE,
    Gauge,
);
pub const FS_INODES_FREE: MetricDef = def(
    "container_fs_inodes_free",
    "Number of available Inodes",
    DEVICE,
    Gauge,
);
pub const FS_READS_BYTES: MetricDef = def(
    "container_fs_reads_bytes_total",
    "Cumulative count of bytes read",
    DEVICE,
    Counter,
);
pub const FS_READS: MetricDef = def(
    "container_fs_reads_total",
    "Cumulative count of reads completed",
    DEVICE,
    Counter,
);
pub const FS_WRITES_BYTES: MetricDef = def(
    "container_fs_writes_bytes_total",
    "Cumulative count of bytes written",
    DEVICE,
    Counter,
);
pub const FS_WRITES: MetricDef = def(
    "container_fs_writes_total",
    "Cumulative count of writes completed",
    DEVICE,
    Counter,
);
pub const BLKIO_DEVICE_USAGE: MetricDef = def(
    "container_blkio_device_usage_total",
    "Blkio Device bytes usage",
    &["device", "major", "minor", "operation"],
    Counter,
);
pub const HUGETLB_USAGE: MetricDef = def(
    "container_hugetlb_usage_bytes",
    "Hugepage usage in bytes",
    PAGESIZE,
    Gauge,
);
pub const HUGETLB_MAX_USAGE: MetricDef = def(
    "container_hugetlb_max_usage_bytes",
    "Hugepage maximum usage in bytes",
    PAGESIZE,
    Gauge,
);
pub const PRESSURE_CPU_STALLED: MetricDef = def(
    "container_pressure_cpu_stalled_seconds_total",
    "Total time duration no tasks in the container could make progress due to CPU congestion.",
    NONE,
    Counter,
);
pub const PRESSURE_CPU_WAITING: MetricDef = def(
    "container_pressure_cpu_waiting_seconds_total",
    "Total time duration tasks in the container have waited due to CPU congestion.",
    NONE,
    Counter,
);
pub const PRESSURE_MEMORY_STALLED: MetricDef = def(
    "container_pressure_memory_stalled_seconds_total",
    "Total time duration no tasks in the container could make progress due to memory congestion.",
    NONE,
    Counter,
);
pub const PRESSURE_MEMORY_WAITING: MetricDef = def(
    "container_pressure_memory_waiting_seconds_total",
    "Total time duration tasks in the container have waited due to memory congestion.",
    NONE,
    Counter,
);
pub const PRESSURE_IO_STALLED: MetricDef = def(
    "container_pressure_io_stalled_seconds_total",
    "Total time duration no tasks in the container could make progress due to IO congestion.",
    NONE,
    Counter,
);
pub const PRESSURE_IO_WAITING: MetricDef = def(
    "container_pressure_io_waiting_seconds_total",
    "Total time duration tasks in the container have waited due to IO congestion.",
    NONE,
    Counter,
);
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
pub const METRICS: [&MetricDef; 56] = [
    &CPU_USAGE,
    &CPU_USER,
    &CPU_SYSTEM,
    &CFS_PERIODS,
    &CFS_THROTTLED_PERIODS,
    &CFS_THROTTLED_SECONDS,
    &MEMORY_USAGE,
    &MEMORY_MAX_USAGE,
    &MEMORY_WORKING_SET,
    &MEMORY_RSS,
    &MEMORY_CACHE,
    &MEMORY_MAPPED_FILE,
    &MEMORY_KERNEL,
    &MEMORY_SWAP,
    &MEMORY_FAILCNT,
    &MEMORY_FAILURES,
    &OOM_EVENTS,
    &SPEC_CPU_PERIOD,
    &SPEC_CPU_QUOTA,
    &SPEC_CPU_SHARES,
    &MEMORY_LIMIT,
    &SPEC_MEMORY_RESERVATION,
    &SPEC_MEMORY_SWAP_LIMIT,
    &START_TIME,
    &LAST_SEEN,
    &PROCESSES,
    &THREADS,
    &THREADS_MAX,
    &FILE_DESCRIPTORS,
    &SOCKETS,
    &ULIMITS_SOFT,
    &FS_USAGE,
    &FS_LIMIT,
    &FS_INODES_TOTAL,
    &FS_INODES_FREE,
    &FS_READS_BYTES,
    &FS_READS,
    &FS_WRITES_BYTES,
    &FS_WRITES,
    &BLKIO_DEVICE_USAGE,
    &HUGETLB_USAGE,
    &HUGETLB_MAX_USAGE,
    &PRESSURE_CPU_STALLED,
    &PRESSURE_CPU_WAITING,
    &PRESSURE_MEMORY_STALLED,
    &PRESSURE_MEMORY_WAITING,
    &PRESSURE_IO_STALLED,
    &PRESSURE_IO_WAITING,
    &NET_RX_BYTES,
    &NET_RX_PACKETS,
    &NET_RX_DROPPED,
    &NET_RX_ERRORS,
    &NET_TX_BYTES,
    &NET_TX_PACKETS,
    &NET_TX_DROPPED,
    &NET_TX_ERRORS,
];

/// The descriptor of every metric berth reports, in [`METRICS`] order.
pub fn descriptors() -> Vec<MetricDescriptor> {
    METRICS.iter().map(|m| descriptor(m)).collect()
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
pub fn pod_metrics(sample: &PodMetricsSample) -> PodSandboxMetrics {
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
    if let Some(c) = &sample.cgroup {
        metrics.extend(cgroup_metrics(&labels, c));
        metrics.push(start_time(&labels, c.at_ns, sample.rec.created_at));
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

fn container_metrics(c: &ContainerMetricsSample, namespace: &str, pod: &str) -> Vec<Metric> {
    let labels = vec![
        c.rec.metadata().name,
        cgroup_id(&c.rec.cgroup),
        c.rec.image.clone(),
        c.rec.id.clone(),
        namespace.to_string(),
        pod.to_string(),
    ];
    let mut metrics = Vec::new();
    if let Some(cg) = &c.cgroup {
        metrics.extend(cgroup_metrics(&labels, cg));
        if let Some(limit) = c.open_files_limit {
            metrics.push(metric(
                &ULIMITS_SOFT,
                &labels,
                &["max_open_files"],
                cg.at_ns,
                limit,
            ));
        }
    }
    if let Some(layer) = &c.layer {
        metrics.extend(fs_metrics(&labels, layer, c.fs));
    }
    let at = c
        .cgroup
        .as_ref()
        .map(|cg| cg.at_ns)
        .or(c.layer.as_ref().map(|l| l.at_ns))
        .unwrap_or_else(now_ns);
    let started = if c.rec.started_at > 0 {
        c.rec.started_at
    } else {
        c.rec.created_at
    };
    metrics.push(start_time(&labels, at, started));
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

/// Whole seconds of a count of nanoseconds.
fn seconds(ns: u64) -> u64 {
    ns / 1_000_000_000
}

fn start_time(labels: &[String], at_ns: i64, started_ns: i64) -> Metric {
    let secs = u64::try_from(started_ns / 1_000_000_000).unwrap_or(0);
    metric(&START_TIME, labels, &[], at_ns, secs)
}

/// Every metric of a cgroup: CPU, memory, limits, processes, block I/O, hugepages, pressure.
fn cgroup_metrics(labels: &[String], c: &CgroupMetricsSample) -> Vec<Metric> {
    let (m, at) = (&c.metrics, c.at_ns);
    let s = &m.stats;
    let one = |def: &MetricDef, v: u64| metric(def, labels, &[], at, v);
    let mut out = vec![
        metric(&CPU_USAGE, labels, &["total"], at, seconds(s.cpu_usage_ns)),
        one(&CPU_USER, seconds(m.cpu_user_ns)),
        one(&CPU_SYSTEM, seconds(m.cpu_system_ns)),
        one(&CFS_PERIODS, m.cfs_periods),
        one(&CFS_THROTTLED_PERIODS, m.cfs_throttled_periods),
        one(&CFS_THROTTLED_SECONDS, seconds(m.cfs_throttled_ns)),
        one(&MEMORY_USAGE, s.memory_usage),
        // 0 where the kernel records no peak (cgroup v2 before Linux 5.19), as cAdvisor.
        one(&MEMORY_MAX_USAGE, m.memory_max_usage.unwrap_or(0)),
        one(&MEMORY_WORKING_SET, s.memory_working_set),
        one(&MEMORY_RSS, s.memory_rss),
        one(&MEMORY_CACHE, m.memory_cache),
        one(&MEMORY_MAPPED_FILE, m.memory_mapped_file),
        one(&MEMORY_KERNEL, m.memory_kernel),
        one(&MEMORY_SWAP, m.memory_swap),
        one(&MEMORY_FAILCNT, m.memory_failcnt),
        metric(
            &MEMORY_FAILURES,
            labels,
            &["pgfault", "hierarchy"],
            at,
            s.page_faults,
        ),
        metric(
            &MEMORY_FAILURES,
            labels,
            &["pgmajfault", "hierarchy"],
            at,
            s.major_page_faults,
        ),
        one(&OOM_EVENTS, s.oom_kills),
        // Limits are 0 when unlimited, as cAdvisor reports them.
        one(&MEMORY_LIMIT, s.memory_limit.unwrap_or(0)),
        one(&SPEC_MEMORY_RESERVATION, m.memory_reservation.unwrap_or(0)),
        one(&SPEC_MEMORY_SWAP_LIMIT, m.memory_swap_limit.unwrap_or(0)),
        one(&LAST_SEEN, u64::try_from(at / 1_000_000_000).unwrap_or(0)),
        one(&PROCESSES, c.procs.processes),
        one(&THREADS, s.pids),
        one(&THREADS_MAX, m.threads_max.unwrap_or(0)),
        one(&FILE_DESCRIPTORS, c.procs.fds),
        one(&SOCKETS, c.procs.sockets),
    ];
    // cAdvisor reports the CPU spec only where the cpu controller has it, and a quota only
    // when one is set.
    out.extend(m.cpu_period_us.map(|v| one(&SPEC_CPU_PERIOD, v)));
    out.extend(m.cpu_quota_us.map(|v| one(&SPEC_CPU_QUOTA, v)));
    out.extend(m.cpu_shares.map(|v| one(&SPEC_CPU_SHARES, v)));
    out.extend(block_io_metrics(labels, m, &c.device_names, at));
    for h in &m.hugetlb {
        let size = [h.pagesize.as_str()];
        out.push(metric(&HUGETLB_USAGE, labels, &size, at, h.usage));
        if let Some(max) = h.max_usage {
            out.push(metric(&HUGETLB_MAX_USAGE, labels, &size, at, max));
        }
    }
    if let Some(p) = m.pressure {
        let secs = |us: u64| us / 1_000_000;
        out.extend([
            one(&PRESSURE_CPU_STALLED, secs(p.cpu.full_us)),
            one(&PRESSURE_CPU_WAITING, secs(p.cpu.some_us)),
            one(&PRESSURE_MEMORY_STALLED, secs(p.memory.full_us)),
            one(&PRESSURE_MEMORY_WAITING, secs(p.memory.some_us)),
            one(&PRESSURE_IO_STALLED, secs(p.io.full_us)),
            one(&PRESSURE_IO_WAITING, secs(p.io.some_us)),
        ]);
    }
    out
}

/// Per device: cAdvisor's `container_fs_{reads,writes}[_bytes]_total` and
/// `container_blkio_device_usage_total` (bytes by operation).
fn block_io_metrics(
    labels: &[String],
    m: &CgroupMetrics,
    names: &[String],
    at: i64,
) -> Vec<Metric> {
    let mut out = Vec::new();
    for (i, dev) in m.block_io.iter().enumerate() {
        let name = names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("{}:{}", dev.major, dev.minor));
        let device = [name.as_str()];
        for (def, map, op) in [
            (&FS_READS_BYTES, &dev.bytes, "Read"),
            (&FS_READS, &dev.ios, "Read"),
            (&FS_WRITES_BYTES, &dev.bytes, "Write"),
            (&FS_WRITES, &dev.ios, "Write"),
        ] {
            if let Some(v) = map.get(op) {
                out.push(metric(def, labels, &device, at, *v));
            }
        }
        let (major, minor) = (dev.major.to_string(), dev.minor.to_string());
        for (op, v) in &dev.bytes {
            let extra = [name.as_str(), major.as_str(), minor.as_str(), op.as_str()];
            out.push(metric(&BLKIO_DEVICE_USAGE, labels, &extra, at, *v));
        }
    }
    out
}

/// Writable-layer usage and the capacity of the filesystem holding it.
fn fs_metrics(labels: &[String], layer: &LayerUsage, fs: Option<FsCapacity>) -> Vec<Metric> {
    let device = [layer.mountpoint.as_str()];
    let at = layer.at_ns;
    let mut out = vec![metric(&FS_USAGE, labels, &device, at, layer.bytes)];
    if let Some(fs) = fs {
        out.extend([
            metric(&FS_LIMIT, labels, &device, at, fs.bytes),
            metric(&FS_INODES_TOTAL, labels, &device, at, fs.inodes),
            metric(&FS_INODES_FREE, labels, &device, at, fs.inodes_free),
        ]);
    }
    out
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
    use std::collections::{BTreeMap, HashSet};

    use runtime_core::cgroups::{CgroupStats, DeviceIo, HugetlbUsage, Pressure, PressureTotals};

    use super::*;
    use crate::stats::net::InterfaceCounters;
    use crate::stats::proc::ProcessCounts;

    /// critest's expected descriptor names (cri-tools `pkg/validate/pod.go`, 1.36).
    const CRITEST_EXPECTED: &[&str] = &[
        "container_blkio_device_usage_total",
        "container_cpu_cfs_periods_total",
        "container_cpu_cfs_throttled_periods_total",
        "container_cpu_cfs_throttled_seconds_total",
        "container_cpu_system_seconds_total",
        "container_cpu_usage_seconds_total",
        "container_cpu_user_seconds_total",
        "container_file_descriptors",
        "container_fs_inodes_free",
        "container_fs_inodes_total",
        "container_fs_limit_bytes",
        "container_fs_reads_bytes_total",
        "container_fs_reads_total",
        "container_fs_usage_bytes",
        "container_fs_writes_bytes_total",
        "container_fs_writes_total",
        "container_hugetlb_max_usage_bytes",
        "container_hugetlb_usage_bytes",
        "container_last_seen",
        "container_memory_cache",
        "container_memory_failcnt",
        "container_memory_failures_total",
        "container_memory_kernel_usage",
        "container_memory_mapped_file",
        "container_memory_max_usage_bytes",
        "container_memory_rss",
        "container_memory_swap",
        "container_memory_usage_bytes",
        "container_memory_working_set_bytes",
        "container_network_receive_bytes_total",
        "container_network_receive_errors_total",
        "container_network_receive_packets_dropped_total",
        "container_network_receive_packets_total",
        "container_network_transmit_bytes_total",
        "container_network_transmit_errors_total",
        "container_network_transmit_packets_dropped_total",
        "container_network_transmit_packets_total",
        "container_oom_events_total",
        "container_pressure_cpu_stalled_seconds_total",
        "container_pressure_cpu_waiting_seconds_total",
        "container_pressure_io_stalled_seconds_total",
        "container_pressure_io_waiting_seconds_total",
        "container_pressure_memory_stalled_seconds_total",
        "container_pressure_memory_waiting_seconds_total",
        "container_processes",
        "container_sockets",
        "container_spec_cpu_period",
        "container_spec_cpu_quota",
        "container_spec_cpu_shares",
        "container_spec_memory_limit_bytes",
        "container_spec_memory_reservation_limit_bytes",
        "container_spec_memory_swap_limit_bytes",
        "container_start_time_seconds",
        "container_threads",
        "container_threads_max",
        "container_ulimits_soft",
    ];

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

    fn get(metrics: &[Metric], name: &str) -> Option<u64> {
        metrics
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.value.as_ref())
            .map(|v| v.value)
    }

    const AT: i64 = 1_700_000_000_123_456_789;

    /// A cgroup with every figure present, as a v2 kernel with PSI and hugepages reports it.
    fn full_sample() -> CgroupMetricsSample {
        let ops = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        let psi = PressureTotals {
            some_us: 3_500_000,
            full_us: 1_200_000,
        };
        CgroupMetricsSample {
            metrics: CgroupMetrics {
                stats: CgroupStats {
                    cpu_usage_ns: 2_600_000_000,
                    memory_usage: 100,
                    memory_working_set: 80,
                    memory_rss: 60,
                    page_faults: 5,
                    major_page_faults: 1,
                    pids: 7,
                    oom_kills: 0,
                    memory_limit: Some(4096),
                },
                cpu_user_ns: 1_900_000_000,
                cpu_system_ns: 700_000_000,
                cfs_periods: 40,
                cfs_throttled_periods: 7,
                cfs_throttled_ns: 2_500_000_000,
                memory_cache: 20,
                memory_max_usage: Some(150),
                memory_failcnt: 3,
                cpu_period_us: Some(100_000),
                cpu_quota_us: Some(20_000),
                cpu_shares: Some(1024),
                memory_swap_limit: Some(8192),
                threads_max: Some(1024),
                block_io: vec![DeviceIo {
                    major: 8,
                    minor: 0,
                    bytes: ops(&[("Read", 4096), ("Write", 8192)]),
                    ios: ops(&[("Read", 1), ("Write", 2)]),
                }],
                hugetlb: vec![HugetlbUsage {
                    pagesize: "2MB".into(),
                    usage: 2 << 20,
                    max_usage: Some(4 << 20),
                }],
                pressure: Some(Pressure {
                    cpu: psi,
                    memory: psi,
                    io: psi,
                }),
                processes: vec![10, 11],
                ..Default::default()
            },
            procs: ProcessCounts {
                processes: 2,
                fds: 9,
                sockets: 1,
            },
            device_names: vec!["/dev/sda".into()],
            at_ns: AT,
        }
    }

    fn layer() -> LayerUsage {
        LayerUsage {
            bytes: 4096,
            inodes: 3,
            at_ns: AT,
            mountpoint: "/var/lib/berth".into(),
        }
    }

    fn network() -> NetworkSample {
        NetworkSample {
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
        }
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
        assert!(METRICS.iter().all(|m| !m.help.is_empty()));
    }

    #[test]
    fn descriptors_cover_every_name_critest_expects() {
        let names: HashSet<&str> = METRICS.iter().map(|m| m.name).collect();
        let missing: Vec<&&str> = CRITEST_EXPECTED
            .iter()
            .filter(|n| !names.contains(**n))
            .collect();
        assert!(missing.is_empty(), "missing {missing:?}");
    }

    #[test]
    fn a_full_sample_emits_every_descriptor_with_its_labels() {
        let labels = labels();
        let fs = FsCapacity {
            bytes: 1 << 30,
            inodes: 1000,
            inodes_free: 900,
        };
        let mut all = cgroup_metrics(&labels, &full_sample());
        all.extend(fs_metrics(&labels, &layer(), Some(fs)));
        all.extend(network_metrics(&labels, &network()));
        all.push(start_time(&labels, AT, AT));
        all.push(metric(
            &ULIMITS_SOFT,
            &labels,
            &["max_open_files"],
            AT,
            1024,
        ));
        all.iter().for_each(assert_matches_descriptor);
        let emitted: HashSet<&str> = all.iter().map(|m| m.name.as_str()).collect();
        let silent: Vec<&str> = METRICS
            .iter()
            .map(|m| m.name)
            .filter(|n| !emitted.contains(n))
            .collect();
        assert!(silent.is_empty(), "never emitted: {silent:?}");
    }

    #[test]
    fn cgroup_metrics_convert_units() {
        let metrics = cgroup_metrics(&labels(), &full_sample());
        assert_eq!(get(&metrics, CPU_USAGE.name), Some(2), "whole seconds");
        assert_eq!(get(&metrics, CPU_USER.name), Some(1));
        assert_eq!(get(&metrics, CFS_THROTTLED_SECONDS.name), Some(2));
        assert_eq!(get(&metrics, CFS_THROTTLED_PERIODS.name), Some(7));
        assert_eq!(get(&metrics, MEMORY_WORKING_SET.name), Some(80));
        assert_eq!(get(&metrics, MEMORY_LIMIT.name), Some(4096));
        assert_eq!(get(&metrics, MEMORY_MAX_USAGE.name), Some(150));
        assert_eq!(
            get(&metrics, SPEC_MEMORY_RESERVATION.name),
            Some(0),
            "unset"
        );
        assert_eq!(get(&metrics, LAST_SEEN.name), Some(1_700_000_000));
        assert_eq!(get(&metrics, THREADS.name), Some(7), "tasks in the cgroup");
        assert_eq!(get(&metrics, PROCESSES.name), Some(2));
        assert_eq!(get(&metrics, FILE_DESCRIPTORS.name), Some(9));
        assert_eq!(get(&metrics, PRESSURE_CPU_WAITING.name), Some(3), "some");
        assert_eq!(get(&metrics, PRESSURE_CPU_STALLED.name), Some(1), "full");
        assert_eq!(get(&metrics, FS_WRITES_BYTES.name), Some(8192));
        assert_eq!(get(&metrics, FS_READS.name), Some(1));
        let blkio: Vec<&Metric> = metrics
            .iter()
            .filter(|m| m.name == BLKIO_DEVICE_USAGE.name)
            .collect();
        assert_eq!(blkio.len(), 2, "one per operation");
        assert_eq!(blkio[0].label_values[6..], ["/dev/sda", "8", "0", "Read"]);
    }

    #[test]
    fn unknown_figures_are_zero_or_left_out_like_cadvisor() {
        let mut sample = full_sample();
        let m = &mut sample.metrics;
        (m.cpu_quota_us, m.cpu_period_us, m.cpu_shares) = (None, None, None);
        (m.memory_max_usage, m.threads_max, m.stats.memory_limit) = (None, None, None);
        (m.pressure, m.hugetlb, m.block_io) = (None, Vec::new(), Vec::new());
        sample.device_names.clear();
        let metrics = cgroup_metrics(&labels(), &sample);
        for absent in [
            &SPEC_CPU_QUOTA,
            &SPEC_CPU_PERIOD,
            &SPEC_CPU_SHARES,
            &PRESSURE_IO_WAITING,
            &HUGETLB_USAGE,
            &FS_READS,
            &BLKIO_DEVICE_USAGE,
        ] {
            assert_eq!(get(&metrics, absent.name), None, "{}", absent.name);
        }
        for zero in [&MEMORY_MAX_USAGE, &THREADS_MAX, &MEMORY_LIMIT] {
            assert_eq!(get(&metrics, zero.name), Some(0), "{}", zero.name);
        }
    }

    #[test]
    fn fs_metrics_report_capacity_only_when_known() {
        let labels = labels();
        assert_eq!(fs_metrics(&labels, &layer(), None).len(), 1);
        let fs = FsCapacity {
            bytes: 1 << 30,
            inodes: 1000,
            inodes_free: 900,
        };
        let metrics = fs_metrics(&labels, &layer(), Some(fs));
        assert_eq!(get(&metrics, FS_INODES_FREE.name), Some(900));
        assert_eq!(get(&metrics, FS_LIMIT.name), Some(1 << 30));
        assert!(
            metrics
                .iter()
                .all(|m| m.label_values.last().is_some_and(|d| d == "/var/lib/berth"))
        );
    }

    #[test]
    fn start_time_is_whole_seconds_since_the_epoch() {
        let m = start_time(&labels(), AT, 1_700_000_123_999_999_999);
        assert_eq!(m.value, Some(value(1_700_000_123)));
        assert_matches_descriptor(&m);
    }

    #[test]
    fn network_metrics_cover_each_interface() {
        let metrics = network_metrics(&labels(), &network());
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
