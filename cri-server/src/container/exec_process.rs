//! Running one CRI exec: `berth-shim exec` started by berthd with the process's stdio and a
//! control socket on fd 3, shared by `ExecSync` and the streaming `Exec`.
//!
//! The exec helper stays the exec'd process's parent and reports `Started`, `Failed` or
//! `Exited` on the control socket. Dropping a [`RunningExec`] closes the socket, and the
//! helper then kills the process: an exec never outlives the call or session that made it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;

use crate::error::Error;
use nix::errno::Errno;
use proto::shim::{ExecFailure, ExecReport, ExecSpec, ExitStatus, exec_report};
use tokio::net::UnixStream;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

use crate::container::start;
use crate::lifecycle::record;
use crate::state::DaemonState;
use crate::store::containers::{ContainerPhase, ContainerRecord};
use crate::store::pods::PodRecord;
use runtime_core::shim::ShimBinary;
use runtime_core::shim::client::{read_frame_async, write_frame_async};

/// Largest report frame the helper sends.
const MAX_REPORT: u32 = 64 * 1024;

/// The stdio an exec gets.
pub enum ExecIo {
    /// Pipes; stdin is /dev/null unless asked for.
    Pipes { stdin: bool },
    /// Every stream on this terminal (the secondary side; berthd keeps the primary).
    Tty(OwnedFd),
}

/// An exec'd process that runs.
pub struct RunningExec {
    helper: Child,
    control: UnixStream,
    /// Host PID of the exec'd process.
    pub pid: u32,
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
}

/// Why an exec did not start.
#[derive(Debug)]
pub enum StartError {
    /// The container is not (or no longer) running.
    NotRunning(String),
    /// The command itself failed before it ran (not found, not executable, bad cwd…):
    /// what a shell reports with 127 or 126.
    Command { message: String, errno: i32 },
    /// berth failed.
    Runtime(String),
}

impl StartError {
    /// The error of a streaming Exec or an ExecSync that could not start.
    pub fn error(&self) -> Error {
        match self {
            StartError::NotRunning(m) => Error::failed_precondition(m.clone()),
            StartError::Command { message, .. } => Error::unknown(message.clone()),
            StartError::Runtime(m) => Error::internal(m.clone()),
        }
    }

    /// The exit code a shell would give a command that could not start.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Command { errno, .. } if *errno == Errno::ENOENT as i32 => 127,
            _ => 126,
        }
    }
}

/// The running container `id` and its pod, or NotFound / FailedPrecondition, after asking
/// the pod's shim (for the URL-minting RPCs, which cannot check again later).
pub async fn running_container(
    state: &DaemonState,
    id: &str,
) -> Result<(ContainerRecord, PodRecord), Error> {
    let rec = record::find(state, required(id)?)?;
    let rec = crate::lifecycle::refresh::refresh(state, rec).await;
    running(state, rec)
}

/// [`running_container`] as the record says, without a shim round trip: for ExecSync (the
/// exec probes' hot path) and streaming sessions, whose exec helper or shim check the
/// container's process themselves and answer "not running" if it just exited.
pub fn recorded_running_container(
    state: &DaemonState,
    id: &str,
) -> Result<(ContainerRecord, PodRecord), Error> {
    running(state, record::find(state, required(id)?)?)
}

fn required(id: &str) -> Result<&str, Error> {
    if id.is_empty() {
        return Err(Error::invalid("container_id is required"));
    }
    Ok(id)
}

fn running(
    state: &DaemonState,
    rec: ContainerRecord,
) -> Result<(ContainerRecord, PodRecord), Error> {
    if rec.phase != ContainerPhase::Running {
        return Err(Error::failed_precondition(format!(
            "container {} is not running ({:?})",
            rec.id, rec.phase
        )));
    }
    let pod = crate::lifecycle::record::find_pod(state, &rec.pod_id)?;
    Ok((rec, pod))
}

