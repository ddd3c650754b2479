//! Stopping a container: the image's stop signal (default SIGTERM), then SIGKILL after the
//! timeout; returns once the container is dead.

use std::time::{Duration, Instant};

use crate::error::Error;
use proto::shim::{ShimRequest, SignalContainer, shim_request::Kind};
use runtime_core::shim::client;
use tracing::info;

use crate::lifecycle::refresh::refresh;
use crate::state::DaemonState;
use crate::store::containers::{ContainerPhase, ContainerRecord};

/// How long berthd waits for a SIGKILLed container to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Stops a running container (caller holds its lock).
pub async fn stop(
    state: &DaemonState,
    rec: ContainerRecord,
    timeout: Duration,
) -> Result<ContainerRecord, Error> {
    let rec = refresh(state, rec).await;
    if rec.phase != ContainerPhase::Running {
        return Ok(rec);
    }
    if !timeout.is_zero() {
        signal(state, &rec, rec.stop_signal).await?;
        if let Some(done) = wait_exit(state, &rec, timeout).await {
            info!(container_id = %rec.id, "StopContainer: exited after the stop signal");
            return Ok(done);
        }
    }
    signal(state, &rec, libc::SIGKILL).await?;
    match wait_exit(state, &rec, KILL_WAIT).await {
        Some(done) => {
            info!(container_id = %rec.id, "StopContainer: killed");
            Ok(done)
        }
        None => Err(Error::deadline_exceeded(format!(
            "container {} did not die within {KILL_WAIT:?} of SIGKILL",
            rec.id
        ))),
    }
}

async fn signal(state: &DaemonState, rec: &ContainerRecord, signal: i32) -> Result<(), Error> {
    let pod = state
        .pods
        .get(&rec.pod_id)
        .ok_or_else(|| Error::not_found(format!("pod sandbox {} not found", rec.pod_id)))?;
    let request = ShimRequest {
        kind: Some(Kind::SignalContainer(SignalContainer {
            id: rec.id.clone(),
            signal,
        })),
    };
    let socket = pod.host.shim_socket.clone();
    let answer = client::request(&socket, request, Duration::from_secs(5)).await;
    match answer {
        Ok(_) => Ok(()),
        // A gone shim means a gone container: the refresh that follows records it.
        Err(e) if e.is_gone() => Ok(()),
        Err(e) => Err(Error::internal(e.to_string())),
    }
}

async fn wait_exit(
    state: &DaemonState,
    rec: &ContainerRecord,
    timeout: Duration,
) -> Option<ContainerRecord> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = refresh(state, rec.clone()).await;
        if now.phase == ContainerPhase::Exited {
            return Some(now);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
