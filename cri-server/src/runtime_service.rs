//! `runtime.v1.RuntimeService`: routes each RPC to its module. RPCs whose feature has not
//! landed answer `Unimplemented` naming the RPC and the feature.

use std::pin::Pin;
use std::sync::Arc;

use proto::cri::{self, runtime_service_server::RuntimeService};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::errors::{area, not_implemented};
use crate::state::DaemonState;
use crate::{
    container_create, container_list, container_remove, container_start, container_status,
    container_stop, runtime_config, sandbox_list, sandbox_remove, sandbox_run, sandbox_status,
    sandbox_stop, status, version,
};

type Rpc<T> = Result<Response<T>, Status>;

/// The RuntimeService implementation.
#[derive(Clone)]
pub struct Runtime {
    state: Arc<DaemonState>,
}

impl Runtime {
    pub fn new(state: Arc<DaemonState>) -> Runtime {
        Runtime { state }
    }
}

fn todo<T>(rpc: &str, feature: &str) -> Rpc<T> {
    Err(not_implemented(rpc, feature))
}

#[tonic::async_trait]
impl RuntimeService for Runtime {
    async fn version(&self, r: Request<cri::VersionRequest>) -> Rpc<cri::VersionResponse> {
        Ok(Response::new(version::version(r.get_ref())))
    }

    async fn status(&self, r: Request<cri::StatusRequest>) -> Rpc<cri::StatusResponse> {
        Ok(Response::new(status::status(&self.state, r.get_ref())))
    }

    async fn runtime_config(
        &self,
        _: Request<cri::RuntimeConfigRequest>,
    ) -> Rpc<cri::RuntimeConfigResponse> {
        Ok(Response::new(runtime_config::runtime_config(&self.state)))
    }

    async fn run_pod_sandbox(
        &self,
        r: Request<cri::RunPodSandboxRequest>,
    ) -> Rpc<cri::RunPodSandboxResponse> {
        sandbox_run::run_pod_sandbox(&self.state, r.get_ref())
            .await
            .map(Response::new)
    }

    async fn stop_pod_sandbox(
        &self,
        r: Request<cri::StopPodSandboxRequest>,
    ) -> Rpc<cri::StopPodSandboxResponse> {
        sandbox_stop::stop_pod_sandbox(&self.state, r.get_ref())
            .await
            .map(Response::new)
    }

    async fn remove_pod_sandbox(
        &self,
        r: Request<cri::RemovePodSandboxRequest>,
    ) -> Rpc<cri::RemovePodSandboxResponse> {
        sandbox_remove::remove_pod_sandbox(&self.state, r.get_ref())
            .await
            .map(Response::new)
    }

    async fn pod_sandbox_status(
        &self,
        r: Request<cri::PodSandboxStatusRequest>,
    ) -> Rpc<cri::PodSandboxStatusResponse> {
        sandbox_status::pod_sandbox_status(&self.state, r.get_ref())
            .await
            .map(Response::new)
    }

    async fn list_pod_sandbox(
        &self,
        r: Request<cri::ListPodSandboxRequest>,
    ) -> Rpc<cri::ListPodSandboxResponse> {
        Ok(Response::new(sandbox_list::list_pod_sandbox(
            &self.state,
            r.get_ref(),
        )))
    }

    async fn create_container(
        &self,
        r: Request<cri::CreateContainerRequest>,
    ) -> Rpc<cri::CreateContainerResponse> {
        container_create::create_container(&self.state, r.get_ref())
            .await
            .map(Response::new)
    }

    async fn start_container(
        &self,
        r: Request<cri::StartContainerRequest>,
    ) -> Rpc<cri::StartContainerResponse> {
        container_start::start_container(&self.state, r.get_ref())
            .await
            .map(Response::new)
    }

    async fn stop_container(
        &self,
        r: Request<cri::StopContainerRequest>,
    ) -> Rpc<cri::StopContainerResponse> {
        container_stop::stop_container(&self.state, r.get_ref())
            .await
            .map(Response::new)
    }

