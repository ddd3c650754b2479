//! The cgroup v2 backend: a cgroup is one directory of the unified tree. Creating one enables the
//! controllers berth manages in every ancestor's `cgroup.subtree_control`, as runc does.
//!
//! The tree's root is a parameter, so the backend runs against a temporary directory in tests.
//! cgroups-rs hard-codes `/sys/fs/cgroup` for v2, which is why files are handled directly here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use super::cgroupfs::{
    self, file_names, flat_key, read, read_flat_keyed, read_parsed_if_exists, read_u64,
    read_u64_if_exists, write,
};
use super::metrics::{
    CgroupMetrics, HugetlbUsage, Pressure, cpu_weight_to_shares, hugetlb_pagesize, parse_cpu_max,
    parse_io_stat, parse_pids_max, parse_pressure, v2_kernel_memory,
};
use super::resources::{Setting, v2_settings};
use super::stats::{MemoryFigures, V2_MEMORY_STAT, parse_memory_limit, read_memory_limit};
use super::{Cgroup, CgroupError, CgroupResources, CgroupStats};

/// Controllers berth enables for the cgroups it creates, where the root offers them.
const MANAGED: &[&str] = &["cpu", "cpuset", "hugetlb", "io", "memory", "pids"];

/// How long freezing or thawing may take before it is reported as stuck.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// The root of a unified (cgroup2) tree, normally `/sys/fs/cgroup`.
#[derive(Debug)]
pub(crate) struct V2Root {
    root: PathBuf,
}

impl V2Root {
    pub(crate) fn new(root: PathBuf) -> V2Root {
        V2Root { root }
    }

    /// The tree's root directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.root
    }
}

/// A cgroup in the unified tree.
#[derive(Debug)]
pub(crate) struct V2Cgroup {
    path: String,
    dir: PathBuf,
    root: Arc<V2Root>,
}

/// The controllers listed in a `cgroup.controllers` or `cgroup.subtree_control` file.
fn read_controller_list(cgroup: &str, file: &Path) -> Result<Vec<String>, CgroupError> {
    let text = read(cgroup, file)?;
    Ok(text
        .split_whitespace()
        .map(|c| c.trim_start_matches('+').to_string())
        .collect())
}

impl V2Cgroup {
    /// A handle for `path` (already validated); the directory may not exist.
    pub(crate) fn new(root: Arc<V2Root>, path: String) -> V2Cgroup {
        let dir = root.root.join(&path);
        V2Cgroup { path, dir, root }
    }

    /// Whether the cgroup's directory exists.
    pub(crate) fn exists(&self) -> bool {
        self.dir.is_dir()
    }

    /// Creates the cgroup and missing ancestors, enabling the managed controllers on the way.
    pub(crate) fn make_dirs(&self) -> Result<(), CgroupError> {
        let offered = read_controller_list(&self.path, &self.root.root.join("cgroup.controllers"))?;
        let wanted: Vec<&str> = MANAGED
            .iter()
            .copied()
            .filter(|c| offered.iter().any(|o| o == c))
            .collect();
        let mut dir = self.root.root.clone();
        for component in self.path.split('/') {
            self.enable_in_subtree(&dir, &wanted)?;
            dir.push(component);
            cgroupfs::make_dir(&self.path, &dir)?;
        }
        Ok(())
    }

    /// Enables `wanted` controllers for the children of `dir`, writing only the missing ones.
    fn enable_in_subtree(&self, dir: &Path, wanted: &[&str]) -> Result<(), CgroupError> {
        let file = dir.join("cgroup.subtree_control");
        let enabled = read_controller_list(&self.path, &file)?;
        let missing: Vec<String> = wanted
            .iter()
            .filter(|c| !enabled.iter().any(|e| e == *c))
            .map(|c| format!("+{c}"))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        write(&self.path, &file, &missing.join(" "))
    }

