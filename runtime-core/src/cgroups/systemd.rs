//! The systemd cgroup driver (`cgroup_driver = "systemd"`, kubelet's `--cgroup-driver=systemd`):
//! a pod's cgroup is a transient scope unit `berth-<pod-id>.scope` in the slice kubelet names as
//! the pod's `cgroup_parent` (`kubepods-burstable-pod<uid>.slice`, expanded the way systemd
//! does: `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`), created
//! over systemd's D-Bus API with `Delegate=yes`, so the cgroups below it are berth's to manage.
//!
//! A scope must hold a process from its start, and an empty scope is stopped (and its cgroup
//! removed) by systemd; so the scope is started with the pod's shim, which lives as long as the
//! pod, and the shim is then moved into the leaf [`SHIM_LEAF`] (cgroup v2 allows processes only
//! in leaves once controllers are enabled below). Containers are child cgroups of the scope,
//! as with the cgroupfs driver, rather than scopes of their own: berth reads a container's
//! cgroup after its process exited (OOM kill, final stats), which a scope would not outlive.
//!
//! The D-Bus calls use cgroups-rs's systemd client (zbus); resource limits are set as unit
//! properties where systemd has one (`CPUWeight`, `CPUQuotaPerSecUSec`, `MemoryMax`,
//! `TasksMax`) and written to the cgroup files as well (everything else: cpuset, hugetlb,
//! swap, unified keys, the device filter), as runc does.

use std::time::{Duration, Instant};

use cgroups_rs::systemd::Property;
use cgroups_rs::systemd::props::PropertiesBuilder;
use cgroups_rs::systemd::{SystemdClient, utils::expand_slice};

use super::resources::{CgroupResources, Limit};
use super::{CgroupError, normalize_path};

/// The leaf of a pod scope that holds the pod's shim.
pub const SHIM_LEAF: &str = "berth-shim";

/// The slice pods go to when the pod names no `cgroup_parent`.
pub const DEFAULT_SLICE: &str = "berth.slice";

/// How long a started scope may take to appear in the cgroup tree.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The unit name of a pod's scope.
fn pod_scope(pod_id: &str) -> String {
    format!("berth-{pod_id}.scope")
}

/// The slice a `cgroup_parent` names: a slice unit name (`kubepods-besteffort-pod1.slice`, what
/// kubelet sends) or its expanded path (`/kubepods.slice/kubepods-besteffort.slice/…`); empty
/// means [`DEFAULT_SLICE`]. Anything else is refused naming the expected form.
pub fn parent_slice(parent: &str) -> Result<String, CgroupError> {
    let trimmed = parent.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(DEFAULT_SLICE.to_string());
    }
    let invalid = |reason: &str| CgroupError::InvalidPath {
        path: parent.to_string(),
        reason: reason.to_string(),
    };
    let name = trimmed.rsplit('/').next().unwrap_or(trimmed);
    if !name.ends_with(".slice") || name == ".slice" {
        return Err(invalid(
            "the systemd cgroup driver takes a slice, e.g. kubepods-besteffort-pod<uid>.slice",
        ));
    }
    let expanded = expand_slice(name).map_err(|_| {
        invalid("not a valid slice name (dash-separated non-empty parts ending in .slice)")
    })?;
    if trimmed.contains('/') && trimmed != expanded {
        return Err(invalid(&format!(
            "a slice path must be the slice's expansion, {expanded}"
        )));
    }
    normalize_path(&expanded)?;
    Ok(name.to_string())
}

/// The cgroup path (relative to the hierarchy roots) of a pod's scope under `parent`.
pub fn pod_path(parent: &str, pod_id: &str) -> Result<String, CgroupError> {
    let slice = parent_slice(parent)?;
    let expanded = expand_slice(&slice).map_err(|_| CgroupError::InvalidPath {
        path: parent.to_string(),
        reason: "not a valid slice name".into(),
    })?;
    Ok(format!("{expanded}/{}", pod_scope(pod_id)))
}

/// The scope unit a cgroup path ends in, with its slice: `Some(("x.slice", "berth-1.scope"))`.
pub fn scope_of(path: &str) -> Option<(String, String)> {
    let path = path.trim_matches('/');
    let (dir, unit) = path.rsplit_once('/').unwrap_or(("", path));
    if !unit.ends_with(".scope") {
        return None;
    }
    let slice = dir.rsplit('/').next().filter(|s| !s.is_empty());
    Some((slice.unwrap_or("-.slice").to_string(), unit.to_string()))
}

fn dbus_err(unit: &str, action: &str) -> impl Fn(String) -> CgroupError {
    let (unit, action) = (unit.to_string(), action.to_string());
    move |reason| CgroupError::Systemd {
        unit: unit.clone(),
        action: action.clone(),
        reason,
    }
}

/// Whether systemd answers on the system bus (the driver's precondition, checked at start).
pub fn check_available() -> Result<(), CgroupError> {
    let client = SystemdClient::new("-.slice", Vec::new())
        .map_err(|e| dbus_err("-.slice", "connect to")(e.to_string()))?;
    if client.exists() {
        Ok(())
    } else {
        Err(dbus_err("-.slice", "look up")(
            "systemd does not answer on the D-Bus system bus (is systemd PID 1 and dbus running?)"
                .into(),
        ))
    }
}

