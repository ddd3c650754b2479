//! Containers end to end: a real berthd pulls the busybox test image from a real registry,
//! runs pods and containers with the native executor, and the containers print what they see.
//! Needs root (CI runs as root).

mod obs_env;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::containers::{env, read_log, security};
use e2e::pods::mounts_under;
use obs_env::{cgroup_file, unified_cgroups};
use proto::cri::{
    self, ContainerMetadata, ContainerState, ContainerStatusRequest, HugepageLimit, ImageSpec,
    Int64Value, KeyValue, LinuxContainerResources, ListContainersRequest, RemoveContainerRequest,
    RemovePodSandboxRequest, StopContainerRequest, StopPodSandboxRequest,
};
use tonic::Code;

#[tokio::test]
async fn container_sees_its_command_env_workdir_hostname_dns_and_default_security() {
    let Some(e) = env().await else { return };
    let pc = e.pod("see");
    let pod = e.run_pod(&pc).await;
    let mut c = e.container(
        "see",
        &["/bin/sh", "-c", "id; hostname; pwd; echo FOO=$FOO; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; cat /etc/resolv.conf; echo pid1=$(cat /proc/1/comm)"],
    );
    c.envs = vec![KeyValue {
        key: "FOO".into(),
        value: "bar".into(),
    }];
    c.working_dir = "/tmp".into();
    let (st, lines) = e.run_to_end(&pod, &pc, c).await;
    assert_eq!(st.exit_code, 0, "{lines:?}");
    assert_eq!(st.reason, "Completed");
    let out = lines.join("\n");
    assert!(out.contains("uid=0(root) gid=0(root)"), "{out}");
    assert!(lines.contains(&"see".to_string()), "hostname: {out}");
    assert!(lines.contains(&"/tmp".to_string()), "cwd: {out}");
    assert!(out.contains("FOO=bar"), "{out}");
    assert!(
        out.contains("CapEff:\t00000000a80425fb"),
        "default capability set: {out}"
    );
    assert!(out.contains("nameserver 10.96.0.10"), "{out}");
    assert!(out.contains("pid1=sh"), "own PID namespace: {out}");
    assert!(st.started_at > 0 && st.finished_at >= st.started_at);
    assert_eq!(st.image.expect("image").image, e.image);
    assert!(st.image_ref.contains("@sha256:"), "{}", st.image_ref);
}

