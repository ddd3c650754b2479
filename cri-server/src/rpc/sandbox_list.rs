//! `ListPodSandbox`: filters by ID (full or unique prefix), state and labels; all must match.

use proto::cri::{ListPodSandboxRequest, ListPodSandboxResponse, PodSandbox, PodSandboxFilter};

use crate::state::DaemonState;
use crate::store::filter::state_and_labels_match;
use crate::store::pods::{Lookup, PodPhase, PodRecord};
use crate::view::pod::cri_state;

pub fn list_pod_sandbox(
    state: &DaemonState,
    req: &ListPodSandboxRequest,
) -> ListPodSandboxResponse {
    let candidates = match req.filter.as_ref().map(|f| f.id.as_str()) {
        Some(id) if !id.is_empty() => match state.pods.lookup(id) {
            Lookup::Found(rec) => vec![*rec],
            Lookup::Missing | Lookup::Ambiguous(_) => Vec::new(),
        },
        _ => state.pods.list(),
    };
    let items = candidates
        .iter()
        // A pod still being created (its NRI RunPodSandbox in progress) is not listed yet.
        .filter(|rec| rec.phase != PodPhase::Creating)
        .filter(|rec| matches(rec, req.filter.as_ref()))
        .map(to_item)
        .collect();
    ListPodSandboxResponse { items }
}

fn matches(rec: &PodRecord, filter: Option<&PodSandboxFilter>) -> bool {
    let Some(f) = filter else { return true };
    let state = f.state.as_ref().map(|s| s.state);
    state_and_labels_match(
        state,
        cri_state(rec) as i32,
        &f.label_selector,
        &rec.config.labels,
    )
}

fn to_item(rec: &PodRecord) -> PodSandbox {
    PodSandbox {
        id: rec.id.clone(),
        metadata: Some(rec.metadata()),
        state: cri_state(rec) as i32,
        created_at: rec.created_at,
        labels: rec.config.labels.clone(),
        annotations: rec.config.annotations.clone(),
        runtime_handler: rec.runtime_handler.clone(),
    }
}
