//! Stats benchmark: what kubelet's stats polling costs berthd with N running pods of one
//! container each. Calls ListContainerStats, ListPodSandboxStats, ListPodSandboxMetrics and
//! ContainerStats `--calls` times each, spaced beyond the writable-layer cache's shortest TTL
//! (so every call samples afresh, as kubelet's 10 s polls do), and prints latency p50/p95/max
//! and berthd's CPU time per call as a table. With `--files N`, one more container writes N
//! files into its writable layer and the cost of walking it is reported too.
//!
//! Usage: `bench-stats [--pods N] [--calls N] [--files N]` (root; private bridge and /24
//! inside 10.88.0.0/16). Set BERTHD_BIN to a release berthd for representative figures.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::daemon::{Berthd, BerthdOptions};
use e2e::images::push_test_images;
use e2e::pods::{TestNetwork, pod_config};
use e2e::registry::Registry;
use proto::cri::runtime_service_client::RuntimeServiceClient;
use proto::cri::{
    ContainerConfig, ContainerMetadata, ContainerStatsRequest, CreateContainerRequest, ImageSpec,
    LinuxContainerConfig, ListContainerStatsRequest, ListPodSandboxMetricsRequest,
    ListPodSandboxStatsRequest, PodSandboxConfig, PullImageRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest,
};
use tonic::transport::Channel;

/// Longer than the writable-layer cache's minimum TTL (1 s), so no call is served from it.
const SPACING: Duration = Duration::from_millis(1100);
/// Spacing for the many-files layer, whose walk may earn a TTL above the minimum.
const BIG_LAYER_SPACING: Duration = Duration::from_secs(4);

struct Args {
    pods: usize,
    calls: usize,
    files: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        pods: 100,
        calls: 20,
        files: 0,
    };
    while let Some(flag) = args.next() {
        let mut value = |name: &str| -> Result<usize, String> {
            args.next()
                .ok_or(format!("{name} needs a value"))?
                .parse()
                .map_err(|e| format!("{name}: {e}"))
        };
        match flag.as_str() {
            "--pods" => parsed.pods = value("--pods")?,
            "--calls" => parsed.calls = value("--calls")?.max(1),
            "--files" => parsed.files = value("--files")?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(parsed)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// User + system CPU time of a process so far (from `/proc/<pid>/stat`, clock ticks).
fn cpu_time(pid: u32) -> Duration {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz.max(1))
}

fn container(image: &str, name: &str, command: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig::default()),
        ..Default::default()
    }
}

async fn run_pod_with(
    rt: &mut RuntimeServiceClient<Channel>,
    pc: &PodSandboxConfig,
    c: ContainerConfig,
) -> Result<(String, String), tonic::Status> {
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pc.clone()),
            runtime_handler: String::new(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    let id = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(c),
            sandbox_config: Some(pc.clone()),
        })
        .await?
        .into_inner()
        .container_id;
    rt.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await?;
    Ok((pod, id))
}

/// One table row: latency percentiles and mean berthd CPU time per call.
struct Row {
    name: String,
    latencies: Vec<Duration>,
    cpu: Duration,
    items: usize,
}

impl Row {
    fn print(mut self) {
        self.latencies.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let calls = self.latencies.len();
        println!(
            "| {} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            self.name,
            self.items,
            ms(percentile(&self.latencies, 0.5)),
            ms(percentile(&self.latencies, 0.95)),
            ms(percentile(&self.latencies, 1.0)),
            ms(self.cpu) / calls as f64
        );
    }
}

