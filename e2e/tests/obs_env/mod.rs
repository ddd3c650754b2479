//! What the metrics, events and updates tests share: a real berthd with its own pod network,
//! the busybox test image pulled from a real registry, and small helpers to run pods and
//! containers and read their logs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::daemon::{Berthd, BerthdOptions};
use e2e::images::push_test_images;
use e2e::pods::{TestNetwork, pod_config};
use e2e::registry::Registry;
use proto::cri::{
    self, ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest, ImageSpec,
    LinuxContainerConfig, PodSandboxConfig, PullImageRequest, RemoveContainerRequest,
    StartContainerRequest, StopContainerRequest,
};

/// A daemon with the busybox test image pulled.
pub struct Env {
    pub d: Berthd,
    pub registry: Registry,
    /// The daemon's config file text (to restart it on the same dirs).
    pub config_toml: String,
    _net: TestNetwork,
    _cni: tempfile::TempDir,
    logs: tempfile::TempDir,
    pub image: String,
}

/// The environment, or `None` (with the reason printed) when not root.
pub async fn env() -> Option<Env> {
    env_with("").await
}

/// Like [`env`], with `extra_toml` appended to the daemon's config.
pub async fn env_with(extra_toml: &str) -> Option<Env> {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root: these tests must not skip there"
        );
        eprintln!("skipped: containers need root");
        return None;
    }
    let registry = Registry::start().expect("registry");
    let images = push_test_images(&registry).await.expect("push images");
    let image = images.get("oci").expect("oci").reference.clone();
    let net = TestNetwork::new();
    let cni = tempfile::tempdir().expect("cni dir");
    let config = format!(
        "{}[registry]\ninsecure = [\"{}\"]\n{extra_toml}",
        net.config_toml(cni.path()),
        registry.host()
    );
    let d = Berthd::start_with(BerthdOptions {
        config_toml: Some(config.clone()),
        ..Default::default()
    })
    .await
    .expect("berthd");
    let env = Env {
        d,
        registry,
        config_toml: config,
        _net: net,
        _cni: cni,
        logs: tempfile::tempdir().expect("log dir"),
        image,
    };
    env.pull(&env.image.clone()).await.expect("pull busybox");
    Some(env)
}

impl Env {
    pub async fn pull(&self, image: &str) -> Result<String, tonic::Status> {
        self.d
            .images()
            .await
            .expect("client")
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                auth: None,
                sandbox_config: None,
            })
            .await
            .map(|r| r.into_inner().image_ref)
    }

    /// A pod config with its log directory under this env's temp dir.
    pub fn pod(&self, name: &str) -> PodSandboxConfig {
        let mut c = pod_config(name);
        c.log_directory = self.logs.path().join(name).display().to_string();
        c
    }

    pub async fn run_pod(&self, config: &PodSandboxConfig) -> String {
        self.d.run_pod(config.clone()).await.expect("RunPodSandbox")
    }

    pub fn container(&self, name: &str, command: &[&str]) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}/0.log"),
            linux: Some(LinuxContainerConfig::default()),
            ..Default::default()
        }
    }

    pub async fn create(
        &self,
        pod: &str,
        pod_config: &PodSandboxConfig,
        c: ContainerConfig,
    ) -> Result<String, tonic::Status> {
        self.d
            .runtime()
            .await
            .expect("client")
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(c),
                sandbox_config: Some(pod_config.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id)
    }

    pub async fn start(&self, id: &str) -> Result<(), tonic::Status> {
        self.d
            .runtime()
            .await
            .expect("client")
            .start_container(StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .map(|_| ())
    }

    /// Creates and starts a container; its ID.
    pub async fn run(&self, pod: &str, pc: &PodSandboxConfig, c: ContainerConfig) -> String {
        let id = self.create(pod, pc, c).await.expect("CreateContainer");
        self.start(&id).await.expect("StartContainer");
        id
    }

    pub async fn stop(&self, id: &str) {
        self.d
            .runtime()
            .await
            .expect("client")
            .stop_container(StopContainerRequest {
                container_id: id.into(),
                timeout: 0,
            })
            .await
            .expect("StopContainer");
    }

    pub async fn remove(&self, id: &str) {
        self.d
            .runtime()
            .await
            .expect("client")
            .remove_container(RemoveContainerRequest {
                container_id: id.into(),
            })
            .await
            .expect("RemoveContainer");
    }

    /// ContainerStatus (verbose: with the `info` document).
    pub async fn status_full(&self, id: &str) -> cri::ContainerStatusResponse {
        self.d
            .runtime()
            .await
            .expect("client")
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .expect("ContainerStatus")
            .into_inner()
    }

    pub async fn status(&self, id: &str) -> cri::ContainerStatus {
        self.status_full(id).await.status.expect("status")
    }

    pub async fn wait_exited(&self, id: &str) -> cri::ContainerStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let st = self.status(id).await;
            if st.state == ContainerState::ContainerExited as i32 {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} still {:?}",
                st.state
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The container's cgroup path (relative to the hierarchy roots), from verbose status.
    pub async fn cgroup_path(&self, id: &str) -> String {
        let resp = self.status_full(id).await;
        let info: serde_json::Value =
            serde_json::from_str(&resp.info["info"]).expect("info is JSON");
        info["cgroup"].as_str().expect("cgroup path").to_string()
    }

    /// Where a container's CRI log is.
    pub fn log_path(&self, pc: &PodSandboxConfig, c: &ContainerConfig) -> PathBuf {
        PathBuf::from(&pc.log_directory).join(&c.log_path)
    }
}

/// Content of each CRI log line (`<time> <stream> <F|P> <content>`).
pub fn read_log(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or_default().to_string())
        .collect()
}

/// Waits up to `timeout` for a log line for which `want` holds; all lines so far on failure.
pub async fn wait_for_line(
    path: &Path,
    timeout: Duration,
    want: impl Fn(&str) -> bool,
) -> Result<String, Vec<String>> {
    let deadline = Instant::now() + timeout;
    loop {
        let lines = read_log(path);
        if let Some(l) = lines.iter().find(|l| want(l)) {
            return Ok(l.clone());
        }
        if Instant::now() > deadline {
            return Err(lines);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the host mounts cgroup v2 at /sys/fs/cgroup (else v1 hierarchies).
pub fn unified_cgroups() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// A cgroup interface file of the container cgroup `path`, read from the host.
pub fn cgroup_file(controller: &str, path: &str, file: &str) -> String {
    let p = if unified_cgroups() {
        Path::new("/sys/fs/cgroup").join(path).join(file)
    } else {
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(path)
            .join(file)
    };
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}
