//! Faults from berthd's environment, with real processes: its disk fills up during a pull and
//! during a container create, the registry drops the connection in the middle of a blob, a
//! pod's shim is killed, a container's process is killed from outside, a CNI plugin hangs.
//! After each, berthd (restarted where it matters) reports the right states, the next
//! operations succeed, and nothing is left on the host once everything is removed. Needs root
//! (CI runs as root).

use e2e::inventory as leftovers;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use e2e::containers::env;
use e2e::daemon::{Berthd, BerthdOptions};
use e2e::images::{
    Compression, ImageBuilder, LayerBuilder, ManifestFormat, Platform, push_manifest,
    push_test_images,
};
use e2e::pods::{TestNetwork, pod_config, process_alive};
use e2e::registry::Registry;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use proto::cri::{
    self, ContainerState, ContainerStatusRequest, ImageSpec, ImageStatusRequest,
    ListContainersRequest, PodSandboxState, PodSandboxStatusRequest, PullImageRequest,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::Code;

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (tmpfs mounts, pods, containers)");
    false
}

// ---------------------------------------------------------------------------------------
// A small filesystem for berthd's root dir
// ---------------------------------------------------------------------------------------

/// A tmpfs of a few MiB mounted under a temp dir, unmounted when dropped.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(mib: u64) -> SmallFs {
        let dir = tempfile::Builder::new()
            .prefix("berth-smallfs-")
            .tempdir()
            .expect("tempdir");
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={mib}m,mode=0711").as_str()),
        )
        .expect("mount tmpfs");
        SmallFs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn free_bytes(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(self.path()).expect("statvfs");
        st.blocks_available() * st.fragment_size()
    }

    /// Fills the filesystem with a file of zeros until only `keep` bytes are free (0: until
    /// the disk is full); returns the file.
    fn fill_leaving(&self, keep: u64) -> PathBuf {
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).expect("create filler");
        let chunk = vec![0u8; 64 << 10];
        loop {
            let free = self.free_bytes();
            if free <= keep {
                break;
            }
            let n = (free - keep).min(chunk.len() as u64) as usize;
            match f.write(&chunk[..n]) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("fill: {e}"),
            }
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

