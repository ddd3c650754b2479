//! NRI in berthd: the calls the CRI RPCs make at the points containerd makes them, the
//! conversion of berth's pod and container records to NRI's types, and the adjustments and
//! updates plugins ask for, applied to berth's records (see docs/nri.md for what is applied
//! and what is refused).
//!
//! Every function is a no-op when `[nri] enable` is false. Events that can veto the call
//! (`RunPodSandbox`, `CreateContainer`, `StartContainer`, `UpdateContainer`) fail it with
//! the plugin's error; the others are notifications whose failures are logged.

use crate::error::Error;
use nri::api;
use proto::cri;
use tracing::warn;

use crate::state::DaemonState;
use crate::store::containers::{ContainerPhase, ContainerRecord};
use crate::store::pods::PodRecord;

/// Held from a pod's or container's first NRI event until its record is written, so a
/// plugin synchronizing meanwhile either finds it or gets its events (`None`: NRI is off).
pub async fn guard(state: &DaemonState) -> Option<tokio::sync::RwLockReadGuard<'_, ()>> {
    match &state.nri {
        Some(h) => Some(h.nri.guard().await),
        None => None,
    }
}

fn vetoed(e: nri::NriError) -> Error {
    Error::failed_precondition(e.to_string())
}

/// `RunPodSandbox`: after the pod's namespaces and network exist, before it is Ready.
pub async fn run_pod_sandbox(state: &DaemonState, pod: &PodRecord) -> Result<(), Error> {
    let Some(h) = &state.nri else { return Ok(()) };
    h.nri
        .run_pod_sandbox(&pod_sandbox(pod))
        .await
        .map_err(vetoed)
}

/// `StopPodSandbox`: once per pod, after its containers stopped, while it is still listed.
pub async fn stop_pod_sandbox(state: &DaemonState, pod: &PodRecord) {
    let Some(h) = &state.nri else { return };
    if let Err(e) = h.nri.stop_pod_sandbox(&pod_sandbox(pod)).await {
        warn!(pod_id = %pod.id, error = %e, "NRI StopPodSandbox");
    }
}

/// `RemovePodSandbox`: after the pod is removed.
pub async fn remove_pod_sandbox(state: &DaemonState, pod: &PodRecord) {
    let Some(h) = &state.nri else { return };
    if let Err(e) = h.nri.remove_pod_sandbox(&pod_sandbox(pod)).await {
        warn!(pod_id = %pod.id, error = %e, "NRI RemovePodSandbox");
    }
}

/// `CreateContainer`: before the container is recorded; applies the plugins' adjustments to
/// `rec` and returns the updates they asked for other containers (apply them with
/// [`post_create_container`] once the container is recorded).
pub async fn create_container(
    state: &DaemonState,
    pod: &PodRecord,
    rec: &mut ContainerRecord,
) -> Result<Vec<api::ContainerUpdate>, Error> {
    let Some(h) = &state.nri else {
        return Ok(Vec::new());
    };
    let (adjustments, updates) = match h
        .nri
        .create_container(&pod_sandbox(pod), &container(rec))
        .await
    {
        Ok(answers) => answers,
        Err(e) => {
            // Plugins that answered before the failing one saw a container that will not exist.
            undo_create(state, pod, rec).await;
            return Err(vetoed(e));
        }
    };
    for (plugin, adjust) in &adjustments {
        if let Err(e) = apply_adjustment(rec, adjust) {
            // The plugins saw a container that will not exist.
            undo_create(state, pod, rec).await;
            return Err(Error::failed_precondition(format!(
                "NRI plugin {plugin}: adjustment refused: {e}"
            )));
        }
    }
    Ok(updates)
}

/// Tells plugins a container they were asked to adjust was not created after all.
pub async fn undo_create(state: &DaemonState, pod: &PodRecord, rec: &ContainerRecord) {
    let Some(h) = &state.nri else { return };
    if let Err(e) = h
        .nri
        .remove_container(&pod_sandbox(pod), &container(rec))
        .await
    {
        warn!(container_id = %rec.id, error = %e, "NRI RemoveContainer (creation undone)");
    }
}

