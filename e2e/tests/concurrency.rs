//! Twenty clients at once on one berthd, for a bounded time: pods created and removed,
//! containers created, started, stopped and removed in the same and in different pods (some
//! of them by clients that did not create them), the same names raced, the same image pulled
//! and removed. Every call must return in time (no deadlock), fail only where the race makes
//! the failure the right answer, and leave nothing behind once everything is removed.
//! Throughput and latencies are printed, not asserted. Needs root (CI runs as root).
//!
//! Which errors a race makes legitimate (anything else fails the test):
//! - RunPodSandbox: AlreadyExists when another client holds the same metadata.
//! - CreateContainer: AlreadyExists for a name and attempt another client took; NotFound
//!   when the pod was removed; FailedPrecondition when it was stopped (not ready).
//! - StartContainer: NotFound when the container was removed (by a client, or with its
//!   pod); FailedPrecondition when another client started it first, it already exited, or
//!   its pod is (being) stopped — a start that failed because the pod's shim shut down counts
//!   only if the pod is then NotReady or gone.
//! - StopContainer, ContainerStatus, PodSandboxStatus: NotFound when it was removed.
//! - StopPodSandbox, RemovePodSandbox, RemoveContainer, PullImage, RemoveImage, lists:
//!   no error (stop and remove are idempotent, unknown IDs included).

use e2e::inventory as leftovers;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::containers::{Env, env};
use e2e::images::{
    Compression, ImageBuilder, LayerBuilder, ManifestFormat, Platform, push_manifest,
};
use proto::cri::image_service_client::ImageServiceClient;
use proto::cri::runtime_service_client::RuntimeServiceClient;
use proto::cri::{
    self, ContainerStatusRequest, CreateContainerRequest, ImageSpec, ListContainersRequest,
    ListPodSandboxRequest, PodSandboxConfig, PodSandboxStatusRequest, PullImageRequest,
    RemoveContainerRequest, RemoveImageRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// How long the clients run (`BERTH_E2E_CONCURRENCY_SECS` overrides).
const DEFAULT_RUN: Duration = Duration::from_secs(20);
/// A call that has not returned after this is taken for a deadlock.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A pod other clients may use: ID and config (CreateContainer wants the config).
#[derive(Clone)]
struct PodRef {
    id: String,
    config: PodSandboxConfig,
}

#[derive(Default)]
struct OpStats {
    ok: u64,
    expected_errors: u64,
    max: Duration,
    total: Duration,
}

/// What every client shares.
struct Shared {
    env: Env,
    /// The image pulled (and removed) by the pull clients.
    pull_image: String,
    /// Pods open to every client, some of them about to be stopped or removed.
    pods: Mutex<Vec<PodRef>>,
    stats: Mutex<BTreeMap<&'static str, OpStats>>,
    unexpected: Mutex<Vec<String>>,
    deadline: Instant,
    names: AtomicU64,
}

/// One client: its own gRPC connection.
struct Client {
    shared: Arc<Shared>,
    rt: RuntimeServiceClient<Channel>,
    img: ImageServiceClient<Channel>,
    n: usize,
    rng: u64,
}

impl Shared {
    fn running(&self) -> bool {
        Instant::now() < self.deadline
    }

    fn unique(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.names.fetch_add(1, Ordering::Relaxed))
    }

    fn publish(&self, pod: PodRef) {
        self.pods.lock().expect("pods").push(pod);
    }

    fn unpublish(&self, id: &str) {
        self.pods.lock().expect("pods").retain(|p| p.id != id);
    }

    fn unexpected(&self, what: String) {
        eprintln!("UNEXPECTED: {what}");
        self.unexpected.lock().expect("unexpected").push(what);
    }
}

impl Client {
    async fn new(shared: Arc<Shared>, n: usize) -> Client {
        let rt = shared.env.d.runtime().await.expect("runtime client");
        let img = shared.env.d.images().await.expect("image client");
        Client {
            shared,
            rt,
            img,
            n,
            rng: 0x9e37_79b9_7f4a_7c15 ^ (n as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d),
        }
    }

