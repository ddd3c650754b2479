//! Stopping a pod: its containers are stopped with it, its host side (network, shim,
//! namespaces) is torn down by `podsandbox`, and it becomes NotReady.

use crate::error::Error;
use runtime_core::steps::StepClock;
use tracing::info;

use crate::pod::spec::pod_spec;
use crate::state::DaemonState;
use crate::store::pods::PodPhase;

/// Stops the pod if it exists; a pod already stopped is stopped again (every step is
/// idempotent), which also finishes a stop a crash interrupted.
pub async fn stop(state: &DaemonState, id: &str) -> Result<(), Error> {
    let mut clock = StepClock::start();
    let lock = state.pods.lock_for(id);
    let _guard = lock.lock().await;
    let Some(mut rec) = state.pods.get(id) else {
        return Ok(());
    };
    let spec = pod_spec(&rec.id, &rec.config)?;
    let was_ready = rec.phase != PodPhase::NotReady;
    let mut recorded = true;
    if was_ready {
        // Recorded first: a pod being stopped is not ready, and a crash from here on leaves a
        // NotReady pod whose stop start-up recovery finishes. A failed write (full disk) does
        // not hold the stop up: it is tried again at the end.
        rec.phase = PodPhase::NotReady;
        if let Err(e) = state.pods.update_live(rec.clone()) {
            tracing::warn!(pod_id = %id, error = %e, "record pod NotReady before stopping it");
            recorded = false;
        }
    }
    clock.mark("record_notready");
    state
        .pod_runtime
        .stop_timed(&spec, &rec.host, &mut clock)
        .await?;
    // The pod's processes are dead and its shim recorded their exits: bring records in step.
    for c in crate::store::containers::of_pod(&state.containers, id) {
        crate::lifecycle::refresh::refresh(state, c).await;
    }
    clock.mark("containers");
    if was_ready {
        // NRI: once per pod, its containers stopped, the pod still listed.
        crate::nri_hooks::stop_pod_sandbox(state, &rec).await;
        clock.mark("nri");
    }
    if !recorded {
        state
            .pods
            .update(rec)
            .map_err(|e| Error::io(&format!("record pod {id}"), &e))?;
    }
    if was_ready {
        info!(pod_id = %id, "StopPodSandbox");
        crate::lifecycle::events::emit(
            state,
            id,
            id,
            proto::cri::ContainerEventType::ContainerStoppedEvent,
        );
        state
            .metrics
            .record_steps("StopPodSandbox", id, clock.steps());
    }
    Ok(())
}
