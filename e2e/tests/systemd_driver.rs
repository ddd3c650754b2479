//! The systemd cgroup driver end to end: berthd with `cgroup_driver = "systemd"` makes each pod
//! a transient scope `berth-<pod-id>.scope` in the slice kubelet names (`…-pod<uid>.slice`),
//! over D-Bus, with its limits as unit properties; containers are cgroups inside the scope;
//! removing the pod leaves no unit and no cgroup. Needs root and systemd as PID 1: this machine
//! kind has neither systemd nor cgroup v2, so `scripts/v2-lane.sh` runs these tests in a VM
//! booted with systemd. Without systemd, berthd must refuse the driver at start.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::containers::env_started;
use e2e::daemon::{BerthdOptions, run_berthd};
use proto::cri::{self, LinuxContainerResources};
use tonic::Code;

fn systemd_runs() -> bool {
    std::fs::read_to_string("/proc/1/comm").is_ok_and(|c| c.trim() == "systemd")
}

/// `systemctl show -p <prop> --value <unit>`.
fn show(unit: &str, prop: &str) -> String {
    let out = Command::new("systemctl")
        .args(["show", "-p", prop, "--value", unit])
        .output()
        .expect("systemctl show");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn systemd_options() -> BerthdOptions {
    BerthdOptions {
        args: vec!["--cgroup-driver".into(), "systemd".into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn systemd_driver_is_refused_at_start_where_systemd_does_not_answer() {
    if systemd_runs() {
        eprintln!("skipped: systemd runs here, so berthd starts with the systemd driver");
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: berthd needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |p: &str| dir.path().join(p).display().to_string();
    let (socket, root, state) = (path("berth.sock"), path("root"), path("state"));
    let out = run_berthd(
        &[
            "--config",
            "/dev/null",
            "--cgroup-driver",
            "systemd",
            "--socket",
            &socket,
            "--root-dir",
            &root,
            "--state-dir",
            &state,
            "--metrics-address",
            "",
        ],
        Duration::from_secs(15),
    )
    .expect("run berthd");
    assert!(!out.status.success(), "berthd started without systemd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cgroup_driver = \"systemd\"") && stderr.contains("D-Bus"),
        "{stderr}"
    );
}

#[tokio::test]
async fn systemd_driver_makes_pods_scopes_in_kubelet_slices_and_leaves_no_unit() {
    if !systemd_runs() {
        eprintln!(
            "skipped: systemd is not PID 1 here (scripts/v2-lane.sh runs this test in a VM with systemd)"
        );
        return;
    }
    let Some(e) = env_started("", systemd_options()).await else {
        return;
    };
    let e = e.expect("berthd with the systemd driver");
    let config =
        e.d.runtime()
            .await
            .expect("client")
            .runtime_config(cri::RuntimeConfigRequest {})
            .await
            .expect("RuntimeConfig")
            .into_inner();
    assert_eq!(
        config.linux.expect("linux").cgroup_driver,
        cri::CgroupDriver::Systemd as i32
    );

    // A slice named as kubelet names a burstable pod's: <qos parent>-pod<uid>.slice.
    let tag = format!("berthe2e{}", std::process::id());
    let (top, qos) = (format!("{tag}.slice"), format!("{tag}-burstable.slice"));
    let slice = format!("{tag}-burstable-pod{}.slice", std::process::id());
    let mut pc = e.pod("sd");
    if let Some(l) = pc.linux.as_mut() {
        l.cgroup_parent = slice.clone();
        l.resources = Some(LinuxContainerResources {
            memory_limit_in_bytes: 96 << 20,
            cpu_shares: 1024,
            ..Default::default()
        });
    }
    let pod = e.run_pod(&pc).await;
    let unit = format!("berth-{pod}.scope");
    assert_eq!(show(&unit, "ActiveState"), "active", "{unit}");
    assert_eq!(show(&unit, "Slice"), slice);
    assert_eq!(show(&unit, "Delegate"), "yes");
    assert_eq!(show(&unit, "MemoryMax"), (96u64 << 20).to_string());
    assert_eq!(show(&unit, "CPUWeight"), "39");
    let cgroup = show(&unit, "ControlGroup");
    assert_eq!(cgroup, format!("/{top}/{qos}/{slice}/{unit}"));
    let dir = Path::new("/sys/fs/cgroup").join(cgroup.trim_start_matches('/'));
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    assert_eq!(read(&dir.join("memory.max")), (96u64 << 20).to_string());
    // The shim holds the scope, from a leaf of its own.
    assert_eq!(
        read(&dir.join("cgroup.procs")),
        "",
        "no process in the scope itself"
    );
    assert!(
        !read(&dir.join("berth-shim/cgroup.procs")).is_empty(),
        "the shim is in the scope's leaf"
    );

    // Containers are cgroups of the scope, with their own limits.
    let mut c = e.container("sd", &["/bin/sh", "-c", "sleep 600"]);
    c.linux.get_or_insert_with(Default::default).resources = Some(LinuxContainerResources {
        memory_limit_in_bytes: 32 << 20,
        ..Default::default()
    });
    let id = e.run(&pod, &pc, c).await;
    let ccg = e.cgroup_path(&id).await;
    assert!(
        ccg.starts_with(cgroup.trim_start_matches('/')),
        "{ccg} under {cgroup}"
    );
    let cdir = Path::new("/sys/fs/cgroup").join(&ccg);
    assert_eq!(read(&cdir.join("memory.max")), (32u64 << 20).to_string());
    assert!(
        !read(&cdir.join("cgroup.procs")).is_empty(),
        "container runs in it"
    );
    let r = e
        .exec_sync(&id, &["cat", "/proc/self/cgroup"], 60)
        .await
        .expect("ExecSync");
    assert_eq!(r.exit_code, 0);

    // Stop and remove: the unit goes, the cgroups go.
    e.stop(&id).await;
    e.remove(&id).await;
    let mut rt = e.d.runtime().await.expect("client");
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .expect("StopPodSandbox");
    e.d.remove_pod(&pod).await;
    wait_until(&format!("{unit} to be gone"), || {
        show(&unit, "LoadState") == "not-found"
    });
    assert!(!dir.exists(), "{} removed", dir.display());
    let left = e2e::inventory::leftovers(&e.d, &e.net.bridge);
    assert!(left.is_empty(), "left on the host:\n{}", left.join("\n"));

    // kubelet removes its pod slice itself; after that, nothing of the test remains.
    let _ = Command::new("systemctl").args(["stop", &top]).status();
    wait_until("the test slices to go", || {
        !Path::new("/sys/fs/cgroup").join(&top).exists()
    });

    // A cgroupfs path is refused by field, leaving nothing.
    let mut bad = e.pod("sd-bad");
    if let Some(l) = bad.linux.as_mut() {
        l.cgroup_parent = "/kubepods/burstable".into();
    }
    let err = e.d.run_pod(bad).await.expect_err("cgroupfs parent");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("linux.cgroup_parent") && err.message().contains(".slice"),
        "{}",
        err.message()
    );
    assert!(e.d.pod_ids().await.is_empty());
}

/// The cgroup directories of berth scopes directly in the slice at `slice_dir`.
fn berth_scopes_in(slice_dir: &Path) -> Vec<String> {
    std::fs::read_dir(slice_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("berth-") && n.ends_with(".scope"))
        .collect()
}

#[tokio::test]
async fn systemd_driver_removes_the_scope_of_a_pod_whose_start_a_crash_cut_short() {
    if !systemd_runs() {
        eprintln!(
            "skipped: systemd is not PID 1 here (scripts/v2-lane.sh runs this test in a VM with systemd)"
        );
        return;
    }
    let Some(e) = env_started("", systemd_options()).await else {
        return;
    };
    let mut e = e.expect("berthd with the systemd driver");
    let opts = |config: &str, failpoint: Option<&str>| BerthdOptions {
        config_toml: Some(config.to_string()),
        env: failpoint
            .map(|f| vec![(failpoint::ENV.to_string(), f.to_string())])
            .unwrap_or_default(),
        ..systemd_options()
    };
    let config = e.config.clone();
    e.d.respawn(&opts(&config, Some("run_pod.after_shim")))
        .await
        .expect("armed berthd");

    let tag = format!("berthcrash{}", std::process::id());
    let slice = format!("{tag}-pod{}.slice", std::process::id());
    let slice_dir = Path::new("/sys/fs/cgroup")
        .join(format!("{tag}.slice"))
        .join(&slice);
    let mut pc = e.pod("sd-crash");
    if let Some(l) = pc.linux.as_mut() {
        l.cgroup_parent = slice.clone();
    }
    let _ =
        e.d.run_pod(pc)
            .await
            .expect_err("berthd dies in RunPodSandbox");
    let status = e.d.wait_exit(Duration::from_secs(30)).await.expect("crash");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "berthd should have died at the failpoint: {}",
        e.d.stderr()
    );
    let scopes = berth_scopes_in(&slice_dir);
    assert_eq!(scopes.len(), 1, "the pod's scope was made before the crash");
    let unit = scopes[0].clone();
    assert_eq!(show(&unit, "ActiveState"), "active");

    // The next berthd undoes the interrupted start: the shim stops, the scope goes.
    e.d.respawn(&opts(&config, None))
        .await
        .expect("restarted berthd");
    wait_until(&format!("{unit} to be gone"), || {
        show(&unit, "LoadState") == "not-found" && berth_scopes_in(&slice_dir).is_empty()
    });
    for id in e.d.pod_ids().await {
        e.d.remove_pod(&id).await;
    }
    let left = e2e::inventory::leftovers(&e.d, &e.net.bridge);
    assert!(left.is_empty(), "left on the host:\n{}", left.join("\n"));
    let _ = Command::new("systemctl")
        .args(["stop", &format!("{tag}.slice")])
        .status();
}
