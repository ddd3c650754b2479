//! RuntimeClass handlers run by an OCI runtime (runc, crun), with a real berthd and the real
//! runtime: the pod's shim drives `<runtime> create/start/kill/delete` and stays the
//! container's parent, keeps its logs and records its exit; and runc as the reference for the
//! native executor: the same CRI container runs under both and what each process observes is
//! compared. The container lifecycle tests run under runc and under crun (`runc_*` / `crun_*`);
//! crun 1.8 refuses hybrid cgroup hosts, where its tests check and print that refusal instead
//! (the cgroup v2 lane, scripts/v2-lane.sh, runs them fully).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::containers::{Env, env_with, security};
use e2e::pods::mounts_under;
use proto::cri;

/// An OCI runtime configured as the handler of its own name.
#[derive(Clone, Copy)]
struct Oci {
    name: &'static str,
    path: &'static str,
}

const RUNC: Oci = Oci {
    name: "runc",
    path: "/usr/bin/runc",
};
const CRUN: Oci = Oci {
    name: "crun",
    path: "/usr/bin/crun",
};

impl Oci {
    /// berthd's config with this runtime as its handler.
    fn config(self) -> String {
        format!("[runtimes.{}]\npath = \"{}\"\n", self.name, self.path)
    }

    fn root(self, env: &Env) -> PathBuf {
        env.d.state_dir.join("oci").join(self.name)
    }

    /// `<runtime> state <id>` as JSON, or None once the runtime no longer knows the container.
    fn state(self, env: &Env, id: &str) -> Option<serde_json::Value> {
        let out = Command::new(self.path)
            .arg("--root")
            .arg(self.root(env))
            .args(["state", id])
            .output()
            .expect("run <runtime> state");
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("state JSON"))
    }

    /// A pod name of this runtime's.
    fn pod(self, what: &str) -> String {
        format!("{}-{what}", self.name)
    }
}

/// The environment with `rt` configured, or None where it is absent (never under CI) or, for
/// crun, where it refuses the host's cgroup layout (checked and printed).
async fn oci_env(rt: Oci) -> Option<Env> {
    if !Path::new(rt.path).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs {} (scripts/install-deps.sh): {} is missing",
            rt.name,
            rt.path
        );
        eprintln!(
            "skipped: {} is not installed (apt-get install {})",
            rt.path, rt.name
        );
        return None;
    }
    let env = env_with(&rt.config()).await?;
    if rt.name == CRUN.name && hybrid_with_v2_controllers() {
        let refusal = crun_refusal(&env).await;
        eprintln!("skipped: crun cannot run containers on this hybrid cgroup host: {refusal}");
        return None;
    }
    Some(env)
}

/// The environment with runc configured.
async fn runc_env() -> Option<Env> {
    oci_env(RUNC).await
}

fn parent_of(pid: i64) -> i64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("PPid")
}

async fn shim_pid(env: &Env, pod: &str) -> i64 {
    let st = env
        .d
        .runtime()
        .await
        .expect("client")
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.into(),
            verbose: true,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner();
    let info: serde_json::Value =
        serde_json::from_str(st.info.get("info").expect("verbose info")).expect("info JSON");
    info["pid"].as_i64().expect("shim pid")
}

#[tokio::test]
async fn status_lists_runc_with_the_features_runc_reports() {
    let Some(env) = runc_env().await else { return };
    let status = env
        .d
        .runtime()
        .await
        .expect("client")
        .status(cri::StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner();
    let names: Vec<&str> = status
        .runtime_handlers
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(names, ["", "berth", "runc"]);
    let runc = &status.runtime_handlers[2];
    let features = runc.features.expect("features");
    // Debian's runc 1.1 lists `rro` among its mount options and has no idmapped mounts.
    let reported = Command::new(RUNC.path)
        .arg("features")
        .output()
        .expect("runc features");
    let has_rro = String::from_utf8_lossy(&reported.stdout).contains("\"rro\"");
    // ... and only where the kernel has mount_setattr, as for the native handler.
    let kernel = status.runtime_handlers[0]
        .features
        .expect("native features")
        .recursive_read_only_mounts;
    assert_eq!(features.recursive_read_only_mounts, has_rro && kernel);
    // runc joins a user namespace by path (the shim makes the idmapped mounts), where the
    // kernel can make idmapped mounts, as for the native handler.
    let native_userns = status.runtime_handlers[0]
        .features
        .expect("native features")
        .user_namespaces;
    let knows_user = String::from_utf8_lossy(&reported.stdout).contains("\"user\"");
    assert_eq!(features.user_namespaces, knows_user && native_userns);
}

#[tokio::test]
async fn an_unknown_handler_is_refused_naming_the_configured_ones() {
    let Some(env) = runc_env().await else { return };
    let err = env
        .d
        .run_pod_with_handler(env.pod("nohandler"), "kata")
        .await
        .expect_err("kata is not configured");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("`kata`"), "{}", err.message());
    assert!(err.message().contains("`runc`"), "{}", err.message());
    assert!(env.d.pod_ids().await.is_empty(), "no pod left behind");
}

