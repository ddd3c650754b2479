//! The container process between `fork` and `execve`: every step that changes the process
//! itself, in order, reporting the first failure to the shim.

use std::convert::Infallible;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;

use nix::fcntl::{FcntlArg, OFlag, fcntl, open};
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::SigSet;
use nix::sys::stat::{Mode, umask};
use nix::unistd::{chdir, dup2_stderr, dup2_stdin, dup2_stdout, setsid};

use super::error::{Context, Failure};
use super::idmap::Idmaps;
use super::plan::{Plan, ResourceLimit};
use super::{ContainerProcess, Stdio, caps, exec, rootfs, user};
use crate::steps::{ChildMarks, ChildStep};

/// Runs in the forked child: becomes the container and execs, or reports why not on `report`
/// and exits 127.
pub(super) fn run(
    spec: &ContainerProcess,
    plan: &Plan,
    idmaps: &Idmaps,
    marks: &ChildMarks,
    born_in: Option<usize>,
    report: OwnedFd,
) -> ! {
    let report = above_stdio(report);
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        become_container(spec, plan, idmaps, marks, born_in)
    }));
    let failure = match outcome {
        Ok(Err(failure)) => failure,
        Ok(Ok(never)) => match never {},
        Err(_) => Failure::plain(format!("container {} setup panicked", spec.id), None),
    };
    // Nothing more can be done if the shim stopped listening.
    let _ = nix::unistd::write(&report, &failure.encode());
    // SAFETY: ends the forked child immediately, without running the shim's destructors or
    // atexit handlers (which belong to the parent's state).
    unsafe { libc::_exit(127) }
}

fn become_container(
    spec: &ContainerProcess,
    plan: &Plan,
    idmaps: &Idmaps,
    marks: &ChildMarks,
    born_in: Option<usize>,
) -> Result<Infallible, Failure> {
    // First, while this process still sees only the host's mounts and namespaces.
    set_dumpable(false)?;
    apply_apparmor(plan)?;
    join_cgroups(&spec.cgroup_procs, born_in)?;
    reset_signals()?;
    // Modes of created directories and device nodes are exact; the container gets 022.
    umask(Mode::empty());
    attach_stdio(&spec.stdio)?;
    close_inherited_fds()?;
    setsid().context(|| "setsid")?;
    take_controlling_terminal()?;
    marks.mark(ChildStep::Prepare);
    join_namespaces(spec)?;
    set_oom_score_adj(spec.oom_score_adj)?;
    set_rlimits(&plan.rlimits)?;
    marks.mark(ChildStep::Namespaces);
    rootfs::enter(spec, plan, idmaps, marks)?;
    // Last: the mounts above needed the shim's privileges, and every namespace the container
    // joined is owned by (or an ancestor-owned peer of) this user namespace.
    join_user_namespace(idmaps)?;
    // Without no_new_privs a filter needs CAP_SYS_ADMIN: install it while the child still
    // has it (everything done after it is allowed by the default profile).
    if !spec.no_new_privs {
        install_seccomp(spec.seccomp.as_ref())?;
    }
    caps::drop_bounding(&plan.caps)?;
    user::switch(&spec.user)?;
    caps::apply(&plan.caps)?;
    enter_cwd(&spec.cwd)?;
    umask(Mode::from_bits_truncate(0o022));
    if spec.no_new_privs {
        set_no_new_privs()?;
        install_seccomp(spec.seccomp.as_ref())?;
    }
    marks.mark(ChildStep::Credentials);
    exec::exec(plan)
}

/// Clears (or sets) the dumpable flag. Cleared first in every setup child, so that no
/// process of the container can ptrace it or open its `/proc/<pid>` files (fds, memory, exe)
/// before it has exec'd (CVE-2016-9962 class); `execve` sets it again for the container's
/// program as usual.
pub(super) fn set_dumpable(on: bool) -> Result<(), Failure> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, libc::c_ulong::from(on), 0, 0, 0) } != 0 {
        return Err(Failure::last_os(|| "set dumpable"));
    }
    Ok(())
}

