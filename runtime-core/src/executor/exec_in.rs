//! `exec_in_container`: start a process inside a running container, as `runc exec` does.
//!
//! The target is pinned with a pidfd before anything else, and checked to be in the
//! container's cgroup, so a container that exited (and whose PID was recycled) is never
//! joined: every later `setns` through the pidfd fails with `ESRCH` once the target is gone.
//! The caller's `pid_for_children` is switched to the container's PID namespace around `fork`
//! (see `pidns`); the child joins the cgroup and the other namespaces (mount last but one:
//! it also moves the root and cwd into the container), then takes the container's rlimits,
//! seccomp, capabilities, user and no_new_privs exactly like the container process.

use std::convert::Infallible;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sched::{CloneFlags, setns};
use nix::sys::stat::{Mode, umask};
use nix::unistd::{ForkResult, Pid, pipe2, setsid};

use super::clone_into::{self, Forked};
use super::error::{Context, ExecError, Failure};
use super::plan::Plan;
use super::spawn::{await_exec, kill_and_reap};
use super::{ExecProcess, caps, child, exec, user};

/// Starts `spec` in its container and returns its PID (in the caller's PID namespace) once it
/// has `execve`d. The caller is its parent and must reap it. Nothing is left behind on error.
pub fn exec_in_container(spec: &ExecProcess) -> Result<Pid, ExecError> {
    let plan = Plan::for_exec(spec)?;
    let target = pidfd_open(spec.target_pid).map_err(Failure::host)?;
    check_cgroup(spec).map_err(Failure::host)?;
    let (report_rx, report_tx) = pipe2(OFlag::O_CLOEXEC)
        .context(|| format!("create error pipe for exec in {}", spec.id))
        .map_err(Failure::host)?;
    let saved = open(
        "/proc/thread-self/ns/pid_for_children",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context(|| "open own pid_for_children")
    .map_err(Failure::host)?;
    setns(target.as_fd(), CloneFlags::CLONE_NEWPID)
        .map_err(|e| gone_or(spec, e, "join the container's pid namespace for children"))?;
    // SAFETY: as in `spawn`: the child only makes system calls and fork-safe allocations and
    // never returns (it execs or `_exit`s).
    let forked = unsafe { clone_into::fork_into(&spec.cgroup_procs) };
    let restored = setns(saved, CloneFlags::CLONE_NEWPID);
    let pid = match forked {
        Ok(Forked {
            result: ForkResult::Child,
            born_in,
        }) => run(spec, &plan, &target, born_in, report_tx),
        Ok(Forked {
            result: ForkResult::Parent { child },
            ..
        }) => child,
        Err(errno) => return Err(Failure::new("fork exec process", errno).host()),
    };
    drop(report_tx);
    if let Err(errno) = restored {
        kill_and_reap(pid);
        return Err(Failure::new("restore own pid namespace for children", errno).host());
    }
    await_exec(pid, &report_rx)?;
    Ok(pid)
}

/// A pidfd for the container's process.
fn pidfd_open(pid: i32) -> Result<OwnedFd, Failure> {
    super::pidfd_open(pid).map_err(|errno| {
        if errno == Errno::ESRCH {
            Failure::plain(
                format!("container process {pid} is not running"),
                Some(errno),
            )
        } else {
            Failure::new(format_args!("pidfd_open {pid}"), errno)
        }
    })
}

/// Checks that the target process is in the container's cgroup: a recycled PID is not.
fn check_cgroup(spec: &ExecProcess) -> Result<(), Failure> {
    if spec.expected_cgroup.is_empty() {
        return Ok(());
    }
    let path = format!("/proc/{}/cgroup", spec.target_pid);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Failure::plain(
            format!("container process {} is not running: {e}", spec.target_pid),
            Some(Errno::ESRCH),
        )
    })?;
    let want = format!("/{}", spec.expected_cgroup.trim_start_matches('/'));
    if in_cgroup(&text, &want) {
        return Ok(());
    }
    Err(Failure::plain(
        format!(
            "process {} is not container {}'s (not in cgroup {want}): the container is not running",
            spec.target_pid, spec.id
        ),
        Some(Errno::ESRCH),
    ))
}

