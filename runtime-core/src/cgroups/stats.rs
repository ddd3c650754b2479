//! Usage figures of a cgroup and the parsing of the files they come from.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::CgroupError;
use super::cgroupfs::read;

/// Usage of one cgroup, as CRI `ContainerStats`/`PodSandboxStats` and the metrics report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CgroupStats {
    /// Total CPU time consumed, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory in use, page cache included, in bytes.
    pub memory_usage: u64,
    /// `memory_usage` minus inactive file pages: what kubelet evicts on.
    pub memory_working_set: u64,
    /// Anonymous memory (v1 `total_rss`, v2 `anon`), in bytes.
    pub memory_rss: u64,
    /// Page faults since the cgroup was created.
    pub page_faults: u64,
    /// Major page faults since the cgroup was created.
    pub major_page_faults: u64,
    /// Tasks (threads) in the cgroup; processes where there is no pids controller.
    pub pids: u64,
    /// Processes the OOM killer killed in the cgroup.
    pub oom_kills: u64,
    /// The memory limit in bytes (v1 `memory.limit_in_bytes`, v2 `memory.max`); `None` when
    /// unlimited, so callers report `available_bytes` only for limited cgroups.
    pub memory_limit: Option<u64>,
}

/// Limits above this are "unlimited": the kernel rounds v1's unlimited value (`i64::MAX`) down
/// to a page multiple (cAdvisor and containerd use the same threshold).
const UNLIMITED_MEMORY: u64 = 1 << 62;

/// Reads a memory limit file (v1 `memory.limit_in_bytes`, v2 `memory.max`).
pub(crate) fn read_memory_limit(cgroup: &str, file: &Path) -> Result<Option<u64>, CgroupError> {
    parse_memory_limit(&read(cgroup, file)?)
        .map_err(|reason| CgroupError::parse(cgroup, file.to_path_buf(), reason))
}

/// Parses a memory limit file (`max`, or bytes); `None` for no limit.
pub(crate) fn parse_memory_limit(text: &str) -> Result<Option<u64>, String> {
    let text = text.trim();
    if text == "max" {
        return Ok(None);
    }
    let bytes: u64 = text.parse().map_err(|e| format!("{text:?}: {e}"))?;
    Ok((bytes < UNLIMITED_MEMORY).then_some(bytes))
}

/// The memory figures of [`CgroupStats`], from the usage and the `memory.stat` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemoryFigures {
    pub usage: u64,
    pub working_set: u64,
    pub rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
}

/// Which `memory.stat` keys hold the figures: v1 reports hierarchical `total_*` keys.
pub(crate) struct MemoryStatKeys {
    pub inactive_file: &'static str,
    pub rss: &'static str,
    pub page_faults: &'static str,
    pub major_page_faults: &'static str,
}

/// cgroup v1 `memory.stat` keys (hierarchical totals).
pub(crate) const V1_MEMORY_STAT: MemoryStatKeys = MemoryStatKeys {
    inactive_file: "total_inactive_file",
    rss: "total_rss",
    page_faults: "total_pgfault",
    major_page_faults: "total_pgmajfault",
};

/// cgroup v2 `memory.stat` keys.
pub(crate) const V2_MEMORY_STAT: MemoryStatKeys = MemoryStatKeys {
    inactive_file: "inactive_file",
    rss: "anon",
    page_faults: "pgfault",
    major_page_faults: "pgmajfault",
};

impl MemoryFigures {
    /// Combines `usage` with the parsed `memory.stat`; a missing key is an error naming it.
    pub(crate) fn new(
        usage: u64,
        stat: &BTreeMap<String, u64>,
        keys: &MemoryStatKeys,
    ) -> Result<MemoryFigures, String> {
        let get = |key: &str| {
            stat.get(key)
                .copied()
                .ok_or_else(|| format!("no {key} line"))
        };
        Ok(MemoryFigures {
            usage,
            working_set: usage.saturating_sub(get(keys.inactive_file)?),
            rss: get(keys.rss)?,
            page_faults: get(keys.page_faults)?,
            major_page_faults: get(keys.major_page_faults)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::cgroupfs::parse_flat_keyed;

    const V1_STAT: &str = "cache 9588736\nrss 4964352\ninactive_file 16384\npgfault 29239\n\
        total_cache 3527823360\ntotal_rss 12980224\ntotal_pgfault 41578034\n\
        total_pgmajfault 6937\ntotal_inactive_file 2307960832\n\
        hierarchical_memory_limit 9223372036854771712\n";

    const V2_STAT: &str = "anon 1531904\nfile 434176\ninactive_file 16384\nactive_file 417792\n\
        pgfault 29239\npgmajfault 3\n";

    #[test]
    fn v1_memory_stat_uses_hierarchical_totals() {
        let stat = parse_flat_keyed(V1_STAT).expect("parse");
        let m = MemoryFigures::new(3_000_000_000, &stat, &V1_MEMORY_STAT).expect("figures");
        assert_eq!(m.working_set, 3_000_000_000 - 2_307_960_832);
        assert_eq!(m.rss, 12_980_224);
        assert_eq!(m.page_faults, 41_578_034);
        assert_eq!(m.major_page_faults, 6937);
    }

    #[test]
    fn v2_memory_stat_uses_anon_and_inactive_file() {
        let stat = parse_flat_keyed(V2_STAT).expect("parse");
        let m = MemoryFigures::new(2_000_000, &stat, &V2_MEMORY_STAT).expect("figures");
        assert_eq!(m.usage, 2_000_000);
        assert_eq!(m.working_set, 2_000_000 - 16384);
        assert_eq!(m.rss, 1_531_904);
        assert_eq!((m.page_faults, m.major_page_faults), (29239, 3));
    }

    #[test]
    fn working_set_never_underflows() {
        let stat = parse_flat_keyed(V2_STAT).expect("parse");
        let m = MemoryFigures::new(1000, &stat, &V2_MEMORY_STAT).expect("figures");
        assert_eq!(m.working_set, 0);
    }

    #[test]
    fn missing_stat_key_is_named() {
        let stat = parse_flat_keyed("anon 1\n").expect("parse");
        let err = MemoryFigures::new(1, &stat, &V2_MEMORY_STAT).expect_err("incomplete");
        assert!(err.contains("inactive_file"), "{err}");
    }

    #[test]
    fn cpu_stat_and_memory_events_parse_as_flat_keyed() {
        let cpu = parse_flat_keyed("usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n")
            .expect("cpu.stat");
        assert_eq!(cpu["usage_usec"], 1234);
        let events =
            parse_flat_keyed("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n")
                .expect("memory.events");
        assert_eq!(events["oom_kill"], 1);
    }

    #[test]
    fn memory_limits_parse_with_unlimited_as_none() {
        assert_eq!(parse_memory_limit("max\n"), Ok(None));
        assert_eq!(parse_memory_limit("9223372036854771712\n"), Ok(None));
        assert_eq!(parse_memory_limit("67108864\n"), Ok(Some(64 << 20)));
        assert!(parse_memory_limit("lots").is_err());
    }

    #[test]
    fn malformed_flat_keyed_lines_are_rejected() {
        assert!(parse_flat_keyed("usage_usec\n").is_err());
        assert!(parse_flat_keyed("usage_usec -3\n").is_err());
        assert!(parse_flat_keyed("a 1 2\n").is_err());
    }
}
