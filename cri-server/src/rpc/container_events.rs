//! `GetContainerEvents`: the container lifecycle event stream for kubelet's evented PLEG
//! (the events are published by `lifecycle::events`).

use std::pin::Pin;

use proto::cri::{ContainerEventResponse, GetEventsRequest};
use tokio_stream::Stream;
use tonic::Status;

use crate::state::DaemonState;

/// The server-streaming answer of `GetContainerEvents`.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<ContainerEventResponse, Status>> + Send>>;

/// Subscribes the caller to every event from now on (the request has no fields).
pub async fn get_container_events(
    state: &DaemonState,
    _req: &GetEventsRequest,
) -> Result<EventStream, Status> {
    let sub = state.events.subscribe()?;
    Ok(Box::pin(sub))
}
