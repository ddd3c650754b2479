//! `ListMetricDescriptors` and `ListPodSandboxMetrics`: cAdvisor-named metrics for kubelet's
//! `/metrics/cadvisor` when it takes pod and container stats from the runtime
//! (`PodAndContainerStatsFromCRI`). The metrics themselves are `stats::cadvisor`'s; this
//! samples the Ready pods and answers.

use proto::cri::{
    ListMetricDescriptorsRequest, ListMetricDescriptorsResponse, ListPodSandboxMetricsRequest,
    ListPodSandboxMetricsResponse,
};
use tonic::Status;

use crate::state::DaemonState;
use crate::stats::cadvisor::{descriptors, pod_metrics};
use crate::stats::sample::sample_pods_for_metrics;
use crate::stats::select::{select_ready_pods, with_containers};

pub async fn list_metric_descriptors(
    _state: &DaemonState,
    _req: &ListMetricDescriptorsRequest,
) -> Result<ListMetricDescriptorsResponse, Status> {
    Ok(ListMetricDescriptorsResponse {
        descriptors: descriptors(),
    })
}

pub async fn list_pod_sandbox_metrics(
    state: &DaemonState,
    _req: &ListPodSandboxMetricsRequest,
) -> Result<ListPodSandboxMetricsResponse, Status> {
    let pods = select_ready_pods(&state.pods, &state.containers, &state.stats, None);
    let samples =
        sample_pods_for_metrics(&state.stats, with_containers(&state.containers, pods)).await?;
    Ok(ListPodSandboxMetricsResponse {
        pod_metrics: samples.iter().map(pod_metrics).collect(),
    })
}
