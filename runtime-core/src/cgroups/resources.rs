//! Resource limits and their translation into cgroup v1 and v2 file writes (pure functions).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Resource limits for one cgroup. Numbers follow CRI/OCI: `None` or `0` leaves the current value
/// untouched, a negative number (CRI uses `-1`) removes the limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CgroupResources {
    /// Relative CPU weight (v1 `cpu.shares`, 2..=262144; converted to v2 `cpu.weight`).
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds per period.
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds (v2 default 100000 when only a quota is given).
    pub cpu_period: Option<u64>,
    /// CPUs the processes may run on, e.g. `"0-1"`; empty leaves it untouched.
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the processes may use, e.g. `"0"`; empty leaves it untouched.
    pub cpuset_mems: Option<String>,
    /// Memory limit in bytes.
    pub memory_limit: Option<i64>,
    /// Memory plus swap limit in bytes (v1 semantics; v2 gets the difference).
    pub memory_swap_limit: Option<i64>,
    /// Maximum number of tasks.
    pub pids_limit: Option<i64>,
    /// Hugepage limits in bytes per page size such as `"2MB"`; skipped (with a warning) where no
    /// hugetlb controller is available, since kubelet always sends them.
    pub hugepage_limits: Vec<(String, u64)>,
    /// Raw cgroup v2 files and values (CRI `unified`), written last; ignored on v1.
    pub unified: BTreeMap<String, String>,
    /// Device access rules (`"c 1:3 rwm"`, `"b *:* m"`, `"a"` for all): when set, everything
    /// else is denied (v1 `devices.deny`/`devices.allow`; v2 an attached eBPF device filter).
    pub device_rules: Option<Vec<String>>,
}

impl CgroupResources {
    /// Checks what `apply` would refuse before touching any file, on either cgroup version
    /// (hugepage sizes, `unified` keys, a memory+swap limit below the memory limit): so an
    /// update can be refused whole instead of half-applied.
    pub fn check(&self) -> Result<(), String> {
        v1_settings(self)?;
        v2_settings(self).map(drop)
    }
}

/// The v2 period written with a quota when no period is given (the kernel's default).
pub(crate) const DEFAULT_CPU_PERIOD: u64 = 100_000;

/// A numeric limit after the CRI conventions: unchanged, unlimited, or a positive value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    Unchanged,
    Unlimited,
    Value(u64),
}

impl Limit {
    /// `None`/`0` → unchanged, negative → unlimited, positive → the value.
    pub(crate) fn from_cri(v: Option<i64>) -> Limit {
        match v {
            None | Some(0) => Limit::Unchanged,
            Some(n) if n < 0 => Limit::Unlimited,
            Some(n) => Limit::Value(n.unsigned_abs()),
        }
    }

    /// The value as written to v1 files (`-1` for unlimited); `None` if unchanged.
    fn v1(self) -> Option<String> {
        match self {
            Limit::Unchanged => None,
            Limit::Unlimited => Some("-1".into()),
            Limit::Value(n) => Some(n.to_string()),
        }
    }

    /// The value as written to v2 files (`max` for unlimited); `None` if unchanged.
    fn v2(self) -> Option<String> {
        match self {
            Limit::Unchanged => None,
            Limit::Unlimited => Some("max".into()),
            Limit::Value(n) => Some(n.to_string()),
        }
    }
}

/// One value for one interface file, and the controller that file belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Setting {
    pub controller: String,
    pub file: String,
    pub value: String,
}

impl Setting {
    fn new(controller: &str, file: impl Into<String>, value: impl Into<String>) -> Setting {
        let (controller, file, value) = (controller.to_string(), file.into(), value.into());
        Setting {
            controller,
            file,
            value,
        }
    }
}

/// CPU shares to v2 `cpu.weight`, the formula kubelet and runc use (shares clamped to 2..=262144).
pub(crate) fn cpu_shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// The v2 `cpu.max` line for a quota and period, or `None` if neither is set.
pub(crate) fn cpu_max(quota: Limit, period: Option<u64>) -> Option<String> {
    let period = period.filter(|&p| p != 0);
    if quota == Limit::Unchanged && period.is_none() {
        return None;
    }
    let quota = match quota {
        Limit::Value(q) => q.to_string(),
        Limit::Unchanged | Limit::Unlimited => "max".to_string(),
    };
    Some(format!("{quota} {}", period.unwrap_or(DEFAULT_CPU_PERIOD)))
}

