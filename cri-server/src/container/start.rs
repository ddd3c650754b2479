//! Starting a container: build its cgroup, mounts and security settings and ask the
//! pod's shim to start it. A start that fails leaves the container Exited with reason
//! `StartError` and the precise cause.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;
use proto::cri::{self, ContainerEventType, NamespaceMode};
use proto::shim::{MountSpec, ShimRequest, StartContainer, shim_request::Kind};
use runtime_core::executor;
use runtime_core::shim::client;
use runtime_core::steps::StepClock;
use tracing::{info, warn};

use crate::container::cgroup;
use crate::lifecycle::events;
use crate::lifecycle::record;
use crate::state::DaemonState;
use crate::store::containers::{ContainerPhase, ContainerRecord};
use crate::store::ids::now_ns;
use crate::store::pods::{PodPhase, PodRecord};

/// How long a shim may take to start a container.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts Created container `id`: its cgroup, then the shim starts the process. A failure
/// leaves it Exited with reason `StartError` (or Created again if only recording it failed).
pub async fn start(state: &DaemonState, id: &str) -> Result<(), Error> {
    let mut clock = StepClock::start();
    let lock = state.containers.lock_for(id);
    let _guard = lock.lock().await;
    let mut rec = record::find(state, id)?;
    if rec.phase != ContainerPhase::Created {
        return Err(Error::failed_precondition(format!(
            "container {} is {:?}, not Created: create a new container to run again",
            rec.id, rec.phase
        )));
    }
    let pod = crate::lifecycle::record::find_pod(state, &rec.pod_id)?;
    if pod.phase != PodPhase::Ready {
        return Err(Error::failed_precondition(format!(
            "pod sandbox {} is not ready",
            pod.id
        )));
    }
    let target_pid_ns = target_pid_namespace(state, &rec)?;
    clock.mark("find");
    crate::nri_hooks::start_container(state, &pod, &rec).await?; // NRI
    clock.mark("nri");
    let (limits, devices) = cgroup::limits(&rec.config)?;
    let (cgroup_path, procs) = cgroup::ensure(state, &pod, &rec, &limits).await?;
    clock.mark("cgroup");
    // A path the record does not name yet (recovery cleared it): made now, so recorded.
    if rec.cgroup != cgroup_path {
        rec.cgroup = cgroup_path;
        // Recorded before the shim starts anything, so that a crash from here on leaves a
        // record naming the cgroup that start-up recovery reconciles with the shim.
        // Live state: the cgroup does not outlive a machine crash (see `update_live`).
        if let Err(e) = state.containers.update_live(rec.clone()) {
            state.pod_runtime.remove_container_cgroup(&rec.cgroup);
            return Err(Error::io(&format!("record container {id}"), &e));
        }
    }
    clock.mark("record_created");
    failpoint::hit("start_container.before_shim");
    let mut msg = start_message(&rec, &pod, procs)?;
    if let Some(path) = target_pid_ns {
        msg.pid_ns_path = path;
    }
    msg.mounts.extend(devices.iter().map(|d| d.mount.clone()));
    // For an OCI runtime handler, which joins and configures the cgroup itself.
    msg.cgroup_path = rec.cgroup.clone();
    msg.device_rules = limits.device_rules.clone().unwrap_or_default();
    let socket = pod.host.shim_socket.clone();
    let request = ShimRequest {
        kind: Some(Kind::StartContainer(msg)),
    };
    clock.mark("message");
    let answer = client::request(&socket, request, START_TIMEOUT).await;
    clock.mark("shim");
    failpoint::hit("start_container.after_shim");
    match answer.map(|r| r.container) {
        Ok(Some(info)) => {
            let created = rec.clone();
            rec.phase = ContainerPhase::Running;
            rec.pid = info.pid;
            rec.started_at = info.started_at;
            if let Err(e) = state.containers.update_live(rec.clone()) {
                // Running but not recorded (the disk is full, say): take the start back.
                undo_start(state, &created, &pod.host.shim_socket).await;
                return Err(Error::io(
                    &format!("record container {id} as running (the start was undone)"),
                    &e,
                ));
            }
            clock.mark("record_running");
            info!(container_id = %id, pid = info.pid, "StartContainer");
            crate::nri_hooks::post_start_container(state, &pod, &rec).await; // NRI
            events::emit(
                state,
                &rec.id,
                &rec.pod_id,
                ContainerEventType::ContainerStartedEvent,
            );
            // It may already have exited: watch, then look for a record written before.
            state.exits.watch(&rec);
            crate::lifecycle::exits::check(state, &rec.id);
            clock.mark("post_start");
            clock.extend("shim/", &info.start_steps);
            state
                .metrics
                .record_steps("StartContainer", id, clock.steps());
            Ok(())
        }
        Ok(None) => Err(start_failed(state, rec, "shim answered without the container").await),
        Err(e) => {
            let message = match e {
                client::ShimError::Refused { message, .. } => message,
                other => other.to_string(),
            };
            Err(start_failed(state, rec, &message).await)
        }
    }
}

