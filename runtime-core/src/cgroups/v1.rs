//! The cgroup v1 backend: a cgroup is one directory of the same relative path in every mounted
//! hierarchy (`/sys/fs/cgroup/cpu/<path>`, `/sys/fs/cgroup/memory/<path>`, ...).
//!
//! Hierarchies come from `/proc/self/mountinfo`, or are given explicitly (tests
//! point them at a temporary directory). Files are read and written directly rather than through
//! cgroups-rs controllers, whose `apply` discards write errors for memory and cpuset limits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use super::cgroupfs::{
    self, file_names, read, read_flat_keyed, read_flat_keyed_if_exists, read_parsed_if_exists,
    read_u64, read_u64_if_exists, write,
};
use super::metrics::{
    CgroupMetrics, HugetlbUsage, hugetlb_pagesize, parse_pids_max, parse_v1_blkio, parse_v1_quota,
    v1_device_io,
};
use super::resources::{
    Limit, Setting, V1_MEMORY_LIMIT, V1_MEMSW_LIMIT, v1_memory_settings, v1_settings,
};
use super::stats::{MemoryFigures, V1_MEMORY_STAT, parse_memory_limit, read_memory_limit};
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
    /// The hybrid layout's cgroup2 mount (`<root>/unified`). berth sets nothing there, but an
    /// OCI runtime (runc) makes its container's cgroup there too, with the pod's as parent.
    unified: Option<PathBuf>,
}

impl V1Root {
    pub(crate) fn new(hierarchies: Vec<V1Hierarchy>) -> V1Root {
        V1Root {
            hierarchies,
            unified: None,
        }
    }

    /// The same, with the hybrid layout's cgroup2 mount, whose directories of a deleted
    /// cgroup are removed with it.
    pub(crate) fn with_unified(mut self, unified: Option<PathBuf>) -> V1Root {
        self.unified = unified;
        self
    }