#[tokio::test]
async fn runc_runs_a_container_with_logs_and_its_exit_code() {
    runs_a_container_with_logs_and_its_exit_code(RUNC).await;
}

#[tokio::test]
async fn crun_runs_a_container_with_logs_and_its_exit_code() {
    runs_a_container_with_logs_and_its_exit_code(CRUN).await;
}

async fn runs_a_container_with_logs_and_its_exit_code(rt: Oci) {
    let Some(env) = oci_env(rt).await else { return };
    let pc = env.pod(&rt.pod("exit"));
    let pod = env
        .d
        .run_pod_with_handler(pc.clone(), rt.name)
        .await
        .expect("RunPodSandbox");
    let c = env.container("exits", &["sh", "-c", "echo out; echo err >&2; exit 3"]);
    let (st, log) = env.run_to_end(&pod, &pc, c).await;
    assert_eq!(st.exit_code, 3, "{st:?}");
    assert_eq!(st.reason, "Error");
    assert!(log.contains(&"out".to_string()), "{log:?}");
    assert!(log.contains(&"err".to_string()), "{log:?}");
    env.d.remove_pod(&pod).await;
}

#[tokio::test]
async fn a_runc_container_is_the_shims_child_and_leaves_nothing_when_removed() {
    container_is_the_shims_child_and_leaves_nothing_when_removed(RUNC).await;
}

#[tokio::test]
async fn a_crun_container_is_the_shims_child_and_leaves_nothing_when_removed() {
    container_is_the_shims_child_and_leaves_nothing_when_removed(CRUN).await;
}

async fn container_is_the_shims_child_and_leaves_nothing_when_removed(rt: Oci) {
    let Some(env) = oci_env(rt).await else { return };
    let pc = env.pod(&rt.pod("life"));
    let pod = env
        .d
        .run_pod_with_handler(pc.clone(), rt.name)
        .await
        .expect("RunPodSandbox");
    let id = env
        .run(&pod, &pc, env.container("sleeper", &["sleep", "300"]))
        .await;
    let state = rt
        .state(&env, &id)
        .expect("the runtime knows the container");
    assert_eq!(state["status"], "running", "{state}");
    let pid = state["pid"].as_i64().expect("pid");
    assert_eq!(
        parent_of(pid),
        shim_pid(&env, &pod).await,
        "the pod's shim is the container's parent"
    );
    let bundle = env.d.state_dir.join("oci/bundles").join(&id);
    assert!(bundle.join("config.json").exists());

    // Exec works by joining the container, as for native containers.
    let out = env
        .exec_sync(&id, &["cat", "/proc/1/cmdline"], 10)
        .await
        .expect("ExecSync");
    assert_eq!(out.exit_code, 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "sleep\x00300\x00");

    env.stop(&id).await;
    let st = env.wait_exited(&id).await;
    assert_eq!(st.exit_code, 137, "SIGKILL after no grace period: {st:?}");
    env.remove(&id).await;
    assert!(
        rt.state(&env, &id).is_none(),
        "the runtime forgot the container"
    );
    assert!(!bundle.exists(), "bundle removed");
    let rootfs = env.d.state_dir.join("rootfs").join(&id);
    assert_eq!(
        mounts_under(&rootfs),
        Vec::<PathBuf>::new(),
        "rootfs unmounted"
    );
    env.d.remove_pod(&pod).await;
}

#[tokio::test]
async fn a_container_runc_cannot_start_fails_its_start_and_leaves_nothing() {
    a_container_it_cannot_start_fails_its_start_and_leaves_nothing(RUNC).await;
}

