//! Which records the stats calls sample: the Ready pods a filter selects, each with its
//! containers, and dropping the cached samples of removed records.

use std::collections::HashSet;

use proto::cri::PodSandboxStatsFilter;

use crate::stats::cache::StatsCache;
use crate::store::containers::{ContainerRecord, ContainerStore};
use crate::store::filter::state_and_labels_match;
use crate::store::pods::{Lookup, PodPhase, PodRecord, PodStore};

/// Drops cached samples of containers no longer in `all` (the whole store).
pub fn forget_removed(cache: &StatsCache, all: &[ContainerRecord]) {
    let known: HashSet<&str> = all.iter().map(|r| r.id.as_str()).collect();
    cache.container_cpu().retain(|id| known.contains(id));
    cache.layers().retain(|id| known.contains(id));
}

/// Ready pods matching the filter: the ID exactly or as a unique prefix (as
/// `ListPodSandbox`), every selector label present with its value. An unfiltered call also
/// drops cached samples of removed pods and containers.
pub fn select_ready_pods(
    pods: &PodStore,
    containers: &ContainerStore,
    cache: &StatsCache,
    filter: Option<&PodSandboxStatsFilter>,
) -> Vec<PodRecord> {
    let candidates = match filter.map(|f| f.id.as_str()).filter(|id| !id.is_empty()) {
        Some(id) => match pods.lookup(id) {
            Lookup::Found(rec) => vec![*rec],
            Lookup::Missing | Lookup::Ambiguous(_) => Vec::new(),
        },
        None => {
            let all = pods.list();
            let known: HashSet<&str> = all.iter().map(|p| p.id.as_str()).collect();
            cache.pod_cpu().retain(|id| known.contains(id));
            forget_removed(cache, &containers.list());
            all
        }
    };
    let labels_match = |rec: &PodRecord| {
        filter
            .is_none_or(|f| state_and_labels_match(None, 0, &f.label_selector, &rec.config.labels))
    };
    candidates
        .into_iter()
        .filter(|rec| rec.phase == PodPhase::Ready && labels_match(rec))
        .collect()
}

/// Pairs each pod with its containers.
pub fn with_containers(
    containers: &ContainerStore,
    pods: Vec<PodRecord>,
) -> Vec<(PodRecord, Vec<ContainerRecord>)> {
    let mut containers = containers.list();
    pods.into_iter()
        .map(|pod| {
            let (mine, rest) = containers.drain(..).partition(|c| c.pod_id == pod.id);
            containers = rest;
            (pod, mine)
        })
        .collect()
}
