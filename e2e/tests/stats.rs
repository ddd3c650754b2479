//! Stats and pod metrics end to end: a real berthd runs busybox containers that burn CPU,
//! hold a known amount of memory, write files and receive traffic, and the stats RPCs must
//! see it. Needs root (CI runs as root).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::pods::{listen_once_in, read_from};
use proto::cri::runtime_service_client::RuntimeServiceClient;
use proto::cri::{
    self, ContainerConfig, ContainerMetadata, ContainerStats, ContainerStatsFilter,
    ContainerStatsRequest, ImageSpec, LinuxContainerConfig, LinuxContainerResources,
    ListContainerStatsRequest, ListMetricDescriptorsRequest, ListPodSandboxMetricsRequest,
    ListPodSandboxStatsRequest, NamespaceMode, PodSandboxConfig, PodSandboxStats,
    PodSandboxStatsFilter, PodSandboxStatsRequest, PodSandboxStatusRequest, RemoveContainerRequest,
    StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
};
use tonic::Code;
use tonic::transport::Channel;

const MIB: u64 = 1 << 20;

/// The shared container environment plus one long-lived RuntimeService client.
struct Env {
    base: e2e::containers::Env,
    rt: RuntimeServiceClient<Channel>,
}

impl std::ops::Deref for Env {
    type Target = e2e::containers::Env;
    fn deref(&self) -> &Self::Target {
        &self.base
    }
}

async fn env() -> Option<Env> {
    let base = e2e::containers::env().await?;
    let rt = base.d.runtime().await.expect("client");
    Some(Env { base, rt })
}

impl Env {
    /// A container whose log is `<pod log dir>/<name>.log`.
    fn container(&self, name: &str, command: &[&str]) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            linux: Some(LinuxContainerConfig::default()),
            ..Default::default()
        }
    }

    /// Creates and starts `c` in `pod`; its ID.
    async fn run(&mut self, pod: &str, pc: &PodSandboxConfig, c: ContainerConfig) -> String {
        let id = self
            .rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(c),
                sandbox_config: Some(pc.clone()),
            })
            .await
            .expect("CreateContainer")
            .into_inner()
            .container_id;
        self.rt
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("StartContainer");
        id
    }

    async fn stats(&mut self, id: &str) -> Result<ContainerStats, tonic::Status> {
        self.rt
            .container_stats(ContainerStatsRequest {
                container_id: id.into(),
            })
            .await
            .map(|r| r.into_inner().stats.expect("stats"))
    }

    async fn pod_stats(&mut self, id: &str) -> Result<PodSandboxStats, tonic::Status> {
        self.rt
            .pod_sandbox_stats(PodSandboxStatsRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .map(|r| r.into_inner().stats.expect("stats"))
    }

    async fn list(&mut self, filter: Option<ContainerStatsFilter>) -> Vec<String> {
        let mut ids: Vec<String> = self
            .rt
            .list_container_stats(ListContainerStatsRequest { filter })
            .await
            .expect("ListContainerStats")
            .into_inner()
            .stats
            .into_iter()
            .map(|s| s.attributes.expect("attributes").id)
            .collect();
        ids.sort();
        ids
    }

    async fn list_pods(&mut self, filter: Option<PodSandboxStatsFilter>) -> Vec<PodSandboxStats> {
        self.rt
            .list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter })
            .await
            .expect("ListPodSandboxStats")
            .into_inner()
            .stats
    }

    /// The host PID of a running container, from verbose ContainerStatus.
    async fn pid(&mut self, id: &str) -> u32 {
        let resp = self
            .rt
            .container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .expect("ContainerStatus")
            .into_inner();
        let info: serde_json::Value = serde_json::from_str(&resp.info["info"]).expect("info");
        info["pid"].as_u64().expect("pid") as u32
    }

    /// The pod's IP and pinned network namespace, from verbose PodSandboxStatus.
    async fn pod_network(&mut self, id: &str) -> (Ipv4Addr, PathBuf) {
        let resp = self
            .rt
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: true,
            })
            .await
            .expect("PodSandboxStatus")
            .into_inner();
        let ip = resp.status.expect("status").network.expect("network").ip;
        let info: serde_json::Value = serde_json::from_str(&resp.info["info"]).expect("info");
        let netns = info["netnsPath"].as_str().expect("netnsPath");
        (ip.parse().expect("pod ip"), PathBuf::from(netns))
    }
}

