//! Cgroups: the host's layout, the cgroup driver setting, and one [`Cgroup`] interface over two
//! backends: cgroup v1 (a directory per hierarchy, including the "hybrid" layout where a cgroup2
//! mount sits at `/sys/fs/cgroup/unified` beside the v1 hierarchies) and cgroup v2 (unified).
//!
//! Paths are cgroupfs-driver paths relative to the hierarchy roots, such as
//! `kubepods/besteffort/pod123`. On a hybrid host berth, like runc, uses only the v1
//! hierarchies: if `hugetlb` is bound to the v2 mount, hugepage limits are not enforced until it
//! is mounted as a v1 hierarchy (`mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb`).
//!
//! ```no_run
//! use runtime_core::cgroups::{CgroupResources, Cgroups};
//!
//! let cgroups = Cgroups::detect()?;
//! let limits = CgroupResources { memory_limit: Some(64 << 20), ..Default::default() };
//! let pod = cgroups.create("kubepods/besteffort/pod123", &limits)?;
//! # let child_pid = 4242;
//! pod.add_process(child_pid)?;
//! // When the pod stops:
//! pod.kill_all()?;
//! pod.delete()?;
//! # Ok::<(), runtime_core::cgroups::CgroupError>(())
//! ```

mod cgroupfs;
mod error;
mod metrics;
mod resources;
mod stats;
mod v1;
mod v2;
mod v2_devices;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, TMPFS_MAGIC, statfs};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

pub use error::CgroupError;
pub use metrics::{CgroupMetrics, DeviceIo, HugetlbUsage, Pressure, PressureTotals};
pub use resources::CgroupResources;
pub use stats::CgroupStats;
pub use v1::V1Hierarchy;

use v1::{V1Cgroup, V1Root};
use v2::{V2Cgroup, V2Root};

/// Where the kernel's cgroup filesystems are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

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

/// One cgroup, in every v1 hierarchy or in the unified tree; the same calls work on both.
pub trait Cgroup: Send + Sync + fmt::Debug {
    /// The path relative to the hierarchy roots, e.g. `kubepods/besteffort/pod123`.
    fn path(&self) -> &str;
    /// Writes the limits `r` sets; fields left `None`/`0` keep their current values.
    fn apply(&self, r: &CgroupResources) -> Result<(), CgroupError>;
    /// Moves process `pid` (with all its threads) into the cgroup.
    fn add_process(&self, pid: u32) -> Result<(), CgroupError>;
    /// The `cgroup.procs` files a process writes `0` to in order to join this cgroup itself
    /// (one per v1 hierarchy, one on v2): how a container joins before it execs.
    fn procs_files(&self) -> Vec<PathBuf>;
    /// The processes directly in this cgroup (not in child cgroups), sorted.
    fn procs(&self) -> Result<Vec<u32>, CgroupError>;
    /// Freezes every process in the cgroup and beneath it, waiting until they are frozen.
    fn freeze(&self) -> Result<(), CgroupError>;
    /// Thaws a frozen cgroup, waiting until it runs again.
    fn thaw(&self) -> Result<(), CgroupError>;
    /// SIGKILLs every process in the cgroup and beneath it, repeating until none is left or
    /// 10 s have passed. A cgroup that does not exist has nothing to kill.
    fn kill_all(&self) -> Result<(), CgroupError>;
    /// Current usage figures.
    fn stats(&self) -> Result<CgroupStats, CgroupError>;
    /// [`stats`](Cgroup::stats) plus everything the cAdvisor-named metrics report: more
    /// reads, so only for metrics.
    fn metrics(&self) -> Result<CgroupMetrics, CgroupError>;
    /// Whether the OOM killer has killed a process in the cgroup (v1 `memory.oom_control`
    /// `oom_kill`/`under_oom`, v2 `memory.events` `oom_kill`).
    fn oom_killed(&self) -> Result<bool, CgroupError>;
    /// Removes the cgroup and any child cgroups from every hierarchy. Removing a cgroup that does
    /// not exist succeeds; one that still holds processes fails with [`CgroupError::Busy`].
    fn delete(&self) -> Result<(), CgroupError>;
}

/// The host's cgroup root(s) with their layout: where cgroups are created and opened.
#[derive(Debug, Clone)]
pub struct Cgroups {
    layout: CgroupLayout,
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    V1(Arc<V1Root>),
    V2(Arc<V2Root>),
}

impl Cgroups {
    /// The cgroups mounted at `/sys/fs/cgroup`, whichever layout the host runs.
    pub fn detect() -> Result<Cgroups, CgroupError> {
        Cgroups::detect_at(Path::new(CGROUP_ROOT))
    }

    /// The cgroups mounted at `root`; v1 hierarchies are found in `/proc/self/mountinfo`.
    pub fn detect_at(root: &Path) -> Result<Cgroups, CgroupError> {
        let layout = detect_layout(root)?;
        let backend = match layout {
            CgroupLayout::Unified => Backend::V2(Arc::new(V2Root::new(root.to_path_buf()))),
            CgroupLayout::Hybrid | CgroupLayout::Legacy => {
                let v1 = V1Root::from_mountinfo(root)?;
                if !v1.has("hugetlb") {
                    warn!(root = %root.display(), %layout, "no cgroup v1 hugetlb hierarchy: hugepage limits will not be enforced");
                }
                Backend::V1(Arc::new(v1))
            }
        };
        Ok(Cgroups { layout, backend })
    }