    fn random(&mut self, below: usize) -> usize {
        // xorshift64*: enough to spread the clients' choices.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % below.max(1)
    }

    /// Runs one call with the deadlock timeout and records it: `Some` on success, `None` on an
    /// error in `allowed` (or a recorded unexpected failure).
    async fn call<T>(
        &self,
        op: &'static str,
        allowed: &[Code],
        fut: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, Option<Status>> {
        let started = Instant::now();
        let result = tokio::time::timeout(CALL_TIMEOUT, fut).await;
        let took = started.elapsed();
        let mut stats = self.shared.stats.lock().expect("stats");
        let s = stats.entry(op).or_default();
        s.max = s.max.max(took);
        s.total += took;
        match result {
            Err(_) => {
                drop(stats);
                self.shared.unexpected(format!(
                    "client {}: {op} did not return within {CALL_TIMEOUT:?}",
                    self.n
                ));
                Err(None)
            }
            Ok(Ok(r)) => {
                s.ok += 1;
                Ok(r.into_inner())
            }
            Ok(Err(status)) if allowed.contains(&status.code()) => {
                s.expected_errors += 1;
                Err(Some(status))
            }
            Ok(Err(status)) => {
                drop(stats);
                self.shared.unexpected(format!(
                    "client {}: {op}: {:?}: {}",
                    self.n,
                    status.code(),
                    status.message()
                ));
                Err(None)
            }
        }
    }

    async fn run_pod(&mut self, config: &PodSandboxConfig, allowed: &[Code]) -> Option<String> {
        let mut rt = self.rt.clone();
        let req = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        self.call("RunPodSandbox", allowed, rt.run_pod_sandbox(req))
            .await
            .ok()
            .map(|r| r.pod_sandbox_id)
    }

    async fn stop_pod(&mut self, id: &str) {
        let mut rt = self.rt.clone();
        let req = StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        let _ = self
            .call("StopPodSandbox", &[], rt.stop_pod_sandbox(req))
            .await;
    }

    async fn remove_pod(&mut self, id: &str) {
        let mut rt = self.rt.clone();
        let req = RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        let _ = self
            .call("RemovePodSandbox", &[], rt.remove_pod_sandbox(req))
            .await;
    }

    /// A container running `cmd` in `pod` (its config tuned so the name is unique or not).
    async fn create(
        &mut self,
        pod: &PodRef,
        name: &str,
        cmd: &[&str],
        allowed: &[Code],
    ) -> Option<String> {
        let mut c = self.shared.env.container(name, cmd);
        c.log_path = format!("{name}.log");
        let mut rt = self.rt.clone();
        let req = CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(c),
            sandbox_config: Some(pod.config.clone()),
        };
        self.call("CreateContainer", allowed, rt.create_container(req))
            .await
            .ok()
            .map(|r| r.container_id)
    }

    /// StartContainer where another client may have removed the container, started it, or
    /// stopped its pod.
    async fn start(&mut self, id: &str, pod: &str) -> bool {
        let mut rt = self.rt.clone();
        let req = StartContainerRequest {
            container_id: id.into(),
        };
        let allowed = [Code::NotFound, Code::FailedPrecondition];
        match self
            .call("StartContainer", &allowed, rt.start_container(req))
            .await
        {
            Ok(_) => true,
            Err(Some(status))
                if status.code() == Code::FailedPrecondition
                    && status.message().starts_with("start container") =>
            {
                // The start itself failed: legitimate only because the pod went away.
                if !self.pod_goes_away(pod).await {
                    self.shared.unexpected(format!(
                        "client {}: StartContainer {id} failed in a pod that stays ready: {}",
                        self.n,
                        status.message()
                    ));
                }
                false
            }
            Err(_) => false,
        }
    }

