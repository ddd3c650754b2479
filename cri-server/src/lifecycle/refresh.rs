//! Asking about a Running container: its pod's shim answers, or the exit record the shim left
//! does; a shim that is gone means the pod's shim died. [`recorded`] reads only the exit
//! record, for answers that must not wake every shim (ListContainers).

use std::time::Duration;

use proto::shim::{ContainerRef, ShimRequest, shim_request::Kind};
use runtime_core::shim::client;

use crate::lifecycle::record::{finish, mark_exited};
use crate::state::DaemonState;
use crate::store::containers::{ContainerPhase, ContainerRecord};

const SHIM_TIMEOUT: Duration = Duration::from_secs(5);

/// Updates a Running record from the exit record its shim writes when the container exits,
/// without asking the shim; returns it. The shim writes the record as it reaps the container,
/// before it would answer that it exited, so this is what the shim would say, except when the
/// shim itself died: the exit watcher's sweep (`exits::sweep`, every 10 s) and every
/// [`refresh`] notice that.
pub fn recorded(state: &DaemonState, rec: ContainerRecord) -> ContainerRecord {
    if rec.phase != ContainerPhase::Running {
        return rec;
    }
    match runtime_core::shim::containers::read_status(&rec.status_path) {
        Ok(info) if info.exited => finish(state, rec, &info),
        _ => rec,
    }
}

/// Updates a Running record from the shim (or the shim's exit record); returns it.
pub async fn refresh(state: &DaemonState, rec: ContainerRecord) -> ContainerRecord {
    if rec.phase != ContainerPhase::Running {
        return rec;
    }
    let Some(pod) = state.pods.get(&rec.pod_id) else {
        return mark_exited(state, rec, None, "Unknown", "the container's pod is gone");
    };
    let socket = pod.host.shim_socket.clone();
    let request = ShimRequest {
        kind: Some(Kind::ContainerState(ContainerRef { id: rec.id.clone() })),
    };
    let answer = client::request(&socket, request, SHIM_TIMEOUT).await;
    let recorded = || runtime_core::shim::containers::read_status(&rec.status_path);
    match answer {
        Ok(resp) => match resp.container {
            Some(info) if info.exited => finish(state, rec, &info),
            _ => rec,
        },
        // The shim is gone: the exit it recorded, else the shim died before it could.
        Err(e) if e.is_gone() => match recorded() {
            Ok(info) if info.exited => finish(state, rec, &info),
            _ => {
                crate::lifecycle::shim_death::shim_died(state, &pod);
                let id = rec.id.clone();
                state.containers.get(&id).unwrap_or(rec)
            }
        },
        // A busy or slow shim: still running as far as berthd knows, unless it recorded the exit.
        _ => match recorded() {
            Ok(info) if info.exited => finish(state, rec, &info),
            _ => rec,
        },
    }
}
