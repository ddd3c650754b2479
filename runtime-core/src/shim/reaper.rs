//! `berth-pod-init`: PID 1 of a pod's shared PID namespace, a fork of the shim.
//!
//! Every container of the pod sees it as `/proc/1`, so a container with CAP_SYS_PTRACE can
//! reach whatever it holds: its root and cwd (`/proc/1/root`, `/proc/1/cwd`), its fds, its
//! memory. Before it starts waiting it gives all of that up: it moves into a mount namespace
//! of its own whose only mount is an empty read-only tmpfs (the host's tree detached), drops
//! every capability including the bounding set, sets no_new_privs, clears its dumpable flag
//! and closes every fd. It tells the shim over a pipe that it did, or why not: a pod whose
//! reaper could not be confined does not start.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::unistd::{chdir, pivot_root};

/// Joins the pod cgroup, confines itself, reports on `report` and reaps orphans forever.
/// `empty_dir` is a host directory the empty root is mounted on (only in the reaper's own
/// mount namespace).
pub(super) fn run(cgroup_procs: &[String], empty_dir: &Path, report: OwnedFd) -> ! {
    let outcome = confine(cgroup_procs, empty_dir);
    finish(outcome, report)
}

/// For a pod with its own user namespace, whose PID namespace must belong to that user
/// namespace (an OCI runtime joins the user namespace first and then could not join a PID
/// namespace owned by the host's: `setns` needs CAP_SYS_ADMIN over the namespace's owner).
/// Run in a forked child of the shim: joins the pod cgroup and moves into the empty root while
/// still the host's root, joins the pod's user namespace `userns`, unshares a PID namespace
/// there and forks its PID 1, which finishes confining itself, reports on `report` and reaps
/// as [`run`] does. The child writes the reaper's PID (in the shim's PID namespace) to `pid`
/// and exits, so the reaper is reparented to the shim (a subreaper).
pub(super) fn run_in_user_namespace(
    cgroup_procs: &[String],
    empty_dir: &Path,
    userns: OwnedFd,
    report: OwnedFd,
    pid: OwnedFd,
) -> ! {
    let prepared = (|| {
        let last_cap = confine_on_host(cgroup_procs, empty_dir)?;
        nix::sched::setns(userns, CloneFlags::CLONE_NEWUSER)
            .map_err(|e| format!("reaper: join the pod's user namespace: {e}"))?;
        unshare(CloneFlags::CLONE_NEWPID)
            .map_err(|e| format!("reaper: unshare pid namespace: {e}"))?;
        Ok::<u32, String>(last_cap)
    })();
    let last_cap = match prepared {
        Ok(last_cap) => last_cap,
        Err(e) => {
            let _ = nix::unistd::write(&report, e.as_bytes());
            // SAFETY: ends the forked child without running the shim's destructors.
            unsafe { libc::_exit(1) }
        }
    };
    // SAFETY: single-threaded (a fork of the single-threaded shim); the child only confines
    // itself and reaps.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            drop(pid);
            let outcome = confine_in_namespace(last_cap);
            finish(outcome, report)
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            let _ = nix::unistd::write(&pid, child.as_raw().to_string().as_bytes());
            // SAFETY: ends the forked child without running the shim's destructors.
            unsafe { libc::_exit(0) }
        }
        Err(e) => {
            let message = format!("reaper: fork in the pod's user namespace: {e}");
            let _ = nix::unistd::write(&report, message.as_bytes());
            // SAFETY: as above.
            unsafe { libc::_exit(1) }
        }
    }
}