    /// Whether pod `id` is (or within a few seconds becomes) NotReady or removed.
    async fn pod_goes_away(&mut self, id: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut rt = self.rt.clone();
            let req = PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: false,
            };
            match self
                .call(
                    "PodSandboxStatus",
                    &[Code::NotFound],
                    rt.pod_sandbox_status(req),
                )
                .await
            {
                Ok(r) => {
                    let state = r.status.map(|s| s.state).unwrap_or_default();
                    if state != cri::PodSandboxState::SandboxReady as i32 {
                        return true;
                    }
                }
                Err(_) => return true,
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(&mut self, id: &str, timeout: i64) {
        let mut rt = self.rt.clone();
        let req = StopContainerRequest {
            container_id: id.into(),
            timeout,
        };
        let _ = self
            .call("StopContainer", &[Code::NotFound], rt.stop_container(req))
            .await;
    }

    async fn remove(&mut self, id: &str) {
        let mut rt = self.rt.clone();
        let req = RemoveContainerRequest {
            container_id: id.into(),
        };
        let _ = self
            .call("RemoveContainer", &[], rt.remove_container(req))
            .await;
    }

    async fn status(&mut self, id: &str) {
        let mut rt = self.rt.clone();
        let req = ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        let _ = self
            .call(
                "ContainerStatus",
                &[Code::NotFound],
                rt.container_status(req),
            )
            .await;
    }

    async fn container_ids(&mut self) -> Vec<String> {
        let mut rt = self.rt.clone();
        let req = ListContainersRequest { filter: None };
        self.call("ListContainers", &[], rt.list_containers(req))
            .await
            .map(|r| r.containers.into_iter().map(|c| c.id).collect())
            .unwrap_or_default()
    }

    async fn pull(&mut self, image: &str) {
        let mut img = self.img.clone();
        let req = PullImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            auth: None,
            sandbox_config: None,
        };
        let _ = self.call("PullImage", &[], img.pull_image(req)).await;
    }

