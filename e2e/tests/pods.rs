//! Pod sandboxes end to end: a real berthd creating real namespaces, shims, cgroups and
//! veths on a private bridge. Needs root (CI runs as root).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e::daemon::{Berthd, BerthdOptions};
use e2e::pods::{
    TestNetwork, link_exists, listen_once_in, mounts_under, pod_config, process_alive, read_from,
};
use nix::sys::signal::Signal;
use proto::cri::{
    self, ListPodSandboxRequest, NamespaceMode, PodSandboxFilter, PodSandboxState,
    PodSandboxStateValue, PodSandboxStatusRequest, RunPodSandboxRequest, StopPodSandboxRequest,
};
use tonic::Code;

struct Env {
    berthd: Berthd,
    net: TestNetwork,
    _cni: tempfile::TempDir,
}

async fn env() -> Option<Env> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: pod sandboxes need root");
        return None;
    }
    let net = TestNetwork::new();
    let cni = tempfile::tempdir().expect("cni dir");
    let berthd = Berthd::start_with(BerthdOptions {
        config_toml: Some(net.config_toml(cni.path())),
        ..Default::default()
    })
    .await
    .expect("start berthd");
    Some(Env {
        berthd,
        net,
        _cni: cni,
    })
}

async fn status(d: &Berthd, id: &str) -> Result<cri::PodSandboxStatusResponse, tonic::Status> {
    d.runtime()
        .await
        .expect("client")
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })
        .await
        .map(|r| r.into_inner())
}

async fn stop(d: &Berthd, id: &str) {
    d.runtime()
        .await
        .expect("client")
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .expect("StopPodSandbox");
}

struct Info {
    pid: u32,
    netns: Option<PathBuf>,
    cgroup: String,
    files: PathBuf,
}

fn info(resp: &cri::PodSandboxStatusResponse) -> Info {
    let v: serde_json::Value = serde_json::from_str(&resp.info["info"]).expect("info JSON");
    Info {
        pid: v["pid"].as_u64().expect("pid") as u32,
        netns: v["netnsPath"].as_str().map(PathBuf::from),
        cgroup: v["cgroup"].as_str().unwrap_or_default().to_string(),
        files: PathBuf::from(v["podFiles"].as_str().expect("podFiles")),
    }
}