/// Reports `outcome` on `report`; then reaps forever, or exits if it failed.
fn finish(outcome: Result<(), String>, report: OwnedFd) -> ! {
    let message = match &outcome {
        Ok(()) => String::new(),
        Err(e) => e.clone(),
    };
    let _ = nix::unistd::write(&report, message.as_bytes());
    drop(report);
    if outcome.is_err() {
        // SAFETY: ends the forked child without running the shim's destructors.
        unsafe { libc::_exit(1) }
    }
    close_all_fds();
    loop {
        if nix::sys::wait::wait().is_err() {
            // No children yet: check again shortly (orphans get reparented to us).
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// Reads the reaper's PID that [`run_in_user_namespace`]'s child writes; `None` if it exited
/// without one (its error is then on the report pipe).
pub(super) fn read_pid(rx: &OwnedFd) -> Option<nix::unistd::Pid> {
    let mut text = Vec::new();
    let mut buf = [0u8; 32];
    loop {
        match nix::unistd::read(rx, &mut buf) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return None,
        }
    }
    let pid: i32 = String::from_utf8_lossy(&text).trim().parse().ok()?;
    Some(nix::unistd::Pid::from_raw(pid))
}

fn confine(cgroup_procs: &[String], empty_dir: &Path) -> Result<(), String> {
    let last_cap = confine_on_host(cgroup_procs, empty_dir)?;
    confine_in_namespace(last_cap)
}

/// The steps that need the host's view: joins the pod cgroup and moves into the empty root.
/// Returns the last capability number (read from the host's /proc).
fn confine_on_host(cgroup_procs: &[String], empty_dir: &Path) -> Result<u32, String> {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    for procs in cgroup_procs {
        std::fs::write(procs, "0").map_err(|e| format!("reaper: join cgroup {procs}: {e}"))?;
    }
    // SAFETY: prctl with a static NUL-terminated name.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"berth-pod-init".as_ptr(), 0, 0, 0) };
    // Read while the host's /proc is still there.
    let last_cap = crate::executor::last_capability().map_err(|e| format!("reaper: {e}"))?;
    empty_root(empty_dir)?;
    Ok(last_cap)
}

/// Drops every capability, sets no_new_privs and clears the dumpable flag.
fn confine_in_namespace(last_cap: u32) -> Result<(), String> {
    crate::executor::drop_all_capabilities(last_cap).map_err(|e| format!("reaper: {e}"))?;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "reaper: set no_new_privs: {}",
            io::Error::last_os_error()
        ));
    }
    // Again: credential changes may have reset it.
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(format!(
            "reaper: clear dumpable: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// A private mount namespace whose root is an empty read-only tmpfs and nothing else: the
/// host's tree is detached, so neither `/proc/1/root` nor `..` from it leads anywhere.
fn empty_root(dir: &Path) -> Result<(), String> {
    let fail = |what: &str, e: nix::Error| format!("reaper: {what}: {e}");
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| fail("unshare mount namespace", e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| fail("make mounts private", e))?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("berth-pod-init"),
        dir,
        Some("tmpfs"),
        flags,
        Some("size=4k,mode=0555"),
    )
    .map_err(|e| fail(&format!("mount an empty tmpfs on {}", dir.display()), e))?;
    chdir(dir).map_err(|e| fail("enter the empty root", e))?;
    // The old root ends up stacked on "." and is detached right away.
    pivot_root(".", ".").map_err(|e| fail("pivot_root into the empty root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| fail("detach the host's root", e))?;
    chdir("/").map_err(|e| fail("chdir /", e))
}

/// Closes every fd, stdio included: the reaper never reads or writes anything.
fn close_all_fds() {
    // SAFETY: close_range on this process's own descriptors; nothing uses them afterwards.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) };
    if rc != 0 {
        for fd in 0..1024 {
            // SAFETY: closing a descriptor number; unused numbers yield EBADF.
            unsafe { libc::close(fd) };
        }
    }
}

/// Reads the reaper's report: empty means confined.
pub(super) fn read_report(rx: &OwnedFd) -> Result<(), String> {
    let mut message = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match nix::unistd::read(rx, &mut buf) {
            Ok(0) => break,
            Ok(n) => message.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("read the reaper's report: {e}")),
        }
    }
    if message.is_empty() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&message).into_owned())
    }
}
