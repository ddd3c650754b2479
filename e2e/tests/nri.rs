//! NRI end to end: a real berthd with `[nri] enable`, and small plugins written in Rust (the
//! `nri` crate's plugin side) connected to its NRI socket. A plugin's adjustments reach the
//! real container (env, annotations, a bind mount, resources); its updates reach running
//! containers; a plugin that fails or times out fails the call and nothing is left behind; a
//! plugin that disconnects is dropped and the runtime carries on. Container tests need root
//! (CI runs as root).

mod obs_env;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nri::api;
use nri::plugin::{Event, EventHandler, Reply, Stub};
use nri::transport::{RpcStatus, code};
use obs_env::{Env, cgroup_file, env_with, unified_cgroups};
use proto::cri;
use tonic::Code;

/// Env with NRI on, its socket in `dir`, requests timing out after 1 s.
async fn nri_env(dir: &Path) -> Option<Env> {
    env_with(&format!(
        "[nri]\nenable = true\nsocket_path = \"{}\"\nplugin_path = \"{}\"\nplugin_request_timeout = \"1s\"\n",
        dir.join("nri.sock").display(),
        dir.join("plugins").display(),
    ))
    .await
}

fn events(list: &[api::Event]) -> i32 {
    list.iter().map(|e| nri::event_bit(*e)).sum()
}

/// Every event a plugin sees, as (method, container name or pod name).
type Seen = Arc<Mutex<Vec<(String, String)>>>;

fn recording(
    seen: &Seen,
    inner: impl Fn(&Event) -> Result<Reply, RpcStatus> + Send + Sync + 'static,
) -> EventHandler {
    let seen = seen.clone();
    let inner = Arc::new(inner);
    Arc::new(move |ev: Event| {
        let name = match &ev {
            Event::RunPodSandbox(p) | Event::StopPodSandbox(p) | Event::RemovePodSandbox(p) => {
                p.name.clone()
            }
            other => other
                .container()
                .map(|c| c.name.clone())
                .unwrap_or_default(),
        };
        seen.lock()
            .expect("seen")
            .push((ev.method().to_string(), name));
        let answer = inner(&ev);
        Box::pin(async move { answer })
    })
}

async fn connect(dir: &Path, name: &str, idx: &str, mask: i32, handler: EventHandler) -> Stub {
    Stub::connect(&dir.join("nri.sock"), name, idx, mask, handler)
        .await
        .expect("plugin registers")
}

fn methods(seen: &Seen, name: &str) -> Vec<String> {
    seen.lock()
        .expect("seen")
        .iter()
        .filter(|(_, n)| n == name)
        .map(|(m, _)| m.clone())
        .collect()
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn list_containers(e: &Env, pod: &str) -> Vec<cri::Container> {
    e.d.runtime()
        .await
        .expect("client")
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: pod.into(),
                ..Default::default()
            }),
        })
        .await
        .expect("ListContainers")
        .into_inner()
        .containers
}

