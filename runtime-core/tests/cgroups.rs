//! Tests against the host's real cgroups (root required; CI runs as root). Each test creates its
//! cgroups under its own parent `berth-test-<pid>-<n>-<nanos>`, which a drop guard kills and
//! removes; the cgroups this test process lives in are never touched.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use runtime_core::cgroups::{
    CGROUP_ROOT, Cgroup, CgroupError, CgroupLayout, CgroupResources, Cgroups,
};

/// The host's cgroups, or `None` (saying why) when this test cannot run here.
fn host(test: &str) -> Option<Cgroups> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped {test}: creating cgroups needs root");
        return None;
    }
    let cgroups = Cgroups::detect().expect("detect host cgroups");
    eprintln!("{test}: host cgroup layout {}", cgroups.layout());
    Some(cgroups)
}

/// A parent cgroup private to one test; dropping it kills what is left in it and removes it.
struct TestParent {
    cgroups: Cgroups,
    name: String,
}

impl TestParent {
    fn new(cgroups: &Cgroups) -> TestParent {
        let name = common::unique_cgroup_name();
        TestParent {
            cgroups: cgroups.clone(),
            name,
        }
    }

    /// The path of `leaf` under this parent.
    fn path(&self, leaf: &str) -> String {
        format!("{}/{leaf}", self.name)
    }

    fn create(&self, leaf: &str, r: &CgroupResources) -> Box<dyn Cgroup> {
        let path = self.path(leaf);
        self.cgroups
            .create(&path, r)
            .unwrap_or_else(|e| panic!("create {path}: {e}"))
    }
}

impl Drop for TestParent {
    fn drop(&mut self) {
        let cleanup = self.cgroups.open(&self.name).and_then(|cg| match cg {
            Some(cg) => cg.kill_all().and_then(|()| cg.delete()),
            None => Ok(()),
        });
        if let Err(e) = cleanup {
            eprintln!("cleanup of test cgroup {}: {e}", self.name);
        }
    }
}

/// A `sh -c` child that waits for a line on stdin before running the rest of its script, so it
/// can be moved into a cgroup first. Dropping it kills it by its PID and reaps it.
struct Gated(Child);

