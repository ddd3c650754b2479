//! The detailed figures behind the cAdvisor-named metrics (`ListPodSandboxMetrics`): what
//! [`CgroupStats`] holds, plus the CPU split and throttling, the memory breakdown, the limits in
//! force, block I/O per device, hugepages, pressure and the processes of the subtree.
//!
//! They are read only for metrics, so the stats RPCs keep their handful of reads. Files a kernel
//! or a disabled controller does not provide read as zero or `None` (documented per field):
//! one missing optional file never hides the figures that can be read.

use std::collections::BTreeMap;

use serde::Serialize;

use super::CgroupStats;

/// Everything berth reports about one cgroup as metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CgroupMetrics {
    pub stats: CgroupStats,
    /// CPU time in user mode, in nanoseconds (v1 `cpuacct.usage_user`, v2 `user_usec`).
    pub cpu_user_ns: u64,
    /// CPU time in kernel mode, in nanoseconds (v1 `cpuacct.usage_sys`, v2 `system_usec`).
    pub cpu_system_ns: u64,
    /// CFS throttling: elapsed periods, throttled periods, throttled time (ns). Zero without
    /// the cpu controller.
    pub cfs_periods: u64,
    pub cfs_throttled_periods: u64,
    pub cfs_throttled_ns: u64,
    /// Page cache (v1 `total_cache`, v2 `file`).
    pub memory_cache: u64,
    /// Memory-mapped files (v1 `total_mapped_file`, v2 `file_mapped`).
    pub memory_mapped_file: u64,
    /// Kernel memory (v1 `memory.kmem.usage_in_bytes`, v2 `memory.stat` `kernel`, or the sum of
    /// its parts on kernels before 5.18); 0 where the kernel does not account it.
    pub memory_kernel: u64,
    /// Swap in use (v1 memsw usage − usage, v2 `memory.swap.current`); 0 without swap accounting.
    pub memory_swap: u64,
    /// Highest memory usage recorded (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`);
    /// `None` where the kernel records none (v2 before Linux 5.19).
    pub memory_max_usage: Option<u64>,
    /// Times usage hit the limit (v1 `memory.failcnt`, v2 `memory.events` `max`).
    pub memory_failcnt: u64,
    /// CFS period in microseconds; `None` without the cpu controller.
    pub cpu_period_us: Option<u64>,
    /// CFS quota in microseconds; `None` when unlimited.
    pub cpu_quota_us: Option<u64>,
    /// CPU shares (v1 `cpu.shares`; v2 `cpu.weight` converted back to shares).
    pub cpu_shares: Option<u64>,
    /// Swap limit (v1 `memory.memsw.limit_in_bytes`, memory plus swap; v2 `memory.swap.max`,
    /// swap alone); `None` when unlimited or not accounted.
    pub memory_swap_limit: Option<u64>,
    /// Memory reservation (v1 `memory.soft_limit_in_bytes`, v2 `memory.low`); `None` if unset.
    pub memory_reservation: Option<u64>,
    /// `pids.max`; `None` when unlimited or without the pids controller.
    pub threads_max: Option<u64>,
    /// Block I/O per device.
    pub block_io: Vec<DeviceIo>,
    /// Hugepage usage per page size.
    pub hugetlb: Vec<HugetlbUsage>,
    /// Pressure stall totals (cgroup v2 only).
    pub pressure: Option<Pressure>,
    /// Processes in the cgroup and beneath it, sorted.
    pub processes: Vec<u32>,
}

/// Block I/O of a cgroup on one device, by operation (`Read`, `Write`, and on v1 also `Sync`,
/// `Async`, `Discard`, `Total`; on v2 `Discard` where the kernel reports it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceIo {
    pub major: u64,
    pub minor: u64,
    /// Bytes per operation.
    pub bytes: BTreeMap<String, u64>,
    /// Requests per operation.
    pub ios: BTreeMap<String, u64>,
}

/// Hugepage usage of one page size (`2MB`, `1GB`, as in the file names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HugetlbUsage {
    pub pagesize: String,
    pub usage: u64,
    /// v1 `max_usage_in_bytes`; v2 keeps no maximum (`None`).
    pub max_usage: Option<u64>,
}