/// `PostCreateContainer`, after applying the updates `CreateContainer` asked for.
pub async fn post_create_container(
    state: &DaemonState,
    pod: &PodRecord,
    rec: &ContainerRecord,
    updates: Vec<api::ContainerUpdate>,
) {
    let Some(h) = &state.nri else { return };
    h.nri.apply_updates(updates).await;
    if let Err(e) = h
        .nri
        .post_create_container(&pod_sandbox(pod), &container(rec))
        .await
    {
        warn!(container_id = %rec.id, error = %e, "NRI PostCreateContainer");
    }
}

/// `StartContainer`: before the process starts; a plugin's error fails the start.
pub async fn start_container(
    state: &DaemonState,
    pod: &PodRecord,
    rec: &ContainerRecord,
) -> Result<(), Error> {
    let Some(h) = &state.nri else { return Ok(()) };
    h.nri
        .start_container(&pod_sandbox(pod), &container(rec))
        .await
        .map_err(vetoed)
}

/// `PostStartContainer`: after the process started.
pub async fn post_start_container(state: &DaemonState, pod: &PodRecord, rec: &ContainerRecord) {
    let Some(h) = &state.nri else { return };
    if let Err(e) = h
        .nri
        .post_start_container(&pod_sandbox(pod), &container(rec))
        .await
    {
        warn!(container_id = %rec.id, error = %e, "NRI PostStartContainer");
    }
}

/// `UpdateContainer`: before the update; returns the updates plugins asked for (applied
/// after the CRI update with [`post_update_container`]).
pub async fn update_container(
    state: &DaemonState,
    id: &str,
    new: &cri::LinuxContainerResources,
) -> Result<Vec<api::ContainerUpdate>, Error> {
    let Some(h) = &state.nri else {
        return Ok(Vec::new());
    };
    let Some(rec) = state.containers.get(id) else {
        return Ok(Vec::new());
    };
    let Some(pod) = state.pods.get(&rec.pod_id) else {
        return Ok(Vec::new());
    };
    h.nri
        .update_container(&pod_sandbox(&pod), &container(&rec), &resources(new))
        .await
        .map_err(vetoed)
}

/// `PostUpdateContainer`, after applying the updates `UpdateContainer` asked for.
pub async fn post_update_container(
    state: &DaemonState,
    id: &str,
    updates: Vec<api::ContainerUpdate>,
) {
    let Some(h) = &state.nri else { return };
    h.nri.apply_updates(updates).await;
    let Some(rec) = state.containers.get(id) else {
        return;
    };
    let Some(pod) = state.pods.get(&rec.pod_id) else {
        return;
    };
    if let Err(e) = h
        .nri
        .post_update_container(&pod_sandbox(&pod), &container(&rec))
        .await
    {
        warn!(container_id = %id, error = %e, "NRI PostUpdateContainer");
    }
}

/// A container stopped (by `StopContainer`, on its own, or with its pod): relays
/// `StopContainer` once, in the background.
pub fn container_stopped(state: &DaemonState, rec: &ContainerRecord) {
    let Some(h) = &state.nri else { return };
    let Some(pod) = state.pods.get(&rec.pod_id) else {
        return;
    };
    let (nri, cell) = (h.nri.clone(), h.stop_cell(&rec.id));
    let (pod, ctr) = (pod_sandbox(&pod), container(rec));
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move { relay_stop(&nri, &cell, &pod, &ctr).await });
}

async fn relay_stop(
    nri: &nri::Nri,
    cell: &tokio::sync::OnceCell<()>,
    pod: &api::PodSandbox,
    ctr: &api::Container,
) {
    cell.get_or_init(|| async {
        match nri.stop_container(pod, ctr).await {
            Ok(updates) => nri.apply_updates(updates).await,
            Err(e) => warn!(container_id = %ctr.id, error = %e, "NRI StopContainer"),
        }
    })
    .await;
}

