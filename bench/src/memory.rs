//! A runtime's memory as the kernel accounts it: RSS and PSS (`/proc/<pid>/smaps_rollup`) of
//! the daemon and of its helper processes (shims, monitors, sandbox holders), never of the
//! containers' own workloads.
//!
//! Which processes belong to the runtime:
//! - the daemon (the process that listens on the CRI socket, or a PID given by the user);
//! - its descendants (helpers it keeps as children), down to any workload below them;
//! - helpers that detached from the daemon (reparented shims): processes whose command line
//!   matches the *helper* pattern, wherever they are in the tree;
//! - below a helper, children matching the helper or the *sandbox* pattern (e.g. containerd's
//!   `pause` process, which holds the pod's namespaces); every other child of a helper is a
//!   container workload and is left out with everything below it.
//!
//! The /proc root is a parameter so the accounting is tested on synthetic trees.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::{Deserialize, Serialize};

/// One process from `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    /// The kernel's short name (`/proc/<pid>/comm`, from `stat`).
    pub comm: String,
    /// Arguments joined by spaces (`/proc/<pid>/cmdline`).
    pub cmdline: String,
}

/// A snapshot of the processes under a /proc root.
#[derive(Debug, Clone)]
pub struct ProcessTable {
    root: PathBuf,
    procs: BTreeMap<u32, Process>,
    children: HashMap<u32, Vec<u32>>,
}

impl ProcessTable {
    /// Reads every `<root>/<pid>/` (processes that exit meanwhile are skipped).
    pub fn read(root: &Path) -> io::Result<ProcessTable> {
        let entries = std::fs::read_dir(root)
            .map_err(|e| io::Error::new(e.kind(), format!("read {}: {e}", root.display())))?;
        let mut procs = BTreeMap::new();
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(p) = read_process(&entry.path(), pid) {
                procs.insert(pid, p);
            }
        }
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for p in procs.values() {
            children.entry(p.ppid).or_default().push(p.pid);
        }
        Ok(ProcessTable {
            root: root.to_path_buf(),
            procs,
            children,
        })
    }

    /// The process with `pid`, if it was running.
    pub fn get(&self, pid: u32) -> Option<&Process> {
        self.procs.get(&pid)
    }

    /// PIDs of the direct children of `pid`.
    pub fn children(&self, pid: u32) -> &[u32] {
        self.children.get(&pid).map_or(&[], Vec::as_slice)
    }

    /// The /proc root this table was read from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn iter(&self) -> impl Iterator<Item = &Process> {
        self.procs.values()
    }
}

fn read_process(dir: &Path, pid: u32) -> Option<Process> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let (comm, ppid) = parse_stat(&stat)?;
    let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
    let cmdline = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    Some(Process {
        pid,
        ppid,
        comm,
        cmdline,
    })
}

/// `(comm, ppid)` from a `/proc/<pid>/stat` line; comm may hold spaces and parentheses.
fn parse_stat(stat: &str) -> Option<(String, u32)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, ppid))
}

/// RSS and PSS of a process or a group, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub rss_kib: u64,
    pub pss_kib: u64,
}

impl std::ops::Add for Usage {
    type Output = Usage;
    fn add(self, o: Usage) -> Usage {
        Usage {
            rss_kib: self.rss_kib + o.rss_kib,
            pss_kib: self.pss_kib + o.pss_kib,
        }
    }
}

impl Usage {
    /// RSS in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }

    /// PSS in MiB.
    pub fn pss_mib(&self) -> f64 {
        self.pss_kib as f64 / 1024.0
    }
}

/// RSS and PSS of `pid` from `<root>/<pid>/smaps_rollup`; `None` if it is gone or unreadable.
pub fn usage(root: &Path, pid: u32) -> Option<Usage> {
    let text = std::fs::read_to_string(root.join(pid.to_string()).join("smaps_rollup")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(Usage {
        rss_kib: field("Rss:")?,
        pss_kib: field("Pss:")?,
    })
}

/// How a runtime's helper processes are recognized (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct HelperRules {
    /// Detached helpers, matched anywhere against the command line (e.g. `berth-shim` or
    /// `containerd-shim-runc-v2 .* -address /run/x/containerd.sock`).
    pub helper: Option<Regex>,
    /// Runtime-owned children of a helper that are not workloads (e.g. `^/pause$`).
    pub sandbox: Option<Regex>,
}

