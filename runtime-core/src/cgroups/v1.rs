//! The cgroup v1 backend: a cgroup is one directory of the same relative path in every mounted
//! hierarchy (`/sys/fs/cgroup/cpu/<path>`, `/sys/fs/cgroup/memory/<path>`, ...).
//!
//! Hierarchies come from `/proc/self/mountinfo` via cgroups-rs, or are given explicitly (tests
//! point them at a temporary directory). Files are read and written directly rather than through
//! cgroups-rs controllers, whose `apply` discards write errors for memory and cpuset limits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cgroups_rs::fs::hierarchies::mountinfo_self;
use tracing::{debug, warn};

use super::cgroupfs::{self, read, read_flat_keyed, read_u64, write};
use super::resources::{
    Limit, Setting, V1_MEMORY_LIMIT, V1_MEMSW_LIMIT, v1_memory_settings, v1_settings,
};
use super::stats::{MemoryFigures, V1_MEMORY_STAT, read_memory_limit};
use super::{Cgroup, CgroupError, CgroupResources, CgroupStats};

/// One mounted cgroup v1 hierarchy: the controllers it carries and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    /// Controller names as in mount options, e.g. `["cpu", "cpuacct"]` or `["name=systemd"]`.
    pub controllers: Vec<String>,
    /// The mount point, e.g. `/sys/fs/cgroup/memory`.
    pub mount_point: PathBuf,
}

impl V1Hierarchy {
    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// Mount options that name a v1 controller (besides `name=...` hierarchies).
const KNOWN_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

/// How long freezing or thawing may take before it is reported as stuck.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// The set of v1 hierarchies cgroups are created in.
#[derive(Debug)]
pub(crate) struct V1Root {
    hierarchies: Vec<V1Hierarchy>,
}

impl V1Root {
    pub(crate) fn new(hierarchies: Vec<V1Hierarchy>) -> V1Root {
        V1Root { hierarchies }
    }

    /// The v1 hierarchies mounted under `root`, read from `/proc/self/mountinfo`.
    pub(crate) fn from_mountinfo(root: &Path) -> Result<V1Root, CgroupError> {
        let hierarchies: Vec<V1Hierarchy> = mountinfo_self()
            .into_iter()
            .filter(|m| m.fs_type.0 == "cgroup" && m.mount_point.starts_with(root))
            .map(|m| V1Hierarchy {
                controllers: controllers_from_options(&m.super_opts),
                mount_point: m.mount_point,
            })
            .filter(|h| !h.controllers.is_empty())
            .collect();
        if hierarchies.is_empty() {
            return Err(CgroupError::NoHierarchies {
                root: root.display().to_string(),
            });
        }
        Ok(V1Root::new(hierarchies))
    }

    /// Whether some hierarchy carries `controller`.
    pub(crate) fn has(&self, controller: &str) -> bool {
        self.hierarchies.iter().any(|h| h.has(controller))
    }
}

/// The controllers among a cgroup mount's superblock options (`rw,cpu,cpuacct` → cpu, cpuacct).
pub(crate) fn controllers_from_options(options: &[String]) -> Vec<String> {
    options
        .iter()
        .filter(|o| KNOWN_CONTROLLERS.contains(&o.as_str()) || o.starts_with("name="))
        .cloned()
        .collect()
}

/// A cgroup in every v1 hierarchy.
#[derive(Debug)]
pub(crate) struct V1Cgroup {
    path: String,
    root: Arc<V1Root>,
}

impl V1Cgroup {
    /// A handle for `path` (already validated); the directories may not exist.
    pub(crate) fn new(root: Arc<V1Root>, path: String) -> V1Cgroup {
        V1Cgroup { path, root }
    }

    /// Whether the cgroup's directory exists in any hierarchy.
    pub(crate) fn exists(&self) -> bool {
        self.dirs().any(|d| d.is_dir())
    }

    fn dirs(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.root
            .hierarchies
            .iter()
            .map(|h| h.mount_point.join(&self.path))
    }

    fn dir(&self, controller: &str) -> Option<PathBuf> {
        let hierarchy = self.root.hierarchies.iter().find(|h| h.has(controller))?;
        Some(hierarchy.mount_point.join(&self.path))
    }

