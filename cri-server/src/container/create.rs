//! Creating a container: under its pod's lock, with the pod Ready, resolve the image and
//! derive the process, build the record (log path, upper/work directories, image volumes),
//! let NRI plugins adjust it, make its cgroup while reserving its name and writing the
//! record, make its writable layer's directories (or move a checkpoint's in), and hold its
//! image. A failure after the reservation undoes each finished step (the cgroup, the record,
//! NRI's create) so nothing of the container remains. Nothing runs yet: the root is mounted
//! and the process started by [`super::start`] (as `runc create` makes the cgroup in
//! containerd's CreateContainer, which also takes it off StartContainer's path). The CRI
//! request is checked before this by `rpc/container_create.rs`.

use std::path::{Component, Path, PathBuf};

use crate::error::Error;
use proto::cri::{ContainerConfig, ContainerEventType};
use tracing::info;

use crate::container::cgroup;
use crate::container::restore::Restoring;
use crate::container::spec::process_spec;
use crate::state::DaemonState;
use crate::store::containers::{ContainerPhase, ContainerRecord};
use crate::store::ids::{new_id, now_ns};
use crate::store::pods::{PodPhase, ReserveError};

/// Creates the container `config` describes in pod `pod_sandbox_id` (from a checkpoint when
/// `restoring`) and returns its ID; on any failure nothing of it remains.
pub async fn create(
    state: &DaemonState,
    pod_sandbox_id: &str,
    config: &ContainerConfig,
    restoring: Option<&Restoring>,
) -> Result<String, Error> {
    let name = config
        .metadata
        .as_ref()
        .map(|m| m.name.as_str())
        .unwrap_or_default();
    let image_name = config
        .image
        .as_ref()
        .map(|i| i.image.as_str())
        .unwrap_or_default();
    // Under the pod's lock, so the pod cannot be stopped or removed (leaving this container
    // behind) between the check that it is ready and the container's record.
    let pod = crate::lifecycle::record::find_pod(state, pod_sandbox_id)?;
    if pod.phase == PodPhase::Creating {
        // Still being created (RunPodSandbox holds its lock): not ready, do not wait.
        return Err(Error::failed_precondition(format!(
            "pod sandbox {} is not ready",
            pod.id
        )));
    }
    let pod_id = pod.id;
    let pod_lock = state.pods.lock_for(&pod_id);
    let _pod_guard = pod_lock.lock().await;
    let pod = crate::lifecycle::record::find_pod(state, &pod_id)?;
    if pod.phase != PodPhase::Ready {
        return Err(Error::failed_precondition(format!(
            "pod sandbox {} is not ready",
            pod.id
        )));
    }
    let pod_userns = crate::container::userns::pod_user_namespace(&pod.config)?;
    crate::container::userns::check_container(config, pod_userns.as_ref())?;
    let image_volumes = crate::container::mounts::check(state, config)?;
    let image = state.images.resolve(image_name).ok_or_else(|| {
        Error::not_found(format!("image `{image_name}` not found: pull it first"))
    })?;
    let (image_config, _) = state.images.config(&image)?;
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
    // The cgroup, with the limits as NRI left them, is made on a blocking thread while the
    // record (which names it) is written.
    let cgroup = match cgroup::limits(&rec.config)
        .and_then(|(limits, _)| Ok((cgroup::path(state, &pod, &id)?, limits)))
    {
        Ok((path, limits)) => {
            rec.cgroup = path;
            cgroup::make(state, &rec.cgroup, limits)
        }
        Err(e) => {
            crate::nri_hooks::undo_create(state, &pod, &rec).await; // NRI
            return Err(e);
        }
    };
    if let Err(e) = crate::store::containers::reserve(&state.containers, rec.clone()) {
        let _ = cgroup.await;
        state.pod_runtime.remove_container_cgroup(&rec.cgroup);
        crate::nri_hooks::undo_create(state, &pod, &rec).await; // NRI
        return Err(match e {
            ReserveError::Conflict(existing) => Error::already_exists(format!(
                "container `{name}` (attempt {}) already exists in pod sandbox {} as {existing}",
                rec.metadata().attempt,
                pod.id
            )),
            ReserveError::Io(e) => Error::io(&format!("record container {id}"), &e),
        });
    }
    failpoint::hit("create_container.after_record");
    let made = cgroup.await.and_then(|_| {
        for d in [&rec.upper, &rec.work] {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::io(&format!("create {}", d.display()), &e))?;
        }
        restoring.map_or(Ok(()), |r| r.apply(&rec))
    });
    if let Err(e) = made {
        let _ = state.containers.remove(&id);
        state.pod_runtime.remove_container_cgroup(&rec.cgroup);
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
    Ok(id)
}

/// Where the container's log goes: the pod's log directory joined with the config's path, as
/// containerd's CRI plugin composes it (`filepath.Join`): no log unless both are set, and an
/// absolute `log_path` is taken relative to the directory. Unlike containerd, a `log_path` with
/// a `..` component is refused: it could name a file outside the log directory (`/etc/...`),
/// which the shim, running as root, would create and append to.
fn log_path(dir: &str, path: &str) -> Result<String, Error> {
    if Path::new(path)
        .components()
        .any(|c| c == Component::ParentDir)
    {
        return Err(Error::invalid(format!(
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
            assert_eq!(err.kind(), crate::error::Kind::Invalid);
            assert!(
                err.message().contains("config.log_path"),
                "{}",
                err.message()
            );
        }
    }
}