/// Sets the AppArmor profile for `execve` through the host procfs handle taken before the
/// fork (see [`crate::apparmor`]).
pub(super) fn apply_apparmor(plan: &Plan) -> Result<(), Failure> {
    match &plan.apparmor {
        Some(label) => label
            .apply()
            .map_err(|e| Failure::plain(format!("apparmor: {e}"), None)),
        None => Ok(()),
    }
}

/// Enters the working directory and checks that it is inside the process's root: a path
/// through `/proc/<pid>/root` or `/proc/<pid>/cwd` of a process in another mount namespace
/// would otherwise start the process outside the container (CVE-2024-21626 class).
pub(super) fn enter_cwd(cwd: &str) -> Result<(), Failure> {
    chdir(cwd).context(|| format!("chdir `{cwd}`"))?;
    match nix::unistd::getcwd() {
        Ok(path) if path.is_absolute() => Ok(()),
        _ => Err(Failure::plain(
            format!("working directory `{cwd}` is outside the container's root"),
            None,
        )),
    }
}

pub(super) fn install_seccomp(
    filter: Option<&crate::seccomp::SeccompFilter>,
) -> Result<(), Failure> {
    match filter {
        Some(filter) => crate::seccomp::install(filter)
            .map_err(|e| Failure::plain(format!("seccomp: {e}"), None)),
        None => Ok(()),
    }
}

/// Moves the error pipe off fds 0-2, which stdio is about to take.
pub(super) fn above_stdio(fd: OwnedFd) -> OwnedFd {
    if fd.as_raw_fd() > 2 {
        return fd;
    }
    match fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(3)) {
        // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
        Ok(raw) => unsafe { OwnedFd::from_raw_fd(raw) },
        Err(_) => fd,
    }
}

/// Joins each cgroup of `cgroup_procs` but the one this process was born in (`born_in`).
///
/// In a cgroup v1 hierarchy this (single-threaded) process moves its own thread through the
/// cgroup's `tasks` file: the kernel moves the calling thread without its global threadgroup
/// lock, whereas any write to `cgroup.procs` takes that lock for writing, waiting for an RCU
/// grace period first (15 ms of a 21 ms StartContainer here; docs/performance.md). For a
/// process of one thread the two are the same move; threads it makes later follow it. cgroup
/// v2 has no `tasks` file (and `cgroup.threads` cannot cross domains): there the process is
/// born in its cgroup instead (`clone_into`), or writes `cgroup.procs`.
pub(super) fn join_cgroups(
    cgroup_procs: &[PathBuf],
    born_in: Option<usize>,
) -> Result<(), Failure> {
    for (i, procs) in cgroup_procs.iter().enumerate() {
        if Some(i) == born_in {
            continue;
        }
        let tasks = procs.with_file_name("tasks");
        match fs::write(&tasks, "0") {
            Ok(()) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).context(|| format!("join cgroup {}", tasks.display()));
            }
        }
        fs::write(procs, "0").context(|| format!("join cgroup {}", procs.display()))?;
    }
    Ok(())
}

/// Default dispositions and an empty mask: the shim blocks signals it reads from a signalfd,
/// and ignored signals and the mask would otherwise survive `execve`.
pub(super) fn reset_signals() -> Result<(), Failure> {
    // An all-zero kernel `sigaction` is SIG_DFL with no flags, whatever the architecture's
    // field order; 64 bytes cover every layout.
    let default_action = [0u64; 8];
    for signo in 1..=libc::SIGRTMAX() {
        if signo == libc::SIGKILL || signo == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction with a valid, zeroed new action, no old-action pointer and the
        // kernel's sigset size. The raw syscall also resets the signals glibc reserves (32,
        // 33), which its `sigaction` refuses to touch.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signo,
                default_action.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            )
        };
        if rc != 0 {
            return Err(Failure::last_os(|| format!("reset signal {signo}")));
        }
    }
    SigSet::empty()
        .thread_set_mask()
        .context(|| "unblock signals")
}