impl Gated {
    fn spawn(script: &str) -> Gated {
        let child = Command::new("sh")
            .args(["-c", &format!("read _ ; {script}")])
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        Gated(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Lets the script run past its `read`.
    fn open_gate(&mut self) {
        let stdin = self.0.stdin.as_mut().expect("piped stdin");
        stdin.write_all(b"go\n").expect("write to child stdin");
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                start.elapsed() < timeout,
                "child {} still running after {timeout:?}",
                self.pid()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gated {
    fn drop(&mut self) {
        // Already exited and reaped is fine: there is nothing left to clean up then.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `cond` until it holds, failing the test after `timeout`.
fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Mount points of the host's cgroup v1 hierarchies by controller, from /proc/self/mountinfo.
fn v1_mounts() -> BTreeMap<String, PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let mut mounts = BTreeMap::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let right: Vec<&str> = right.split_whitespace().collect();
        let mount_point = left.split_whitespace().nth(4);
        if let (["cgroup", _, options], Some(mount_point)) = (right.as_slice(), mount_point) {
            for option in options
                .split(',')
                .filter(|o| !["rw", "ro", "relatime"].contains(o))
            {
                mounts.insert(option.to_string(), PathBuf::from(mount_point));
            }
        }
    }
    mounts
}

/// Every directory the cgroup `path` has on this host.
fn cgroup_dirs(layout: CgroupLayout, path: &str) -> Vec<PathBuf> {
    if layout == CgroupLayout::Unified {
        return vec![Path::new(CGROUP_ROOT).join(path)];
    }
    let mut dirs: Vec<PathBuf> = v1_mounts().values().map(|m| m.join(path)).collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

fn read_v1(mounts: &BTreeMap<String, PathBuf>, controller: &str, path: &str, file: &str) -> String {
    let file = mounts[controller].join(path).join(file);
    let text =
        std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    text.trim().to_string()
}

#[test]
fn create_applies_limits_readable_from_v1_files() {
    let Some(cgroups) = host("create_applies_limits_readable_from_v1_files") else {
        return;
    };
    if cgroups.layout() == CgroupLayout::Unified {
        eprintln!("skipped: the host runs cgroup v2, there are no v1 files to read back");
        return;
    }
    let mounts = v1_mounts();
    let has = |c: &str| {
        let present = mounts.contains_key(c);
        if !present {
            eprintln!("controller {c} is not mounted: its limits are not checked");
        }
        present
    };
    let (cpu, memory, pids, cpuset) = (has("cpu"), has("memory"), has("pids"), has("cpuset"));
    let r = CgroupResources {
        cpu_shares: cpu.then_some(512),
        cpu_quota: cpu.then_some(50_000),
        cpu_period: cpu.then_some(100_000),
        memory_limit: memory.then_some(64 << 20),
        pids_limit: pids.then_some(64),
        cpuset_cpus: cpuset.then(|| "0".to_string()),
        cpuset_mems: cpuset.then(|| "0".to_string()),
        ..Default::default()
    };
    let parent = TestParent::new(&cgroups);
    let cg = parent.create("limits", &r);
    let path = cg.path();
    for dir in cgroup_dirs(cgroups.layout(), path) {
        assert!(dir.is_dir(), "{} was not created", dir.display());
    }
    if cpu {
        assert_eq!(read_v1(&mounts, "cpu", path, "cpu.shares"), "512");
        assert_eq!(read_v1(&mounts, "cpu", path, "cpu.cfs_quota_us"), "50000");
        assert_eq!(read_v1(&mounts, "cpu", path, "cpu.cfs_period_us"), "100000");
    }
    if memory {
        assert_eq!(
            read_v1(&mounts, "memory", path, "memory.limit_in_bytes"),
            "67108864"
        );
    }
    if pids {
        assert_eq!(read_v1(&mounts, "pids", path, "pids.max"), "64");
    }
    if cpuset {
        assert_eq!(read_v1(&mounts, "cpuset", path, "cpuset.cpus"), "0");
        assert_eq!(read_v1(&mounts, "cpuset", path, "cpuset.mems"), "0");
    }
}

#[test]
fn added_process_is_listed_and_counted_in_stats() {
    let Some(cgroups) = host("added_process_is_listed_and_counted_in_stats") else {
        return;
    };
    let parent = TestParent::new(&cgroups);
    let cg = parent.create("busy", &CgroupResources::default());
    let mut child = Gated::spawn("i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; exec sleep 30");
    cg.add_process(child.pid()).expect("add process");
    assert_eq!(cg.procs().expect("procs"), [child.pid()]);
    child.open_gate();
    let mut stats = Default::default();
    wait_for(
        "CPU, memory and page faults charged to the cgroup",
        Duration::from_secs(10),
        || {
            stats = cg.stats().expect("stats");
            stats.cpu_usage_ns > 0 && stats.memory_usage > 0 && stats.page_faults > 0
        },
    );
    eprintln!("stats: {stats:?}");
    assert!(stats.pids >= 1, "{stats:?}");
    assert!(stats.memory_working_set <= stats.memory_usage, "{stats:?}");
    assert_eq!(stats.oom_kills, 0);
}

#[test]
fn kill_all_empties_the_cgroup_and_its_children() {
    let Some(cgroups) = host("kill_all_empties_the_cgroup_and_its_children") else {
        return;
    };
    let parent = TestParent::new(&cgroups);
    let pod = parent.create("pod", &CgroupResources::default());
    // Processes in leaves only: cgroup v2 refuses them in a cgroup with controlled children.
    let init = parent.create("pod/init", &CgroupResources::default());
    let container = parent.create("pod/ctr", &CgroupResources::default());
    let mut forker = Gated::spawn("sleep 30 & sleep 30 & wait");
    let sleeper = Gated::spawn("exec sleep 30");
    init.add_process(forker.pid()).expect("add forker");
    container.add_process(sleeper.pid()).expect("add sleeper");
    forker.open_gate();
    wait_for(
        "sh and its two sleeps in the pod's init cgroup",
        Duration::from_secs(10),
        || init.procs().expect("procs").len() == 3,
    );

    pod.kill_all().expect("kill_all");

    assert!(init.procs().expect("init procs").is_empty());
    assert!(container.procs().expect("container procs").is_empty());
    let sigkill = nix::sys::signal::Signal::SIGKILL as i32;
    assert_eq!(
        forker.wait_exit(Duration::from_secs(5)).signal(),
        Some(sigkill)
    );
}

#[test]
fn delete_removes_the_cgroup_everywhere_and_twice_is_fine() {
    let Some(cgroups) = host("delete_removes_the_cgroup_everywhere_and_twice_is_fine") else {
        return;
    };
    let parent = TestParent::new(&cgroups);
    let cg = parent.create("gone", &CgroupResources::default());
    let dirs = cgroup_dirs(cgroups.layout(), cg.path());
    assert!(
        dirs.iter().all(|d| d.is_dir()),
        "created everywhere: {dirs:?}"
    );

    cg.delete().expect("delete");
    for dir in &dirs {
        assert!(!dir.exists(), "{} still exists", dir.display());
    }
    cg.delete().expect("second delete");
    assert!(cgroups.open(cg.path()).expect("open").is_none());
}

#[test]
fn delete_with_a_live_process_fails_busy() {
    let Some(cgroups) = host("delete_with_a_live_process_fails_busy") else {
        return;
    };
    let parent = TestParent::new(&cgroups);
    let cg = parent.create("busy", &CgroupResources::default());
    let child = Gated::spawn("exec sleep 30");
    cg.add_process(child.pid()).expect("add process");

    let err = cg.delete().expect_err("processes remain");
    eprintln!("{err}");
    assert!(
        matches!(&err, CgroupError::Busy { pids, .. } if pids.contains(&child.pid())),
        "{err}"
    );
    assert!(err.to_string().contains(cg.path()), "{err}");

    cg.kill_all().expect("kill_all");
    cg.delete().expect("delete once empty");
}

#[test]
fn open_of_a_missing_cgroup_is_none() {
    let Some(cgroups) = host("open_of_a_missing_cgroup_is_none") else {
        return;
    };
    let parent = TestParent::new(&cgroups);
    assert!(
        cgroups
            .open(&parent.path("never-created"))
            .expect("open")
            .is_none()
    );
}

#[test]
fn validate_path_rejects_escapes_empty_components_and_slices() {
    assert!(matches!(
        Cgroups::validate_path("../x"),
        Err(CgroupError::InvalidPath { .. })
    ));
    assert!(matches!(
        Cgroups::validate_path("a//b"),
        Err(CgroupError::InvalidPath { .. })
    ));
    let err = Cgroups::validate_path("foo.slice").expect_err("slice");
    assert!(
        err.to_string().contains("cgroup_driver = \"systemd\""),
        "{err}"
    );
    Cgroups::validate_path("/kubepods/besteffort/pod1").expect("cgroupfs path");
}

#[test]
fn failed_create_leaves_no_cgroup_behind() {
    let Some(cgroups) = host("failed_create_leaves_no_cgroup_behind") else {
        return;
    };
    if cgroups.layout() != CgroupLayout::Unified && !v1_mounts().contains_key("cpuset") {
        eprintln!("skipped: no cpuset controller");
        return;
    }
    let parent = TestParent::new(&cgroups);
    let r = CgroupResources {
        cpuset_cpus: Some("9999".into()),
        ..Default::default()
    };
    let err = cgroups
        .create(&parent.path("bad"), &r)
        .expect_err("no CPU 9999");
    eprintln!("{err}");
    assert!(err.to_string().contains("cpuset.cpus"), "{err}");
    assert!(cgroups.open(&parent.path("bad")).expect("open").is_none());
}

#[test]
fn freeze_and_thaw_round_trip() {
    let Some(cgroups) = host("freeze_and_thaw_round_trip") else {
        return;
    };
    let mounts = v1_mounts();
    if cgroups.layout() != CgroupLayout::Unified && !mounts.contains_key("freezer") {
        eprintln!("skipped: no freezer controller");
        return;
    }
    let parent = TestParent::new(&cgroups);
    let cg = parent.create("frozen", &CgroupResources::default());
    let child = Gated::spawn("exec sleep 30");
    cg.add_process(child.pid()).expect("add process");

    cg.freeze().expect("freeze");
    if cgroups.layout() != CgroupLayout::Unified {
        assert_eq!(
            read_v1(&mounts, "freezer", cg.path(), "freezer.state"),
            "FROZEN"
        );
    }
    cg.thaw().expect("thaw");
    if cgroups.layout() != CgroupLayout::Unified {
        assert_eq!(
            read_v1(&mounts, "freezer", cg.path(), "freezer.state"),
            "THAWED"
        );
    }
}

#[test]
fn memory_limit_breach_is_reported_as_oom_kill() {
    let Some(cgroups) = host("memory_limit_breach_is_reported_as_oom_kill") else {
        return;
    };
    if cgroups.layout() != CgroupLayout::Unified && !v1_mounts().contains_key("memory") {
        eprintln!("skipped: no memory controller");
        return;
    }
    let parent = TestParent::new(&cgroups);
    // Memory and memory+swap equal: no swap to escape into, even on a host with swap.
    let limit = 16 << 20;
    let r = CgroupResources {
        memory_limit: Some(limit),
        memory_swap_limit: Some(limit),
        ..Default::default()
    };
    let cg = parent.create("oom", &r);
    assert!(!cg.oom_killed().expect("oom_killed before"));

    // `tail` keeps the last 10 lines; 64 MiB without a newline is one line it must hold whole.
    let mut child = Gated::spawn("head -c 64M /dev/zero | tail > /dev/null");
    cg.add_process(child.pid()).expect("add process");
    child.open_gate();
    let status = child.wait_exit(Duration::from_secs(60));
    eprintln!("allocating child exited with {status}");

    wait_for("oom_killed()", Duration::from_secs(5), || {
        cg.oom_killed().expect("oom_killed")
    });
    assert!(cg.stats().expect("stats").oom_kills >= 1);
}

/// On a hybrid host the cgroup2 mount at `/sys/fs/cgroup/unified` runs the v2 backend against a
/// real kernel. The scratch root offers no controllers to its children, so nothing is enabled
/// anywhere; limits and stats are out of reach, the process lifecycle is not.
#[test]
fn v2_backend_manages_processes_on_the_hybrid_cgroup2_mount() {
    let Some(cgroups) = host("v2_backend_manages_processes_on_the_hybrid_cgroup2_mount") else {
        return;
    };
    if cgroups.layout() != CgroupLayout::Hybrid {
        eprintln!("skipped: no hybrid cgroup2 mount on this host");
        return;
    }
    let unified = Path::new(CGROUP_ROOT).join("unified");
    let parent = TestParent::new(&Cgroups::with_v2_root(&unified));
    std::fs::create_dir(unified.join(&parent.name)).expect("create scratch v2 root");
    let v2 = Cgroups::with_v2_root(unified.join(&parent.name));
    let cg = v2
        .create("pod/ctr", &CgroupResources::default())
        .expect("create v2 cgroup");
    let mut child = Gated::spawn("exec sleep 30");
    cg.add_process(child.pid()).expect("add process");
    assert_eq!(cg.procs().expect("procs"), [child.pid()]);

    cg.freeze().expect("freeze");
    cg.thaw().expect("thaw");
    v2.open("pod")
        .expect("open")
        .expect("pod exists")
        .kill_all()
        .expect("kill_all via cgroup.kill");

    assert!(cg.procs().expect("procs").is_empty());
    let sigkill = nix::sys::signal::Signal::SIGKILL as i32;
    assert_eq!(
        child.wait_exit(Duration::from_secs(5)).signal(),
        Some(sigkill)
    );
    v2.open("pod")
        .expect("open")
        .expect("pod exists")
        .delete()
        .expect("delete");
    assert!(v2.open("pod").expect("open").is_none());
}

#[test]
fn metrics_see_limits_throttling_and_the_processes_of_the_subtree() {
    let Some(cgroups) = host("metrics_see_limits_throttling_and_the_processes_of_the_subtree")
    else {
        return;
    };
    let parent = TestParent::new(&cgroups);
    let limits = CgroupResources {
        cpu_period: Some(100_000),
        cpu_quota: Some(10_000),
        cpu_shares: Some(512),
        memory_limit: Some(64 << 20),
        pids_limit: Some(50),
        ..Default::default()
    };
    let pod = parent.create("pod", &CgroupResources::default());
    let cg = parent.create("pod/busy", &limits);
    let mut child = Gated::spawn("while :; do :; done");
    cg.add_process(child.pid()).expect("add process");
    child.open_gate();
    let mut m = Default::default();
    wait_for(
        "a busy loop under a 10% quota throttled",
        Duration::from_secs(20),
        || {
            m = cg.metrics().expect("metrics");
            // Throttled time is added when a throttled period ends: wait for it too.
            m.cfs_throttled_periods > 0
                && m.cfs_throttled_ns > 0
                && m.cpu_user_ns + m.cpu_system_ns > 0
        },
    );
    eprintln!("metrics: {m:?}");
    assert_eq!(m.cpu_period_us, Some(100_000));
    assert_eq!(m.cpu_quota_us, Some(10_000));
    let shares = m.cpu_shares.expect("shares");
    assert!(
        (486..=512).contains(&shares),
        "{shares} (v2 weight rounds down)"
    );
    assert_eq!(m.stats.memory_limit, Some(64 << 20));
    assert_eq!(m.threads_max, Some(50));
    assert!(m.cfs_periods >= m.cfs_throttled_periods);
    assert!(m.cfs_throttled_ns > 0);
    assert!(
        m.cpu_user_ns + m.cpu_system_ns <= m.stats.cpu_usage_ns + 50_000_000,
        "tick-sampled split"
    );
    assert!(m.memory_cache <= m.stats.memory_usage);
    if let Some(peak) = m.memory_max_usage {
        assert!(
            peak >= m.stats.memory_usage,
            "{peak} < {}",
            m.stats.memory_usage
        );
    }
    assert_eq!(m.processes, [child.pid()]);
    // The pod sees its container's process, beneath it.
    let pod_metrics = pod.metrics().expect("pod metrics");
    assert_eq!(pod_metrics.processes, [child.pid()]);
    assert!(pod_metrics.stats.cpu_usage_ns >= m.stats.cpu_usage_ns);
    if cgroups.layout() == CgroupLayout::Unified {
        assert!(m.pressure.is_some(), "PSI on a v2 kernel");
    }
}

#[test]
fn an_empty_cgroup_parent_means_the_drivers_default() {
    // kubelet and critest leave cgroup_parent empty for pods outside kubepods.
    let Some(cgroups) = host("an_empty_cgroup_parent_means_the_drivers_default") else {
        return;
    };
    cgroups.validate_parent("").expect("empty parent");
    assert_eq!(
        cgroups.pod_path("", "0123456789abcdef").expect("pod path"),
        "berth/berth-0123456789ab"
    );
    assert!(cgroups.validate_parent("/").is_err(), "the root cgroup");
    assert!(cgroups.validate_parent("a/../b").is_err());
}
