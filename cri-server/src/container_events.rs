//! `GetContainerEvents`: the container lifecycle event stream for kubelet's evented PLEG.

use std::pin::Pin;

use proto::cri::{ContainerEventResponse, GetEventsRequest};
use tokio_stream::Stream;
use tonic::Status;

use crate::errors::{area, not_implemented};
use crate::state::DaemonState;

/// The server-streaming answer of `GetContainerEvents`.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<ContainerEventResponse, Status>> + Send>>;

pub async fn get_container_events(
    _state: &DaemonState,
    _req: &GetEventsRequest,
) -> Result<EventStream, Status> {
    Err(not_implemented("GetContainerEvents", area::EVENTS))
}