pub(super) fn attach_stdio(stdio: &Stdio) -> Result<(), Failure> {
    // Copies above 2 first, so that no target fd clobbers a source.
    let stdin = match &stdio.stdin {
        Some(fd) => dup_above_stdio(fd, "stdin")?,
        None => open(
            "/dev/null",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .context(|| "open /dev/null for stdin")?,
    };
    let stdout = dup_above_stdio(&stdio.stdout, "stdout")?;
    let stderr = dup_above_stdio(&stdio.stderr, "stderr")?;
    dup2_stdin(&stdin).context(|| "attach stdin")?;
    dup2_stdout(&stdout).context(|| "attach stdout")?;
    dup2_stderr(&stderr).context(|| "attach stderr")
}

fn dup_above_stdio(fd: &OwnedFd, what: &str) -> Result<OwnedFd, Failure> {
    let raw = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(3)).context(|| format!("duplicate {what}"))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Marks every fd above 2 close-on-exec: the container inherits only its stdio. Done before
/// any namespace or mount change, while `/proc` is still the shim's (for the fallback).
pub(super) fn close_inherited_fds() -> Result<(), Failure> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on this process's fds.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // Kernels before 5.11: one fd at a time.
    let entries = fs::read_dir("/proc/self/fd").context(|| "list /proc/self/fd")?;
    for raw in entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
    {
        if raw > 2 {
            // SAFETY: sets a flag on a descriptor number; a stale number (the listing's own
            // fd, already closed) just yields EBADF.
            unsafe { libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    Ok(())
}

/// A terminal on stdin (a CRI `tty` container) becomes the new session's controlling
/// terminal, so job control and ^C work.
pub(super) fn take_controlling_terminal() -> Result<(), Failure> {
    // SAFETY: isatty on fd 0, which attach_stdio just set up.
    if unsafe { libc::isatty(0) } != 1 {
        return Ok(());
    }
    // SAFETY: TIOCSCTTY on fd 0 with an integer argument.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
        return Err(Failure::last_os(|| "make stdin the controlling terminal"));
    }
    Ok(())
}

fn join_namespaces(spec: &ContainerProcess) -> Result<(), Failure> {
    let wanted = [
        (&spec.net_ns, CloneFlags::CLONE_NEWNET, "network"),
        (&spec.ipc_ns, CloneFlags::CLONE_NEWIPC, "ipc"),
        (&spec.uts_ns, CloneFlags::CLONE_NEWUTS, "uts"),
    ];
    for (path, flag, kind) in wanted {
        let Some(path) = path else { continue };
        let fd = open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
            .context(|| format!("open {kind} namespace {}", path.display()))?;
        setns(fd, flag).context(|| format!("join {kind} namespace {}", path.display()))?;
    }
    Ok(())
}

/// Enters the container's user namespace (with every capability in it, which the steps after
/// this narrow down to the container's set).
fn join_user_namespace(idmaps: &Idmaps) -> Result<(), Failure> {
    let Some((_, ns)) = idmaps.container() else {
        return Ok(());
    };
    setns(ns, CloneFlags::CLONE_NEWUSER).context(|| "join the pod's user namespace")
}

pub(super) fn set_oom_score_adj(value: Option<i32>) -> Result<(), Failure> {
    let Some(value) = value else { return Ok(()) };
    fs::write("/proc/self/oom_score_adj", value.to_string())
        .context(|| format!("set oom_score_adj {value}"))
}

#[repr(C)]
struct Rlimit64 {
    cur: u64,
    max: u64,
}

pub(super) fn set_rlimits(limits: &[ResourceLimit]) -> Result<(), Failure> {
    for limit in limits {
        let new = Rlimit64 {
            cur: limit.soft,
            max: limit.hard,
        };
        // SAFETY: prlimit64 on this process with a valid struct and no old-value pointer.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_prlimit64,
                0,
                limit.resource,
                &new,
                std::ptr::null_mut::<Rlimit64>(),
            )
        };
        if rc != 0 {
            return Err(Failure::last_os(|| {
                format!("set {} to {}/{}", limit.name, limit.soft, limit.hard)
            }));
        }
    }
    Ok(())
}

pub(super) fn set_no_new_privs() -> Result<(), Failure> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(Failure::last_os(|| "set no_new_privs"));
    }
    Ok(())
}