/// The v2 `memory.swap.max` limit: swap is v1's memory+swap minus memory (runc's conversion).
pub(crate) fn swap_v2(memory: Limit, swap: Limit) -> Result<Limit, String> {
    match (memory, swap) {
        // Unlimited memory with swap unspecified means unlimited swap too, as on v1.
        (Limit::Unlimited, Limit::Unchanged) => Ok(Limit::Unlimited),
        (_, Limit::Unchanged | Limit::Unlimited) => Ok(swap),
        (Limit::Unchanged | Limit::Unlimited, Limit::Value(_)) => {
            Err("a memory+swap limit needs a memory limit".to_string())
        }
        (Limit::Value(m), Limit::Value(s)) if s < m => Err(format!(
            "memory+swap limit {s} is below the memory limit {m}"
        )),
        (Limit::Value(m), Limit::Value(s)) => Ok(Limit::Value(s - m)),
    }
}

fn check_hugepage_size(size: &str) -> Result<(), String> {
    if size.is_empty() || !size.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!("hugepage size {size:?} is not like \"2MB\""));
    }
    Ok(())
}

/// Keys of `unified` must be plain interface file names, and not the ones that move or kill
/// processes or change the tree.
fn check_unified_key(key: &str) -> Result<(), String> {
    let plain = !key.is_empty()
        && key.contains('.')
        && !key.starts_with('.')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    let core = key.starts_with("cgroup.") && !key.starts_with("cgroup.max.");
    if !plain || core {
        return Err(format!(
            "unified key {key:?} is not a settable cgroup v2 file"
        ));
    }
    Ok(())
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// The v1 writes for everything but memory and swap (see [`v1_memory_settings`]).
pub(crate) fn v1_settings(r: &CgroupResources) -> Result<Vec<Setting>, String> {
    let mut out = Vec::new();
    if let Some(shares) = r.cpu_shares.filter(|&s| s != 0) {
        out.push(Setting::new("cpu", "cpu.shares", shares.to_string()));
    }
    if let Some(period) = r.cpu_period.filter(|&p| p != 0) {
        out.push(Setting::new("cpu", "cpu.cfs_period_us", period.to_string()));
    }
    if let Some(quota) = Limit::from_cri(r.cpu_quota).v1() {
        out.push(Setting::new("cpu", "cpu.cfs_quota_us", quota));
    }
    if let Some(cpus) = non_empty(&r.cpuset_cpus) {
        out.push(Setting::new("cpuset", "cpuset.cpus", cpus));
    }
    if let Some(mems) = non_empty(&r.cpuset_mems) {
        out.push(Setting::new("cpuset", "cpuset.mems", mems));
    }
    if let Some(pids) = Limit::from_cri(r.pids_limit).v2() {
        out.push(Setting::new("pids", "pids.max", pids));
    }
    for (size, limit) in &r.hugepage_limits {
        check_hugepage_size(size)?;
        let file = format!("hugetlb.{size}.limit_in_bytes");
        out.push(Setting::new("hugetlb", file, limit.to_string()));
    }
    Ok(out)
}

/// v1 file names of the memory and memory+swap limits.
pub(crate) const V1_MEMORY_LIMIT: &str = "memory.limit_in_bytes";
pub(crate) const V1_MEMSW_LIMIT: &str = "memory.memsw.limit_in_bytes";

/// The v1 memory writes, ordered so the kernel's `memory <= memory+swap` check holds at every
/// step (runc's order). `current_limit` is today's `memory.limit_in_bytes`, needed only when both
/// limits change; swap is left out when the kernel has no swap accounting (`has_memsw`).
pub(crate) fn v1_memory_settings(
    memory: Limit,
    swap: Limit,
    current_limit: Option<u64>,
    has_memsw: bool,
) -> Vec<Setting> {
    let swap = match (memory, swap) {
        _ if !has_memsw => Limit::Unchanged,
        (Limit::Unlimited, Limit::Unchanged) => Limit::Unlimited,
        _ => swap,
    };
    let mem = memory
        .v1()
        .map(|v| Setting::new("memory", V1_MEMORY_LIMIT, v));
    let sw = swap.v1().map(|v| Setting::new("memory", V1_MEMSW_LIMIT, v));
    let swap_first = match (memory, swap) {
        (Limit::Unchanged, _) | (_, Limit::Unchanged) => false,
        (_, Limit::Unlimited) => true,
        (_, Limit::Value(s)) => current_limit.is_some_and(|cur| cur < s),
    };
    let ordered = if swap_first { [sw, mem] } else { [mem, sw] };
    ordered.into_iter().flatten().collect()
}

/// The v2 writes for all of `r`, `unified` last so it can override the typed fields.
pub(crate) fn v2_settings(r: &CgroupResources) -> Result<Vec<Setting>, String> {
    let mut out = Vec::new();
    if let Some(shares) = r.cpu_shares.filter(|&s| s != 0) {
        out.push(Setting::new(
            "cpu",
            "cpu.weight",
            cpu_shares_to_weight(shares).to_string(),
        ));
    }
    if let Some(max) = cpu_max(Limit::from_cri(r.cpu_quota), r.cpu_period) {
        out.push(Setting::new("cpu", "cpu.max", max));
    }
    if let Some(cpus) = non_empty(&r.cpuset_cpus) {
        out.push(Setting::new("cpuset", "cpuset.cpus", cpus));
    }
    if let Some(mems) = non_empty(&r.cpuset_mems) {
        out.push(Setting::new("cpuset", "cpuset.mems", mems));
    }
    let memory = Limit::from_cri(r.memory_limit);
    if let Some(max) = memory.v2() {
        out.push(Setting::new("memory", "memory.max", max));
    }
    if let Some(swap) = swap_v2(memory, Limit::from_cri(r.memory_swap_limit))?.v2() {
        out.push(Setting::new("memory", "memory.swap.max", swap));
    }
    if let Some(pids) = Limit::from_cri(r.pids_limit).v2() {
        out.push(Setting::new("pids", "pids.max", pids));
    }
    for (size, limit) in &r.hugepage_limits {
        check_hugepage_size(size)?;
        out.push(Setting::new(
            "hugetlb",
            format!("hugetlb.{size}.max"),
            limit.to_string(),
        ));
    }
    for (key, value) in &r.unified {
        check_unified_key(key)?;
        let controller = key.split('.').next().unwrap_or_default();
        out.push(Setting::new(controller, key.as_str(), value.as_str()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(settings: &[Setting]) -> Vec<(&str, &str)> {
        settings
            .iter()
            .map(|s| (s.file.as_str(), s.value.as_str()))
            .collect()
    }

    #[test]
    fn shares_convert_to_weight_like_kubelet() {
        assert_eq!(cpu_shares_to_weight(2), 1);
        assert_eq!(cpu_shares_to_weight(1024), 39);
        assert_eq!(cpu_shares_to_weight(262_144), 10_000);
        assert_eq!(cpu_shares_to_weight(1), 1, "below the v1 minimum clamps");
        assert_eq!(
            cpu_shares_to_weight(1 << 30),
            10_000,
            "above the v1 maximum clamps"
        );
    }

    #[test]
    fn quota_and_period_become_cpu_max() {
        assert_eq!(
            cpu_max(Limit::Value(50_000), Some(100_000)).as_deref(),
            Some("50000 100000")
        );
        assert_eq!(
            cpu_max(Limit::Value(20_000), None).as_deref(),
            Some("20000 100000")
        );
        assert_eq!(
            cpu_max(Limit::Unlimited, None).as_deref(),
            Some("max 100000")
        );
        assert_eq!(
            cpu_max(Limit::Unlimited, Some(50_000)).as_deref(),
            Some("max 50000")
        );
        assert_eq!(cpu_max(Limit::Unchanged, None), None);
        assert_eq!(cpu_max(Limit::Unchanged, Some(0)), None);
    }

    #[test]
    fn cri_numbers_map_to_limits() {
        assert_eq!(Limit::from_cri(None), Limit::Unchanged);
        assert_eq!(Limit::from_cri(Some(0)), Limit::Unchanged);
        assert_eq!(Limit::from_cri(Some(-1)), Limit::Unlimited);
        assert_eq!(Limit::from_cri(Some(4096)), Limit::Value(4096));
    }

    #[test]
    fn v2_swap_is_memory_plus_swap_minus_memory() {
        let v = Limit::Value;
        assert_eq!(swap_v2(v(100), v(300)), Ok(v(200)));
        assert_eq!(
            swap_v2(v(100), v(100)),
            Ok(v(0)),
            "equal limits forbid swap"
        );
        assert_eq!(swap_v2(v(100), Limit::Unlimited), Ok(Limit::Unlimited));
        assert_eq!(swap_v2(v(100), Limit::Unchanged), Ok(Limit::Unchanged));
        assert_eq!(
            swap_v2(Limit::Unlimited, Limit::Unchanged),
            Ok(Limit::Unlimited)
        );
        assert!(swap_v2(v(300), v(100)).is_err(), "swap below memory");
        assert!(
            swap_v2(Limit::Unchanged, v(100)).is_err(),
            "swap without memory"
        );
    }

    #[test]
    fn v2_settings_cover_every_field_with_unified_last() {
        let r = CgroupResources {
            cpu_shares: Some(1024),
            cpu_quota: Some(-1),
            cpuset_cpus: Some("0-1".into()),
            cpuset_mems: Some("0".into()),
            memory_limit: Some(64 << 20),
            memory_swap_limit: Some(128 << 20),
            pids_limit: Some(100),
            hugepage_limits: vec![("2MB".into(), 0)],
            unified: [("memory.high".to_string(), "50000000".to_string())].into(),
            ..Default::default()
        };
        let settings = v2_settings(&r).expect("valid resources");
        assert_eq!(
            files(&settings),
            [
                ("cpu.weight", "39"),
                ("cpu.max", "max 100000"),
                ("cpuset.cpus", "0-1"),
                ("cpuset.mems", "0"),
                ("memory.max", "67108864"),
                ("memory.swap.max", "67108864"),
                ("pids.max", "100"),
                ("hugetlb.2MB.max", "0"),
                ("memory.high", "50000000"),
            ]
        );
        assert_eq!(settings[7].controller, "hugetlb");
        assert_eq!(settings[8].controller, "memory");
    }

    #[test]
    fn v1_settings_use_v1_files() {
        let r = CgroupResources {
            cpu_shares: Some(512),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            pids_limit: Some(-1),
            hugepage_limits: vec![("1GB".into(), 1 << 30)],
            memory_limit: Some(1 << 20),
            unified: [("memory.high".to_string(), "1".to_string())].into(),
            ..Default::default()
        };
        let settings = v1_settings(&r).expect("valid resources");
        assert_eq!(
            files(&settings),
            [
                ("cpu.shares", "512"),
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_quota_us", "50000"),
                ("pids.max", "max"),
                ("hugetlb.1GB.limit_in_bytes", "1073741824"),
            ],
            "memory is ordered separately and unified is v2-only"
        );
    }

    #[test]
    fn check_refuses_what_apply_would_on_either_version() {
        let ok = CgroupResources {
            memory_limit: Some(64 << 20),
            memory_swap_limit: Some(128 << 20),
            unified: [("pids.max".to_string(), "10".to_string())].into(),
            ..Default::default()
        };
        assert_eq!(ok.check(), Ok(()));
        let swap_below = CgroupResources {
            memory_swap_limit: Some(32 << 20),
            ..ok.clone()
        };
        assert!(swap_below.check().is_err());
        let escape = CgroupResources {
            unified: [("cgroup.procs".to_string(), "1".to_string())].into(),
            ..Default::default()
        };
        assert!(escape.check().is_err());
    }

    #[test]
    fn empty_resources_write_nothing() {
        let r = CgroupResources::default();
        assert!(v1_settings(&r).expect("v1").is_empty());
        assert!(v2_settings(&r).expect("v2").is_empty());
        assert!(v1_memory_settings(Limit::Unchanged, Limit::Unchanged, None, true).is_empty());
    }

    #[test]
    fn v1_memory_order_keeps_memory_below_memsw() {
        let v = Limit::Value;
        let raise = v1_memory_settings(v(200), v(400), Some(100), true);
        assert_eq!(
            files(&raise),
            [(V1_MEMSW_LIMIT, "400"), (V1_MEMORY_LIMIT, "200")]
        );
        let lower = v1_memory_settings(v(50), v(80), Some(100), true);
        assert_eq!(
            files(&lower),
            [(V1_MEMORY_LIMIT, "50"), (V1_MEMSW_LIMIT, "80")]
        );
        let unlimited = v1_memory_settings(Limit::Unlimited, Limit::Unchanged, None, true);
        assert_eq!(
            files(&unlimited),
            [(V1_MEMSW_LIMIT, "-1"), (V1_MEMORY_LIMIT, "-1")]
        );
        let no_accounting = v1_memory_settings(v(50), v(80), Some(100), false);
        assert_eq!(files(&no_accounting), [(V1_MEMORY_LIMIT, "50")]);
    }

    #[test]
    fn hugepage_sizes_and_unified_keys_cannot_escape_the_cgroup() {
        let bad_size = CgroupResources {
            hugepage_limits: vec![("../2MB".into(), 1)],
            ..Default::default()
        };
        assert!(v1_settings(&bad_size).is_err());
        assert!(v2_settings(&bad_size).is_err());
        for key in [
            "../memory.max",
            "memory/max",
            "cgroup.procs",
            "cgroup.kill",
            "nodot",
            ".hidden",
        ] {
            let r = CgroupResources {
                unified: [(key.to_string(), "1".to_string())].into(),
                ..Default::default()
            };
            assert!(v2_settings(&r).is_err(), "{key} accepted");
        }
        let ok = CgroupResources {
            unified: [("cgroup.max.depth".to_string(), "3".to_string())].into(),
            ..Default::default()
        };
        assert!(v2_settings(&ok).is_ok());
    }
}