/// Waits until `log` (a CRI log file) contains `needle`.
async fn wait_for_log(log: &Path, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never showed {needle:?}: {text}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// CPU time the scheduler has given process `pid`, in nanoseconds (`/proc/<pid>/schedstat`).
fn schedstat_ns(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).expect("schedstat");
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("schedstat run time")
}

fn v(value: &Option<cri::UInt64Value>) -> u64 {
    value.as_ref().expect("value present").value
}

#[tokio::test]
async fn cpu_burning_container_reports_growing_usage_and_the_cores_it_got() {
    let Some(mut e) = env().await else { return };
    let pc = e.pod("burn");
    let pod = e.d.run_pod(pc.clone()).await.expect("RunPodSandbox");
    let c = e.container("burn", &["/bin/sh", "-c", "while :; do :; done"]);
    let id = e.run(&pod, &pc, c).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = e.pid(&id).await;

    // The host is shared (2 cores, other work running): the loop gets up to one core. The
    // scheduler's own count of the loop's CPU time (schedstat) is the reference.
    let (sched1, wall1) = (schedstat_ns(pid), Instant::now());
    let first = e
        .stats(&id)
        .await
        .expect("ContainerStats")
        .cpu
        .expect("cpu");
    assert!(first.timestamp > 0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = e
        .stats(&id)
        .await
        .expect("ContainerStats")
        .cpu
        .expect("cpu");
    let (sched2, wall2) = (schedstat_ns(pid), Instant::now());
    let (u1, u2) = (
        v(&first.usage_core_nano_seconds),
        v(&second.usage_core_nano_seconds),
    );
    assert!(u2 > u1, "cumulative CPU grows: {u1} -> {u2}");
    let nano_cores = v(&second.usage_nano_cores);
    let between_samples = (u2 - u1) as f64 * 1e9 / (second.timestamp - first.timestamp) as f64;
    assert!(
        (nano_cores as f64 - between_samples).abs() <= between_samples * 0.01 + 1.0,
        "nano-cores {nano_cores} is the rate between the two samples ({between_samples})"
    );
    let reference = (sched2 - sched1) as f64 * 1e9 / (wall2 - wall1).as_nanos() as f64;
    eprintln!("busy loop: {nano_cores} nano-cores, schedstat says {reference:.0}");
    assert!(
        nano_cores <= 1_050_000_000,
        "one thread, at most one core: {nano_cores}"
    );
    assert!(
        (nano_cores as f64 - reference).abs() <= reference * 0.15 + 20_000_000.0,
        "nano-cores {nano_cores} vs the scheduler's {reference:.0}"
    );

    let pod_stats = e.pod_stats(&pod).await.expect("PodSandboxStats");
    let linux = pod_stats.linux.expect("linux");
    assert!(v(&linux.cpu.expect("pod cpu").usage_core_nano_seconds) >= u2);
    assert!(v(&linux.process.expect("process").process_count) >= 1);
    e.d.remove_pod(&pod).await;
}

#[tokio::test]
async fn memory_hog_working_set_matches_its_allocation() {
    let Some(mut e) = env().await else { return };
    let pc = e.pod("mem");
    let pod = e.d.run_pod(pc.clone()).await.expect("RunPodSandbox");
    let limit = 256 * MIB;
    let mut hog = e.container("hog", &["/usr/local/bin/memhog", "64"]);
    hog.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: limit as i64,
            ..Default::default()
        }),
        ..Default::default()
    });
    let hog_id = e.run(&pod, &pc, hog).await;
    let c = e.container("idle", &["/bin/sleep", "3600"]);
    let idle_id = e.run(&pod, &pc, c).await;
    wait_for_log(
        &PathBuf::from(&pc.log_directory).join("hog.log"),
        "ready 64 MiB",
    )
    .await;

    let memory = e
        .stats(&hog_id)
        .await
        .expect("stats")
        .memory
        .expect("memory");
    let working_set = v(&memory.working_set_bytes);
    eprintln!(
        "memhog 64 MiB: working set {working_set}, usage {}, rss {}",
        v(&memory.usage_bytes),
        v(&memory.rss_bytes)
    );
    assert!(
        (64 * MIB..=80 * MIB).contains(&working_set),
        "working set {working_set}"
    );
    assert!(v(&memory.rss_bytes) >= 64 * MIB);
    assert!(v(&memory.usage_bytes) >= working_set);
    // One fault per page touched: 4 KiB pages, or 2 MiB ones where transparent huge pages are
    // always on (Debian's kernel in the cgroup v2 VM).
    let thp_always = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|s| s.contains("[always]"));
    let page = if thp_always { 2 * MIB } else { 4096 };
    assert!(
        v(&memory.page_faults) >= (64 * MIB / page) / 2,
        "touching pages faults them in: {}",
        v(&memory.page_faults)
    );
    assert_eq!(v(&memory.available_bytes), limit - working_set);
    assert!(memory.timestamp > 0);

    let idle = e
        .stats(&idle_id)
        .await
        .expect("stats")
        .memory
        .expect("memory");
    assert!(v(&idle.working_set_bytes) < 16 * MIB);
    assert!(
        idle.available_bytes.is_none(),
        "no limit, nothing available to report"
    );

    let pod_memory = e
        .pod_stats(&pod)
        .await
        .expect("pod stats")
        .linux
        .expect("linux")
        .memory
        .expect("memory");
    assert!(v(&pod_memory.working_set_bytes) >= working_set);
    e.d.remove_pod(&pod).await;
}

