//! One CRI runtime under test: gRPC clients on its unix socket, how to find its processes,
//! and the bookkeeping to remove everything the benchmark created on it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use proto::cri::image_service_client::ImageServiceClient;
use proto::cri::runtime_service_client::RuntimeServiceClient;
use proto::cri::{
    ContainerConfig, CreateContainerRequest, ImageSpec, ImageStatusRequest, ListPodSandboxRequest,
    PodSandboxConfig, PodSandboxFilter, PullImageRequest, RemoveImageRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StatusRequest,
    StopPodSandboxRequest, VersionRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::memory::{HelperRules, RuntimeMemory};

/// Label on every pod a run creates; its value is the run's ID.
pub const RUN_LABEL: &str = "berth-bench.run";

/// Kubernetes namespace of the benchmark's pods.
pub const NAMESPACE: &str = "berth-bench";

/// How long any single RPC may take before the benchmark gives up on it.
const RPC_TIMEOUT: Duration = Duration::from_secs(120);

/// What the user said about one runtime.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    /// Display name; defaults to the runtime's own name from `Version`.
    pub name: Option<String>,
    /// The CRI unix socket (`/run/x.sock` or `unix:///run/x.sock`).
    pub endpoint: PathBuf,
    /// RuntimeClass handler for RunPodSandbox (empty: the default).
    pub runtime_handler: String,
    pub rules: HelperRules,
    /// The daemon's PID; found from the socket's listener when absent.
    pub daemon_pid: Option<u32>,
}

/// A connected runtime.
#[derive(Debug)]
pub struct Target {
    pub name: String,
    pub endpoint: PathBuf,
    /// `runtime_name runtime_version` from `Version`.
    pub runtime: String,
    pub handler: String,
    pub rules: HelperRules,
    pub daemon_pid: Option<u32>,
    rt: RuntimeServiceClient<Channel>,
    img: ImageServiceClient<Channel>,
    /// Images this run pulled that the runtime did not have before: removed at the end.
    pulled: Mutex<Vec<String>>,
}

/// Parses `unix:///path` or a plain path.
pub fn socket_path(endpoint: &str) -> PathBuf {
    PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint))
}

async fn connect(socket: &Path) -> Result<Channel, String> {
    let path = socket.to_path_buf();
    Endpoint::from_static("http://[::]:50051")
        .timeout(RPC_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| format!("connect to {}: {e}", socket.display()))
}

/// The PID of the process that listens on `socket`: the peer credentials (SO_PEERCRED) of a
/// connection to it, which the kernel records when the server calls listen().
async fn listener_pid(socket: &Path) -> Option<u32> {
    let stream = tokio::net::UnixStream::connect(socket).await.ok()?;
    let pid = stream.peer_cred().ok()?.pid()?;
    u32::try_from(pid).ok()
}

impl Target {
    /// Connects to `spec`'s socket, asks `Version`, and finds the daemon's PID.
    pub async fn connect(spec: &TargetSpec) -> Result<Target, String> {
        let channel = connect(&spec.endpoint).await?;
        let mut rt = RuntimeServiceClient::new(channel.clone());
        let v = rt
            .version(VersionRequest::default())
            .await
            .map_err(|e| format!("Version on {}: {}", spec.endpoint.display(), status(&e)))?
            .into_inner();
        let daemon_pid = match spec.daemon_pid {
            Some(pid) => Some(pid),
            None => listener_pid(&spec.endpoint).await,
        };
        Ok(Target {
            name: spec.name.clone().unwrap_or_else(|| v.runtime_name.clone()),
            endpoint: spec.endpoint.clone(),
            runtime: format!("{} {}", v.runtime_name, v.runtime_version),
            handler: spec.runtime_handler.clone(),
            rules: spec.rules.clone(),
            daemon_pid,
            rt,
            img: ImageServiceClient::new(channel),
            pulled: Mutex::new(Vec::new()),
        })
    }

    /// The runtime's memory now (daemon and helpers), if its daemon was found.
    pub fn memory(&self, proc_root: &Path) -> Result<RuntimeMemory, String> {
        let pid = self.daemon_pid.ok_or_else(|| {
            format!(
                "{}: no daemon PID for {} (pass --daemon-pid)",
                self.name,
                self.endpoint.display()
            )
        })?;
        RuntimeMemory::measure(proc_root, pid, &self.rules).map_err(|e| e.to_string())
    }

    /// Whether the runtime has `image`.
    pub async fn has_image(&self, image: &str) -> Result<bool, String> {
        let resp = self
            .img
            .clone()
            .image_status(ImageStatusRequest {
                image: Some(image_spec(image)),
                verbose: false,
            })
            .await
            .map_err(|e| format!("ImageStatus {image}: {}", status(&e)))?;
        Ok(resp.into_inner().image.is_some())
    }

    /// PullImage.
    pub async fn pull(&self, image: &str) -> Result<(), String> {
        self.img
            .clone()
            .pull_image(PullImageRequest {
                image: Some(image_spec(image)),
                auth: None,
                sandbox_config: None,
            })
            .await
            .map_err(|e| format!("PullImage {image}: {}", status(&e)))?;
        Ok(())
    }

    /// RemoveImage.
    pub async fn remove_image(&self, image: &str) -> Result<(), String> {
        self.img
            .clone()
            .remove_image(RemoveImageRequest {
                image: Some(image_spec(image)),
            })
            .await
            .map_err(|e| format!("RemoveImage {image}: {}", status(&e)))?;
        Ok(())
    }