    async fn remove_image(&mut self, image: &str) {
        let mut img = self.img.clone();
        let req = RemoveImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
        };
        let _ = self.call("RemoveImage", &[], img.remove_image(req)).await;
    }

    fn random_pod(&mut self) -> Option<PodRef> {
        let pods = self.shared.pods.lock().expect("pods").clone();
        if pods.is_empty() {
            return None;
        }
        let i = self.random(pods.len());
        Some(pods[i].clone())
    }

    /// Its own pods, open to the others from creation until after their removal: run, two
    /// containers (one exits by itself), stop one, then stop and remove the pod with the
    /// other still in it.
    async fn pod_owner(&mut self) {
        while self.shared.running() {
            let name = self.shared.unique("own");
            let config = self.shared.env.pod(&name);
            let Some(id) = self.run_pod(&config, &[]).await else {
                continue;
            };
            let pod = PodRef {
                id: id.clone(),
                config,
            };
            self.shared.publish(pod.clone());
            let long = self
                .create(&pod, "long", &["/usr/local/bin/pause"], &[])
                .await;
            let short = self.create(&pod, "short", &["true"], &[]).await;
            for c in long.iter().chain(short.iter()) {
                self.start(c, &id).await;
            }
            tokio::time::sleep(Duration::from_millis(self.random(300) as u64)).await;
            if let Some(c) = &long {
                self.stop(c, 1).await;
            }
            if let Some(c) = &short {
                self.remove(c).await;
            }
            self.stop_pod(&id).await;
            self.remove_pod(&id).await;
            self.shared.unpublish(&id);
        }
    }

    /// Races another client for the same pod metadata: one wins, the other is told
    /// AlreadyExists (unless the winner already removed it); each removes what it made.
    async fn pod_racer(&mut self) {
        let mut round = 0;
        while self.shared.running() {
            let mut config = self.shared.env.pod(&format!("contested-{round}"));
            if let Some(m) = config.metadata.as_mut() {
                m.uid = format!("contested-uid-{round}");
            }
            round += 1;
            let Some(id) = self.run_pod(&config, &[Code::AlreadyExists]).await else {
                continue;
            };
            self.shared.publish(PodRef {
                id: id.clone(),
                config,
            });
            tokio::time::sleep(Duration::from_millis(self.random(200) as u64)).await;
            self.remove_pod(&id).await;
            self.shared.unpublish(&id);
        }
    }

    /// Whole container lifecycles in whatever pod is open, including pods being removed.
    async fn container_worker(&mut self) {
        let pod_gone = [Code::NotFound, Code::FailedPrecondition];
        while self.shared.running() {
            let Some(pod) = self.random_pod() else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let name = self.shared.unique("work");
            let cmd: &[&str] = if self.random(3) == 0 {
                &["true"]
            } else {
                &["/usr/local/bin/pause"]
            };
            let Some(id) = self.create(&pod, &name, cmd, &pod_gone).await else {
                continue;
            };
            if self.start(&id, &pod.id).await {
                self.status(&id).await;
            }
            let timeout = self.random(2) as i64;
            self.stop(&id, timeout).await;
            self.remove(&id).await;
        }
    }

    /// Races another client for the same container name in the long-lived pods.
    async fn container_racer(&mut self, shared_pods: &[PodRef]) {
        let mut round = 0;
        while self.shared.running() {
            let pod = &shared_pods[round % shared_pods.len()];
            let name = format!("dup-{round}");
            round += 1;
            let Some(id) = self
                .create(
                    pod,
                    &name,
                    &["/usr/local/bin/pause"],
                    &[Code::AlreadyExists],
                )
                .await
            else {
                continue;
            };
            self.start(&id, &pod.id).await;
            self.remove(&id).await;
        }
    }

    /// Acts on containers it did not create: start, stop, remove, status; lists pods.
    async fn meddler(&mut self) {
        while self.shared.running() {
            let ids = self.container_ids().await;
            if ids.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let id = ids[self.random(ids.len())].clone();
            match self.random(5) {
                0 => {
                    let pod = self.pod_of(&id).await;
                    self.start(&id, &pod).await;
                }
                1 => self.stop(&id, 0).await,
                2 => self.remove(&id).await,
                3 => self.status(&id).await,
                _ => {
                    let mut rt = self.rt.clone();
                    let req = ListPodSandboxRequest { filter: None };
                    let _ = self
                        .call("ListPodSandbox", &[], rt.list_pod_sandbox(req))
                        .await;
                }
            }
        }
    }

    /// The pod of container `id` (empty if it is gone).
    async fn pod_of(&mut self, id: &str) -> String {
        let mut rt = self.rt.clone();
        let req = ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                id: id.into(),
                ..Default::default()
            }),
        };
        self.call("ListContainers", &[], rt.list_containers(req))
            .await
            .ok()
            .and_then(|r| r.containers.into_iter().next())
            .map(|c| c.pod_sandbox_id)
            .unwrap_or_default()
    }

    /// Pulls the same images as the other pullers; now and then removes the extra one so the
    /// next pulls download it again, together.
    async fn puller(&mut self) {
        while self.shared.running() {
            let image = self.shared.pull_image.clone();
            self.pull(&image).await;
            match self.random(4) {
                0 => self.remove_image(&image).await,
                1 => {
                    let busybox = self.shared.env.image.clone();
                    self.pull(&busybox).await;
                }
                _ => {}
            }
        }
    }
}

/// A single-layer image of about 2 MiB that only the pull clients use.
async fn push_pull_image(e: &Env) -> String {
    let mut layer = LayerBuilder::new();
    for i in 0..4u32 {
        let data: Vec<u8> = (0..512u32 << 10)
            .map(|j| (j.wrapping_mul(2_654_435_761) >> (i + 9)) as u8)
            .collect();
        layer.file(&format!("/data/blob-{i}"), data, 0o644);
    }
    let layer = layer.build(Compression::Gzip).expect("build layer");
    let name = "berth-test/concurrent";
    let pushed = ImageBuilder::new(Platform::linux_amd64())
        .layer(layer)
        .push(&e.registry, name, ManifestFormat::Oci)
        .await
        .expect("push");
    push_manifest(
        &e.registry,
        name,
        "latest",
        &pushed.manifest.media_type,
        &pushed.manifest_bytes,
    )
    .await
    .expect("tag");
    format!("{}/{name}:latest", e.registry.host())
}