#[tokio::test]
async fn a_container_crun_cannot_start_fails_its_start_and_leaves_nothing() {
    a_container_it_cannot_start_fails_its_start_and_leaves_nothing(CRUN).await;
}

async fn a_container_it_cannot_start_fails_its_start_and_leaves_nothing(rt: Oci) {
    let Some(env) = oci_env(rt).await else { return };
    let pc = env.pod(&rt.pod("fail"));
    let pod = env
        .d
        .run_pod_with_handler(pc.clone(), rt.name)
        .await
        .expect("RunPodSandbox");
    let c = env.container("missing", &["/no/such/program"]);
    let id = env.create(&pod, &pc, c).await.expect("CreateContainer");
    let err = env.start(&id).await.expect_err("nothing to exec");
    assert!(err.message().contains(rt.name), "{}", err.message());
    assert!(rt.state(&env, &id).is_none(), "the runtime holds nothing");
    assert!(!env.d.state_dir.join("oci/bundles").join(&id).exists());
    env.remove(&id).await;
    env.d.remove_pod(&pod).await;
}

#[tokio::test]
async fn runc_containers_get_a_tty_live_updates_stats_and_oom_reasons() {
    containers_get_a_tty_live_updates_stats_and_oom_reasons(RUNC).await;
}

#[tokio::test]
async fn crun_containers_get_a_tty_live_updates_stats_and_oom_reasons() {
    containers_get_a_tty_live_updates_stats_and_oom_reasons(CRUN).await;
}

async fn containers_get_a_tty_live_updates_stats_and_oom_reasons(rt: Oci) {
    let Some(env) = oci_env(rt).await else { return };
    let pc = env.pod(&rt.pod("more"));
    let pod = env
        .d
        .run_pod_with_handler(pc.clone(), rt.name)
        .await
        .expect("RunPodSandbox");

    // TTY: the runtime makes the terminal and sends it over --console-socket.
    let mut c = env.container(
        "tty",
        &[
            "sh",
            "-c",
            "test -t 1 && echo on-a-tty; readlink /proc/self/fd/0",
        ],
    );
    c.tty = true;
    let (st, lines) = env.run_to_end(&pod, &pc, c).await;
    let out = lines.join("\n");
    assert_eq!(st.exit_code, 0, "{out}");
    assert!(out.contains("on-a-tty"), "{out}");
    assert!(out.contains("/dev/pts/"), "{out}");

    // OOM: berthd reads the reason from the cgroup the runtime joined.
    let mut c = env.container("hog", &["sh", "-c", "head -c 200000000 /dev/zero | tail"]);
    c.linux.get_or_insert_with(Default::default).resources = Some(cri::LinuxContainerResources {
        memory_limit_in_bytes: 16 << 20,
        ..Default::default()
    });
    let (st, _) = env.run_to_end(&pod, &pc, c).await;
    assert_eq!(
        st.reason, "OOMKilled",
        "exit {} {}",
        st.exit_code, st.message
    );

    // UpdateContainerResources and ContainerStats act on the same cgroup.
    let mut c = env.container("sleeper", &["sleep", "300"]);
    c.linux.get_or_insert_with(Default::default).resources = Some(cri::LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        ..Default::default()
    });
    let id = env.run(&pod, &pc, c).await;
    let mut rt = env.d.runtime().await.expect("client");
    rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 32 << 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("UpdateContainerResources");
    // v1: the runtime binds the container's own cgroups. v2: no cgroup namespace under OCI
    // handlers (docs/runtime-handlers.md), so crun mounts the whole hierarchy: the container's
    // cgroup is the path in /proc/self/cgroup.
    let read = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null \
        || cat /sys/fs/cgroup/memory.max 2>/dev/null \
        || cat /sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)/memory.max";
    let out = env
        .exec_sync(&id, &["sh", "-c", read], 10)
        .await
        .expect("ExecSync");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "33554432",
        "exit {}: {}",
        out.exit_code,
        String::from_utf8_lossy(&out.stderr)
    );
    let stats = rt
        .container_stats(cri::ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .expect("ContainerStats")
        .into_inner()
        .stats
        .expect("stats");
    let memory = stats.memory.expect("memory stats");
    assert!(
        memory.working_set_bytes.map_or(0, |v| v.value) > 0,
        "{memory:?}"
    );
    env.stop(&id).await;
    env.remove(&id).await;
    env.d.remove_pod(&pod).await;
}

