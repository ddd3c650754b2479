//! CRI behaviours the community's clients rely on (kubelet, crictl, critest) where berth once
//! differed from containerd and CRI-O: hostnames as the kernel takes them, partial last log
//! lines, stop signals, idempotent stops, the streaming list RPCs, pod resource updates and
//! namespaced sysctls. A real berthd, registry and containers. Needs root (CI runs as root).

use e2e::containers::env;
use proto::cri::{
    self, LinuxContainerResources, Signal, StopContainerRequest, StreamContainersRequest,
    StreamImagesRequest, StreamPodSandboxesRequest, UpdatePodSandboxResourcesRequest,
};
use tonic::Code;

#[tokio::test]
async fn hostnames_are_taken_as_the_kernel_takes_them() {
    let Some(e) = env().await else { return };
    let node = nix::unistd::gethostname()
        .expect("hostname")
        .to_string_lossy()
        .into_owned();

    // No hostname: the node's, as in containerd (critest's pods are named like this).
    let mut pc = e.pod("nohost");
    pc.hostname.clear();
    pc.metadata.as_mut().expect("metadata").name =
        "create-PodSandbox-for-container-3f0c6b4e-0a8c-4b4e-9d7e-1f2a3b4c5d6e".into();
    let pod = e.run_pod(&pc).await;
    let (_, lines) = e
        .run_to_end(&pod, &pc, e.container("h", &["hostname"]))
        .await;
    assert_eq!(lines, [node], "empty hostname gives the node's");

    // Capitals, underscores and 64 bytes: what the kernel accepts, berth accepts.
    let long = format!("Web_{}", "X".repeat(60));
    let mut pc = e.pod("longhost");
    pc.hostname = long.clone();
    let pod = e.run_pod(&pc).await;
    let (_, lines) = e
        .run_to_end(&pod, &pc, e.container("h", &["hostname"]))
        .await;
    assert_eq!(lines, [long], "hostname set verbatim");

    // What the kernel cannot hold, or what would corrupt /etc/hosts, names the field.
    for bad in ["x".repeat(65), "two words".to_string()] {
        let mut pc = e.pod("badhost");
        pc.hostname = bad;
        let err = e.d.run_pod(pc).await.expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert!(err.message().contains("config.hostname"), "{err}");
    }
}

#[tokio::test]
async fn unterminated_last_output_is_a_partial_log_line() {
    let Some(e) = env().await else { return };
    let pc = e.pod("logtag");
    let pod = e.run_pod(&pc).await;
    let c = e.container("t", &["sh", "-c", "echo line1; echo -n DONE; false"]);
    let log = e.log_path(&pc, &c);
    let (st, _) = e.run_to_end(&pod, &pc, c).await;
    assert_eq!(st.exit_code, 1);
    let raw = std::fs::read_to_string(&log).expect("log");
    let tags: Vec<(&str, &str)> = raw
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(4, ' ').collect();
            (f[2], f[3])
        })
        .collect();
    // kubelet reads `F` as a complete line: a termination message from logs would be `DONE\n`.
    assert_eq!(tags, [("F", "line1"), ("P", "DONE")], "{raw}");
}