#[tokio::test]
async fn exit_codes_users_and_start_errors_are_reported() {
    let Some(e) = env().await else { return };
    let pc = e.pod("codes");
    let pod = e.run_pod(&pc).await;
    let (st, _) = e
        .run_to_end(
            &pod,
            &pc,
            e.container("three", &["/usr/local/bin/exitwith", "3"]),
        )
        .await;
    assert_eq!((st.exit_code, st.reason.as_str()), (3, "Error"));

    let mut by_name = e.container("named", &["id"]);
    security(&mut by_name).run_as_username = "berth".into();
    let (st, lines) = e.run_to_end(&pod, &pc, by_name).await;
    assert_eq!(st.exit_code, 0);
    assert!(
        lines
            .join("\n")
            .contains("uid=1000(berth) gid=1000(berth) groups=1000(berth),2000(extra)"),
        "{lines:?}"
    );

    let mut by_id = e.container("numeric", &["id"]);
    security(&mut by_id).run_as_user = Some(Int64Value { value: 1234 });
    let (_, lines) = e.run_to_end(&pod, &pc, by_id).await;
    assert!(lines.join("\n").contains("uid=1234"), "{lines:?}");

    let id = e
        .create(&pod, &pc, e.container("missing", &["/no/such/binary"]))
        .await
        .expect("create");
    let err = e.start(&id).await.expect_err("missing command");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("/no/such/binary"),
        "{}",
        err.message()
    );
    let st = e.status(&id).await;
    assert_eq!(st.reason, "StartError");
    assert!(
        !e.d.state_dir.join("rootfs").join(&id).exists(),
        "a failed start leaves no root mounted"
    );

    let mut bad_dir = e.container("nodir", &["true"]);
    bad_dir.working_dir = "/does/not/exist".into();
    let id = e.create(&pod, &pc, bad_dir).await.expect("create");
    let err = e.start(&id).await.expect_err("missing workdir");
    assert!(
        err.message().contains("/does/not/exist"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn running_container_lists_stops_and_is_removed_without_leftovers() {
    let Some(e) = env().await else { return };
    let pc = e.pod("life");
    let pod = e.run_pod(&pc).await;
    let mut c = e.container("pause", &["/usr/local/bin/pause"]);
    c.labels.insert("tier".into(), "web".into());
    let id = e.create(&pod, &pc, c.clone()).await.expect("create");
    assert_eq!(
        e.status(&id).await.state,
        ContainerState::ContainerCreated as i32
    );
    let dup = e
        .create(&pod, &pc, c)
        .await
        .expect_err("same name and attempt");
    assert_eq!(dup.code(), Code::AlreadyExists);
    e.start(&id).await.expect("start");
    assert_eq!(
        e.status(&id).await.state,
        ContainerState::ContainerRunning as i32
    );
    let again = e.start(&id).await.expect_err("start twice");
    assert_eq!(again.code(), Code::FailedPrecondition);

    let mut rt = e.d.runtime().await.expect("client");
    let list = |filter: cri::ContainerFilter| {
        let mut rt = rt.clone();
        async move {
            rt.list_containers(ListContainersRequest {
                filter: Some(filter),
            })
            .await
            .expect("list")
            .into_inner()
            .containers
            .into_iter()
            .map(|c| c.id)
            .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(cri::ContainerFilter {
            id: id[..12].into(),
            ..Default::default()
        })
        .await,
        vec![id.clone()]
    );
    assert_eq!(
        list(cri::ContainerFilter {
            pod_sandbox_id: pod.clone(),
            ..Default::default()
        })
        .await,
        vec![id.clone()]
    );
    let running = cri::ContainerFilter {
        state: Some(cri::ContainerStateValue {
            state: ContainerState::ContainerRunning as i32,
        }),
        label_selector: [("tier".to_string(), "web".to_string())].into(),
        ..Default::default()
    };
    assert_eq!(list(running).await, vec![id.clone()]);

    // As PID 1 of its PID namespace, pause ignores SIGTERM until its handler is installed.
    wait_catches_sigterm(&e, &id).await;
    let started = Instant::now();
    rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 10,
    })
    .await
    .expect("stop");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "pause exits on SIGTERM"
    );
    let st = e.status(&id).await;
    assert_eq!(st.state, ContainerState::ContainerExited as i32);
    rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 10,
    })
    .await
    .expect("stop again");
    rt.remove_container(RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("remove");
    rt.remove_container(RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("remove again");
    let err = rt
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .expect_err("removed");
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        !e.d.state_dir.join("rootfs").join(&id).exists(),
        "rootfs mountpoint left"
    );
    assert!(
        !e.d.root_dir.join("containers").join(&id).exists(),
        "container state left"
    );

    // A container that ignores SIGTERM is killed after the timeout.
    let stubborn = e
        .create(
            &pod,
            &pc,
            e.container(
                "stubborn",
                &[
                    "/bin/sh",
                    "-c",
                    "trap '' TERM; while true; do sleep 1; done",
                ],
            ),
        )
        .await
        .expect("create");
    e.start(&stubborn).await.expect("start");
    rt.stop_container(StopContainerRequest {
        container_id: stubborn.clone(),
        timeout: 1,
    })
    .await
    .expect("stop stubborn");
    assert_eq!(e.status(&stubborn).await.exit_code, 137);

    // Stopping the pod kills its containers; removing it removes them.
    let last = e
        .create(&pod, &pc, e.container("last", &["/usr/local/bin/pause"]))
        .await
        .expect("create");
    e.start(&last).await.expect("start");
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .expect("stop pod");
    assert_eq!(
        e.status(&last).await.state,
        ContainerState::ContainerExited as i32
    );
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .expect("remove pod");
    let left = rt
        .list_containers(ListContainersRequest { filter: None })
        .await
        .expect("list")
        .into_inner()
        .containers;
    assert!(left.is_empty(), "{left:?}");
    assert!(
        mounts_under(e.d.dir()).is_empty(),
        "mounts left: {:?}",
        mounts_under(e.d.dir())
    );
}