#[tokio::test]
async fn runc_containers_outlive_a_berthd_restart_and_are_cleaned_up_after_it() {
    containers_outlive_a_berthd_restart_and_are_cleaned_up_after_it(RUNC).await;
}

#[tokio::test]
async fn crun_containers_outlive_a_berthd_restart_and_are_cleaned_up_after_it() {
    containers_outlive_a_berthd_restart_and_are_cleaned_up_after_it(CRUN).await;
}

async fn containers_outlive_a_berthd_restart_and_are_cleaned_up_after_it(rt: Oci) {
    let Some(mut env) = oci_env(rt).await else {
        return;
    };
    let pc = env.pod(&rt.pod("restart"));
    let pod = env
        .d
        .run_pod_with_handler(pc.clone(), rt.name)
        .await
        .expect("RunPodSandbox");
    let id = env
        .run(&pod, &pc, env.container("sleeper", &["sleep", "300"]))
        .await;
    let pid = rt.state(&env, &id).expect("state")["pid"]
        .as_i64()
        .expect("pid");
    let opts = e2e::daemon::BerthdOptions {
        config_toml: Some(env.config.clone()),
        ..Default::default()
    };
    env.d.respawn(&opts).await.expect("berthd restarts");
    let st = env.status(&id).await;
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    assert_eq!(
        rt.state(&env, &id).expect("state")["pid"].as_i64(),
        Some(pid)
    );
    env.stop(&id).await;
    assert_eq!(env.wait_exited(&id).await.exit_code, 137);
    env.remove(&id).await;
    assert!(
        rt.state(&env, &id).is_none(),
        "the runtime forgot the container"
    );
    env.d.remove_pod(&pod).await;
}

#[tokio::test]
async fn a_runc_pod_whose_shim_died_is_cleaned_up_in_runc_too() {
    a_pod_whose_shim_died_is_cleaned_up_in_the_runtime_too(RUNC).await;
}

#[tokio::test]
async fn a_crun_pod_whose_shim_died_is_cleaned_up_in_crun_too() {
    a_pod_whose_shim_died_is_cleaned_up_in_the_runtime_too(CRUN).await;
}

async fn a_pod_whose_shim_died_is_cleaned_up_in_the_runtime_too(rt: Oci) {
    let Some(env) = oci_env(rt).await else { return };
    let pc = env.pod(&rt.pod("doomed"));
    let pod = env
        .d
        .run_pod_with_handler(pc.clone(), rt.name)
        .await
        .expect("RunPodSandbox");
    let id = env
        .run(&pod, &pc, env.container("sleeper", &["sleep", "300"]))
        .await;
    let pid = rt.state(&env, &id).expect("state")["pid"]
        .as_i64()
        .expect("pid");
    let shim = shim_pid(&env, &pod).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the shim this test's berthd started");
    let st = env.wait_exited(&id).await;
    assert_eq!(st.reason, "ShimDied");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the orphaned container process is killed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    env.remove(&id).await;
    assert!(
        rt.state(&env, &id).is_none(),
        "the runtime forgot the container"
    );
    assert!(!env.d.state_dir.join("oci/bundles").join(&id).exists());
    env.d.remove_pod(&pod).await;
}

/// Whether crun 1.8 will refuse this host: a cgroup2 mount holding controllers beside v1
/// hierarchies (hugetlb at `/sys/fs/cgroup/unified` on the development machines).
fn hybrid_with_v2_controllers() -> bool {
    std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
        .is_ok_and(|c| !c.trim().is_empty())
}

/// Starts a container under crun on a hybrid cgroup host and checks crun's refusal, which it
/// returns: crun's own message and berth's hint. The host's controllers are not moved (other
/// work shares the machine).
async fn crun_refusal(env: &Env) -> String {
    let pc = env.pod("crun-hybrid");
    let pod = env
        .d
        .run_pod_with_handler(pc.clone(), CRUN.name)
        .await
        .expect("RunPodSandbox crun");
    let c = env.container("hello", &["sh", "-c", "echo from-crun; exit 4"]);
    let id = env.create(&pod, &pc, c).await.expect("CreateContainer");
    let err = env
        .start(&id)
        .await
        .expect_err("crun refuses a hybrid host");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("hybrid mode"), "{}", err.message());
    assert!(
        err.message().contains("mount -t cgroup -o hugetlb"),
        "the error says what to do: {}",
        err.message()
    );
    assert!(!env.d.state_dir.join("oci/bundles").join(&id).exists());
    env.remove(&id).await;
    env.d.remove_pod(&pod).await;
    err.message().to_string()
}

