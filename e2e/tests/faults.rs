//! Crash safety: berthd killed (SIGKILL, through test-only failpoints) at precise points
//! inside RunPodSandbox, CreateContainer, StartContainer, StopPodSandbox, RemovePodSandbox and
//! PullImage. After each crash a new berthd starts on the same state: every pod and container
//! reports the right state, the next operations succeed, and once everything is removed the
//! host inventory (mounts, shims, cgroups, veths, IP leases, pinned namespaces, state files)
//! is empty. Needs root and a berthd built with failpoints (`cargo build --all-targets`
//! arms them; CI does).

use std::time::Duration;

use e2e::containers::{Env, env};
use e2e::daemon::{Berthd, BerthdOptions};
use e2e::images::push_test_images;
use e2e::registry::Registry;
use proto::cri::{
    self, ContainerState, ImageSpec, ImageStatusRequest, ListContainersRequest,
    ListPodSandboxRequest, PodSandboxState, PullImageRequest, RemovePodSandboxRequest,
    StopPodSandboxRequest,
};

const CRASH_TIMEOUT: Duration = Duration::from_secs(20);

fn opts(config: &str, failpoint: Option<&str>) -> BerthdOptions {
    BerthdOptions {
        config_toml: Some(config.to_string()),
        env: failpoint
            .map(|f| vec![(failpoint::ENV.to_string(), f.to_string())])
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// Restarts `e`'s berthd armed with `failpoint`.
async fn arm(e: &mut Env, failpoint: &str) {
    let config = e.config.clone();
    e.d.respawn(&opts(&config, Some(failpoint)))
        .await
        .expect("armed berthd");
}

/// Waits for the armed berthd to die at its failpoint, then starts a clean one on the same
/// state.
async fn crash_and_restart(e: &mut Env, failpoint: &str) {
    let status = e.d.wait_exit(CRASH_TIMEOUT).await.expect("berthd crashes");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "berthd should have died at {failpoint} (a berthd built without `--all-targets` has no failpoints): {}",
        e.d.stderr()
    );
    let config = e.config.clone();
    e.d.respawn(&opts(&config, None))
        .await
        .expect("restarted berthd");
}

async fn pods(e: &Env) -> Vec<cri::PodSandbox> {
    e.d.runtime()
        .await
        .expect("client")
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items
}

async fn containers(e: &Env) -> Vec<cri::Container> {
    e.d.runtime()
        .await
        .expect("client")
        .list_containers(ListContainersRequest { filter: None })
        .await
        .expect("ListContainers")
        .into_inner()
        .containers
}

/// Whether every shim of `e`'s daemon is gone within a few seconds (a shim asked to shut
/// down answers first, then exits).
async fn no_shims_soon(e: &Env) -> bool {
    none_soon(e, e2e::cleanup::shims_under).await
}

/// Whether `list` finds no process of `e`'s daemon within a few seconds.
async fn none_soon(e: &Env, list: fn(&std::path::Path) -> Vec<i32>) -> bool {
    for _ in 0..100 {
        if list(e.d.dir()).is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Stops and removes every pod, then checks the host holds nothing of them.
async fn remove_all_and_check_clean(e: &Env) {
    let mut rt = e.d.runtime().await.expect("client");
    for p in pods(e).await {
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: p.id.clone(),
        })
        .await
        .expect("StopPodSandbox");
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: p.id,
        })
        .await
        .expect("RemovePodSandbox");
    }
    assert!(containers(e).await.is_empty());
    no_shims_soon(e).await;
    e2e::inventory::assert_clean(&e.d, &e.net.bridge);
}

/// A full pod with a running container works after the crash.
async fn lifecycle_works(e: &Env, name: &str) {
    let (_, id) = e
        .run_container(name, &["/bin/sh", "-c", "exec sleep 3600"], |_| {})
        .await;
    let out = e
        .exec_sync(&id, &["echo", "alive"], 10)
        .await
        .expect("ExecSync");
    assert_eq!(out.stdout, b"alive\n");
}

async fn run_pod_crashes_at(failpoint: &str) {
    let Some(mut e) = env().await else { return };
    arm(&mut e, failpoint).await;
    let pc = e.pod("crashpod");
    let err =
        e.d.run_pod(pc.clone())
            .await
            .expect_err("berthd dies mid-call");
    eprintln!("RunPodSandbox during the crash: {err}");
    crash_and_restart(&mut e, failpoint).await;
    // The half-made pod was torn down and shows NotReady; kubelet removes it.
    let left = pods(&e).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].state, PodSandboxState::SandboxNotready as i32);
    assert!(
        no_shims_soon(&e).await,
        "the half-made pod's shim must be gone"
    );
    remove_all_and_check_clean(&e).await;
    lifecycle_works(&e, "after").await;
    remove_all_and_check_clean(&e).await;
}

