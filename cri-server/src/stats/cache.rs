//! What the stats RPCs keep between calls: the cgroup backend handle, the previous CPU
//! sample of each container and pod (for `usage_nano_cores`) and writable-layer walks.
//! Cheap to clone (one `Arc`), so blocking stats work can take it to a blocking thread.

use std::sync::Arc;

use runtime_core::cgroups::Cgroups;

use crate::stats::cpu::CpuRates;
use crate::stats::fs::LayerUsageCache;

/// Stats state shared by `ContainerStats`, `PodSandboxStats` and the pod metrics RPCs.
#[derive(Debug, Clone)]
pub struct StatsCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cgroups: Option<Cgroups>,
    container_cpu: CpuRates,
    pod_cpu: CpuRates,
    layers: LayerUsageCache,
}

impl StatsCache {
    /// Reads cgroups through `cgroups` (`None` on a host without usable cgroups: stats then
    /// carry no CPU, memory or process figures).
    fn new(cgroups: Option<Cgroups>) -> StatsCache {
        StatsCache {
            inner: Arc::new(Inner {
                cgroups,
                container_cpu: CpuRates::default(),
                pod_cpu: CpuRates::default(),
                layers: LayerUsageCache::default(),
            }),
        }
    }

    /// The host's cgroups, detected now; a host without them gets stats without figures.
    pub fn detect() -> StatsCache {
        let cgroups = Cgroups::detect()
            .inspect_err(|e| tracing::warn!(error = %e, "stats: cgroups unavailable"))
            .ok();
        StatsCache::new(cgroups)
    }

    /// The cgroup backend stats are read from.
    pub fn cgroups(&self) -> Option<&Cgroups> {
        self.inner.cgroups.as_ref()
    }

    /// Previous CPU samples of containers.
    pub fn container_cpu(&self) -> &CpuRates {
        &self.inner.container_cpu
    }

    /// Previous CPU samples of pods.
    pub fn pod_cpu(&self) -> &CpuRates {
        &self.inner.pod_cpu
    }

    /// Cached writable-layer walks.
    pub fn layers(&self) -> &LayerUsageCache {
        &self.inner.layers
    }
}
