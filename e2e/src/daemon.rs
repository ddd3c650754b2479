//! A real `berthd` per test: its own temp root/state dirs and socket, a CRI client over the
//! unix socket, stderr captured to a file, and the process killed (by PID) when dropped.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use proto::cri::image_service_client::ImageServiceClient;
use proto::cri::runtime_service_client::RuntimeServiceClient;
use tempfile::TempDir;
use tonic::transport::Channel;

use crate::channel::connect;

/// How long a test waits for berthd to answer on its socket.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// `t` times `$BERTH_E2E_TIMEOUT_SCALE` (default 1): start-up waits in slow environments, such
/// as the emulated VM of `scripts/criu-lane.sh`, where every exec costs ~20 times more.
pub fn slow(t: Duration) -> Duration {
    let scale = std::env::var("BERTH_E2E_TIMEOUT_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    t * scale
}

/// [`READY_TIMEOUT`] scaled by [`slow`], or `BERTH_E2E_READY_TIMEOUT_SECS` where the tests run
/// slowly (the cgroup v2 lane's emulated VM on a loaded machine).
pub fn ready_timeout() -> Duration {
    std::env::var("BERTH_E2E_READY_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or_else(|| slow(READY_TIMEOUT), Duration::from_secs)
}

/// Path of the `berthd` binary under test: `$BERTHD_BIN`, or `berthd` in the cargo target
/// directory this test binary was built into.
pub fn berthd_binary() -> io::Result<PathBuf> {
    if let Some(p) = std::env::var_os("BERTHD_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test-binary> or target/<profile>/<bin> -> target/<profile>/berthd
    let dirs = [exe.parent(), exe.parent().and_then(Path::parent)];
    let Some(bin) = dirs
        .into_iter()
        .flatten()
        .map(|d| d.join("berthd"))
        .find(|b| b.is_file())
    else {
        return Err(io::Error::other(format!(
            "no berthd beside {}: build it first (cargo build -p cri-server --bin berthd) or set BERTHD_BIN",
            exe.display()
        )));
    };
    Ok(bin)
}

/// Runs `berthd` with `args` to completion (for flags that exit at once, or start failures),
/// killing it after `timeout`.
pub fn run_berthd(args: &[&str], timeout: Duration) -> io::Result<Output> {
    let mut child = Command::new(berthd_binary()?)
        .args(args)
        .env_remove("BERTH_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + timeout;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            return Err(io::Error::other(format!(
                "berthd {args:?} still running after {timeout:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output()
}

/// Options for starting a [`Berthd`].
#[derive(Debug, Default, Clone)]
pub struct BerthdOptions {
    /// TOML written to `<dir>/berth.toml` and passed with `--config`.
    pub config_toml: Option<String>,
    /// Extra command-line flags.
    pub args: Vec<String>,
    /// Persistent state dir instead of `<dir>/root` (e.g. on another filesystem).
    pub root_dir: Option<PathBuf>,
    /// Extra environment variables (e.g. `BERTH_FAILPOINT`).
    pub env: Vec<(String, String)>,
    /// A command that runs berthd (its path and arguments appended), e.g. to start it in a
    /// mount namespace of the test's making; empty runs berthd directly.
    pub wrapper: Vec<String>,
}

/// A running berthd owned by one test.
#[derive(Debug)]
pub struct Berthd {
    child: Option<Child>,
    /// Owned temp dir (removed on drop), absent when reusing another daemon's dir.
    _tempdir: Option<TempDir>,
    dir: PathBuf,
    pub socket: PathBuf,
    pub root_dir: PathBuf,
    pub state_dir: PathBuf,
    stderr_path: PathBuf,
}

impl Berthd {
    /// Starts berthd with defaults and waits until it answers `Version`.
    pub async fn start() -> io::Result<Berthd> {
        Berthd::start_with(BerthdOptions::default()).await
    }

    /// Starts berthd with `opts` and waits until it answers `Version`.
    pub async fn start_with(opts: BerthdOptions) -> io::Result<Berthd> {
        let dir = tempfile::Builder::new().prefix("berth-e2e-").tempdir()?;
        // Traversable, not listable, as /run is for a production berthd: an OCI runtime
        // (runc 1.1) looks a user-namespaced container's root up from inside the namespace.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )?;
        let path = dir.path().to_path_buf();
        let mut d = Berthd::spawn_at(&path, &opts)?;
        d._tempdir = Some(dir);
        d.wait_ready(ready_timeout()).await?;
        Ok(d)
    }

    /// Spawns a berthd on the dirs of an earlier one (whose `dir()` is `dir`), as after a
    /// restart, without waiting for it. The earlier `Berthd` must outlive this one.
    pub fn spawn_in_existing(dir: &Path, config_toml: &str) -> io::Result<Berthd> {
        Berthd::spawn_at(
            dir,
            &BerthdOptions {
                config_toml: Some(config_toml.to_string()),
                ..Default::default()
            },
        )
    }

    /// Spawns berthd with its sockets and state under `dir`, without waiting for it.
    pub fn spawn_at(dir: &Path, opts: &BerthdOptions) -> io::Result<Berthd> {
        let socket = dir.join("berth.sock");
        let root_dir = opts.root_dir.clone().unwrap_or_else(|| dir.join("root"));
        let state_dir = dir.join("state");
        static SPAWNED: AtomicUsize = AtomicUsize::new(0);
        let n = SPAWNED.fetch_add(1, Ordering::Relaxed);
        let stderr_path = dir.join(format!("berthd.{n}.stderr"));
        let mut cmd = match opts.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(berthd_binary()?);
                cmd
            }
            None => Command::new(berthd_binary()?),
        };
        cmd.env_remove("BERTH_CONFIG")
            .env(
                "BERTH_LOG_LEVEL",
                "info,cri_server=debug,podsandbox=debug,images=debug,runtime_core=debug",
            )
            .arg("--socket")
            .arg(&socket)
            .arg("--root-dir")
            .arg(&root_dir)
            .arg("--state-dir")
            .arg(&state_dir);
        if let Some(toml) = &opts.config_toml {
            let file = dir.join("berth.toml");
            std::fs::write(&file, toml)?;
            cmd.arg("--config").arg(file);
        } else {
            // Never pick up a real installation's /etc/berth/berth.toml.
            cmd.arg("--config").arg("/dev/null");
        }
        // Many daemons run at once: /metrics on a free port unless the test picks one.
        let picks_metrics = opts.args.iter().any(|a| a.starts_with("--metrics-address"))
            || opts
                .config_toml
                .as_deref()
                .is_some_and(|t| t.contains("[metrics]"));
        if !picks_metrics {
            cmd.arg("--metrics-address").arg("127.0.0.1:0");
        }
        cmd.envs(opts.env.iter().map(|(k, v)| (k, v)))
            .args(&opts.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr_path)?);
        let child = cmd.spawn()?;
        Ok(Berthd {
            child: Some(child),
            _tempdir: None,
            dir: dir.to_path_buf(),
            socket,
            root_dir,
            state_dir,
            stderr_path,
        })
    }

    /// Spawns berthd from a prepared command (e.g. a systemd unit's `ExecStart`) whose config
    /// puts its socket and state at `socket`, `root_dir` and `state_dir`, without waiting for
    /// it; its stderr goes to a file in `dir`. When `owned` holds the directory, dropping the
    /// `Berthd` force-cleans it as for [`Berthd::start_with`].
    pub fn spawn_command(
        mut cmd: Command,
        dir: &Path,
        owned: Option<TempDir>,
        socket: PathBuf,
        root_dir: PathBuf,
        state_dir: PathBuf,
    ) -> io::Result<Berthd> {
        let stderr_path = dir.join("berthd.stderr");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr_path)?);
        let child = cmd.spawn()?;
        Ok(Berthd {
            child: Some(child),
            _tempdir: owned,
            dir: dir.to_path_buf(),
            socket,
            root_dir,
            state_dir,
            stderr_path,
        })
    }

    /// Replaces the berthd process with a new one on the same dirs (as after a restart or a
    /// crash), started with `opts` (give the same config again), and waits until it answers.
    /// A process still running is killed first (SIGKILL).
    pub async fn respawn(&mut self, opts: &BerthdOptions) -> io::Result<()> {
        if let Some(mut old) = self.child.take() {
            if old.try_wait()?.is_none() {
                let _ = old.kill();
            }
            let _ = old.wait();
        }
        let mut fresh = Berthd::spawn_at(&self.dir, opts)?;
        self.child = fresh.child.take();
        self.stderr_path = fresh.stderr_path.clone();
        self.wait_ready(ready_timeout()).await
    }

    /// Waits up to `timeout` for the berthd process to exit by itself (e.g. at a failpoint).
    pub async fn wait_exit(&mut self, timeout: Duration) -> io::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "berthd still running after {timeout:?}; stderr:\n{}",
                    self.stderr()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until berthd answers `Version`, failing early (with its stderr) if it exits.
    pub async fn wait_ready(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Err(io::Error::other(format!(
                    "berthd exited with {status} before it was ready; stderr:\n{}",
                    self.stderr()
                )));
            }
            if self.socket.exists() && self.version_ok().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "berthd not ready after {timeout:?}; stderr:\n{}",
                    self.stderr()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn version_ok(&self) -> bool {
        let Ok(channel) = connect(&self.socket).await else {
            return false;
        };
        let mut client = RuntimeServiceClient::new(channel);
        client
            .version(proto::cri::VersionRequest::default())
            .await
            .is_ok()
    }

    /// A RuntimeService client on this daemon's socket.
    pub async fn runtime(&self) -> io::Result<RuntimeServiceClient<Channel>> {
        let channel = connect(&self.socket).await.map_err(io::Error::other)?;
        // kubelet's and crictl's message limit.
        Ok(RuntimeServiceClient::new(channel)
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(16 << 20))
    }

    /// An ImageService client on this daemon's socket.
    pub async fn images(&self) -> io::Result<ImageServiceClient<Channel>> {
        let channel = connect(&self.socket).await.map_err(io::Error::other)?;
        Ok(ImageServiceClient::new(channel)
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(16 << 20))
    }

    /// RunPodSandbox with the default handler; the pod's ID.
    pub async fn run_pod(
        &self,
        config: proto::cri::PodSandboxConfig,
    ) -> Result<String, tonic::Status> {
        self.run_pod_with_handler(config, "").await
    }

    /// RunPodSandbox with a RuntimeClass handler.
    pub async fn run_pod_with_handler(
        &self,
        config: proto::cri::PodSandboxConfig,
        handler: &str,
    ) -> Result<String, tonic::Status> {
        let mut rt = self
            .runtime()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        rt.run_pod_sandbox(proto::cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: handler.to_string(),
        })
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
    }

    /// RemovePodSandbox, which must succeed.
    pub async fn remove_pod(&self, id: &str) {
        let mut rt = self.runtime().await.expect("runtime client");
        rt.remove_pod_sandbox(proto::cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .expect("RemovePodSandbox");
    }

    /// IDs of every pod the daemon lists.
    pub async fn pod_ids(&self) -> Vec<String> {
        let mut rt = self.runtime().await.expect("runtime client");
        rt.list_pod_sandbox(proto::cri::ListPodSandboxRequest { filter: None })
            .await
            .expect("ListPodSandbox")
            .into_inner()
            .items
            .into_iter()
            .map(|p| p.id)
            .collect()
    }

    /// `host:port` of the daemon's `/metrics` endpoint, as it reports it in `Status` verbose
    /// info (`metricsAddress`); an error if the endpoint is off.
    pub async fn metrics_host(&self) -> io::Result<String> {
        let mut rt = self.runtime().await?;
        let info = rt
            .status(proto::cri::StatusRequest { verbose: true })
            .await
            .map_err(io::Error::other)?
            .into_inner()
            .info;
        let raw = info
            .get("metricsAddress")
            .ok_or_else(|| io::Error::other("Status info has no metricsAddress"))?;
        let address: String = serde_json::from_str(raw).map_err(io::Error::other)?;
        if address.is_empty() {
            return Err(io::Error::other("the daemon's /metrics endpoint is off"));
        }
        Ok(address)
    }

    /// The daemon's `/metrics` text (an error unless it answers 200).
    pub async fn metrics_text(&self) -> io::Result<String> {
        let host = self.metrics_host().await?;
        let resp = crate::http::get(&host, "/metrics").await?;
        if resp.status != 200 {
            return Err(io::Error::other(format!(
                "GET http://{host}/metrics: {} {}",
                resp.status,
                resp.body_text()
            )));
        }
        String::from_utf8(resp.body.to_vec()).map_err(io::Error::other)
    }

    /// The daemon's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The test's temp directory holding sockets, state and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Everything berthd wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Exit status if berthd has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => c.try_wait(),
            None => Err(io::Error::other("berthd already reaped")),
        }
    }

    /// Sends `signal` and waits up to `timeout` for berthd to exit. Async so this test's
    /// runtime keeps serving its client connections (berthd's graceful shutdown waits for
    /// clients to acknowledge it).
    pub async fn stop_with(&mut self, signal: Signal, timeout: Duration) -> io::Result<ExitStatus> {
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| io::Error::other("berthd already reaped"))?;
        let pid = Pid::from_raw(child.id() as i32);
        kill(pid, signal).map_err(io::Error::from)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "berthd did not exit within {timeout:?} of {signal}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Berthd {
    fn drop(&mut self) {
        if std::env::var_os("BERTH_E2E_SHOW_LOGS").is_some() {
            eprintln!(
                "--- berthd stderr ({}) ---\n{}",
                self.stderr_path.display(),
                self.stderr()
            );
        }
        if self
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
        {
            crate::cleanup::remove_pods_via_daemon(&self.socket);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Only the daemon that owns the directory cleans up (a restarted daemon shares it).
        if self._tempdir.is_some() {
            crate::cleanup::force_cleanup(&self.dir, &self.root_dir);
        }
    }
}
