//! berthd's Prometheus metrics (every one is documented in `docs/metrics.md`): counters and
//! histograms updated as things happen (gRPC calls, image pulls), and gauges computed from the
//! stores and `/proc` when `/metrics` is scraped (pods, containers, shims).
//!
//! `metrics::grpc` (above) counts gRPC calls into it, `metrics::http` serves the endpoint.

use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use proto::cri::ContainerEventType;

use crate::state::event_hub::{self, EventHub};
use crate::store::containers::{ContainerPhase, ContainerRecord};
use crate::store::pods::{PodPhase, PodRecord};

/// Upper bounds (seconds) of the gRPC latency buckets: fast status calls to slow pulls.
const GRPC_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];
/// Upper bounds (seconds) of the image pull duration buckets.
const PULL_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// Upper bounds (seconds) of the operation step buckets: from a system call to a slow mount.
const STEP_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Every CRI method berth serves; other paths are counted as `method="unknown"` so a client
/// cannot create label values at will.
const CRI_METHODS: &[&str] = &[
    "/runtime.v1.ImageService/ImageFsInfo",
    "/runtime.v1.ImageService/ImageStatus",
    "/runtime.v1.ImageService/ListImages",
    "/runtime.v1.ImageService/PullImage",
    "/runtime.v1.ImageService/RemoveImage",
    "/runtime.v1.RuntimeService/Attach",
    "/runtime.v1.RuntimeService/CheckpointContainer",
    "/runtime.v1.RuntimeService/ContainerStats",
    "/runtime.v1.RuntimeService/ContainerStatus",
    "/runtime.v1.RuntimeService/CreateContainer",
    "/runtime.v1.RuntimeService/Exec",
    "/runtime.v1.RuntimeService/ExecSync",
    "/runtime.v1.RuntimeService/GetContainerEvents",
    "/runtime.v1.RuntimeService/ListContainerStats",
    "/runtime.v1.RuntimeService/ListContainers",
    "/runtime.v1.RuntimeService/ListMetricDescriptors",
    "/runtime.v1.RuntimeService/ListPodSandbox",
    "/runtime.v1.RuntimeService/ListPodSandboxMetrics",
    "/runtime.v1.RuntimeService/ListPodSandboxStats",
    "/runtime.v1.RuntimeService/PodSandboxStats",
    "/runtime.v1.RuntimeService/PodSandboxStatus",
    "/runtime.v1.RuntimeService/PortForward",
    "/runtime.v1.RuntimeService/RemoveContainer",
    "/runtime.v1.RuntimeService/RemovePodSandbox",
    "/runtime.v1.RuntimeService/ReopenContainerLog",
    "/runtime.v1.RuntimeService/RunPodSandbox",
    "/runtime.v1.RuntimeService/RuntimeConfig",
    "/runtime.v1.RuntimeService/StartContainer",
    "/runtime.v1.RuntimeService/Status",
    "/runtime.v1.RuntimeService/StopContainer",
    "/runtime.v1.RuntimeService/StopPodSandbox",
    "/runtime.v1.RuntimeService/UpdateContainerResources",
    "/runtime.v1.RuntimeService/UpdateRuntimeConfig",
    "/runtime.v1.RuntimeService/Version",
];

/// The `method` label for a request path.
pub fn method_label(path: &str) -> &'static str {
    CRI_METHODS
        .iter()
        .find(|m| **m == path)
        .copied()
        .unwrap_or("unknown")
}

