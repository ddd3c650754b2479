//! Start-up reconciliation of pod records with the host (the minimal part; full recovery of
//! interrupted operations builds on this).

use tracing::{info, warn};

use crate::pod_store::PodPhase;
use crate::state::DaemonState;

/// Re-registers every container's use of its image's layers (so image removal keeps them).
pub fn hold_container_images(state: &DaemonState) {
    for c in state.containers.list() {
        if let Some(image) = state.images.resolve(&c.image_id) {
            state.images.hold(&c.id, &image);
        }
        crate::container_mounts::hold(state, &c);
    }
}

/// Marks pods NotReady whose creation was interrupted or whose shim no longer answers; pods
/// whose shim is alive are picked up as they are.
pub async fn reconcile_pods(state: &DaemonState) {
    for mut rec in state.pods.list() {
        let next = match rec.phase {
            PodPhase::Creating => {
                warn!(pod_id = %rec.id, "pod creation was interrupted; marking it NotReady");
                PodPhase::NotReady
            }
            PodPhase::Ready if !state.pod_runtime.shim_alive(&rec.host).await => {
                warn!(pod_id = %rec.id, shim_pid = rec.host.shim_pid, "pod shim is gone; marking it NotReady");
                PodPhase::NotReady
            }
            PodPhase::Ready => {
                info!(pod_id = %rec.id, shim_pid = rec.host.shim_pid, "reconnected to pod shim");
                continue;
            }
            PodPhase::NotReady => continue,
        };
        rec.phase = next;
        if let Err(e) = state.pods.update(rec) {
            warn!(error = %e, "record reconciled pod state");
        }
    }
}