#[tokio::test]
async fn writable_layer_grows_by_the_file_written() {
    let Some(mut e) = env().await else { return };
    let pc = e.pod("disk");
    let pod = e.d.run_pod(pc.clone()).await.expect("RunPodSandbox");
    let script = "sleep 2; dd if=/dev/zero of=/big bs=1048576 count=8 2>/dev/null; sync; \
                  echo written; exec sleep 3600";
    let c = e.container("writer", &["/bin/sh", "-c", script]);
    let id = e.run(&pod, &pc, c).await;
    let before = e
        .stats(&id)
        .await
        .expect("stats")
        .writable_layer
        .expect("layer");
    let mountpoint = before.fs_id.as_ref().expect("fs_id").mountpoint.clone();
    assert!(
        e.d.root_dir.starts_with(&mountpoint),
        "{mountpoint} holds {}",
        e.d.root_dir.display()
    );
    wait_for_log(
        &PathBuf::from(&pc.log_directory).join("writer.log"),
        "written",
    )
    .await;

    // Walks are cached for at least a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let layer = e
            .stats(&id)
            .await
            .expect("stats")
            .writable_layer
            .expect("layer");
        if v(&layer.used_bytes) >= v(&before.used_bytes) + 8 * MIB || Instant::now() > deadline {
            break layer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let grown = v(&after.used_bytes) - v(&before.used_bytes);
    assert!(
        (8 * MIB..=9 * MIB).contains(&grown),
        "8 MiB written, layer grew by {grown}"
    );
    assert!(v(&after.inodes_used) > v(&before.inodes_used));
    assert!(after.timestamp > before.timestamp);
    // ImageFsInfo counts the writable layers as the container filesystem.
    let fs =
        e.d.images()
            .await
            .expect("client")
            .image_fs_info(proto::cri::ImageFsInfoRequest {})
            .await
            .expect("ImageFsInfo")
            .into_inner();
    let containers = fs.container_filesystems.first().expect("container fs");
    assert!(
        v(&containers.used_bytes) >= 8 * MIB,
        "container filesystem: {containers:?}"
    );
    e.d.remove_pod(&pod).await;
}

#[tokio::test]
async fn pod_network_counters_grow_with_traffic_to_the_pod() {
    let Some(mut e) = env().await else { return };
    let pc = e.pod("web");
    let pod = e.d.run_pod(pc.clone()).await.expect("RunPodSandbox");
    let (ip, netns) = e.pod_network(&pod).await;
    let eth0 = |s: PodSandboxStats| {
        let network = s.linux.expect("linux").network.expect("network");
        assert!(network.timestamp > 0);
        assert!(network.interfaces.iter().all(|i| i.name != "lo"));
        network.default_interface.expect("default interface")
    };
    let before = eth0(e.pod_stats(&pod).await.expect("pod stats"));
    assert_eq!(before.name, "eth0");

    static REPLY: [u8; 256 * 1024] = [b'x'; 256 * 1024];
    listen_once_in(&netns, 8080, &REPLY).expect("listen in the pod");
    let got = read_from(SocketAddr::from((ip, 8080))).expect("host reaches the pod");
    assert_eq!(got.len(), REPLY.len());

    let after = eth0(e.pod_stats(&pod).await.expect("pod stats"));
    let tx = v(&after.tx_bytes) - v(&before.tx_bytes);
    let rx = v(&after.rx_bytes) - v(&before.rx_bytes);
    assert!(
        tx >= REPLY.len() as u64,
        "pod sent the reply: tx grew by {tx}"
    );
    assert!(rx > 0, "pod received the request and acks: rx grew by {rx}");
    assert_eq!(v(&after.tx_errors), 0);

    // hostNetwork pods have no network of their own to report.
    let mut host_pc = e.pod("hostnet");
    let ns = host_pc
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
        .expect("namespace options");
    ns.network = NamespaceMode::Node as i32;
    let host_pod = e.d.run_pod(host_pc).await.expect("hostNetwork pod");
    let host_stats = e.pod_stats(&host_pod).await.expect("pod stats");
    assert!(host_stats.linux.expect("linux").network.is_none());
    for id in [&pod, &host_pod] {
        e.d.remove_pod(id).await;
    }
}

#[tokio::test]
async fn stats_of_removed_containers_and_pods_are_not_found() {
    let Some(mut e) = env().await else { return };
    let pc = e.pod("gone");
    let pod = e.d.run_pod(pc.clone()).await.expect("RunPodSandbox");
    let c = e.container("short", &["/bin/sleep", "3600"]);
    let id = e.run(&pod, &pc, c).await;

    // A stopped container still answers with what can be read.
    e.rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .expect("StopContainer");
    let stopped = e.stats(&id).await.expect("stats of a stopped container");
    assert_eq!(stopped.attributes.expect("attributes").id, id);
    assert!(stopped.writable_layer.is_some());

    e.rt.remove_container(RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("RemoveContainer");
    let err = e.stats(&id).await.expect_err("removed container");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains(&id), "{}", err.message());
    let filtered = ContainerStatsFilter {
        id: id.clone(),
        ..Default::default()
    };
    assert!(e.list(Some(filtered)).await.is_empty());

    e.d.remove_pod(&pod).await;
    let err = e.pod_stats(&pod).await.expect_err("removed pod");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains(&pod), "{}", err.message());

    let err = e.stats("").await.expect_err("empty id");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("container_id"), "{}", err.message());
    let err = e.pod_stats("").await.expect_err("empty id");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("pod_sandbox_id"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn list_filters_select_by_id_prefix_pod_and_labels() {
    let Some(mut e) = env().await else { return };
    let (pa, pb) = (e.pod("alpha"), e.pod("beta"));
    let a = e.d.run_pod(pa.clone()).await.expect("pod a");
    let b = e.d.run_pod(pb.clone()).await.expect("pod b");
    let mut labelled = e.container("a1", &["/bin/sleep", "3600"]);
    labelled.labels.insert("tier".into(), "front".into());
    let a1 = e.run(&a, &pa, labelled).await;
    let c = e.container("a2", &["/bin/sleep", "3600"]);
    let a2 = e.run(&a, &pa, c).await;
    let c = e.container("b1", &["/bin/sleep", "3600"]);
    let b1 = e.run(&b, &pb, c).await;

    let mut all_ids = vec![a1.clone(), a2.clone(), b1.clone()];
    all_ids.sort();
    assert_eq!(e.list(None).await, all_ids);
    let by = |f: ContainerStatsFilter| Some(f);
    let mut of_a = vec![a1.clone(), a2.clone()];
    of_a.sort();
    let pod_filter = ContainerStatsFilter {
        pod_sandbox_id: a.clone(),
        ..Default::default()
    };
    assert_eq!(e.list(by(pod_filter)).await, of_a);
    let prefix = ContainerStatsFilter {
        id: b1[..12].to_string(),
        ..Default::default()
    };
    assert_eq!(e.list(by(prefix)).await, vec![b1.clone()]);
    let label = ContainerStatsFilter {
        label_selector: [("tier".to_string(), "front".to_string())].into(),
        ..Default::default()
    };
    assert_eq!(e.list(by(label)).await, vec![a1.clone()]);
    let mismatch = ContainerStatsFilter {
        id: a1.clone(),
        pod_sandbox_id: b.clone(),
        ..Default::default()
    };
    assert!(e.list(by(mismatch)).await.is_empty());
    let unknown = ContainerStatsFilter {
        id: "0123456789abcdef-no-such-container".into(),
        ..Default::default()
    };
    assert!(e.list(by(unknown)).await.is_empty());

    // Pods: every Ready pod with its containers; filters by ID prefix and pod labels.
    let listed = e.list_pods(None).await;
    let mut pod_ids: Vec<String> = listed
        .iter()
        .map(|s| s.attributes.clone().expect("attributes").id)
        .collect();
    pod_ids.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(pod_ids, want);
    let alpha = listed
        .iter()
        .find(|s| s.attributes.as_ref().is_some_and(|at| at.id == a))
        .expect("pod a");
    let mut containers: Vec<String> = alpha
        .linux
        .as_ref()
        .expect("linux")
        .containers
        .iter()
        .map(|c| c.attributes.clone().expect("attributes").id)
        .collect();
    containers.sort();
    assert_eq!(containers, of_a);
    let only_b = e
        .list_pods(Some(PodSandboxStatsFilter {
            id: b[..10].to_string(),
            ..Default::default()
        }))
        .await;
    assert_eq!(only_b.len(), 1);
    assert_eq!(only_b[0].attributes.clone().expect("attributes").id, b);
    let by_label = e
        .list_pods(Some(PodSandboxStatsFilter {
            label_selector: [("app".to_string(), "alpha".to_string())].into(),
            ..Default::default()
        }))
        .await;
    assert_eq!(by_label.len(), 1);

    // A stopped pod leaves the list but still answers by ID.
    e.rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: b.clone(),
    })
    .await
    .expect("StopPodSandbox");
    let listed = e.list_pods(None).await;
    assert_eq!(listed.len(), 1, "only the Ready pod");
    let stopped = e.pod_stats(&b).await.expect("stats of a stopped pod");
    assert!(stopped.linux.expect("linux").network.is_none());
    for id in [&a, &b] {
        e.d.remove_pod(id).await;
    }
}

