//! Cgroup layout detection and the cgroup driver setting.
//!
//! berth supports both cgroup v1 (including the "hybrid" layout, where a cgroup2 mount sits at
//! `/sys/fs/cgroup/unified` beside the v1 hierarchies) and the unified v2 layout.

use std::fmt;
use std::path::Path;

use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, TMPFS_MAGIC, statfs};
use serde::{Deserialize, Serialize};

/// How cgroup paths are named: directly (`cgroupfs`) or as systemd slices/scopes (`systemd`).
/// This is what kubelet's `--cgroup-driver` must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    #[default]
    Cgroupfs,
    Systemd,
}

impl fmt::Display for CgroupDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CgroupDriver::Cgroupfs => "cgroupfs",
            CgroupDriver::Systemd => "systemd",
        })
    }
}

/// Which cgroup hierarchies the host has mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupLayout {
    /// cgroup v2 only: `/sys/fs/cgroup` is a cgroup2 mount.
    Unified,
    /// cgroup v1 controllers, plus a cgroup2 mount at `<root>/unified`.
    Hybrid,
    /// cgroup v1 controllers only.
    Legacy,
}

impl fmt::Display for CgroupLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CgroupLayout::Unified => "unified (v2)",
            CgroupLayout::Hybrid => "hybrid (v1 with a v2 mount)",
            CgroupLayout::Legacy => "legacy (v1)",
        })
    }
}

/// Errors detecting the cgroup layout.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("statfs {path}: {source}")]
    Statfs { path: String, source: nix::Error },
    #[error("{path} is neither a cgroup2 mount nor a tmpfs holding cgroup v1 hierarchies")]
    NotCgroupRoot { path: String },
}

/// Detects the layout of the cgroup filesystems mounted at `root` (normally `/sys/fs/cgroup`).
pub fn detect_layout(root: &Path) -> Result<CgroupLayout, CgroupError> {
    let fs = statfs(root).map_err(|source| CgroupError::Statfs {
        path: root.display().to_string(),
        source,
    })?;
    if fs.filesystem_type() == CGROUP2_SUPER_MAGIC {
        return Ok(CgroupLayout::Unified);
    }
    if fs.filesystem_type() != TMPFS_MAGIC {
        return Err(CgroupError::NotCgroupRoot {
            path: root.display().to_string(),
        });
    }
    let unified = root.join("unified");
    match statfs(&unified) {
        Ok(u) if u.filesystem_type() == CGROUP2_SUPER_MAGIC => Ok(CgroupLayout::Hybrid),
        _ => Ok(CgroupLayout::Legacy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_layout_is_detected() {
        let root = Path::new("/sys/fs/cgroup");
        if !root.exists() {
            eprintln!("skipped: /sys/fs/cgroup is absent on this host");
            return;
        }
        let layout = detect_layout(root).expect("detect host cgroup layout");
        eprintln!("host cgroup layout: {layout}");
    }

    #[test]
    fn a_plain_directory_is_not_a_cgroup_root() {
        // The crate's own directory sits on the source tree's filesystem, never a tmpfs.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).expect("tempdir");
        let err = detect_layout(dir.path()).expect_err("plain dir");
        assert!(matches!(err, CgroupError::NotCgroupRoot { .. }), "{err}");
    }
}
