//! What a test's berthd holds on the host, to check that nothing is left once everything is
//! removed: mounts, shim processes, cgroups, links on the test bridge, IP allocations,
//! pinned namespaces and the files of pods and containers under the state dirs.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::daemon::Berthd;
use crate::pods::{TestNetwork, mounts_under, test_cgroup_parent};

/// Everything found, by kind; empty when the host is clean.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    pub mounts: Vec<PathBuf>,
    pub shims: Vec<i32>,
    pub cgroups: Vec<PathBuf>,
    pub links: Vec<String>,
    pub files: Vec<PathBuf>,
}

impl Inventory {
    /// What `d` (on network `net`) holds now.
    pub fn take(d: &Berthd, net: &TestNetwork) -> Inventory {
        let mut cgroups = crate::cleanup::cgroup_tree(&test_cgroup_parent());
        // The parent itself is the test's, not a pod's.
        cgroups.retain(|p| !p.ends_with(test_cgroup_parent()));
        Inventory {
            mounts: mounts_under(d.dir()),
            shims: crate::cleanup::shims_under(d.dir()),
            cgroups,
            links: bridge_ports(&net.bridge),
            files: [
                d.root_dir.join("pods"),
                d.root_dir.join("containers"),
                d.root_dir.join("network"),
                d.state_dir.join("pods"),
                d.state_dir.join("ns"),
                d.state_dir.join("shims"),
                d.state_dir.join("rootfs"),
            ]
            .iter()
            .flat_map(|dir| files_below(dir))
            // The allocator's cursor, not an allocation.
            .filter(|f| !f.ends_with("last_reserved_ip"))
            .collect(),
        }
    }

    pub fn is_clean(&self) -> bool {
        *self == Inventory::default()
    }
}

/// Interfaces enslaved to `bridge` (the pods' host-side veths).
fn bridge_ports(bridge: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output();
    let Ok(out) = out else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or_default().to_string())
        .collect()
}

/// Regular files, sockets and other non-directories below `dir` (IPAM leases are files;
/// empty bookkeeping directories do not count).
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => out.extend(files_below(&path)),
            Ok(_) => out.push(path),
            Err(_) => {}
        }
    }
    out
}
