//! An installed berth (the Debian package, or the Helm chart's installer writing into a scratch
//! host root) serves pods through its systemd unit's `ExecStart`, run as systemd would run it.
//!
//! There is no systemd as PID 1 on the CI machines, so the test plays its part: it reads
//! `berth.service`, starts the `ExecStart` command with a clean environment, the unit's
//! `Environment=` and a `NOTIFY_SOCKET` it listens on, waits for `READY=1`, runs a pod, stops
//! berthd with SIGTERM (what `KillMode=process` sends to the main process only), checks the pod
//! survived, starts the command again and removes the pod through it.
//!
//! The daemon must not collide with anything on the machine: the command gets
//! `BERTH_CONFIG=<copy of the installed berth.toml>` in which only the socket, the state
//! directories, the metrics address, the network names and the test registry are replaced by
//! private ones. These tests are ignored in the plain suite; `scripts/test-packaging.sh` runs them
//! after installing the package (`BERTH_UNIT_FILE`, and `BERTH_HOST_ROOT` for a scratch root).

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e::containers::{Env, read_log};
use e2e::daemon::Berthd;
use e2e::images::push_test_images;
use e2e::pods::{TestNetwork, process_alive};
use e2e::registry::Registry;
use nix::sys::signal::Signal;
use proto::cri;

const NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);

/// The `[Service]` settings of a unit file that matter here (last assignment wins, as in
/// systemd; `Environment=` accumulates).
struct Unit {
    settings: HashMap<String, String>,
    environment: Vec<(String, String)>,
}

impl Unit {
    fn read(path: &Path) -> Unit {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read unit {}: {e}", path.display()));
        let mut section = String::new();
        let mut settings = HashMap::new();
        let mut environment = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if line.starts_with('[') {
                section = line.to_string();
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                panic!("{}: not a setting: {line}", path.display());
            };
            if section != "[Service]" {
                continue;
            }
            if key == "Environment" {
                for assignment in value.split_whitespace() {
                    let a = assignment.trim_matches('"');
                    if let Some((k, v)) = a.split_once('=') {
                        environment.push((k.to_string(), v.to_string()));
                    }
                }
            } else {
                settings.insert(key.to_string(), value.to_string());
            }
        }
        Unit {
            settings,
            environment,
        }
    }

    fn get(&self, key: &str) -> &str {
        self.settings.get(key).map(String::as_str).unwrap_or("")
    }

    /// `ExecStart`'s argv, without systemd's `-@:+!` prefixes.
    fn exec_start(&self) -> Vec<String> {
        let line = self.get("ExecStart");
        let argv: Vec<String> = line
            .trim_start_matches(['-', '@', ':', '+', '!'])
            .split_whitespace()
            .map(str::to_string)
            .collect();
        assert!(!argv.is_empty(), "the unit has no ExecStart");
        argv
    }
}

/// What the test gives the unit's command.
struct Installed {
    unit: Unit,
    host_root: PathBuf,
}

impl Installed {
    fn from_env() -> Installed {
        let unit_file = std::env::var_os("BERTH_UNIT_FILE").expect(
            "BERTH_UNIT_FILE names the installed berth.service (scripts/test-packaging.sh sets it)",
        );
        let host_root = std::env::var_os("BERTH_HOST_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        Installed {
            unit: Unit::read(Path::new(&unit_file)),
            host_root,
        }
    }

    fn under_root(&self, path: &str) -> PathBuf {
        self.host_root.join(path.trim_start_matches('/'))
    }

    /// The unit's command as systemd would start it, with the test's config and notify socket.
    fn command(&self, config: &Path, notify: &Path) -> Command {
        let argv = self.unit.exec_start();
        for arg in &argv[1..] {
            for pinned in ["--config", "--socket", "--root-dir", "--state-dir"] {
                assert!(
                    !arg.starts_with(pinned),
                    "ExecStart sets {pinned}: the test could not keep its daemon private"
                );
            }
        }
        let mut cmd = Command::new(self.under_root(&argv[0]));
        cmd.args(&argv[1..])
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .envs(self.unit.environment.iter().map(|(k, v)| (k, v)))
            .env("NOTIFY_SOCKET", notify)
            .env("BERTH_CONFIG", config);
        cmd
    }

    /// The installed `/etc/berth/berth.toml` with the test's private socket, state, network
    /// and registry.
    fn private_config(&self, dir: &Path, net: &TestNetwork, cni: &Path, registry: &str) -> String {
        let installed = self.under_root("/etc/berth/berth.toml");
        let text = std::fs::read_to_string(&installed)
            .unwrap_or_else(|e| panic!("read {}: {e}", installed.display()));
        let mut config: toml::Table = text
            .parse()
            .unwrap_or_else(|e| panic!("{} is not TOML: {e}", installed.display()));
        let path = |p: &str| toml::Value::String(dir.join(p).display().to_string());
        config.insert("socket".into(), path("berth.sock"));
        config.insert("root_dir".into(), path("root"));
        config.insert("state_dir".into(), path("state"));
        let table = |config: &mut toml::Table, name: &str| -> toml::Table {
            match config.remove(name) {
                Some(toml::Value::Table(t)) => t,
                _ => toml::Table::new(),
            }
        };
        let mut metrics = table(&mut config, "metrics");
        metrics.insert("address".into(), "127.0.0.1:0".into());
        config.insert("metrics".into(), metrics.into());
        let mut network = table(&mut config, "network");
        network.insert("bridge".into(), net.bridge.clone().into());
        network.insert("pod_cidr".into(), net.cidr().into());
        network.insert("nft_table".into(), net.nft_table.clone().into());
        config.insert("network".into(), network.into());
        let mut cni_table = table(&mut config, "cni");
        cni_table.insert("conf_dir".into(), cni.display().to_string().into());
        config.insert("cni".into(), cni_table.into());
        let mut reg = table(&mut config, "registry");
        reg.insert(
            "insecure".into(),
            toml::Value::Array(vec![registry.to_string().into()]),
        );
        config.insert("registry".into(), reg.into());
        toml::to_string(&config).expect("serialize config")
    }
}