    /// The v1 hierarchies mounted under `root`, read from `/proc/self/mountinfo`.
    pub(crate) fn from_mountinfo(root: &Path) -> Result<V1Root, CgroupError> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let hierarchies: Vec<V1Hierarchy> = cgroup_v1_mounts(&mountinfo)
            .into_iter()
            .filter(|(mount_point, _)| mount_point.starts_with(root))
            .map(|(mount_point, options)| V1Hierarchy {
                controllers: controllers_from_options(&options),
                mount_point,
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

/// The cgroup v1 mounts in `mountinfo` (the text of `/proc/self/mountinfo`): each one's mount
/// point and super options. Written by hand: the format is one line per mount
/// (`id parent dev root mount-point options [optional…] - fstype source super-options`), and
/// the crate that parsed it (cgroups-rs) pulled in a D-Bus stack for this one function.
fn cgroup_v1_mounts(mountinfo: &str) -> Vec<(PathBuf, Vec<String>)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mount_point = before.split(' ').nth(4)?;
            let mut after = after.split(' ');
            let (fs_type, _source, options) = (after.next()?, after.next()?, after.next()?);
            (fs_type == "cgroup").then(|| {
                let options = options.split(',').map(String::from).collect();
                (PathBuf::from(unescape_octal(mount_point)), options)
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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

/// Nanoseconds per clock tick of `cpuacct.stat` (USER_HZ, 100 on Linux unless sysconf says
/// otherwise).
fn ns_per_tick() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(hz)) if hz > 0 => 1_000_000_000 / hz as u64,
        _ => 10_000_000,
    }
}

impl V1Cgroup {
    /// Memory breakdown and limits from the memory hierarchy.
    fn memory_metrics(&self, m: &mut CgroupMetrics) -> Result<(), CgroupError> {
        let dir = self.require_dir("memory", "memory usage")?;
        let stat = read_flat_keyed(&self.path, &dir.join("memory.stat"))?;
        let key = |k: &str| stat.get(k).copied().unwrap_or(0);
        let optional = |file: &str| read_u64_if_exists(&self.path, &dir.join(file));
        let limit = |file: &str| {
            read_parsed_if_exists(&self.path, &dir.join(file), parse_memory_limit)
                .map(Option::flatten)
        };
        m.memory_cache = key("total_cache");
        m.memory_mapped_file = key("total_mapped_file");
        m.memory_kernel = optional("memory.kmem.usage_in_bytes")?.unwrap_or(0);
        m.memory_swap = match optional("memory.memsw.usage_in_bytes")? {
            Some(memsw) => memsw.saturating_sub(m.stats.memory_usage),
            None => key("total_swap"),
        };
        m.memory_max_usage = optional("memory.max_usage_in_bytes")?;
        m.memory_failcnt = optional("memory.failcnt")?.unwrap_or(0);
        m.memory_swap_limit = limit("memory.memsw.limit_in_bytes")?;
        m.memory_reservation = limit("memory.soft_limit_in_bytes")?;
        Ok(())
    }

    /// User/system split (cpuacct) and CFS settings and throttling (cpu).
    fn cpu_metrics(&self, m: &mut CgroupMetrics) -> Result<(), CgroupError> {
        let cpuacct = self.require_dir("cpuacct", "CPU usage")?;
        let user = read_u64_if_exists(&self.path, &cpuacct.join("cpuacct.usage_user"))?;
        let sys = read_u64_if_exists(&self.path, &cpuacct.join("cpuacct.usage_sys"))?;
        (m.cpu_user_ns, m.cpu_system_ns) = match (user, sys) {
            (Some(user), Some(sys)) => (user, sys),
            // Kernels before 4.7 have only the tick counts.
            _ => {
                let stat = read_flat_keyed_if_exists(&self.path, &cpuacct.join("cpuacct.stat"))?;
                let ticks = |k: &str| {
                    stat.get(k)
                        .copied()
                        .unwrap_or(0)
                        .saturating_mul(ns_per_tick())
                };
                (ticks("user"), ticks("system"))
            }
        };
        let Some(cpu) = self.dir("cpu") else {
            return Ok(());
        };
        let stat = read_flat_keyed_if_exists(&self.path, &cpu.join("cpu.stat"))?;
        let key = |k: &str| stat.get(k).copied().unwrap_or(0);
        m.cfs_periods = key("nr_periods");
        m.cfs_throttled_periods = key("nr_throttled");
        m.cfs_throttled_ns = key("throttled_time");
        m.cpu_period_us = read_u64_if_exists(&self.path, &cpu.join("cpu.cfs_period_us"))?;
        m.cpu_quota_us =
            read_parsed_if_exists(&self.path, &cpu.join("cpu.cfs_quota_us"), parse_v1_quota)?
                .flatten();
        m.cpu_shares = read_u64_if_exists(&self.path, &cpu.join("cpu.shares"))?;
        Ok(())
    }

    /// Block I/O per device from the throttle policy's (always present) counters.
    fn blkio_metrics(&self, m: &mut CgroupMetrics) -> Result<(), CgroupError> {
        let Some(dir) = self.dir("blkio") else {
            return Ok(());
        };
        let read_blkio = |name: &str| -> Result<_, CgroupError> {
            let recursive = dir.join(format!("blkio.throttle.{name}_recursive"));
            let parsed = read_parsed_if_exists(&self.path, &recursive, parse_v1_blkio)?;
            match parsed {
                Some(parsed) => Ok(parsed),
                None => Ok(read_parsed_if_exists(
                    &self.path,
                    &dir.join(format!("blkio.throttle.{name}")),
                    parse_v1_blkio,
                )?
                .unwrap_or_default()),
            }
        };
        m.block_io = v1_device_io(read_blkio("io_service_bytes")?, read_blkio("io_serviced")?);
        Ok(())
    }

    /// The processes of the subtree for the metrics, read in one hierarchy: berth puts every
    /// process in all of them, and nine hierarchies cost nine times the reads. `pids` (the
    /// fewest files to list), else `memory`, else all.
    fn counted_procs(&self) -> Result<Vec<u32>, CgroupError> {
        let Some(dir) = self.dir("pids").or_else(|| self.dir("memory")) else {
            return self.subtree_procs();
        };
        let mut pids = cgroupfs::subtree_procs(&self.path, &dir)?;
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// Hugepage usage per page size.
    fn hugetlb_metrics(&self, m: &mut CgroupMetrics) -> Result<(), CgroupError> {
        let Some(dir) = self.dir("hugetlb") else {
            return Ok(());
        };
        for name in file_names(&self.path, &dir)? {
            let Some(size) = hugetlb_pagesize(&name, "usage_in_bytes") else {
                continue;
            };
            let max_file = dir.join(format!("hugetlb.{size}.max_usage_in_bytes"));
            m.hugetlb.push(HugetlbUsage {
                pagesize: size.to_string(),
                usage: read_u64(&self.path, &dir.join(&name))?,
                max_usage: read_u64_if_exists(&self.path, &max_file)?,
            });
        }
        Ok(())
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

    fn metrics(&self) -> Result<CgroupMetrics, CgroupError> {
        let mut m = CgroupMetrics {
            stats: self.stats()?,
            ..Default::default()
        };
        self.memory_metrics(&mut m)?;
        self.cpu_metrics(&mut m)?;
        self.blkio_metrics(&mut m)?;
        self.hugetlb_metrics(&mut m)?;
        if let Some(pids) = self.dir("pids") {
            m.threads_max =
                read_parsed_if_exists(&self.path, &pids.join("pids.max"), parse_pids_max)?
                    .flatten();
        }
        // Pressure stall information exists per cgroup only on v2.
        m.processes = self.counted_procs()?;
        Ok(m)
    }

    fn oom_killed(&self) -> Result<bool, CgroupError> {
        let control = self.oom_control()?;
        let count = |key: &str| control.get(key).copied().unwrap_or(0);
        Ok(count("oom_kill") > 0 || count("under_oom") > 0)
    }

    fn delete(&self) -> Result<(), CgroupError> {
        let unified = self.root.unified.as_ref().map(|u| u.join(&self.path));
        self.dirs()
            .chain(unified)
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
        ("blkio", &[]),
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
    fn delete_removes_what_an_oci_runtime_made_in_the_hybrid_unified_mount() {
        // Plain directories stand in for the cgroup2 mount (no interface files to keep rmdir
        // from working); the v1 hierarchies are left out.
        let dir = tempfile::tempdir().expect("tempdir");
        let unified = dir.path().join("unified");
        fs::create_dir_all(unified.join("parent/pod1/ctr1")).expect("mkdir unified");
        let root = V1Root::new(Vec::new()).with_unified(Some(unified.clone()));
        let cg = V1Cgroup::new(Arc::new(root), "parent/pod1".into());
        cg.delete().expect("delete");
        assert!(
            !unified.join("parent/pod1").exists(),
            "pod cgroup left in unified"
        );
        assert!(
            unified.join("parent").exists(),
            "the parent is not the pod's"
        );
    }

    #[test]
    fn cgroup_v1_mounts_are_read_from_mountinfo() {
        let mountinfo = "\
25 30 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
36 33 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:14 - cgroup cgroup rw,cpu,cpuacct
37 33 0:32 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
38 33 0:33 / /sys/fs/cgroup/unified rw,nosuid shared:11 - cgroup2 cgroup2 rw,nsdelegate
39 33 0:34 / /sys/fs/cgroup/with\\040space rw - cgroup cgroup rw,name=systemd
";
        let mounts = super::cgroup_v1_mounts(mountinfo);
        assert_eq!(
            mounts,
            vec![
                (
                    std::path::PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"),
                    vec!["rw".to_string(), "cpu".into(), "cpuacct".into()]
                ),
                (
                    std::path::PathBuf::from("/sys/fs/cgroup/memory"),
                    vec!["rw".to_string(), "memory".into()]
                ),
                (
                    std::path::PathBuf::from("/sys/fs/cgroup/with space"),
                    vec!["rw".to_string(), "name=systemd".into()]
                ),
            ]
        );
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
    fn metrics_read_v1_files_and_fall_back_where_files_are_missing() {
        let fake = fake_v1(&["pod1", "pod1/c1"]);
        let put = |file: &str, text: &str| {
            fs::write(fake.mounts.join(file), text).unwrap_or_else(|e| panic!("{file}: {e}"))
        };
        let cg = V1Cgroup::new(fake.root.clone(), "pod1".into());
        // Only the files every v1 kernel has: zero or None for the rest.
        let bare = cg.metrics().expect("metrics");
        assert_eq!(bare.stats, cg.stats().expect("stats"));
        assert_eq!((bare.memory_max_usage, bare.memory_swap), (None, 0));
        assert_eq!(bare.cpu_period_us, Some(100_000));
        assert_eq!(bare.cpu_quota_us, None, "-1 is unlimited");
        assert_eq!(bare.cpu_shares, Some(1024));
        assert_eq!(bare.threads_max, None, "pids.max max");
        assert!(bare.block_io.is_empty() && bare.hugetlb.is_empty());
        assert_eq!(bare.pressure, None, "no PSI per cgroup on v1");

        put("cpuacct/pod1/cpuacct.stat", "user 150\nsystem 50\n");
        let ticks = cg.metrics().expect("metrics");
        assert_eq!(
            ticks.cpu_user_ns,
            150 * ns_per_tick(),
            "ticks without usage_user"
        );
        put("cpuacct/pod1/cpuacct.usage_user", "100000000\n");
        put("cpuacct/pod1/cpuacct.usage_sys", "23456789\n");
        put(
            "cpu/pod1/cpu.stat",
            "nr_periods 40\nnr_throttled 7\nthrottled_time 350000000\nnr_bursts 0\n",
        );
        put("cpu/pod1/cpu.cfs_quota_us", "20000\n");
        put(
            "memory/pod1/memory.stat",
            "total_cache 2097152\ntotal_rss 4194304\ntotal_mapped_file 65536\n\
             total_inactive_file 1048576\ntotal_pgfault 50\ntotal_pgmajfault 2\n",
        );
        put("memory/pod1/memory.memsw.usage_in_bytes", "11534336\n");
        put("memory/pod1/memory.kmem.usage_in_bytes", "524288\n");
        put("memory/pod1/memory.max_usage_in_bytes", "16777216\n");
        put("memory/pod1/memory.failcnt", "3\n");
        put("memory/pod1/memory.memsw.limit_in_bytes", "134217728\n");
        put("memory/pod1/memory.soft_limit_in_bytes", "33554432\n");
        put("pids/pod1/pids.max", "1024\n");
        put("hugetlb/pod1/hugetlb.2MB.usage_in_bytes", "4194304\n");
        put("hugetlb/pod1/hugetlb.2MB.max_usage_in_bytes", "6291456\n");
        put(
            "blkio/pod1/blkio.throttle.io_service_bytes_recursive",
            "8:0 Read 4096\n8:0 Write 8192\n8:0 Total 12288\nTotal 12288\n",
        );
        put(
            "blkio/pod1/blkio.throttle.io_serviced_recursive",
            "8:0 Read 1\n8:0 Write 2\n8:0 Total 3\nTotal 3\n",
        );
        fs::write(fake.mounts.join("pids/pod1/c1/cgroup.procs"), "43\n42\n").expect("procs");
        fs::write(fake.mounts.join("pids/pod1/cgroup.procs"), "41\n").expect("procs");
        fs::write(fake.mounts.join("cpu/pod1/cgroup.procs"), "99\n").expect("procs");

        let m = cg.metrics().expect("metrics");
        assert_eq!((m.cpu_user_ns, m.cpu_system_ns), (100_000_000, 23_456_789));
        assert_eq!(
            (m.cfs_periods, m.cfs_throttled_periods, m.cfs_throttled_ns),
            (40, 7, 350_000_000)
        );
        assert_eq!(m.cpu_quota_us, Some(20_000));
        assert_eq!((m.memory_cache, m.memory_mapped_file), (2 << 20, 64 << 10));
        assert_eq!(m.memory_kernel, 512 << 10);
        assert_eq!(m.memory_swap, (11 << 20) - (10 << 20), "memsw minus usage");
        assert_eq!(m.memory_max_usage, Some(16 << 20));
        assert_eq!(m.memory_failcnt, 3);
        assert_eq!(m.memory_swap_limit, Some(128 << 20));
        assert_eq!(m.memory_reservation, Some(32 << 20));
        assert_eq!(m.threads_max, Some(1024));
        assert_eq!(m.hugetlb.len(), 1);
        assert_eq!(m.hugetlb[0].pagesize, "2MB");
        assert_eq!(m.hugetlb[0].max_usage, Some(6 << 20));
        assert_eq!(m.block_io.len(), 1);
        assert_eq!(m.block_io[0].bytes["Write"], 8192);
        assert_eq!(m.block_io[0].ios["Read"], 1);
        assert_eq!(
            m.processes,
            [41, 42, 43],
            "the subtree, in the pids hierarchy only"
        );
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
