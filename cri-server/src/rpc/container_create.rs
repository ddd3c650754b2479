//! `CreateContainer`: validate, resolve the image, derive the process, record the container.
//! Nothing runs yet: the root is mounted and the process started by `StartContainer`.

use std::path::{Component, Path, PathBuf};

use proto::cri::{
    ContainerConfig, ContainerEventType, CreateContainerRequest, CreateContainerResponse,
};
use tonic::Status;
use tracing::info;

use crate::container::spec::process_spec;
use crate::errors;
use crate::pod::spec::selinux_enabled;
use crate::state::DaemonState;
use crate::store::containers::{ContainerPhase, ContainerRecord};
use crate::store::ids::{new_id, now_ns};
use crate::store::pods::{PodPhase, ReserveError};

pub async fn create_container(
    state: &DaemonState,
    req: &CreateContainerRequest,
) -> Result<CreateContainerResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(Status::invalid_argument("pod_sandbox_id is required"));
    }
    // From a checkpoint archive: its image, process and writable layer (container/restore.rs).
    let restoring = crate::container::restore::from_archive(state, req).await?;
    let req = restoring.as_ref().map_or(req, |r| &r.request);
    let config = req
        .config
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("config is required"))?;
    let name = config
        .metadata
        .as_ref()
        .map(|m| m.name.as_str())
        .unwrap_or_default();
    if name.is_empty() {
        return Err(Status::invalid_argument("config.metadata.name is required"));
    }
    let image_name = config
        .image
        .as_ref()
        .map(|i| i.image.as_str())
        .unwrap_or_default();
    if image_name.is_empty() {
        return Err(Status::invalid_argument("config.image.image is required"));
    }
    validate_mounts(config)?;
    unsupported_fields(config)?;
    let sc = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default();
    crate::container::start::seccomp_setting(&sc)?;
    crate::container::start::apparmor_setting(&sc)?;
    // As containerd: a group alone would silently run the image's user with another group.
    if sc.run_as_group.is_some() && sc.run_as_user.is_none() && sc.run_as_username.is_empty() {
        return Err(Status::invalid_argument(
            "config.linux.security_context.run_as_group is set without run_as_user or run_as_username",
        ));
    }
    if proto::cri::Signal::try_from(config.stop_signal).is_err() {
        return Err(Status::invalid_argument(format!(
            "config.stop_signal: unknown signal {}",
            config.stop_signal
        )));
    }
    // Under the pod's lock, so the pod cannot be stopped or removed (leaving this container
    // behind) between the check that it is ready and the container's record.
    let pod = crate::lifecycle::record::find_pod(state, &req.pod_sandbox_id)?;
    if pod.phase == PodPhase::Creating {
        // Still being created (RunPodSandbox holds its lock): not ready, do not wait.
        return Err(Status::failed_precondition(format!(
            "pod sandbox {} is not ready",
            pod.id
        )));
    }
    let pod_id = pod.id;
    let pod_lock = state.pods.lock_for(&pod_id);
    let _pod_guard = pod_lock.lock().await;
    let pod = crate::lifecycle::record::find_pod(state, &pod_id)?;
    if pod.phase != PodPhase::Ready {
        return Err(Status::failed_precondition(format!(
            "pod sandbox {} is not ready",
            pod.id
        )));
    }
    let pod_userns = crate::container::userns::pod_user_namespace(&pod.config)?;
    crate::container::userns::check_container(config, pod_userns.as_ref())?;
    let image_volumes = crate::container::mounts::check(state, config)?;
    let image = state.images.resolve(image_name).ok_or_else(|| {
        Status::not_found(format!("image `{image_name}` not found: pull it first"))
    })?;
    let (image_config, _) = state.images.config(&image).map_err(errors::image_status)?;
    let lower = state.images.lower_dirs(&image);
    let process = process_spec(config, &image_config, &lower)?;
    let stop_signal = crate::view::stop_signal::effective(
        config,
        image_config
            .config
            .as_ref()
            .and_then(|c| c.stop_signal.as_deref()),
    );

    let id = new_id();
    let dir = state.containers.dir_of(&id);
    let log_path = log_path(&pod.config.log_directory, &config.log_path)?;
    let mut rec = ContainerRecord {
        id: id.clone(),
        pod_id: pod.id.clone(),
        config: config.clone(),
        image: image_name.to_string(),
        image_id: image.id.clone(),
        image_ref: image
            .repo_digests
            .first()
            .cloned()
            .unwrap_or_else(|| image.id.clone()),
        process,
        phase: ContainerPhase::Created,
        created_at: now_ns(),
        started_at: 0,
        finished_at: 0,
        exit_code: 0,
        reason: String::new(),
        message: String::new(),
        pid: 0,
        lower,
        upper: dir.join("upper"),
        work: dir.join("work"),
        rootfs: state.config.state_dir.join("rootfs").join(&id),
        cgroup: String::new(),
        log_directory: if log_path.is_empty() {
            String::new()
        } else {
            pod.config.log_directory.clone()
        },
        log_path,
        status_path: dir.join("exit.pb"),
        stop_signal,
        image_volumes,
    };
    // NRI: plugins adjust the container before it is recorded (a refusal leaves nothing).
    let _nri = crate::nri_hooks::guard(state).await; // held until the container is recorded
    let nri_updates = crate::nri_hooks::create_container(state, &pod, &mut rec).await?;
    if let Err(e) = crate::store::containers::reserve(&state.containers, rec.clone()) {
        crate::nri_hooks::undo_create(state, &pod, &rec).await; // NRI
        return Err(match e {
            ReserveError::Conflict(existing) => Status::already_exists(format!(
                "container `{name}` (attempt {}) already exists in pod sandbox {} as {existing}",
                rec.metadata().attempt,
                pod.id
            )),
            ReserveError::Io(e) => errors::io_status(&format!("record container {id}"), &e),
        });
    }
    failpoint::hit("create_container.after_record");
    for d in [&rec.upper, &rec.work] {
        if let Err(e) = std::fs::create_dir_all(d) {
            let _ = state.containers.remove(&id);
            crate::nri_hooks::undo_create(state, &pod, &rec).await; // NRI
            return Err(errors::io_status(&format!("create {}", d.display()), &e));
        }
    }
    if let Some(r) = &restoring
        && let Err(e) = r.apply(&rec)
    {
        let _ = state.containers.remove(&id);
        crate::nri_hooks::undo_create(state, &pod, &rec).await; // NRI
        return Err(e);
    }
    failpoint::hit("create_container.after_dirs");
    state.images.hold(&id, &image);
    crate::container::mounts::hold(state, &rec);
    info!(container_id = %id, pod_id = %pod.id, name, image = image_name, "CreateContainer");
    crate::nri_hooks::post_create_container(state, &pod, &rec, nri_updates).await; // NRI
    crate::lifecycle::events::emit(
        state,
        &id,
        &pod.id,
        ContainerEventType::ContainerCreatedEvent,
    );
    Ok(CreateContainerResponse { container_id: id })
}

