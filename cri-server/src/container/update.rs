//! Updating a container's resources: live cgroup limit changes.
//!
//! As in containerd, the request's fields that are set (non-zero, non-empty) replace the
//! container's recorded resources and the others keep their values; the result is recorded
//! (so `ContainerStatus.resources` shows it) and, for a running or created container, written
//! to its cgroup (CreateContainer makes it; a created container without one gets the recorded
//! limits when StartContainer makes it); an exited one only has them recorded.
//! `oom_score_adj` is not changed on a running container (runc does not either).
//!
//! The memory limits are written first: when the kernel refuses a memory limit below what the
//! container uses and cannot reclaim (EBUSY on cgroup v1), nothing has changed and the answer
//! is `FAILED_PRECONDITION` naming the limit.

use std::collections::BTreeSet;

use crate::error::Error;
use nix::errno::Errno;
use proto::cri::{
    LinuxContainerConfig, LinuxContainerResources, UpdateContainerResourcesRequest,
    UpdateContainerResourcesResponse,
};
use runtime_core::cgroups::{CgroupError, CgroupResources};
use tracing::{info, warn};

use crate::container::cgroup::cgroup_resources;
use crate::lifecycle::record::find;
use crate::lifecycle::refresh::refresh;
use crate::state::DaemonState;
use crate::store::containers::{ContainerPhase, ContainerRecord};

/// The update itself (also what NRI plugins' container updates use).
pub async fn update_resources(
    state: &DaemonState,
    req: &UpdateContainerResourcesRequest,
) -> Result<UpdateContainerResourcesResponse, Error> {
    if req.container_id.is_empty() {
        return Err(Error::invalid("container_id is required"));
    }
    let Some(new) = req.linux.as_ref() else {
        return Err(Error::invalid(
            "linux is required: berth runs Linux containers only",
        ));
    };
    validate(
        new,
        &host_set("/sys/devices/system/cpu/online"),
        &host_set("/sys/devices/system/node/online"),
    )?;
    let id = find(state, &req.container_id)?.id;
    let lock = state.containers.lock_for(&id);
    let _guard = lock.lock().await;
    let rec = refresh(state, find(state, &id)?).await;
    let old = recorded(&rec);
    let merged = merge(&old, new);
    check_swap(&merged)?;
    cgroup_resources(&merged)
        .check()
        .map_err(|e| Error::invalid(format!("linux: {e}")))?;
    let has_cgroup = match rec.phase {
        ContainerPhase::Running => true,
        ContainerPhase::Created => !rec.cgroup.is_empty(),
        ContainerPhase::Exited => false,
    };
    if has_cgroup {
        apply(state, &rec, &old, &merged)?;
    }
    let saved = state
        .containers
        .modify(&id, |r| {
            r.config
                .linux
                .get_or_insert_with(LinuxContainerConfig::default)
                .resources = Some(merged.clone());
            true
        })
        .map_err(|e| Error::io(&format!("record resources of container {id}"), &e))?;
    if saved.is_none() {
        return Err(Error::not_found(format!("container {id} not found")));
    }
    info!(container_id = %id, phase = ?rec.phase, resources = ?merged, "UpdateContainerResources");
    Ok(UpdateContainerResourcesResponse {})
}

/// The container's resources as recorded (create-time ones, or the last update).
fn recorded(rec: &ContainerRecord) -> LinuxContainerResources {
    rec.config
        .linux
        .as_ref()
        .and_then(|l| l.resources.clone())
        .unwrap_or_default()
}