/// Takes back a start whose Running record could not be saved: kills the process, has the
/// shim forget it (which unmounts its root), removes its cgroup and any exit record, so the
/// container is Created again and the start can be retried.
async fn undo_start(state: &DaemonState, rec: &ContainerRecord, socket: &std::path::Path) {
    let ask = |kind: Kind| {
        let request = ShimRequest { kind: Some(kind) };
        client::request(socket, request, Duration::from_secs(5))
    };
    let id = rec.id.clone();
    let kill = proto::shim::SignalContainer {
        id: id.clone(),
        signal: libc::SIGKILL,
    };
    let _ = ask(Kind::SignalContainer(kill)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let answer = ask(Kind::ContainerState(proto::shim::ContainerRef {
            id: id.clone(),
        }))
        .await;
        match answer {
            Ok(r) if r.container.as_ref().is_some_and(|c| !c.exited) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => break,
        }
    }
    if let Err(e) = ask(Kind::RemoveContainer(proto::shim::ContainerRef { id })).await {
        warn!(container_id = %rec.id, error = %e, "undo start: shim did not forget the container");
    }
    state.pod_runtime.remove_container_cgroup(&rec.cgroup);
    let _ = std::fs::remove_file(&rec.status_path);
}

async fn start_failed(state: &DaemonState, mut rec: ContainerRecord, message: &str) -> Error {
    warn!(container_id = %rec.id, error = message, "container failed to start");
    state.pod_runtime.remove_container_cgroup(&rec.cgroup);
    rec.phase = ContainerPhase::Exited;
    rec.exit_code = 128;
    rec.reason = "StartError".into();
    rec.message = message.to_string();
    rec.finished_at = now_ns();
    let (id, pod_id) = (rec.id.clone(), rec.pod_id.clone());
    let nri_rec = rec.clone();
    if let Err(e) = persist(state, rec) {
        return e;
    }
    crate::nri_hooks::container_stopped(state, &nri_rec); // NRI
    events::emit(
        state,
        &id,
        &pod_id,
        ContainerEventType::ContainerStoppedEvent,
    );
    Error::failed_precondition(format!("start container {id}: {message}"))
}

fn persist(state: &DaemonState, rec: ContainerRecord) -> Result<(), Error> {
    let id = rec.id.clone();
    state
        .containers
        .update(rec)
        .map_err(|e| Error::io(&format!("record container {id}"), &e))
}

/// The seccomp setting for the shim: (0 unconfined | 1 runtime default | 2 localhost, path).
/// No profile means unconfined (kubelet's default); privileged containers are unconfined.
/// A Localhost profile is compiled here once so a bad one fails with its reason.
pub fn seccomp_setting(sc: &cri::LinuxContainerSecurityContext) -> Result<(i32, String), Error> {
    use cri::security_profile::ProfileType;
    // Deprecated in the CRI but still honoured, as containerd does, when `seccomp` is unset.
    #[allow(deprecated)]
    let legacy = legacy_seccomp(&sc.seccomp_profile_path)?;
    let Some(p) = sc
        .seccomp
        .as_ref()
        .or(legacy.as_ref())
        .filter(|_| !sc.privileged)
    else {
        return Ok((0, String::new()));
    };
    match ProfileType::try_from(p.profile_type) {
        Ok(ProfileType::Unconfined) => Ok((0, String::new())),
        Ok(ProfileType::RuntimeDefault) => Ok((1, String::new())),
        Ok(ProfileType::Localhost) => {
            let profile =
                runtime_core::seccomp::SeccompProfile::Localhost(p.localhost_ref.clone().into());
            runtime_core::seccomp::compile(&profile)
                .map_err(|e| Error::invalid(format!("linux.security_context.seccomp: {e}")))?;
            Ok((2, p.localhost_ref.clone()))
        }
        Err(_) => Err(Error::invalid(format!(
            "linux.security_context.seccomp.profile_type: unknown type {}",
            p.profile_type
        ))),
    }
}

