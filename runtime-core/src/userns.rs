//! User namespaces: ID mappings, and making a user namespace with given mappings.
//!
//! A pod with its own user namespace (kubelet's `hostUsers: false`) gets one from its shim; idmapped
//! mounts need a user namespace fd carrying the mount's mappings. Both are made the same way: a
//! helper child unshares `CLONE_NEWUSER`, the caller (root in the initial namespace) writes the
//! child's `uid_map` and `gid_map`, keeps `/proc/<child>/ns/user` open, and lets the child exit.
//! The caller must see its children under their own PIDs in `/proc` (the shim does; a process in
//! a nested PID namespace with the host's `/proc` does not).

use std::fs::{self, File};
use std::io;
use std::os::fd::OwnedFd;

use nix::fcntl::OFlag;
use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork, pipe2};

/// The kernel's limit on lines in one `uid_map` or `gid_map`.
pub const MAX_RANGES: usize = 340;

/// One mapped range: `length` IDs from `container_id` inside map to `host_id` outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdRange {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

/// The UID and GID mappings of a user namespace (or of an idmapped mount).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct IdMap {
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
}

impl IdMap {
    /// The host UID a container UID maps to, if mapped.
    pub fn host_uid(&self, uid: u32) -> Option<u32> {
        to_host(&self.uids, uid)
    }

    /// The host GID a container GID maps to, if mapped.
    pub fn host_gid(&self, gid: u32) -> Option<u32> {
        to_host(&self.gids, gid)
    }

    /// From the shim protocol's mappings.
    pub fn from_proto(uids: &[proto::shim::IdMapping], gids: &[proto::shim::IdMapping]) -> IdMap {
        let ranges = |m: &[proto::shim::IdMapping]| {
            m.iter()
                .map(|r| IdRange {
                    container_id: r.container_id,
                    host_id: r.host_id,
                    length: r.length,
                })
                .collect()
        };
        IdMap {
            uids: ranges(uids),
            gids: ranges(gids),
        }
    }

    /// The shim protocol's form of `ranges`.
    pub fn to_proto(ranges: &[IdRange]) -> Vec<proto::shim::IdMapping> {
        ranges
            .iter()
            .map(|r| proto::shim::IdMapping {
                container_id: r.container_id,
                host_id: r.host_id,
                length: r.length,
            })
            .collect()
    }
}

fn to_host(ranges: &[IdRange], id: u32) -> Option<u32> {
    ranges.iter().find_map(|r| {
        let offset = id.checked_sub(r.container_id)?;
        (offset < r.length)
            .then(|| r.host_id.checked_add(offset))
            .flatten()
    })
}

/// `ranges` as `/proc/<pid>/uid_map` takes them: `<inside> <outside> <length>` per line.
fn proc_map(ranges: &[IdRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.container_id, r.host_id, r.length))
        .collect()
}

/// Writes `map` as the user namespace mappings of process `pid` (which must have unshared its
/// user namespace and not written them yet).
pub fn write_maps(pid: Pid, map: &IdMap) -> io::Result<()> {
    for (file, ranges) in [("uid_map", &map.uids), ("gid_map", &map.gids)] {
        let path = format!("/proc/{pid}/{file}");
        fs::write(&path, proc_map(ranges))
            .map_err(|e| io::Error::new(e.kind(), format!("write {path}: {e}")))?;
    }
    Ok(())
}

/// A new user namespace with the mappings `map`, as an fd (for `setns` or `MOUNT_ATTR_IDMAP`);
/// no process stays in it.
pub fn create(map: &IdMap) -> io::Result<OwnedFd> {
    let child = Helper::fork(|| unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| e.to_string()))?;
    child.wait_ready()?;
    write_maps(child.pid, map)?;
    let path = format!("/proc/{}/ns/user", child.pid);
    let ns =
        File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("open {path}: {e}")))?;
    Ok(ns.into())
}

/// A forked child that runs one setup step, reports it, then waits until released (dropped):
/// its `/proc/<pid>/ns/*` files are open to the parent meanwhile.
pub struct Helper {
    /// The child's PID.
    pub pid: Pid,
    report: File,
    release: Option<OwnedFd>,
}

impl Helper {
    /// Forks a child that runs `step` and reports its outcome to [`Helper::wait_ready`].
    pub fn fork(step: impl FnOnce() -> Result<(), String>) -> io::Result<Helper> {
        let (report_rx, report_tx) = pipe2(OFlag::O_CLOEXEC)?;
        let (release_rx, release_tx) = pipe2(OFlag::O_CLOEXEC)?;
        // SAFETY: the child only makes system calls and small allocations, and `_exit`s.
        match unsafe { fork() }? {
            ForkResult::Child => {
                drop(report_rx);
                drop(release_tx);
                let outcome = match step() {
                    Ok(()) => "ok".to_string(),
                    Err(e) => format!("error {e}"),
                };
                let _ = nix::unistd::write(&report_tx, outcome.as_bytes());
                drop(report_tx);
                let mut byte = [0u8; 1];
                // Blocks until the parent drops its end.
                let _ = nix::unistd::read(&release_rx, &mut byte);
                // SAFETY: ends the child without running the parent's destructors.
                unsafe { libc::_exit(0) }
            }
            ForkResult::Parent { child } => {
                drop(report_tx);
                drop(release_rx);
                Ok(Helper {
                    pid: child,
                    report: File::from(report_rx),
                    release: Some(release_tx),
                })
            }
        }
    }

    /// Waits for the child's step; its error if it failed.
    pub fn wait_ready(&self) -> io::Result<()> {
        let mut text = String::new();
        io::Read::read_to_string(&mut &self.report, &mut text)?;
        match text.as_str() {
            "ok" => Ok(()),
            "" => Err(io::Error::other("namespace helper exited without a report")),
            other => Err(io::Error::other(
                other.strip_prefix("error ").unwrap_or(other).to_string(),
            )),
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        drop(self.release.take());
        while let Err(nix::errno::Errno::EINTR) = waitpid(self.pid, None) {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(container_id: u32, host_id: u32, length: u32) -> IdRange {
        IdRange {
            container_id,
            host_id,
            length,
        }
    }

    #[test]
    fn container_ids_map_to_host_ids_within_ranges_only() {
        let map = IdMap {
            uids: vec![range(0, 100_000, 1000), range(1000, 500_000, 10)],
            gids: vec![range(0, 200_000, 65536)],
        };
        assert_eq!(map.host_uid(0), Some(100_000));
        assert_eq!(map.host_uid(999), Some(100_999));
        assert_eq!(map.host_uid(1005), Some(500_005));
        assert_eq!(map.host_uid(1010), None);
        assert_eq!(map.host_gid(65535), Some(265_535));
        assert_eq!(map.host_gid(65536), None);
        assert_eq!(proc_map(&map.uids), "0 100000 1000\n1000 500000 10\n");
    }

    #[test]
    fn a_new_user_namespace_has_the_given_mappings() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: writing user namespace mappings needs root");
            return;
        }
        let map = IdMap {
            uids: vec![range(0, 300_000, 65536)],
            gids: vec![range(0, 400_000, 65536)],
        };
        let ns = create(&map).expect("user namespace");
        let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&ns));
        let link = fs::read_link(path).expect("readlink");
        assert!(link.to_string_lossy().starts_with("user:["), "{link:?}");
        let own = fs::read_link("/proc/self/ns/user").expect("own");
        assert_ne!(link, own, "a new namespace, not ours");
    }
}
