//! Network namespaces for tests, pinned under the test's own temp dir.
//!
//! `ip netns add` is not used: it bind-mounts the host's `/run/netns` over itself (a shared
//! mount), which hides the namespaces other runtimes pinned there (containerd's pods then
//! failed to stop with EBUSY). Here a thread unshares a network namespace and bind-mounts its
//! `/proc/thread-self/ns/net` onto a file in a fresh temp dir; dropping the value unmounts it.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

/// A new, empty network namespace (loopback down, as `ip netns add` makes it).
pub struct TestNetns {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestNetns {
    pub fn new() -> io::Result<TestNetns> {
        let dir = tempfile::Builder::new().prefix("berth-netns-").tempdir()?;
        let path = dir.path().join("net");
        File::create(&path)?;
        let target = path.clone();
        std::thread::spawn(move || -> io::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET)?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
            Ok(())
        })
        .join()
        .map_err(|_| io::Error::other("netns thread panicked"))??;
        Ok(TestNetns { path, _dir: dir })
    }

    /// The pinned namespace file (what a CNI plugin or `setns` takes).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `ip args…` run inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Output {
        ip_in_path(&self.path, args)
    }
}

/// `ip args…` run inside the namespace pinned at `path`.
pub fn ip_in_path(path: &Path, args: &[&str]) -> Output {
    Command::new("nsenter")
        .arg(format!("--net={}", path.display()))
        .arg("ip")
        .args(args)
        .output()
        .expect("run nsenter ip")
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        if let Err(e) = umount2(&self.path, MntFlags::MNT_DETACH) {
            eprintln!("unmount test netns {}: {e}", self.path.display());
        }
    }
}