/// Every CRI mount needs an absolute, `..`-free container path and an absolute host path.
/// Fields of the CRI berth does not act on, refused with an error naming them rather than
/// ignored (a container silently missing its device or label is worse than a clear refusal).
fn unsupported_fields(config: &ContainerConfig) -> Result<(), Status> {
    if !config.cdi_devices.is_empty() {
        return Err(Status::failed_precondition(format!(
            "config.CDI_devices: berth does not support Container Device Interface devices ({} requested)",
            config
                .cdi_devices
                .iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let sc = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    if sc.is_some_and(|s| {
        s.capabilities
            .as_ref()
            .is_some_and(|c| !c.add_ambient_capabilities.is_empty())
    }) {
        return Err(Status::failed_precondition(
            "config.linux.security_context.capabilities.add_ambient_capabilities: berth does not set ambient capabilities yet",
        ));
    }
    let relabel = config.mounts.iter().any(|m| m.selinux_relabel);
    let labelled = sc.is_some_and(|s| s.selinux_options.as_ref().is_some_and(has_label));
    if (relabel || labelled) && selinux_enabled() {
        return Err(Status::failed_precondition(
            "config.linux.security_context.selinux_options: berth does not apply SELinux labels, and SELinux is enabled on this host",
        ));
    }
    Ok(())
}

fn has_label(o: &proto::cri::SeLinuxOption) -> bool {
    !(o.user.is_empty() && o.role.is_empty() && o.r#type.is_empty() && o.level.is_empty())
}

fn validate_mounts(config: &ContainerConfig) -> Result<(), Status> {
    for (i, m) in config.mounts.iter().enumerate() {
        let clean = |p: &str| {
            let path = Path::new(p);
            path.is_absolute() && !path.components().any(|c| c == Component::ParentDir)
        };
        if !clean(&m.container_path) {
            return Err(Status::invalid_argument(format!(
                "config.mounts[{i}].container_path `{}` must be absolute and without `..`",
                m.container_path
            )));
        }
        if m.image.is_none() && !clean(&m.host_path) {
            return Err(Status::invalid_argument(format!(
                "config.mounts[{i}].host_path `{}` must be absolute and without `..`",
                m.host_path
            )));
        }
        let source = m.image.is_none().then(|| Path::new(&m.host_path));
        if runtime_core::executor::is_proc_destination(&m.container_path, source) {
            return Err(Status::invalid_argument(format!(
                "config.mounts[{i}].container_path `{}`: mounts on /proc are not allowed",
                m.container_path
            )));
        }
    }
    Ok(())
}

/// Where the container's log goes: the pod's log directory joined with the config's path, as
/// containerd's CRI plugin composes it (`filepath.Join`): no log unless both are set, and an
/// absolute `log_path` is taken relative to the directory. Unlike containerd, a `log_path` with
/// a `..` component is refused: it could name a file outside the log directory (`/etc/...`),
/// which the shim, running as root, would create and append to.
fn log_path(dir: &str, path: &str) -> Result<String, Status> {
    if Path::new(path)
        .components()
        .any(|c| c == Component::ParentDir)
    {
        return Err(Status::invalid_argument(format!(
            "config.log_path `{path}` must not contain `..`: it must stay inside the pod's log_directory"
        )));
    }
    if dir.is_empty() || path.is_empty() {
        return Ok(String::new());
    }
    let rel = path.trim_start_matches('/');
    Ok(PathBuf::from(dir).join(rel).display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_path_stays_inside_the_log_directory() {
        assert_eq!(log_path("/logs/p", "c/0.log").unwrap(), "/logs/p/c/0.log");
        assert_eq!(log_path("/logs/p", "/etc/x").unwrap(), "/logs/p/etc/x");
        assert_eq!(log_path("", "/etc/x").unwrap(), "");
        assert_eq!(log_path("/logs/p", "").unwrap(), "");
        for bad in ["../../../../etc/x", "c/../../x", "/logs/../etc/x"] {
            let err = log_path("/logs/p", bad).expect_err(bad);
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert!(
                err.message().contains("config.log_path"),
                "{}",
                err.message()
            );
        }
    }
}
