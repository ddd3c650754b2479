//! `berth-bench`: benchmarks a CRI runtime, optionally against a second one (`--compare`).
//! See `docs/performance.md` for the scenarios and `bench/compare-containerd.sh` for a
//! side-by-side run with containerd.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_bench::memory::HelperRules;
use berth_bench::report::{Report, TargetResult};
use berth_bench::scenario::{self, Bench, burst::Burst, churn::Churn};
use berth_bench::target::{Target, TargetSpec, socket_path};
use berth_bench::workload::Workload;
use berth_bench::{plot, push};
use clap::{Args, Parser, Subcommand};
use regex::Regex;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    name = "berth-bench",
    version,
    about = "Benchmark CRI runtimes over their gRPC sockets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// N pods one after another: RunPodSandbox + CreateContainer + StartContainer, per step.
    PodStart {
        #[command(flatten)]
        common: Common,
        /// Pods per runtime.
        #[arg(long, default_value_t = 50)]
        pods: usize,
    },
    /// N pods started at once by C concurrent clients, for each C: wall time to all Running,
    /// per-pod start time and errors.
    Burst {
        #[command(flatten)]
        common: Common,
        /// Pods per burst (kubelet's default maximum per node is 110).
        #[arg(long, default_value_t = 110)]
        pods: usize,
        /// Concurrent clients, one burst per value.
        #[arg(long, value_delimiter = ',', default_values_t = [1, 4, 16])]
        clients: Vec<usize>,
        /// Bursts per client count and runtime (the median wall time is reported).
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
    /// N pods kept running: daemon and helper memory (RSS, PSS), idle and per pod.
    Density {
        #[command(flatten)]
        common: Common,
        /// Pods per runtime.
        #[arg(long, default_value_t = 100)]
        pods: usize,
        /// Seconds to wait before each memory snapshot.
        #[arg(long, default_value_t = 2.0)]
        settle: f64,
    },
    /// M concurrent workers creating and deleting pods for T seconds: pods/s and errors.
    Churn {
        #[command(flatten)]
        common: Common,
        /// Concurrent workers per runtime.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Seconds each runtime churns in total.
        #[arg(long, default_value_t = 30.0)]
        seconds: f64,
        /// Rounds the time is split into, alternating runtimes.
        #[arg(long, default_value_t = 4)]
        rounds: usize,
    },
    /// ExecSync round-trip latency of `/bin/true` in a running container.
    Exec {
        #[command(flatten)]
        common: Common,
        /// ExecSync calls per runtime.
        #[arg(long, default_value_t = 200)]
        runs: usize,
    },
    /// PullImage of an image the runtime does not have (removed before every pull).
    Pull {
        #[command(flatten)]
        common: Common,
        /// The image to pull (sharing no layers with other images on the runtimes).
        #[arg(long)]
        pull_image: String,
        /// Pulls per runtime.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Pushes the benchmark's images into a docker-registry storage directory.
    PushTestImages {
        /// The registry's `storage.filesystem.rootdirectory`.
        #[arg(long)]
        storage: PathBuf,
        /// Layers of the synthetic pull image.
        #[arg(long, default_value_t = 4)]
        pull_layers: usize,
        /// Files per layer of the synthetic pull image.
        #[arg(long, default_value_t = 2000)]
        pull_files: usize,
    },
    /// Prints a runtime's name and version (CRI Version) and its daemon's PID.
    Info {
        /// CRI socket (`/path` or `unix:///path`).
        #[arg(long)]
        endpoint: String,
    },
    /// Removes every pod in the benchmark's namespace (after a run that could not clean up).
    RemovePods {
        /// CRI socket (`/path` or `unix:///path`).
        #[arg(long)]
        endpoint: String,
    },
    /// Plots the pod-start latency CDF of a report saved with `--save` as a PNG.
    Plot {
        /// A pod-start report (JSON).
        report: PathBuf,
        /// The PNG to write.
        #[arg(long)]
        output: PathBuf,
        #[arg(long, default_value_t = 1000)]
        width: u32,
        #[arg(long, default_value_t = 600)]
        height: u32,
    },
}

/// Options every scenario takes: the runtime(s), the image, the output.
#[derive(Args, Debug)]
struct Common {
    /// CRI socket of the runtime under test (`/path` or `unix:///path`).
    #[arg(long)]
    endpoint: String,
    /// Its display name (default: the runtime's name from Version).
    #[arg(long)]
    name: Option<String>,
    /// RuntimeClass handler for its pods.
    #[arg(long, default_value = "")]
    runtime_handler: String,
    /// Regex on the command line of its detached helpers (shims), e.g. `berth-shim /run/x/`.
    #[arg(long)]
    helper_pattern: Option<String>,
    /// Regex on the command line of helper children that are not workloads, e.g. `^/pause$`.
    #[arg(long)]
    sandbox_pattern: Option<String>,
    /// Its daemon's PID (default: the process listening on the endpoint).
    #[arg(long)]
    daemon_pid: Option<u32>,
    /// A second runtime's CRI socket, run interleaved with the first; ratios are first/second.
    #[arg(long)]
    compare: Option<String>,
    #[arg(long)]
    compare_name: Option<String>,
    #[arg(long, default_value = "")]
    compare_runtime_handler: String,
    #[arg(long)]
    compare_helper_pattern: Option<String>,
    #[arg(long)]
    compare_sandbox_pattern: Option<String>,
    #[arg(long)]
    compare_daemon_pid: Option<u32>,
    /// Container image: a busybox with /bin/sh, sleep and true.
    #[arg(long)]
    image: Option<String>,
    /// Pod cgroup parent (default `/berth-bench-<pid>`; removed at the end).
    #[arg(long)]
    cgroup_parent: Option<String>,
    /// Milliseconds to pause after each timed operation (not in churn), so that background
    /// work it set off is not timed in the next one.
    #[arg(long, default_value_t = 100)]
    gap_ms: u64,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    save: Option<PathBuf>,
    /// The /proc to read process memory from.
    #[arg(long, default_value = "/proc", hide = true)]
    proc_root: PathBuf,
}

impl Common {
    fn specs(&self) -> Result<Vec<TargetSpec>, String> {
        let mut specs = vec![spec(
            &self.endpoint,
            &self.name,
            &self.runtime_handler,
            &self.helper_pattern,
            &self.sandbox_pattern,
            self.daemon_pid,
        )?];
        if let Some(other) = &self.compare {
            specs.push(spec(
                other,
                &self.compare_name,
                &self.compare_runtime_handler,
                &self.compare_helper_pattern,
                &self.compare_sandbox_pattern,
                self.compare_daemon_pid,
            )?);
        }
        Ok(specs)
    }
}

fn spec(
    endpoint: &str,
    name: &Option<String>,
    handler: &str,
    helper: &Option<String>,
    sandbox: &Option<String>,
    daemon_pid: Option<u32>,
) -> Result<TargetSpec, String> {
    let regex = |flag: &str, p: &Option<String>| {
        p.as_deref()
            .map(Regex::new)
            .transpose()
            .map_err(|e| format!("--{flag}: {e}"))
    };
    let path = socket_path(endpoint);
    // /proc/net/unix names the socket by its absolute path.
    let endpoint = std::fs::canonicalize(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(TargetSpec {
        name: name.clone(),
        endpoint,
        runtime_handler: handler.to_string(),
        rules: HelperRules {
            helper: regex("helper-pattern", helper)?,
            sandbox: regex("sandbox-pattern", sandbox)?,
        },
        daemon_pid,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Interrupted) => {
            eprintln!("berth-bench: interrupted; cleaned up");
            ExitCode::from(130)
        }
        Err(Failure::Error(e)) => {
            eprintln!("berth-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Interrupted,
    Error(String),
}

impl From<String> for Failure {
    fn from(e: String) -> Failure {
        Failure::Error(e)
    }
}

async fn run(command: Command) -> Result<(), Failure> {
    let (common, scenario, params) = match command {
        Command::PushTestImages {
            storage,
            pull_layers,
            pull_files,
        } => {
            let size = push::PullImageSize {
                layers: pull_layers,
                files_per_layer: pull_files,
            };
            for name in push::push_all(&storage, size).await? {
                println!("{name}");
            }
            return Ok(());
        }
        Command::Plot {
            report,
            output,
            width,
            height,
        } => {
            let text = std::fs::read_to_string(&report)
                .map_err(|e| format!("read {}: {e}", report.display()))?;
            let report: Report = serde_json::from_str(&text)
                .map_err(|e| format!("parse {}: {e}", output.display()))?;
            return Ok(plot::pod_start_cdf(&report, &output, (width, height))?);
        }
        Command::Info { endpoint } => {
            let t = connect_plain(&endpoint).await?;
            let pid = t
                .daemon_pid
                .map_or("unknown".to_string(), |p| p.to_string());
            println!("{}\tdaemon pid {pid}", t.runtime);
            return Ok(());
        }
        Command::RemovePods { endpoint } => {
            let t = connect_plain(&endpoint).await?;
            let errors = t.remove_namespace_pods().await;
            for e in &errors {
                eprintln!("berth-bench: {e}");
            }
            return match errors.is_empty() {
                true => Ok(()),
                false => Err(format!("{} pod(s) not removed", errors.len()).into()),
            };
        }
        Command::PodStart { common, pods } => {
            (common, Scenario::PodStart(pods), json!({ "pods": pods }))
        }
        Command::Burst {
            common,
            pods,
            clients,
            rounds,
        } => {
            let params = json!({ "pods": pods, "clients": clients, "rounds": rounds });
            let burst = Burst {
                pods,
                clients,
                rounds,
            };
            (common, Scenario::Burst(burst), params)
        }
        Command::Density {
            common,
            pods,
            settle,
        } => (
            common,
            Scenario::Density(pods, secs(settle, "--settle")?),
            json!({ "pods": pods, "settle_s": settle }),
        ),
        Command::Churn {
            common,
            workers,
            seconds,
            rounds,
        } => (
            common,
            Scenario::Churn(Churn {
                workers,
                duration: secs(seconds, "--seconds")?,
                rounds,
            }),
            json!({ "workers": workers, "seconds": seconds, "rounds": rounds }),
        ),
        Command::Exec { common, runs } => (common, Scenario::Exec(runs), json!({ "runs": runs })),
        Command::Pull {
            common,
            pull_image,
            runs,
        } => (
            common,
            Scenario::Pull(pull_image.clone(), runs),
            json!({ "runs": runs, "image": pull_image }),
        ),
    };
    run_scenario(common, scenario, params).await
}

/// A target with no helper rules, for the one-shot subcommands.
async fn connect_plain(endpoint: &str) -> Result<Target, String> {
    let spec = spec(endpoint, &None, "", &None, &None, None)?;
    Target::connect(&spec).await
}

fn secs(v: f64, flag: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v).map_err(|e| format!("{flag}: {e}"))
}

#[derive(Debug)]
enum Scenario {
    PodStart(usize),
    Burst(Burst),
    Density(usize, Duration),
    Churn(Churn),
    Exec(usize),
    Pull(String, usize),
}

impl Scenario {
    fn name(&self) -> &'static str {
        match self {
            Scenario::PodStart(_) => "pod-start",
            Scenario::Burst(_) => "burst",
            Scenario::Density(..) => "density",
            Scenario::Churn(_) => "churn",
            Scenario::Exec(_) => "exec",
            Scenario::Pull(..) => "pull",
        }
    }

    async fn run(&self, b: &Bench) -> Result<Vec<TargetResult>, String> {
        match self {
            Scenario::PodStart(pods) => scenario::pod_start::run(b, *pods).await,
            Scenario::Burst(burst) => scenario::burst::run(b, burst).await,
            Scenario::Density(pods, settle) => scenario::density::run(b, *pods, *settle).await,
            Scenario::Churn(c) => scenario::churn::run(b, *c).await,
            Scenario::Exec(runs) => scenario::exec::run(b, *runs).await,
            Scenario::Pull(image, runs) => scenario::pull::run(b, image, *runs).await,
        }
    }
}

async fn run_scenario(
    common: Common,
    scenario: Scenario,
    params: serde_json::Value,
) -> Result<(), Failure> {
    let image = match (&scenario, &common.image) {
        (_, Some(image)) => image.clone(),
        (Scenario::Pull(..), None) => String::new(),
        (_, None) => return Err(format!("{}: --image is required", scenario.name()).into()),
    };
    let mut targets = Vec::new();
    for spec in common.specs()? {
        targets.push(Target::connect(&spec).await?);
    }
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let log_root = tempfile::Builder::new()
        .prefix("berth-bench-logs-")
        .tempdir()
        .map_err(|e| format!("create a log directory: {e}"))?;
    let bench = Bench {
        targets,
        workload: Workload {
            run_id: format!("{}-{started_unix}", std::process::id()),
            image,
            cgroup_parent: common
                .cgroup_parent
                .clone()
                .unwrap_or_else(|| format!("/berth-bench-{}", std::process::id())),
            log_root: log_root.path().to_path_buf(),
        },
        proc_root: common.proc_root.clone(),
        gap: Duration::from_millis(common.gap_ms),
    };
    let outcome = tokio::select! {
        r = scenario.run(&bench) => r.map_err(Failure::Error),
        () = shutdown_signal() => Err(Failure::Interrupted),
    };
    cleanup(&bench).await;
    let results = outcome?;
    let mut params = match params {
        serde_json::Value::Object(m) => m.into_iter().collect(),
        _ => BTreeMap::new(),
    };
    if !matches!(scenario, Scenario::Churn(_)) {
        params.insert("gap_ms".into(), json!(common.gap_ms));
    }
    let report = Report {
        scenario: scenario.name().to_string(),
        started_unix,
        params,
        targets: results,
    };
    output(&report, common.json, common.save.as_deref())
}

/// Removes every pod and pulled image of the run from every runtime, and the cgroup parent.
async fn cleanup(b: &Bench) {
    for t in &b.targets {
        for e in t.cleanup(&b.workload.run_id).await {
            eprintln!("berth-bench: cleanup on {}: {e}", t.name);
        }
    }
    b.workload.remove_cgroup_parent();
}

fn output(report: &Report, json: bool, save: Option<&Path>) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(report).map_err(|e| format!("JSON: {e}"))?;
    if let Some(path) = save {
        std::fs::write(path, &text).map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    if json {
        println!("{text}");
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without signal handlers the run simply cannot be interrupted gracefully.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}