#[tokio::test]
async fn crash_in_run_pod_after_the_shim_started() {
    run_pod_crashes_at("run_pod.after_shim").await;
}

#[tokio::test]
async fn crash_in_run_pod_after_the_network_was_attached() {
    run_pod_crashes_at("run_pod.after_network").await;
}

#[tokio::test]
async fn crash_in_create_container_rolls_back_or_keeps_a_usable_container() {
    for (failpoint, survives) in [
        ("create_container.after_record", false),
        ("create_container.after_dirs", true),
    ] {
        let Some(mut e) = env().await else { return };
        let pc = e.pod("crpod");
        let pod = e.run_pod(&pc).await;
        arm(&mut e, failpoint).await;
        let c = e.container("c", &["/bin/sh", "-c", "exec sleep 3600"]);
        let err = e.create(&pod, &pc, c.clone()).await.expect_err("dies");
        eprintln!("CreateContainer during the crash: {err}");
        crash_and_restart(&mut e, failpoint).await;
        let left = containers(&e).await;
        let id = if survives {
            assert_eq!(left.len(), 1, "{failpoint}: {left:?}");
            assert_eq!(left[0].state, ContainerState::ContainerCreated as i32);
            left[0].id.clone()
        } else {
            assert!(
                left.is_empty(),
                "{failpoint}: half-created container kept: {left:?}"
            );
            e.create(&pod, &pc, c).await.expect("CreateContainer again")
        };
        e.start(&id).await.expect("StartContainer");
        let out = e
            .exec_sync(&id, &["echo", "ok"], 10)
            .await
            .expect("ExecSync");
        assert_eq!(out.stdout, b"ok\n");
        remove_all_and_check_clean(&e).await;
    }
}

#[tokio::test]
async fn crash_in_start_container_before_and_after_the_shim_ran_it() {
    for failpoint in ["start_container.before_shim", "start_container.after_shim"] {
        let Some(mut e) = env().await else { return };
        let pc = e.pod("stpod");
        let pod = e.run_pod(&pc).await;
        let c = e.container("c", &["/bin/sh", "-c", "exec sleep 3600"]);
        let id = e.create(&pod, &pc, c).await.expect("CreateContainer");
        arm(&mut e, failpoint).await;
        let err = e.start(&id).await.expect_err("dies");
        eprintln!("StartContainer during the crash: {err}");
        crash_and_restart(&mut e, failpoint).await;
        let st = e.status(&id).await;
        if failpoint.ends_with("after_shim") {
            // The shim runs it: berthd adopts it as Running, exec reaches it.
            assert_eq!(st.state, ContainerState::ContainerRunning as i32, "{st:?}");
            let out = e
                .exec_sync(&id, &["echo", "adopted"], 10)
                .await
                .expect("ExecSync");
            assert_eq!(out.stdout, b"adopted\n");
        } else {
            // Never ran: still Created, and can be started now.
            assert_eq!(st.state, ContainerState::ContainerCreated as i32, "{st:?}");
            e.start(&id).await.expect("StartContainer after the crash");
        }
        remove_all_and_check_clean(&e).await;
    }
}

#[tokio::test]
async fn crash_in_stop_pod_is_finished_at_start() {
    for failpoint in ["stop_pod.after_kill", "stop_pod.after_network"] {
        let Some(mut e) = env().await else { return };
        let (pod, id) = e
            .run_container("sppod", &["/bin/sh", "-c", "exec sleep 3600"], |_| {})
            .await;
        arm(&mut e, failpoint).await;
        let err =
            e.d.runtime()
                .await
                .expect("client")
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: pod.clone(),
                })
                .await
                .expect_err("dies");
        eprintln!("StopPodSandbox during the crash: {err}");
        crash_and_restart(&mut e, failpoint).await;
        let left = pods(&e).await;
        assert_eq!(left[0].state, PodSandboxState::SandboxNotready as i32);
        assert_eq!(
            e.status(&id).await.state,
            ContainerState::ContainerExited as i32
        );
        assert!(
            no_shims_soon(&e).await,
            "{failpoint}: the stop was not finished"
        );
        remove_all_and_check_clean(&e).await;
    }
}

#[tokio::test]
async fn crash_in_remove_pod_leaves_a_pod_that_removes_cleanly() {
    for failpoint in ["remove_pod.after_containers", "remove_pod.after_cgroup"] {
        let Some(mut e) = env().await else { return };
        let (pod, _) = e
            .run_container("rmpod", &["/bin/sh", "-c", "exec sleep 3600"], |_| {})
            .await;
        arm(&mut e, failpoint).await;
        let err =
            e.d.runtime()
                .await
                .expect("client")
                .remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: pod.clone(),
                })
                .await
                .expect_err("dies");
        eprintln!("RemovePodSandbox during the crash: {err}");
        crash_and_restart(&mut e, failpoint).await;
        let left = pods(&e).await;
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].state, PodSandboxState::SandboxNotready as i32);
        assert!(containers(&e).await.is_empty());
        remove_all_and_check_clean(&e).await;
    }
}

