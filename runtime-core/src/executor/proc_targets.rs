//! CRI mounts may not land on `/proc`.
//!
//! A mount over part of the container's procfs can hide or replace what the kernel exposes
//! there (`/proc/self/attr`, `/proc/sys`, `/proc/self/fd`): the attacks of the
//! CVE-2019-16884 / CVE-2025-52881 class. A destination is refused when its path, after
//! lexical cleaning, is under `/proc`, or when it resolves (symlinks followed inside the
//! rootfs) to a directory or file on procfs. As runc, binds of a file onto the few `/proc`
//! files that tools such as lxcfs replace are allowed.

use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::sys::statfs::{PROC_SUPER_MAGIC, fstatfs};

use super::error::Failure;
use super::mounts::{clean, open_in_root};
use super::{Mount, MountKind};

/// `/proc` files a bind may replace (runc's list).
const REPLACEABLE: [&str; 10] = [
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
];

/// Refuses `m` if it would be mounted on procfs (see the module doc). Runs after `/proc` is
/// mounted in the rootfs.
pub(super) fn check(root: &OwnedFd, m: &Mount) -> Result<(), Failure> {
    let components = clean(&m.destination);
    let lexical = format!("/{}", components.join("/"));
    let replaceable = matches!(m.kind, MountKind::Bind { .. })
        && m.source.is_file()
        && REPLACEABLE.contains(&lexical.as_str());
    if replaceable {
        return Ok(());
    }
    let refuse = |why: &str| {
        Err(Failure::plain(
            format!(
                "mount destination {} {why}: mounts on /proc are not allowed",
                m.destination
            ),
            Some(Errno::EPERM),
        ))
    };
    if components.first() == Some(&"proc") {
        return refuse("is under /proc");
    }
    // The deepest part of the destination that exists, as the kernel resolves it.
    for len in (0..=components.len()).rev() {
        let prefix = format!("/{}", components[..len].join("/"));
        match open_in_root(root, &prefix) {
            Ok(fd) => {
                let on_proc = fstatfs(&fd).is_ok_and(|fs| fs.filesystem_type() == PROC_SUPER_MAGIC);
                return if on_proc {
                    refuse("resolves into /proc")
                } else {
                    Ok(())
                };
            }
            Err(Errno::ENOENT) => continue,
            // Anything else is reported by the mount itself.
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}
