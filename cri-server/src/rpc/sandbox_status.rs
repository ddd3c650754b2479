//! `PodSandboxStatus` and the CRI views of a pod record.

use std::collections::HashMap;

use proto::cri::{
    LinuxPodSandboxStatus, Namespace, PodIp, PodSandboxNetworkStatus, PodSandboxState,
    PodSandboxStatus, PodSandboxStatusRequest, PodSandboxStatusResponse,
};
use tonic::Status;

use crate::rpc::sandbox_run::now_ns;
use crate::state::DaemonState;
use crate::store::pods::{Lookup, PodPhase, PodRecord};

pub async fn pod_sandbox_status(
    state: &DaemonState,
    req: &PodSandboxStatusRequest,
) -> Result<PodSandboxStatusResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(Status::invalid_argument("pod_sandbox_id is required"));
    }
    let rec =
        crate::lifecycle::shim_death::check_pod(state, find(state, &req.pod_sandbox_id)?).await;
    let mut info = HashMap::new();
    if req.verbose {
        let alive = rec.phase == PodPhase::Ready && state.pod_runtime.shim_alive(&rec.host).await;
        let doc = serde_json::json!({
            "pid": rec.host.shim_pid,
            "shimAlive": alive,
            "shimSocket": rec.host.shim_socket,
            "netnsPath": rec.host.netns,
            "nsDir": rec.host.ns_dir,
            "cgroup": rec.host.cgroup,
            "network": rec.host.network,
            "podFiles": rec.host.files_dir,
            "runtimeHandler": rec.runtime_handler,
            "config": rec.config,
        });
        info.insert("info".to_string(), doc.to_string());
    }
    Ok(PodSandboxStatusResponse {
        status: Some(to_status(&rec)),
        info,
        // kubelet's evented PLEG builds the pod's status from these instead of listing.
        containers_statuses: crate::store::containers::of_pod(&state.containers, &rec.id)
            .iter()
            .map(crate::lifecycle::record::to_status)
            .collect(),
        timestamp: now_ns(),
    })
}

/// The pod with this ID or unique ID prefix, or NotFound.
pub fn find(state: &DaemonState, id: &str) -> Result<PodRecord, Status> {
    match state.pods.lookup(id) {
        Lookup::Found(r) => Ok(*r),
        Lookup::Missing => Err(Status::not_found(format!("pod sandbox {id} not found"))),
        Lookup::Ambiguous(n) => Err(Status::not_found(format!(
            "pod sandbox id prefix {id} matches {n} pods"
        ))),
    }
}

/// CRI state of a record: only a fully created, not stopped pod is Ready.
pub fn cri_state(rec: &PodRecord) -> PodSandboxState {
    match rec.phase {
        PodPhase::Ready => PodSandboxState::SandboxReady,
        PodPhase::Creating | PodPhase::NotReady => PodSandboxState::SandboxNotready,
    }
}

/// The CRI status of a pod record.
pub fn to_status(rec: &PodRecord) -> PodSandboxStatus {
    let options = rec.namespace_options();
    let mut ips = rec.host.ips.iter();
    PodSandboxStatus {
        id: rec.id.clone(),
        metadata: Some(rec.metadata()),
        state: cri_state(rec) as i32,
        created_at: rec.created_at,
        network: Some(PodSandboxNetworkStatus {
            ip: ips.next().cloned().unwrap_or_default(),
            additional_ips: ips.map(|ip| PodIp { ip: ip.clone() }).collect(),
        }),
        linux: Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace {
                options: Some(options),
            }),
        }),
        labels: rec.config.labels.clone(),
        annotations: rec.config.annotations.clone(),
        runtime_handler: rec.runtime_handler.clone(),
    }
}