/// The `code` label for a gRPC status code: its name as in the gRPC spec (`OK`, `NotFound`).
fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// All of berthd's metrics, in their own registry.
pub struct Metrics {
    registry: Registry,
    grpc_requests: IntCounterVec,
    grpc_duration: HistogramVec,
    grpc_errors: IntCounterVec,
    image_pulls: IntCounterVec,
    image_pull_bytes: IntCounter,
    image_pull_duration: HistogramVec,
    step_duration: HistogramVec,
    pods: IntGaugeVec,
    containers: IntGaugeVec,
    shims: IntGauge,
    shim_rss: IntGauge,
    event_subscribers: IntGauge,
    events: IntCounterVec,
    event_subscribers_dropped: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let gauge =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
                let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(g.clone()))?;
                Ok(g)
            };
        let histogram = |name: &str,
                         help: &str,
                         labels: &[&str],
                         buckets: &[f64]|
         -> Result<HistogramVec, prometheus::Error> {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        let metrics = Metrics {
            grpc_requests: counter("berth_grpc_requests_total", "CRI gRPC calls finished, by method and status code.", &["method", "code"])?,
            grpc_duration: histogram("berth_grpc_request_duration_seconds", "Time from a CRI gRPC call's arrival to the end of its response, by method and status code.", &["method", "code"], GRPC_BUCKETS)?,
            grpc_errors: counter("berth_grpc_errors_total", "CRI gRPC calls that ended with an error, by status code.", &["code"])?,
            image_pulls: counter("berth_image_pulls_total", "PullImage calls, by outcome (success or failure).", &["outcome"])?,
            image_pull_bytes: counter("berth_image_pull_bytes_total", "Bytes downloaded from registries by successful pulls (layers already present are not fetched).", &[])?.with_label_values::<&str>(&[]),
            image_pull_duration: histogram("berth_image_pull_duration_seconds", "Time PullImage took, by outcome.", &["outcome"], PULL_BUCKETS)?,
            step_duration: histogram("berth_operation_step_duration_seconds", "Time each step of an operation took (StartContainer, RunPodSandbox, StopPodSandbox …), by operation and step; steps of berth-shim are named shim/<step> (docs/performance.md lists them).", &["operation", "step"], STEP_BUCKETS)?,
            pods: gauge("berth_pods", "Pod sandboxes, by CRI state (ready, notready).", &["state"])?,
            containers: gauge("berth_containers", "Containers, by CRI state (created, running, exited).", &["state"])?,
            shims: gauge("berth_shims", "Live berth-shim processes (one per ready pod).", &[])?.with_label_values::<&str>(&[]),
            shim_rss: gauge("berth_shim_memory_rss_bytes", "Resident memory of all live berth-shim processes together.", &[])?.with_label_values::<&str>(&[]),
            event_subscribers: gauge("berth_container_event_subscribers", "Open GetContainerEvents streams.", &[])?.with_label_values::<&str>(&[]),
            events: counter("berth_container_events_total", "Container and pod lifecycle events, by type (created, started, stopped, deleted).", &["type"])?,
            event_subscribers_dropped: counter("berth_container_event_subscribers_dropped_total", "GetContainerEvents subscribers dropped because they fell too far behind.", &[])?.with_label_values::<&str>(&[]),
            registry,
        };
        let info = IntGaugeVec::new(
            Opts::new(
                "berth_build_info",
                "Always 1; the running berthd's version as a label.",
            ),
            &["version"],
        )?;
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        metrics.registry.register(Box::new(info))?;
        Ok(metrics)
    }

    /// Counts a finished gRPC call.
    pub fn record_call(&self, method: &str, code: tonic::Code, elapsed: Duration) {
        let code = code_label(code);
        self.grpc_requests.with_label_values(&[method, code]).inc();
        self.grpc_duration
            .with_label_values(&[method, code])
            .observe(elapsed.as_secs_f64());
        if code != "OK" {
            self.grpc_errors.with_label_values(&[code]).inc();
        }
    }

    /// Counts an image pull; `bytes` were downloaded by a successful one.
    pub fn record_pull(&self, ok: bool, bytes: u64, elapsed: Duration) {
        let outcome = if ok { "success" } else { "failure" };
        self.image_pulls.with_label_values(&[outcome]).inc();
        self.image_pull_duration
            .with_label_values(&[outcome])
            .observe(elapsed.as_secs_f64());
        self.image_pull_bytes.inc_by(bytes);
    }

    /// Records how long each step of a successful `operation` on `id` took, and logs them at
    /// debug level as one line (`step=µs ...`).
    pub fn record_steps(&self, operation: &str, id: &str, steps: &[proto::shim::StepTime]) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            let line: Vec<String> = steps
                .iter()
                .map(|s| format!("{}={}", s.name, s.micros))
                .collect();
            tracing::debug!(operation, id, steps_us = %line.join(" "), "step timings");
        }
        for step in steps {
            self.step_duration
                .with_label_values(&[operation, step.name.as_str()])
                .observe(step.micros as f64 / 1e6);
        }
    }

    /// The text exposition of every metric, the gauges computed now from the records and
    /// the event hub.
    pub fn render(
        &self,
        pods: &[PodRecord],
        containers: &[ContainerRecord],
        events: &EventHub,
    ) -> Result<String, prometheus::Error> {
        self.update_gauges(pods, containers, events);
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }

    fn update_gauges(&self, pods: &[PodRecord], containers: &[ContainerRecord], events: &EventHub) {
        let ready = pods.iter().filter(|p| p.phase == PodPhase::Ready).count();
        self.pods.with_label_values(&["ready"]).set(ready as i64);
        self.pods
            .with_label_values(&["notready"])
            .set((pods.len() - ready) as i64);
        for (label, phase) in [
            ("created", ContainerPhase::Created),
            ("running", ContainerPhase::Running),
            ("exited", ContainerPhase::Exited),
        ] {
            let n = containers.iter().filter(|c| c.phase == phase).count();
            self.containers.with_label_values(&[label]).set(n as i64);
        }
        let shims: Vec<u64> = pods
            .iter()
            .filter(|p| p.phase == PodPhase::Ready && p.host.shim_pid != 0)
            .filter_map(|p| shim_rss(p.host.shim_pid))
            .collect();
        self.shims.set(shims.len() as i64);
        self.shim_rss.set(shims.iter().sum::<u64>() as i64);
        self.event_subscribers.set(events.subscriber_count() as i64);
        let counters = events.counters();
        for kind in [
            ContainerEventType::ContainerCreatedEvent,
            ContainerEventType::ContainerStartedEvent,
            ContainerEventType::ContainerStoppedEvent,
            ContainerEventType::ContainerDeletedEvent,
        ] {
            let total = counters.published[kind as usize].load(Ordering::Relaxed);
            catch_up(
                &self
                    .events
                    .with_label_values(&[event_hub::type_label(kind)]),
                total,
            );
        }
        catch_up(
            &self.event_subscribers_dropped,
            counters.dropped_subscribers.load(Ordering::Relaxed),
        );
    }
}

