//! What the crash, fault and concurrency tests check once everything is removed: nothing of the
//! daemon's pods and containers is left on the host (mounts, shims, cgroups, veths, IPAM
//! entries, namespace pins, records and temp files under its dirs).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cleanup::shims_under;
use crate::daemon::Berthd;
use crate::pods::{mounts_under, test_cgroup_parent};

/// Everything of `d`'s pods and containers still on the host, one line per item; empty when
/// the host is clean. `bridge` is the daemon's pod bridge (its veths are pods' links).
pub fn leftovers(d: &Berthd, bridge: &str) -> Vec<String> {
    let mut left = Vec::new();
    let mut mounts: BTreeSet<PathBuf> = mounts_under(d.dir()).into_iter().collect();
    // The root dir may be a filesystem of its own (the disk-full tests): not a leftover.
    mounts.extend(mounts_under(&d.root_dir));
    mounts.remove(&d.root_dir);
    for m in mounts {
        left.push(format!("mount {}", m.display()));
    }
    for pid in shims_under(d.dir()) {
        left.push(format!("shim process {pid}"));
    }
    for cg in cgroups_under(&test_cgroup_parent()) {
        left.push(format!("cgroup {}", cg.display()));
    }
    for veth in links_on(bridge) {
        left.push(format!("veth {veth} on {bridge}"));
    }
    for f in entries(&d.root_dir.join("network/ipam")) {
        if f.file_name().is_some_and(|n| n != "last_reserved_ip") {
            left.push(format!("IPAM entry {}", f.display()));
        }
    }
    for dir in [
        d.root_dir.join("pods"),
        d.root_dir.join("containers"),
        d.state_dir.join("pods"),
        d.state_dir.join("ns"),
        d.state_dir.join("shims"),
        d.state_dir.join("rootfs"),
    ] {
        for e in entries(&dir) {
            left.push(format!("file {}", e.display()));
        }
    }
    for dir in [
        d.root_dir.join("snapshots"),
        d.root_dir.join("content/sha256"),
        d.root_dir.clone(),
    ] {
        for e in entries(&dir) {
            if e.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
            {
                left.push(format!("temp file {}", e.display()));
            }
        }
    }
    left
}

/// How long a stopped pod's network may take to go: berthd deletes the veth pair after
/// StopPodSandbox returns and frees the address once it is gone (docs/architecture.md).
pub const NETWORK_SETTLE: Duration = Duration::from_secs(5);

/// Polls `done` every 10 ms until it holds, for at most [`NETWORK_SETTLE`]; whether it held.
pub fn network_settled(mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() >= NETWORK_SETTLE {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Panics listing what is left unless [`leftovers`] finds nothing (veths and addresses of
/// stopped pods get [`NETWORK_SETTLE`] to go; everything else must be gone already).
pub fn assert_clean(d: &Berthd, bridge: &str) {
    let network = |l: &String| l.starts_with("veth ") || l.starts_with("IPAM entry ");
    let mut left = leftovers(d, bridge);
    if left.iter().all(network) {
        network_settled(|| {
            left = leftovers(d, bridge);
            left.is_empty() || !left.iter().all(network)
        });
    }
    assert!(left.is_empty(), "left on the host:\n{}", left.join("\n"));
}

/// Entries of a directory (none if it does not exist).
pub fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect()
}

/// Child cgroups of `parent` in every hierarchy (the parent itself is the test's).
pub fn cgroups_under(parent: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|h| h.path().join(parent))
        .chain(std::iter::once(Path::new("/sys/fs/cgroup").join(parent)))
        .flat_map(|p| entries(&p))
        .filter(|p| p.is_dir())
        .collect()
}

/// Links enslaved to `bridge`.
pub fn links_on(bridge: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}