#[tokio::test]
async fn metric_descriptors_and_pod_metrics_carry_cadvisor_names_and_sane_values() {
    let Some(mut e) = env().await else { return };
    let descriptors =
        e.rt.list_metric_descriptors(ListMetricDescriptorsRequest {})
            .await
            .expect("ListMetricDescriptors")
            .into_inner()
            .descriptors;
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_usage_bytes",
        "container_memory_rss",
        "container_network_receive_bytes_total",
        "container_network_transmit_bytes_total",
        "container_fs_usage_bytes",
    ] {
        assert!(
            descriptors
                .iter()
                .any(|d| d.name == name && !d.help.is_empty()),
            "descriptor {name}"
        );
    }

    let pc = e.pod("metrics");
    let pod = e.d.run_pod(pc.clone()).await.expect("RunPodSandbox");
    let c = e.container("hog", &["/usr/local/bin/memhog", "32"]);
    let id = e.run(&pod, &pc, c).await;
    wait_for_log(
        &PathBuf::from(&pc.log_directory).join("hog.log"),
        "ready 32 MiB",
    )
    .await;
    let all =
        e.rt.list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
            .await
            .expect("ListPodSandboxMetrics")
            .into_inner()
            .pod_metrics;
    let mine = all
        .iter()
        .find(|p| p.pod_sandbox_id == pod)
        .expect("our pod's metrics");
    let keys = |name: &str| {
        descriptors
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.label_keys.clone())
            .unwrap_or_else(|| panic!("metric {name} has no descriptor"))
    };
    let every = mine
        .metrics
        .iter()
        .chain(mine.container_metrics.iter().flat_map(|c| c.metrics.iter()));
    for m in every {
        assert_eq!(m.label_values.len(), keys(&m.name).len(), "{}", m.name);
    }
    let container = mine
        .container_metrics
        .iter()
        .find(|c| c.container_id == id)
        .expect("container metrics");
    let get = |name: &str| {
        container
            .metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("container metric {name}"))
    };
    let ws = get("container_memory_working_set_bytes");
    assert!(v(&ws.value) >= 32 * MIB, "working set {}", v(&ws.value));
    assert_eq!(ws.metric_type, cri::MetricType::Gauge as i32);
    let labels = &ws.label_values;
    assert_eq!(labels[0], "hog", "container label");
    assert_eq!(labels[3], id, "name label is the container ID");
    assert_eq!(labels[5], "metrics", "pod label");
    let cpu = get("container_cpu_usage_seconds_total");
    assert_eq!(cpu.metric_type, cri::MetricType::Counter as i32);
    // Present; its value is checked where the container writes files (an empty writable layer
    // is 0 bytes where the root dir is a tmpfs, as in the cgroup v2 VM).
    get("container_fs_usage_bytes");

    let rx = mine
        .metrics
        .iter()
        .find(|m| {
            m.name == "container_network_receive_bytes_total"
                && m.label_values.last().is_some_and(|i| i == "eth0")
        })
        .expect("pod network metric for eth0");
    assert_eq!(rx.metric_type, cri::MetricType::Counter as i32);
    assert!(rx.timestamp > 0);
    e.d.remove_pod(&pod).await;
}