/// `RemoveContainer`: after the container is removed; its stop is relayed first if that
/// has not happened yet (a container never started, say).
pub async fn remove_container(state: &DaemonState, pod: Option<&PodRecord>, rec: &ContainerRecord) {
    let Some(h) = &state.nri else { return };
    let pod = match pod {
        Some(p) => pod_sandbox(p),
        None => match state.pods.get(&rec.pod_id) {
            Some(p) => pod_sandbox(&p),
            None => api::PodSandbox {
                id: rec.pod_id.clone(),
                ..Default::default()
            },
        },
    };
    let ctr = container(rec);
    let cell = h.stop_cell(&rec.id);
    relay_stop(&h.nri, &cell, &pod, &ctr).await;
    h.stops
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&rec.id);
    if let Err(e) = h.nri.remove_container(&pod, &ctr).await {
        warn!(container_id = %rec.id, error = %e, "NRI RemoveContainer");
    }
}

/// A pod as NRI sees it.
pub fn pod_sandbox(rec: &PodRecord) -> api::PodSandbox {
    let m = rec.metadata();
    let linux = rec.config.linux.clone().unwrap_or_default();
    api::PodSandbox {
        id: rec.id.clone(),
        name: m.name,
        uid: m.uid,
        namespace: m.namespace,
        labels: rec.config.labels.clone(),
        annotations: rec.config.annotations.clone(),
        runtime_handler: rec.runtime_handler.clone(),
        linux: Some(api::LinuxPodSandbox {
            pod_overhead: linux.overhead.as_ref().map(resources),
            pod_resources: linux.resources.as_ref().map(resources),
            cgroup_parent: linux.cgroup_parent.clone(),
            cgroups_path: rec.host.cgroup.clone(),
            namespaces: rec
                .host
                .netns
                .iter()
                .map(|p| api::LinuxNamespace {
                    r#type: "network".into(),
                    path: p.display().to_string(),
                })
                .collect(),
            resources: None,
        }),
        pid: rec.host.shim_pid,
        ips: rec.host.ips.clone(),
    }
}

/// A container as NRI sees it.
pub fn container(rec: &ContainerRecord) -> api::Container {
    let c = &rec.config;
    let res = c.linux.as_ref().and_then(|l| l.resources.as_ref());
    api::Container {
        id: rec.id.clone(),
        pod_sandbox_id: rec.pod_id.clone(),
        name: rec.metadata().name,
        state: match rec.phase {
            ContainerPhase::Created => api::ContainerState::ContainerCreated,
            ContainerPhase::Running => api::ContainerState::ContainerRunning,
            ContainerPhase::Exited => api::ContainerState::ContainerStopped,
        } as i32,
        labels: c.labels.clone(),
        annotations: c.annotations.clone(),
        args: rec.process.args.clone(),
        env: rec.process.env.clone(),
        mounts: c
            .mounts
            .iter()
            .map(|m| {
                let mut options = vec!["rbind".to_string()];
                options.push(if m.readonly { "ro" } else { "rw" }.into());
                match cri::MountPropagation::try_from(m.propagation) {
                    Ok(cri::MountPropagation::PropagationHostToContainer) => {
                        options.push("rslave".into())
                    }
                    Ok(cri::MountPropagation::PropagationBidirectional) => {
                        options.push("rshared".into())
                    }
                    _ => options.push("rprivate".into()),
                }
                api::Mount {
                    destination: m.container_path.clone(),
                    r#type: "bind".into(),
                    source: m.host_path.clone(),
                    options,
                }
            })
            .collect(),
        hooks: None,
        linux: Some(api::LinuxContainer {
            resources: res.map(resources),
            oom_score_adj: res.map(|r| api::OptionalInt {
                value: r.oom_score_adj,
            }),
            cgroups_path: rec.cgroup.clone(),
            ..Default::default()
        }),
        pid: rec.pid,
        rlimits: Vec::new(),
        created_at: rec.created_at,
        started_at: rec.started_at,
        finished_at: rec.finished_at,
        exit_code: rec.exit_code,
        status_reason: rec.reason.clone(),
        status_message: rec.message.clone(),
        cdi_devices: Vec::new(),
        user: Some(api::User {
            uid: rec.process.uid,
            gid: rec.process.gid,
            additional_gids: rec.process.additional_gids.clone(),
        }),
    }
}