    fn write_setting(&self, setting: &Setting, available: &[String]) -> Result<(), CgroupError> {
        let controller = setting.controller.as_str();
        if MANAGED.contains(&controller) && !available.iter().any(|c| c == controller) {
            if controller == "hugetlb" {
                debug!(cgroup = %self.path, file = %setting.file, "no hugetlb controller: hugepage limit not applied");
                return Ok(());
            }
            return Err(CgroupError::missing_controller(
                &self.path,
                controller,
                &setting.file,
            ));
        }
        let file = self.dir.join(&setting.file);
        if setting.file == "memory.swap.max" && !file.exists() {
            warn!(cgroup = %self.path, "kernel has no swap accounting (memory.swap.max): swap limit not applied");
            return Ok(());
        }
        write(&self.path, &file, &setting.value)
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        let value = if frozen { "1" } else { "0" };
        write(&self.path, &self.dir.join("cgroup.freeze"), value)?;
        let events = self.dir.join("cgroup.events");
        let what = format!("cgroup.freeze {value}");
        cgroupfs::poll_until(&self.path, &what, FREEZE_TIMEOUT, || {
            let state = read_flat_keyed(&self.path, &events)?;
            Ok(state.get("frozen").copied() == Some(u64::from(frozen)))
        })
    }

    fn memory_events(&self) -> Result<BTreeMap<String, u64>, CgroupError> {
        read_flat_keyed(&self.path, &self.dir.join("memory.events"))
    }

    fn memory_figures(&self) -> Result<MemoryFigures, CgroupError> {
        let usage = read_u64(&self.path, &self.dir.join("memory.current"))?;
        let stat_file = self.dir.join("memory.stat");
        let stat = read_flat_keyed(&self.path, &stat_file)?;
        MemoryFigures::new(usage, &stat, &V2_MEMORY_STAT)
            .map_err(|r| CgroupError::parse(&self.path, stat_file, r))
    }

    fn cpu_usage_ns(&self) -> Result<u64, CgroupError> {
        let file = self.dir.join("cpu.stat");
        let stat = read_flat_keyed(&self.path, &file)?;
        Ok(flat_key(&self.path, &file, &stat, "usage_usec")?.saturating_mul(1000))
    }

    /// `pids.current` (tasks), or the number of processes without the pids controller.
    fn task_count(&self) -> Result<u64, CgroupError> {
        match cgroupfs::read_u64_if_exists(&self.path, &self.dir.join("pids.current"))? {
            Some(tasks) => Ok(tasks),
            None => Ok(self.procs()?.len() as u64),
        }
    }

    fn subtree_procs(&self) -> Result<Vec<u32>, CgroupError> {
        cgroupfs::subtree_procs(&self.path, &self.dir)
    }
}

impl V2Cgroup {
    /// Memory breakdown and limits.
    fn memory_metrics(&self, m: &mut CgroupMetrics) -> Result<(), CgroupError> {
        let stat = read_flat_keyed(&self.path, &self.dir.join("memory.stat"))?;
        let key = |k: &str| stat.get(k).copied().unwrap_or(0);
        let optional = |file: &str| read_u64_if_exists(&self.path, &self.dir.join(file));
        let limit = |file: &str| {
            read_parsed_if_exists(&self.path, &self.dir.join(file), parse_memory_limit)
                .map(Option::flatten)
        };
        m.memory_cache = key("file");
        m.memory_mapped_file = key("file_mapped");
        m.memory_kernel = v2_kernel_memory(&stat);
        m.memory_swap = optional("memory.swap.current")?.unwrap_or(0);
        m.memory_max_usage = optional("memory.peak")?;
        m.memory_failcnt = self.memory_events()?.get("max").copied().unwrap_or(0);
        m.memory_swap_limit = limit("memory.swap.max")?;
        // memory.low is 0 when unset.
        m.memory_reservation = limit("memory.low")?.filter(|&low| low > 0);
        Ok(())
    }