#[tokio::test]
async fn crun_runs_containers_or_says_why_it_cannot_on_a_hybrid_host() {
    // oci_env checks the refusal and its hint on a hybrid host.
    let Some(env) = oci_env(CRUN).await else {
        return;
    };
    let pc = env.pod("crun");
    let pod = env
        .d
        .run_pod_with_handler(pc.clone(), CRUN.name)
        .await
        .expect("RunPodSandbox crun");
    let c = env.container("hello", &["sh", "-c", "echo from-crun; exit 4"]);
    let (st, log) = env.run_to_end(&pod, &pc, c).await;
    assert_eq!(st.exit_code, 4, "{st:?}");
    assert!(log.contains(&"from-crun".to_string()), "{log:?}");
    env.d.remove_pod(&pod).await;
}

/// Host IDs the user namespace test maps container IDs 0..65536 to.
const USERNS_HOST_ID: u32 = 310_000;

fn userns_mapping() -> Vec<cri::IdMapping> {
    vec![cri::IdMapping {
        host_id: USERNS_HOST_ID,
        container_id: 0,
        length: 65536,
    }]
}

/// The pod's (and its containers') namespace options for a user namespace and a shared PID
/// namespace, as critest's user namespace spec asks (its PID mode is POD).
fn userns_options() -> cri::NamespaceOption {
    cri::NamespaceOption {
        pid: cri::NamespaceMode::Pod as i32,
        userns_options: Some(cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            uids: userns_mapping(),
            gids: userns_mapping(),
        }),
        ..Default::default()
    }
}

fn host_bind(container_path: &str, host_path: &Path, readonly: bool) -> cri::Mount {
    cri::Mount {
        container_path: container_path.into(),
        host_path: host_path.display().to_string(),
        readonly,
        ..Default::default()
    }
}