    /// A unified (v2) tree rooted at `root`, taken as is; tests pass a temporary directory.
    pub fn with_v2_root(root: impl Into<PathBuf>) -> Cgroups {
        let backend = Backend::V2(Arc::new(V2Root::new(root.into())));
        Cgroups {
            layout: CgroupLayout::Unified,
            backend,
        }
    }

    /// The given v1 hierarchies, taken as is (layout [`CgroupLayout::Legacy`]).
    pub fn with_v1_hierarchies(hierarchies: Vec<V1Hierarchy>) -> Cgroups {
        let backend = Backend::V1(Arc::new(V1Root::new(hierarchies)));
        Cgroups {
            layout: CgroupLayout::Legacy,
            backend,
        }
    }

    /// The layout these cgroups live in.
    pub fn layout(&self) -> CgroupLayout {
        self.layout
    }

    /// Creates the cgroup `path` (and missing parents) in every v1 hierarchy or in the unified
    /// tree, then applies `r`. If that fails, a cgroup this call created is removed again.
    pub fn create(&self, path: &str, r: &CgroupResources) -> Result<Box<dyn Cgroup>, CgroupError> {
        let path = normalize_path(path)?;
        match &self.backend {
            Backend::V1(root) => {
                let cgroup = V1Cgroup::new(root.clone(), path);
                let existed = cgroup.exists();
                finish_create(cgroup, existed, V1Cgroup::make_dirs, r)
            }
            Backend::V2(root) => {
                let cgroup = V2Cgroup::new(root.clone(), path);
                let existed = cgroup.exists();
                finish_create(cgroup, existed, V2Cgroup::make_dirs, r)
            }
        }
    }

    /// The existing cgroup `path`, or `None` if it exists in no hierarchy.
    pub fn open(&self, path: &str) -> Result<Option<Box<dyn Cgroup>>, CgroupError> {
        let path = normalize_path(path)?;
        let cgroup: Box<dyn Cgroup> = match &self.backend {
            Backend::V1(root) => {
                let cgroup = V1Cgroup::new(root.clone(), path);
                if !cgroup.exists() {
                    return Ok(None);
                }
                Box::new(cgroup)
            }
            Backend::V2(root) => {
                let cgroup = V2Cgroup::new(root.clone(), path);
                if !cgroup.exists() {
                    return Ok(None);
                }
                Box::new(cgroup)
            }
        };
        Ok(Some(cgroup))
    }

    /// Checks a cgroupfs path: relative once a leading `/` is trimmed, no empty, `.` or `..`
    /// components. Systemd slice names are refused: the systemd driver is not implemented.
    pub fn validate_path(path: &str) -> Result<(), CgroupError> {
        normalize_path(path).map(drop)
    }
}

/// Makes the directories, applies `r`, and removes what it made if either step fails.
fn finish_create<C: Cgroup + 'static>(
    cgroup: C,
    existed: bool,
    make_dirs: fn(&C) -> Result<(), CgroupError>,
    r: &CgroupResources,
) -> Result<Box<dyn Cgroup>, CgroupError> {
    match make_dirs(&cgroup).and_then(|()| cgroup.apply(r)) {
        Ok(()) => {
            debug!(cgroup = %cgroup.path(), existed, "cgroup created");
            Ok(Box::new(cgroup))
        }
        Err(e) => {
            if !existed && let Err(undo) = cgroup.delete() {
                warn!(cgroup = %cgroup.path(), error = %undo, "remove cgroup after failed create");
            }
            Err(e)
        }
    }
}

/// The validated path without its leading `/`.
fn normalize_path(path: &str) -> Result<String, CgroupError> {
    let invalid = |reason: &str| CgroupError::InvalidPath {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    let relative = path.strip_prefix('/').unwrap_or(path);
    if relative.is_empty() {
        return Err(invalid("the root cgroup is not managed by berth"));
    }
    for component in relative.split('/') {
        if component.ends_with(".slice") || component.contains(".slice:") {
            return Err(CgroupError::SystemdPath {
                path: path.to_string(),
            });
        }
        match component {
            "" => return Err(invalid("empty path component")),
            "." | ".." => return Err(invalid("'.' and '..' components are not allowed")),
            c if c.contains('\0') => return Err(invalid("NUL byte")),
            _ => {}
        }
    }
    Ok(relative.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_layout_is_detected() {
        let root = Path::new(CGROUP_ROOT);
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

    #[test]
    fn validate_path_accepts_cgroupfs_paths() {
        for ok in ["kubepods", "/kubepods/besteffort/pod123", "a/b-c_d/e.f"] {
            Cgroups::validate_path(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        assert_eq!(
            normalize_path("/kubepods/pod1").expect("valid"),
            "kubepods/pod1"
        );
    }

    #[test]
    fn validate_path_rejects_escapes_and_empty_components() {
        for bad in [
            "", "/", "../x", "a/../b", "./a", "a//b", "a/", "//a", "a\0b",
        ] {
            let err = Cgroups::validate_path(bad).expect_err(bad);
            assert!(
                matches!(err, CgroupError::InvalidPath { .. }),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn validate_path_rejects_systemd_slices_naming_the_driver() {
        for slice in [
            "foo.slice",
            "kubepods.slice/kubepods-besteffort.slice",
            "kubepods.slice:cri-berth:abc",
        ] {
            let err = Cgroups::validate_path(slice).expect_err(slice);
            assert!(
                matches!(err, CgroupError::SystemdPath { .. }),
                "{slice}: {err}"
            );
            assert!(
                err.to_string()
                    .contains("systemd cgroup driver is not implemented"),
                "{err}"
            );
        }
    }
}