    /// User/system split, CFS throttling and settings.
    fn cpu_metrics(&self, m: &mut CgroupMetrics) -> Result<(), CgroupError> {
        let stat = read_flat_keyed(&self.path, &self.dir.join("cpu.stat"))?;
        let key = |k: &str| stat.get(k).copied().unwrap_or(0);
        m.cpu_user_ns = key("user_usec").saturating_mul(1000);
        m.cpu_system_ns = key("system_usec").saturating_mul(1000);
        // The nr_* keys appear only with the cpu controller enabled.
        m.cfs_periods = key("nr_periods");
        m.cfs_throttled_periods = key("nr_throttled");
        m.cfs_throttled_ns = key("throttled_usec").saturating_mul(1000);
        if let Some((quota, period)) =
            read_parsed_if_exists(&self.path, &self.dir.join("cpu.max"), parse_cpu_max)?
        {
            (m.cpu_quota_us, m.cpu_period_us) = (quota, Some(period));
        }
        m.cpu_shares =
            read_u64_if_exists(&self.path, &self.dir.join("cpu.weight"))?.map(cpu_weight_to_shares);
        Ok(())
    }

    /// Hugepage usage per page size; v2 keeps no maximum.
    fn hugetlb_metrics(&self, m: &mut CgroupMetrics) -> Result<(), CgroupError> {
        for name in file_names(&self.path, &self.dir)? {
            let Some(size) = hugetlb_pagesize(&name, "current") else {
                continue;
            };
            m.hugetlb.push(HugetlbUsage {
                pagesize: size.to_string(),
                usage: read_u64(&self.path, &self.dir.join(&name))?,
                max_usage: None,
            });
        }
        Ok(())
    }

    /// Pressure stall totals; `None` on kernels without PSI (or booted with `psi=0`).
    fn pressure(&self) -> Result<Option<Pressure>, CgroupError> {
        let totals =
            |file: &str| read_parsed_if_exists(&self.path, &self.dir.join(file), parse_pressure);
        let (Some(cpu), Some(memory), Some(io)) = (
            totals("cpu.pressure")?,
            totals("memory.pressure")?,
            totals("io.pressure")?,
        ) else {
            return Ok(None);
        };
        Ok(Some(Pressure { cpu, memory, io }))
    }
}

impl Cgroup for V2Cgroup {
    fn path(&self) -> &str {
        &self.path
    }

    fn apply(&self, r: &CgroupResources) -> Result<(), CgroupError> {
        let invalid = |reason| CgroupError::InvalidResources {
            cgroup: self.path.clone(),
            reason,
        };
        if let Some(rules) = &r.device_rules {
            let rules = super::v2_devices::parse_rules(rules).map_err(invalid)?;
            super::v2_devices::attach(&self.dir, &rules)
                .map_err(|e| e.into_cgroup_error(&self.path))?;
        }
        let settings = v2_settings(r).map_err(invalid)?;
        if settings.is_empty() {
            return Ok(());
        }
        let available = read_controller_list(&self.path, &self.dir.join("cgroup.controllers"))?;
        settings
            .iter()
            .try_for_each(|s| self.write_setting(s, &available))
    }

    fn add_process(&self, pid: u32) -> Result<(), CgroupError> {
        write(&self.path, &self.dir.join("cgroup.procs"), &pid.to_string())
    }

    fn procs_files(&self) -> Vec<std::path::PathBuf> {
        vec![self.dir.join("cgroup.procs")]
    }

    fn procs(&self) -> Result<Vec<u32>, CgroupError> {
        let mut pids = cgroupfs::read_procs(&self.path, &self.dir)?;
        pids.sort_unstable();
        Ok(pids)
    }