/// Brings a counter mirrored from an atomic total up to that total.
fn catch_up(counter: &IntCounter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

/// The resident memory of process `pid` if it is a berth-shim (a recycled PID is not counted).
fn shim_rss(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let (name, rss) = parse_proc_status(&text);
    name.starts_with("berth-shim").then_some(rss)
}

/// The `Name` and `VmRSS` (in bytes) of a `/proc/<pid>/status` file.
fn parse_proc_status(text: &str) -> (&str, u64) {
    let mut name = "";
    let mut rss = 0;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("Name:") {
            name = v.trim();
        } else if let Some(v) = line.strip_prefix("VmRSS:") {
            rss = v
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .map_or(0, |kb| kb * 1024);
        }
    }
    (name, rss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_status_gives_name_and_rss_in_bytes() {
        let text = "Name:\tberth-shim\nUmask:\t0022\nVmRSS:\t    1234 kB\nThreads:\t1\n";
        assert_eq!(parse_proc_status(text), ("berth-shim", 1234 * 1024));
        assert_eq!(parse_proc_status("Name:\tkthreadd\n"), ("kthreadd", 0));
    }

    #[test]
    fn unknown_paths_share_one_method_label() {
        assert_eq!(
            method_label("/runtime.v1.RuntimeService/Version"),
            "/runtime.v1.RuntimeService/Version"
        );
        assert_eq!(method_label("/runtime.v1.RuntimeService/Nope"), "unknown");
        assert_eq!(method_label("/x"), "unknown");
    }

    #[test]
    fn calls_and_pulls_are_counted_by_label() {
        let m = Metrics::new().expect("metrics");
        m.record_call(
            "/runtime.v1.RuntimeService/Version",
            tonic::Code::Ok,
            Duration::from_millis(2),
        );
        m.record_call(
            "/runtime.v1.RuntimeService/Version",
            tonic::Code::NotFound,
            Duration::from_millis(2),
        );
        m.record_pull(true, 100, Duration::from_secs(1));
        m.record_pull(false, 0, Duration::from_secs(1));
        let names: Vec<String> = m
            .registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        assert!(
            names.contains(&"berth_grpc_requests_total".to_string()),
            "{names:?}"
        );
        assert_eq!(
            m.grpc_requests
                .with_label_values(&["/runtime.v1.RuntimeService/Version", "NotFound"])
                .get(),
            1
        );
        assert_eq!(m.grpc_errors.with_label_values(&["NotFound"]).get(), 1);
        assert_eq!(m.grpc_errors.with_label_values(&["OK"]).get(), 0);
        assert_eq!(m.image_pull_bytes.get(), 100);
        assert_eq!(m.image_pulls.with_label_values(&["failure"]).get(), 1);
    }

    #[test]
    fn mirrored_counters_only_move_forward() {
        let c = IntCounter::new("x_total", "x").expect("counter");
        catch_up(&c, 5);
        catch_up(&c, 3);
        assert_eq!(c.get(), 5);
    }
}
