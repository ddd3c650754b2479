//! Driving an OCI runtime binary through its command line (`create`, `start`, `kill`,
//! `delete`, `state`, `features`), as containerd's runc shim does. Every call blocks until
//! the runtime exits; the runtime's errors come from its JSON log (`--log`), because `create`
//! hands its own stdout and stderr to the container. The runtime always runs in the shim's
//! own PID namespace, never in the pod's shared one.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use proto::shim::OciRuntime;

use crate::executor::in_own_pid_namespace;

/// One configured runtime.
#[derive(Clone, Debug)]
pub struct Cli {
    runtime: OciRuntime,
}

impl Cli {
    pub fn new(runtime: OciRuntime) -> Cli {
        Cli { runtime }
    }

    /// The handler's name.
    pub fn name(&self) -> &str {
        &self.runtime.name
    }

    /// Where a container's bundle lives.
    pub fn bundle(&self, id: &str) -> PathBuf {
        Path::new(&self.runtime.bundle_dir).join(id)
    }

    fn command(&self, log: Option<&Path>) -> Command {
        let mut cmd = Command::new(&self.runtime.path);
        if !self.runtime.root.is_empty() {
            cmd.arg("--root").arg(&self.runtime.root);
        }
        if let Some(log) = log {
            cmd.arg("--log").arg(log).arg("--log-format").arg("json");
        }
        if self.runtime.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        cmd
    }

    /// `create`: the container's init waits in the runtime's `init` for `start`; its stdio are
    /// `stdio` (ignored with a console socket). Returns the init's PID.
    pub fn create(
        &self,
        id: &str,
        bundle: &Path,
        console_socket: Option<&Path>,
        stdio: [Stdio; 3],
    ) -> Result<i32, String> {
        let log = bundle.join("runtime.log");
        let pid_file = bundle.join("init.pid");
        let mut cmd = self.command(Some(&log));
        cmd.arg("create")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file);
        if let Some(socket) = console_socket {
            cmd.arg("--console-socket").arg(socket);
        }
        let [stdin, stdout, stderr] = stdio;
        cmd.arg(id).stdin(stdin).stdout(stdout).stderr(stderr);
        let status = in_own_pid_namespace(|| cmd.status())?
            .map_err(|e| format!("run {} create: {e}", self.runtime.path))?;
        if !status.success() {
            let errors = log_errors(&log);
            return Err(format!(
                "{} create {id} failed ({status}): {errors}{}",
                self.runtime.name,
                hint(&errors)
            ));
        }
        let text = std::fs::read_to_string(&pid_file)
            .map_err(|e| format!("read {}: {e}", pid_file.display()))?;
        text.trim()
            .parse()
            .map_err(|_| format!("{}: bad pid {text:?}", pid_file.display()))
    }

    /// Spawns `create` without waiting (for a console socket, which must be served while
    /// the runtime runs).
    pub fn spawn_create(
        &self,
        id: &str,
        bundle: &Path,
        console_socket: &Path,
    ) -> Result<std::process::Child, String> {
        let log = bundle.join("runtime.log");
        let mut cmd = self.command(Some(&log));
        cmd.arg("create")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(bundle.join("init.pid"))
            .arg("--console-socket")
            .arg(console_socket)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        in_own_pid_namespace(|| cmd.spawn())?
            .map_err(|e| format!("run {} create: {e}", self.runtime.path))
    }

    /// Runs a short subcommand, capturing its output.
    fn run(&self, args: &[&str]) -> Result<Vec<u8>, String> {
        let mut cmd = self.command(None);
        cmd.args(args).stdin(Stdio::null());
        let output = in_own_pid_namespace(|| cmd.output())?
            .map_err(|e| format!("run {} {}: {e}", self.runtime.path, args[0]))?;
        if output.status.success() {
            return Ok(output.stdout);
        }
        Err(format!(
            "{} {} failed ({}): {}",
            self.runtime.name,
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }

    /// `start`: the waiting init execs the container's process.
    pub fn start(&self, id: &str) -> Result<(), String> {
        self.run(&["start", id]).map(drop)
    }

    /// `kill`: sends `signal` to the container's init (`all`: to every process in it).
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), String> {
        let sig = signal.to_string();
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([id, sig.as_str()]);
        self.run(&args).map(drop)
    }

    /// `delete --force`: the runtime forgets the container (and removes its cgroup).
    pub fn delete(&self, id: &str) -> Result<(), String> {
        self.run(&["delete", "--force", id]).map(drop)
    }

    /// `state`: the runtime's view of the container.
    pub fn state(&self, id: &str) -> Result<oci_spec::runtime::State, String> {
        let out = self.run(&["state", id])?;
        serde_json::from_slice(&out).map_err(|e| format!("{} state {id}: {e}", self.runtime.name))
    }
}

/// What to do about a runtime error berth knows the cause of.
fn hint(errors: &str) -> &'static str {
    if errors.contains("hybrid mode not supported") {
        return " (crun refuses a host whose cgroup2 mount holds controllers while v1 \
                hierarchies are mounted: move them to v1, e.g. `mkdir -p /sys/fs/cgroup/hugetlb && \
                mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb`; see \
                docs/runtime-handlers.md)";
    }
    ""
}

/// The `error`-level messages of a runtime's JSON log (or its last line).
fn log_errors(log: &Path) -> String {
    let Ok(file) = File::open(log) else {
        return "no runtime log".into();
    };
    let text = std::io::read_to_string(file).unwrap_or_default();
    let errors: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "error")
        .filter_map(|v| v["msg"].as_str().map(String::from))
        .collect();
    match errors.is_empty() {
        true => text.lines().last().unwrap_or("no error logged").to_string(),
        false => errors.join("; "),
    }
}