/// runc 1.1 cannot idmap mounts, so the shim gives it an idmapped rootfs and idmapped bind
/// sources and runc only joins the pod's user namespace: inside, the mapping shows, the
/// image's files belong to the container's root, an idmapped volume shows its owners, a plain
/// one shows the host's root as nobody and the container's root cannot write what the host's
/// root owns there (it is not the host's root).
#[tokio::test]
async fn runc_runs_a_user_namespace_pod_with_an_idmapped_rootfs_and_volumes() {
    let Some(env) = runc_env().await else { return };
    // Any runc command (`state`, `delete`, ...) makes the missing parents of its --root 0700:
    // after a berthd's first runc command was not a start (critest runs its specs in random
    // order), `<state>/oci` is 0700, and the user namespace's root must still reach its bundle.
    let oci = env.d.state_dir.join("oci");
    std::fs::create_dir_all(&oci).expect("oci dir");
    std::fs::set_permissions(&oci, std::fs::Permissions::from_mode(0o700)).expect("chmod oci");
    let vol = tempfile::tempdir().expect("volume dir");
    std::fs::write(vol.path().join("owned-by-root"), "root's\n").expect("file");
    std::fs::write(vol.path().join("owned-by-1000"), "user's\n").expect("file");
    std::os::unix::fs::chown(vol.path().join("owned-by-1000"), Some(1000), Some(1000))
        .expect("chown");
    let mut pc = env.pod("runc-userns");
    pc.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options = Some(userns_options());
    let pod = env
        .d
        .run_pod_with_handler(pc.clone(), "runc")
        .await
        .expect("RunPodSandbox runc with a user namespace");
    let mut c = env.container("userns", &["sleep", "3600"]);
    let mut idmapped = host_bind("/vol", vol.path(), false);
    idmapped.uid_mappings = userns_mapping();
    idmapped.gid_mappings = userns_mapping();
    let mut idmapped_ro = idmapped.clone();
    idmapped_ro.container_path = "/vol-ro".into();
    idmapped_ro.readonly = true;
    c.mounts = vec![idmapped, idmapped_ro, host_bind("/raw", vol.path(), false)];
    security(&mut c).namespace_options = Some(userns_options());
    let id = env.run(&pod, &pc, c).await;
    let state = RUNC.state(&env, &id).expect("runc runs the container");
    assert_eq!(state["status"], "running", "{state}");

    let script = "cat /proc/self/uid_map /proc/self/gid_map; id -u; cat /proc/1/comm; \
        stat -c '%n %u %g' / /bin/busybox /etc/hosts /vol/owned-by-root /vol/owned-by-1000 \
            /raw/owned-by-root; \
        touch /created-inside && echo created; echo written > /vol/from-container; \
        echo attack >> /raw/owned-by-root 2>/dev/null && echo raw-writable || echo raw-denied; \
        touch /vol-ro/x 2>/dev/null && echo vol-ro-writable || echo vol-ro-readonly; \
        readlink /proc/self/ns/user";
    let out = env
        .exec_sync(&id, &["sh", "-c", script], 10)
        .await
        .expect("ExecSync");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.exit_code,
        0,
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    let map_line = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
    let want_map = format!("0 {USERNS_HOST_ID} 65536");
    assert_eq!(map_line(lines[0]), want_map, "uid_map: {text}");
    assert_eq!(map_line(lines[1]), want_map, "gid_map: {text}");
    assert_eq!(
        lines[2..14],
        [
            "0",
            // The pod's shared PID namespace (the pod's user namespace owns it).
            "berth-pod-init",
            "/ 0 0",
            "/bin/busybox 0 0",
            "/etc/hosts 0 0",
            "/vol/owned-by-root 0 0",
            "/vol/owned-by-1000 1000 1000",
            // Not idmapped: the host's root is nobody inside ...
            "/raw/owned-by-root 65534 65534",
            "created",
            // ... and the container's root cannot write as the host's.
            "raw-denied",
            "vol-ro-readonly",
            lines[13],
        ],
        "{text}"
    );
    let host_ns = std::fs::read_link("/proc/self/ns/user").expect("own userns");
    assert_ne!(lines[13], host_ns.to_string_lossy(), "not the host's");
    assert_eq!(
        std::fs::read_to_string(vol.path().join("owned-by-root")).expect("read"),
        "root's\n",
        "the host's file is untouched"
    );
    let written = std::fs::metadata(vol.path().join("from-container")).expect("written");
    assert_eq!(
        (written.uid(), written.gid()),
        (0, 0),
        "through the idmapped mount, the container's root writes as the host's root"
    );
    // The container's own process runs in the same namespace as the exec, with the mapping.
    let pid = state["pid"].as_i64().expect("pid");
    let uid_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).expect("uid_map");
    assert_eq!(map_line(uid_map.trim()), want_map);
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/user")).expect("ns");
    assert_eq!(ns.to_string_lossy(), lines[13]);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid");
    assert!(
        uid_line.contains(&USERNS_HOST_ID.to_string()),
        "the container's root is {USERNS_HOST_ID} on the host: {uid_line}"
    );

    // The bundle is open to the group of the namespace's root (runc looks the root up from
    // inside the namespace), but a host process with that group cannot read the container's
    // config (its environment) there.
    let bundle = env.d.state_dir.join("oci/bundles").join(&id);
    let meta = std::fs::metadata(&bundle).expect("bundle");
    assert_eq!(
        (meta.mode() & 0o777, meta.gid()),
        (0o710, USERNS_HOST_ID),
        "bundle mode and group"
    );
    let read = Command::new("setpriv")
        .args([
            "--reuid=65534",
            &format!("--regid={USERNS_HOST_ID}"),
            "--clear-groups",
        ])
        .arg("cat")
        .arg(bundle.join("config.json"))
        .output()
        .expect("run setpriv (util-linux)");
    assert!(
        !read.status.success(),
        "a host user in the mapped root's group read config.json: {}",
        String::from_utf8_lossy(&read.stdout)
    );
    assert!(
        String::from_utf8_lossy(&read.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );

    // Removal detaches what the shim staged for runc.
    env.stop(&id).await;
    env.remove(&id).await;
    assert!(!bundle.exists(), "bundle removed");
    assert_eq!(
        mounts_under(&bundle),
        Vec::<PathBuf>::new(),
        "no staged idmapped mount left"
    );
    env.d.remove_pod(&pod).await;
}

