//! A ready environment for container tests: a berthd with the busybox test image pulled
//! from a real registry, a private pod network and a log directory, plus the calls tests make
//! on containers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proto::cri::{
    self, ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest, ImageSpec,
    LinuxContainerConfig, LinuxContainerSecurityContext, PodSandboxConfig, PullImageRequest,
    StartContainerRequest,
};

use crate::daemon::{Berthd, BerthdOptions};
use crate::images::push_test_images;
use crate::pods::{TestNetwork, pod_config};
use crate::registry::Registry;

/// A berthd with the busybox test image pulled, on a private network, with a log dir.
pub struct Env {
    pub d: Berthd,
    pub registry: Registry,
    pub net: TestNetwork,
    pub cni: tempfile::TempDir,
    pub logs: tempfile::TempDir,
    pub image: String,
    /// berthd's config file contents (for restarting a daemon on the same dirs).
    pub config: String,
}

/// The environment, or None (with a message) when not root.
pub async fn env() -> Option<Env> {
    env_with("").await
}

/// [`env`] with `extra` appended to berthd's config (TOML tables after the network's).
pub async fn env_with(extra: &str) -> Option<Env> {
    Some(
        env_started(extra, BerthdOptions::default())
            .await?
            .expect("berthd"),
    )
}

/// [`env_with`] with berthd started with `opts` (its config is the environment's); the
/// error is berthd's failure to start.
pub async fn env_started(extra: &str, opts: BerthdOptions) -> Option<std::io::Result<Env>> {
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
        "{}[registry]\ninsecure = [\"{}\"]\n{extra}",
        net.config_toml(cni.path()),
        registry.host()
    );
    let d = match Berthd::start_with(BerthdOptions {
        config_toml: Some(config.clone()),
        ..opts
    })
    .await
    {
        Ok(d) => d,
        Err(e) => return Some(Err(e)),
    };
    let env = Env {
        d,
        registry,
        net,
        cni,
        logs: tempfile::tempdir().expect("log dir"),
        image,
        config,
    };
    env.pull(&env.image).await.expect("pull busybox");
    Some(Ok(env))
}

impl Env {
    /// PullImage of `image`; its image ID.
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

    /// Creates and starts a container; its ID.
    pub async fn run(&self, pod: &str, pc: &PodSandboxConfig, c: ContainerConfig) -> String {
        let id = self.create(pod, pc, c).await.expect("CreateContainer");
        self.start(&id).await.expect("StartContainer");
        id
    }

    /// StopContainer with no grace period.
    pub async fn stop(&self, id: &str) {
        self.d
            .runtime()
            .await
            .expect("client")
            .stop_container(cri::StopContainerRequest {
                container_id: id.into(),
                timeout: 0,
            })
            .await
            .expect("StopContainer");
    }

    /// The names of every container ListContainers shows.
    pub async fn container_names(&self) -> Vec<String> {
        self.d
            .runtime()
            .await
            .expect("client")
            .list_containers(cri::ListContainersRequest::default())
            .await
            .expect("ListContainers")
            .into_inner()
            .containers
            .into_iter()
            .filter_map(|c| c.metadata.map(|m| m.name))
            .collect()
    }

    /// RemoveContainer.
    pub async fn remove(&self, id: &str) {
        self.d
            .runtime()
            .await
            .expect("client")
            .remove_container(cri::RemoveContainerRequest {
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

    /// Runs a pod with one container running `cmd` (adjusted by `tune`) and starts it:
    /// (pod ID, container ID).
    pub async fn run_container(
        &self,
        name: &str,
        cmd: &[&str],
        tune: impl FnOnce(&mut ContainerConfig),
    ) -> (String, String) {
        let pc = self.pod(name);
        let pod = self.run_pod(&pc).await;
        let mut c = self.container(name, cmd);
        tune(&mut c);
        let id = self.create(&pod, &pc, c).await.expect("CreateContainer");
        self.start(&id).await.expect("StartContainer");
        (pod, id)
    }

    /// A streaming exec URL for `cmd` with stdout, and stderr unless `tty` (as crictl asks).
    pub async fn exec_url(&self, id: &str, cmd: &[&str], stdin: bool, tty: bool) -> String {
        self.d
            .runtime()
            .await
            .expect("client")
            .exec(cri::ExecRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                tty,
                stdin,
                stdout: true,
                stderr: !tty,
            })
            .await
            .expect("Exec")
            .into_inner()
            .url
    }

    /// A streaming attach URL with stdout and stderr, and stdin if asked.
    pub async fn attach_url(&self, id: &str, stdin: bool) -> String {
        self.d
            .runtime()
            .await
            .expect("client")
            .attach(cri::AttachRequest {
                container_id: id.into(),
                stdin,
                tty: false,
                stdout: true,
                stderr: true,
            })
            .await
            .expect("Attach")
            .into_inner()
            .url
    }

    /// A streaming port-forward URL for `pod` (`ports` as the CRI request lists them).
    pub async fn port_forward_url(&self, pod: &str, ports: &[i32]) -> String {
        self.d
            .runtime()
            .await
            .expect("client")
            .port_forward(cri::PortForwardRequest {
                pod_sandbox_id: pod.into(),
                port: ports.to_vec(),
            })
            .await
            .expect("PortForward")
            .into_inner()
            .url
    }

    /// A pod whose busybox httpd serves `hello-from-pod` at `/index.html` on `port`, inside
    /// the pod's network namespace only; returns once it answers: (pod ID, container ID).
    pub async fn run_web_server(&self, name: &str, port: u16) -> (String, String) {
        let script = format!(
            "mkdir -p /www; echo hello-from-pod > /www/index.html; exec httpd -f -p {port} -h /www"
        );
        let (pod, id) = self
            .run_container(name, &["/bin/sh", "-c", &script], |_| {})
            .await;
        let probe = format!(
            "until wget -q -O /dev/null http://127.0.0.1:{port}/index.html; do usleep 50000; done"
        );
        self.exec_sync(&id, &["sh", "-c", &probe], 10)
            .await
            .expect("web server up");
        (pod, id)
    }

    /// ExecSync of `cmd` with `timeout` seconds (0: none).
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<cri::ExecSyncResponse, tonic::Status> {
        self.d
            .runtime()
            .await
            .expect("client")
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            })
            .await
            .map(|r| r.into_inner())
    }

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

    pub async fn status(&self, id: &str) -> cri::ContainerStatus {
        self.d
            .runtime()
            .await
            .expect("client")
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .expect("ContainerStatus")
            .into_inner()
            .status
            .expect("status")
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

    /// Runs a container to completion and returns its status and log lines (content only).
    pub async fn run_to_end(
        &self,
        pod: &str,
        pc: &PodSandboxConfig,
        c: ContainerConfig,
    ) -> (cri::ContainerStatus, Vec<String>) {
        let log = PathBuf::from(&pc.log_directory).join(&c.log_path);
        let id = self.create(pod, pc, c).await.expect("CreateContainer");
        self.start(&id).await.expect("StartContainer");
        let st = self.wait_exited(&id).await;
        (st, read_log(&log))
    }
}

/// Content of each CRI log line (`<time> <stream> <F|P> <content>`).
pub fn read_log(path: &Path) -> Vec<String> {
    // The shim may still be draining the pipe right after the exit: give it a moment (a
    // container that prints nothing costs this wait).
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if !text.is_empty() || Instant::now() > deadline {
            return text
                .lines()
                .map(|l| l.splitn(4, ' ').nth(3).unwrap_or_default().to_string())
                .collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn security(c: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
    c.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}
