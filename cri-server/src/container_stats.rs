//! `ContainerStats` and `ListContainerStats`.

use proto::cri::{
    ContainerStatsRequest, ContainerStatsResponse, ListContainerStatsRequest,
    ListContainerStatsResponse,
};
use tonic::Status;

use crate::errors::{area, not_implemented};
use crate::state::DaemonState;

pub async fn container_stats(
    _state: &DaemonState,
    _req: &ContainerStatsRequest,
) -> Result<ContainerStatsResponse, Status> {
    Err(not_implemented("ContainerStats", area::STATS))
}

pub async fn list_container_stats(
    _state: &DaemonState,
    _req: &ListContainerStatsRequest,
) -> Result<ListContainerStatsResponse, Status> {
    Err(not_implemented("ListContainerStats", area::STATS))
}
