//! Cgroups: the host's layout, the cgroup driver setting, and one [`Cgroup`] interface over two
//! backends: cgroup v1 (a directory per hierarchy, including the "hybrid" layout where a cgroup2
//! mount sits at `/sys/fs/cgroup/unified` beside the v1 hierarchies) and cgroup v2 (unified).
//!
//! Paths are relative to the hierarchy roots, such as `kubepods/besteffort/pod123` (cgroupfs
//! driver) or `kubepods.slice/kubepods-besteffort.slice/…/berth-<id>.scope` (systemd driver,
//! [`systemd`]: the pod's cgroup is a transient scope unit made over D-Bus). On a hybrid host berth, like runc, uses only the v1
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
pub mod systemd;
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
    driver: CgroupDriver,
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
    fn detect_at(root: &Path) -> Result<Cgroups, CgroupError> {
        let layout = detect_layout(root)?;
        let backend = match layout {
            CgroupLayout::Unified => Backend::V2(Arc::new(V2Root::new(root.to_path_buf()))),
            CgroupLayout::Hybrid | CgroupLayout::Legacy => {
                let unified = (layout == CgroupLayout::Hybrid).then(|| root.join("unified"));
                let v1 = V1Root::from_mountinfo(root)?.with_unified(unified);
                if !v1.has("hugetlb") {
                    warn!(root = %root.display(), %layout, "no cgroup v1 hugetlb hierarchy: hugepage limits will not be enforced");
                }
                Backend::V1(Arc::new(v1))
            }
        };
        Ok(Cgroups {
            layout,
            backend,
            driver: CgroupDriver::Cgroupfs,
        })
    }

    /// A unified (v2) tree rooted at `root`, taken as is; tests pass a temporary directory.
    pub fn with_v2_root(root: impl Into<PathBuf>) -> Cgroups {
        let backend = Backend::V2(Arc::new(V2Root::new(root.into())));
        Cgroups {
            layout: CgroupLayout::Unified,
            backend,
            driver: CgroupDriver::Cgroupfs,
        }
    }

    /// The layout these cgroups live in.
    pub fn layout(&self) -> CgroupLayout {
        self.layout
    }

    /// These cgroups, with pod cgroups made by `driver` (cgroupfs by default).
    pub fn with_driver(mut self, driver: CgroupDriver) -> Cgroups {
        self.driver = driver;
        self
    }

    /// The driver pod cgroups are made with.
    pub fn driver(&self) -> CgroupDriver {
        self.driver
    }

    /// Checks a pod's `cgroup_parent` for the driver: a cgroupfs path, or a systemd slice.
    /// Empty means the driver's default (berth's own cgroup, or its default slice).
    pub fn validate_parent(&self, parent: &str) -> Result<(), CgroupError> {
        match self.driver {
            CgroupDriver::Cgroupfs if parent.is_empty() => Ok(()),
            CgroupDriver::Cgroupfs => Cgroups::validate_path(parent),
            CgroupDriver::Systemd => systemd::parent_slice(parent).map(drop),
        }
    }

    /// The cgroup path of a pod under `parent`: `<parent or berth>/berth-<id[..12]>`
    /// (cgroupfs), or the scope `berth-<id>.scope` in the parent slice (systemd).
    pub fn pod_path(&self, parent: &str, pod_id: &str) -> Result<String, CgroupError> {
        match self.driver {
            CgroupDriver::Cgroupfs => {
                let parent = parent.trim_matches('/');
                let parent = if parent.is_empty() { "berth" } else { parent };
                Ok(format!(
                    "{parent}/berth-{}",
                    &pod_id[..pod_id.len().min(12)]
                ))
            }
            CgroupDriver::Systemd => systemd::pod_path(parent, pod_id),
        }
    }

    /// Creates a pod's cgroup `path` (from [`pod_path`](Cgroups::pod_path)) with `r`. The
    /// systemd driver starts the scope unit with `holder` (the pod's shim) in it and moves
    /// `holder` into the leaf [`systemd::SHIM_LEAF`]; cgroupfs ignores `holder`. On failure
    /// nothing of it is left.
    pub fn create_pod(
        &self,
        path: &str,
        r: &CgroupResources,
        holder: u32,
    ) -> Result<Box<dyn Cgroup>, CgroupError> {
        if self.driver == CgroupDriver::Cgroupfs {
            return self.create(path, r);
        }
        let normalized = normalize_path(path)?;
        let (slice, unit) =
            systemd::scope_of(&normalized).ok_or_else(|| CgroupError::InvalidPath {
                path: path.to_string(),
                reason: "not a systemd scope".into(),
            })?;
        let exists = || self.open(&normalized).ok().flatten().is_some();
        systemd::start_scope(&slice, &unit, holder, r, exists)?;
        let made = self
            .move_to_leaf(&normalized, holder)
            .and_then(|()| self.create(&normalized, r));
        if made.is_err()
            && let Err(e) = self.remove_pod(&normalized)
        {
            warn!(cgroup = %normalized, error = %e, "remove pod scope after failed create");
        }
        made
    }

    /// Moves `pid` from a scope's own cgroup into its leaf [`systemd::SHIM_LEAF`]: on v2 a
    /// cgroup with controllers enabled for its children may hold no process itself.
    fn move_to_leaf(&self, scope: &str, pid: u32) -> Result<(), CgroupError> {
        let leaf = format!("{scope}/{}", systemd::SHIM_LEAF);
        match &self.backend {
            Backend::V1(_) => self
                .create(&leaf, &CgroupResources::default())?
                .add_process(pid),
            Backend::V2(root) => {
                // Not V2Cgroup::make_dirs: that enables controllers in the scope first, which
                // the kernel refuses while the process is still in it.
                let dir = root.dir().join(&leaf);
                cgroupfs::make_dir(&leaf, &dir)?;
                cgroupfs::write(&leaf, &dir.join("cgroup.procs"), &pid.to_string())
            }
        }
    }

    /// SIGKILLs the processes of a pod's cgroup: all of them (cgroupfs), or all but the shim's
    /// leaf (systemd, where the shim lives in the pod's scope and is stopped by its own call).
    pub fn kill_pod(&self, path: &str) -> Result<(), CgroupError> {
        let Some(pod) = self.open(path)? else {
            return Ok(());
        };
        if self.driver == CgroupDriver::Cgroupfs {
            return pod.kill_all();
        }
        let mut children = std::collections::BTreeSet::new();
        for procs in pod.procs_files() {
            if let Some(dir) = procs.parent() {
                for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                    if e.path().is_dir() {
                        children.insert(e.file_name().to_string_lossy().into_owned());
                    }
                }
            }
        }
        for child in children.iter().filter(|c| *c != systemd::SHIM_LEAF) {
            if let Some(c) = self.open(&format!("{}/{child}", pod.path()))? {
                c.kill_all()?;
            }
        }
        Ok(())
    }

    /// Kills what is left in a pod's cgroup and removes it; with the systemd driver its scope
    /// unit is stopped too. A cgroup or unit that does not exist is fine.
    pub fn remove_pod(&self, path: &str) -> Result<(), CgroupError> {
        if let Some(c) = self.open(path)? {
            c.kill_all()?;
            c.delete()?;
        }
        if self.driver == CgroupDriver::Systemd
            && let Some((_, unit)) = systemd::scope_of(path)
        {
            systemd::stop_unit(&unit)?;
        }
        Ok(())
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

    /// Checks a cgroupfs-driver `cgroup_parent`: a path as [`check_path`](Cgroups::check_path)
    /// takes, naming no systemd slice (those need `cgroup_driver = "systemd"`).
    pub fn validate_path(path: &str) -> Result<(), CgroupError> {
        normalize_path(path)?;
        let relative = path.strip_prefix('/').unwrap_or(path);
        if relative
            .split('/')
            .any(|c| c.ends_with(".slice") || c.contains(".slice:"))
        {
            return Err(CgroupError::SystemdPath {
                path: path.to_string(),
            });
        }
        Ok(())
    }

    /// Checks a cgroup path: relative once a leading `/` is trimmed, no empty, `.` or `..`
    /// components.
    pub fn check_path(path: &str) -> Result<(), CgroupError> {
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
                err.to_string().contains("cgroup_driver = \"systemd\""),
                "{err}"
            );
        }
    }
}