    fn freeze(&self) -> Result<(), CgroupError> {
        let frozen = self.set_frozen(true);
        // Do not leave the cgroup half-frozen.
        if frozen.is_err()
            && let Err(e) = self.set_frozen(false)
        {
            warn!(cgroup = %self.path, error = %e, "thaw after failed freeze");
        }
        frozen
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        self.set_frozen(false)
    }

    /// Uses `cgroup.kill` (Linux 5.14+), which also catches processes forking meanwhile.
    fn kill_all(&self) -> Result<(), CgroupError> {
        let kill_file = self.dir.join("cgroup.kill");
        if kill_file.exists() {
            let round = || write(&self.path, &kill_file, "1");
            return cgroupfs::kill_until_empty(&self.path, || self.subtree_procs(), round);
        }
        let can_freeze = self.dir.join("cgroup.freeze").exists();
        let round = || cgroupfs::freeze_kill_thaw(self, can_freeze, || self.subtree_procs());
        cgroupfs::kill_until_empty(&self.path, || self.subtree_procs(), round)
    }

    fn stats(&self) -> Result<CgroupStats, CgroupError> {
        let memory = self.memory_figures()?;
        Ok(CgroupStats {
            cpu_usage_ns: self.cpu_usage_ns()?,
            memory_usage: memory.usage,
            memory_working_set: memory.working_set,
            memory_rss: memory.rss,
            page_faults: memory.page_faults,
            major_page_faults: memory.major_page_faults,
            pids: self.task_count()?,
            oom_kills: self.memory_events()?.get("oom_kill").copied().unwrap_or(0),
            memory_limit: read_memory_limit(&self.path, &self.dir.join("memory.max"))?,
        })
    }

    fn metrics(&self) -> Result<CgroupMetrics, CgroupError> {
        let mut m = CgroupMetrics {
            stats: self.stats()?,
            ..Default::default()
        };
        self.memory_metrics(&mut m)?;
        self.cpu_metrics(&mut m)?;
        m.block_io = read_parsed_if_exists(&self.path, &self.dir.join("io.stat"), parse_io_stat)?
            .unwrap_or_default();
        self.hugetlb_metrics(&mut m)?;
        m.threads_max =
            read_parsed_if_exists(&self.path, &self.dir.join("pids.max"), parse_pids_max)?
                .flatten();
        m.pressure = self.pressure()?;
        m.processes = self.subtree_procs()?;
        m.processes.sort_unstable();
        Ok(m)
    }

    fn oom_killed(&self) -> Result<bool, CgroupError> {
        Ok(self.memory_events()?.get("oom_kill").copied().unwrap_or(0) > 0)
    }

