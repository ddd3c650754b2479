//! Pod sandbox benchmark: RunPodSandbox latency over N pods on berth's built-in network, and
//! the memory of each pod's shim (RSS and PSS from /proc/<pid>/smaps_rollup), as a table.
//!
//! Usage: `bench-pods [--pods N]` (root; uses a private bridge and /24 inside 10.88.0.0/16).
//! Set BERTHD_BIN to a release berthd (with berth-shim beside it) for representative figures.

use std::time::{Duration, Instant};

use e2e::daemon::{Berthd, BerthdOptions};
use e2e::pods::{TestNetwork, pod_config};
use proto::cri::{PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest};

fn parse_pods() -> Result<usize, String> {
    let mut args = std::env::args().skip(1);
    let mut pods = 50;
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--pods" => {
                pods = args
                    .next()
                    .ok_or("--pods needs a value")?
                    .parse()
                    .map_err(|e| format!("--pods: {e}"))?
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(pods)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// (RSS, PSS) in KiB of a process.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("Rss:")?, field("Pss:")?))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n = parse_pods()?;
    let net = TestNetwork::new();
    let cni = tempfile::tempdir()?;
    let berthd = Berthd::start_with(BerthdOptions {
        config_toml: Some(net.config_toml(cni.path())),
        args: vec![
            "--log-level".into(),
            std::env::var("BERTH_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        ],
        ..Default::default()
    })
    .await?;
    let mut client = berthd.runtime().await?;
    let mut latencies = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        let id = client
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod_config(&format!("bench-{i}"))),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
        latencies.push(started.elapsed());
        ids.push(id);
    }
    let mut shims = Vec::new();
    for id in &ids {
        let resp = client
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: true,
            })
            .await?
            .into_inner();
        let info: serde_json::Value = serde_json::from_str(&resp.info["info"])?;
        if let Some(mem) = info["pid"].as_u64().and_then(|p| memory_kib(p as u32)) {
            shims.push(mem);
        }
    }
    let daemon = berthd.pid().and_then(memory_kib);
    for id in &ids {
        client
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await?;
    }

    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let avg = |f: fn(&(u64, u64)) -> u64| {
        shims.iter().map(f).sum::<u64>() as f64 / shims.len().max(1) as f64 / 1024.0
    };
    println!("RunPodSandbox with the built-in bridge network, {n} pods, sequential");
    println!("| metric | value |");
    println!("|---|---|");
    println!("| p50 | {:.1} ms |", ms(percentile(&latencies, 0.50)));
    println!("| p95 | {:.1} ms |", ms(percentile(&latencies, 0.95)));
    println!("| max | {:.1} ms |", ms(percentile(&latencies, 1.0)));
    println!("| shim RSS (mean) | {:.2} MiB |", avg(|m| m.0));
    println!("| shim PSS (mean) | {:.2} MiB |", avg(|m| m.1));
    if let Some((rss, pss)) = daemon {
        println!(
            "| berthd RSS / PSS with {n} pods | {:.1} / {:.1} MiB |",
            rss as f64 / 1024.0,
            pss as f64 / 1024.0
        );
    }
    Ok(())
}