/// Waits for a datagram on the notify socket holding `state` (e.g. `READY=1`).
async fn wait_notify(sock: &UnixDatagram, state: &'static str) -> String {
    let sock = sock.try_clone().expect("clone notify socket");
    tokio::task::spawn_blocking(move || {
        sock.set_read_timeout(Some(NOTIFY_TIMEOUT))
            .expect("read timeout");
        let mut buf = [0u8; 4096];
        loop {
            let n = sock.recv(&mut buf).unwrap_or_else(|e| {
                panic!("no {state} on NOTIFY_SOCKET within {NOTIFY_TIMEOUT:?}: {e}")
            });
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            if msg.lines().any(|l| l == state) {
                return msg;
            }
        }
    })
    .await
    .expect("notify wait")
}

async fn container_pid(env: &Env, id: &str) -> u32 {
    let resp = env.status_full(id).await;
    let info: serde_json::Value =
        serde_json::from_str(resp.info.get("info").expect("verbose info")).expect("info JSON");
    info["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .expect("container pid")
}

#[tokio::test]
#[ignore = "needs an installed berth: run by scripts/test-packaging.sh"]
async fn installed_unit_serves_a_pod_and_keeps_it_across_a_restart() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the installed berth runs as root"
    );
    let installed = Installed::from_env();
    let unit = &installed.unit;
    assert_eq!(unit.get("Type"), "notify", "berth.service Type");
    assert_eq!(unit.get("KillMode"), "process", "berth.service KillMode");
    assert_eq!(unit.get("Delegate"), "yes", "berth.service Delegate");

    let registry = Registry::start().expect("registry");
    let images = push_test_images(&registry).await.expect("push images");
    let image = images.get("oci").expect("oci").reference.clone();
    let net = TestNetwork::new();
    let cni = tempfile::tempdir().expect("cni dir");
    let tmp = tempfile::Builder::new()
        .prefix("berth-pkg-")
        .tempdir()
        .expect("temp dir");
    let dir = tmp.path().to_path_buf();
    let config = installed.private_config(&dir, &net, cni.path(), &registry.host());
    let config_file = dir.join("berth.toml");
    std::fs::write(&config_file, &config).expect("write config");
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    let (socket, root_dir, state_dir) =
        (dir.join("berth.sock"), dir.join("root"), dir.join("state"));

    let d = Berthd::spawn_command(
        installed.command(&config_file, &notify_path),
        &dir,
        Some(tmp),
        socket.clone(),
        root_dir.clone(),
        state_dir.clone(),
    )
    .expect("start the unit's ExecStart");
    let ready = wait_notify(&notify, "READY=1").await;
    let pid = d.pid().expect("berthd pid");
    assert!(
        ready.contains(&format!("MAINPID={pid}")),
        "READY=1 names berthd's pid {pid}: {ready:?}"
    );
    // READY=1 means the socket serves: no retry here.
    let version = d
        .runtime()
        .await
        .expect("client")
        .version(cri::VersionRequest::default())
        .await
        .expect("Version right after READY=1")
        .into_inner();
    assert_eq!(version.runtime_name, "berth");
    eprintln!(
        "installed berthd {} (pid {pid}) sent {ready:?}",
        version.runtime_version
    );

    let mut env = Env {
        d,
        registry,
        net,
        cni,
        logs: tempfile::tempdir().expect("log dir"),
        image: image.clone(),
        config,
    };
    env.pull(&image)
        .await
        .expect("pull through the installed berthd");
    let pc = env.pod("pkg");
    let pod = env.run_pod(&pc).await;
    let c = env.container(
        "hello",
        &[
            "sh",
            "-c",
            "echo hello from the installed berth; exec sleep 600",
        ],
    );
    let log = PathBuf::from(&pc.log_directory).join(&c.log_path);
    let ctr = env.run(&pod, &pc, c).await;
    let ctr_pid = container_pid(&env, &ctr).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !read_log(&log)
        .iter()
        .any(|l| l == "hello from the installed berth")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no log line in {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // systemctl stop/restart with KillMode=process: SIGTERM to berthd alone.
    let status = env
        .d
        .stop_with(Signal::SIGTERM, Duration::from_secs(30))
        .await
        .expect("berthd stops on SIGTERM");
    assert!(status.success(), "berthd exit status on SIGTERM: {status}");
    wait_notify(&notify, "STOPPING=1").await;
    assert!(
        process_alive(ctr_pid),
        "the container (pid {ctr_pid}) survives berthd's stop"
    );

    let d2 = Berthd::spawn_command(
        installed.command(&config_file, &notify_path),
        &dir,
        None,
        socket,
        root_dir,
        state_dir,
    )
    .expect("start the unit's ExecStart again");
    wait_notify(&notify, "READY=1").await;
    let mut rt = d2.runtime().await.expect("client");
    let st = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: ctr.clone(),
            verbose: false,
        })
        .await
        .expect("ContainerStatus after restart")
        .into_inner()
        .status
        .expect("status");
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .expect("StopPodSandbox");
    d2.remove_pod(&pod).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while process_alive(ctr_pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the container (pid {ctr_pid}) outlived its pod"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(d2.pod_ids().await.is_empty());
}