#[tokio::test]
async fn mounts_and_a_readonly_root_are_enforced() {
    let Some(e) = env().await else { return };
    let pc = e.pod("mounts");
    let pod = e.run_pod(&pc).await;
    let host = tempfile::tempdir().expect("host dir");
    std::fs::write(host.path().join("hello"), "from the host").expect("write");
    let created = host.path().join("created-by-kubelet-rule");
    let mut c = e.container(
        "mounts",
        &["/bin/sh", "-c", "cat /data/hello; echo written > /rw/out; touch /data/x 2>&1 || echo ro-enforced; touch /rootfile 2>&1 || echo rootfs-ro"],
    );
    c.mounts = vec![
        cri::Mount {
            container_path: "/data".into(),
            host_path: host.path().display().to_string(),
            readonly: true,
            ..Default::default()
        },
        cri::Mount {
            container_path: "/rw".into(),
            host_path: created.display().to_string(),
            ..Default::default()
        },
    ];
    security(&mut c).readonly_rootfs = true;
    let (st, lines) = e.run_to_end(&pod, &pc, c).await;
    let out = lines.join("\n");
    assert_eq!(st.exit_code, 0, "{out}");
    assert!(out.contains("from the host"), "{out}");
    assert!(out.contains("ro-enforced"), "{out}");
    assert!(out.contains("rootfs-ro"), "{out}");
    assert_eq!(
        std::fs::read_to_string(created.join("out"))
            .expect("rw mount")
            .trim(),
        "written"
    );
}

#[tokio::test]
async fn memory_limit_kills_with_oomkilled() {
    let Some(e) = env().await else { return };
    let pc = e.pod("oom");
    let pod = e.run_pod(&pc).await;
    let mut c = e.container(
        "hog",
        &["/bin/sh", "-c", "head -c 200000000 /dev/zero | tail"],
    );
    c.linux.get_or_insert_with(Default::default).resources = Some(LinuxContainerResources {
        memory_limit_in_bytes: 16 << 20,
        ..Default::default()
    });
    let (st, _) = e.run_to_end(&pod, &pc, c).await;
    assert_eq!(
        st.reason, "OOMKilled",
        "exit {} {}",
        st.exit_code, st.message
    );
}