async fn pull(d: &Berthd, image: &str) -> Result<String, tonic::Status> {
    d.images()
        .await
        .expect("image client")
        .pull_image(PullImageRequest {
            image: spec(image),
            auth: None,
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

async fn image_present(d: &Berthd, image: &str) -> bool {
    d.images()
        .await
        .expect("image client")
        .image_status(ImageStatusRequest {
            image: spec(image),
            verbose: false,
        })
        .await
        .expect("ImageStatus")
        .into_inner()
        .image
        .is_some()
}

/// Deterministic bytes gzip cannot shrink (xorshift), so a layer's size is what it says.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Pushes an image as `<name>:latest` with one layer per `(files, bytes each)` of noise.
async fn push_noise_image(registry: &Registry, name: &str, layers: &[(u64, usize)]) -> String {
    let mut image = ImageBuilder::new(Platform::linux_amd64());
    for (n, &(files, each)) in layers.iter().enumerate() {
        let mut layer = LayerBuilder::new();
        for i in 0..files {
            let seed = (n as u64) << 32 | (i + 1);
            layer.file(&format!("/noise-{n}/{i}"), noise(each, seed), 0o644);
        }
        image = image.layer(layer.build(Compression::Gzip).expect("build layer"));
    }
    let pushed = image
        .push(registry, name, ManifestFormat::Oci)
        .await
        .expect("push");
    push_manifest(
        registry,
        name,
        "latest",
        &pushed.manifest.media_type,
        &pushed.manifest_bytes,
    )
    .await
    .expect("tag");
    format!("{}/{name}:latest", registry.host())
}

/// Asserts the image store holds no snapshot (complete or half-built) and no temp file.
fn assert_no_snapshots_or_temp_files(d: &Berthd) {
    let snapshots = leftovers::entries(&d.root_dir.join("snapshots"));
    assert!(snapshots.is_empty(), "snapshots left: {snapshots:?}");
    for dir in [d.root_dir.join("content/sha256"), d.root_dir.clone()] {
        let temps: Vec<_> = leftovers::entries(&dir)
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
            })
            .collect();
        assert!(temps.is_empty(), "temp files left: {temps:?}");
    }
}

#[tokio::test]
async fn pull_onto_a_full_disk_is_resource_exhausted_leaves_nothing_and_works_once_space_is_freed()
{
    if !is_root() {
        return;
    }
    let fs = SmallFs::mount(24);
    let registry = Registry::start().expect("registry");
    // A small layer that fits, and 8 MiB that do not fit in the 2 MiB left free below: the
    // small one's finished snapshot must go too.
    let image = push_noise_image(&registry, "berth-test/fat", &[(1, 64 << 10), (4, 2 << 20)]).await;
    let d = Berthd::start_with(BerthdOptions {
        config_toml: Some(format!(
            "[registry]\ninsecure = [\"{}\"]\n",
            registry.host()
        )),
        root_dir: Some(fs.path().join("root")),
        ..Default::default()
    })
    .await
    .expect("berthd");
    let filler = fs.fill_leaving(2 << 20);

    let err = pull(&d, &image).await.expect_err("no room for the layer");
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(
        err.message().contains("No space left on device"),
        "{}",
        err.message()
    );
    assert!(!image_present(&d, &image).await, "no image recorded");
    assert_no_snapshots_or_temp_files(&d);

    std::fs::remove_file(&filler).expect("free space");
    pull(&d, &image).await.expect("pull once space is freed");
    assert!(image_present(&d, &image).await);
    leftovers::assert_clean(&d, "no-such-bridge");
}

#[tokio::test]
async fn create_and_start_on_a_full_disk_are_resource_exhausted_leave_nothing_and_work_once_space_is_freed()
 {
    if !is_root() {
        return;
    }
    let fs = SmallFs::mount(48);
    let registry = Registry::start().expect("registry");
    let images = push_test_images(&registry).await.expect("push images");
    let image = images.get("oci").expect("oci").reference.clone();
    let net = TestNetwork::new();
    let cni = tempfile::tempdir().expect("cni dir");
    let d = Berthd::start_with(BerthdOptions {
        config_toml: Some(format!(
            "{}[registry]\ninsecure = [\"{}\"]\n",
            net.config_toml(cni.path()),
            registry.host()
        )),
        root_dir: Some(fs.path().join("root")),
        ..Default::default()
    })
    .await
    .expect("berthd");
    pull(&d, &image).await.expect("pull busybox");
    let pc = pod_config("full");

    // Not even a pod fits: refused before anything of it is made.
    let filler = fs.fill_leaving(0);
    let err = d
        .run_pod(pc.clone())
        .await
        .expect_err("no room for the pod");
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(d.pod_ids().await.is_empty(), "no pod recorded");
    leftovers::assert_clean(&d, &net.bridge);
    std::fs::remove_file(&filler).expect("free space");

    let pod = d.run_pod(pc.clone()).await.expect("RunPodSandbox");
    let filler = fs.fill_leaving(0);

    let config = |attempt| cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: "c".into(),
            attempt,
        }),
        image: spec(&image),
        command: vec!["/usr/local/bin/pause".into()],
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    };
    let create = |attempt| {
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(config(attempt)),
            sandbox_config: Some(pc.clone()),
        };
        let d = &d;
        async move {
            let mut rt = d.runtime().await.expect("client");
            rt.create_container(req)
                .await
                .map(|r| r.into_inner().container_id)
        }
    };
    let err = create(0).await.expect_err("no room for the record");
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(
        err.message().contains("No space left on device"),
        "{}",
        err.message()
    );
    let mut rt = d.runtime().await.expect("client");
    let listed = rt
        .list_containers(ListContainersRequest { filter: None })
        .await
        .expect("list")
        .into_inner()
        .containers;
    assert!(listed.is_empty(), "no container recorded: {listed:?}");
    let records = leftovers::entries(&d.root_dir.join("containers"));
    assert!(records.is_empty(), "container state left: {records:?}");
    let roots = leftovers::entries(&d.state_dir.join("rootfs"));
    assert!(roots.is_empty(), "container root left: {roots:?}");
    let container_cgroups: Vec<_> = leftovers::cgroups_under(&e2e::pods::test_cgroup_parent())
        .into_iter()
        .flat_map(|pod_cgroup| leftovers::entries(&pod_cgroup))
        .filter(|p| p.is_dir())
        .collect();
    assert!(
        container_cgroups.is_empty(),
        "container cgroups: {container_cgroups:?}"
    );

    std::fs::remove_file(&filler).expect("free space");
    let id = create(0)
        .await
        .expect("create once space is freed (same name: the failed one left no record)");

    // A start whose Running record cannot be saved is undone: the container stays Created,
    // with no process, root mount or cgroup, and the same start works once there is room.
    let filler = fs.fill_leaving(0);
    let start = |id: String| {
        let d = &d;
        async move {
            let mut rt = d.runtime().await.expect("client");
            rt.start_container(cri::StartContainerRequest { container_id: id })
                .await
        }
    };
    let err = start(id.clone()).await.expect_err("no room for the record");
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    let (st, _) = container_status(&d, &id).await;
    assert_eq!(st.state, ContainerState::ContainerCreated as i32);
    let root = d.state_dir.join("rootfs").join(&id);
    assert!(
        !e2e::pods::mounts_under(&d.state_dir.join("rootfs")).contains(&root),
        "root left mounted"
    );
    let container_cgroups: Vec<_> = leftovers::cgroups_under(&e2e::pods::test_cgroup_parent())
        .into_iter()
        .flat_map(|pod_cgroup| leftovers::entries(&pod_cgroup))
        .filter(|p| p.is_dir())
        .collect();
    assert!(
        container_cgroups.is_empty(),
        "container cgroups: {container_cgroups:?}"
    );
    std::fs::remove_file(&filler).expect("free space");
    start(id.clone()).await.expect("start once space is freed");
    let (st, _) = container_status(&d, &id).await;
    assert_eq!(st.state, ContainerState::ContainerRunning as i32);
    d.remove_pod(&pod).await;
    leftovers::assert_clean(&d, &net.bridge);
}