    fn delete(&self) -> Result<(), CgroupError> {
        cgroupfs::remove_tree(&self.path, &self.dir)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::super::Cgroups;
    use super::*;

    const CONTROLLERS: &str = "cpuset cpu io memory hugetlb pids rdma misc\n";

    /// The interface files the kernel would put in each cgroup of the fake tree.
    const FILES: &[(&str, &str)] = &[
        ("cgroup.controllers", CONTROLLERS),
        ("cgroup.subtree_control", ""),
        ("cgroup.procs", ""),
        ("cgroup.freeze", "0"),
        ("cgroup.events", "populated 0\nfrozen 0\n"),
        ("cpu.weight", "100"),
        ("cpu.max", "max 100000"),
        (
            "cpu.stat",
            "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n",
        ),
        ("cpuset.cpus", ""),
        ("cpuset.mems", ""),
        ("memory.max", "max"),
        ("memory.swap.max", "max"),
        ("memory.current", "8388608"),
        (
            "memory.stat",
            "anon 4194304\nfile 2097152\ninactive_file 1048576\npgfault 70\npgmajfault 1\n",
        ),
        ("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"),
        ("pids.max", "max"),
        ("pids.current", "2"),
        ("hugetlb.2MB.max", "max"),
    ];

    /// A temporary directory standing in for `/sys/fs/cgroup`, with `paths` already populated
    /// the way the kernel populates a new cgroup directory.
    fn fake_v2(paths: &[&str]) -> (tempfile::TempDir, Cgroups) {
        let dir = tempfile::tempdir().expect("tempdir");
        for cgroup in std::iter::once("").chain(paths.iter().copied()) {
            let d = dir.path().join(cgroup);
            fs::create_dir_all(&d).expect("mkdir");
            for (file, content) in FILES {
                fs::write(d.join(file), content).expect("write fake file");
            }
        }
        let cgroups = Cgroups::with_v2_root(dir.path());
        (dir, cgroups)
    }

    fn read_file(path: PathBuf) -> String {
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    #[test]
    fn create_enables_managed_controllers_in_every_ancestor() {
        let (dir, cgroups) = fake_v2(&["kubepods", "kubepods/pod1"]);
        fs::write(dir.path().join("cgroup.subtree_control"), "cpu memory\n").expect("pre-enable");
        cgroups
            .create("kubepods/pod1", &CgroupResources::default())
            .expect("create");
        let subtree = |p: &str| read_file(dir.path().join(p).join("cgroup.subtree_control"));
        assert_eq!(
            subtree(""),
            "+cpuset +hugetlb +io +pids",
            "only the missing ones, no rdma/misc"
        );
        assert_eq!(
            subtree("kubepods"),
            "+cpu +cpuset +hugetlb +io +memory +pids"
        );
        assert_eq!(subtree("kubepods/pod1"), "", "the leaf keeps its processes");
    }

    #[test]
    fn apply_writes_v2_files() {
        let (dir, cgroups) = fake_v2(&["pod1"]);
        let r = CgroupResources {
            cpu_shares: Some(2048),
            cpu_quota: Some(150_000),
            cpuset_mems: Some("0".into()),
            memory_limit: Some(32 << 20),
            memory_swap_limit: Some(48 << 20),
            pids_limit: Some(-1),
            hugepage_limits: vec![("2MB".into(), 0)],
            unified: [("memory.high".to_string(), "max".to_string())].into(),
            ..Default::default()
        };
        fs::write(dir.path().join("pod1/memory.high"), "").expect("memory.high");
        cgroups.create("pod1", &r).expect("create");
        let file = |f: &str| read_file(dir.path().join("pod1").join(f));
        assert_eq!(file("cpu.weight"), "79");
        assert_eq!(file("cpu.max"), "150000 100000");
        assert_eq!(file("cpuset.mems"), "0");
        assert_eq!(file("memory.max"), "33554432");
        assert_eq!(file("memory.swap.max"), "16777216");
        assert_eq!(file("pids.max"), "max");
        assert_eq!(file("hugetlb.2MB.max"), "0");
        assert_eq!(file("memory.high"), "max");
    }

    #[test]
    fn applying_again_changes_only_the_given_limits() {
        let (dir, cgroups) = fake_v2(&["pod1"]);
        let first = CgroupResources {
            cpu_shares: Some(2048),
            cpu_quota: Some(150_000),
            memory_limit: Some(32 << 20),
            ..Default::default()
        };
        let cg = cgroups.create("pod1", &first).expect("create");
        cg.apply(&CgroupResources {
            cpu_quota: Some(-1),
            memory_limit: Some(64 << 20),
            ..Default::default()
        })
        .expect("update");
        let file = |f: &str| read_file(dir.path().join("pod1").join(f));
        assert_eq!(file("cpu.weight"), "79", "kept");
        assert_eq!(file("cpu.max"), "max 100000", "lifted");
        assert_eq!(file("memory.max"), "67108864");
    }

    #[test]
    fn hugepage_limit_is_skipped_without_hugetlb_but_memory_is_required() {
        let (dir, cgroups) = fake_v2(&["pod1"]);
        fs::write(dir.path().join("pod1/cgroup.controllers"), "cpu pids").expect("controllers");
        let hugepages = CgroupResources {
            hugepage_limits: vec![("2MB".into(), 0)],
            ..Default::default()
        };
        cgroups
            .create("pod1", &hugepages)
            .expect("hugepage limits are best effort");
        let memory = CgroupResources {
            memory_limit: Some(1 << 20),
            ..Default::default()
        };
        let cg = cgroups.open("pod1").expect("open").expect("exists");
        let err = cg.apply(&memory).expect_err("memory controller missing");
        assert!(
            matches!(err, CgroupError::MissingController { ref controller, .. } if controller == "memory"),
            "{err}"
        );
    }

    #[test]
    fn failed_apply_removes_a_cgroup_create_made() {
        let (dir, cgroups) = fake_v2(&[]);
        let err = cgroups
            .create(
                "pod1",
                &CgroupResources {
                    memory_limit: Some(1 << 20),
                    ..Default::default()
                },
            )
            .expect_err("the new directory has no interface files");
        assert!(err.to_string().contains("pod1/cgroup.controllers"), "{err}");
        assert!(!dir.path().join("pod1").exists(), "rolled back");
    }

    #[test]
    fn stats_and_oom_read_v2_files() {
        let (dir, cgroups) = fake_v2(&["pod1"]);
        let cg = cgroups.open("pod1").expect("open").expect("exists");
        let stats = cg.stats().expect("stats");
        assert_eq!(
            stats,
            CgroupStats {
                cpu_usage_ns: 2_500_000,
                memory_usage: 8 << 20,
                memory_working_set: 7 << 20,
                memory_rss: 4 << 20,
                page_faults: 70,
                major_page_faults: 1,
                pids: 2,
                oom_kills: 0,
                memory_limit: None,
            }
        );
        assert!(!cg.oom_killed().expect("memory.events"));
        fs::write(dir.path().join("pod1/memory.events"), "oom 1\noom_kill 2\n").expect("events");
        assert!(cg.oom_killed().expect("memory.events"));
        assert_eq!(cg.stats().expect("stats").oom_kills, 2);
        fs::write(dir.path().join("pod1/memory.max"), "33554432\n").expect("memory.max");
        assert_eq!(cg.stats().expect("stats").memory_limit, Some(32 << 20));
    }

    #[test]
    fn metrics_read_v2_files_and_fall_back_where_files_are_missing() {
        let (dir, cgroups) = fake_v2(&["pod1", "pod1/c1"]);
        let put = |file: &str, text: &str| {
            fs::write(dir.path().join(file), text).unwrap_or_else(|e| panic!("{file}: {e}"))
        };
        let cg = cgroups.open("pod1").expect("open").expect("exists");
        let bare = cg.metrics().expect("metrics");
        assert_eq!(bare.stats, cg.stats().expect("stats"));
        assert_eq!((bare.cpu_user_ns, bare.cpu_system_ns), (2_000_000, 500_000));
        assert_eq!(
            bare.cfs_periods, 0,
            "no nr_periods without the cpu controller"
        );
        assert_eq!(
            (bare.cpu_quota_us, bare.cpu_period_us),
            (None, Some(100_000))
        );
        assert_eq!(bare.cpu_shares, Some(2597), "weight 100");
        assert_eq!(bare.memory_cache, 2 << 20, "file");
        assert_eq!((bare.memory_max_usage, bare.memory_swap), (None, 0));
        assert_eq!(
            (bare.memory_swap_limit, bare.memory_reservation),
            (None, None)
        );
        assert_eq!(bare.threads_max, None);
        assert_eq!(bare.pressure, None, "no PSI files");
        assert!(bare.hugetlb.is_empty(), "hugetlb.2MB.max alone is no usage");

        put(
            "pod1/cpu.stat",
            "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_periods 40\n\
             nr_throttled 7\nthrottled_usec 350000\n",
        );
        put("pod1/cpu.max", "20000 100000\n");
        put("pod1/cpu.weight", "39\n");
        put(
            "pod1/memory.stat",
            "anon 4194304\nfile 2097152\nfile_mapped 65536\nkernel 524288\n\
             inactive_file 1048576\npgfault 70\npgmajfault 1\n",
        );
        put("pod1/memory.swap.current", "1048576\n");
        put("pod1/memory.peak", "16777216\n");
        put(
            "pod1/memory.events",
            "low 0\nhigh 0\nmax 3\noom 0\noom_kill 0\n",
        );
        put("pod1/memory.swap.max", "67108864\n");
        put("pod1/memory.low", "33554432\n");
        put("pod1/pids.max", "1024\n");
        put("pod1/hugetlb.2MB.current", "4194304\n");
        put("pod1/hugetlb.2MB.rsvd.current", "0\n");
        put(
            "pod1/io.stat",
            "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
        );
        let psi = "some avg10=0.00 avg60=0.00 avg300=0.00 total=1500\n\
                   full avg10=0.00 avg60=0.00 avg300=0.00 total=500\n";
        for file in ["cpu.pressure", "memory.pressure", "io.pressure"] {
            put(&format!("pod1/{file}"), psi);
        }
        put("pod1/cgroup.procs", "41\n");
        put("pod1/c1/cgroup.procs", "43\n42\n");

        let m = cg.metrics().expect("metrics");
        assert_eq!(
            (m.cfs_periods, m.cfs_throttled_periods, m.cfs_throttled_ns),
            (40, 7, 350_000_000)
        );
        assert_eq!(
            (m.cpu_quota_us, m.cpu_period_us),
            (Some(20_000), Some(100_000))
        );
        assert_eq!(
            m.cpu_shares,
            Some(998),
            "weight 39 (from shares 1024) back to shares"
        );
        assert_eq!(
            (m.memory_mapped_file, m.memory_kernel),
            (64 << 10, 512 << 10)
        );
        assert_eq!(m.memory_swap, 1 << 20);
        assert_eq!(m.memory_max_usage, Some(16 << 20));
        assert_eq!(m.memory_failcnt, 3, "memory.events max");
        assert_eq!(m.memory_swap_limit, Some(64 << 20));
        assert_eq!(m.memory_reservation, Some(32 << 20));
        assert_eq!(m.threads_max, Some(1024));
        assert_eq!(m.hugetlb.len(), 1, "rsvd files are not page sizes");
        assert_eq!(
            (m.hugetlb[0].usage, m.hugetlb[0].max_usage),
            (4 << 20, None)
        );
        assert_eq!(m.block_io[0].bytes["Read"], 4096);
        assert_eq!(m.block_io[0].ios["Write"], 2);
        let pressure = m.pressure.expect("PSI");
        assert_eq!((pressure.io.some_us, pressure.io.full_us), (1500, 500));
        assert_eq!(m.processes, [41, 42, 43]);
    }

    #[test]
    fn freeze_waits_for_cgroup_events() {
        let (dir, cgroups) = fake_v2(&["pod1"]);
        fs::write(
            dir.path().join("pod1/cgroup.events"),
            "populated 1\nfrozen 1\n",
        )
        .expect("events");
        let cg = cgroups.open("pod1").expect("open").expect("exists");
        cg.freeze().expect("freeze");
        assert_eq!(read_file(dir.path().join("pod1/cgroup.freeze")), "1");
    }

    #[test]
    fn missing_cgroup_opens_as_none_and_deletes_and_kills_fine() {
        let (_dir, cgroups) = fake_v2(&[]);
        assert!(cgroups.open("nope").expect("open").is_none());
        let cg = V2Cgroup::new(
            Arc::new(V2Root::new(_dir.path().to_path_buf())),
            "nope".into(),
        );
        cg.kill_all().expect("nothing to kill");
        cg.delete().expect("nothing to delete");
        cg.delete().expect("still nothing to delete");
    }
}