    async fn remove_container(
        &self,
        r: Request<cri::RemoveContainerRequest>,
    ) -> Rpc<cri::RemoveContainerResponse> {
        container_remove::remove_container(&self.state, r.get_ref())
            .await
            .map(Response::new)
    }

    async fn list_containers(
        &self,
        r: Request<cri::ListContainersRequest>,
    ) -> Rpc<cri::ListContainersResponse> {
        Ok(Response::new(
            container_list::list_containers(&self.state, r.get_ref()).await,
        ))
    }

    async fn container_status(
        &self,
        r: Request<cri::ContainerStatusRequest>,
    ) -> Rpc<cri::ContainerStatusResponse> {
        container_status::container_status(&self.state, r.get_ref())
            .await
            .map(Response::new)
    }

    async fn update_container_resources(
        &self,
        _: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Rpc<cri::UpdateContainerResourcesResponse> {
        todo("UpdateContainerResources", area::UPDATES)
    }

    async fn reopen_container_log(
        &self,
        r: Request<cri::ReopenContainerLogRequest>,
    ) -> Rpc<cri::ReopenContainerLogResponse> {
        container_list::reopen_container_log(&self.state, r.get_ref())
            .await
            .map(Response::new)
    }

    async fn exec_sync(&self, _: Request<cri::ExecSyncRequest>) -> Rpc<cri::ExecSyncResponse> {
        todo("ExecSync", area::STREAMING)
    }

    async fn exec(&self, _: Request<cri::ExecRequest>) -> Rpc<cri::ExecResponse> {
        todo("Exec", area::STREAMING)
    }

    async fn attach(&self, _: Request<cri::AttachRequest>) -> Rpc<cri::AttachResponse> {
        todo("Attach", area::STREAMING)
    }

    async fn port_forward(
        &self,
        _: Request<cri::PortForwardRequest>,
    ) -> Rpc<cri::PortForwardResponse> {
        todo("PortForward", area::STREAMING)
    }

    async fn container_stats(
        &self,
        _: Request<cri::ContainerStatsRequest>,
    ) -> Rpc<cri::ContainerStatsResponse> {
        todo("ContainerStats", area::STATS)
    }

    async fn list_container_stats(
        &self,
        _: Request<cri::ListContainerStatsRequest>,
    ) -> Rpc<cri::ListContainerStatsResponse> {
        todo("ListContainerStats", area::STATS)
    }

    async fn pod_sandbox_stats(
        &self,
        _: Request<cri::PodSandboxStatsRequest>,
    ) -> Rpc<cri::PodSandboxStatsResponse> {
        todo("PodSandboxStats", area::STATS)
    }

    async fn list_pod_sandbox_stats(
        &self,
        _: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Rpc<cri::ListPodSandboxStatsResponse> {
        todo("ListPodSandboxStats", area::STATS)
    }

    async fn update_runtime_config(
        &self,
        _: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Rpc<cri::UpdateRuntimeConfigResponse> {
        todo("UpdateRuntimeConfig", area::UPDATES)
    }

    async fn checkpoint_container(
        &self,
        _: Request<cri::CheckpointContainerRequest>,
    ) -> Rpc<cri::CheckpointContainerResponse> {
        todo("CheckpointContainer", area::CHECKPOINT)
    }

    type GetContainerEventsStream =
        Pin<Box<dyn Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>>;

    async fn get_container_events(
        &self,
        _: Request<cri::GetEventsRequest>,
    ) -> Rpc<Self::GetContainerEventsStream> {
        todo("GetContainerEvents", area::EVENTS)
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Rpc<cri::ListMetricDescriptorsResponse> {
        todo("ListMetricDescriptors", area::STATS)
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Rpc<cri::ListPodSandboxMetricsResponse> {
        todo("ListPodSandboxMetrics", area::STATS)
    }
}
