//! Live updates end to end: `UpdateContainerResources` changes a running container's cgroup
//! (checked from the host and from inside the container), is recorded in
//! `ContainerStatus.resources`, and refuses clearly what it cannot do; `UpdateRuntimeConfig`
//! records kubelet's pod CIDR. Container tests need root (CI runs as root).

mod obs_env;

use std::time::Duration;

use e2e::daemon::Berthd;
use nix::sys::signal::Signal;
use obs_env::{cgroup_file, env, unified_cgroups, wait_for_line};
use proto::cri::{
    self, LinuxContainerResources, UpdateContainerResourcesRequest, UpdateRuntimeConfigRequest,
};
use tonic::Code;

async fn update(
    d: &Berthd,
    id: &str,
    linux: Option<LinuxContainerResources>,
) -> Result<(), tonic::Status> {
    d.runtime()
        .await
        .expect("client")
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.into(),
            linux,
            ..Default::default()
        })
        .await
        .map(|_| ())
}

/// The container's memory limit and CPU quota, read from the host.
fn host_limits(cgroup: &str) -> (String, String) {
    if unified_cgroups() {
        (
            cgroup_file("memory", cgroup, "memory.max"),
            cgroup_file("cpu", cgroup, "cpu.max"),
        )
    } else {
        (
            cgroup_file("memory", cgroup, "memory.limit_in_bytes"),
            cgroup_file("cpu", cgroup, "cpu.cfs_quota_us"),
        )
    }
}

/// A shell loop printing the container's own memory limit and CPU quota (v1 or v2 files).
const PRINT_LIMITS: &str = "while true; do \
    echo \"mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max) \
    quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cat /sys/fs/cgroup/cpu.max)\"; \
    sleep 0.1; done";