    /// Pulls `image` unless present; an image pulled here is removed by [`Target::cleanup`].
    pub async fn ensure_image(&self, image: &str) -> Result<(), String> {
        if self.has_image(image).await? {
            return Ok(());
        }
        self.note_pulled(image);
        self.pull(image).await
    }

    /// Records that this run brought `image` onto the runtime.
    pub fn note_pulled(&self, image: &str) {
        if let Ok(mut p) = self.pulled.lock()
            && !p.iter().any(|i| i == image)
        {
            p.push(image.to_string());
        }
    }

    /// Where the runtime serves Prometheus metrics, if it says so in `Status`'s verbose info
    /// (berthd's `metricsAddress`); None for runtimes that do not.
    pub async fn metrics_address(&self) -> Option<String> {
        let info = self
            .rt
            .clone()
            .status(StatusRequest { verbose: true })
            .await
            .ok()?
            .into_inner()
            .info;
        let addr: String = serde_json::from_str(info.get("metricsAddress")?).ok()?;
        (!addr.is_empty()).then_some(addr)
    }

    /// RunPodSandbox; the pod's ID.
    pub async fn run_pod(&self, config: PodSandboxConfig) -> Result<String, String> {
        self.rt
            .clone()
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: self.handler.clone(),
            })
            .await
            .map(|r| r.into_inner().pod_sandbox_id)
            .map_err(|e| format!("RunPodSandbox: {}", status(&e)))
    }

    /// CreateContainer; the container's ID.
    pub async fn create_container(
        &self,
        pod: &str,
        pod_config: &PodSandboxConfig,
        config: ContainerConfig,
    ) -> Result<String, String> {
        self.rt
            .clone()
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.to_string(),
                config: Some(config),
                sandbox_config: Some(pod_config.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id)
            .map_err(|e| format!("CreateContainer: {}", status(&e)))
    }

    /// StartContainer.
    pub async fn start_container(&self, id: &str) -> Result<(), String> {
        self.rt
            .clone()
            .start_container(StartContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .map(|_| ())
            .map_err(|e| format!("StartContainer: {}", status(&e)))
    }

    /// ExecSync of `cmd`; the raw gRPC result, so callers can tell Unimplemented apart.
    pub async fn exec_sync(
        &self,
        container: &str,
        cmd: &[String],
    ) -> Result<proto::cri::ExecSyncResponse, tonic::Status> {
        self.rt
            .clone()
            .exec_sync(proto::cri::ExecSyncRequest {
                container_id: container.to_string(),
                cmd: cmd.to_vec(),
                timeout: 10,
            })
            .await
            .map(|r| r.into_inner())
    }

    /// StopPodSandbox then RemovePodSandbox, as kubelet does.
    pub async fn remove_pod(&self, id: &str) -> Result<(), String> {
        let mut rt = self.rt.clone();
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await
        .map_err(|e| format!("StopPodSandbox {id}: {}", status(&e)))?;
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await
        .map_err(|e| format!("RemovePodSandbox {id}: {}", status(&e)))?;
        Ok(())
    }

    /// IDs of the pods labelled with this run's ID.
    pub async fn pods_of_run(&self, run_id: &str) -> Result<Vec<String>, String> {
        let filter = PodSandboxFilter {
            label_selector: [(RUN_LABEL.to_string(), run_id.to_string())].into(),
            ..Default::default()
        };
        let pods = self
            .rt
            .clone()
            .list_pod_sandbox(ListPodSandboxRequest {
                filter: Some(filter),
            })
            .await
            .map_err(|e| format!("ListPodSandbox: {}", status(&e)))?;
        Ok(pods.into_inner().items.into_iter().map(|p| p.id).collect())
    }

    /// Removes every pod in the benchmark's Kubernetes namespace, whatever run made it.
    pub async fn remove_namespace_pods(&self) -> Vec<String> {
        let pods = match self
            .rt
            .clone()
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await
        {
            Ok(p) => p.into_inner().items,
            Err(e) => return vec![format!("ListPodSandbox: {}", status(&e))],
        };
        let mut errors = Vec::new();
        for pod in pods {
            if pod.metadata.is_some_and(|m| m.namespace == NAMESPACE)
                && let Err(e) = self.remove_pod(&pod.id).await
            {
                errors.push(e);
            }
        }
        errors
    }

    /// Removes every pod of `run_id` (twice, for a pod whose RunPodSandbox was in flight when
    /// the run was interrupted) and the images this run pulled. Returns what went wrong.
    pub async fn cleanup(&self, run_id: &str) -> Vec<String> {
        let mut errors = Vec::new();
        for pass in 0..2 {
            if pass == 1 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            match self.pods_of_run(run_id).await {
                Ok(pods) => {
                    for pod in pods {
                        if let Err(e) = self.remove_pod(&pod).await {
                            errors.push(e);
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        let pulled = self.pulled.lock().map(|p| p.clone()).unwrap_or_default();
        for image in pulled {
            if let Err(e) = self.remove_image(&image).await {
                errors.push(e);
            }
        }
        errors
    }
}

fn image_spec(image: &str) -> ImageSpec {
    ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

/// `Code: message` of a gRPC status.
pub fn status(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}
