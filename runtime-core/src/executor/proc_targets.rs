//! CRI mounts may not land on `/proc`.
//!
//! A mount over part of the container's procfs can hide or replace what the kernel exposes
//! there (`/proc/self/attr`, `/proc/sys`, `/proc/self/fd`): the attacks of the
//! CVE-2019-16884 / CVE-2025-52881 class. A destination is refused when its path, after
//! lexical cleaning, is under `/proc`, or when it resolves (symlinks followed inside the
//! rootfs) to a directory or file on procfs. As runc, binds of a file onto the few `/proc`
//! files that tools such as lxcfs replace are allowed.

use std::os::fd::OwnedFd;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::statfs::{PROC_SUPER_MAGIC, fstatfs};

use super::error::Failure;
use super::in_root::{clean, open_in_root};
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

/// Whether a bind of `source` on `destination` is one of the allowed `/proc` file binds.
fn replaceable(destination: &str, source: &Path) -> bool {
    let lexical = format!("/{}", clean(destination).join("/"));
    source.is_file() && REPLACEABLE.contains(&lexical.as_str())
}

/// Whether `destination` is refused by its path alone: under `/proc` (after lexical cleaning)
/// and not an allowed bind of the file `source` (`None`: not a bind). What CreateContainer
/// checks; [`check`] also resolves the path in the rootfs at start.
pub fn is_proc_destination(destination: &str, source: Option<&Path>) -> bool {
    clean(destination).first() == Some(&"proc")
        && !source.is_some_and(|s| replaceable(destination, s))
}

/// Refuses `m` if it would be mounted on procfs (see the module doc). Runs after `/proc` is
/// mounted in the rootfs.
pub(super) fn check(root: &OwnedFd, m: &Mount) -> Result<(), Failure> {
    let components = clean(&m.destination);
    if matches!(m.kind, MountKind::Bind { .. }) && replaceable(&m.destination, &m.source) {
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

#[cfg(test)]
mod tests {
    use super::is_proc_destination;
    use std::path::Path;

    #[test]
    fn destinations_under_proc_are_refused_whatever_their_spelling() {
        for path in [
            "/proc",
            "/proc/sys",
            "//proc/./self/attr",
            "/x/../proc/1",
            "/proc/",
        ] {
            assert!(is_proc_destination(path, None), "{path}");
            assert!(is_proc_destination(path, Some(Path::new("/"))), "{path}");
        }
        for path in ["/", "/data", "/procs", "/data/proc", "/etc/proc"] {
            assert!(!is_proc_destination(path, None), "{path}");
        }
    }

    #[test]
    fn only_files_bound_on_the_lxcfs_files_are_allowed() {
        let file = Path::new("/etc/hostname");
        assert!(!is_proc_destination("/proc/cpuinfo", Some(file)));
        assert!(!is_proc_destination("/proc//meminfo", Some(file)));
        assert!(is_proc_destination(
            "/proc/cpuinfo",
            Some(Path::new("/etc"))
        ));
        assert!(is_proc_destination("/proc/cpuinfo", None));
        assert!(is_proc_destination("/proc/self/attr/exec", Some(file)));
    }
}
