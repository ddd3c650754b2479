//! Pod sandboxes on a CNI network (Debian's containernetworking-plugins: bridge, host-local,
//! portmap), and pod cgroups. Needs root (CI runs as root).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::daemon::{Berthd, BerthdOptions};
use e2e::pods::{TestNetwork, listen_once_in, mounts_under, pod_config, process_alive, read_from};
use proto::cri::{self, LinuxContainerResources, PodSandboxStatusRequest};
use tonic::Code;

const CNI_BIN: &str = "/usr/lib/cni";

/// A CNI config dir with a bridge + host-local + portmap conflist on a private bridge and /24,
/// and cleanup of the bridge and host-local state.
struct CniEnv {
    conf: tempfile::TempDir,
    ipam: tempfile::TempDir,
    net: TestNetwork,
}

impl CniEnv {
    fn new(extra_plugin: Option<serde_json::Value>) -> CniEnv {
        let net = TestNetwork::new();
        let conf = tempfile::tempdir().expect("conf dir");
        let ipam = tempfile::tempdir().expect("ipam dir");
        let mut plugins = vec![
            serde_json::json!({
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
            }),
            serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}}),
        ];
        plugins.extend(extra_plugin);
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": format!("berth-e2e-{}", net.third_octet),
            "plugins": plugins,
        });
        std::fs::write(
            conf.path().join("10-berth-e2e.conflist"),
            conflist.to_string(),
        )
        .expect("write conflist");
        CniEnv { conf, ipam, net }
    }

    fn config_toml(&self, bin_dir: &Path) -> String {
        format!(
            "[cni]\nconf_dir = \"{}\"\nbin_dirs = [\"{}\", \"{CNI_BIN}\"]\n[network]\nbridge = \"{}\"\nnft_table = \"{}\"\n",
            self.conf.path().display(),
            bin_dir.display(),
            self.net.bridge,
            self.net.nft_table
        )
    }
}

fn ready() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: pod sandboxes need root");
        return false;
    }
    for plugin in ["bridge", "host-local", "portmap"] {
        if !Path::new(CNI_BIN).join(plugin).exists() {
            eprintln!(
                "skipped: {CNI_BIN}/{plugin} missing (apt-get install containernetworking-plugins)"
            );
            return false;
        }
    }
    true
}

async fn start(env: &CniEnv, bin_dir: &Path) -> Berthd {
    Berthd::start_with(BerthdOptions {
        config_toml: Some(env.config_toml(bin_dir)),
        ..Default::default()
    })
    .await
    .expect("start berthd")
}

async fn info(d: &Berthd, id: &str) -> (String, serde_json::Value) {
    let resp = d
        .runtime()
        .await
        .expect("client")
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })
        .await
        .expect("status")
        .into_inner();
    let ip = resp.status.expect("status").network.expect("network").ip;
    (
        ip,
        serde_json::from_str(&resp.info["info"]).expect("info JSON"),
    )
}

fn host_local_entries(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for net in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for e in std::fs::read_dir(net.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.parse::<Ipv4Addr>().is_ok() {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test]
async fn cni_pod_gets_an_address_a_host_port_and_is_cleaned_up() {
    if !ready() {
        return;
    }
    let env = CniEnv::new(None);
    let bins = tempfile::tempdir().expect("bin dir");
    let d = start(&env, bins.path()).await;
    let host_port = 30000 + (std::process::id() % 20000) as u16;
    let mut cfg = pod_config("cni-web");
    cfg.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: 8080,
        host_port: host_port as i32,
        host_ip: String::new(),
    }];
    let id = d.run_pod(cfg).await.expect("RunPodSandbox on CNI");
    let (ip, v) = info(&d, &id).await;
    assert!(
        env.net.contains(&ip),
        "CNI address {ip} not in {}",
        env.net.cidr()
    );
    assert!(
        v["network"]
            .as_str()
            .unwrap_or_default()
            .starts_with("cni:"),
        "{v}"
    );
    assert_eq!(
        host_local_entries(env.ipam.path()).len(),
        1,
        "host-local allocated one address"
    );

    // The host port (portmap) reaches the pod, through the bridge's gateway address.
    let netns = PathBuf::from(v["netnsPath"].as_str().expect("netns"));
    listen_once_in(&netns, 8080, b"cni hello").expect("listen");
    let gateway = SocketAddr::from(([10, 88, env.net.third_octet, 1], host_port));
    assert_eq!(
        read_from(gateway).expect("connect to host port"),
        b"cni hello"
    );

    let shim = v["pid"].as_u64().expect("pid") as u32;
    d.remove_pod(&id).await;
    assert!(!process_alive(shim));
    assert!(
        host_local_entries(env.ipam.path()).is_empty(),
        "CNI DEL released the address"
    );
    assert!(!netns.exists());
    assert!(mounts_under(d.dir()).is_empty());
    let cache = d.root_dir.join("network/cni-cache");
    let cached = Command::new("grep")
        .args(["-rl", &id])
        .arg(&cache)
        .output()
        .expect("grep");
    assert!(cached.stdout.is_empty(), "CNI cache entry left");
}

