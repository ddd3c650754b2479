//! `CreateContainer`: check the request (required fields, mount paths, security settings,
//! fields berth refuses), take a checkpoint archive's request in its place
//! (`container/restore.rs`), and let the container's home create it
//! (`container::create`, which undoes what it did on failure). Nothing runs yet: the root
//! is mounted and the process started by `StartContainer`.

use std::path::{Component, Path};

use proto::cri::{ContainerConfig, CreateContainerRequest, CreateContainerResponse};
use tonic::Status;

use crate::pod::spec::selinux_enabled;
use crate::state::DaemonState;

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
    let id =
        crate::container::create::create(state, &req.pod_sandbox_id, config, restoring.as_ref())
            .await?;
    Ok(CreateContainerResponse { container_id: id })
}

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

/// Every CRI mount needs an absolute, `..`-free container path and an absolute host path.
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
