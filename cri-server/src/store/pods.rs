//! Pod sandbox records: in memory for lookups, persisted atomically under
//! `<root_dir>/pods/<id>/pod.json` so a restarted berthd finds its pods again.

use std::path::Path;

use podsandbox::pod::PodHostState;
use proto::cri::{PodSandboxConfig, PodSandboxMetadata};
use serde::{Deserialize, Serialize};

/// A pod's lifecycle state as berth tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodPhase {
    /// Being created; a crash here leaves a pod that start-up marks NotReady.
    Creating,
    Ready,
    NotReady,
}

/// One pod sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    pub id: String,
    pub config: PodSandboxConfig,
    pub runtime_handler: String,
    pub phase: PodPhase,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    pub host: PodHostState,
}

impl PodRecord {
    /// The pod's namespace options as kubelet gave them (defaults when absent).
    pub fn namespace_options(&self) -> proto::cri::NamespaceOption {
        self.config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_default()
    }

    pub fn metadata(&self) -> PodSandboxMetadata {
        self.config.metadata.clone().unwrap_or_default()
    }
}

/// The name that must be unique among pods: kubelet's metadata tuple.
fn name_key(m: &PodSandboxMetadata) -> String {
    format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
}

impl crate::store::records::Record for PodRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

/// All pod records (`<root_dir>/pods/<id>/pod.json`).
pub type PodStore = crate::store::records::RecordStore<PodRecord>;

pub use crate::store::records::{Lookup, ReserveError};

/// Opens the pod records under `<root>/pods`.
pub fn open(root: &Path) -> std::io::Result<PodStore> {
    PodStore::open(&root.join("pods"), "pod.json")
}

/// Records a new pod unless another has the same metadata.
pub fn reserve(store: &PodStore, rec: PodRecord) -> Result<(), ReserveError> {
    let key = name_key(&rec.metadata());
    // Not fsynced before the pod starts: a machine crash ends the pod, and what it held on
    // disk (its address) is swept at start-up when no record owns it.
    store.reserve_live(rec, |p| name_key(&p.metadata()) == key)
}