/// Cumulative pressure stall time in microseconds: `some` (at least one task waiting) and
/// `full` (all non-idle tasks stalled) per resource, from `cpu.pressure`, `memory.pressure`,
/// `io.pressure`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pressure {
    pub cpu: PressureTotals,
    pub memory: PressureTotals,
    pub io: PressureTotals,
}

/// The `total=` fields of one pressure file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PressureTotals {
    pub some_us: u64,
    pub full_us: u64,
}

/// Per device (`major`, `minor`): a figure per operation.
pub(crate) type PerDevice = BTreeMap<(u64, u64), BTreeMap<String, u64>>;

/// Parses a v1 `blkio.throttle.io_service_bytes[_recursive]` or `io_serviced[_recursive]`
/// file (`8:0 Read 4096` lines, then a `Total N` line) into per-device figures.
pub(crate) fn parse_v1_blkio(text: &str) -> Result<PerDevice, String> {
    let mut out = PerDevice::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["Total", _] => continue,
            [device, op, value] => {
                let device =
                    parse_device(device).ok_or_else(|| format!("line {line:?}: bad device"))?;
                let value = value.parse().map_err(|e| format!("line {line:?}: {e}"))?;
                out.entry(device).or_default().insert(op.to_string(), value);
            }
            _ => return Err(format!("line {line:?} is not \"major:minor op value\"")),
        }
    }
    Ok(out)
}

/// Combines the parsed v1 bytes and serviced files.
pub(crate) fn v1_device_io(bytes: PerDevice, ios: PerDevice) -> Vec<DeviceIo> {
    let mut devices: BTreeMap<(u64, u64), DeviceIo> = BTreeMap::new();
    for ((major, minor), ops) in bytes {
        devices
            .entry((major, minor))
            .or_insert_with(|| device(major, minor))
            .bytes = ops;
    }
    for ((major, minor), ops) in ios {
        devices
            .entry((major, minor))
            .or_insert_with(|| device(major, minor))
            .ios = ops;
    }
    devices.into_values().collect()
}

fn device(major: u64, minor: u64) -> DeviceIo {
    DeviceIo {
        major,
        minor,
        ..Default::default()
    }
}

/// Parses a v2 `io.stat` (`8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0` per device).
/// Keys berth does not report (such as `cost.*` of iocost) are skipped.
pub(crate) fn parse_io_stat(text: &str) -> Result<Vec<DeviceIo>, String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut fields = line.split_whitespace();
        let device_field = fields.next().unwrap_or_default();
        let (major, minor) =
            parse_device(device_field).ok_or_else(|| format!("line {line:?}: bad device"))?;
        let mut dev = device(major, minor);
        for field in fields {
            let Some((key, value)) = field.split_once('=') else {
                return Err(format!("line {line:?}: {field:?} is not key=value"));
            };
            let (map, op) = match key {
                "rbytes" => (&mut dev.bytes, "Read"),
                "wbytes" => (&mut dev.bytes, "Write"),
                "dbytes" => (&mut dev.bytes, "Discard"),
                "rios" => (&mut dev.ios, "Read"),
                "wios" => (&mut dev.ios, "Write"),
                "dios" => (&mut dev.ios, "Discard"),
                _ => continue,
            };
            let value = value
                .parse()
                .map_err(|e| format!("line {line:?}: {key}: {e}"))?;
            map.insert(op.to_string(), value);
        }
        out.push(dev);
    }
    Ok(out)
}

fn parse_device(field: &str) -> Option<(u64, u64)> {
    let (major, minor) = field.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Parses a pressure file (`some avg10=0.00 avg60=0.00 avg300=0.00 total=123` and, except for
/// cpu before Linux 5.13, a `full` line) into its `total=` figures.
pub(crate) fn parse_pressure(text: &str) -> Result<PressureTotals, String> {
    let mut totals = PressureTotals::default();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut fields = line.split_whitespace();
        let kind = fields.next().unwrap_or_default();
        let total = fields
            .find_map(|f| f.strip_prefix("total="))
            .ok_or_else(|| format!("line {line:?} has no total="))?;
        let total = total.parse().map_err(|e| format!("line {line:?}: {e}"))?;
        match kind {
            "some" => totals.some_us = total,
            "full" => totals.full_us = total,
            _ => return Err(format!("line {line:?}: unknown kind {kind:?}")),
        }
    }
    Ok(totals)
}

/// Parses v2 `cpu.max` (`max 100000` or `20000 100000`) into (quota, period) in µs.
pub(crate) fn parse_cpu_max(text: &str) -> Result<(Option<u64>, u64), String> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [quota, period] = fields.as_slice() else {
        return Err(format!("{:?} is not \"quota period\"", text.trim()));
    };
    let period = period
        .parse()
        .map_err(|e| format!("period {period:?}: {e}"))?;
    let quota = match *quota {
        "max" => None,
        q => Some(q.parse().map_err(|e| format!("quota {q:?}: {e}"))?),
    };
    Ok((quota, period))
}