    fn require_dir(&self, controller: &str, needed_for: &str) -> Result<PathBuf, CgroupError> {
        self.dir(controller)
            .ok_or_else(|| CgroupError::missing_controller(&self.path, controller, needed_for))
    }

    /// Creates the cgroup (and missing parents) in every hierarchy.
    pub(crate) fn make_dirs(&self) -> Result<(), CgroupError> {
        self.root
            .hierarchies
            .iter()
            .try_for_each(|h| self.make_dirs_in(h))
    }

    fn make_dirs_in(&self, hierarchy: &V1Hierarchy) -> Result<(), CgroupError> {
        let mut dir = hierarchy.mount_point.clone();
        for component in self.path.split('/') {
            let parent = dir.clone();
            dir.push(component);
            cgroupfs::make_dir(&self.path, &dir)?;
            if hierarchy.has("cpuset") {
                self.inherit_cpuset(&parent, &dir)?;
            }
        }
        Ok(())
    }

    /// A new v1 cpuset cgroup starts with no CPUs and no memory nodes, and no process can join
    /// it: copy the parent's sets into it (what `cgroup.clone_children` would do).
    fn inherit_cpuset(&self, parent: &Path, dir: &Path) -> Result<(), CgroupError> {
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if read(&self.path, &dir.join(file))?.trim().is_empty() {
                let value = read(&self.path, &parent.join(file))?;
                write(&self.path, &dir.join(file), value.trim())?;
            }
        }
        Ok(())
    }

    fn write_setting(&self, setting: &Setting) -> Result<(), CgroupError> {
        let Some(dir) = self.dir(&setting.controller) else {
            if setting.controller == "hugetlb" {
                debug!(cgroup = %self.path, file = %setting.file, "no v1 hugetlb hierarchy: hugepage limit not applied");
                return Ok(());
            }
            return Err(CgroupError::missing_controller(
                &self.path,
                &setting.controller,
                &setting.file,
            ));
        };
        write(&self.path, &dir.join(&setting.file), &setting.value)
    }

    fn apply_memory(&self, r: &CgroupResources) -> Result<(), CgroupError> {
        let (memory, swap) = (
            Limit::from_cri(r.memory_limit),
            Limit::from_cri(r.memory_swap_limit),
        );
        if memory == Limit::Unchanged && swap == Limit::Unchanged {
            return Ok(());
        }
        let dir = self.require_dir("memory", "memory limits")?;
        let has_memsw = dir.join(V1_MEMSW_LIMIT).exists();
        if !has_memsw && swap != Limit::Unchanged {
            warn!(cgroup = %self.path, "kernel has no swap accounting (memory.memsw.*): memory+swap limit not applied");
        }
        let current = match (memory, swap) {
            (Limit::Unchanged, _) | (_, Limit::Unchanged | Limit::Unlimited) => None,
            _ => Some(read_u64(&self.path, &dir.join(V1_MEMORY_LIMIT))?),
        };
        for setting in v1_memory_settings(memory, swap, current, has_memsw) {
            write(&self.path, &dir.join(&setting.file), &setting.value)?;
        }
        Ok(())
    }

    /// Denies every device, then allows the given rules.
    fn apply_devices(&self, r: &CgroupResources) -> Result<(), CgroupError> {
        let Some(rules) = &r.device_rules else {
            return Ok(());
        };
        let dir = self.require_dir("devices", "device rules")?;
        write(&self.path, &dir.join("devices.deny"), "a")?;
        for rule in rules {
            write(&self.path, &dir.join("devices.allow"), rule)?;
        }
        Ok(())
    }

    fn set_freezer(&self, state: &str) -> Result<(), CgroupError> {
        let file = self
            .require_dir("freezer", "freezing")?
            .join("freezer.state");
        write(&self.path, &file, state)?;
        let what = format!("freezer.state {state}");
        cgroupfs::poll_until(&self.path, &what, FREEZE_TIMEOUT, || {
            Ok(read(&self.path, &file)?.trim() == state)
        })
    }

