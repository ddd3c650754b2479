//! `ListMetricDescriptors` and `ListPodSandboxMetrics`: cAdvisor-named metrics for kubelet.

use proto::cri::{
    ListMetricDescriptorsRequest, ListMetricDescriptorsResponse, ListPodSandboxMetricsRequest,
    ListPodSandboxMetricsResponse,
};
use tonic::Status;

use crate::errors::{area, not_implemented};
use crate::state::DaemonState;

pub async fn list_metric_descriptors(
    _state: &DaemonState,
    _req: &ListMetricDescriptorsRequest,
) -> Result<ListMetricDescriptorsResponse, Status> {
    Err(not_implemented("ListMetricDescriptors", area::STATS))
}

pub async fn list_pod_sandbox_metrics(
    _state: &DaemonState,
    _req: &ListPodSandboxMetricsRequest,
) -> Result<ListPodSandboxMetricsResponse, Status> {
    Err(not_implemented("ListPodSandboxMetrics", area::STATS))
}