#[tokio::test]
async fn capabilities_privileged_no_new_privs_and_masked_paths() {
    let Some(e) = env().await else { return };
    let pc = e.pod("sec");
    let pod = e.run_pod(&pc).await;
    let status_cmd = [
        "/bin/sh",
        "-c",
        "grep -E '^(CapBnd|CapEff|NoNewPrivs)' /proc/self/status; wc -c < /proc/timer_list 2>&1; ls /dev | wc -l",
    ];

    let mut dropped = e.container("dropped", &status_cmd);
    security(&mut dropped).capabilities = Some(cri::Capability {
        add_capabilities: vec!["SYS_ADMIN".into()],
        drop_capabilities: vec!["ALL".into()],
        ..Default::default()
    });
    security(&mut dropped).no_new_privs = true;
    let (st, lines) = e.run_to_end(&pod, &pc, dropped).await;
    let out = lines.join("\n");
    assert_eq!(st.exit_code, 0, "{out}");
    // Only CAP_SYS_ADMIN (bit 21).
    assert!(out.contains("CapEff:\t0000000000200000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(
        lines.iter().any(|l| l.trim() == "0"),
        "/proc/timer_list is masked: {out}"
    );

    let mut privileged = e.container("privileged", &status_cmd);
    security(&mut privileged).privileged = true;
    let (st, lines) = e.run_to_end(&pod, &pc, privileged).await;
    let out = lines.join("\n");
    assert_eq!(st.exit_code, 0, "{out}");
    assert!(
        !out.contains("CapEff:\t00000000a80425fb"),
        "privileged has more than the default set: {out}"
    );
    assert!(out.contains("NoNewPrivs:\t0"), "{out}");
}

#[tokio::test]
async fn exited_container_is_replaced_by_a_new_attempt_and_logs_survive_rotation() {
    let Some(e) = env().await else { return };
    let pc = e.pod("again");
    let pod = e.run_pod(&pc).await;
    let (st, _) = e
        .run_to_end(
            &pod,
            &pc,
            e.container("job", &["/bin/sh", "-c", "echo first"]),
        )
        .await;
    assert_eq!(st.exit_code, 0);
    let mut second = e.container("job", &["/bin/sh", "-c", "echo second"]);
    second.metadata = Some(ContainerMetadata {
        name: "job".into(),
        attempt: 1,
    });
    second.log_path = "job/1.log".into();
    let (st, lines) = e.run_to_end(&pod, &pc, second).await;
    assert_eq!(st.exit_code, 0);
    assert_eq!(lines, vec!["second"]);

    // Rotation: kubelet renames the file, then asks for a reopen; nothing is lost.
    let c = e.container(
        "talker",
        &[
            "/bin/sh",
            "-c",
            "i=0; while [ $i -lt 40 ]; do echo line-$i; i=$((i+1)); sleep 0.05; done",
        ],
    );
    let log = PathBuf::from(&pc.log_directory).join(&c.log_path);
    let id = e.create(&pod, &pc, c).await.expect("create");
    e.start(&id).await.expect("start");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    e.d.runtime()
        .await
        .expect("client")
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .expect("ReopenContainerLog");
    e.wait_exited(&id).await;
    let mut all = read_log(&rotated);
    all.extend(read_log(&log));
    let expected: Vec<String> = (0..40).map(|i| format!("line-{i}")).collect();
    assert_eq!(all, expected, "every line exactly once across the rotation");
}

#[tokio::test]
async fn devices_are_granted_and_everything_else_is_denied() {
    let Some(e) = env().await else { return };
    let pc = e.pod("devices");
    let pod = e.run_pod(&pc).await;
    let mut c = e.container(
        "devices",
        &["/bin/sh", "-c", "head -c 4 /dev/granted | wc -c; mknod /tmp/mem c 1 1 && (head -c 1 /tmp/mem 2>&1 || echo mem-denied)"],
    );
    c.devices = vec![cri::Device {
        container_path: "/dev/granted".into(),
        host_path: "/dev/zero".into(),
        permissions: "r".into(),
    }];
    let (st, lines) = e.run_to_end(&pod, &pc, c).await;
    let out = lines.join("\n");
    assert_eq!(st.exit_code, 0, "{out}");
    assert!(
        lines.iter().any(|l| l.trim() == "4"),
        "granted device readable: {out}"
    );
    assert!(
        out.contains("mem-denied"),
        "device cgroup denies /dev/mem: {out}"
    );

    let mut bad = e.container("baddev", &["true"]);
    bad.devices = vec![cri::Device {
        container_path: "/dev/x".into(),
        host_path: "/etc/hostname".into(),
        permissions: "rw".into(),
    }];
    // Refused by CreateContainer, as containerd does (its device filter is made there).
    let err = e.create(&pod, &pc, bad).await.expect_err("not a device");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("config.devices[0].host_path"),
        "{}",
        err.message()
    );
    assert!(
        !e.container_names().await.iter().any(|n| n == "baddev"),
        "refused container kept"
    );
}

#[tokio::test]
async fn tty_container_logs_its_terminal_output() {
    let Some(e) = env().await else { return };
    let pc = e.pod("tty");
    let pod = e.run_pod(&pc).await;
    let mut c = e.container(
        "tty",
        &[
            "/bin/sh",
            "-c",
            "test -t 1 && echo on-a-tty; readlink /proc/self/fd/0",
        ],
    );
    c.tty = true;
    let (st, lines) = e.run_to_end(&pod, &pc, c).await;
    let out = lines.join("\n");
    assert_eq!(st.exit_code, 0, "{out}");
    assert!(out.contains("on-a-tty"), "{out}");
    assert!(out.contains("/dev/pts/"), "{out}");
}

