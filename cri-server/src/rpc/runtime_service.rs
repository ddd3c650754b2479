//! `runtime.v1.RuntimeService`: routes each RPC to its module (one file per RPC or tight RPC
//! family). RPCs whose feature has not landed answer `Unimplemented` from their module, naming
//! the RPC and the feature.

use std::sync::Arc;

use proto::cri::{self, runtime_service_server::RuntimeService};
use tonic::{Request, Response, Status};

use crate::rpc::list_streams::{ListStream, chunked};
use crate::rpc::{
    attach, container_checkpoint, container_create, container_events, container_list,
    container_remove, container_start, container_stats, container_status, container_stop,
    container_update, exec, exec_sync, pod_metrics, port_forward, runtime_config, sandbox_list,
    sandbox_remove, sandbox_run, sandbox_stats, sandbox_status, sandbox_stop, sandbox_update,
    status, version,
};
use crate::state::DaemonState;

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
        r: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Rpc<cri::UpdateContainerResourcesResponse> {
        container_update::update_container_resources(&self.state, r.get_ref())
            .await
            .map(Response::new)
    }

    async fn reopen_container_log(
        &self,
        r: Request<cri::ReopenContainerLogRequest>,
    ) -> Rpc<cri::ReopenContainerLogResponse> {
        container_list::reopen_container_log(&self.state, r.get_ref())
            .await
            .map(Response::new)
    }

    async fn exec_sync(&self, r: Request<cri::ExecSyncRequest>) -> Rpc<cri::ExecSyncResponse> {
        exec_sync::exec_sync(&self.state, r.get_ref())
            .await
            .map(Response::new)
    }

    async fn exec(&self, r: Request<cri::ExecRequest>) -> Rpc<cri::ExecResponse> {
        exec::exec(&self.state, r.get_ref())
            .await
            .map(Response::new)
    }

    async fn attach(&self, r: Request<cri::AttachRequest>) -> Rpc<cri::AttachResponse> {
        attach::attach(&self.state, r.get_ref())
            .await
            .map(Response::new)
    }

    async fn port_forward(
        &self,
        r: Request<cri::PortForwardRequest>,
    ) -> Rpc<cri::PortForwardResponse> {
        port_forward::port_forward(&self.state, r.get_ref())
            .await
            .map(Response::new)
    }

    async fn container_stats(
        &self,
        r: Request<cri::ContainerStatsRequest>,
    ) -> Rpc<cri::ContainerStatsResponse> {
        container_stats::container_stats(&self.state, r.get_ref())
            .await
            .map(Response::new)
    }

    async fn list_container_stats(
        &self,
        r: Request<cri::ListContainerStatsRequest>,
    ) -> Rpc<cri::ListContainerStatsResponse> {
        container_stats::list_container_stats(&self.state, r.get_ref())
            .await
            .map(Response::new)
    }

    async fn pod_sandbox_stats(
        &self,
        r: Request<cri::PodSandboxStatsRequest>,
    ) -> Rpc<cri::PodSandboxStatsResponse> {
        sandbox_stats::pod_sandbox_stats(&self.state, r.get_ref())
            .await
            .map(Response::new)
    }

    async fn list_pod_sandbox_stats(
        &self,
        r: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Rpc<cri::ListPodSandboxStatsResponse> {
        sandbox_stats::list_pod_sandbox_stats(&self.state, r.get_ref())
            .await
            .map(Response::new)
    }

    async fn update_runtime_config(
        &self,
        r: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Rpc<cri::UpdateRuntimeConfigResponse> {
        runtime_config::update_runtime_config(&self.state, r.get_ref())
            .await
            .map(Response::new)
    }

    async fn checkpoint_container(
        &self,
        r: Request<cri::CheckpointContainerRequest>,
    ) -> Rpc<cri::CheckpointContainerResponse> {
        container_checkpoint::checkpoint_container(&self.state, r.get_ref())
            .await
            .map(Response::new)
    }

    type GetContainerEventsStream = container_events::EventStream;

    async fn get_container_events(
        &self,
        r: Request<cri::GetEventsRequest>,
    ) -> Rpc<Self::GetContainerEventsStream> {
        container_events::get_container_events(&self.state, r.get_ref())
            .await
            .map(Response::new)
    }

    async fn list_metric_descriptors(
        &self,
        r: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Rpc<cri::ListMetricDescriptorsResponse> {
        pod_metrics::list_metric_descriptors(&self.state, r.get_ref())
            .await
            .map(Response::new)
    }

    async fn list_pod_sandbox_metrics(
        &self,
        r: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Rpc<cri::ListPodSandboxMetricsResponse> {
        pod_metrics::list_pod_sandbox_metrics(&self.state, r.get_ref())
            .await
            .map(Response::new)
    }

    async fn update_pod_sandbox_resources(
        &self,
        r: Request<cri::UpdatePodSandboxResourcesRequest>,
    ) -> Rpc<cri::UpdatePodSandboxResourcesResponse> {
        sandbox_update::update_pod_sandbox_resources(&self.state, r.get_ref())
            .await
            .map(Response::new)
    }

    type StreamPodSandboxesStream = ListStream<cri::StreamPodSandboxesResponse>;

    async fn stream_pod_sandboxes(
        &self,
        r: Request<cri::StreamPodSandboxesRequest>,
    ) -> Rpc<Self::StreamPodSandboxesStream> {
        let list = sandbox_list::list_pod_sandbox(
            &self.state,
            &cri::ListPodSandboxRequest {
                filter: r.into_inner().filter,
            },
        );
        Ok(Response::new(chunked(list.items, |pod_sandboxes| {
            cri::StreamPodSandboxesResponse { pod_sandboxes }
        })))
    }

    type StreamContainersStream = ListStream<cri::StreamContainersResponse>;

    async fn stream_containers(
        &self,
        r: Request<cri::StreamContainersRequest>,
    ) -> Rpc<Self::StreamContainersStream> {
        let list = container_list::list_containers(
            &self.state,
            &cri::ListContainersRequest {
                filter: r.into_inner().filter,
            },
        )
        .await;
        Ok(Response::new(chunked(list.containers, |containers| {
            cri::StreamContainersResponse { containers }
        })))
    }

    type StreamContainerStatsStream = ListStream<cri::StreamContainerStatsResponse>;

    async fn stream_container_stats(
        &self,
        r: Request<cri::StreamContainerStatsRequest>,
    ) -> Rpc<Self::StreamContainerStatsStream> {
        let list = container_stats::list_container_stats(
            &self.state,
            &cri::ListContainerStatsRequest {
                filter: r.into_inner().filter,
            },
        )
        .await?;
        Ok(Response::new(chunked(list.stats, |container_stats| {
            cri::StreamContainerStatsResponse { container_stats }
        })))
    }

    type StreamPodSandboxStatsStream = ListStream<cri::StreamPodSandboxStatsResponse>;

    async fn stream_pod_sandbox_stats(
        &self,
        r: Request<cri::StreamPodSandboxStatsRequest>,
    ) -> Rpc<Self::StreamPodSandboxStatsStream> {
        let list = sandbox_stats::list_pod_sandbox_stats(
            &self.state,
            &cri::ListPodSandboxStatsRequest {
                filter: r.into_inner().filter,
            },
        )
        .await?;
        Ok(Response::new(chunked(list.stats, |pod_sandbox_stats| {
            cri::StreamPodSandboxStatsResponse { pod_sandbox_stats }
        })))
    }

    type StreamPodSandboxMetricsStream = ListStream<cri::StreamPodSandboxMetricsResponse>;

    async fn stream_pod_sandbox_metrics(
        &self,
        _: Request<cri::StreamPodSandboxMetricsRequest>,
    ) -> Rpc<Self::StreamPodSandboxMetricsStream> {
        let list = pod_metrics::list_pod_sandbox_metrics(
            &self.state,
            &cri::ListPodSandboxMetricsRequest {},
        )
        .await?;
        Ok(Response::new(chunked(
            list.pod_metrics,
            |pod_sandbox_metrics| cri::StreamPodSandboxMetricsResponse {
                pod_sandbox_metrics,
            },
        )))
    }
}
