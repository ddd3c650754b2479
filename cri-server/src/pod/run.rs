//! Running a pod: make its spec from the CRI config (with the runtime handler's OCI
//! runtime), reserve its name with a record in state `Creating` (under the pod's lock), have
//! `podsandbox` start its host side (pod files, cgroup, shim, network: undone by
//! `podsandbox` itself when a step fails), run NRI's RunPodSandbox, and record it Ready.
//! A failure after the reservation undoes every finished step (host side, record), so
//! nothing of the pod remains. Each step is timed (`StepClock`) into berthd's step metrics.
//! The CRI request is checked before this by `rpc/sandbox_run.rs`.

use crate::error::Error;
use proto::cri::{self, PodSandboxConfig};
use runtime_core::steps::StepClock;
use tracing::info;

use crate::pod::spec::pod_spec;
use crate::state::DaemonState;
use crate::store::ids::{new_id, now_ns};
use crate::store::pods::{PodPhase, PodRecord, ReserveError};

/// Creates and starts the pod `config` describes with `runtime_handler` and returns its ID;
/// on any failure nothing of it remains.
pub async fn run(
    state: &DaemonState,
    config: &PodSandboxConfig,
    runtime_handler: &str,
) -> Result<String, Error> {
    let mut clock = StepClock::start();
    let oci_runtime = crate::container::handler::oci_runtime(&state.config, runtime_handler)?;
    let id = new_id();
    let mut spec = pod_spec(&id, config)?;
    spec.oci_runtime = oci_runtime;
    state.pod_runtime.validate(&spec)?;

    let record = PodRecord {
        id: id.clone(),
        config: config.clone(),
        runtime_handler: runtime_handler.to_string(),
        phase: PodPhase::Creating,
        created_at: now_ns(),
        host: Default::default(),
    };
    let lock = state.pods.lock_for(&id);
    let _guard = lock.lock().await;
    crate::store::pods::reserve(&state.pods, record.clone()).map_err(|e| match e {
        ReserveError::Conflict(existing) => {
            let m = record.metadata();
            Error::already_exists(format!(
                "pod sandbox {}/{} (uid {}, attempt {}) already exists as {existing}",
                m.namespace, m.name, m.uid, m.attempt
            ))
        }
        ReserveError::Io(e) => Error::io(&format!("record pod {id}"), &e),
    })?;
    clock.mark("reserve");
    let host = match state.pod_runtime.start(&spec, &mut clock).await {
        Ok(h) => h,
        Err(e) => {
            let _ = state.pods.remove(&id);
            return Err(e.into());
        }
    };
    let ready = PodRecord {
        phase: PodPhase::Ready,
        host,
        ..record
    };
    // --- NRI: RunPodSandbox before the pod is Ready; a plugin's error undoes the pod ---
    let nri_pod = PodRecord {
        phase: PodPhase::Creating,
        ..ready.clone()
    };
    let _nri = crate::nri_hooks::guard(state).await; // held until the pod is recorded Ready
    if let Err(status) = crate::nri_hooks::run_pod_sandbox(state, &nri_pod).await {
        let _ = state.pod_runtime.stop(&spec, &ready.host).await;
        let _ = state.pod_runtime.remove(&spec, &ready.host).await;
        let _ = state.pods.remove(&id);
        return Err(status);
    }
    // --- end NRI ---
    clock.mark("nri");
    // Ready is live state (the shim and namespaces end with the machine): see `update_live`.
    if let Err(e) = state.pods.update_live(ready.clone()) {
        let _ = state.pod_runtime.stop(&spec, &ready.host).await;
        let _ = state.pod_runtime.remove(&spec, &ready.host).await;
        let _ = state.pods.remove(&id);
        return Err(Error::io(&format!("record pod {id}"), &e));
    }
    info!(pod_id = %id, name = %spec.name, namespace = %spec.namespace, "RunPodSandbox");
    // Like containerd: the pod's own events carry its ID as the container ID.
    for kind in [
        cri::ContainerEventType::ContainerCreatedEvent,
        cri::ContainerEventType::ContainerStartedEvent,
    ] {
        crate::lifecycle::events::emit(state, &id, &id, kind);
    }
    clock.mark("record_ready");
    state
        .metrics
        .record_steps("RunPodSandbox", &id, clock.steps());
    Ok(id)
}