#[tokio::test]
async fn bad_create_requests_are_rejected_by_field() {
    let Some(e) = env().await else { return };
    let pc = e.pod("bad");
    let pod = e.run_pod(&pc).await;
    let err = e
        .create("no-such-pod", &pc, e.container("x", &["true"]))
        .await
        .expect_err("unknown pod");
    assert_eq!(err.code(), Code::NotFound);

    let mut no_image = e.container("noimage", &["true"]);
    no_image.image = Some(ImageSpec {
        image: "127.0.0.1:1/never/pulled:1".into(),
        ..Default::default()
    });
    let err = e
        .create(&pod, &pc, no_image)
        .await
        .expect_err("image not pulled");
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("never/pulled"), "{}", err.message());

    let mut relative = e.container("relative", &["true"]);
    relative.mounts = vec![cri::Mount {
        container_path: "data".into(),
        host_path: "/tmp".into(),
        ..Default::default()
    }];
    let err = e
        .create(&pod, &pc, relative)
        .await
        .expect_err("relative mount");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("config.mounts[0].container_path"),
        "{}",
        err.message()
    );

    let mut escaping = e.container("escaping", &["true"]);
    escaping.mounts = vec![cri::Mount {
        container_path: "/data/../../etc".into(),
        host_path: "/tmp".into(),
        ..Default::default()
    }];
    let err = e
        .create(&pod, &pc, escaping)
        .await
        .expect_err("escaping mount");
    assert_eq!(err.code(), Code::InvalidArgument);

    let mut unnamed = e.container("x", &["true"]);
    unnamed.metadata = None;
    let err = e.create(&pod, &pc, unnamed).await.expect_err("no metadata");
    assert!(
        err.message().contains("config.metadata.name"),
        "{}",
        err.message()
    );

    e.d.runtime()
        .await
        .expect("client")
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .expect("stop pod");
    let err = e
        .create(&pod, &pc, e.container("late", &["true"]))
        .await
        .expect_err("pod not ready");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let left =
        e.d.runtime()
            .await
            .expect("client")
            .list_containers(ListContainersRequest { filter: None })
            .await
            .expect("list")
            .into_inner()
            .containers;
    assert!(
        left.is_empty(),
        "rejected requests leave no container: {left:?}"
    );
}

#[tokio::test]
async fn seccomp_profiles_apply_and_apparmor_is_checked() {
    let Some(e) = env().await else { return };
    let pc = e.pod("seccomp");
    let pod = e.run_pod(&pc).await;
    let profile = |kind: cri::security_profile::ProfileType, path: &str| cri::SecurityProfile {
        profile_type: kind as i32,
        localhost_ref: path.into(),
    };

    let mut default = e.container(
        "default",
        &[
            "/bin/sh",
            "-c",
            "grep '^Seccomp:' /proc/self/status; mkdir /tmp/ok && echo mkdir-ok",
        ],
    );
    security(&mut default).seccomp = Some(profile(
        cri::security_profile::ProfileType::RuntimeDefault,
        "",
    ));
    let (st, lines) = e.run_to_end(&pod, &pc, default).await;
    let out = lines.join("\n");
    assert_eq!(st.exit_code, 0, "{out}");
    assert!(out.contains("Seccomp:\t2"), "filter installed: {out}");
    assert!(out.contains("mkdir-ok"), "{out}");

    let dir = tempfile::tempdir().expect("profile dir");
    let file = dir.path().join("no-mkdir.json");
    std::fs::write(
        &file,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
    )
    .expect("write profile");
    let mut local = e.container(
        "local",
        &[
            "/bin/sh",
            "-c",
            "mkdir /tmp/denied 2>&1 || echo mkdir-denied",
        ],
    );
    security(&mut local).seccomp = Some(profile(
        cri::security_profile::ProfileType::Localhost,
        &file.display().to_string(),
    ));
    let (_, lines) = e.run_to_end(&pod, &pc, local).await;
    let out = lines.join("\n");
    assert!(
        out.contains("Permission denied") && out.contains("mkdir-denied"),
        "{out}"
    );

    let mut missing = e.container("missing-profile", &["true"]);
    security(&mut missing).seccomp = Some(profile(
        cri::security_profile::ProfileType::Localhost,
        "/nonexistent/profile.json",
    ));
    let err = e
        .create(&pod, &pc, missing)
        .await
        .expect_err("missing profile");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("/nonexistent/profile.json"),
        "{}",
        err.message()
    );

    if !runtime_apparmor_enabled() {
        let mut named = e.container("apparmor", &["true"]);
        security(&mut named).apparmor = Some(profile(
            cri::security_profile::ProfileType::Localhost,
            "my-profile",
        ));
        let err = e
            .create(&pod, &pc, named)
            .await
            .expect_err("apparmor disabled");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("my-profile"), "{}", err.message());
    }
}

