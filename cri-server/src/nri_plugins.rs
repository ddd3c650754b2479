//! What NRI plugins ask of berthd: the pods and containers for `Synchronize`, and container
//! updates, applied as `UpdateContainerResources` would.

use std::sync::{Arc, Weak};

use nri::api;
use proto::cri;
use tracing::warn;

use crate::nri_hooks::{apply_resources, container, pod_sandbox};
use crate::nri_runtime::NriHooks;
use crate::state::DaemonState;
use crate::store::pods::PodPhase;

/// Starts serving plugins.
pub async fn start(hooks: &NriHooks, state: &Arc<DaemonState>) -> std::io::Result<()> {
    let runtime = Arc::new(BerthState {
        state: Arc::downgrade(state),
    });
    hooks.nri.start(runtime).await
}

/// NRI's view of berthd's state, for Synchronize and plugins' updates.
struct BerthState {
    state: Weak<DaemonState>,
}

impl nri::RuntimeState for BerthState {
    fn snapshot(&self) -> (Vec<api::PodSandbox>, Vec<api::Container>) {
        let Some(state) = self.state.upgrade() else {
            return (Vec::new(), Vec::new());
        };
        let pods = state
            .pods
            .list()
            .iter()
            .filter(|p| p.phase != PodPhase::Creating)
            .map(pod_sandbox)
            .collect();
        let containers = state.containers.list().iter().map(container).collect();
        (pods, containers)
    }

    fn update_containers(
        &self,
        updates: Vec<api::ContainerUpdate>,
    ) -> nri::transport::BoxFuture<Vec<api::ContainerUpdate>> {
        let state = self.state.clone();
        Box::pin(async move {
            let Some(state) = state.upgrade() else {
                return updates;
            };
            let mut failed = Vec::new();
            for u in updates {
                if let Err(e) = update_one(&state, &u).await {
                    warn!(container_id = %u.container_id, error = %e, "NRI container update");
                    if !u.ignore_failure {
                        failed.push(u);
                    }
                }
            }
            failed
        })
    }
}

async fn update_one(state: &DaemonState, u: &api::ContainerUpdate) -> Result<(), String> {
    let Some(res) = u.linux.as_ref().and_then(|l| l.resources.as_ref()) else {
        return Ok(());
    };
    let mut linux = cri::LinuxContainerResources::default();
    apply_resources(&mut linux, res)?;
    let req = cri::UpdateContainerResourcesRequest {
        container_id: u.container_id.clone(),
        linux: Some(linux),
        ..Default::default()
    };
    crate::container::update::update_resources(state, &req)
        .await
        .map(drop)
        .map_err(|s| s.message().to_string())
}