/// Times `calls` runs of `call`, `spacing` apart; `call` returns how many items it got.
async fn measure<F, Fut>(
    name: &str,
    calls: usize,
    spacing: Duration,
    berthd_pid: u32,
    mut call: F,
) -> Row
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<usize, tonic::Status>>,
{
    let (mut latencies, mut cpu, mut items) = (Vec::new(), Duration::ZERO, 0);
    for _ in 0..calls {
        tokio::time::sleep(spacing).await;
        let cpu_before = cpu_time(berthd_pid);
        let began = Instant::now();
        match call().await {
            Ok(n) => items = n,
            Err(e) => eprintln!("{name}: {e}"),
        }
        latencies.push(began.elapsed());
        cpu += cpu_time(berthd_pid).saturating_sub(cpu_before);
    }
    Row {
        name: name.to_string(),
        latencies,
        cpu,
        items,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let registry = Registry::start()?;
    let image = push_test_images(&registry)
        .await?
        .get("oci")
        .ok_or("no oci test image")?
        .reference
        .clone();
    let net = TestNetwork::new();
    let cni = tempfile::tempdir()?;
    let logs = tempfile::tempdir()?;
    let config = format!(
        "{}[registry]\ninsecure = [\"{}\"]\n",
        net.config_toml(cni.path()),
        registry.host()
    );
    let berthd = Berthd::start_with(BerthdOptions {
        config_toml: Some(config),
        args: vec!["--log-level".into(), "warn".into()],
        ..Default::default()
    })
    .await?;
    let berthd_pid = berthd.pid().ok_or("berthd has no pid")?;
    berthd
        .images()
        .await?
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            auth: None,
            sandbox_config: None,
        })
        .await?;
    let mut rt = berthd.runtime().await?;

    let began = Instant::now();
    let mut pods = Vec::new();
    for i in 0..args.pods {
        let mut pc = pod_config(&format!("stats-{i}"));
        pc.log_directory = logs.path().join(format!("stats-{i}")).display().to_string();
        let c = container(&image, "app", &["/usr/local/bin/pause"]);
        pods.push(run_pod_with(&mut rt, &pc, c).await?);
    }
    eprintln!("{} pods running after {:.1?}", args.pods, began.elapsed());
    let first_container = pods.first().map(|(_, c)| c.clone()).unwrap_or_default();

    let calls = args.calls;
    let mut rows = Vec::new();
    let rt2 = rt.clone();
    rows.push(
        measure("ListContainerStats", calls, SPACING, berthd_pid, || {
            let mut rt = rt2.clone();
            async move {
                let r = rt
                    .list_container_stats(ListContainerStatsRequest { filter: None })
                    .await?;
                Ok(r.into_inner().stats.len())
            }
        })
        .await,
    );
    rows.push(
        measure("ListPodSandboxStats", calls, SPACING, berthd_pid, || {
            let mut rt = rt2.clone();
            async move {
                let r = rt
                    .list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter: None })
                    .await?;
                Ok(r.into_inner().stats.len())
            }
        })
        .await,
    );
    rows.push(
        measure("ListPodSandboxMetrics", calls, SPACING, berthd_pid, || {
            let mut rt = rt2.clone();
            async move {
                let r = rt
                    .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
                    .await?;
                Ok(r.into_inner().pod_metrics.len())
            }
        })
        .await,
    );
    rows.push(
        measure("ContainerStats (one)", calls, SPACING, berthd_pid, || {
            let (mut rt, id) = (rt2.clone(), first_container.clone());
            async move {
                let r = rt
                    .container_stats(ContainerStatsRequest { container_id: id })
                    .await?;
                Ok(usize::from(r.into_inner().stats.is_some()))
            }
        })
        .await,
    );

    if args.files > 0 {
        rows.push(measure_big_layer(&mut rt, &image, logs.path(), &args, berthd_pid).await?);
    }

    for (pod, _) in &pods {
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await?;
    }
    println!(
        "{} running pods × 1 busybox container, {calls} calls per RPC spaced {:.1} s apart",
        args.pods,
        SPACING.as_secs_f64()
    );
    println!("| RPC | items | p50 | p95 | max | berthd CPU per call |");
    println!("|---|---|---|---|---|---|");
    for row in rows {
        row.print();
    }
    Ok(())
}

/// ContainerStats of a container whose writable layer holds `args.files` files.
async fn measure_big_layer(
    rt: &mut RuntimeServiceClient<Channel>,
    image: &str,
    logs: &Path,
    args: &Args,
    berthd_pid: u32,
) -> Result<Row, Box<dyn std::error::Error>> {
    let mut pc = pod_config("stats-files");
    pc.log_directory = logs.join("stats-files").display().to_string();
    let script = format!(
        "mkdir /many; i=0; while [ $i -lt {} ]; do echo $i > /many/f$i; i=$((i+1)); done; \
         echo written; exec sleep 3600",
        args.files
    );
    let c = container(image, "files", &["/bin/sh", "-c", &script]);
    let (pod, id) = run_pod_with(rt, &pc, c).await?;
    let log = PathBuf::from(&pc.log_directory).join("files.log");
    let deadline = Instant::now() + Duration::from_secs(600);
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.contains("written")) {
        if Instant::now() > deadline {
            return Err("the files container never finished writing".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rt2 = rt.clone();
    let name = format!("ContainerStats, {} files in the layer", args.files);
    // Long enough apart that even a costly walk's TTL has run out.
    let row = measure(
        &name,
        args.calls.min(5),
        BIG_LAYER_SPACING,
        berthd_pid,
        || {
            let (mut rt, id) = (rt2.clone(), id.clone());
            async move {
                let r = rt
                    .container_stats(ContainerStatsRequest { container_id: id })
                    .await?;
                let inodes = r
                    .into_inner()
                    .stats
                    .and_then(|s| s.writable_layer)
                    .and_then(|l| l.inodes_used)
                    .map_or(0, |v| v.value);
                Ok(inodes as usize)
            }
        },
    )
    .await;
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await?;
    Ok(row)
}
