//! The `berth-shim` executable as berthd runs it: a sealed in-memory copy.
//!
//! The shim and `berth-shim exec` fork the processes that become containers and execs; until
//! their `execve`, those children sit in the container's PID namespace with the shim as
//! `/proc/<pid>/exe`. Run from the host's file, that link would hand a container process (with
//! CAP_SYS_PTRACE, or in the race CVE-2019-5736 used) a way to the host binary. berthd
//! therefore copies the binary once into a memfd, seals it against every change
//! (`F_SEAL_WRITE|GROW|SHRINK|SEAL`), keeps only a read-only fd on it, and execs every shim
//! and exec helper through `/proc/self/fd/N`: `/proc/<pid>/exe` is then that memfd, which
//! nobody can write.
//!
//! One copy per berthd, shared by every shim it starts (their text pages are the memfd's
//! pages, as they would be the file's page cache): it costs the binary's size once, not per
//! pod. Shims started by an earlier berthd keep that berthd's copy alive until they exit.
//! A read-only bind mount of the binary would cost nothing but leaves a mount on the host to
//! manage across restarts and upgrades; re-exec'ing only the exec helpers would leave the pod
//! shims (the parents of every container's setup child) on the host file.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// `MFD_EXEC` (Linux 6.3+): an executable memfd even where `vm.memfd_noexec` asks otherwise.
const MFD_EXEC: libc::c_uint = 0x0010;
/// The fd the copy is kept on is at least this, out of the way of the stdio and control fds
/// that spawned helpers are given (`dup2` onto 0-3).
const MIN_FD: libc::c_int = 64;

/// The shim executable berthd starts shims and exec helpers from.
#[derive(Clone, Debug)]
pub struct ShimBinary {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The installed binary (shown as the helpers' `argv[0]`).
    host_path: PathBuf,
    /// Read-only fd on the sealed copy.
    memfd: OwnedFd,
}

impl ShimBinary {
    /// A sealed in-memory copy of `host_path`.
    pub fn sealed(host_path: impl Into<PathBuf>) -> io::Result<ShimBinary> {
        let host_path = host_path.into();
        let memfd = seal_copy(&host_path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("sealed copy of {}: {e}", host_path.display()),
            )
        })?;
        Ok(ShimBinary {
            inner: Arc::new(Inner { host_path, memfd }),
        })
    }

    /// The installed binary.
    pub fn host_path(&self) -> &Path {
        &self.inner.host_path
    }

    /// What to exec: `/proc/self/fd/N` of the sealed copy (the child resolves it before its
    /// close-on-exec fds close).
    pub fn program(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.inner.memfd.as_raw_fd()))
    }

    /// A command running the shim, with the installed path as `argv[0]`.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(self.program());
        std::os::unix::process::CommandExt::arg0(&mut cmd, self.host_path());
        cmd
    }
}

/// Copies `path` into a new memfd, seals it and returns a read-only fd on it (a writable fd
/// left open would make every exec of it fail with ETXTBSY).
fn seal_copy(path: &Path) -> io::Result<OwnedFd> {
    let mut source = File::open(path)?;
    let mut copy = File::from(memfd_create()?);
    io::copy(&mut source, &mut copy)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on an fd we own with an integer argument.
    if unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let readonly = File::open(format!("/proc/self/fd/{}", copy.as_raw_fd()))?;
    // SAFETY: F_DUPFD_CLOEXEC on an fd we own; a non-negative result is a new fd we own.
    let raw = unsafe { libc::fcntl(readonly.as_raw_fd(), libc::F_DUPFD_CLOEXEC, MIN_FD) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: see above.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn memfd_create() -> io::Result<OwnedFd> {
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    let create = |flags: libc::c_uint| {
        // SAFETY: memfd_create with a static NUL-terminated name and integer flags.
        unsafe { libc::memfd_create(c"berth-shim".as_ptr(), flags) }
    };
    let mut raw = create(flags | MFD_EXEC);
    if raw < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // Kernels before 6.3: memfds are executable without the flag.
        raw = create(flags);
    }
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_copy_runs_and_cannot_be_changed() {
        let shim = ShimBinary::sealed("/bin/true").expect("sealed copy");
        let program = shim.program();
        assert!(program.starts_with("/proc/self/fd/"), "{program:?}");
        let status = shim.command().status().expect("run the copy");
        assert!(status.success());
        let fd = program
            .file_name()
            .and_then(|n| n.to_str()?.parse::<i32>().ok())
            .expect("fd number");
        assert!(fd >= MIN_FD);
        // SAFETY: F_GET_SEALS on an fd the ShimBinary owns.
        let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
        assert_eq!(
            seals & libc::F_SEAL_WRITE,
            libc::F_SEAL_WRITE,
            "seals {seals:#x}"
        );
        let writable = std::fs::OpenOptions::new().write(true).open(&program);
        match writable {
            Err(_) => {}
            Ok(mut f) => {
                use std::io::Write;
                assert!(f.write_all(b"x").is_err(), "the sealed copy took a write");
            }
        }
    }

    #[test]
    fn missing_binary_is_named() {
        let err = ShimBinary::sealed("/nonexistent/berth-shim").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/berth-shim"), "{err}");
    }
}
