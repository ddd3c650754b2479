//! A container's cgroup: its limits (the CRI resources and a device filter), made in
//! CreateContainer, as `runc create` makes it in containerd's, so that StartContainer only has
//! the shim put the process in it; StartContainer makes it itself when it is missing (start-up
//! recovery removes the cgroup of a container whose start a crash cut short).

use std::path::PathBuf;

use crate::error::Error;
use proto::cri;
use proto::shim::MountSpec;
use runtime_core::cgroups::CgroupResources;

use crate::state::DaemonState;
use crate::store::containers::ContainerRecord;
use crate::store::pods::PodRecord;

/// A made container cgroup: its path and `cgroup.procs` files (what the shim's child joins).
pub(crate) type Made = (String, Vec<PathBuf>);

/// The container's cgroup limits, with the host devices its config grants (each checked to
/// be a device node on the host).
pub(crate) fn limits(
    config: &cri::ContainerConfig,
) -> Result<(CgroupResources, Vec<DeviceGrant>), Error> {
    let devices = devices(config)?;
    let mut limits = resources(config);
    limits.device_rules = Some(device_rules(config, &devices));
    Ok((limits, devices))
}

/// The path container `id`'s cgroup has under its pod's. Fails closed: no cgroup means no
/// device filter, and berth starts no container without one.
pub(crate) fn path(state: &DaemonState, pod: &PodRecord, id: &str) -> Result<String, Error> {
    state
        .pod_runtime
        .container_cgroup_path(&pod.host.cgroup, id)
        .ok_or_else(|| {
            Error::failed_precondition(format!(
                "container {id}: pod {} has no cgroup; berth does not start containers without a device cgroup",
                pod.id
            ))
        })
}

/// Starts making cgroup `path` with `limits` on a blocking thread (it runs whether or not the
/// returned future is polled); the future gives its `cgroup.procs` files. A cgroup that
/// cannot be made (the kernel refused a limit) is not left behind.
pub(crate) fn make(
    state: &DaemonState,
    path: &str,
    limits: CgroupResources,
) -> impl Future<Output = Result<Vec<PathBuf>, Error>> + use<> {
    let made = state.pod_runtime.make_container_cgroup(path, limits);
    async move {
        made.await
            .map_err(|e| Error::invalid(format!("config.linux.resources: {e}")))
    }
}

/// The cgroup StartContainer puts `rec`'s process in: the one CreateContainer made, or one
/// made now (with `limits`) when it is missing.
pub(crate) async fn ensure(
    state: &DaemonState,
    pod: &PodRecord,
    rec: &ContainerRecord,
    limits: &CgroupResources,
) -> Result<Made, Error> {
    if !rec.cgroup.is_empty() {
        let procs = state.pod_runtime.container_cgroup_procs(&rec.cgroup);
        if !procs.is_empty() {
            return Ok((rec.cgroup.clone(), procs));
        }
    }
    let path = path(state, pod, &rec.id)?;
    let procs = make(state, &path, limits.clone()).await?;
    Ok((path, procs))
}

/// A host device given to the container.
pub(crate) struct DeviceGrant {
    rule: String,
    pub mount: MountSpec,
}

/// The CRI `devices`, checked on the host: each must be a character or block device node.
fn devices(config: &cri::ContainerConfig) -> Result<Vec<DeviceGrant>, Error> {
    use nix::sys::stat::{SFlag, major, minor, stat};
    let mut out = Vec::new();
    for (i, d) in config.devices.iter().enumerate() {
        let field = format!("config.devices[{i}]");
        if !d.container_path.starts_with('/') {
            return Err(Error::invalid(format!(
                "{field}.container_path `{}` must be absolute",
                d.container_path
            )));
        }
        let st = stat(d.host_path.as_str())
            .map_err(|e| Error::invalid(format!("{field}.host_path `{}`: {e}", d.host_path)))?;
        let kind = match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFCHR => 'c',
            SFlag::S_IFBLK => 'b',
            _ => {
                return Err(Error::invalid(format!(
                    "{field}.host_path `{}` is not a device node",
                    d.host_path
                )));
            }
        };
        let perms = if d.permissions.is_empty() {
            "rwm".to_string()
        } else {
            d.permissions.clone()
        };
        if perms.chars().any(|c| !"rwm".contains(c)) {
            return Err(Error::invalid(format!(
                "{field}.permissions `{perms}` must be made of r, w and m"
            )));
        }
        out.push(DeviceGrant {
            rule: format!("{kind} {}:{} {perms}", major(st.st_rdev), minor(st.st_rdev)),
            mount: MountSpec {
                destination: d.container_path.clone(),
                source: d.host_path.clone(),
                readonly: !perms.contains('w'),
                ..Default::default()
            },
        });
    }
    Ok(out)
}

/// The device cgroup rules: every device for privileged containers, else runc's default set
/// (mknod of any node, use of null/zero/full/random/urandom/tty/ptmx/pts/tun) plus the grants.
fn device_rules(config: &cri::ContainerConfig, grants: &[DeviceGrant]) -> Vec<String> {
    let privileged = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|s| s.privileged);
    if privileged {
        return vec!["a".into()];
    }
    let defaults = [
        "c *:* m",
        "b *:* m",
        "c 1:3 rwm",
        "c 1:5 rwm",
        "c 1:7 rwm",
        "c 1:8 rwm",
        "c 1:9 rwm",
        "c 5:0 rwm",
        "c 5:2 rwm",
        "c 136:* rwm",
        "c 10:200 rwm",
    ];
    let mut rules: Vec<String> = defaults.iter().map(|r| r.to_string()).collect();
    rules.extend(grants.iter().map(|g| g.rule.clone()));
    rules
}

/// The container cgroup's limits from its CRI resources.
fn resources(config: &cri::ContainerConfig) -> CgroupResources {
    match config.linux.as_ref().and_then(|l| l.resources.as_ref()) {
        Some(r) => cgroup_resources(r),
        None => CgroupResources::default(),
    }
}

/// CRI container resources as cgroup limits (zero and empty fields leave a limit unset).
pub fn cgroup_resources(r: &cri::LinuxContainerResources) -> CgroupResources {
    let pos = |v: i64| (v > 0).then_some(v);
    CgroupResources {
        cpu_shares: pos(r.cpu_shares).map(|v| v as u64),
        // -1: no quota (what lifts an earlier quota on update).
        cpu_quota: (r.cpu_quota != 0).then_some(r.cpu_quota.max(-1)),
        cpu_period: pos(r.cpu_period).map(|v| v as u64),
        cpuset_cpus: (!r.cpuset_cpus.is_empty()).then(|| r.cpuset_cpus.clone()),
        cpuset_mems: (!r.cpuset_mems.is_empty()).then(|| r.cpuset_mems.clone()),
        memory_limit: pos(r.memory_limit_in_bytes),
        memory_swap_limit: pos(r.memory_swap_limit_in_bytes),
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|h| (h.page_size.clone(), h.limit))
            .collect(),
        unified: r.unified.clone().into_iter().collect(),
        ..Default::default()
    }
}