/// Why a process counts as the runtime's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Daemon,
    DaemonChild,
    Helper,
    Sandbox,
}

/// One of the runtime's processes and its memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub pid: u32,
    pub comm: String,
    pub role: Role,
    pub usage: Usage,
}

/// The memory of a runtime at one moment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RuntimeMemory {
    pub members: Vec<Member>,
}

impl RuntimeMemory {
    /// Reads the process table under `root` and the memory of `daemon`'s processes.
    pub fn measure(root: &Path, daemon: u32, rules: &HelperRules) -> io::Result<RuntimeMemory> {
        let table = ProcessTable::read(root)?;
        let members = runtime_processes(&table, daemon, rules)
            .into_iter()
            .filter_map(|(pid, role)| {
                let usage = usage(root, pid)?;
                let comm = table.get(pid)?.comm.clone();
                Some(Member {
                    pid,
                    comm,
                    role,
                    usage,
                })
            })
            .collect();
        Ok(RuntimeMemory { members })
    }

    /// The daemon's own memory (zero if it was not found).
    pub fn daemon(&self) -> Usage {
        self.sum(|m| m.role == Role::Daemon)
    }

    /// Everything but the daemon: helpers, sandbox holders and the daemon's children.
    pub fn helpers(&self) -> Usage {
        self.sum(|m| m.role != Role::Daemon)
    }

    /// Number of helper processes (everything but the daemon).
    pub fn helper_count(&self) -> usize {
        self.members
            .iter()
            .filter(|m| m.role != Role::Daemon)
            .count()
    }

    /// Helpers grouped by command name: `(count, total usage)`.
    pub fn helpers_by_command(&self) -> BTreeMap<String, (usize, Usage)> {
        let mut out: BTreeMap<String, (usize, Usage)> = BTreeMap::new();
        for m in self.members.iter().filter(|m| m.role != Role::Daemon) {
            let e = out.entry(m.comm.clone()).or_default();
            e.0 += 1;
            e.1 = e.1 + m.usage;
        }
        out
    }

    fn sum(&self, keep: impl Fn(&Member) -> bool) -> Usage {
        self.members
            .iter()
            .filter(|m| keep(m))
            .fold(Usage::default(), |a, m| a + m.usage)
    }
}

