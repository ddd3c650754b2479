//! Per-process figures for the metrics, read from `/proc` for the processes of a cgroup:
//! open file descriptors, sockets among them, and the root process's open-files limit.
//!
//! cgroups count neither file descriptors nor sockets, so each process's `fd` directory is
//! listed (as cAdvisor does). Processes that exit meanwhile are skipped.

use std::io::ErrorKind;
use std::path::Path;

/// What the processes of a cgroup hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessCounts {
    /// Processes (thread-group leaders) in the cgroup and beneath it.
    pub processes: u64,
    /// Open file descriptors, summed over the processes.
    pub fds: u64,
    /// File descriptors that are sockets (`socket:[inode]` links).
    pub sockets: u64,
}

/// Counts the descriptors and sockets of `pids` under `proc_root` (normally `/proc`).
pub fn process_counts(proc_root: &Path, pids: &[u32]) -> ProcessCounts {
    let mut counts = ProcessCounts {
        processes: pids.len() as u64,
        ..Default::default()
    };
    for pid in pids {
        let fd_dir = proc_root.join(pid.to_string()).join("fd");
        let entries = match std::fs::read_dir(&fd_dir) {
            Ok(entries) => entries,
            Err(e) => {
                if e.kind() != ErrorKind::NotFound {
                    tracing::debug!(pid, error = %e, "list open file descriptors");
                }
                continue;
            }
        };
        for entry in entries.flatten() {
            counts.fds += 1;
            // A descriptor closed between readdir and readlink is simply not a socket.
            if std::fs::read_link(entry.path()).is_ok_and(|target| {
                target
                    .as_os_str()
                    .as_encoded_bytes()
                    .starts_with(b"socket:")
            }) {
                counts.sockets += 1;
            }
        }
    }
    counts
}

/// The soft "Max open files" limit of `pid` from `/proc/<pid>/limits`; `None` if unlimited
/// or unreadable (the process exited).
pub fn open_files_soft_limit(proc_root: &Path, pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("limits")).ok()?;
    parse_soft_limit(&text, "Max open files")
}

/// The soft limit on the line of `/proc/<pid>/limits` named `name` (columns: name, soft,
/// hard, units; the name has spaces).
fn parse_soft_limit(limits: &str, name: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with(name))?;
    let soft = line[name.len()..].split_whitespace().next()?;
    soft.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max open files            1024                 524288               files     
Max processes             unlimited            unlimited            processes 
";

    #[test]
    fn counts_descriptors_and_sockets_and_skips_vanished_processes() {
        let proc_root = tempfile::tempdir().expect("tempdir");
        let fd = |pid: u32| {
            let dir = proc_root.path().join(format!("{pid}/fd"));
            std::fs::create_dir_all(&dir).expect("mkdir");
            dir
        };
        let one = fd(10);
        symlink("/dev/null", one.join("0")).expect("fd 0");
        symlink("pipe:[4242]", one.join("1")).expect("fd 1");
        symlink("socket:[1234]", one.join("3")).expect("fd 3");
        let two = fd(11);
        symlink("socket:[99]", two.join("5")).expect("fd 5");
        symlink("anon_inode:[eventpoll]", two.join("6")).expect("fd 6");
        let counts = process_counts(proc_root.path(), &[10, 11, 12]);
        assert_eq!(
            counts,
            ProcessCounts {
                processes: 3,
                fds: 5,
                sockets: 2
            }
        );
    }

    #[test]
    fn open_files_soft_limit_reads_the_soft_column() {
        assert_eq!(parse_soft_limit(LIMITS, "Max open files"), Some(1024));
        assert_eq!(parse_soft_limit(LIMITS, "Max processes"), None, "unlimited");
        assert_eq!(parse_soft_limit(LIMITS, "Max locked memory"), None);
        let proc_root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(proc_root.path().join("7")).expect("mkdir");
        std::fs::write(proc_root.path().join("7/limits"), LIMITS).expect("limits");
        assert_eq!(open_files_soft_limit(proc_root.path(), 7), Some(1024));
        assert_eq!(open_files_soft_limit(proc_root.path(), 8), None);
    }

    #[test]
    fn own_process_has_descriptors() {
        let me = std::process::id();
        let counts = process_counts(Path::new("/proc"), &[me]);
        assert!(counts.fds >= 3, "{counts:?}");
        assert!(open_files_soft_limit(Path::new("/proc"), me).is_some_and(|l| l > 0));
    }
}