#[tokio::test]
async fn failing_cni_plugin_is_a_clear_error_and_leaves_nothing() {
    if !ready() {
        return;
    }
    let bins = tempfile::tempdir().expect("bin dir");
    let plugin = bins.path().join("berth-e2e-fail");
    std::fs::write(
        &plugin,
        "#!/bin/sh\nif [ \"$CNI_COMMAND\" = ADD ]; then\n  echo '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"e2e plugin refuses\"}'\n  exit 1\nfi\nexit 0\n",
    )
    .expect("write plugin");
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod plugin");
    let env = CniEnv::new(Some(serde_json::json!({"type": "berth-e2e-fail"})));
    let d = start(&env, bins.path()).await;
    let err = d
        .run_pod(pod_config("cni-fail"))
        .await
        .expect_err("plugin fails");
    assert_eq!(err.code(), Code::Internal, "{}", err.message());
    assert!(
        err.message().contains("e2e plugin refuses"),
        "{}",
        err.message()
    );
    let pods = d.pod_ids().await;
    assert!(pods.is_empty(), "no pod recorded");
    assert!(mounts_under(d.dir()).is_empty(), "no namespace pins left");
    assert!(
        host_local_entries(env.ipam.path()).is_empty(),
        "address released by the rollback"
    );
    let pod_files = std::fs::read_dir(d.state_dir.join("pods"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(pod_files, 0, "no pod files left");
}

#[tokio::test]
async fn pod_cgroup_carries_resources_and_overhead_and_is_removed() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: pod sandboxes need root");
        return;
    }
    let net = TestNetwork::new();
    let cni = tempfile::tempdir().expect("cni dir");
    let d = Berthd::start_with(BerthdOptions {
        config_toml: Some(net.config_toml(cni.path())),
        ..Default::default()
    })
    .await
    .expect("berthd");
    let parent = format!("berth-e2e-{}", net.third_octet);
    let mut cfg = pod_config("limited");
    if let Some(l) = cfg.linux.as_mut() {
        l.cgroup_parent = format!("/{parent}");
        l.resources = Some(LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_shares: 512,
            ..Default::default()
        });
        l.overhead = Some(LinuxContainerResources {
            memory_limit_in_bytes: 16 << 20,
            cpu_shares: 100,
            ..Default::default()
        });
    }
    let id = d.run_pod(cfg).await.expect("run");
    let (_, v) = info(&d, &id).await;
    let cgroup = v["cgroup"].as_str().expect("cgroup").to_string();
    assert!(cgroup.starts_with(&parent), "{cgroup}");
    // v1: memory and cpu hierarchies; v2: one directory, cpu.shares 612 as cpu.weight 24.
    let v2 = nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
    let (mem, cpu, limit_file, cpu_file, weight) = if v2 {
        let dir = Path::new("/sys/fs/cgroup").join(&cgroup);
        (dir.clone(), dir, "memory.max", "cpu.weight", "24")
    } else {
        (
            Path::new("/sys/fs/cgroup/memory").join(&cgroup),
            Path::new("/sys/fs/cgroup/cpu").join(&cgroup),
            "memory.limit_in_bytes",
            "cpu.shares",
            "612",
        )
    };
    let limit = std::fs::read_to_string(mem.join(limit_file)).expect("memory limit");
    assert_eq!(
        limit.trim(),
        (80u64 << 20).to_string(),
        "resources + overhead"
    );
    let shares = std::fs::read_to_string(cpu.join(cpu_file)).expect("cpu weight");
    assert_eq!(shares.trim(), weight);
    d.remove_pod(&id).await;
    assert!(!mem.exists(), "pod cgroup removed");
    e2e::pods::remove_empty_cgroup(&parent);

    let mut slice = pod_config("slice");
    if let Some(l) = slice.linux.as_mut() {
        l.cgroup_parent = "kubepods-besteffort.slice".into();
    }
    let err = d.run_pod(slice).await.expect_err("systemd slice");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("systemd"), "{}", err.message());
}

#[tokio::test]
async fn cni_pods_reach_each_other() {
    if !ready() {
        return;
    }
    let env = CniEnv::new(None);
    let bins = tempfile::tempdir().expect("bin dir");
    let d = start(&env, bins.path()).await;
    let a = d.run_pod(pod_config("cni-a")).await.expect("pod a");
    let b = d.run_pod(pod_config("cni-b")).await.expect("pod b");
    let (a_ip, a_info) = info(&d, &a).await;
    let (_, b_info) = info(&d, &b).await;
    let a_ns = PathBuf::from(a_info["netnsPath"].as_str().expect("netns a"));
    let b_ns = PathBuf::from(b_info["netnsPath"].as_str().expect("netns b"));
    listen_once_in(&a_ns, 9090, b"cni pod a").expect("listen in a");
    let target = SocketAddr::from((a_ip.parse::<Ipv4Addr>().expect("ip"), 9090));
    let got = e2e::pods::in_netns(&b_ns, move || read_from(target)).expect("b reaches a");
    assert_eq!(got, b"cni pod a");
    for id in [&a, &b] {
        d.remove_pod(id).await;
    }
    assert!(host_local_entries(env.ipam.path()).is_empty());
}
