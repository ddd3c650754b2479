//! Removing a container: forcibly stop it if running, then remove its root, cgroup, state and
//! record.

use std::time::Duration;

use crate::error::Error;
use proto::shim::{ContainerRef, ShimRequest, shim_request::Kind};
use runtime_core::shim::client;
use tracing::info;

use crate::container::stop;
use crate::state::DaemonState;
use crate::store::containers::ContainerRecord;

/// Removes a container (caller holds its lock).
/// For a container of an OCI runtime handler pod, deletes the runtime's record and the bundle
/// if its shim could not (it died): a no-op when the shim already did.
async fn forget_in_oci_runtime(state: &DaemonState, rec: &ContainerRecord) {
    let Some(pod) = state.pods.get(&rec.pod_id) else {
        return;
    };
    let Ok(Some(runtime)) =
        crate::container::handler::oci_runtime(&state.config, &pod.runtime_handler)
    else {
        return;
    };
    let cli = runtime_core::oci::Cli::new(runtime);
    let (id, rootfs) = (rec.id.clone(), rec.rootfs.clone());
    let done = tokio::task::spawn_blocking(move || runtime_core::oci::cleanup(&cli, &id, &rootfs));
    if let Ok(Err(e)) = done.await {
        tracing::warn!(container_id = %rec.id, error = %e, "OCI runtime cleanup");
    }
}

pub async fn remove(state: &DaemonState, rec: ContainerRecord) -> Result<(), Error> {
    let rec = stop::stop(state, rec, Duration::ZERO).await?;
    if let Some(pod) = state.pods.get(&rec.pod_id) {
        let request = ShimRequest {
            kind: Some(Kind::RemoveContainer(ContainerRef { id: rec.id.clone() })),
        };
        let socket = pod.host.shim_socket.clone();
        let answer = client::request(&socket, request, Duration::from_secs(10)).await;
        if let Err(e) = answer
            && !e.is_gone()
        {
            return Err(Error::internal(format!("remove container {}: {e}", rec.id)));
        }
    }
    // The shim unmounts the root; if the shim is gone, do it here.
    forget_in_oci_runtime(state, &rec).await;
    let _ = runtime_core::executor::cleanup_rootfs(&rec.rootfs);
    let _ = std::fs::remove_dir(&rec.rootfs);
    state.pod_runtime.remove_container_cgroup(&rec.cgroup);
    state
        .images
        .release(&rec.id)
        .await
        .map_err(|e| Error::internal(format!("release image of {}: {e}", rec.id)))?;
    crate::container::mounts::release(state, &rec).await?;
    state
        .containers
        .remove(&rec.id)
        .map_err(|e| Error::internal(format!("remove state of container {}: {e}", rec.id)))?;
    info!(container_id = %rec.id, "RemoveContainer");
    crate::nri_hooks::remove_container(state, None, &rec).await; // NRI
    crate::lifecycle::events::emit(
        state,
        &rec.id,
        &rec.pod_id,
        proto::cri::ContainerEventType::ContainerDeletedEvent,
    );
    Ok(())
}
