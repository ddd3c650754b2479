//! Container benchmark: CreateContainer + StartContainer latency of a busybox `sleep` over N
//! runs in one pod, and the time from the StartContainer call to the container's first log
//! line, as a table. Also a whole one-container pod (RunPodSandbox + Create + Start).
//!
//! Usage: `bench-containers [--runs N]` (root). Set BERTHD_BIN to a release berthd for
//! representative figures.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::daemon::{Berthd, BerthdOptions};
use e2e::images::push_test_images;
use e2e::pods::{TestNetwork, pod_config};
use e2e::registry::Registry;
use proto::cri::runtime_service_client::RuntimeServiceClient;
use proto::cri::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, LinuxContainerConfig,
    PodSandboxConfig, PullImageRequest, RemoveContainerRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest,
};
use tonic::transport::Channel;

fn parse_runs() -> Result<usize, String> {
    let mut args = std::env::args().skip(1);
    let mut runs = 50;
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--runs" => {
                runs = args
                    .next()
                    .ok_or("--runs needs a value")?
                    .parse()
                    .map_err(|e| format!("--runs: {e}"))?
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(runs)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
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

async fn create_start(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    pc: &PodSandboxConfig,
    c: ContainerConfig,
) -> Result<(String, Instant), tonic::Status> {
    let id = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(c),
            sandbox_config: Some(pc.clone()),
        })
        .await?
        .into_inner()
        .container_id;
    let start_call = Instant::now();
    rt.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await?;
    Ok((id, start_call))
}

fn row(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| {name} | {:.1} ms | {:.1} ms | {:.1} ms |",
        ms(percentile(&v, 0.5)),
        ms(percentile(&v, 0.95)),
        ms(percentile(&v, 1.0))
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs = parse_runs()?;
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
    let mut pc = pod_config("bench");
    pc.log_directory = logs.path().join("bench").display().to_string();
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pc.clone()),
            runtime_handler: String::new(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;

    let (mut create_start_times, mut first_line) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let name = format!("c{i}");
        let c = container(
            &image,
            &name,
            &["/bin/sh", "-c", "echo ready; exec sleep 3600"],
        );
        let log = PathBuf::from(&pc.log_directory).join(format!("{name}.log"));
        let began = Instant::now();
        let (id, start_call) = create_start(&mut rt, &pod, &pc, c).await?;
        create_start_times.push(began.elapsed());
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&log).map_or(true, |m| m.len() == 0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        first_line.push(start_call.elapsed());
        rt.remove_container(RemoveContainerRequest { container_id: id })
            .await?;
    }
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await?;

    // Whole one-container pods, as kubelet starts them.
    let mut pod_start = Vec::new();
    for i in 0..runs {
        let mut pc = pod_config(&format!("whole-{i}"));
        pc.log_directory = logs.path().join(format!("whole-{i}")).display().to_string();
        let began = Instant::now();
        let pod = rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pc.clone()),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
        let c = container(&image, "app", &["/bin/sleep", "3600"]);
        create_start(&mut rt, &pod, &pc, c).await?;
        pod_start.push(began.elapsed());
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await?;
    }

    println!("busybox containers with berth's native executor, {runs} runs each, sequential");
    println!("| metric | p50 | p95 | max |");
    println!("|---|---|---|---|");
    row("CreateContainer + StartContainer", create_start_times);
    row("StartContainer call → first log line", first_line);
    row("whole pod: RunPodSandbox + Create + Start", pod_start);
    Ok(())
}