/// The recorded resources with the request's set fields replacing them (containerd's rule:
/// zero or empty means "not given"). `oom_score_adj` keeps its value; `unified` keys given
/// replace the same keys.
fn merge(old: &LinuxContainerResources, new: &LinuxContainerResources) -> LinuxContainerResources {
    let pick = |n: i64, o: i64| if n != 0 { n } else { o };
    let pick_str = |n: &String, o: &String| if n.is_empty() { o.clone() } else { n.clone() };
    let mut unified = old.unified.clone();
    unified.extend(new.unified.clone());
    LinuxContainerResources {
        cpu_period: pick(new.cpu_period, old.cpu_period),
        cpu_quota: pick(new.cpu_quota, old.cpu_quota),
        cpu_shares: pick(new.cpu_shares, old.cpu_shares),
        memory_limit_in_bytes: pick(new.memory_limit_in_bytes, old.memory_limit_in_bytes),
        oom_score_adj: old.oom_score_adj,
        cpuset_cpus: pick_str(&new.cpuset_cpus, &old.cpuset_cpus),
        cpuset_mems: pick_str(&new.cpuset_mems, &old.cpuset_mems),
        hugepage_limits: if new.hugepage_limits.is_empty() {
            old.hugepage_limits.clone()
        } else {
            new.hugepage_limits.clone()
        },
        unified,
        memory_swap_limit_in_bytes: pick(
            new.memory_swap_limit_in_bytes,
            old.memory_swap_limit_in_bytes,
        ),
    }
}

/// Checks the request's values the kernel would refuse (or half-apply) before anything is
/// written; `cpus` and `mems` are the host's online CPUs and memory nodes (empty: unknown).
fn validate(
    r: &LinuxContainerResources,
    cpus: &BTreeSet<u32>,
    mems: &BTreeSet<u32>,
) -> Result<(), Error> {
    let bad = |field: &str, why: String| Err(Error::invalid(format!("linux.{field}: {why}")));
    if r.cpu_period != 0 && !(1_000..=1_000_000).contains(&r.cpu_period) {
        return bad(
            "cpu_period",
            format!("{} µs is outside 1000..=1000000", r.cpu_period),
        );
    }
    if r.cpu_quota > 0 && r.cpu_quota < 1_000 {
        return bad(
            "cpu_quota",
            format!("{} µs is below the kernel's minimum of 1000", r.cpu_quota),
        );
    }
    if r.cpu_quota < -1 {
        return bad(
            "cpu_quota",
            format!("{} is neither -1 (no quota) nor a quota in µs", r.cpu_quota),
        );
    }
    if r.cpu_shares < 0 || r.cpu_shares > 262_144 {
        return bad(
            "cpu_shares",
            format!("{} is outside 2..=262144", r.cpu_shares),
        );
    }
    if r.memory_limit_in_bytes < 0 {
        return bad(
            "memory_limit_in_bytes",
            format!("{} is negative", r.memory_limit_in_bytes),
        );
    }
    if r.memory_swap_limit_in_bytes < -1 {
        return bad(
            "memory_swap_limit_in_bytes",
            format!(
                "{} is neither -1 (unlimited) nor a limit",
                r.memory_swap_limit_in_bytes
            ),
        );
    }
    for (field, list, host) in [
        ("cpuset_cpus", &r.cpuset_cpus, cpus),
        ("cpuset_mems", &r.cpuset_mems, mems),
    ] {
        if list.is_empty() {
            continue;
        }
        let set = parse_list(list).map_err(|e| Error::invalid(format!("linux.{field}: {e}")))?;
        if let Some(missing) = set.iter().find(|n| !host.is_empty() && !host.contains(n)) {
            return bad(
                field,
                format!("`{list}` names {missing}, which this host does not have online"),
            );
        }
    }
    for (i, h) in r.hugepage_limits.iter().enumerate() {
        if h.page_size.is_empty() || !h.page_size.chars().all(|c| c.is_ascii_alphanumeric()) {
            return bad(
                &format!("hugepage_limits[{i}].page_size"),
                format!("{:?} is not a size like \"2MB\"", h.page_size),
            );
        }
    }
    Ok(())
}

/// A memory+swap limit below the memory limit (after merging) cannot be applied.
fn check_swap(r: &LinuxContainerResources) -> Result<(), Error> {
    let (mem, swap) = (r.memory_limit_in_bytes, r.memory_swap_limit_in_bytes);
    if mem > 0 && swap > 0 && swap < mem {
        return Err(Error::invalid(format!(
            "linux.memory_swap_limit_in_bytes {swap} (memory plus swap) is below linux.memory_limit_in_bytes {mem}"
        )));
    }
    Ok(())
}

