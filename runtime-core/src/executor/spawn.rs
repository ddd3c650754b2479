//! `spawn`: the shim's side of starting a container process.

use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, pipe2};

use super::clone_into::{self, Forked};
use super::error::{Context, ExecError, Failure};
use super::idmap::Idmaps;
use super::pidns::{self, ChildPidNamespace};
use super::plan::Plan;
use super::{ContainerProcess, child, overlay};
use crate::steps::{ChildMarks, StepClock};

/// Upper bound on an error report read from the child.
const MAX_REPORT: usize = 4096;

/// Starts the container process described by `spec` and returns its PID (in the caller's PID
/// namespace) once it has `execve`d. The caller is its parent and must reap it.
///
/// The rootfs overlay stays mounted at its target afterwards, also on error; remove it with
/// [`cleanup_rootfs`](super::cleanup_rootfs). Nothing else is left behind on error: the failed
/// child is reaped and no other mount, fd or namespace change remains in the caller. The
/// caller's copies of `spec.stdio` are untouched; it closes them.
pub fn spawn(spec: &ContainerProcess) -> Result<Pid, ExecError> {
    spawn_timed(spec, &mut StepClock::start())
}

/// [`spawn`], marking each step on `clock`: the shim's own (plan, idmaps, overlay, fork) and
/// the child's ([`ChildStep`](crate::steps::ChildStep)s, then its `execve`).
pub fn spawn_timed(spec: &ContainerProcess, clock: &mut StepClock) -> Result<Pid, ExecError> {
    let plan = Plan::new(spec)?;
    clock.mark("plan");
    let mut idmaps = Idmaps::prepare(spec).map_err(Failure::host)?;
    clock.mark("idmaps");
    overlay::mount(&spec.rootfs, idmaps.container()).map_err(Failure::host)?;
    idmaps.prepare_images(spec).map_err(Failure::host)?;
    clock.mark("overlay");
    let (report_rx, report_tx) = pipe2(OFlag::O_CLOEXEC)
        .context(|| format!("create error pipe for container {}", spec.id))
        .map_err(Failure::host)?;
    let marks = ChildMarks::shared();
    let pid = fork_container(spec, &plan, &idmaps, &marks, report_tx)?;
    clock.mark("fork");
    await_exec(pid, &report_rx)?;
    marks.collect(clock);
    tracing::debug!(container_id = %spec.id, pid = pid.as_raw(), "container process started");
    Ok(pid)
}

/// Waits until the forked child `pid` has exec'd (EOF on its error pipe) or reported why it
/// could not; a failed child is reaped.
pub(super) fn await_exec(pid: Pid, report_rx: &OwnedFd) -> Result<(), ExecError> {
    match read_report(report_rx) {
        Ok(report) if report.is_empty() => Ok(()),
        Ok(report) => {
            reap(pid);
            Err(Failure::decode(&report).container())
        }
        Err(failure) => {
            kill_and_reap(pid);
            Err(failure.host())
        }
    }
}

/// Forks the container process into the PID namespace `spec` asks for; the shim's own
/// `pid_for_children` is restored before this returns.
fn fork_container(
    spec: &ContainerProcess,
    plan: &Plan,
    idmaps: &Idmaps,
    marks: &ChildMarks,
    report_tx: OwnedFd,
) -> Result<Pid, ExecError> {
    let pid_ns = ChildPidNamespace::enter(&spec.pid_ns).map_err(Failure::host)?;
    // SAFETY: the shim is single-threaded, so the child starts with consistent state; even when
    // the caller is multi-threaded (tests), the child only uses glibc's fork-safe allocator and
    // system calls, touches no lock another thread could hold, and never returns: it execs or
    // `_exit`s.
    let pid = match unsafe { clone_into::fork_into(&spec.cgroup_procs) } {
        Ok(Forked {
            result: ForkResult::Child,
            born_in,
        }) => child::run(spec, plan, idmaps, marks, born_in, report_tx),
        Ok(Forked {
            result: ForkResult::Parent { child },
            ..
        }) => child,
        Err(errno) => {
            let op = format!(
                "fork container {} into {}",
                spec.id,
                pidns::describe(&spec.pid_ns)
            );
            return Err(Failure::new(op, errno).host());
        }
    };
    // The child holds the only write end now: its exec or exit gives us EOF.
    drop(report_tx);
    if let Err(failure) = pid_ns.restore() {
        kill_and_reap(pid);
        return Err(failure.host());
    }
    Ok(pid)
}

/// Reads the child's error report until EOF (empty = it exec'd).
fn read_report(report_rx: &OwnedFd) -> Result<Vec<u8>, Failure> {
    let mut report = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match nix::unistd::read(report_rx, &mut buf) {
            Ok(0) => return Ok(report),
            Ok(n) if report.len() < MAX_REPORT => report.extend_from_slice(&buf[..n]),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => return Err(Failure::new("read the container's error pipe", errno)),
        }
    }
}

/// Waits for a child that has reported failure and is exiting.
fn reap(pid: Pid) {
    loop {
        match waitpid(pid, None) {
            Err(Errno::EINTR) => continue,
            Err(errno) => {
                tracing::warn!(pid = pid.as_raw(), %errno, "reap failed container process");
                return;
            }
            Ok(_) => return,
        }
    }
}

pub(super) fn kill_and_reap(pid: Pid) {
    let _ = kill(pid, Signal::SIGKILL);
    reap(pid);
}
