//! `UpdateContainerResources`: live cgroup limit changes.

use proto::cri::{UpdateContainerResourcesRequest, UpdateContainerResourcesResponse};
use tonic::Status;

use crate::errors::{area, not_implemented};
use crate::state::DaemonState;

pub async fn update_container_resources(
    _state: &DaemonState,
    _req: &UpdateContainerResourcesRequest,
) -> Result<UpdateContainerResourcesResponse, Status> {
    Err(not_implemented("UpdateContainerResources", area::UPDATES))
}