// ---------------------------------------------------------------------------------------
// A registry that drops the connection in the middle of a blob
// ---------------------------------------------------------------------------------------

/// A TCP proxy in front of the registry that, while `cut_after` is not 0, closes each
/// connection once it has passed that many bytes from the registry to the client (only a
/// blob's response is that large; manifests and configs pass).
struct CuttingProxy {
    addr: SocketAddr,
    cut_after: Arc<AtomicU64>,
    cuts: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttingProxy {
    async fn start(upstream: SocketAddr, cut_after: u64) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let cut = Arc::new(AtomicU64::new(cut_after));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (c, n) = (cut.clone(), cuts.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream, c.clone(), n.clone()));
            }
        });
        CuttingProxy {
            addr,
            cut_after: cut,
            cuts,
            task,
        }
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    cut_after: Arc<AtomicU64>,
    cuts: Arc<AtomicUsize>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_r, mut client_w) = client.into_split();
    let (mut server_r, mut server_w) = server.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_r, &mut server_w).await;
        let _ = server_w.shutdown().await;
    });
    let mut passed = 0u64;
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match server_r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let limit = cut_after.load(Ordering::SeqCst);
        if limit != 0 && passed + n as u64 > limit {
            let keep = (limit - passed) as usize;
            let _ = client_w.write_all(&buf[..keep]).await;
            cuts.fetch_add(1, Ordering::SeqCst);
            break; // dropping both halves closes the connection mid-response
        }
        if client_w.write_all(&buf[..n]).await.is_err() {
            break;
        }
        passed += n as u64;
    }
    up.abort();
}