fn records(root: &Path, kind: &str) -> Vec<PathBuf> {
    std::fs::read_dir(root.join(kind))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn plugin_adjusts_env_annotations_mounts_and_resources_of_a_real_container() {
    let dir = tempfile::tempdir().expect("dir");
    let Some(e) = nri_env(dir.path()).await else {
        return;
    };
    let data = tempfile::tempdir().expect("data");
    std::fs::write(data.path().join("marker"), "from-the-host\n").expect("marker");
    let source = data.path().display().to_string();
    let seen: Seen = Arc::default();
    let handler = recording(&seen, move |ev| {
        let Event::CreateContainer(_, c) = ev else {
            return Ok(Reply::default());
        };
        if c.name != "adjusted" {
            return Ok(Reply::default());
        }
        let mut adjust = api::ContainerAdjustment::default();
        adjust
            .annotations
            .insert("nri.test/added".into(), "yes".into());
        adjust.env.push(api::KeyValue {
            key: "NRI_ADDED".into(),
            value: "by-plugin".into(),
        });
        adjust.env.push(api::KeyValue {
            key: "-REMOVE_ME".into(),
            value: String::new(),
        });
        adjust.mounts.push(api::Mount {
            destination: "/nri-data".into(),
            r#type: "bind".into(),
            source: source.clone(),
            options: vec!["rbind".into(), "ro".into()],
        });
        adjust.linux = Some(api::LinuxContainerAdjustment {
            resources: Some(api::LinuxResources {
                cpu: Some(api::LinuxCpu {
                    shares: Some(api::OptionalUInt64 { value: 384 }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        Ok(Reply {
            adjust: Some(adjust),
            update: Vec::new(),
        })
    });
    let mask = events(&[
        api::Event::CreateContainer,
        api::Event::PostCreateContainer,
        api::Event::StartContainer,
        api::Event::PostStartContainer,
        api::Event::StopContainer,
        api::Event::RemoveContainer,
    ]);
    let _plugin = connect(dir.path(), "adjuster", "10", mask, handler).await;

    let pc = e.pod("nri-adjust");
    let pod = e.run_pod(&pc).await;
    let mut c = e.container(
        "adjusted",
        &[
            "sh",
            "-c",
            "echo env=$NRI_ADDED removed=${REMOVE_ME:-gone}; cat /nri-data/marker; \
             touch /nri-data/x 2>/dev/null && echo writable || echo read-only",
        ],
    );
    c.envs.push(cri::KeyValue {
        key: "REMOVE_ME".into(),
        value: "still-here".into(),
    });
    let log = e.log_path(&pc, &c);
    let id = e.create(&pod, &pc, c).await.expect("CreateContainer");
    e.start(&id).await.expect("StartContainer");
    let st = e.wait_exited(&id).await;
    let lines = obs_env::read_log(&log);
    assert_eq!(st.exit_code, 0, "{lines:?}");
    assert_eq!(
        lines,
        vec!["env=by-plugin removed=gone", "from-the-host", "read-only"],
        "the plugin's env, env removal and read-only bind mount reach the process"
    );
    assert_eq!(
        st.annotations.get("nri.test/added").map(String::as_str),
        Some("yes")
    );
    assert!(
        st.mounts
            .iter()
            .any(|m| m.container_path == "/nri-data" && m.readonly),
        "{:?}",
        st.mounts
    );
    assert_eq!(
        st.resources
            .and_then(|r| r.linux)
            .map(|l| l.cpu_shares)
            .unwrap_or_default(),
        384
    );
    e.remove(&id).await;
    wait_until("RemoveContainer relayed", || {
        methods(&seen, "adjusted").last().map(String::as_str) == Some("RemoveContainer")
    })
    .await;
    assert_eq!(
        methods(&seen, "adjusted"),
        [
            "CreateContainer",
            "PostCreateContainer",
            "StartContainer",
            "PostStartContainer",
            "StopContainer",
            "RemoveContainer"
        ],
        "events in lifecycle order, the stop of a container that exited on its own included"
    );
    e.d.remove_pod(&pod).await;
}

#[tokio::test]
async fn plugin_updates_reach_running_containers() {
    let dir = tempfile::tempdir().expect("dir");
    let Some(e) = nri_env(dir.path()).await else {
        return;
    };
    let seen: Seen = Arc::default();
    let plugin = connect(
        dir.path(),
        "updater",
        "20",
        events(&[api::Event::StartContainer]),
        recording(&seen, |_| Ok(Reply::default())),
    )
    .await;
    let (pod, id) = e
        .run_container("nri-update", &["sleep", "3600"], |_| {})
        .await;
    let update = |shares: u64| api::ContainerUpdate {
        container_id: id.clone(),
        linux: Some(api::LinuxContainerUpdate {
            resources: Some(api::LinuxResources {
                cpu: Some(api::LinuxCpu {
                    shares: Some(api::OptionalUInt64 { value: shares }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }),
        ignore_failure: false,
    };
    let failed = plugin
        .update_containers(vec![update(300)])
        .await
        .expect("UpdateContainers");
    assert!(failed.is_empty(), "{failed:?}");
    let st = e.status(&id).await;
    assert_eq!(
        st.resources.and_then(|r| r.linux).map(|l| l.cpu_shares),
        Some(300)
    );
    if !unified_cgroups() {
        let cgroup = e.cgroup_path(&id).await;
        assert_eq!(cgroup_file("cpu", &cgroup, "cpu.shares"), "300");
    }
    // An update berth cannot apply comes back as failed, naming nothing applied.
    let mut bad = update(300);
    bad.container_id = "no-such-container".into();
    let failed = plugin
        .update_containers(vec![bad])
        .await
        .expect("UpdateContainers");
    assert_eq!(failed.len(), 1);
    e.d.remove_pod(&pod).await;
}

#[tokio::test]
async fn failing_or_slow_plugin_fails_the_call_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("dir");
    let Some(e) = nri_env(dir.path()).await else {
        return;
    };
    let seen: Seen = Arc::default();
    let failing = connect(
        dir.path(),
        "failing",
        "10",
        events(&[api::Event::RunPodSandbox, api::Event::CreateContainer]),
        recording(&seen, |ev| match ev {
            Event::RunPodSandbox(p) if p.name == "nri-fail-run" => {
                Err(RpcStatus::new(code::UNKNOWN, "induced run failure"))
            }
            Event::CreateContainer(_, c) if c.name == "fail-create" => {
                Err(RpcStatus::new(code::UNKNOWN, "induced create failure"))
            }
            Event::CreateContainer(_, c) if c.name == "refused" => {
                let mut adjust = api::ContainerAdjustment::default();
                adjust.rlimits.push(api::PosixRlimit {
                    r#type: "RLIMIT_NOFILE".into(),
                    hard: 10,
                    soft: 10,
                });
                Ok(Reply {
                    adjust: Some(adjust),
                    update: Vec::new(),
                })
            }
            _ => Ok(Reply::default()),
        }),
    )
    .await;
    let root = e.d.root_dir.clone();

    // RunPodSandbox: the plugin's error is the call's; no pod, record, shim or netns remain.
    let pods_before = records(&root, "pods");
    let err =
        e.d.run_pod(e.pod("nri-fail-run"))
            .await
            .expect_err("RunPodSandbox fails");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("10-failing") && err.message().contains("induced run failure"),
        "{}",
        err.message()
    );
    assert!(e.d.pod_ids().await.is_empty());
    assert_eq!(records(&root, "pods"), pods_before);

    // CreateContainer: the plugin's error, and an adjustment berth refuses, fail it and
    // leave no container (listed or on disk).
    let pc = e.pod("nri-fail-create");
    let pod = e.run_pod(&pc).await;
    let containers_before = records(&root, "containers");
    for (name, want) in [
        ("fail-create", "induced create failure"),
        ("refused", "rlimits"),
    ] {
        let err = e
            .create(&pod, &pc, e.container(name, &["true"]))
            .await
            .expect_err("CreateContainer fails");
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains(want), "{}", err.message());
        assert!(list_containers(&e, &pod).await.is_empty());
        assert_eq!(records(&root, "containers"), containers_before);
    }
    drop(failing);

    // A plugin that does not answer in time (1 s here) fails the call and is dropped.
    let slow_seen: Seen = Arc::default();
    let slow_seen2 = slow_seen.clone();
    let slow_handler: EventHandler = Arc::new(move |ev: Event| {
        let seen = slow_seen2.clone();
        Box::pin(async move {
            seen.lock()
                .expect("seen")
                .push((ev.method().to_string(), String::new()));
            if matches!(ev, Event::CreateContainer(..)) {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Ok(Reply::default())
        })
    });
    let slow = connect(
        dir.path(),
        "slow",
        "30",
        events(&[api::Event::CreateContainer]),
        slow_handler,
    )
    .await;
    let started = Instant::now();
    let err = e
        .create(&pod, &pc, e.container("slow-create", &["true"]))
        .await
        .expect_err("CreateContainer times out");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "bounded by the request timeout"
    );
    assert!(
        err.message().contains("30-slow") && err.message().contains("timed out"),
        "{}",
        err.message()
    );
    assert!(list_containers(&e, &pod).await.is_empty());
    assert_eq!(records(&root, "containers"), containers_before);
    tokio::time::timeout(Duration::from_secs(5), slow.closed())
        .await
        .expect("the runtime closed the slow plugin's connection");
    // Dropped: the next container is created without asking it.
    let id = e
        .create(&pod, &pc, e.container("after-slow", &["true"]))
        .await
        .expect("CreateContainer without the dropped plugin");
    assert_eq!(
        slow_seen
            .lock()
            .expect("seen")
            .iter()
            .filter(|(m, _)| m == "CreateContainer")
            .count(),
        1
    );
    e.remove(&id).await;
    e.d.remove_pod(&pod).await;
}

#[tokio::test]
async fn disconnected_plugin_is_dropped_and_a_new_one_is_synchronized() {
    let dir = tempfile::tempdir().expect("dir");
    let Some(e) = nri_env(dir.path()).await else {
        return;
    };
    // Plugins run as root: only root may connect (socket 0600 in a 0700 directory).
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join("nri.sock")), 0o600);
    let gone_seen: Seen = Arc::default();
    let gone = connect(
        dir.path(),
        "leaver",
        "10",
        nri::valid_events(),
        recording(&gone_seen, |_| Ok(Reply::default())),
    )
    .await;
    gone.close();
    drop(gone);
    wait_until("the runtime noticed the disconnect", || {
        e.d.stderr().contains("10-leaver") && e.d.stderr().contains("plugin dropped")
    })
    .await;
    // The runtime carries on without it.
    let (pod, id) = e
        .run_container("nri-after-leave", &["sleep", "3600"], |_| {})
        .await;
    assert!(
        gone_seen
            .lock()
            .expect("seen")
            .iter()
            .all(|(m, _)| m == "Configure" || m == "Synchronize"),
        "a dropped plugin gets no events"
    );
    // A plugin joining now is synchronized with the existing pod and container.
    let synced: Arc<Mutex<Option<api::SynchronizeRequest>>> = Arc::default();
    let synced2 = synced.clone();
    let handler: EventHandler = Arc::new(move |ev: Event| {
        if let Event::Synchronize(req) = &ev {
            *synced2.lock().expect("synced") = Some(req.clone());
        }
        Box::pin(async { Ok(Reply::default()) })
    });
    let _late = connect(dir.path(), "late", "20", nri::valid_events(), handler).await;
    wait_until("Synchronize", || synced.lock().expect("synced").is_some()).await;
    let req = synced.lock().expect("synced").clone().expect("sync");
    assert!(req.pods.iter().any(|p| p.id == pod), "{:?}", req.pods);
    let c = req
        .containers
        .iter()
        .find(|c| c.id == id)
        .expect("container in Synchronize");
    assert_eq!(c.state, api::ContainerState::ContainerRunning as i32);
    assert_eq!(c.name, "nri-after-leave");
    e.d.remove_pod(&pod).await;
}

#[tokio::test]
async fn preinstalled_plugin_is_launched_with_its_config_and_adjusts_containers() {
    let dir = tempfile::tempdir().expect("dir");
    let plugins = dir.path().join("plugins");
    let conf = dir.path().join("conf");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    std::fs::create_dir_all(&conf).expect("conf dir");
    std::fs::copy(
        env!("CARGO_BIN_EXE_nri-test-plugin"),
        plugins.join("05-preinstalled"),
    )
    .expect("install plugin");
    std::fs::write(conf.join("preinstalled.conf"), "configured\n").expect("config");
    // Not NN-name: ignored.
    std::fs::write(plugins.join("README"), "not a plugin").expect("readme");
    let Some(e) = env_with(&format!(
        "[nri]\nenable = true\nsocket_path = \"{}\"\nplugin_path = \"{}\"\nplugin_config_path = \"{}\"\n",
        dir.path().join("nri.sock").display(),
        plugins.display(),
        conf.display(),
    ))
    .await
    else {
        return;
    };
    wait_until("the pre-installed plugin registered", || {
        e.d.stderr().contains("05-preinstalled") && e.d.stderr().contains("plugin registered")
    })
    .await;
    let (pod, id) = e
        .run_container("nri-preinstalled", &["sleep", "3600"], |_| {})
        .await;
    let st = e.status(&id).await;
    assert_eq!(
        st.annotations
            .get("nri.test/preinstalled")
            .map(String::as_str),
        Some("05-preinstalled:configured")
    );
    e.d.remove_pod(&pod).await;
}

#[tokio::test]
async fn unprivileged_process_cannot_register_as_a_plugin() {
    // The socket's directory is world-searchable here, so only the socket's own mode (0600)
    // stands between an unprivileged process and registering as a plugin (which could then
    // adjust every container: mount host paths, add devices).
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().expect("dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let Some(_e) = nri_env(dir.path()).await else {
        return;
    };
    let sock = dir.path().join("nri.sock");
    let attempt = |uid: Option<u32>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nri-test-plugin"));
        cmd.env("NRI_TEST_CONNECT", &sock);
        if let Some(uid) = uid {
            cmd.uid(uid).gid(uid); // std drops supplementary groups when root changes uid
        }
        cmd.status().expect("run the plugin").code()
    };
    assert_eq!(
        attempt(None),
        Some(0),
        "root registers (the attempt itself works)"
    );
    assert_eq!(attempt(Some(65534)), Some(3), "nobody is refused");
}
