//! The CRI view of a pod record.

use proto::cri::{
    LinuxPodSandboxStatus, Namespace, PodIp, PodSandboxNetworkStatus, PodSandboxState,
    PodSandboxStatus,
};

use crate::store::pods::{PodPhase, PodRecord};

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