/// The reaper of a user-namespaced pod is forked from inside the pod's user namespace (so runc
/// can join its PID namespace); a container there with CAP_SYS_PTRACE must still find no way
/// to the host through it, under either handler: its root is empty, it holds no capability
/// and no fd, and the host's directories are not reachable through `/proc/1/root`.
#[tokio::test]
async fn a_user_namespace_pods_reaper_leads_nowhere_under_either_handler() {
    let Some(env) = runc_env().await else { return };
    let marker = env.d.dir().display().to_string();
    for handler in ["", "runc"] {
        let name = format!(
            "userns-init-{}",
            if handler.is_empty() {
                "native"
            } else {
                handler
            }
        );
        let mut pc = env.pod(&name);
        pc.linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default)
            .namespace_options = Some(userns_options());
        let pod = env
            .d
            .run_pod_with_handler(pc.clone(), handler)
            .await
            .expect("RunPodSandbox");
        let script = format!(
            "echo comm=$(cat /proc/1/comm); echo root:; ls -a /proc/1/root/ 2>/dev/null; \
             test -e /proc/1/root{marker} && echo HOST-ROOT-VISIBLE; \
             grep -E '^Cap(Prm|Eff|Bnd|Amb):' /proc/1/status; \
             echo fds=$(ls /proc/1/fd 2>/dev/null | tr '\\n' ' '); echo end"
        );
        let mut c = env.container("probe", &["sh", "-c", &script]);
        let sc = security(&mut c);
        sc.namespace_options = Some(userns_options());
        sc.capabilities = Some(cri::Capability {
            add_capabilities: vec!["SYS_PTRACE".into()],
            ..Default::default()
        });
        let (st, lines) = env.run_to_end(&pod, &pc, c).await;
        assert_eq!(st.exit_code, 0, "{handler}: {lines:?}");
        assert!(
            lines.contains(&"comm=berth-pod-init".to_string()),
            "{handler}: {lines:?}"
        );
        assert!(
            !lines.iter().any(|l| l == "HOST-ROOT-VISIBLE"),
            "{handler}: {lines:?}"
        );
        let listing: Vec<&String> = lines
            .iter()
            .skip_while(|l| *l != "root:")
            .skip(1)
            .take_while(|l| !l.starts_with("Cap"))
            .collect();
        assert!(
            listing.iter().all(|l| *l == "." || *l == ".."),
            "{handler}: the init's root is not empty: {listing:?}"
        );
        for set in ["CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
            let line = lines
                .iter()
                .find(|l| l.starts_with(set))
                .unwrap_or_else(|| panic!("{handler}: no {set} in {lines:?}"));
            assert!(line.ends_with("0000000000000000"), "{handler}: {line}");
        }
        assert!(
            lines.iter().any(|l| l.trim() == "fds="),
            "{handler}: the init kept fds: {lines:?}"
        );
        env.d.remove_pod(&pod).await;
    }
}

/// A user-namespaced container runc cannot start leaves nothing: no runc state, no bundle, no
/// staged root or idmapped mount, no rootfs mount.
#[tokio::test]
async fn a_user_namespace_container_runc_cannot_start_leaves_nothing_mounted() {
    let Some(env) = runc_env().await else { return };
    let vol = tempfile::tempdir().expect("volume dir");
    let mut pc = env.pod("runc-userns-fail");
    pc.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options = Some(userns_options());
    let pod = env
        .d
        .run_pod_with_handler(pc.clone(), "runc")
        .await
        .expect("RunPodSandbox runc");
    let mut c = env.container("missing", &["/no/such/program"]);
    let mut idmapped = host_bind("/vol", vol.path(), false);
    idmapped.uid_mappings = userns_mapping();
    idmapped.gid_mappings = userns_mapping();
    c.mounts = vec![idmapped];
    security(&mut c).namespace_options = Some(userns_options());
    let id = env.create(&pod, &pc, c).await.expect("CreateContainer");
    let err = env.start(&id).await.expect_err("nothing to exec");
    assert!(err.message().contains("runc"), "{}", err.message());
    assert!(RUNC.state(&env, &id).is_none(), "runc holds nothing");
    let bundle = env.d.state_dir.join("oci/bundles").join(&id);
    assert!(!bundle.exists(), "bundle removed");
    for left in [bundle, env.d.state_dir.join("rootfs").join(&id)] {
        assert_eq!(mounts_under(&left), Vec::<PathBuf>::new(), "still mounted");
    }
    env.remove(&id).await;
    env.d.remove_pod(&pod).await;
}