/// The deprecated `seccomp_profile_path` (`runtime/default`, `docker/default`, `unconfined`,
/// `localhost/<path>`), used as containerd does when `seccomp` is unset.
fn legacy_seccomp(path: &str) -> Result<Option<cri::SecurityProfile>, Error> {
    use cri::security_profile::ProfileType;
    let (profile_type, localhost_ref) = match path {
        "" => return Ok(None),
        "runtime/default" | "docker/default" => (ProfileType::RuntimeDefault, String::new()),
        "unconfined" => (ProfileType::Unconfined, String::new()),
        p => match p.strip_prefix("localhost/") {
            Some(file) if file.starts_with('/') => (ProfileType::Localhost, file.to_string()),
            _ => {
                return Err(Error::invalid(format!(
                    "linux.security_context.seccomp_profile_path `{path}`: expected runtime/default, docker/default, unconfined or localhost/<absolute path>"
                )));
            }
        },
    };
    Ok(Some(cri::SecurityProfile {
        profile_type: profile_type as i32,
        localhost_ref,
    }))
}

/// The AppArmor setting for the shim, checked against the host (a named profile on a host
/// without AppArmor is refused).
pub fn apparmor_setting(sc: &cri::LinuxContainerSecurityContext) -> Result<(i32, String), Error> {
    use cri::security_profile::ProfileType;
    use runtime_core::apparmor::{self, AppArmorProfile};
    let Some(p) = sc.apparmor.as_ref().filter(|_| !sc.privileged) else {
        return Ok((0, String::new()));
    };
    let (kind, profile) = match ProfileType::try_from(p.profile_type) {
        Ok(ProfileType::Unconfined) => return Ok((0, String::new())),
        Ok(ProfileType::RuntimeDefault) => (1, AppArmorProfile::RuntimeDefault),
        Ok(ProfileType::Localhost) => (2, AppArmorProfile::Localhost(p.localhost_ref.clone())),
        Err(_) => {
            return Err(Error::invalid(format!(
                "linux.security_context.apparmor.profile_type: unknown type {}",
                p.profile_type
            )));
        }
    };
    apparmor::validate(&profile)
        .map_err(|e| Error::invalid(format!("linux.security_context.apparmor: {e}")))?;
    Ok((kind, p.localhost_ref.clone()))
}

/// For a container whose PID namespace mode is TARGET (`kubectl debug --target`): the PID
/// namespace of the running container `target_id` of the same pod, as a `/proc` path the shim
/// joins. The target's process is checked to still be in its cgroup, so a recycled PID is
/// never joined. None for other modes.
fn target_pid_namespace(
    state: &DaemonState,
    rec: &ContainerRecord,
) -> Result<Option<String>, Error> {
    let field = "config.linux.security_context.namespace_options";
    let Some(ns) = rec
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .filter(|n| n.pid == NamespaceMode::Target as i32)
    else {
        return Ok(None);
    };
    if ns.target_id.is_empty() {
        return Err(Error::invalid(format!(
            "{field}.target_id is required when pid is TARGET"
        )));
    }
    let target = state
        .containers
        .find(&ns.target_id)
        .filter(|t| t.pod_id == rec.pod_id)
        .ok_or_else(|| {
            Error::not_found(format!(
                "{field}.target_id: container {} not found in pod sandbox {}",
                ns.target_id, rec.pod_id
            ))
        })?;
    let running = target.phase == ContainerPhase::Running && target.pid > 0;
    let in_cgroup = running
        && (target.cgroup.is_empty()
            || std::fs::read_to_string(format!("/proc/{}/cgroup", target.pid))
                .is_ok_and(|c| c.contains(target.cgroup.trim_start_matches('/'))));
    if !in_cgroup {
        return Err(Error::failed_precondition(format!(
            "{field}.target_id: container {} is not running",
            target.id
        )));
    }
    Ok(Some(format!("/proc/{}/ns/pid", target.pid)))
}

