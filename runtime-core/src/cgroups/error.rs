//! The one error type of the cgroup backend. Every variant names the cgroup and, where a file is
//! involved, the file, so a log line alone says what failed where.

use std::path::PathBuf;
use std::time::Duration;

/// Errors detecting, creating, configuring, reading or removing cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("statfs {path}: {source}")]
    Statfs { path: String, source: nix::Error },
    #[error("{path} is neither a cgroup2 mount nor a tmpfs holding cgroup v1 hierarchies")]
    NotCgroupRoot { path: String },
    #[error("no cgroup v1 hierarchy is mounted under {root} (according to /proc/self/mountinfo)")]
    NoHierarchies { root: String },
    #[error("invalid cgroup path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error(
        "cgroup path {path:?} names a systemd slice, but berth runs the cgroupfs driver: set \
         cgroup_driver = \"systemd\" (with kubelet --cgroup-driver=systemd) or give a cgroupfs path"
    )]
    SystemdPath { path: String },
    #[error("systemd unit {unit}: {action}: {reason}")]
    Systemd {
        unit: String,
        action: String,
        reason: String,
    },
    #[error("cgroup {cgroup}: invalid resources: {reason}")]
    InvalidResources { cgroup: String, reason: String },
    #[error("cgroup {cgroup}: controller {controller} is not available (needed for {needed_for})")]
    MissingController {
        cgroup: String,
        controller: String,
        needed_for: String,
    },
    #[error("cgroup {cgroup}: {action} {file}: {source}")]
    Io {
        cgroup: String,
        action: String,
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("cgroup {cgroup}: parse {file}: {reason}")]
    Parse {
        cgroup: String,
        file: PathBuf,
        reason: String,
    },
    #[error("cgroup {cgroup}: cannot remove {dir}: processes {pids:?} are still in it (EBUSY)")]
    Busy {
        cgroup: String,
        dir: PathBuf,
        pids: Vec<u32>,
    },
    #[error("cgroup {cgroup}: send SIGKILL to process {pid}: {source}")]
    Signal {
        cgroup: String,
        pid: u32,
        source: nix::Error,
    },
    #[error("cgroup {cgroup}: {what} did not finish within {waited:?}")]
    Timeout {
        cgroup: String,
        what: String,
        waited: Duration,
    },
}

impl CgroupError {
    /// An I/O error on `file` of `cgroup`; `action` reads like "read" or "write \"10\" to".
    pub(crate) fn io(
        cgroup: &str,
        action: impl Into<String>,
        file: PathBuf,
        source: std::io::Error,
    ) -> Self {
        CgroupError::Io {
            cgroup: cgroup.to_string(),
            action: action.into(),
            file,
            source,
        }
    }

    /// A malformed `file` of `cgroup`.
    pub(crate) fn parse(cgroup: &str, file: PathBuf, reason: impl Into<String>) -> Self {
        CgroupError::Parse {
            cgroup: cgroup.to_string(),
            file,
            reason: reason.into(),
        }
    }

    /// `resource` needs `controller`, which this cgroup does not have.
    pub(crate) fn missing_controller(cgroup: &str, controller: &str, needed_for: &str) -> Self {
        CgroupError::MissingController {
            cgroup: cgroup.to_string(),
            controller: controller.to_string(),
            needed_for: needed_for.to_string(),
        }
    }
}
