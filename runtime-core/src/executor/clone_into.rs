//! Forking a process straight into its cgroup v2 cgroup: `clone3` with `CLONE_INTO_CGROUP`
//! (Linux 5.7).
//!
//! A process moved into a cgroup after `fork` (a write to `cgroup.procs`) takes the kernel's
//! `cgroup_threadgroup_rwsem` for writing, which first waits for an RCU grace period: several
//! milliseconds, the largest single step of StartContainer on this machine kind (12 ms of a
//! 57 ms start under load; docs/performance.md). A process born in the cgroup takes it only for
//! reading. runc and crun fork this way for the same reason. cgroup v1 hierarchies have no such
//! fork, so on v1 (and for hybrid's v1 hierarchies) the child still joins by writing.
//!
//! Written by hand: neither nix nor glibc wraps `clone3` (libc only has the syscall number).
//! The child is a plain fork otherwise (no `CLONE_VM`, `SIGCHLD` on exit), but glibc's fork
//! bookkeeping does not run in it: its `atfork` handlers (the shim registers none and is
//! single-threaded) and its cached thread ID (used only to signal its own threads, which a
//! child that execs or `_exit`s never does; a failed `tgkill` to it cannot reach the parent).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, statfs};
use nix::unistd::{ForkResult, Pid, fork};

/// `CLONE_INTO_CGROUP` (include/uapi/linux/sched.h; not in libc for every target yet).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` as of Linux 5.7 (`CLONE_ARGS_SIZE_VER2`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// A fork's outcome: which side this is, and the index in the `cgroup.procs` list of the cgroup
/// the child was born in (the child need not join that one).
pub(super) struct Forked {
    pub result: ForkResult,
    pub born_in: Option<usize>,
}

/// The first of `cgroup_procs` that is a cgroup v2 `cgroup.procs`, with its directory open.
/// Only that directory is opened (on v1 each hierarchy costs one `statfs`).
fn v2_cgroup(cgroup_procs: &[PathBuf]) -> Option<(usize, OwnedFd)> {
    let (i, dir) = cgroup_procs.iter().enumerate().find_map(|(i, procs)| {
        let dir = procs.parent().unwrap_or(Path::new("/"));
        let v2 = statfs(dir).ok()?.filesystem_type() == CGROUP2_SUPER_MAGIC;
        v2.then_some((i, dir))
    })?;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    // (Were it swapped for another directory meanwhile, clone3 refuses a non-cgroup fd and
    // `fork_into` falls back to fork.)
    Some((i, open(dir, flags, Mode::empty()).ok()?))
}

/// Forks; when one of `cgroup_procs` is in a cgroup v2 hierarchy the child is born in that
/// cgroup. Where `clone3` or the flag is refused (an older kernel, a seccomp filter, a cgroup
/// that cannot take processes), falls back to a plain `fork`, after which the child joins
/// every cgroup by writing, failing with the kernel's reason if it cannot.
///
/// # Safety
/// As for [`nix::unistd::fork`]: in a multi-threaded caller the child may only do what is
/// async-signal-safe until it execs or exits.
pub(super) unsafe fn fork_into(cgroup_procs: &[PathBuf]) -> Result<Forked, Errno> {
    if let Some((index, dir)) = v2_cgroup(cgroup_procs) {
        let args = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: dir.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: `args` is a valid clone_args of the size passed; without CLONE_VM the child
        // gets a copy of this address space, as with fork (the caller's contract covers it).
        let ret = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        match ret {
            0 => {
                return Ok(Forked {
                    result: ForkResult::Child,
                    born_in: Some(index),
                });
            }
            pid if pid > 0 => {
                return Ok(Forked {
                    result: ForkResult::Parent {
                        child: Pid::from_raw(pid as i32),
                    },
                    born_in: Some(index),
                });
            }
            _ => {
                let errno = Errno::last();
                tracing::debug!(%errno, "clone3 into the cgroup refused; forking");
            }
        }
    }
    // SAFETY: the caller's contract.
    let result = unsafe { fork() }?;
    Ok(Forked {
        result,
        born_in: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cgroup_v2_directories_are_cloned_into() {
        // /proc is not a cgroup filesystem; a missing path cannot be opened.
        let procs = [
            PathBuf::from("/proc/cgroup.procs"),
            PathBuf::from("/nonexistent/cgroup.procs"),
        ];
        assert!(v2_cgroup(&procs).is_none());
    }

    /// The cgroup v2 mount: /sys/fs/cgroup on a pure v2 host, /sys/fs/cgroup/unified on a
    /// hybrid one.
    fn v2_mount() -> Option<PathBuf> {
        ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| statfs(p).is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC))
    }

    #[test]
    fn the_child_is_born_in_the_v2_cgroup_and_joins_nothing_else() {
        let Some(mount) = v2_mount() else {
            eprintln!("skipped: no cgroup v2 hierarchy is mounted");
            return;
        };
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to make a cgroup");
            return;
        }
        let name = format!("berth-clone-into-test-{}", std::process::id());
        let dir = mount.join(&name);
        std::fs::create_dir(&dir).expect("mkdir test cgroup");
        let procs = [
            PathBuf::from("/nonexistent/cgroup.procs"),
            dir.join("cgroup.procs"),
        ];
        let expected = format!("0::/{name}");
        let own_cgroup = c"/proc/self/cgroup";
        // SAFETY: the child only reads a file into a stack buffer, compares and _exits.
        let forked = unsafe { fork_into(&procs) }.expect("fork");
        match forked.result {
            ForkResult::Child => {
                // clone3 runs no atfork handlers, so a lock another test thread held (malloc's,
                // say) stays held in the child: it must not allocate. Raw open/read, no heap.
                let mut buf = [0u8; 4096];
                // SAFETY: a NUL-terminated path and a buffer of the length given.
                let n = unsafe {
                    let fd = libc::open(own_cgroup.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        -1
                    } else {
                        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                        libc::close(fd);
                        n
                    }
                };
                let born_there = n > 0
                    && buf[..n as usize]
                        .split(|&b| b == b'\n')
                        .any(|l| l == expected.as_bytes());
                let code = if born_there && forked.born_in == Some(1) {
                    0
                } else {
                    1
                };
                // SAFETY: ends the child without the test harness's destructors.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).expect("wait");
                let _ = std::fs::remove_dir(&dir);
                assert_eq!(forked.born_in, Some(1));
                assert_eq!(
                    status,
                    nix::sys::wait::WaitStatus::Exited(child, 0),
                    "the child was born in {} (0::/{name} in its /proc/self/cgroup)",
                    dir.display()
                );
            }
        }
    }
}