/// A kernel CPU or node list such as `0-3,6`.
fn parse_list(s: &str) -> Result<BTreeSet<u32>, String> {
    let mut out = BTreeSet::new();
    for part in s.trim().split(',') {
        let num = |t: &str| {
            t.trim()
                .parse::<u32>()
                .map_err(|_| format!("`{s}` is not a list like `0-3,6`"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b || b - a > 65_536 {
                    return Err(format!("`{s}`: range {a}-{b} is backwards or too large"));
                }
                out.extend(a..=b);
            }
            None => {
                out.insert(num(part)?);
            }
        }
    }
    Ok(out)
}

/// The set in a sysfs list file; empty if it cannot be read (then nothing is checked).
fn host_set(path: &str) -> BTreeSet<u32> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| parse_list(&s).ok())
        .unwrap_or_default()
}

/// Writes `merged` to the container's cgroup: memory first (a refusal leaves
/// everything as it was), then the rest; if the rest fails, memory goes back to `old`.
fn apply(
    state: &DaemonState,
    rec: &ContainerRecord,
    old: &LinuxContainerResources,
    merged: &LinuxContainerResources,
) -> Result<(), Error> {
    let all = cgroup_resources(merged);
    let memory = CgroupResources {
        memory_limit: all.memory_limit,
        memory_swap_limit: all.memory_swap_limit,
        ..Default::default()
    };
    let rest = CgroupResources {
        memory_limit: None,
        memory_swap_limit: None,
        ..all
    };
    let update = |r: &CgroupResources| state.pod_runtime.update_container_cgroup(&rec.cgroup, r);
    match update(&memory) {
        Ok(true) => {}
        Ok(false) => {
            warn!(container_id = %rec.id, "container has no cgroup: resources recorded, not enforced");
            return Ok(());
        }
        Err(e) => return Err(cgroup_status(&rec.id, merged, e)),
    }
    if let Err(e) = update(&rest) {
        let back = CgroupResources {
            memory_limit: Some(if old.memory_limit_in_bytes > 0 {
                old.memory_limit_in_bytes
            } else {
                -1
            }),
            memory_swap_limit: Some(if old.memory_swap_limit_in_bytes > 0 {
                old.memory_swap_limit_in_bytes
            } else {
                -1
            }),
            ..Default::default()
        };
        if let Err(undo) = update(&back) {
            warn!(container_id = %rec.id, error = %undo, "restore memory limits after a failed update");
        }
        return Err(cgroup_status(&rec.id, merged, e));
    }
    Ok(())
}