/// The names critest's metrics specs require for a running container (cri-tools
/// `pkg/validate/pod.go`, without the names it lists as optional or not yet implemented).
const CRITEST_REQUIRED: &[&str] = &[
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
    "container_fs_usage_bytes",
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
    "container_processes",
    "container_sockets",
    "container_spec_cpu_period",
    "container_spec_cpu_shares",
    "container_spec_memory_limit_bytes",
    "container_spec_memory_swap_limit_bytes",
    "container_start_time_seconds",
    "container_threads",
    "container_threads_max",
];

/// Seconds since the epoch now.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[tokio::test]
async fn pod_metrics_report_limits_throttling_processes_and_the_writable_layer() {
    let Some(mut e) = env().await else { return };
    let test_start = now_secs();
    let descriptors =
        e.rt.list_metric_descriptors(ListMetricDescriptorsRequest {})
            .await
            .expect("ListMetricDescriptors")
            .into_inner()
            .descriptors;
    for name in CRITEST_REQUIRED {
        assert!(
            descriptors.iter().any(|d| d.name == *name),
            "descriptor {name}"
        );
    }

    let pc = e.pod("limits");
    let pod = e.d.run_pod(pc.clone()).await.expect("RunPodSandbox");
    // Ten small files in the writable layer, a listening socket, and a busy loop under a
    // 20% CPU quota so the CFS throttles it.
    let script = "for i in 1 2 3 4 5 6 7 8 9 10; do echo hi > /f$i; done; sync; \
                  httpd -f -p 8080 & while :; do :; done & echo ready; exec sleep 1000";
    let mut c = e.container("busy", &["sh", "-c", script]);
    c.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 20_000,
            cpu_shares: 512,
            memory_limit_in_bytes: (64 * MIB) as i64,
            memory_swap_limit_in_bytes: (64 * MIB) as i64,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = e.run(&pod, &pc, c).await;
    wait_for_log(&PathBuf::from(&pc.log_directory).join("busy.log"), "ready").await;

    // Poll until the CFS has throttled the loop (a few 100 ms periods).
    let deadline = Instant::now() + Duration::from_secs(20);
    let (pod_metrics, container) = loop {
        let all =
            e.rt.list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
                .await
                .expect("ListPodSandboxMetrics")
                .into_inner()
                .pod_metrics;
        let mine = all
            .into_iter()
            .find(|p| p.pod_sandbox_id == pod)
            .expect("our pod's metrics");
        let container = mine
            .container_metrics
            .iter()
            .find(|c| c.container_id == id)
            .expect("container metrics")
            .metrics
            .clone();
        let value = |name: &str| {
            container
                .iter()
                .find(|m| m.name == name)
                .map(|m| v(&m.value))
                .unwrap_or(0)
        };
        // httpd may open its socket after `ready` (slowly, under emulation): wait for it too.
        let throttled = value("container_cpu_cfs_throttled_periods_total");
        let listening = value("container_sockets");
        if (throttled > 0 && listening > 0) || Instant::now() > deadline {
            break (mine.metrics, container);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };

    // Every metric matches its descriptor, and every name critest requires is there.
    for m in pod_metrics.iter().chain(&container) {
        let d = descriptors
            .iter()
            .find(|d| d.name == m.name)
            .unwrap_or_else(|| panic!("metric {} has no descriptor", m.name));
        assert_eq!(m.label_values.len(), d.label_keys.len(), "{}", m.name);
        let counter = m.name.ends_with("_total");
        let want = if counter {
            cri::MetricType::Counter
        } else {
            cri::MetricType::Gauge
        };
        // As in cAdvisor: failcnt is a counter without the suffix, inodes_total a gauge with it.
        if !["container_memory_failcnt", "container_fs_inodes_total"].contains(&m.name.as_str()) {
            assert_eq!(m.metric_type, want as i32, "{}", m.name);
        }
    }
    for name in CRITEST_REQUIRED {
        assert!(
            pod_metrics
                .iter()
                .chain(&container)
                .any(|m| m.name == *name),
            "metric {name}"
        );
    }

    let get = |metrics: &[cri::Metric], name: &str| {
        metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| v(&m.value))
            .unwrap_or_else(|| panic!("metric {name}"))
    };
    let c = |name: &str| get(&container, name);
    // The limits the container was created with.
    assert_eq!(c("container_spec_cpu_period"), 100_000);
    assert_eq!(c("container_spec_cpu_quota"), 20_000);
    let shares = c("container_spec_cpu_shares");
    assert!(
        (486..=512).contains(&shares),
        "shares {shares} (v2 weight rounds down)"
    );
    assert_eq!(c("container_spec_memory_limit_bytes"), 64 * MIB);
    let cgroup_v1 = Path::new("/sys/fs/cgroup/memory").is_dir();
    let swap_limit = c("container_spec_memory_swap_limit_bytes");
    if cgroup_v1 && Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists() {
        assert_eq!(swap_limit, 64 * MIB, "v1 memsw: memory plus swap");
    } else {
        assert!(swap_limit <= 64 * MIB, "v2: swap alone, {swap_limit}");
    }
    // The quota throttles the busy loop.
    assert!(c("container_cpu_cfs_periods_total") > 0);
    assert!(
        c("container_cpu_cfs_throttled_periods_total") > 0,
        "a busy loop under a 20% quota is throttled"
    );
    let usage = c("container_cpu_usage_seconds_total");
    let split = c("container_cpu_user_seconds_total") + c("container_cpu_system_seconds_total");
    assert!(
        split <= usage + 2,
        "user {split} vs usage {usage} (whole seconds)"
    );
    // Memory: the peak is at least the current usage; the parts fit in the usage.
    let used = c("container_memory_usage_bytes");
    if cgroup_v1 {
        assert!(c("container_memory_max_usage_bytes") >= used);
    }
    assert!(c("container_memory_cache") <= used);
    assert!(c("container_memory_mapped_file") <= used);
    assert_eq!(
        c("container_memory_swap"),
        0,
        "nothing swapped under a 64 MiB limit"
    );
    // sh, httpd, the loop's subshell and sleep.
    let processes = c("container_processes");
    assert!((3..=8).contains(&processes), "processes {processes}");
    assert!(c("container_threads") >= processes);
    let threads_max = c("container_threads_max");
    assert!(
        threads_max == 0 || threads_max >= processes,
        "{threads_max}"
    );
    assert!(
        c("container_file_descriptors") > processes,
        "stdio of each, and the socket"
    );
    assert!(c("container_sockets") >= 1, "httpd listens");
    // The writable layer's filesystem.
    let (free, total) = (
        c("container_fs_inodes_free"),
        c("container_fs_inodes_total"),
    );
    assert!(0 < free && free <= total, "inodes {free}/{total}");
    let (fs_used, fs_limit) = (c("container_fs_usage_bytes"), c("container_fs_limit_bytes"));
    assert!(0 < fs_used && fs_used < fs_limit, "fs {fs_used}/{fs_limit}");
    // Times.
    let started = c("container_start_time_seconds");
    assert!(
        (test_start.saturating_sub(2)..=now_secs() + 1).contains(&started),
        "start {started}, test began {test_start}"
    );
    assert!(get(&pod_metrics, "container_start_time_seconds") <= started);
    let nofile = container
        .iter()
        .find(|m| {
            m.name == "container_ulimits_soft"
                && m.label_values.last().is_some_and(|l| l == "max_open_files")
        })
        .map(|m| v(&m.value));
    assert!(nofile.is_some_and(|n| n > 0), "open files limit {nofile:?}");
    // The pod cgroup holds the container's processes.
    assert!(get(&pod_metrics, "container_processes") >= processes);
    // Block I/O per device, where the kernel accounted any (virtual disks may not).
    for m in container
        .iter()
        .filter(|m| m.name == "container_blkio_device_usage_total")
    {
        let op = m.label_values.last().expect("operation");
        assert!(
            ["Read", "Write", "Sync", "Async", "Discard", "Total"].contains(&op.as_str()),
            "{op}"
        );
        assert!(m.label_values[6].starts_with("/dev/") || m.label_values[6].contains(':'));
    }
    e.d.remove_pod(&pod).await;
}