/// CRI resources as NRI's (unset where CRI says "not given": zero or empty).
fn resources(r: &cri::LinuxContainerResources) -> api::LinuxResources {
    let i64v = |v: i64| (v != 0).then_some(api::OptionalInt64 { value: v });
    let u64v = |v: i64| (v > 0).then_some(api::OptionalUInt64 { value: v as u64 });
    api::LinuxResources {
        memory: Some(api::LinuxMemory {
            limit: i64v(r.memory_limit_in_bytes),
            swap: i64v(r.memory_swap_limit_in_bytes),
            ..Default::default()
        }),
        cpu: Some(api::LinuxCpu {
            shares: u64v(r.cpu_shares),
            quota: i64v(r.cpu_quota),
            period: u64v(r.cpu_period),
            cpus: r.cpuset_cpus.clone(),
            mems: r.cpuset_mems.clone(),
            ..Default::default()
        }),
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|h| api::HugepageLimit {
                page_size: h.page_size.clone(),
                limit: h.limit,
            })
            .collect(),
        unified: r.unified.clone(),
        ..Default::default()
    }
}

/// Sets the fields NRI `src` sets on CRI resources `dst`; refuses what berth cannot apply.
pub fn apply_resources(
    dst: &mut cri::LinuxContainerResources,
    src: &api::LinuxResources,
) -> Result<(), String> {
    let mut refused = Vec::new();
    if let Some(m) = &src.memory {
        if let Some(v) = &m.limit {
            dst.memory_limit_in_bytes = v.value;
        }
        if let Some(v) = &m.swap {
            dst.memory_swap_limit_in_bytes = v.value;
        }
        for (name, set) in [
            ("memory.reservation", m.reservation.is_some()),
            ("memory.kernel", m.kernel.is_some()),
            ("memory.kernel_tcp", m.kernel_tcp.is_some()),
            ("memory.swappiness", m.swappiness.is_some()),
            ("memory.disable_oom_killer", m.disable_oom_killer.is_some()),
            ("memory.use_hierarchy", m.use_hierarchy.is_some()),
        ] {
            if set {
                refused.push(name);
            }
        }
    }
    if let Some(c) = &src.cpu {
        if let Some(v) = &c.shares {
            dst.cpu_shares = i64::try_from(v.value).map_err(|_| "cpu.shares out of range")?;
        }
        if let Some(v) = &c.quota {
            dst.cpu_quota = v.value;
        }
        if let Some(v) = &c.period {
            dst.cpu_period = i64::try_from(v.value).map_err(|_| "cpu.period out of range")?;
        }
        if !c.cpus.is_empty() {
            dst.cpuset_cpus = c.cpus.clone();
        }
        if !c.mems.is_empty() {
            dst.cpuset_mems = c.mems.clone();
        }
        if c.realtime_runtime.is_some() || c.realtime_period.is_some() {
            refused.push("cpu.realtime_*");
        }
    }
    for h in &src.hugepage_limits {
        dst.hugepage_limits.retain(|x| x.page_size != h.page_size);
        dst.hugepage_limits.push(cri::HugepageLimit {
            page_size: h.page_size.clone(),
            limit: h.limit,
        });
    }
    for (k, v) in &src.unified {
        dst.unified.insert(k.clone(), v.clone());
    }
    for (name, set) in [
        ("blockio_class", src.blockio_class.is_some()),
        ("rdt_class", src.rdt_class.is_some()),
        ("devices", !src.devices.is_empty()),
        ("pids", src.pids.is_some()),
    ] {
        if set {
            refused.push(name);
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "resources {} are not supported",
            refused.join(", ")
        ))
    }
}