#[tokio::test]
async fn registry_dropping_the_connection_mid_blob_is_unavailable_leaves_nothing_and_the_next_pull_works()
 {
    let registry = Registry::start().expect("registry");
    // 4 MiB of noise: its blob is about as large, far past the cut.
    push_noise_image(&registry, "berth-test/dropped", &[(2, 2 << 20)]).await;
    let upstream: SocketAddr = registry.host().parse().expect("registry addr");
    let proxy = CuttingProxy::start(upstream, 256 << 10).await;
    let image = format!("{}/berth-test/dropped:latest", proxy.host());
    let d = Berthd::start_with(BerthdOptions {
        config_toml: Some(format!("[registry]\ninsecure = [\"{}\"]\n", proxy.host())),
        ..Default::default()
    })
    .await
    .expect("berthd");

    let err = pull(&d, &image).await.expect_err("the blob is cut short");
    assert!(
        proxy.cuts.load(Ordering::SeqCst) > 0,
        "the proxy cut nothing"
    );
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(
        err.message().contains("sha256:"),
        "names the blob: {}",
        err.message()
    );
    assert!(!image_present(&d, &image).await, "no image recorded");
    assert_no_snapshots_or_temp_files(&d);

    proxy.cut_after.store(0, Ordering::SeqCst);
    pull(&d, &image)
        .await
        .expect("pull through a healthy connection");
    assert!(image_present(&d, &image).await);
}

// ---------------------------------------------------------------------------------------
// Shims and container processes killed from outside
// ---------------------------------------------------------------------------------------

async fn pod_status(d: &Berthd, id: &str) -> (cri::PodSandboxStatus, serde_json::Value) {
    let resp = d
        .runtime()
        .await
        .expect("client")
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner();
    let info = serde_json::from_str(&resp.info["info"]).expect("info JSON");
    (resp.status.expect("status"), info)
}

async fn container_status(d: &Berthd, id: &str) -> (cri::ContainerStatus, serde_json::Value) {
    let resp = d
        .runtime()
        .await
        .expect("client")
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .expect("ContainerStatus")
        .into_inner();
    let info = serde_json::from_str(&resp.info["info"]).expect("info JSON");
    (resp.status.expect("status"), info)
}

