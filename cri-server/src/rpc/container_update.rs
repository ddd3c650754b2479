//! `UpdateContainerResources`: NRI plugins see the update first, then the container's home
//! applies it (`container::update`).

use proto::cri::{UpdateContainerResourcesRequest, UpdateContainerResourcesResponse};
use tonic::Status;

use crate::container::update::update_resources;
use crate::lifecycle::record::find;
use crate::state::DaemonState;

pub async fn update_container_resources(
    state: &DaemonState,
    req: &UpdateContainerResourcesRequest,
) -> Result<UpdateContainerResourcesResponse, Status> {
    // --- NRI (nri_hooks): UpdateContainer before, plugins' updates and PostUpdate after ---
    let nri_updates = match (req.container_id.is_empty(), req.linux.as_ref()) {
        (false, Some(new)) => {
            let id = find(state, &req.container_id)?.id;
            crate::nri_hooks::update_container(state, &id, new).await?
        }
        _ => Vec::new(),
    };
    let resp = update_resources(state, req).await?;
    crate::nri_hooks::post_update_container(state, &req.container_id, nri_updates).await;
    // --- end NRI ---
    Ok(resp)
}