/// Parses v1 `cpu.cfs_quota_us`: `-1` is unlimited.
pub(crate) fn parse_v1_quota(text: &str) -> Result<Option<u64>, String> {
    let quota: i64 = text
        .trim()
        .parse()
        .map_err(|e| format!("{:?}: {e}", text.trim()))?;
    Ok(u64::try_from(quota).ok())
}

/// Parses `pids.max`: `max` (unlimited) is `None`.
pub(crate) fn parse_pids_max(text: &str) -> Result<Option<u64>, String> {
    match text.trim() {
        "max" => Ok(None),
        n => n.parse().map(Some).map_err(|e| format!("{n:?}: {e}")),
    }
}

/// v2 `cpu.weight` back to v1 shares: the inverse of the conversion kubelet and runc use
/// (`weight = 1 + (shares − 2) × 9999 / 262142`), as cAdvisor reports it.
pub(crate) fn cpu_weight_to_shares(weight: u64) -> u64 {
    let weight = weight.clamp(1, 10_000);
    2 + ((weight - 1) * 262_142) / 9999
}

/// The kernel memory of a v2 `memory.stat`: `kernel` (Linux 5.18+) or the sum of its parts.
pub(crate) fn v2_kernel_memory(stat: &BTreeMap<String, u64>) -> u64 {
    if let Some(kernel) = stat.get("kernel") {
        return *kernel;
    }
    [
        "kernel_stack",
        "pagetables",
        "sec_pagetables",
        "percpu",
        "sock",
        "vmalloc",
        "slab",
    ]
    .iter()
    .filter_map(|k| stat.get(*k))
    .sum()
}