fn runtime_apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.trim() == "Y")
}

#[tokio::test]
async fn container_reads_its_own_cgroup_limits() {
    let Some(e) = env().await else { return };
    let pc = e.pod("limits");
    let pod = e.run_pod(&pc).await;
    // v1: the controllers' files under /sys/fs/cgroup/<controller>; v2: the container's own
    // cgroup is /sys/fs/cgroup (cgroup namespace), where cpu.shares 256 is cpu.weight 10.
    let script = if unified_cgroups() {
        "cat /sys/fs/cgroup/memory.max; cat /sys/fs/cgroup/cpu.weight; \
         echo 1 > /sys/fs/cgroup/memory.max 2>/dev/null || echo cgroup-ro"
    } else {
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; cat /sys/fs/cgroup/cpu/cpu.shares; \
         echo 1 > /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || echo cgroup-ro"
    };
    let mut c = e.container("limits", &["/bin/sh", "-c", script]);
    c.linux.get_or_insert_with(Default::default).resources = Some(LinuxContainerResources {
        memory_limit_in_bytes: 48 << 20,
        cpu_shares: 256,
        ..Default::default()
    });
    let (st, lines) = e.run_to_end(&pod, &pc, c).await;
    let out = lines.join("\n");
    assert_eq!(st.exit_code, 0, "{out}");
    assert!(
        lines.contains(&(48u64 << 20).to_string()),
        "memory limit visible: {out}"
    );
    let weight = if unified_cgroups() { "10" } else { "256" };
    assert!(
        lines.contains(&weight.to_string()),
        "cpu weight visible: {out}"
    );
    assert!(out.contains("cgroup-ro"), "cgroups are read-only: {out}");
}

/// Whether the host enforces hugepage limits: a v1 `hugetlb` hierarchy, or hugetlb in v2.
fn hugetlb_enforced() -> bool {
    if unified_cgroups() {
        std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "hugetlb"))
    } else {
        Path::new("/sys/fs/cgroup/hugetlb/tasks").exists()
    }
}