fn nsenter(args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .args(args)
        .output()
        .expect("nsenter");
    assert!(
        out.status.success(),
        "nsenter {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn bridge_ports(bridge: &str) -> String {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Asserts nothing of a removed pod is left on the host.
fn assert_pod_gone(e: &Env, i: &Info) {
    assert!(!process_alive(i.pid), "shim {} still running", i.pid);
    assert!(
        mounts_under(e.berthd.dir()).is_empty(),
        "mounts left: {:?}",
        mounts_under(e.berthd.dir())
    );
    if let Some(ns) = &i.netns {
        assert!(!ns.exists(), "netns pin {} left", ns.display());
    }
    assert!(!i.files.exists(), "pod files {} left", i.files.display());
    if !i.cgroup.is_empty() {
        for ctl in ["memory", "cpu", "pids"] {
            let p = Path::new("/sys/fs/cgroup").join(ctl).join(&i.cgroup);
            assert!(!p.exists(), "cgroup {} left", p.display());
        }
    }
}

#[tokio::test]
async fn pod_runs_with_its_own_namespaces_ip_and_files_then_leaves_nothing() {
    let Some(e) = env().await else { return };
    let d = &e.berthd;
    let id = d.run_pod(pod_config("web")).await.expect("RunPodSandbox");
    let resp = status(d, &id).await.expect("status");
    let st = resp.status.clone().expect("status");
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
    let ip = st.network.expect("network").ip;
    assert!(e.net.contains(&ip), "pod ip {ip} not in {}", e.net.cidr());
    assert_eq!(st.metadata.expect("metadata").name, "web");
    let i = info(&resp);
    assert!(process_alive(i.pid), "shim alive");
    let netns = i.netns.clone().expect("netns path");
    let net_arg = format!("--net={}", netns.display());
    let uts_arg = format!("--uts={}", netns.with_file_name("uts").display());
    assert_eq!(
        nsenter(&[&uts_arg, "cat", "/proc/sys/kernel/hostname"]),
        "web"
    );
    let addrs = nsenter(&[&net_arg, "ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(addrs.contains(&ip), "{addrs}");
    let routes = nsenter(&[&net_arg, "ip", "route"]);
    assert!(routes.contains("default via"), "{routes}");
    let resolv = std::fs::read_to_string(i.files.join("resolv.conf")).expect("resolv.conf");
    assert!(
        resolv.contains("nameserver 10.96.0.10") && resolv.contains("options ndots:5"),
        "{resolv}"
    );
    let hosts = std::fs::read_to_string(i.files.join("hosts")).expect("hosts");
    assert!(hosts.contains(&format!("{ip}\tweb")), "{hosts}");
    assert!(
        !bridge_ports(&e.net.bridge).is_empty(),
        "veth on the bridge"
    );

    stop(d, &id).await;
    let after_stop = status(d, &id)
        .await
        .expect("status after stop")
        .status
        .expect("status");
    assert_eq!(after_stop.state, PodSandboxState::SandboxNotready as i32);
    stop(d, &id).await; // idempotent
    d.remove_pod(&id).await;
    d.remove_pod(&id).await; // idempotent
    let err = status(d, &id).await.expect_err("removed pod");
    assert_eq!(err.code(), Code::NotFound);
    assert_pod_gone(&e, &i);
    // The veth is deleted, then the address freed, in the background after the stop.
    let ipam = d.root_dir.join("network");
    let ip_files = || {
        let out = std::process::Command::new("grep")
            .args(["-rl", &id])
            .arg(&ipam)
            .output()
            .expect("grep");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let released = e2e::inventory::network_settled(|| {
        bridge_ports(&e.net.bridge).is_empty() && ip_files().is_empty()
    });
    assert!(
        released,
        "veth left: {}; IPAM entry left: {}",
        bridge_ports(&e.net.bridge),
        ip_files()
    );
}

#[tokio::test]
async fn pods_reach_each_other_and_a_host_port_reaches_the_pod() {
    let Some(e) = env().await else { return };
    let d = &e.berthd;
    let host_port = 20000 + (std::process::id() % 20000) as u16;
    let mut a_cfg = pod_config("server");
    a_cfg.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: 8080,
        host_port: host_port as i32,
        host_ip: String::new(),
    }];
    let a = d.run_pod(a_cfg).await.expect("pod a");
    let b = d.run_pod(pod_config("client")).await.expect("pod b");
    let a_resp = status(d, &a).await.expect("status a");
    let a_ip: std::net::Ipv4Addr = a_resp
        .status
        .clone()
        .expect("st")
        .network
        .expect("net")
        .ip
        .parse()
        .expect("ip");
    let a_ns = info(&a_resp).netns.expect("netns a");
    let b_ns = info(&status(d, &b).await.expect("status b"))
        .netns
        .expect("netns b");

    // Pod to pod over the bridge.
    listen_once_in(&a_ns, 8080, b"hello from a").expect("listen in a");
    let target = SocketAddr::from((a_ip, 8080));
    let got = e2e::pods::in_netns(&b_ns, move || read_from(target)).expect("b connects to a");
    assert_eq!(got, b"hello from a");

    // Host to pod through the host port on loopback.
    listen_once_in(&a_ns, 8080, b"via host port").expect("listen again");
    let got =
        read_from(SocketAddr::from(([127, 0, 0, 1], host_port))).expect("connect to host port");
    assert_eq!(got, b"via host port");

    for id in [&a, &b] {
        d.remove_pod(id).await;
    }
    assert!(e2e::inventory::network_settled(|| bridge_ports(
        &e.net.bridge
    )
    .is_empty()));
}

#[tokio::test]
async fn list_filters_by_id_prefix_state_and_labels() {
    let Some(e) = env().await else { return };
    let d = &e.berthd;
    let a = d.run_pod(pod_config("alpha")).await.expect("a");
    let b = d.run_pod(pod_config("beta")).await.expect("b");
    stop(d, &b).await;
    let list = |filter: Option<PodSandboxFilter>| async {
        d.runtime()
            .await
            .expect("client")
            .list_pod_sandbox(ListPodSandboxRequest { filter })
            .await
            .expect("ListPodSandbox")
            .into_inner()
            .items
            .into_iter()
            .map(|p| p.id)
            .collect::<Vec<_>>()
    };
    let all = list(None).await;
    assert!(all.contains(&a) && all.contains(&b));
    assert_eq!(
        list(Some(PodSandboxFilter {
            id: a[..12].into(),
            ..Default::default()
        }))
        .await,
        vec![a.clone()]
    );
    let ready = PodSandboxFilter {
        state: Some(PodSandboxStateValue {
            state: PodSandboxState::SandboxReady as i32,
        }),
        ..Default::default()
    };
    assert_eq!(list(Some(ready)).await, vec![a.clone()]);
    let labelled = PodSandboxFilter {
        label_selector: [("app".to_string(), "beta".to_string())].into(),
        ..Default::default()
    };
    assert_eq!(list(Some(labelled)).await, vec![b.clone()]);
    assert!(
        list(Some(PodSandboxFilter {
            id: "ffffffffffff".into(),
            ..Default::default()
        }))
        .await
        .is_empty()
    );
    for id in [&a, &b] {
        d.remove_pod(id).await;
    }
}

#[tokio::test]
async fn duplicate_metadata_is_already_exists_naming_the_pod() {
    let Some(e) = env().await else { return };
    let d = &e.berthd;
    let cfg = pod_config("dup");
    let first = d.run_pod(cfg.clone()).await.expect("first");
    let err = d.run_pod(cfg).await.expect_err("second");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains(&first), "{}", err.message());
    d.remove_pod(&first).await;
}

#[tokio::test]
async fn host_namespace_and_shared_pid_modes() {
    let Some(e) = env().await else { return };
    let d = &e.berthd;
    let mut host = pod_config("hostnet");
    let ns = host
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
        .expect("ns options");
    ns.network = NamespaceMode::Node as i32;
    ns.ipc = NamespaceMode::Node as i32;
    ns.pid = NamespaceMode::Node as i32;
    let h = d.run_pod(host).await.expect("host network pod");
    let resp = status(d, &h).await.expect("status");
    assert_eq!(
        resp.status.clone().expect("st").network.expect("net").ip,
        ""
    );
    let i = info(&resp);
    assert!(i.netns.is_none(), "hostNetwork pod has no netns");
    assert_eq!(
        resp.status
            .expect("st")
            .linux
            .expect("linux")
            .namespaces
            .expect("ns")
            .options
            .expect("opts")
            .network,
        NamespaceMode::Node as i32
    );

    let mut shared = pod_config("sharedpid");
    shared
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
        .expect("ns options")
        .pid = NamespaceMode::Pod as i32;
    let s = d.run_pod(shared).await.expect("shared pid pod");
    let si = info(&status(d, &s).await.expect("status"));
    let pid_pin = si.netns.expect("netns").with_file_name("pid");
    assert!(
        pid_pin.exists(),
        "shared PID namespace pinned at {}",
        pid_pin.display()
    );
    for id in [&h, &s] {
        d.remove_pod(id).await;
    }
    assert_pod_gone(&e, &i);
}

#[tokio::test]
async fn bad_requests_are_rejected_by_field_and_leave_nothing() {
    let Some(e) = env().await else { return };
    let d = &e.berthd;
    let mut no_meta = pod_config("x");
    no_meta.metadata = None;
    let err = d.run_pod(no_meta).await.expect_err("no metadata");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("config.metadata"),
        "{}",
        err.message()
    );

    let mut no_name = pod_config("x");
    if let Some(m) = no_name.metadata.as_mut() {
        m.name.clear();
    }
    let err = d.run_pod(no_name).await.expect_err("no name");
    assert!(
        err.message().contains("config.metadata.name"),
        "{}",
        err.message()
    );

    let mut unsafe_sysctl = pod_config("sysctl");
    if let Some(l) = unsafe_sysctl.linux.as_mut() {
        l.sysctls.insert("kernel.panic".into(), "1".into());
    }
    let err = d.run_pod(unsafe_sysctl).await.expect_err("unsafe sysctl");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("kernel.panic"), "{}", err.message());

    let err = d
        .runtime()
        .await
        .expect("client")
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config("h")),
            runtime_handler: "kata".into(),
        })
        .await
        .expect_err("unknown handler");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("kata"), "{}", err.message());

    let mut bad_port = pod_config("port");
    bad_port.port_mappings = vec![cri::PortMapping {
        protocol: 0,
        container_port: 0,
        host_port: 8080,
        host_ip: String::new(),
    }];
    let err = d.run_pod(bad_port).await.expect_err("bad port");
    assert!(
        err.message().contains("port_mappings[0].container_port"),
        "{}",
        err.message()
    );

    // A namespaced sysctl the kernel rejects fails inside the shim: full rollback.
    let mut kernel_rejects = pod_config("rollback");
    if let Some(l) = kernel_rejects.linux.as_mut() {
        l.sysctls
            .insert("net.ipv4.no_such_sysctl".into(), "1".into());
    }
    let err = d
        .run_pod(kernel_rejects)
        .await
        .expect_err("kernel rejects sysctl");
    assert!(
        err.message().contains("net.ipv4.no_such_sysctl"),
        "{}",
        err.message()
    );

    let list = d.pod_ids().await;
    assert!(list.is_empty(), "no pod recorded: {list:?}");
    assert!(mounts_under(d.dir()).is_empty());
    assert!(bridge_ports(&e.net.bridge).is_empty(), "no veth left");
    let pods_state = d.state_dir.join("pods");
    let left: Vec<_> = std::fs::read_dir(&pods_state)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "pod files left: {left:?}");
    // The pod cgroup, made while the shim started, is gone with it.
    let cgroups = e2e::inventory::cgroups_under(&e2e::pods::test_cgroup_parent());
    assert!(cgroups.is_empty(), "pod cgroups left: {cgroups:?}");
}

#[tokio::test]
async fn pods_survive_kill_9_of_berthd_and_are_found_again() {
    let Some(mut e) = env().await else { return };
    let id = e.berthd.run_pod(pod_config("survivor")).await.expect("run");
    let i = info(&status(&e.berthd, &id).await.expect("status"));
    e.berthd
        .stop_with(Signal::SIGKILL, Duration::from_secs(10))
        .await
        .expect("kill -9");
    assert!(process_alive(i.pid), "shim survives berthd");
    let dir = e.berthd.dir().to_path_buf();
    let mut again =
        Berthd::spawn_in_existing(&dir, &e.net.config_toml(e._cni.path())).expect("respawn");
    again
        .wait_ready(Duration::from_secs(20))
        .await
        .expect("ready");
    let st = status(&again, &id).await.expect("found after restart");
    assert_eq!(
        st.status.expect("st").state,
        PodSandboxState::SandboxReady as i32
    );
    again.remove_pod(&id).await;
    assert!(!process_alive(i.pid));
    assert!(!link_exists("definitely-not-a-link"));
}