/// The page size in a hugetlb file name (`hugetlb.2MB.usage_in_bytes` → `2MB`) if the name
/// ends in `suffix`.
pub(crate) fn hugetlb_pagesize<'a>(file: &'a str, suffix: &str) -> Option<&'a str> {
    file.strip_prefix("hugetlb.")?
        .strip_suffix(suffix)?
        .strip_suffix('.')
        .filter(|size| !size.is_empty() && !size.contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_BYTES: &str = "8:16 Read 4096\n8:16 Write 1052672\n8:16 Sync 1052672\n\
        8:16 Async 4096\n8:16 Discard 0\n8:16 Total 1056768\n\
        253:0 Read 0\n253:0 Write 512\n253:0 Sync 0\n253:0 Async 512\n253:0 Discard 0\n\
        253:0 Total 512\nTotal 1057280\n";
    const V1_SERVICED: &str = "8:16 Read 1\n8:16 Write 12\n8:16 Sync 12\n8:16 Async 1\n\
        8:16 Discard 0\n8:16 Total 13\nTotal 13\n";

    #[test]
    fn v1_blkio_files_combine_per_device() {
        let bytes = parse_v1_blkio(V1_BYTES).expect("bytes");
        let ios = parse_v1_blkio(V1_SERVICED).expect("serviced");
        let devices = v1_device_io(bytes, ios);
        assert_eq!(devices.len(), 2);
        let sdb = &devices[0];
        assert_eq!((sdb.major, sdb.minor), (8, 16));
        assert_eq!(sdb.bytes["Write"], 1_052_672);
        assert_eq!(sdb.bytes["Total"], 1_056_768);
        assert_eq!(sdb.ios["Write"], 12);
        assert_eq!(sdb.bytes.len(), 6, "Read Write Sync Async Discard Total");
        assert!(devices[1].ios.is_empty(), "no serviced line for 253:0");
        assert_eq!(parse_v1_blkio("Total 0\n").expect("empty"), BTreeMap::new());
    }

    #[test]
    fn malformed_v1_blkio_lines_are_rejected() {
        assert!(parse_v1_blkio("8:16 Read\n").is_err());
        assert!(parse_v1_blkio("sda Read 1\n").is_err());
        assert!(parse_v1_blkio("8:16 Read -1\n").is_err());
    }

    #[test]
    fn v2_io_stat_maps_keys_to_cadvisor_operations() {
        let text = "8:16 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0\n\
            253:0 rbytes=4096 wbytes=0 rios=1 wios=0 cost.vrate=100.00\n";
        let devices = parse_io_stat(text).expect("io.stat");
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[0].bytes["Read"], 1_459_200);
        assert_eq!(devices[0].bytes["Write"], 314_773_504);
        assert_eq!(devices[0].bytes["Discard"], 0);
        assert_eq!(devices[0].ios["Write"], 353);
        assert_eq!((devices[1].major, devices[1].minor), (253, 0));
        assert!(
            !devices[1].bytes.contains_key("Discard"),
            "old kernels have no d*"
        );
        assert!(parse_io_stat("8:16 rbytes\n").is_err());
        assert!(parse_io_stat("x rbytes=1\n").is_err());
        assert_eq!(parse_io_stat("").expect("empty"), Vec::new());
    }

    #[test]
    fn pressure_files_give_some_and_full_totals() {
        let text = "some avg10=0.00 avg60=0.12 avg300=0.03 total=123456\n\
            full avg10=0.00 avg60=0.00 avg300=0.00 total=789\n";
        assert_eq!(
            parse_pressure(text),
            Ok(PressureTotals {
                some_us: 123_456,
                full_us: 789
            })
        );
        let cpu_before_5_13 = "some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n";
        assert_eq!(parse_pressure(cpu_before_5_13).expect("cpu").full_us, 0);
        assert!(parse_pressure("some avg10=0.00\n").is_err());
        assert!(parse_pressure("most total=1\n").is_err());
    }

    #[test]
    fn cpu_limits_parse_in_both_formats() {
        assert_eq!(parse_cpu_max("max 100000\n"), Ok((None, 100_000)));
        assert_eq!(parse_cpu_max("20000 100000\n"), Ok((Some(20_000), 100_000)));
        assert!(parse_cpu_max("max\n").is_err());
        assert_eq!(parse_v1_quota("-1\n"), Ok(None));
        assert_eq!(parse_v1_quota("20000\n"), Ok(Some(20_000)));
        assert!(parse_v1_quota("lots").is_err());
        assert_eq!(parse_pids_max("max\n"), Ok(None));
        assert_eq!(parse_pids_max("1024\n"), Ok(Some(1024)));
    }

    #[test]
    fn weight_converts_back_to_the_shares_it_came_from() {
        for shares in [2, 1024, 262_144] {
            let weight = super::super::resources::cpu_shares_to_weight(shares);
            let back = cpu_weight_to_shares(weight);
            // The forward conversion rounds down; going back lands within one weight step.
            assert!(
                back <= shares && shares - back < 27,
                "{shares} → {weight} → {back}"
            );
        }
        assert_eq!(cpu_weight_to_shares(100), 2597, "the v2 default weight");
    }

    #[test]
    fn v2_kernel_memory_prefers_the_kernel_key() {
        let stat: BTreeMap<String, u64> = [("kernel", 900), ("slab", 100)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(v2_kernel_memory(&stat), 900);
        let parts: BTreeMap<String, u64> = [
            ("kernel_stack", 16384),
            ("pagetables", 8192),
            ("slab", 4096),
            ("anon", 1 << 20),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(v2_kernel_memory(&parts), 16384 + 8192 + 4096);
    }

    #[test]
    fn hugetlb_page_sizes_come_from_file_names() {
        assert_eq!(
            hugetlb_pagesize("hugetlb.2MB.usage_in_bytes", "usage_in_bytes"),
            Some("2MB")
        );
        assert_eq!(
            hugetlb_pagesize("hugetlb.1GB.current", "current"),
            Some("1GB")
        );
        assert_eq!(
            hugetlb_pagesize("hugetlb.2MB.rsvd.current", "current"),
            None
        );
        assert_eq!(hugetlb_pagesize("hugetlb.2MB.max", "current"), None);
        assert_eq!(hugetlb_pagesize("memory.current", "current"), None);
    }
}