async fn wait_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} still alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn killed_shim_marks_its_containers_shim_died_and_the_pod_not_ready_and_removal_cleans_up() {
    let Some(mut e) = env().await else { return };
    let pc = e.pod("doomed");
    let pod = e.run_pod(&pc).await;
    let a = e
        .create(&pod, &pc, e.container("a", &["/usr/local/bin/pause"]))
        .await
        .expect("create a");
    let b = e
        .create(&pod, &pc, e.container("b", &["/usr/local/bin/pause"]))
        .await
        .expect("create b");
    let done = e
        .create(
            &pod,
            &pc,
            e.container("done", &["/usr/local/bin/exitwith", "3"]),
        )
        .await
        .expect("create done");
    for id in [&a, &b, &done] {
        e.start(id).await.expect("start");
    }
    e.wait_exited(&done).await;
    let (_, pod_info) = pod_status(&e.d, &pod).await;
    let shim = pod_info["pid"].as_u64().expect("shim pid") as u32;
    let mut pids = Vec::new();
    for id in [&a, &b] {
        let (_, info) = container_status(&e.d, id).await;
        pids.push(info["pid"].as_u64().expect("container pid") as u32);
    }

    kill(Pid::from_raw(shim as i32), Signal::SIGKILL).expect("kill -9 the shim");
    wait_gone(shim).await;

    let (st, _) = pod_status(&e.d, &pod).await;
    assert_eq!(
        st.state,
        PodSandboxState::SandboxNotready as i32,
        "a pod whose shim died is NotReady"
    );
    for id in [&a, &b] {
        let (st, _) = container_status(&e.d, id).await;
        assert_eq!(st.state, ContainerState::ContainerExited as i32, "{id}");
        assert_eq!(st.reason, "ShimDied", "{id}");
        assert!(st.message.contains("shim"), "{}", st.message);
        assert_eq!(st.exit_code, 255);
    }
    for pid in pids {
        wait_gone(pid).await; // orphaned container processes are killed
    }
    let (st, _) = container_status(&e.d, &done).await;
    assert_eq!(
        (st.exit_code, st.reason.as_str()),
        (3, "Error"),
        "an exit the shim recorded is kept"
    );
    let late = e
        .create(&pod, &pc, e.container("late", &["true"]))
        .await
        .expect_err("no new container in a NotReady pod");
    assert_eq!(late.code(), Code::FailedPrecondition);

    // A restarted berthd reports the same.
    let mut old = e.d;
    old.stop_with(Signal::SIGKILL, Duration::from_secs(10))
        .await
        .expect("kill -9 berthd");
    let mut again =
        Berthd::spawn_in_existing(old.dir(), &env_config_of(&e.net, &e.cni, &e.registry))
            .expect("respawn");
    again
        .wait_ready(Duration::from_secs(20))
        .await
        .expect("ready");
    e.d = again;
    let (st, _) = pod_status(&e.d, &pod).await;
    assert_eq!(st.state, PodSandboxState::SandboxNotready as i32);
    let (st, _) = container_status(&e.d, &a).await;
    assert_eq!(st.reason, "ShimDied");

    // Stop and remove clean up what the shim left; the next pod works.
    e.d.remove_pod(&pod).await;
    leftovers::assert_clean(&e.d, &e.net.bridge);
    let (next_pod, next) = e
        .run_container("after", &["/usr/local/bin/pause"], |_| {})
        .await;
    assert_eq!(
        e.status(&next).await.state,
        ContainerState::ContainerRunning as i32
    );
    e.d.remove_pod(&next_pod).await;
    leftovers::assert_clean(&e.d, &e.net.bridge);
    drop(e);
    drop(old);
}

/// berthd's config for `env()`'s daemon, to restart it on the same dirs.
fn env_config_of(net: &TestNetwork, cni: &tempfile::TempDir, registry: &Registry) -> String {
    format!(
        "{}[registry]\ninsecure = [\"{}\"]\n",
        net.config_toml(cni.path()),
        registry.host()
    )
}

#[tokio::test]
async fn container_killed_from_outside_exits_137_and_a_new_attempt_runs() {
    let Some(e) = env().await else { return };
    let (pod, id) = e
        .run_container("victim", &["/usr/local/bin/pause"], |_| {})
        .await;
    let (_, info) = container_status(&e.d, &id).await;
    let pid = info["pid"].as_u64().expect("pid") as u32;
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill -9 the container");
    let st = e.wait_exited(&id).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (137, "Error"));
    assert!(st.finished_at >= st.started_at);
    let (pst, _) = pod_status(&e.d, &pod).await;
    assert_eq!(
        pst.state,
        PodSandboxState::SandboxReady as i32,
        "the pod lives on"
    );

    let pc = e.pod("victim");
    let mut retry = e.container("victim", &["/usr/local/bin/pause"]);
    if let Some(m) = retry.metadata.as_mut() {
        m.attempt = 1;
    }
    let again = e.create(&pod, &pc, retry).await.expect("create attempt 1");
    e.start(&again).await.expect("start attempt 1");
    assert_eq!(
        e.status(&again).await.state,
        ContainerState::ContainerRunning as i32
    );
    e.d.remove_pod(&pod).await;
    leftovers::assert_clean(&e.d, &e.net.bridge);
}

// ---------------------------------------------------------------------------------------
// A CNI plugin that hangs
// ---------------------------------------------------------------------------------------

const CNI_BIN: &str = "/usr/lib/cni";