/// The gRPC status for a cgroup write that failed, naming the CRI field where possible.
fn cgroup_status(id: &str, r: &LinuxContainerResources, e: CgroupError) -> Error {
    let errno = match &e {
        CgroupError::Io { source, .. } => source.raw_os_error().map(Errno::from_raw),
        _ => None,
    };
    let file = match &e {
        CgroupError::Io { file, .. } => file.file_name().map(|f| f.to_string_lossy().into_owned()),
        _ => None,
    }
    .unwrap_or_default();
    match (&e, errno) {
        (CgroupError::Io { .. }, Some(Errno::EBUSY)) if file.starts_with("memory.") => {
            Error::failed_precondition(format!(
                "linux.memory_limit_in_bytes {}: container {id} uses more memory than that and \
                 the kernel could not reclaim enough (writing {file} failed with EBUSY); \
                 nothing was changed",
                r.memory_limit_in_bytes
            ))
        }
        (CgroupError::Io { .. }, Some(Errno::EINVAL | Errno::ERANGE | Errno::ENOENT))
        | (CgroupError::InvalidResources { .. }, _) => Error::invalid(format!(
            "linux: the kernel refused the update of container {id}: {e}"
        )),
        (CgroupError::MissingController { .. }, _) => {
            Error::failed_precondition(format!("linux: container {id}: {e}"))
        }
        _ => Error::internal(format!("update resources of container {id}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::cri::HugepageLimit;

    fn set(items: &[u32]) -> BTreeSet<u32> {
        items.iter().copied().collect()
    }

    #[test]
    fn lists_parse_ranges_and_singles() {
        assert_eq!(parse_list("0-3,6").expect("list"), set(&[0, 1, 2, 3, 6]));
        assert_eq!(parse_list("1\n").expect("trailing newline"), set(&[1]));
        for bad in ["", "a", "3-1", "1,,2", "0-99999999"] {
            assert!(parse_list(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn set_fields_replace_recorded_ones_and_unset_ones_keep_them() {
        let old = LinuxContainerResources {
            cpu_shares: 256,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 64 << 20,
            oom_score_adj: 500,
            cpuset_cpus: "0".into(),
            unified: [("memory.high".to_string(), "1".to_string())].into(),
            ..Default::default()
        };
        let new = LinuxContainerResources {
            cpu_quota: 20_000,
            memory_limit_in_bytes: 32 << 20,
            oom_score_adj: -999,
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 0,
            }],
            unified: [("pids.max".to_string(), "10".to_string())].into(),
            ..Default::default()
        };
        let m = merge(&old, &new);
        assert_eq!(
            (m.cpu_shares, m.cpu_quota, m.cpu_period),
            (256, 20_000, 100_000)
        );
        assert_eq!(m.memory_limit_in_bytes, 32 << 20);
        assert_eq!(m.oom_score_adj, 500, "not changed live");
        assert_eq!(m.cpuset_cpus, "0");
        assert_eq!(m.hugepage_limits.len(), 1);
        assert_eq!(m.unified.len(), 2);
    }

    #[test]
    fn values_the_kernel_would_refuse_are_rejected_naming_the_field() {
        let host = set(&[0, 1]);
        let check = |r: LinuxContainerResources| {
            validate(&r, &host, &set(&[0])).map_err(|s| s.message().to_string())
        };
        let cases = [
            (
                LinuxContainerResources {
                    cpu_period: 10,
                    ..Default::default()
                },
                "linux.cpu_period",
            ),
            (
                LinuxContainerResources {
                    cpu_quota: 5,
                    ..Default::default()
                },
                "linux.cpu_quota",
            ),
            (
                LinuxContainerResources {
                    cpu_quota: -5,
                    ..Default::default()
                },
                "linux.cpu_quota",
            ),
            (
                LinuxContainerResources {
                    cpu_shares: -1,
                    ..Default::default()
                },
                "linux.cpu_shares",
            ),
            (
                LinuxContainerResources {
                    memory_limit_in_bytes: -1,
                    ..Default::default()
                },
                "linux.memory_limit_in_bytes",
            ),
            (
                LinuxContainerResources {
                    cpuset_cpus: "0-7".into(),
                    ..Default::default()
                },
                "linux.cpuset_cpus",
            ),
            (
                LinuxContainerResources {
                    cpuset_mems: "x".into(),
                    ..Default::default()
                },
                "linux.cpuset_mems",
            ),
        ];
        for (r, field) in cases {
            let err = check(r).expect_err(field);
            assert!(err.starts_with(field), "{err}");
        }
        check(LinuxContainerResources {
            cpu_quota: -1,
            cpu_period: 100_000,
            cpuset_cpus: "1".into(),
            ..Default::default()
        })
        .expect("valid");
    }

    #[test]
    fn swap_below_memory_after_merge_is_refused() {
        let r = LinuxContainerResources {
            memory_limit_in_bytes: 128 << 20,
            memory_swap_limit_in_bytes: 64 << 20,
            ..Default::default()
        };
        let err = check_swap(&r).expect_err("swap below memory");
        assert!(
            err.message().contains("memory_swap_limit_in_bytes"),
            "{err}"
        );
    }
}
