//! Start-up reconciliation of berthd's records with the host, after a restart or a crash.
//!
//! Operations interrupted by a crash are finished or rolled back, each to the side that needs
//! no guess:
//! - a pod whose creation never finished is torn down (network, shim, namespaces, cgroup,
//!   files) and left NotReady; a pod whose stop was interrupted is stopped again;
//! - a container whose creation never finished (no writable layer yet) is removed with its
//!   cgroup; a Created one is adopted if its shim runs it (its start was interrupted), else
//!   its cgroup (made by CreateContainer, or by a start cut short) is removed, StartContainer
//!   makes it again, and it stays Created;
//! - layer snapshots an interrupted pull committed without recording its image are removed.
//!
//! Pods whose shim is alive are picked up as they are; containers' exits during the downtime
//! are read from the records their shims wrote (`lifecycle::exits::recover`).

use std::time::Duration;

use proto::shim::{ContainerRef, ShimRequest, shim_request::Kind};
use runtime_core::shim::client;
use tracing::{info, warn};

use crate::state::DaemonState;
use crate::store::containers::{ContainerPhase, ContainerRecord};
use crate::store::pods::PodPhase;

/// How long a shim may take to answer during recovery.
const SHIM_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs every start-up reconciliation step, in order.
pub async fn reconcile(state: &DaemonState) {
    reconcile_pods(state).await;
    reconcile_containers(state).await;
    hold_container_images(state);
    sweep_orphans(state).await;
    match state.images.remove_orphans().await {
        Ok(0) => {}
        Ok(n) => info!(snapshots = n, "removed layers an interrupted pull left"),
        Err(e) => warn!(error = %e, "remove orphan snapshots"),
    }
    // The first pod's shim and network namespace, made ahead of it.
    state.pod_runtime.prepare_spare();
}

/// Re-registers every container's use of its image's layers (so image removal keeps them).
fn hold_container_images(state: &DaemonState) {
    for c in state.containers.list() {
        if let Some(image) = state.images.resolve(&c.image_id) {
            state.images.hold(&c.id, &image);
        }
        crate::container::mounts::hold(state, &c);
    }
}

/// Tears down pods whose creation was interrupted, finishes interrupted stops, and marks
/// NotReady the pods whose shim no longer answers; pods whose shim is alive are picked up as
/// they are.
async fn reconcile_pods(state: &DaemonState) {
    for mut rec in state.pods.list() {
        let next = match rec.phase {
            PodPhase::Creating => {
                warn!(pod_id = %rec.id, "pod creation was interrupted; undoing it");
                if let Ok(spec) = crate::pod::spec::pod_spec(&rec.id, &rec.config) {
                    state.pod_runtime.abandon(&spec).await;
                }
                PodPhase::NotReady
            }
            PodPhase::NotReady if state.pod_runtime.shim_alive(&rec.host).await => {
                warn!(pod_id = %rec.id, "pod stop was interrupted; finishing it");
                if let Err(e) = crate::pod::stop::stop(state, &rec.id).await {
                    warn!(pod_id = %rec.id, error = %e, "finish interrupted stop");
                }
                continue;
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

/// Rolls back interrupted creates and settles interrupted starts.
async fn reconcile_containers(state: &DaemonState) {
    for rec in state
        .containers
        .filter(|c| c.phase == ContainerPhase::Created)
    {
        if !rec.upper.exists() {
            warn!(container_id = %rec.id, "container creation was interrupted; removing it");
            state.pod_runtime.remove_container_cgroup(&rec.cgroup);
            if let Err(e) = state.containers.remove(&rec.id) {
                warn!(container_id = %rec.id, error = %e, "remove interrupted container");
            }
            let _ = std::fs::remove_dir_all(rec.upper.parent().unwrap_or(&rec.upper));
        } else if !rec.cgroup.is_empty() {
            settle_interrupted_start(state, rec).await;
        }
    }
}

/// A Created container with a cgroup: adopted if its shim runs (or ran) it, its start cut
/// short; else its cgroup, which a start cut short may have left a process in, is removed
/// (StartContainer makes it again) and it stays Created.
async fn settle_interrupted_start(state: &DaemonState, mut rec: ContainerRecord) {
    let info = match state.pods.get(&rec.pod_id) {
        Some(pod) => {
            let socket = pod.host.shim_socket.clone();
            let request = ShimRequest {
                kind: Some(Kind::ContainerState(ContainerRef { id: rec.id.clone() })),
            };
            client::request(&socket, request, SHIM_TIMEOUT)
                .await
                .ok()
                .and_then(|r| r.container)
        }
        None => None,
    };
    match info {
        Some(info) => {
            info!(container_id = %rec.id, pid = info.pid, "adopting a container whose start was interrupted");
            rec.phase = ContainerPhase::Running;
            rec.pid = info.pid;
            rec.started_at = info.started_at;
        }
        None => {
            info!(container_id = %rec.id, "container not started (or its start was interrupted before it ran); it stays Created");
            state.pod_runtime.remove_container_cgroup(&rec.cgroup);
            rec.cgroup.clear();
        }
    }
    if let Err(e) = state.containers.update(rec) {
        warn!(error = %e, "record settled container");
    }
}

/// Removes host state no record owns: a pod's namespaces, shim, files or address, a
/// container's root mount.
async fn sweep_orphans(state: &DaemonState) {
    let pods: std::collections::HashSet<String> =
        state.pods.list().into_iter().map(|p| p.id).collect();
    let mut removed = state.pod_runtime.sweep_orphans(&pods).await;
    let containers: std::collections::HashSet<String> =
        state.containers.list().into_iter().map(|c| c.id).collect();
    let rootfs_dir = state.config.state_dir.join("rootfs");
    for entry in std::fs::read_dir(&rootfs_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        let id = entry.file_name().to_string_lossy().into_owned();
        if containers.contains(&id) {
            continue;
        }
        let _ = runtime_core::executor::cleanup_rootfs(&entry.path());
        let _ = std::fs::remove_dir(entry.path());
        removed.push(format!("root mount of {id}"));
    }
    if !removed.is_empty() {
        warn!(
            ?removed,
            "removed host state that belonged to no pod or container"
        );
    }
}