#[tokio::test]
async fn stop_signal_from_config_is_sent_and_reported() {
    let Some(e) = env().await else { return };
    let pc = e.pod("stopsig");
    let pod = e.run_pod(&pc).await;
    // The shell ignores SIGTERM: only the configured SIGUSR1 (trapped: exit 42) ends it.
    let mut c = e.container(
        "s",
        &[
            "sh",
            "-c",
            "trap '' TERM; trap 'exit 42' USR1; echo ready; while :; do sleep 0.1; done",
        ],
    );
    c.set_stop_signal(Signal::Sigusr1);
    let id = e.run(&pod, &pc, c).await;
    assert_eq!(e.status(&id).await.stop_signal(), Signal::Sigusr1);
    // Wait for the traps to be set.
    let log = e.log_path(&pc, &e.container("s", &[]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("ready")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "container never ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    e.d.runtime()
        .await
        .expect("client")
        .stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 10,
        })
        .await
        .expect("StopContainer");
    let st = e.status(&id).await;
    assert_eq!(st.exit_code, 42, "stopped by SIGUSR1, not SIGKILL: {st:?}");

    // Default: the image's signal or SIGTERM, reported as such.
    let id = e.run(&pod, &pc, e.container("d", &["sleep", "60"])).await;
    assert_eq!(e.status(&id).await.stop_signal(), Signal::Sigterm);

    // An unknown signal number names the field.
    let mut c = e.container("bad", &["true"]);
    c.stop_signal = 999;
    let err = e.create(&pod, &pc, c).await.expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("config.stop_signal"), "{err}");
}