#[tokio::test]
async fn hanging_cni_plugin_times_out_leaves_nothing_and_the_next_pod_works() {
    if !is_root() {
        return;
    }
    for plugin in ["bridge", "host-local", "portmap"] {
        if !Path::new(CNI_BIN).join(plugin).exists() {
            eprintln!(
                "skipped: {CNI_BIN}/{plugin} missing (apt-get install containernetworking-plugins)"
            );
            return;
        }
    }
    let net = TestNetwork::new();
    let conf = tempfile::tempdir().expect("conf dir");
    let ipam = tempfile::tempdir().expect("ipam dir");
    let bins = tempfile::tempdir().expect("bin dir");
    // Hangs on every command while the marker exists; otherwise it is portmap (which passes
    // the previous result through).
    let marker = bins.path().join("hang");
    std::fs::write(&marker, b"").expect("marker");
    let sleep_secs = 100_000 + std::process::id() % 100_000;
    let plugin = bins.path().join("berth-e2e-hang");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\nif [ -e '{}' ]; then exec sleep {sleep_secs}; fi\nexec {CNI_BIN}/portmap\n",
            marker.display()
        ),
    )
    .expect("write plugin");
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod plugin");
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": format!("berth-e2e-hang-{}", net.third_octet),
        "plugins": [
            {
                "type": "bridge",
                "bridge": net.bridge,
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "dataDir": ipam.path(),
                    "ranges": [[{"subnet": net.cidr()}]],
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            },
            {"type": "berth-e2e-hang"}
        ],
    });
    std::fs::write(conf.path().join("10-hang.conflist"), conflist.to_string())
        .expect("write conflist");
    let d = Berthd::start_with(BerthdOptions {
        config_toml: Some(format!(
            "[cni]\nconf_dir = \"{}\"\nbin_dirs = [\"{}\", \"{CNI_BIN}\"]\nplugin_timeout_seconds = 2\n[network]\nbridge = \"{}\"\nnft_table = \"{}\"\n",
            conf.path().display(),
            bins.path().display(),
            net.bridge,
            net.nft_table
        )),
        ..Default::default()
    })
    .await
    .expect("berthd");

    let started = Instant::now();
    let err = d
        .run_pod(pod_config("hung"))
        .await
        .expect_err("the plugin hangs");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.message().contains("timed out"), "{}", err.message());
    assert!(d.pod_ids().await.is_empty(), "no pod recorded");
    let hosts = host_local_addresses(ipam.path());
    assert!(hosts.is_empty(), "addresses left: {hosts:?}");
    let cache = leftovers::entries(&d.root_dir.join("network/cni-cache"));
    let cached: Vec<_> = cache
        .iter()
        .flat_map(|p| leftovers::entries(p))
        .chain(cache.iter().filter(|p| p.is_file()).cloned())
        .collect();
    assert!(cached.is_empty(), "CNI cache entries left: {cached:?}");
    let sleepers = processes_running(&format!("sleep {sleep_secs}"));
    assert!(
        sleepers.is_empty(),
        "hung plugin processes left: {sleepers:?}"
    );
    leftovers::assert_clean(&d, &net.bridge);

    std::fs::remove_file(&marker).expect("unhang the plugin");
    let id = d.run_pod(pod_config("after")).await.expect("the next pod");
    assert_eq!(host_local_addresses(ipam.path()).len(), 1);
    d.remove_pod(&id).await;
    assert!(host_local_addresses(ipam.path()).is_empty());
    leftovers::assert_clean(&d, &net.bridge);
}

/// host-local's address files (named by IP) under its data dir.
fn host_local_addresses(dir: &Path) -> Vec<PathBuf> {
    leftovers::entries(dir)
        .iter()
        .flat_map(|net| leftovers::entries(net))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
        })
        .collect()
}

/// PIDs of live processes whose command line is exactly `cmdline` (words joined by spaces).
fn processes_running(cmdline: &str) -> Vec<u32> {
    leftovers::entries(Path::new("/proc"))
        .iter()
        .filter_map(|p| p.file_name()?.to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let words: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|w| !w.is_empty())
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect();
            words.join(" ") == cmdline && process_alive(*pid)
        })
        .collect()
}