/// Applies one plugin's adjustment to a container being created. Keys starting with `-`
/// remove (annotations, env, mounts, devices), as NRI marks removals.
fn apply_adjustment(rec: &mut ContainerRecord, a: &api::ContainerAdjustment) -> Result<(), String> {
    let removal = |k: &str| k.strip_prefix('-').map(str::to_string);
    for (k, v) in &a.annotations {
        match removal(k) {
            Some(k) => {
                rec.config.annotations.remove(&k);
            }
            None => {
                rec.config.annotations.insert(k.clone(), v.clone());
            }
        }
    }
    for m in &a.mounts {
        if let Some(dest) = removal(&m.destination) {
            // Image volumes are recorded by mount index: removing would shift them.
            if !rec.image_volumes.is_empty() {
                return Err(format!(
                    "mount {dest}: removing mounts of a container with image volumes is not supported"
                ));
            }
            rec.config.mounts.retain(|x| x.container_path != dest);
            continue;
        }
        let bind = m.r#type.is_empty()
            || m.r#type == "bind"
            || m.options.iter().any(|o| o == "bind" || o == "rbind");
        if !bind {
            return Err(format!(
                "mount {}: type `{}` is not supported (bind mounts only)",
                m.destination, m.r#type
            ));
        }
        for (what, p) in [("destination", &m.destination), ("source", &m.source)] {
            let path = std::path::Path::new(p);
            if !path.is_absolute()
                || path
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
            {
                return Err(format!(
                    "mount {what} `{p}` must be absolute and without `..`"
                ));
            }
        }
        let has = |o: &str| m.options.iter().any(|x| x == o);
        let propagation = if has("rshared") || has("shared") {
            cri::MountPropagation::PropagationBidirectional
        } else if has("rslave") || has("slave") {
            cri::MountPropagation::PropagationHostToContainer
        } else {
            cri::MountPropagation::PropagationPrivate
        };
        let mount = cri::Mount {
            container_path: m.destination.clone(),
            host_path: m.source.clone(),
            readonly: has("ro"),
            propagation: propagation as i32,
            ..Default::default()
        };
        // Replaced in place (image volumes are recorded by mount index), else added.
        match rec
            .config
            .mounts
            .iter_mut()
            .find(|x| x.container_path == m.destination)
        {
            Some(x) if x.image.is_some() => {
                return Err(format!("mount {}: replaces an image volume", m.destination));
            }
            Some(x) => *x = mount,
            None => rec.config.mounts.push(mount),
        }
    }
    for kv in &a.env {
        let key = kv.key.strip_prefix('-').unwrap_or(&kv.key);
        if key.is_empty() || key.contains('=') {
            return Err(format!("env: invalid name `{}`", kv.key));
        }
        let prefix = format!("{key}=");
        rec.process.env.retain(|e| !e.starts_with(&prefix));
        if !kv.key.starts_with('-') {
            rec.process.env.push(format!("{key}={}", kv.value));
        }
    }
    if !a.args.is_empty() {
        rec.process.args = a.args.clone();
    }
    let mut refused = Vec::new();
    if a.hooks
        .as_ref()
        .is_some_and(|h| *h != api::Hooks::default())
    {
        refused.push("OCI hooks");
    }
    if !a.rlimits.is_empty() {
        refused.push("rlimits");
    }
    if !a.cdi_devices.is_empty() {
        refused.push("CDI devices");
    }
    if let Some(l) = &a.linux {
        let linux = rec
            .config
            .linux
            .get_or_insert_with(cri::LinuxContainerConfig::default);
        for d in &l.devices {
            match removal(&d.path) {
                Some(p) => rec.config.devices.retain(|x| x.container_path != p),
                None => {
                    rec.config.devices.retain(|x| x.container_path != d.path);
                    rec.config.devices.push(cri::Device {
                        container_path: d.path.clone(),
                        host_path: d.path.clone(),
                        permissions: "rwm".into(),
                    });
                }
            }
        }
        let res = linux.resources.get_or_insert_with(Default::default);
        if let Some(r) = &l.resources {
            apply_resources(res, r)?;
        }
        if let Some(o) = &l.oom_score_adj {
            res.oom_score_adj = o.value;
        }
        for (name, set) in [
            ("cgroups_path", !l.cgroups_path.is_empty()),
            ("io_priority", l.io_priority.is_some()),
            ("seccomp_policy", l.seccomp_policy.is_some()),
            ("namespaces", !l.namespaces.is_empty()),
            ("sysctl", !l.sysctl.is_empty()),
            ("net_devices", !l.net_devices.is_empty()),
            ("scheduler", l.scheduler.is_some()),
            ("rdt", l.rdt.is_some()),
            ("memory_policy", l.memory_policy.is_some()),
        ] {
            if set {
                refused.push(name);
            }
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(format!("{} not supported by berth", refused.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ContainerRecord {
        ContainerRecord {
            id: "c1".into(),
            pod_id: "p1".into(),
            config: cri::ContainerConfig::default(),
            image: "i".into(),
            image_id: "sha256:x".into(),
            image_ref: "i".into(),
            process: crate::store::containers::ProcessSpec {
                args: vec!["sh".into()],
                env: vec!["A=1".into(), "B=2".into()],
                cwd: "/".into(),
                uid: 0,
                gid: 0,
                additional_gids: Vec::new(),
            },
            phase: ContainerPhase::Created,
            created_at: 1,
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            pid: 0,
            lower: Vec::new(),
            upper: "/u".into(),
            work: "/w".into(),
            rootfs: "/r".into(),
            cgroup: String::new(),
            log_path: String::new(),
            log_directory: String::new(),
            status_path: "/s".into(),
            stop_signal: 15,
            image_volumes: Vec::new(),
        }
    }

    #[test]
    fn env_annotations_and_bind_mounts_are_applied_and_removals_honoured() {
        let mut rec = record();
        rec.config.annotations.insert("old".into(), "x".into());
        let a = api::ContainerAdjustment {
            annotations: [("new".into(), "y".into()), ("-old".into(), String::new())].into(),
            env: vec![
                api::KeyValue {
                    key: "A".into(),
                    value: "9".into(),
                },
                api::KeyValue {
                    key: "-B".into(),
                    value: String::new(),
                },
                api::KeyValue {
                    key: "C".into(),
                    value: "3".into(),
                },
            ],
            mounts: vec![api::Mount {
                destination: "/data".into(),
                r#type: "bind".into(),
                source: "/tmp".into(),
                options: vec!["rbind".into(), "ro".into()],
            }],
            ..Default::default()
        };
        apply_adjustment(&mut rec, &a).expect("applied");
        assert_eq!(rec.process.env, vec!["A=9", "C=3"]);
        assert_eq!(
            rec.config.annotations.get("new").map(String::as_str),
            Some("y")
        );
        assert!(!rec.config.annotations.contains_key("old"));
        assert_eq!(rec.config.mounts.len(), 1);
        assert!(rec.config.mounts[0].readonly);
        assert_eq!(rec.config.mounts[0].host_path, "/tmp");
    }

    #[test]
    fn unsupported_adjustments_are_refused_by_name() {
        let mut rec = record();
        let a = api::ContainerAdjustment {
            rlimits: vec![api::PosixRlimit {
                r#type: "RLIMIT_NOFILE".into(),
                hard: 1,
                soft: 1,
            }],
            mounts: vec![],
            ..Default::default()
        };
        let err = apply_adjustment(&mut rec, &a).expect_err("refused");
        assert!(err.contains("rlimits"), "{err}");
        let tmpfs = api::ContainerAdjustment {
            mounts: vec![api::Mount {
                destination: "/t".into(),
                r#type: "tmpfs".into(),
                source: "tmpfs".into(),
                options: vec![],
            }],
            ..Default::default()
        };
        let err = apply_adjustment(&mut record(), &tmpfs).expect_err("tmpfs");
        assert!(err.contains("tmpfs"), "{err}");
        let escape = api::ContainerAdjustment {
            mounts: vec![api::Mount {
                destination: "/t/../../etc".into(),
                r#type: "bind".into(),
                source: "/".into(),
                options: vec![],
            }],
            ..Default::default()
        };
        assert!(apply_adjustment(&mut record(), &escape).is_err());
    }

    #[test]
    fn resources_round_trip_and_memory_limit_applies() {
        let cri_res = cri::LinuxContainerResources {
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            cpuset_cpus: "0".into(),
            ..Default::default()
        };
        let mut back = cri::LinuxContainerResources::default();
        apply_resources(&mut back, &resources(&cri_res)).expect("apply");
        assert_eq!(back, cri_res);
        let pids = api::LinuxResources {
            pids: Some(api::LinuxPids { limit: 10 }),
            ..Default::default()
        };
        assert!(
            apply_resources(&mut back, &pids)
                .unwrap_err()
                .contains("pids")
        );
    }
}