#[tokio::test]
async fn update_applies_live_inside_the_container_and_shows_in_status() {
    let Some(e) = env().await else { return };
    let pc = e.pod("live");
    let pod = e.run_pod(&pc).await;
    let mut c = e.container("live", &["sh", "-c", PRINT_LIMITS]);
    c.linux.get_or_insert_with(Default::default).resources = Some(LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        cpu_shares: 256,
        cpu_quota: 50_000,
        cpu_period: 100_000,
        ..Default::default()
    });
    let log = e.log_path(&pc, &c);
    let id = e.run(&pod, &pc, c).await;
    let before = e
        .status(&id)
        .await
        .resources
        .expect("create-time resources");
    let linux = before.linux.expect("linux");
    assert_eq!(
        (linux.memory_limit_in_bytes, linux.cpu_shares),
        (64 << 20, 256)
    );
    let cgroup = e.cgroup_path(&id).await;
    wait_for_line(&log, Duration::from_secs(10), |l| {
        l.starts_with("mem=67108864")
    })
    .await
    .expect("container sees its create-time limit");

    update(
        &e.d,
        &id,
        Some(LinuxContainerResources {
            memory_limit_in_bytes: 96 << 20,
            cpu_quota: 20_000,
            cpu_shares: 512,
            cpuset_cpus: "0".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("UpdateContainerResources");

    let (mem, quota) = host_limits(&cgroup);
    assert_eq!(mem, (96u64 << 20).to_string());
    assert!(quota.starts_with("20000"), "quota {quota}");
    assert_eq!(cgroup_file("cpuset", &cgroup, "cpuset.cpus"), "0");
    let seen = wait_for_line(&log, Duration::from_secs(10), |l| {
        l.starts_with("mem=100663296 quota=20000")
    })
    .await;
    assert!(seen.is_ok(), "container sees the new limits: {seen:?}");

    let after = e.status(&id).await.resources.expect("resources");
    let linux = after.linux.expect("linux");
    assert_eq!(linux.memory_limit_in_bytes, 96 << 20);
    assert_eq!(
        (linux.cpu_quota, linux.cpu_period),
        (20_000, 100_000),
        "period kept"
    );
    assert_eq!((linux.cpu_shares, linux.cpuset_cpus.as_str()), (512, "0"));
}

#[tokio::test]
async fn memory_limit_below_usage_is_refused_and_nothing_changes() {
    let Some(e) = env().await else { return };
    if unified_cgroups() {
        eprintln!(
            "skipped: on cgroup v2 the kernel does not refuse a memory.max below usage (it \
             reclaims, then OOM-kills); the refusal is a cgroup v1 behaviour"
        );
        return;
    }
    let pc = e.pod("busy");
    let pod = e.run_pod(&pc).await;
    // 48 MiB of tmpfs pages: charged to the container, not reclaimable without swap.
    let mut c = e.container(
        "busy",
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/dev/shm/fill bs=1M count=48 && echo filled; sleep 300",
        ],
    );
    c.linux.get_or_insert_with(Default::default).resources = Some(LinuxContainerResources {
        memory_limit_in_bytes: 128 << 20,
        cpu_quota: 50_000,
        cpu_period: 100_000,
        ..Default::default()
    });
    let log = e.log_path(&pc, &c);
    let id = e.run(&pod, &pc, c).await;
    wait_for_line(&log, Duration::from_secs(20), |l| l == "filled")
        .await
        .expect("container filled its memory");
    let cgroup = e.cgroup_path(&id).await;

    let err = update(
        &e.d,
        &id,
        Some(LinuxContainerResources {
            memory_limit_in_bytes: 16 << 20,
            cpu_quota: 10_000,
            ..Default::default()
        }),
    )
    .await
    .expect_err("limit below usage");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(
        err.message()
            .contains("linux.memory_limit_in_bytes 16777216")
            && err.message().contains("EBUSY"),
        "{}",
        err.message()
    );
    assert_eq!(
        host_limits(&cgroup),
        ((128u64 << 20).to_string(), "50000".to_string()),
        "neither memory nor CPU changed"
    );
    let linux = e
        .status(&id)
        .await
        .resources
        .expect("res")
        .linux
        .expect("linux");
    assert_eq!(
        (linux.memory_limit_in_bytes, linux.cpu_quota),
        (128 << 20, 50_000)
    );
}

#[tokio::test]
async fn updates_are_validated_and_follow_the_container_state() {
    let Some(e) = env().await else { return };
    let err = update(&e.d, "", Some(Default::default()))
        .await
        .expect_err("no id");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = update(&e.d, "no-such-container", Some(Default::default()))
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound, "{err}");

    let pc = e.pod("states");
    let pod = e.run_pod(&pc).await;
    let c = e.container("later", &["sleep", "300"]);
    let created = e.create(&pod, &pc, c).await.expect("create");
    let err = update(&e.d, &created, None).await.expect_err("no linux");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = update(
        &e.d,
        &created,
        Some(LinuxContainerResources {
            cpuset_cpus: "0-4095".into(),
            ..Default::default()
        }),
    )
    .await
    .expect_err("cpus the host lacks");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("linux.cpuset_cpus"),
        "{}",
        err.message()
    );
    let err = update(
        &e.d,
        &created,
        Some(LinuxContainerResources {
            unified: [("cgroup.procs".to_string(), "1".to_string())].into(),
            ..Default::default()
        }),
    )
    .await
    .expect_err("a unified key that moves processes");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("cgroup.procs"), "{}", err.message());

    // A created container has its cgroup already (CreateContainer makes it, as `runc create`
    // does in containerd's): the update is written to it, and the container starts in it.
    let limit = LinuxContainerResources {
        memory_limit_in_bytes: 40 << 20,
        ..Default::default()
    };
    update(&e.d, &created, Some(limit))
        .await
        .expect("update created");
    let cgroup = e.cgroup_path(&created).await;
    assert_eq!(host_limits(&cgroup).0, (40u64 << 20).to_string());
    e.start(&created).await.expect("start");
    assert_eq!(e.cgroup_path(&created).await, cgroup);
    assert_eq!(host_limits(&cgroup).0, (40u64 << 20).to_string());

    // Removing a container that never started removes the cgroup CreateContainer made.
    let unstarted = e
        .create(&pod, &pc, e.container("never", &["true"]))
        .await
        .expect("create");
    let cgroup = e.cgroup_path(&unstarted).await;
    assert!(!host_limits(&cgroup).0.is_empty());
    e.remove(&unstarted).await;
    let memory_dir = if unified_cgroups() {
        std::path::Path::new("/sys/fs/cgroup").join(&cgroup)
    } else {
        std::path::Path::new("/sys/fs/cgroup/memory").join(&cgroup)
    };
    assert!(
        !memory_dir.exists(),
        "cgroup of a removed container left: {}",
        memory_dir.display()
    );

    // An exited container only has them recorded (containerd does the same).
    let done = e.run(&pod, &pc, e.container("done", &["true"])).await;
    e.wait_exited(&done).await;
    let limit = LinuxContainerResources {
        memory_limit_in_bytes: 24 << 20,
        ..Default::default()
    };
    update(&e.d, &done, Some(limit))
        .await
        .expect("update exited");
    let linux = e
        .status(&done)
        .await
        .resources
        .expect("res")
        .linux
        .expect("linux");
    assert_eq!(linux.memory_limit_in_bytes, 24 << 20);
}

#[tokio::test]
async fn update_runtime_config_records_kubelets_pod_cidr_across_restarts() {
    let mut d = Berthd::start().await.expect("berthd");
    let send = |cidr: &str| UpdateRuntimeConfigRequest {
        runtime_config: Some(cri::RuntimeConfig {
            network_config: Some(cri::NetworkConfig {
                pod_cidr: cidr.into(),
            }),
        }),
    };
    let mut rt = d.runtime().await.expect("client");
    let err = rt
        .update_runtime_config(send("10.244.1.0"))
        .await
        .expect_err("not a CIDR");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("pod_cidr"), "{}", err.message());
    rt.update_runtime_config(send("10.244.1.0/24"))
        .await
        .expect("UpdateRuntimeConfig");
    assert_eq!(pod_cidr_in_status(&d).await, "10.244.1.0/24");

    d.stop_with(Signal::SIGTERM, Duration::from_secs(15))
        .await
        .expect("stop");
    let mut again = Berthd::spawn_in_existing(d.dir(), "").expect("respawn");
    again
        .wait_ready(Duration::from_secs(20))
        .await
        .expect("ready");
    assert_eq!(pod_cidr_in_status(&again).await, "10.244.1.0/24");
}

async fn pod_cidr_in_status(d: &Berthd) -> String {
    let info = d
        .runtime()
        .await
        .expect("client")
        .status(cri::StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner()
        .info;
    let doc: serde_json::Value =
        serde_json::from_str(&info["runtimeConfig"]).expect("runtimeConfig is JSON");
    doc["podCIDR"].as_str().expect("podCIDR").to_string()
}