fn run_time() -> Duration {
    std::env::var("BERTH_E2E_CONCURRENCY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(DEFAULT_RUN, Duration::from_secs)
}

fn print_figures(stats: &BTreeMap<&'static str, OpStats>, elapsed: Duration) {
    let total: u64 = stats.values().map(|s| s.ok + s.expected_errors).sum();
    eprintln!(
        "concurrency: 20 clients, {:.1} s, {total} calls, {:.0} calls/s",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    eprintln!(
        "{:<18} {:>7} {:>9} {:>10} {:>10}",
        "op", "ok", "expected", "mean ms", "max ms"
    );
    for (op, s) in stats {
        let n = (s.ok + s.expected_errors).max(1);
        eprintln!(
            "{op:<18} {:>7} {:>9} {:>10.1} {:>10.1}",
            s.ok,
            s.expected_errors,
            s.total.as_secs_f64() * 1000.0 / n as f64,
            s.max.as_secs_f64() * 1000.0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_clients_race_pods_containers_and_pulls_without_deadlock_error_or_leak() {
    let Some(e) = env().await else { return };
    let pull_image = push_pull_image(&e).await;
    let bridge = e.net.bridge.clone();
    let started = Instant::now();
    let shared = Arc::new(Shared {
        env: e,
        pull_image,
        pods: Mutex::default(),
        stats: Mutex::default(),
        unexpected: Mutex::default(),
        deadline: started + run_time(),
        names: AtomicU64::new(0),
    });
    let mut long_lived = Vec::new();
    for name in ["shared-a", "shared-b"] {
        let config = shared.env.pod(name);
        let id = shared.env.run_pod(&config).await;
        let pod = PodRef { id, config };
        shared.publish(pod.clone());
        long_lived.push(pod);
    }

    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..20 {
        let mut client = Client::new(shared.clone(), n).await;
        let long_lived = long_lived.clone();
        tasks.spawn(async move {
            match n {
                0..4 => client.pod_owner().await,
                4..6 => client.pod_racer().await,
                6..13 => client.container_worker().await,
                13..15 => client.container_racer(&long_lived).await,
                15..17 => client.meddler().await,
                _ => client.puller().await,
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("client task");
    }
    let elapsed = started.elapsed();
    print_figures(&shared.stats.lock().expect("stats"), elapsed);

    // No shim died: every container that exited has its real exit recorded.
    let d = &shared.env.d;
    let mut rt = d.runtime().await.expect("client");
    for c in rt
        .list_containers(ListContainersRequest { filter: None })
        .await
        .expect("ListContainers")
        .into_inner()
        .containers
    {
        let st = rt
            .container_status(ContainerStatusRequest {
                container_id: c.id.clone(),
                verbose: false,
            })
            .await
            .expect("ContainerStatus")
            .into_inner()
            .status
            .expect("status");
        if st.reason == "ShimDied" || st.reason == "Unknown" {
            shared.unexpected(format!(
                "container {} exited with {}: {}",
                c.id, st.reason, st.message
            ));
        }
    }

    // Everything still there is removed through the API, then the host must be clean.
    for id in d.pod_ids().await {
        d.remove_pod(&id).await;
    }
    let left = rt
        .list_containers(ListContainersRequest { filter: None })
        .await
        .expect("ListContainers")
        .into_inner()
        .containers;
    let orphans: Vec<String> = left
        .iter()
        .map(|c| format!("{} in pod {}", c.id, c.pod_sandbox_id))
        .collect();
    let unexpected = shared.unexpected.lock().expect("unexpected").clone();
    assert!(
        unexpected.is_empty(),
        "{} unexpected results:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
    assert!(
        orphans.is_empty(),
        "containers outlived their removed pods: {orphans:?}"
    );
    leftovers::assert_clean(d, &bridge);
    let stats = shared.stats.lock().expect("stats");
    for op in [
        "RunPodSandbox",
        "StartContainer",
        "RemovePodSandbox",
        "PullImage",
    ] {
        assert!(
            stats.get(op).is_some_and(|s| s.ok > 0),
            "no successful {op}: the clients did not get to work"
        );
    }
}
