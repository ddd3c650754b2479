//! What the metrics, events and updates tests share: a real berthd with its own pod network,
//! the busybox test image pulled from a real registry, and small helpers to run pods and
//! containers and read their logs.

#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

#[allow(unused_imports)] // each test file uses a different part
pub use e2e::containers::{Env, env, env_with, read_log};

/// Waits up to `timeout` for a log line for which `want` holds; all lines so far on failure.
pub async fn wait_for_line(
    path: &Path,
    timeout: Duration,
    want: impl Fn(&str) -> bool,
) -> Result<String, Vec<String>> {
    let deadline = Instant::now() + timeout;
    loop {
        let lines = read_log(path);
        if let Some(l) = lines.iter().find(|l| want(l)) {
            return Ok(l.clone());
        }
        if Instant::now() > deadline {
            return Err(lines);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the host mounts cgroup v2 at /sys/fs/cgroup (else v1 hierarchies).
pub fn unified_cgroups() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// A cgroup interface file of the container cgroup `path`, read from the host.
pub fn cgroup_file(controller: &str, path: &str, file: &str) -> String {
    let p = if unified_cgroups() {
        Path::new("/sys/fs/cgroup").join(path).join(file)
    } else {
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(path)
            .join(file)
    };
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}