/// The runtime's processes in `table` with their roles, by the rules in the module docs.
pub fn runtime_processes(
    table: &ProcessTable,
    daemon: u32,
    rules: &HelperRules,
) -> BTreeMap<u32, Role> {
    let mut found = BTreeMap::new();
    let is_helper = |p: &Process| {
        rules
            .helper
            .as_ref()
            .is_some_and(|r| r.is_match(&p.cmdline))
    };
    if table.get(daemon).is_some() {
        found.insert(daemon, Role::Daemon);
        // The daemon's own children, down to (not into) helpers, which are walked below.
        let mut stack: Vec<u32> = table.children(daemon).to_vec();
        while let Some(pid) = stack.pop() {
            let Some(p) = table.get(pid) else { continue };
            if is_helper(p) {
                continue;
            }
            found.insert(pid, Role::DaemonChild);
            stack.extend_from_slice(table.children(pid));
        }
    }
    // Detached helpers anywhere, then their runtime-owned children; workloads are not walked.
    let mut stack: Vec<(u32, Role)> = table
        .iter()
        .filter(|p| p.pid != daemon && is_helper(p))
        .map(|p| (p.pid, Role::Helper))
        .collect();
    let mut walked = HashSet::new();
    while let Some((pid, role)) = stack.pop() {
        if !walked.insert(pid) {
            continue;
        }
        found.insert(pid, role);
        for &child in table.children(pid) {
            let Some(c) = table.get(child) else { continue };
            if is_helper(c) {
                stack.push((child, Role::Helper));
            } else if rules
                .sandbox
                .as_ref()
                .is_some_and(|r| r.is_match(&c.cmdline))
            {
                stack.push((child, Role::Sandbox));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(pid, ppid, comm, argv, rss KiB, pss KiB)`.
    type FakeProcess<'a> = (u32, u32, &'a str, &'a [&'a str], u64, u64);

    /// A fake /proc with one directory per process.
    fn fake_proc(procs: &[FakeProcess<'_>]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (pid, ppid, comm, argv, rss, pss) in procs {
            let dir = root.path().join(pid.to_string());
            std::fs::create_dir_all(dir.join("fd")).unwrap();
            std::fs::write(
                dir.join("stat"),
                format!("{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 0 0"),
            )
            .unwrap();
            let mut cmdline = argv.join("\0");
            cmdline.push('\0');
            std::fs::write(dir.join("cmdline"), cmdline).unwrap();
            std::fs::write(
                dir.join("smaps_rollup"),
                format!(
                    "00400000-7ffd0000 ---p 00000000 00:00 0   [rollup]\nRss:  {rss} kB\nPss:  {pss} kB\nPss_Anon: 1 kB\n"
                ),
            )
            .unwrap();
        }
        root
    }

    fn rules(helper: &str, sandbox: Option<&str>) -> HelperRules {
        HelperRules {
            helper: Some(Regex::new(helper).unwrap()),
            sandbox: sandbox.map(|s| Regex::new(s).unwrap()),
        }
    }

    /// berthd (100) with a transient child; two detached shims (reparented to 1) each running
    /// a workload with a child of its own; another daemon's shim and an unrelated process.
    fn berth_like() -> tempfile::TempDir {
        fake_proc(&[
            (1, 0, "init", &["/sbin/init"], 1000, 500),
            (
                100,
                1,
                "berthd",
                &["/usr/bin/berthd", "--socket", "/b/berth.sock"],
                10240,
                9000,
            ),
            (101, 100, "nft", &["nft", "-f", "-"], 300, 200),
            (
                200,
                1,
                "berth-shim",
                &["/usr/bin/berth-shim", "/b/state/pods/p1/shim.spec"],
                1100,
                160,
            ),
            (201, 200, "sleep", &["sleep", "3600"], 900, 400),
            (202, 201, "sh", &["sh"], 800, 300),
            (
                300,
                1,
                "berth-shim",
                &["/usr/bin/berth-shim", "/b/state/pods/p2/shim.spec"],
                1200,
                180,
            ),
            (301, 300, "sleep", &["sleep", "3600"], 900, 400),
            (
                400,
                1,
                "berth-shim",
                &["/usr/bin/berth-shim", "/other/state/pods/x/shim.spec"],
                1100,
                160,
            ),
            (500, 1, "bash", &["bash"], 4000, 3000),
        ])
    }

    #[test]
    fn counts_daemon_its_children_and_matching_detached_helpers_only() {
        let root = berth_like();
        let m = RuntimeMemory::measure(root.path(), 100, &rules(r"^\S*berth-shim /b/state/", None))
            .unwrap();
        let pids: Vec<(u32, Role)> = m.members.iter().map(|m| (m.pid, m.role)).collect();
        assert_eq!(
            pids,
            vec![
                (100, Role::Daemon),
                (101, Role::DaemonChild),
                (200, Role::Helper),
                (300, Role::Helper)
            ]
        );
        assert_eq!(
            m.daemon(),
            Usage {
                rss_kib: 10240,
                pss_kib: 9000
            }
        );
        assert_eq!(
            m.helpers(),
            Usage {
                rss_kib: 300 + 1100 + 1200,
                pss_kib: 200 + 160 + 180
            }
        );
        assert_eq!(m.helper_count(), 3);
        let by_cmd = m.helpers_by_command();
        assert_eq!(
            by_cmd["berth-shim"],
            (
                2,
                Usage {
                    rss_kib: 2300,
                    pss_kib: 340
                }
            )
        );
        assert_eq!(by_cmd["nft"].0, 1);
    }

    #[test]
    fn workloads_under_helpers_are_excluded_but_sandbox_holders_count() {
        // containerd (10) and its shim (20, reparented) holding pause (21) and a workload (22)
        // whose own child (23) looks like a pause but is the workload's.
        let root = fake_proc(&[
            (1, 0, "init", &["/sbin/init"], 1000, 500),
            (
                10,
                1,
                "containerd",
                &["containerd", "--config", "/c/config.toml"],
                40000,
                38000,
            ),
            (
                20,
                1,
                "containerd-shim",
                &[
                    "/usr/bin/containerd-shim-runc-v2",
                    "-namespace",
                    "k8s.io",
                    "-id",
                    "abc",
                    "-address",
                    "/c/containerd.sock",
                ],
                12000,
                5000,
            ),
            (21, 20, "pause", &["/pause"], 300, 100),
            (22, 20, "sleep", &["sleep", "3600"], 900, 400),
            (23, 22, "pause", &["/pause"], 300, 100),
        ]);
        let m = RuntimeMemory::measure(
            root.path(),
            10,
            &rules(
                r"^\S*containerd-shim-runc-v2 .*-address /c/containerd\.sock",
                Some(r"^/pause$"),
            ),
        )
        .unwrap();
        let pids: Vec<(u32, Role)> = m.members.iter().map(|m| (m.pid, m.role)).collect();
        assert_eq!(
            pids,
            vec![(10, Role::Daemon), (20, Role::Helper), (21, Role::Sandbox)]
        );
        assert_eq!(
            m.helpers(),
            Usage {
                rss_kib: 12300,
                pss_kib: 5100
            }
        );
    }

    #[test]
    fn without_a_helper_pattern_only_the_daemon_tree_counts() {
        let root = berth_like();
        let m = RuntimeMemory::measure(root.path(), 100, &HelperRules::default()).unwrap();
        let pids: Vec<u32> = m.members.iter().map(|m| m.pid).collect();
        assert_eq!(pids, vec![100, 101]);
    }

    #[test]
    fn a_helper_below_the_daemon_counts_once_as_helper_and_its_workload_not_at_all() {
        let root = fake_proc(&[
            (100, 1, "crio", &["crio"], 30000, 28000),
            (
                110,
                100,
                "conmon",
                &["/usr/bin/conmon", "-c", "x"],
                1500,
                600,
            ),
            (111, 110, "sleep", &["sleep", "3600"], 900, 400),
        ]);
        let m =
            RuntimeMemory::measure(root.path(), 100, &rules("^/usr/bin/conmon ", None)).unwrap();
        let pids: Vec<(u32, Role)> = m.members.iter().map(|m| (m.pid, m.role)).collect();
        assert_eq!(pids, vec![(100, Role::Daemon), (110, Role::Helper)]);
    }

    #[test]
    fn a_process_that_vanished_is_skipped() {
        let root = berth_like();
        std::fs::remove_file(root.path().join("300/smaps_rollup")).unwrap();
        let m = RuntimeMemory::measure(root.path(), 100, &rules("berth-shim /b/", None)).unwrap();
        assert!(m.members.iter().all(|m| m.pid != 300));
        assert_eq!(m.helper_count(), 2);
    }

    #[test]
    fn a_missing_daemon_still_counts_helpers() {
        let root = berth_like();
        let m = RuntimeMemory::measure(root.path(), 999, &rules("berth-shim /b/", None)).unwrap();
        assert_eq!(m.daemon(), Usage::default());
        assert_eq!(m.helper_count(), 2);
    }

    #[test]
    fn stat_with_spaces_and_parens_in_comm_parses() {
        assert_eq!(
            parse_stat("42 (my (odd) name) S 7 42 42 0"),
            Some(("my (odd) name".to_string(), 7))
        );
        assert_eq!(parse_stat("garbage"), None);
    }
}
