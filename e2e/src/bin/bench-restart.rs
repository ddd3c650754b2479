//! Restart benchmark: how long a berthd holding N live pods (one running container each)
//! takes, after SIGTERM and a new start on the same state, to answer `Version` and to list
//! every pod and container (reconnecting to every shim, recovery included). Prints a table.
//!
//! Usage: `bench-restart [--pods N] [--rounds R]` (root). Set BERTHD_BIN to a release berthd
//! for representative figures.

use std::time::{Duration, Instant};

use e2e::containers::env_with;
use e2e::daemon::BerthdOptions;
use nix::sys::signal::Signal;
use proto::cri::{ListContainersRequest, ListPodSandboxRequest};

fn flag(name: &str, default: usize) -> Result<usize, String> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .ok_or(format!("{name} needs a value"))?
            .parse()
            .map_err(|e| format!("{name}: {e}")),
        None => Ok(default),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pods = flag("--pods", 100)?;
    let rounds = flag("--rounds", 5)?;
    let Some(mut e) = env_with("[log]\nlevel = \"warn\"\n").await else {
        return Err("needs root".into());
    };
    eprintln!("starting {pods} pods...");
    for i in 0..pods {
        e.run_container(
            &format!("p{i}"),
            &["/bin/sh", "-c", "exec sleep 3600"],
            |_| {},
        )
        .await;
    }
    let opts = BerthdOptions {
        config_toml: Some(e.config.clone()),
        ..Default::default()
    };
    let mut ready = Vec::new();
    let mut listed = Vec::new();
    for _ in 0..rounds {
        e.d.stop_with(Signal::SIGTERM, Duration::from_secs(30))
            .await?;
        let t0 = Instant::now();
        e.d.respawn(&opts).await?;
        ready.push(t0.elapsed());
        let mut rt = e.d.runtime().await?;
        let n_pods = rt
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await?
            .into_inner()
            .items
            .len();
        let n_ctrs = rt
            .list_containers(ListContainersRequest { filter: None })
            .await?
            .into_inner()
            .containers
            .len();
        listed.push(t0.elapsed());
        if n_pods != pods || n_ctrs != pods {
            return Err(format!("after restart: {n_pods} pods, {n_ctrs} containers").into());
        }
    }
    ready.sort();
    listed.sort();
    let med = |v: &[Duration]| v[v.len() / 2];
    println!("| berthd restart with {pods} live pods ({rounds} rounds) | median | max |");
    println!("|---|---|---|");
    println!(
        "| start → answers Version | {:.0} ms | {:.0} ms |",
        ms(med(&ready)),
        ms(ready[ready.len() - 1])
    );
    println!(
        "| start → listed every pod and container | {:.0} ms | {:.0} ms |",
        ms(med(&listed)),
        ms(listed[listed.len() - 1])
    );
    println!("(readiness polled every 20 ms)");
    Ok(())
}
