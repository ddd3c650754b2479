//! Capabilities: names, the bounding set, capset and the ambient set.
//!
//! Raw `capset(2)` and `prctl(2)` rather than a crate: three calls, and the order matters
//! (bounding set while still fully privileged, E/P after the user switch, ambient cleared).
//!
//! As containerd + runc: the configured set is the bounding, effective and permitted set;
//! the inheritable and ambient sets are empty. A root process keeps the set across `execve`
//! (the kernel gives uid 0 its bounding set); a non-root process ends with no effective,
//! permitted, inheritable or ambient capability, only the bounding set: otherwise a non-root
//! process holding CAP_SETUID or CAP_DAC_OVERRIDE would be root in all but name
//! (CVE-2022-24769 class).

use super::error::{Context, Failure};

/// Kernel capability names, indexed by capability number.
const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

const LAST_CAP_FILE: &str = "/proc/sys/kernel/cap_last_cap";

/// The capability sets a container process ends up with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct CapPlan {
    /// Bounding, effective and permitted set (bit N = capability N).
    pub set: u64,
    /// Highest capability number the kernel knows.
    pub last_cap: u32,
}

impl CapPlan {
    /// The plan for `names`; `None` means every capability in `all` (what the shim itself
    /// holds).
    pub fn new(names: Option<&[String]>, last_cap: u32, all: u64) -> Result<Self, String> {
        let known = known_mask(last_cap);
        let set = match names {
            None => all & known,
            Some(names) => parse(names)? & known,
        };
        Ok(CapPlan { set, last_cap })
    }
}

/// The names of capabilities `0..=last_cap` that berth knows by name.
pub(super) fn names_up_to(last_cap: u32) -> Vec<String> {
    NAMES
        .iter()
        .take(last_cap as usize + 1)
        .map(|n| n.to_string())
        .collect()
}

/// Reads the highest capability number the running kernel knows.
pub(super) fn last_cap() -> Result<u32, Failure> {
    let text =
        std::fs::read_to_string(LAST_CAP_FILE).context(|| format!("read {LAST_CAP_FILE}"))?;
    text.trim()
        .parse()
        .map_err(|_| Failure::plain(format!("read {LAST_CAP_FILE}: bad value {text:?}"), None))
}

/// The calling thread's permitted set: all a container process can be given.
pub(super) fn permitted() -> Result<u64, Failure> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and a writable two-element data array in the v3 layout; both outlive
    // the call.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(Failure::last_os(|| "capget"));
    }
    Ok(u64::from(data[0].permitted) | (u64::from(data[1].permitted) << 32))
}

/// A bit mask of `names`; each may omit the `CAP_` prefix and is case-insensitive.
pub(super) fn parse(names: &[String]) -> Result<u64, String> {
    names.iter().try_fold(0u64, |mask, name| {
        let upper = name.to_ascii_uppercase();
        let full = if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        };
        let number = NAMES
            .iter()
            .position(|n| *n == full)
            .ok_or_else(|| format!("unknown capability `{name}`"))?;
        Ok(mask | (1 << number))
    })
}

fn known_mask(last_cap: u32) -> u64 {
    if last_cap >= 63 {
        u64::MAX
    } else {
        (1u64 << (last_cap + 1)) - 1
    }
}

fn name(cap: u32) -> String {
    NAMES
        .get(cap as usize)
        .map_or_else(|| format!("capability {cap}"), |n| (*n).to_string())
}

/// Drops every capability outside the plan from the bounding set (needs CAP_SETPCAP, so this
/// runs before the user switch).
pub(super) fn drop_bounding(plan: &CapPlan) -> Result<(), Failure> {
    for cap in (0..=plan.last_cap).filter(|c| plan.set & (1 << c) == 0) {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if rc != 0 {
            return Err(Failure::last_os(|| {
                format!("drop {} from the bounding set", name(cap))
            }));
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Sets the effective and permitted sets to the plan's, empties the inheritable and ambient
/// sets.
pub(super) fn apply(plan: &CapPlan) -> Result<(), Failure> {
    capset(plan.set, plan.set, 0)?;
    if ambient(libc::PR_CAP_AMBIENT_CLEAR_ALL, 0) != 0 {
        return Err(Failure::last_os(|| "clear the ambient capability set"));
    }
    Ok(())
}

fn capset(effective: u64, permitted: u64, inheritable: u64) -> Result<(), Failure> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    for (i, d) in data.iter_mut().enumerate() {
        let shift = 32 * i;
        d.effective = (effective >> shift) as u32;
        d.permitted = (permitted >> shift) as u32;
        d.inheritable = (inheritable >> shift) as u32;
    }
    // SAFETY: header and a two-element data array in the v3 layout the kernel expects; both
    // outlive the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(Failure::last_os(|| {
            format!("capset (effective/permitted {effective:#x}, inheritable {inheritable:#x})")
        }));
    }
    Ok(())
}

/// Drops every capability from every set of the calling process, the bounding set first
/// (what a helper that must never act for a container does before it waits).
pub(super) fn drop_all(last_cap: u32) -> Result<(), Failure> {
    let plan = CapPlan { set: 0, last_cap };
    drop_bounding(&plan)?;
    apply(&plan)
}

/// `prctl(PR_CAP_AMBIENT, op, cap, 0, 0)`.
fn ambient(op: libc::c_int, cap: u32) -> libc::c_int {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            op as libc::c_ulong,
            cap as libc::c_ulong,
            0,
            0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_and_without_prefix() {
        let names = ["CAP_CHOWN", "net_bind_service", "KILL"].map(String::from);
        assert_eq!(parse(&names), Ok((1 << 0) | (1 << 10) | (1 << 5)));
    }

    #[test]
    fn unknown_capability_is_named() {
        let err = parse(&["CAP_FLY".to_string()]).unwrap_err();
        assert_eq!(err, "unknown capability `CAP_FLY`");
    }

    #[test]
    fn none_means_every_known_capability() {
        let plan = CapPlan::new(None, 40, u64::MAX).expect("plan");
        assert_eq!(plan.set, (1 << 41) - 1);
        assert_eq!(CapPlan::new(Some(&[]), 40, 0).expect("plan").set, 0);
        assert_eq!(CapPlan::new(None, 40, 0b101).expect("plan").set, 0b101);
    }

    #[test]
    fn capabilities_the_kernel_lacks_are_dropped() {
        let plan = CapPlan::new(Some(&["CAP_BPF".to_string()]), 38, 0).expect("plan");
        assert_eq!(plan.set, 0);
    }
}