#[tokio::test]
async fn crash_in_pull_leaves_no_layers_and_the_next_pull_works() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let registry = Registry::start().expect("registry");
    let images = push_test_images(&registry).await.expect("push images");
    let image = images.get("oci").expect("oci").reference.clone();
    let config = format!("[registry]\ninsecure = [\"{}\"]\n", registry.host());
    let mut d = Berthd::start_with(opts(&config, None))
        .await
        .expect("berthd");
    d.respawn(&opts(&config, Some("pull.after_layer")))
        .await
        .expect("armed");
    let pull = PullImageRequest {
        image: Some(ImageSpec {
            image: image.clone(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let err = d
        .images()
        .await
        .expect("client")
        .pull_image(pull.clone())
        .await
        .expect_err("dies");
    eprintln!("PullImage during the crash: {err}");
    let status = d.wait_exit(CRASH_TIMEOUT).await.expect("crash");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    d.respawn(&opts(&config, None)).await.expect("restart");
    let snapshots = std::fs::read_dir(d.root_dir.join("snapshots"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(snapshots, 0, "layers of the interrupted pull are left");
    let st = d
        .images()
        .await
        .expect("client")
        .image_status(ImageStatusRequest {
            image: pull.image.clone(),
            verbose: false,
        })
        .await
        .expect("ImageStatus")
        .into_inner();
    assert!(st.image.is_none(), "a half-pulled image must not show");
    d.images()
        .await
        .expect("client")
        .pull_image(pull)
        .await
        .expect("the next pull works");
}

#[tokio::test]
async fn host_state_no_record_owns_is_swept_at_start() {
    let Some(mut e) = env().await else { return };
    let pc = e.pod("orphan");
    let pod = e.run_pod(&pc).await;
    let shims = e2e::cleanup::shims_under(e.d.dir());
    assert_eq!(shims.len(), 1);
    // berthd dies and loses the pod's record (as if its disk write never happened).
    e.d.stop_with(nix::sys::signal::Signal::SIGKILL, CRASH_TIMEOUT)
        .await
        .expect("kill -9");
    std::fs::remove_dir_all(e.d.root_dir.join("pods").join(&pod)).expect("drop the record");
    let config = e.config.clone();
    e.d.respawn(&opts(&config, None)).await.expect("restart");
    assert!(pods(&e).await.is_empty());
    // Its shim, pinned namespaces, files, address and veth are gone.
    assert!(no_shims_soon(&e).await, "orphan shim still runs");
    // The pod's cgroup too, although only the lost record had its (kubelet-chosen) parent.
    e2e::inventory::assert_clean(&e.d, &e.net.bridge);
}

/// The one spare shim of `e`'s berthd (started ahead of the next pod), waited for.
async fn the_spare(e: &Env) -> i32 {
    for _ in 0..100 {
        if let [pid] = e2e::cleanup::spares_under(e.d.dir())[..] {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "no single spare shim: {:?}",
        e2e::cleanup::spares_under(e.d.dir())
    );
}

/// Whether no spare shim of `e`'s berthd is left within a few seconds.
async fn no_spares_soon(e: &Env) -> bool {
    none_soon(e, e2e::cleanup::spares_under).await
}

/// berthd starts the next pod's shim ahead of it: the next pod's shim is that process, another
/// spare follows, and a spare no pod took ends with its berthd — killed or stopped — so no
/// shim waits on the host for a berthd that is gone.
#[tokio::test]
async fn the_spare_shim_serves_the_next_pod_and_goes_with_berthd() {
    let Some(mut e) = env().await else { return };
    let spare = the_spare(&e).await;
    let pod = e.run_pod(&e.pod("spare")).await;
    assert_eq!(
        e2e::cleanup::shims_under(e.d.dir()),
        vec![spare],
        "the pod's shim is the spare that waited"
    );
    let next = the_spare(&e).await;
    assert_ne!(next, spare);
    e.d.stop_with(nix::sys::signal::Signal::SIGKILL, CRASH_TIMEOUT)
        .await
        .expect("kill -9");
    assert!(
        no_spares_soon(&e).await,
        "a killed berthd's spare shim stays"
    );
    assert_eq!(
        e2e::cleanup::shims_under(e.d.dir()),
        vec![spare],
        "the pod's shim stays"
    );
    let config = e.config.clone();
    e.d.respawn(&opts(&config, None)).await.expect("restart");
    assert_ne!(the_spare(&e).await, next);
    e.d.remove_pod(&pod).await;
    e2e::inventory::assert_clean(&e.d, &e.net.bridge);
    e.d.stop_with(nix::sys::signal::Signal::SIGTERM, CRASH_TIMEOUT)
        .await
        .expect("stop");
    assert!(
        no_spares_soon(&e).await,
        "a stopped berthd's spare shim stays"
    );
}