pub(crate) fn start_message(
    rec: &ContainerRecord,
    pod: &PodRecord,
    cgroup_procs: Vec<PathBuf>,
) -> Result<StartContainer, Error> {
    let sc = rec
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default();
    let pod_ns = pod.namespace_options();
    let pid_mode = match NamespaceMode::try_from(
        sc.namespace_options.as_ref().map_or(pod_ns.pid, |n| n.pid),
    ) {
        Ok(NamespaceMode::Pod) if pod.host.ns_dir.join("pid").exists() => 1,
        Ok(NamespaceMode::Node) => 2,
        // The target container's namespace: `pid_ns_path` is filled in by StartContainer.
        Ok(NamespaceMode::Target) => 3,
        _ => 0,
    };
    let (capabilities, all_capabilities) = capabilities(&sc)?;
    let (userns_uids, userns_gids) = crate::container::userns::to_proto(
        crate::container::userns::pod_user_namespace(&pod.config)?.as_ref(),
    );
    let seccomp = seccomp_setting(&sc)?;
    let apparmor = apparmor_setting(&sc)?;
    let (masked, readonly) = if sc.privileged {
        (Vec::new(), Vec::new())
    } else {
        (
            if sc.masked_paths.is_empty() {
                executor::default_masked_paths()
            } else {
                sc.masked_paths.clone()
            },
            if sc.readonly_paths.is_empty() {
                executor::default_readonly_paths()
            } else {
                sc.readonly_paths.clone()
            },
        )
    };
    let oom = rec
        .config
        .linux
        .as_ref()
        .and_then(|l| l.resources.as_ref())
        .map(|r| r.oom_score_adj);
    Ok(StartContainer {
        id: rec.id.clone(),
        lower: rec.lower.iter().map(|p| p.display().to_string()).collect(),
        upper: rec.upper.display().to_string(),
        work: rec.work.display().to_string(),
        rootfs: rec.rootfs.display().to_string(),
        readonly_rootfs: sc.readonly_rootfs,
        mounts: mounts(rec, pod),
        restore_dir: crate::container::restore::restore_dir(rec),
        pod_net: pod.host.netns.is_some(),
        pod_ipc: pod.host.ns_dir.join("ipc").exists(),
        pod_uts: pod.host.ns_dir.join("uts").exists(),
        pid_mode,
        pid_ns_path: String::new(),
        args: rec.process.args.clone(),
        env: rec.process.env.clone(),
        cwd: rec.process.cwd.clone(),
        uid: rec.process.uid,
        gid: rec.process.gid,
        additional_gids: rec.process.additional_gids.clone(),
        capabilities,
        all_capabilities,
        no_new_privs: sc.no_new_privs,
        privileged: sc.privileged,
        masked_paths: masked,
        readonly_paths: readonly,
        has_oom_score_adj: oom.is_some_and(|v| v != 0),
        oom_score_adj: oom.unwrap_or(0) as i32,
        cgroup_procs: cgroup_procs
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        log_path: rec.log_path.clone(),
        log_directory: rec.log_directory.clone(),
        status_path: rec.status_path.display().to_string(),
        tty: rec.config.tty,
        seccomp: seccomp.0,
        seccomp_profile: seccomp.1,
        apparmor: apparmor.0,
        apparmor_profile: apparmor.1,
        stdin: rec.config.stdin,
        stdin_once: rec.config.stdin_once,
        userns_uids,
        userns_gids,
        cgroup_path: String::new(),
        device_rules: Vec::new(),
    })
}

/// The capability set: everything when privileged, else the default set with `add`
/// (`ALL` = every capability) and `drop` (`ALL` = none) applied; names with or without `CAP_`.
fn capabilities(sc: &cri::LinuxContainerSecurityContext) -> Result<(Vec<String>, bool), Error> {
    if sc.privileged {
        return Ok((Vec::new(), true));
    }
    let norm = |c: &str| {
        let up = c.to_ascii_uppercase();
        if up.starts_with("CAP_") || up == "ALL" {
            up
        } else {
            format!("CAP_{up}")
        }
    };
    let caps = sc.capabilities.clone().unwrap_or_default();
    let add: Vec<String> = caps.add_capabilities.iter().map(|c| norm(c)).collect();
    let drop: Vec<String> = caps.drop_capabilities.iter().map(|c| norm(c)).collect();
    if add.iter().any(|c| c == "ALL") && !drop.iter().any(|c| c == "ALL") && drop.is_empty() {
        return Ok((Vec::new(), true));
    }
    let mut set = if drop.iter().any(|c| c == "ALL") {
        Vec::new()
    } else {
        executor::default_capabilities()
    };
    for c in add.iter().filter(|c| *c != "ALL") {
        if !set.contains(c) {
            set.push(c.clone());
        }
    }
    set.retain(|c| !drop.contains(c));
    Ok((set, false))
}

/// CRI mounts plus the pod's hosts, resolv.conf and hostname files (unless kubelet mounts its
/// own at those paths).
fn mounts(rec: &ContainerRecord, pod: &PodRecord) -> Vec<MountSpec> {
    let mut out: Vec<MountSpec> = Vec::new();
    for (dest, file) in [
        ("/etc/hosts", "hosts"),
        ("/etc/resolv.conf", "resolv.conf"),
        ("/etc/hostname", "hostname"),
    ] {
        if rec.config.mounts.iter().any(|m| m.container_path == dest) {
            continue;
        }
        out.push(MountSpec {
            destination: dest.into(),
            source: pod.host.files_dir.join(file).display().to_string(),
            readonly: false,
            ..Default::default()
        });
    }
    for (i, m) in rec.config.mounts.iter().enumerate() {
        out.push(crate::container::mounts::mount_spec(rec, i, m));
    }
    out
}