/// Whether a `/proc/<pid>/cgroup` listing puts the process in `path` in some hierarchy.
fn in_cgroup(listing: &str, path: &str) -> bool {
    listing
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .any(|p| p == path)
}

fn gone_or(spec: &ExecProcess, errno: Errno, op: &str) -> ExecError {
    if errno == Errno::ESRCH {
        Failure::plain(format!("container {} is not running", spec.id), Some(errno)).container()
    } else {
        Failure::new(op, errno).host()
    }
}

/// Runs in the forked child: becomes the exec'd process or reports why not and exits 127.
fn run(
    spec: &ExecProcess,
    plan: &Plan,
    target: &OwnedFd,
    born_in: Option<usize>,
    report: OwnedFd,
) -> ! {
    let report = child::above_stdio(report);
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        become_exec(spec, plan, target, born_in)
    }));
    let failure = match outcome {
        Ok(Err(failure)) => failure,
        Ok(Ok(never)) => match never {},
        Err(_) => Failure::plain(format!("exec in {} panicked", spec.id), None),
    };
    let _ = nix::unistd::write(&report, &failure.encode());
    // SAFETY: ends the forked child without running the parent's destructors.
    unsafe { libc::_exit(127) }
}

fn become_exec(
    spec: &ExecProcess,
    plan: &Plan,
    target: &OwnedFd,
    born_in: Option<usize>,
) -> Result<Infallible, Failure> {
    // First, while this process still sees only the host's mounts and namespaces.
    child::set_dumpable(false)?;
    child::apply_apparmor(plan)?;
    child::join_cgroups(&spec.cgroup_procs, born_in)?;
    child::reset_signals()?;
    umask(Mode::empty());
    child::attach_stdio(&spec.stdio)?;
    child::close_inherited_fds()?;
    setsid().context(|| "setsid")?;
    child::take_controlling_terminal()?;
    let namespaces = CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWCGROUP
        | CloneFlags::CLONE_NEWNS;
    setns(target.as_fd(), namespaces).context(|| {
        format!(
            "join the namespaces of container {} (process {})",
            spec.id, spec.target_pid
        )
    })?;
    // On its own and last: joining the user namespace drops every capability outside it,
    // which joining the mount namespace (owned by the host's) still needed.
    if spec.join_user_ns {
        setns(target.as_fd(), CloneFlags::CLONE_NEWUSER).context(|| {
            format!(
                "join the user namespace of container {} (process {})",
                spec.id, spec.target_pid
            )
        })?;
    }
    child::set_oom_score_adj(spec.oom_score_adj)?;
    child::set_rlimits(&plan.rlimits)?;
    if !spec.no_new_privs {
        child::install_seccomp(spec.seccomp.as_ref())?;
    }
    caps::drop_bounding(&plan.caps)?;
    user::switch(&spec.user)?;
    caps::apply(&plan.caps)?;
    // Dies with its parent (the exec session) even if that is SIGKILLed. Set after the user
    // switch, which clears it.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    child::enter_cwd(&spec.cwd)?;
    umask(Mode::from_bits_truncate(0o022));
    if spec.no_new_privs {
        child::set_no_new_privs()?;
        child::install_seccomp(spec.seccomp.as_ref())?;
    }
    exec::exec(plan)
}

#[cfg(test)]
mod tests {
    use super::in_cgroup;

    #[test]
    fn cgroup_membership_matches_whole_paths() {
        let v1 = "12:memory:/pod/ctr\n11:cpu,cpuacct:/pod/ctr\n0::/\n";
        assert!(in_cgroup(v1, "/pod/ctr"));
        assert!(!in_cgroup(v1, "/pod/ct"));
        assert!(in_cgroup("0::/a/b\n", "/a/b"));
        assert!(!in_cgroup("0::/a/b/c\n", "/a/b"));
    }
}