#[tokio::test]
async fn create_whose_cgroup_the_kernel_refuses_leaves_nothing() {
    let Some(e) = env().await else { return };
    let pc = e.pod("refused-limit");
    let pod = e.run_pod(&pc).await;
    // CreateContainer makes the cgroup (as `runc create` does in containerd's).
    let good = e
        .create(&pod, &pc, e.container("good", &["true"]))
        .await
        .expect("create");
    let cg = e.cgroup_path(&good).await;
    let pod_cg = Path::new(&cg).parent().expect("pod cgroup").to_path_buf();
    let hierarchy = if unified_cgroups() {
        PathBuf::from("/sys/fs/cgroup")
    } else {
        PathBuf::from("/sys/fs/cgroup/memory")
    };
    let children = || {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(hierarchy.join(&pod_cg))
            .expect("pod cgroup dir")
            .flatten()
            .map(|d| d.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        dirs
    };
    let before = children();
    assert!(
        before.contains(&hierarchy.join(&cg)),
        "created container has no cgroup: {before:?}"
    );
    // A CPU the host does not have: the kernel refuses the cgroup's cpuset.
    let mut bad = e.container("bad", &["true"]);
    bad.linux.get_or_insert_with(Default::default).resources = Some(LinuxContainerResources {
        cpuset_cpus: "4095".into(),
        ..Default::default()
    });
    let err = e.create(&pod, &pc, bad).await.expect_err("cpuset refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(
        err.message().contains("config.linux.resources"),
        "{}",
        err.message()
    );
    assert_eq!(children(), before, "the refused container's cgroup is left");
    let names = e.container_names().await;
    assert_eq!(names, ["good"], "the refused container is kept");
}

#[tokio::test]
async fn container_cgroup_carries_every_kind_of_limit() {
    let Some(e) = env().await else { return };
    let pc = e.pod("all-limits");
    let pod = e.run_pod(&pc).await;
    let v2 = unified_cgroups();
    let mut c = e.container("all-limits", &["/bin/sh", "-c", "sleep 600"]);
    let unified = if v2 {
        // Keys CRI has no field for: pids, io weight, memory.high.
        [
            ("pids.max", "64"),
            ("io.weight", "default 200"),
            ("memory.high", "50331648"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into()
    } else {
        Default::default()
    };
    c.linux.get_or_insert_with(Default::default).resources = Some(LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: 64 << 20,
        cpuset_cpus: "0".into(),
        cpuset_mems: "0".into(),
        hugepage_limits: vec![HugepageLimit {
            page_size: "2MB".into(),
            limit: 4 << 20,
        }],
        unified,
        ..Default::default()
    });
    let id = e.run(&pod, &pc, c).await;
    let cg = e.cgroup_path(&id).await;
    let host = |controller: &str, file: &str| cgroup_file(controller, &cg, file);
    // What the container sees of its own cgroup (v2: its cgroup namespace root).
    let inside = async |file: &str| {
        let r = e
            .exec_sync(&id, &["cat", &format!("/sys/fs/cgroup/{file}")], 60)
            .await
            .expect("ExecSync");
        assert_eq!(
            r.exit_code,
            0,
            "cat {file}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        String::from_utf8_lossy(&r.stdout).trim().to_string()
    };
    if v2 {
        let want = [
            ("cpu.max", "50000 100000"),
            ("cpu.weight", "20"),
            ("memory.max", "67108864"),
            ("memory.high", "50331648"),
            ("cpuset.cpus", "0"),
            ("cpuset.mems", "0"),
            ("pids.max", "64"),
            ("io.weight", "default 200"),
        ];
        for (file, value) in want {
            assert_eq!(host("", file), value, "host {cg}/{file}");
            assert_eq!(inside(file).await, value, "container's {file}");
        }
        if hugetlb_enforced() {
            assert_eq!(host("", "hugetlb.2MB.max"), (4u64 << 20).to_string());
            assert_eq!(inside("hugetlb.2MB.max").await, (4u64 << 20).to_string());
        }
    } else {
        assert_eq!(host("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(host("cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(host("cpu", "cpu.shares"), "512");
        assert_eq!(host("memory", "memory.limit_in_bytes"), "67108864");
        assert_eq!(host("cpuset", "cpuset.cpus"), "0");
        assert_eq!(host("cpuset", "cpuset.mems"), "0");
        if hugetlb_enforced() {
            assert_eq!(
                host("hugetlb", "hugetlb.2MB.limit_in_bytes"),
                (4u64 << 20).to_string()
            );
        }
    }
    e.stop(&id).await;
    e.remove(&id).await;
    let gone = if v2 {
        Path::new("/sys/fs/cgroup").join(&cg)
    } else {
        Path::new("/sys/fs/cgroup/memory").join(&cg)
    };
    assert!(
        !gone.exists(),
        "container cgroup {} removed",
        gone.display()
    );
}

/// Waits until the container's process catches SIGTERM (a namespace's PID 1 ignores signals
/// it has no handler for, and a loaded machine may run the process late after its exec).
async fn wait_catches_sigterm(e: &e2e::containers::Env, id: &str) {
    let info =
        e.d.runtime()
            .await
            .expect("client")
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .expect("status")
            .into_inner()
            .info;
    let v: serde_json::Value = serde_json::from_str(&info["info"]).expect("info JSON");
    let pid = v["pid"].as_u64().expect("pid");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0);
        if caught {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never installed its SIGTERM handler"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