/// The helper's spec: the container's own start spec with the exec's command and terminal.
pub fn exec_spec(
    state: &DaemonState,
    rec: &ContainerRecord,
    pod: &PodRecord,
    cmd: &[String],
    tty: bool,
) -> Result<ExecSpec, Error> {
    let procs = state.pod_runtime.container_cgroup_procs(&rec.cgroup);
    let mut container = start::start_message(rec, pod, procs)?;
    container.args = cmd.to_vec();
    container.tty = tty;
    container.mounts.clear();
    Ok(ExecSpec {
        container: Some(container),
        target_pid: rec.pid,
        cgroup: rec.cgroup.clone(),
    })
}

/// Starts the exec helper and waits until the process runs or fails to start.
pub async fn start(
    shim: &ShimBinary,
    spec: ExecSpec,
    io: ExecIo,
) -> Result<RunningExec, StartError> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| StartError::Runtime(format!("exec control socket: {e}")))?;
    let mut cmd = Command::new(shim.program());
    cmd.arg0(shim.host_path());
    cmd.arg(runtime_core::shim::exec::EXEC_ARG);
    match &io {
        ExecIo::Pipes { stdin } => {
            cmd.stdin(if *stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        }
        ExecIo::Tty(pty) => {
            let dup = |fd: &OwnedFd| {
                fd.try_clone()
                    .map(Stdio::from)
                    .map_err(|e| StartError::Runtime(format!("dup terminal: {e}")))
            };
            cmd.stdin(dup(pty)?).stdout(dup(pty)?).stderr(dup(pty)?);
        }
    }
    let control_fd = theirs.as_raw_fd();
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let target = runtime_core::shim::exec::EXEC_FD;
            if control_fd == target {
                if libc::fcntl(target, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(control_fd, target) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut helper = cmd
        .spawn()
        .map_err(|e| StartError::Runtime(format!("start {}: {e}", shim.host_path().display())))?;
    drop(theirs);
    drop(io);
    ours.set_nonblocking(true)
        .map_err(|e| StartError::Runtime(format!("exec control socket: {e}")))?;
    let mut control = UnixStream::from_std(ours)
        .map_err(|e| StartError::Runtime(format!("exec control socket: {e}")))?;
    write_frame_async(&mut control, &spec)
        .await
        .map_err(|e| StartError::Runtime(format!("send exec spec: {e}")))?;
    match read_report(&mut control).await {
        Some(exec_report::Kind::Started(pid)) => Ok(RunningExec {
            stdin: helper.stdin.take(),
            stdout: helper.stdout.take(),
            stderr: helper.stderr.take(),
            helper,
            control,
            pid,
        }),
        Some(exec_report::Kind::Failed(f)) => Err(classify(f)),
        Some(exec_report::Kind::Exited(_)) | None => {
            let status = helper.wait().await;
            Err(StartError::Runtime(format!(
                "exec helper ended without starting the process ({status:?})"
            )))
        }
    }
}

fn classify(f: ExecFailure) -> StartError {
    if f.errno == Errno::ESRCH as i32 {
        StartError::NotRunning(f.message)
    } else if f.in_container {
        StartError::Command {
            message: f.message,
            errno: f.errno,
        }
    } else {
        StartError::Runtime(f.message)
    }
}

impl RunningExec {
    /// Waits for the process to end; a lost helper counts as killed.
    pub async fn wait(&mut self) -> ExitStatus {
        let status = match read_report(&mut self.control).await {
            Some(exec_report::Kind::Exited(status)) => status,
            _ => ExitStatus {
                code: 137,
                signal: libc::SIGKILL,
            },
        };
        let _ = self.helper.wait().await;
        status
    }

    /// Kills the process now (the helper reports its exit).
    pub fn kill(&self) {
        // The helper is its parent and has not reaped it while it runs: the PID is still
        // the process's own.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

async fn read_report(control: &mut UnixStream) -> Option<exec_report::Kind> {
    let report: ExecReport = read_frame_async(control, MAX_REPORT).await.ok()?;
    report.kind
}