#[tokio::test]
async fn stop_of_unknown_container_succeeds_and_list_streams_match_lists() {
    let Some(e) = env().await else { return };
    let mut rt = e.d.runtime().await.expect("client");
    rt.stop_container(StopContainerRequest {
        container_id: "0123456789abcdef".into(),
        timeout: 0,
    })
    .await
    .expect("StopContainer of an unknown ID is idempotent");

    let pc = e.pod("streams");
    let pod = e.run_pod(&pc).await;
    let id = e.run(&pod, &pc, e.container("c", &["sleep", "60"])).await;

    let mut pods = Vec::new();
    let mut s = rt
        .stream_pod_sandboxes(StreamPodSandboxesRequest { filter: None })
        .await
        .expect("StreamPodSandboxes")
        .into_inner();
    while let Some(r) = s.message().await.expect("stream") {
        pods.extend(r.pod_sandboxes.into_iter().map(|p| p.id));
    }
    assert_eq!(pods, std::slice::from_ref(&pod));

    let mut ctrs = Vec::new();
    let mut s = rt
        .stream_containers(StreamContainersRequest { filter: None })
        .await
        .expect("StreamContainers")
        .into_inner();
    while let Some(r) = s.message().await.expect("stream") {
        ctrs.extend(r.containers.into_iter().map(|c| c.id));
    }
    assert_eq!(ctrs, [id]);

    let mut images = Vec::new();
    let mut s =
        e.d.images()
            .await
            .expect("client")
            .stream_images(StreamImagesRequest { filter: None })
            .await
            .expect("StreamImages")
            .into_inner();
    while let Some(r) = s.message().await.expect("stream") {
        images.extend(r.images);
    }
    assert_eq!(images.len(), 1, "{images:?}");

    // In-place pod resize: recorded in the pod's config; an unknown pod is NotFound.
    let resources = LinuxContainerResources {
        cpu_shares: 512,
        memory_limit_in_bytes: 64 << 20,
        ..Default::default()
    };
    rt.update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: pod.clone(),
        overhead: None,
        resources: Some(resources.clone()),
    })
    .await
    .expect("UpdatePodSandboxResources");
    let info = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: true,
        })
        .await
        .expect("status")
        .into_inner()
        .info;
    let doc: serde_json::Value = serde_json::from_str(&info["info"]).expect("json");
    assert_eq!(
        doc["config"]["linux"]["resources"]["memory_limit_in_bytes"],
        64 << 20,
        "{doc}"
    );
    let err = rt
        .update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: "nope".into(),
            overhead: None,
            resources: Some(resources),
        })
        .await
        .expect_err("unknown pod");
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn ipc_and_uts_sysctls_apply_in_the_pods_namespaces() {
    let Some(e) = env().await else { return };
    let mut pc = e.pod("sysctl");
    let linux = pc.linux.as_mut().expect("linux");
    linux.sysctls = [
        ("fs.mqueue.msg_max", "17"),
        ("kernel.domainname", "berth.example"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let host_msg_max = std::fs::read_to_string("/proc/sys/fs/mqueue/msg_max").expect("host");
    let pod = e.run_pod(&pc).await;
    let (_, lines) = e
        .run_to_end(
            &pod,
            &pc,
            e.container(
                "c",
                &[
                    "cat",
                    "/proc/sys/fs/mqueue/msg_max",
                    "/proc/sys/kernel/domainname",
                ],
            ),
        )
        .await;
    assert_eq!(lines, ["17", "berth.example"]);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/fs/mqueue/msg_max").expect("host"),
        host_msg_max,
        "the host's value is untouched"
    );
}

#[tokio::test]
async fn a_debug_container_joins_its_targets_pid_namespace() {
    let Some(e) = env().await else { return };
    let pc = e.pod("target");
    let pod = e.run_pod(&pc).await;
    let app = e
        .run(&pod, &pc, e.container("app", &["sleep", "3600"]))
        .await;
    // `kubectl debug --target=app`: the debug container sees app's processes.
    let mut debug = e.container("debug", &["sh", "-c", "ps -o comm | grep -c sleep"]);
    let sc = e2e::containers::security(&mut debug);
    sc.namespace_options = Some(cri::NamespaceOption {
        network: cri::NamespaceMode::Pod as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        pid: cri::NamespaceMode::Target as i32,
        target_id: app.clone(),
        ..Default::default()
    });
    let (st, lines) = e.run_to_end(&pod, &pc, debug.clone()).await;
    assert_eq!(st.exit_code, 0, "{lines:?}");
    assert_eq!(lines, ["1"], "the target's sleep is visible");

    // An unknown or stopped target is refused at StartContainer, naming the field.
    let mut bad = debug.clone();
    bad.metadata.as_mut().expect("metadata").name = "debug-missing".into();
    bad.log_path = "debug-missing.log".into();
    e2e::containers::security(&mut bad)
        .namespace_options
        .as_mut()
        .expect("ns")
        .target_id = "nope".into();
    let id = e.create(&pod, &pc, bad).await.expect("create");
    let err = e.start(&id).await.expect_err("no such target");
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert!(err.message().contains("target_id"), "{err}");
    e.stop(&app).await;
    let mut late = debug;
    late.metadata.as_mut().expect("metadata").name = "debug-late".into();
    late.log_path = "debug-late.log".into();
    let id = e.create(&pod, &pc, late).await.expect("create");
    let err = e.start(&id).await.expect_err("target stopped");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
}

#[tokio::test]
async fn fields_berth_does_not_act_on_are_refused_by_name() {
    let Some(e) = env().await else { return };
    let pc = e.pod("unsupported");
    let pod = e.run_pod(&pc).await;
    let mut c = e.container("cdi", &["true"]);
    c.cdi_devices = vec![cri::CdiDevice {
        name: "vendor.com/gpu=0".into(),
    }];
    let err = e.create(&pod, &pc, c).await.expect_err("CDI refused");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(
        err.message().contains("config.CDI_devices") && err.message().contains("vendor.com/gpu=0")
    );

    // The deprecated seccomp_profile_path is honoured when `seccomp` is unset.
    let mut c = e.container(
        "legacy-seccomp",
        &["sh", "-c", "grep Seccomp: /proc/self/status"],
    );
    #[allow(deprecated)]
    {
        e2e::containers::security(&mut c).seccomp_profile_path = "runtime/default".into();
    }
    let (_, lines) = e.run_to_end(&pod, &pc, c).await;
    assert_eq!(lines, ["Seccomp:\t2"], "filter mode from the legacy field");
    let mut c = e.container("legacy-bad", &["true"]);
    #[allow(deprecated)]
    {
        e2e::containers::security(&mut c).seccomp_profile_path = "localhost/relative.json".into();
    }
    let err = e.create(&pod, &pc, c).await.expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("seccomp_profile_path"), "{err}");
}