    /// Every process in this cgroup and beneath it, in any hierarchy.
    fn subtree_procs(&self) -> Result<Vec<u32>, CgroupError> {
        let mut pids = Vec::new();
        for dir in self.dirs() {
            pids.extend(cgroupfs::subtree_procs(&self.path, &dir)?);
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    fn oom_control(&self) -> Result<BTreeMap<String, u64>, CgroupError> {
        let dir = self.require_dir("memory", "OOM detection")?;
        read_flat_keyed(&self.path, &dir.join("memory.oom_control"))
    }

    fn memory_figures(&self) -> Result<MemoryFigures, CgroupError> {
        let dir = self.require_dir("memory", "memory usage")?;
        let usage = read_u64(&self.path, &dir.join("memory.usage_in_bytes"))?;
        let stat_file = dir.join("memory.stat");
        let stat = read_flat_keyed(&self.path, &stat_file)?;
        MemoryFigures::new(usage, &stat, &V1_MEMORY_STAT)
            .map_err(|r| CgroupError::parse(&self.path, stat_file, r))
    }

    /// `pids.current` (tasks), or the number of processes without a pids hierarchy.
    fn task_count(&self) -> Result<u64, CgroupError> {
        match self.dir("pids") {
            Some(dir) => read_u64(&self.path, &dir.join("pids.current")),
            None => Ok(self.procs()?.len() as u64),
        }
    }
}

impl Cgroup for V1Cgroup {
    fn path(&self) -> &str {
        &self.path
    }

    fn apply(&self, r: &CgroupResources) -> Result<(), CgroupError> {
        let invalid = |reason| CgroupError::InvalidResources {
            cgroup: self.path.clone(),
            reason,
        };
        for setting in v1_settings(r).map_err(invalid)? {
            self.write_setting(&setting)?;
        }
        self.apply_memory(r)?;
        self.apply_devices(r)?;
        if !r.unified.is_empty() {
            debug!(cgroup = %self.path, "unified (cgroup v2) resources ignored on cgroup v1");
        }
        Ok(())
    }

    fn add_process(&self, pid: u32) -> Result<(), CgroupError> {
        let pid = pid.to_string();
        self.dirs()
            .try_for_each(|dir| write(&self.path, &dir.join("cgroup.procs"), &pid))
    }

    fn procs_files(&self) -> Vec<std::path::PathBuf> {
        self.dirs().map(|dir| dir.join("cgroup.procs")).collect()
    }

    fn procs(&self) -> Result<Vec<u32>, CgroupError> {
        let mut pids = Vec::new();
        for dir in self.dirs() {
            pids.extend(cgroupfs::read_procs(&self.path, &dir)?);
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    fn freeze(&self) -> Result<(), CgroupError> {
        let frozen = self.set_freezer("FROZEN");
        // Do not leave the cgroup half-frozen (runc does the same).
        if frozen.is_err()
            && let Err(e) = self.set_freezer("THAWED")
        {
            warn!(cgroup = %self.path, error = %e, "thaw after failed freeze");
        }
        frozen
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        self.set_freezer("THAWED")
    }

    fn kill_all(&self) -> Result<(), CgroupError> {
        let can_freeze = self.dir("freezer").is_some_and(|d| d.is_dir());
        let round = || cgroupfs::freeze_kill_thaw(self, can_freeze, || self.subtree_procs());
        cgroupfs::kill_until_empty(&self.path, || self.subtree_procs(), round)
    }

    fn stats(&self) -> Result<CgroupStats, CgroupError> {
        let cpuacct = self.require_dir("cpuacct", "CPU usage")?;
        let memory_dir = self.require_dir("memory", "memory usage")?;
        let memory = self.memory_figures()?;
        Ok(CgroupStats {
            cpu_usage_ns: read_u64(&self.path, &cpuacct.join("cpuacct.usage"))?,
            memory_usage: memory.usage,
            memory_working_set: memory.working_set,
            memory_rss: memory.rss,
            page_faults: memory.page_faults,
            major_page_faults: memory.major_page_faults,
            pids: self.task_count()?,
            oom_kills: self.oom_control()?.get("oom_kill").copied().unwrap_or(0),
            memory_limit: read_memory_limit(&self.path, &memory_dir.join(V1_MEMORY_LIMIT))?,
        })
    }

    fn oom_killed(&self) -> Result<bool, CgroupError> {
        let control = self.oom_control()?;
        let count = |key: &str| control.get(key).copied().unwrap_or(0);
        Ok(count("oom_kill") > 0 || count("under_oom") > 0)
    }

    fn delete(&self) -> Result<(), CgroupError> {
        self.dirs()
            .try_for_each(|dir| cgroupfs::remove_tree(&self.path, &dir))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    /// A fake v1 mount tree: one directory per controller, interface files as plain files.
    struct FakeV1 {
        _dir: tempfile::TempDir,
        root: Arc<V1Root>,
        mounts: PathBuf,
    }

    const FILES: &[(&str, &[(&str, &str)])] = &[
        (
            "cpu",
            &[
                ("cpu.shares", "1024"),
                ("cpu.cfs_quota_us", "-1"),
                ("cpu.cfs_period_us", "100000"),
            ],
        ),
        ("cpuacct", &[("cpuacct.usage", "123456789")]),
        ("cpuset", &[("cpuset.cpus", ""), ("cpuset.mems", "")]),
        (
            "memory",
            &[
                ("memory.limit_in_bytes", "9223372036854771712"),
                ("memory.memsw.limit_in_bytes", "9223372036854771712"),
                ("memory.usage_in_bytes", "10485760"),
                (
                    "memory.stat",
                    "total_inactive_file 1048576\ntotal_rss 4194304\ntotal_pgfault 50\ntotal_pgmajfault 2\n",
                ),
                (
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
                ),
            ],
        ),
        ("pids", &[("pids.max", "max"), ("pids.current", "3")]),
        ("hugetlb", &[("hugetlb.2MB.limit_in_bytes", "0")]),
    ];

    /// Lays out `paths` (and the hierarchy roots) with every controller's files.
    fn fake_v1(paths: &[&str]) -> FakeV1 {
        let dir = tempfile::tempdir().expect("tempdir");
        let mounts = dir.path().to_path_buf();
        let mut hierarchies = Vec::new();
        for (controller, files) in FILES {
            let mount_point = mounts.join(controller);
            for cgroup in std::iter::once("").chain(paths.iter().copied()) {
                let d = mount_point.join(cgroup);
                fs::create_dir_all(&d).expect("mkdir");
                fs::write(d.join("cgroup.procs"), "").expect("cgroup.procs");
                for (file, content) in *files {
                    fs::write(d.join(file), content).expect("write fake file");
                }
            }
            hierarchies.push(V1Hierarchy {
                controllers: vec![controller.to_string()],
                mount_point,
            });
        }
        fs::write(mounts.join("cpuset/cpuset.cpus"), "0-3\n").expect("root cpus");
        fs::write(mounts.join("cpuset/cpuset.mems"), "0\n").expect("root mems");
        FakeV1 {
            _dir: dir,
            root: Arc::new(V1Root::new(hierarchies)),
            mounts,
        }
    }

    fn read_file(path: PathBuf) -> String {
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    #[test]
    fn mount_options_name_controllers() {
        let opts = |s: &str| s.split(',').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            controllers_from_options(&opts("rw,cpu,cpuacct")),
            ["cpu", "cpuacct"]
        );
        assert_eq!(
            controllers_from_options(&opts("rw,name=systemd")),
            ["name=systemd"]
        );
        assert_eq!(
            controllers_from_options(&opts("rw,relatime,xattr")),
            Vec::<String>::new()
        );
    }

    #[test]
    fn new_cpuset_cgroup_inherits_parent_cpus_and_mems() {
        let fake = fake_v1(&["kubepods", "kubepods/pod1"]);
        let cg = V1Cgroup::new(fake.root.clone(), "kubepods/pod1".into());
        cg.make_dirs().expect("make dirs");
        assert_eq!(
            read_file(fake.mounts.join("cpuset/kubepods/cpuset.cpus")),
            "0-3"
        );
        assert_eq!(
            read_file(fake.mounts.join("cpuset/kubepods/pod1/cpuset.mems")),
            "0"
        );
    }

    #[test]
    fn apply_writes_v1_files() {
        let fake = fake_v1(&["pod1"]);
        let cg = V1Cgroup::new(fake.root.clone(), "pod1".into());
        let r = CgroupResources {
            cpu_shares: Some(512),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            cpuset_cpus: Some("1".into()),
            memory_limit: Some(64 << 20),
            memory_swap_limit: Some(64 << 20),
            pids_limit: Some(42),
            hugepage_limits: vec![("2MB".into(), 4 << 20)],
            ..Default::default()
        };
        cg.apply(&r).expect("apply");
        let m = &fake.mounts;
        assert_eq!(read_file(m.join("cpu/pod1/cpu.shares")), "512");
        assert_eq!(read_file(m.join("cpu/pod1/cpu.cfs_quota_us")), "50000");
        assert_eq!(read_file(m.join("cpuset/pod1/cpuset.cpus")), "1");
        assert_eq!(
            read_file(m.join("memory/pod1/memory.limit_in_bytes")),
            "67108864"
        );
        assert_eq!(
            read_file(m.join("memory/pod1/memory.memsw.limit_in_bytes")),
            "67108864"
        );
        assert_eq!(read_file(m.join("pids/pod1/pids.max")), "42");
        assert_eq!(
            read_file(m.join("hugetlb/pod1/hugetlb.2MB.limit_in_bytes")),
            "4194304"
        );
    }

    #[test]
    fn applying_again_changes_only_the_given_limits() {
        let fake = fake_v1(&["pod1"]);
        let cg = V1Cgroup::new(fake.root.clone(), "pod1".into());
        cg.apply(&CgroupResources {
            cpu_shares: Some(512),
            cpu_quota: Some(50_000),
            memory_limit: Some(64 << 20),
            ..Default::default()
        })
        .expect("first apply");
        cg.apply(&CgroupResources {
            cpu_quota: Some(-1),
            memory_limit: Some(96 << 20),
            ..Default::default()
        })
        .expect("update");
        let m = &fake.mounts;
        assert_eq!(read_file(m.join("cpu/pod1/cpu.shares")), "512", "kept");
        assert_eq!(
            read_file(m.join("cpu/pod1/cpu.cfs_quota_us")),
            "-1",
            "lifted"
        );
        assert_eq!(
            read_file(m.join("memory/pod1/memory.limit_in_bytes")),
            "100663296"
        );
    }

    #[test]
    fn write_to_missing_file_names_cgroup_and_file() {
        let fake = fake_v1(&["pod1"]);
        let cg = V1Cgroup::new(fake.root.clone(), "pod1".into());
        let r = CgroupResources {
            hugepage_limits: vec![("64KB".into(), 1)],
            ..Default::default()
        };
        let msg = cg.apply(&r).expect_err("no such hugepage size").to_string();
        assert!(
            msg.contains("cgroup pod1") && msg.contains("hugetlb.64KB.limit_in_bytes"),
            "{msg}"
        );
    }

    #[test]
    fn stats_read_v1_files() {
        let fake = fake_v1(&["pod1"]);
        let cg = V1Cgroup::new(fake.root.clone(), "pod1".into());
        let stats = cg.stats().expect("stats");
        assert_eq!(
            stats,
            CgroupStats {
                cpu_usage_ns: 123_456_789,
                memory_usage: 10 << 20,
                memory_working_set: 9 << 20,
                memory_rss: 4 << 20,
                page_faults: 50,
                major_page_faults: 2,
                pids: 3,
                oom_kills: 0,
                memory_limit: None,
            }
        );
        assert!(!cg.oom_killed().expect("oom_control"));
        fs::write(
            fake.mounts.join("memory/pod1/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )
        .expect("write oom_control");
        assert!(cg.oom_killed().expect("oom_control"));
        fs::write(
            fake.mounts.join("memory/pod1/memory.limit_in_bytes"),
            "67108864\n",
        )
        .expect("write limit");
        assert_eq!(cg.stats().expect("stats").memory_limit, Some(64 << 20));
    }

    #[test]
    fn missing_controller_is_reported_for_requested_limit() {
        let fake = fake_v1(&["pod1"]);
        let hierarchies = fake
            .root
            .hierarchies
            .iter()
            .filter(|h| !h.has("pids"))
            .cloned()
            .collect();
        let cg = V1Cgroup::new(Arc::new(V1Root::new(hierarchies)), "pod1".into());
        let err = cg
            .apply(&CgroupResources {
                pids_limit: Some(5),
                ..Default::default()
            })
            .expect_err("no pids");
        assert!(
            matches!(err, CgroupError::MissingController { ref controller, .. } if controller == "pids"),
            "{err}"
        );
    }
}