/// The unit properties systemd has for `r` (the cgroup files are written as well).
fn resource_properties(r: &CgroupResources) -> Vec<Property<'static>> {
    let mut props = Vec::new();
    if let Some(shares) = r.cpu_shares.filter(|s| *s > 0) {
        props.push((
            "CPUWeight",
            super::resources::cpu_shares_to_weight(shares).into(),
        ));
    }
    if let Some(quota) = r.cpu_quota.filter(|q| *q > 0) {
        let period = r
            .cpu_period
            .filter(|p| *p > 0)
            .unwrap_or(super::resources::DEFAULT_CPU_PERIOD);
        // systemd takes the quota per second, in microseconds.
        let per_sec = (quota.unsigned_abs()).saturating_mul(1_000_000) / period;
        props.push(("CPUQuotaPerSecUSec", per_sec.into()));
    }
    if let Limit::Value(bytes) = Limit::from_cri(r.memory_limit) {
        props.push(("MemoryMax", bytes.into()));
    }
    if let Limit::Value(n) = Limit::from_cri(r.pids_limit) {
        props.push(("TasksMax", n.into()));
    }
    props
}

/// Starts the transient scope `unit` in `slice` holding `pid`, with `Delegate=yes` and the
/// resource properties of `r`; waits until its cgroup `exists` and systemd has moved `pid`
/// into it (systemd makes the directory first and attaches the process after: moving the process
/// on before that would see it put back).
pub(crate) fn start_scope(
    slice: &str,
    unit: &str,
    pid: u32,
    r: &CgroupResources,
    exists: impl Fn() -> bool,
) -> Result<(), CgroupError> {
    let mut props = PropertiesBuilder::default_cgroup(slice, unit)
        .description(format!("berth pod {unit}"))
        .pids(vec![pid])
        .build();
    props.extend(resource_properties(r));
    let client =
        SystemdClient::new(unit, props).map_err(|e| dbus_err(unit, "prepare")(e.to_string()))?;
    client
        .start()
        .map_err(|e| dbus_err(unit, "start transient unit")(e.to_string()))?;
    let deadline = Instant::now() + START_TIMEOUT;
    let attached = || {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .is_ok_and(|c| c.lines().any(|l| l.ends_with(&format!("/{unit}"))))
    };
    while !(exists() && attached()) {
        if Instant::now() > deadline {
            let _ = client.stop();
            return Err(CgroupError::Timeout {
                cgroup: unit.to_string(),
                what: format!("systemd creating the scope's cgroup with process {pid} in it"),
                waited: START_TIMEOUT,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Stops `unit` (systemd kills what is left in it and removes its cgroup) and clears a failed
/// state; a unit that does not exist is fine.
pub(crate) fn stop_unit(unit: &str) -> Result<(), CgroupError> {
    let client = SystemdClient::new(unit, Vec::new())
        .map_err(|e| dbus_err(unit, "prepare")(e.to_string()))?;
    client
        .stop()
        .map_err(|e| dbus_err(unit, "stop unit")(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_slices_expand_as_systemd_does() {
        assert_eq!(
            pod_path("kubepods-burstable-pod1234.slice", "abc").expect("path"),
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/berth-abc.scope"
        );
        assert_eq!(
            pod_path("/kubepods.slice/kubepods-besteffort.slice", "x").expect("path"),
            "kubepods.slice/kubepods-besteffort.slice/berth-x.scope"
        );
        assert_eq!(
            pod_path("", "x").expect("path"),
            "berth.slice/berth-x.scope"
        );
    }

    #[test]
    fn parents_that_are_not_slices_are_refused() {
        for bad in [
            "kubepods/besteffort/pod1",
            "kubepods-.slice",
            "-kubepods.slice",
            "/kubepods.slice/kubepods-burstable-pod1.slice",
            "a/../b.slice",
            ".slice",
        ] {
            let err = parent_slice(bad).expect_err(bad);
            assert!(
                matches!(err, CgroupError::InvalidPath { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn scope_and_slice_are_read_back_from_a_path() {
        assert_eq!(
            scope_of("kubepods.slice/kubepods-x.slice/berth-1.scope"),
            Some(("kubepods-x.slice".into(), "berth-1.scope".into()))
        );
        assert_eq!(scope_of("berth/berth-1"), None);
    }

    #[test]
    fn limits_become_unit_properties() {
        let r = CgroupResources {
            cpu_shares: Some(1024),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            memory_limit: Some(64 << 20),
            pids_limit: Some(-1),
            ..Default::default()
        };
        let props = resource_properties(&r);
        let get = |k: &str| {
            props
                .iter()
                .find(|(n, _)| *n == k)
                .and_then(|(_, v)| v.try_clone().ok())
        };
        assert_eq!(get("CPUWeight"), Some(39u64.into()));
        assert_eq!(get("CPUQuotaPerSecUSec"), Some(500_000u64.into()));
        assert_eq!(get("MemoryMax"), Some((64u64 << 20).into()));
        assert_eq!(get("TasksMax"), None, "unlimited is systemd's default");
    }
}
