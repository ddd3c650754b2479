//! CNI invocation against fake plugins (shell scripts) and, as root, the real
//! bridge/host-local/portmap plugins in a netns and bridge made per test.
//!
//! All tests hold one lock: they fork plugins while writing plugin scripts
//! (ETXTBSY), and the real-plugin tests share the host's iptables nat table.

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use podsandbox::cni::{
    CniCommand, CniError, CniNetwork, CniPod, CniPortMapping, CniResult, CniSettings,
};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::{Mutex, MutexGuard};

mod support;
use support::netns::TestNetns;

const REAL_BIN_DIR: &str = "/usr/lib/cni";
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(1);

static SERIAL: Mutex<()> = Mutex::const_new(());

/// Serializes a synchronous test against all others.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.blocking_lock()
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    u64::from_ne_bytes(bytes)
}

fn random_hex(len: usize) -> String {
    format!("{:016x}", random_u64())[..len].to_string()
}

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program} {args:?}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A temp dir with `conf/`, `cache/` and `bin/` (for fake plugins).
struct Dirs {
    root: TempDir,
}

impl Dirs {
    fn new() -> Dirs {
        Dirs {
            root: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, sub: &str) -> PathBuf {
        let path = self.root.path().join(sub);
        fs::create_dir_all(&path).expect("create dir");
        path
    }

    fn settings(&self, bin_dirs: Vec<PathBuf>) -> CniSettings {
        CniSettings {
            conf_dir: self.path("conf"),
            bin_dirs,
            cache_dir: self.root.path().join("cache"),
            timeout: PLUGIN_TIMEOUT,
        }
    }

    fn write_conf(&self, file: &str, conf: &Value) -> PathBuf {
        let path = self.path("conf").join(file);
        fs::write(&path, conf.to_string()).expect("write conf");
        path
    }

    /// A `/bin/sh` plugin in `bin/` that logs its calls to `log/` and then runs `body`.
    fn fake_plugin(&self, name: &str, body: &str) {
        let log = self.path("log");
        let script = format!(
            "#!/bin/sh\nlog='{log}'\ncat > \"$log/{name}.$CNI_COMMAND.stdin\"\nenv > \"$log/{name}.$CNI_COMMAND.env\"\necho \"$CNI_COMMAND {name}\" >> \"$log/calls\"\n{body}\n",
            log = log.display()
        );
        let path = self.path("bin").join(name);
        fs::write(&path, script).expect("write plugin");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod plugin");
    }

    fn calls(&self) -> Vec<String> {
        let calls = fs::read_to_string(self.path("log").join("calls")).unwrap_or_default();
        calls.lines().map(str::to_string).collect()
    }

    fn logged_stdin(&self, plugin: &str, command: &str) -> Value {
        let path = self.path("log").join(format!("{plugin}.{command}.stdin"));
        let text = fs::read_to_string(&path).expect("read logged stdin");
        serde_json::from_str(&text).expect("logged stdin is JSON")
    }

    fn logged_env(&self, plugin: &str, command: &str) -> String {
        let path = self.path("log").join(format!("{plugin}.{command}.env"));
        fs::read_to_string(path).expect("read logged env")
    }
}

fn fake_pod<'a>(id: &'a str, ports: &'a [CniPortMapping]) -> CniPod<'a> {
    CniPod {
        id,
        netns: Path::new("/run/netns/does-not-matter"),
        ifname: "eth0",
        name: "web-0",
        namespace: "shop",
        uid: "0f6f8c2e-uid",
        port_mappings: ports,
    }
}

fn fake_result(address: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
        "ips": [{"address": address, "gateway": "10.88.1.1", "interface": 0}]
    })
}

fn load(settings: &CniSettings) -> CniNetwork {
    CniNetwork::load(settings)
        .expect("load config")
        .expect("a config exists")
}

fn two_fake_plugins(dirs: &Dirs, version: &str) -> CniSettings {
    dirs.fake_plugin(
        "fake-a",
        &format!(
            "[ \"$CNI_COMMAND\" = ADD ] && echo '{}'\nexit 0",
            fake_result("10.88.1.5/24")
        ),
    );
    dirs.fake_plugin(
        "fake-b",
        &format!(
            "[ \"$CNI_COMMAND\" = ADD ] && echo '{}'\nexit 0",
            fake_result("10.88.1.6/24")
        ),
    );
    dirs.write_conf(
        "10-fake.conflist",
        &json!({
            "cniVersion": version,
            "name": "fakenet",
            "plugins": [
                {"type": "fake-a", "name": "overridden", "cniVersion": "0.0.1", "knob": 1},
                {"type": "fake-b", "capabilities": {"portMappings": true}}
            ]
        }),
    );
    dirs.settings(vec![dirs.path("bin")])
}

#[test]
fn load_picks_lexicographically_first_config_and_wraps_conf() {
    let _serial = serial();
    let dirs = Dirs::new();
    let settings = dirs.settings(vec![]);
    assert!(CniNetwork::load(&settings).expect("empty dir").is_none());
    dirs.write_conf("notes.txt", &json!({"not": "a config"}));
    dirs.write_conf(
        "20-b.conflist",
        &json!({"cniVersion": "1.0.0", "name": "b", "plugins": [{"type": "bridge"}]}),
    );
    dirs.write_conf(
        "10-a.conf",
        &json!({"cniVersion": "0.4.0", "name": "a", "type": "bridge"}),
    );
    let network = load(&settings);
    assert_eq!(network.name(), "a");
    assert_eq!(network.cni_version(), "0.4.0");
}

#[test]
fn load_of_missing_dir_is_none() {
    let _serial = serial();
    let dirs = Dirs::new();
    let mut settings = dirs.settings(vec![]);
    settings.conf_dir = dirs.root.path().join("absent");
    assert!(CniNetwork::load(&settings).expect("missing dir").is_none());
}

#[test]
fn malformed_config_error_names_the_file() {
    let _serial = serial();
    let dirs = Dirs::new();
    let path = dirs.path("conf").join("05-broken.conflist");
    fs::write(&path, "{\"name\": ").expect("write");
    dirs.write_conf(
        "10-fine.conflist",
        &json!({"cniVersion": "1.0.0", "name": "fine", "plugins": [{"type": "bridge"}]}),
    );
    let err = CniNetwork::load(&dirs.settings(vec![])).expect_err("broken JSON");
    assert!(
        matches!(&err, CniError::Config { path: p, .. } if *p == path),
        "{err}"
    );
    assert!(err.to_string().contains("05-broken.conflist"), "{err}");
}

#[test]
fn config_missing_fields_or_unsupported_version_is_rejected() {
    let _serial = serial();
    let dirs = Dirs::new();
    dirs.write_conf(
        "10-x.conflist",
        &json!({"cniVersion": "1.0.0", "name": "x"}),
    );
    let err = CniNetwork::load(&dirs.settings(vec![])).expect_err("no plugins");
    assert!(err.to_string().contains("10-x.conflist"), "{err}");
    assert!(err.to_string().contains("\"plugins\""), "{err}");

    dirs.write_conf(
        "10-x.conflist",
        &json!({"cniVersion": "0.2.0", "name": "x", "plugins": [{"type": "bridge"}]}),
    );
    let err = CniNetwork::load(&dirs.settings(vec![])).expect_err("old version");
    assert!(
        err.to_string().contains("unsupported cniVersion \"0.2.0\""),
        "{err}"
    );
}

#[tokio::test]
async fn add_injects_list_fields_prev_result_runtime_config_and_env() {
    let _serial = SERIAL.lock().await;
    let dirs = Dirs::new();
    let network = load(&two_fake_plugins(&dirs, "1.0.0"));
    let ports = [CniPortMapping {
        host_port: 8080,
        container_port: 80,
        protocol: "TCP".into(),
        host_ip: String::new(),
    }];
    let result = network.add(&fake_pod("pod1", &ports)).await.expect("ADD");

    assert_eq!(
        result.ips,
        vec!["10.88.1.6/24".parse::<IpNet>().expect("net")]
    );
    assert_eq!(result.gateway, Some("10.88.1.1".parse().expect("ip")));
    assert_eq!(result.interfaces, ["eth0"]);
    let first = dirs.logged_stdin("fake-a", "ADD");
    assert_eq!(first["name"], "fakenet");
    assert_eq!(first["cniVersion"], "1.0.0");
    assert_eq!(first["knob"], 1);
    assert!(first.get("prevResult").is_none() && first.get("runtimeConfig").is_none());
    let second = dirs.logged_stdin("fake-b", "ADD");
    assert_eq!(second["prevResult"], fake_result("10.88.1.5/24"));
    assert_eq!(
        second["runtimeConfig"],
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]})
    );
    let env = dirs.logged_env("fake-b", "ADD");
    for line in [
        "CNI_COMMAND=ADD",
        "CNI_CONTAINERID=pod1",
        "CNI_IFNAME=eth0",
        "CNI_NETNS=/run/netns/does-not-matter",
        "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=pod1;K8S_POD_UID=0f6f8c2e-uid",
        &format!("CNI_PATH={}", dirs.path("bin").display()),
    ] {
        assert!(env.lines().any(|l| l == line), "{line} missing from\n{env}");
    }
    assert_eq!(network.cached_result("pod1"), Some(result));
}

#[tokio::test]
async fn check_and_del_get_cached_result_and_del_runs_in_reverse() {
    let _serial = SERIAL.lock().await;
    let dirs = Dirs::new();
    let network = load(&two_fake_plugins(&dirs, "0.4.0"));
    let pod = fake_pod("pod2", &[]);
    network.add(&pod).await.expect("ADD");
    network.check(&pod).await.expect("CHECK");
    network.del(&pod).await.expect("DEL");

    let final_result = fake_result("10.88.1.6/24");
    for plugin in ["fake-a", "fake-b"] {
        assert_eq!(
            dirs.logged_stdin(plugin, "CHECK")["prevResult"],
            final_result
        );
        assert_eq!(dirs.logged_stdin(plugin, "DEL")["prevResult"], final_result);
    }
    let calls = dirs.calls();
    assert_eq!(
        calls,
        [
            "ADD fake-a",
            "ADD fake-b",
            "CHECK fake-a",
            "CHECK fake-b",
            "DEL fake-b",
            "DEL fake-a"
        ]
    );
    assert_eq!(network.cached_result("pod2"), None);
}

#[tokio::test]
async fn del_of_unknown_pod_calls_plugins_without_prev_result() {
    let _serial = SERIAL.lock().await;
    let dirs = Dirs::new();
    let network = load(&two_fake_plugins(&dirs, "1.0.0"));
    network
        .del(&fake_pod("never-added", &[]))
        .await
        .expect("DEL");
    assert_eq!(dirs.calls(), ["DEL fake-b", "DEL fake-a"]);
    assert!(
        dirs.logged_stdin("fake-a", "DEL")
            .get("prevResult")
            .is_none()
    );
}

#[tokio::test]
async fn check_needs_a_cached_add_and_cni_0_4_0() {
    let _serial = SERIAL.lock().await;
    let dirs = Dirs::new();
    let network = load(&two_fake_plugins(&dirs, "1.0.0"));
    let err = network
        .check(&fake_pod("pod3", &[]))
        .await
        .expect_err("no ADD");
    assert!(matches!(err, CniError::NotAttached { .. }), "{err}");

    let old = Dirs::new();
    let network = load(&two_fake_plugins(&old, "0.3.1"));
    let err = network
        .check(&fake_pod("pod3", &[]))
        .await
        .expect_err("0.3.1");
    assert!(matches!(err, CniError::CheckUnsupported { .. }), "{err}");
}

#[tokio::test]
async fn failing_plugin_reports_its_cni_error_and_add_is_rolled_back() {
    let _serial = SERIAL.lock().await;
    let dirs = Dirs::new();
    dirs.fake_plugin(
        "failer",
        "[ \"$CNI_COMMAND\" = DEL ] && exit 0\necho '{\"cniVersion\":\"1.0.0\",\"code\":7,\"msg\":\"bad config knob\",\"details\":\"knob must be 2\"}'\nexit 1",
    );
    dirs.write_conf(
        "10-f.conflist",
        &json!({"cniVersion": "1.0.0", "name": "failnet", "plugins": [{"type": "failer"}]}),
    );
    let network = load(&dirs.settings(vec![dirs.path("bin")]));
    let err = network
        .add(&fake_pod("pod4", &[]))
        .await
        .expect_err("plugin fails");
    match &err {
        CniError::Plugin {
            call,
            code,
            msg,
            details,
        } => {
            assert_eq!(
                (call.plugin.as_str(), call.command),
                ("failer", CniCommand::Add)
            );
            assert_eq!(
                (*code, msg.as_str(), details.as_str()),
                (7, "bad config knob", "knob must be 2")
            );
        }
        other => panic!("expected a CNI error, got {other:?}"),
    }
    assert!(err.to_string().contains("bad config knob"), "{err}");
    assert_eq!(dirs.calls(), ["ADD failer", "DEL failer"]);
    assert_eq!(network.cached_result("pod4"), None);
}

#[tokio::test]
async fn non_json_failure_carries_stderr() {
    let _serial = SERIAL.lock().await;
    let dirs = Dirs::new();
    dirs.fake_plugin("crasher", "echo 'segfault-ish trouble' >&2\nexit 2");
    dirs.write_conf(
        "10-c.conflist",
        &json!({"cniVersion": "1.0.0", "name": "crashnet", "plugins": [{"type": "crasher"}]}),
    );
    let network = load(&dirs.settings(vec![dirs.path("bin")]));
    let err = network
        .del(&fake_pod("pod5", &[]))
        .await
        .expect_err("plugin fails");
    match &err {
        CniError::PluginFailed { stderr, status, .. } => {
            assert_eq!(stderr, "segfault-ish trouble");
            assert_eq!(status.code(), Some(2), "{status}");
        }
        other => panic!("expected PluginFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn del_runs_every_plugin_when_one_fails_and_reports_the_failure() {
    let _serial = SERIAL.lock().await;
    let dirs = Dirs::new();
    dirs.fake_plugin("keeper", "exit 0");
    dirs.fake_plugin(
        "broken",
        "echo '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"cannot delete\"}'\nexit 1",
    );
    dirs.write_conf(
        "10-d.conflist",
        &json!({"cniVersion": "1.0.0", "name": "delnet", "plugins": [{"type": "keeper"}, {"type": "broken"}]}),
    );
    let network = load(&dirs.settings(vec![dirs.path("bin")]));
    let err = network
        .del(&fake_pod("pod6", &[]))
        .await
        .expect_err("broken DEL");
    assert!(err.to_string().contains("cannot delete"), "{err}");
    assert_eq!(
        dirs.calls(),
        ["DEL broken", "DEL keeper"],
        "the plugin before the broken one still releases what it holds"
    );
}

/// Process ids whose process group is one of `groups`, zombies excluded.
fn live_members(groups: &HashSet<i32>) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let pgrp = fields.get(2).and_then(|f| f.parse::<i32>().ok());
            fields.first() != Some(&"Z") && pgrp.is_some_and(|g| groups.contains(&g))
        })
        .collect()
}

#[tokio::test]
async fn hanging_plugin_times_out_and_leaves_no_process() {
    let _serial = SERIAL.lock().await;
    let dirs = Dirs::new();
    let pids = dirs.path("log").join("pids");
    dirs.fake_plugin(
        "hanger",
        &format!("echo $$ >> '{}'\nsleep 60", pids.display()),
    );
    dirs.write_conf(
        "10-h.conflist",
        &json!({"cniVersion": "1.0.0", "name": "hangnet", "plugins": [{"type": "hanger"}]}),
    );
    let network = load(&dirs.settings(vec![dirs.path("bin")]));

    let started = Instant::now();
    let err = network
        .del(&fake_pod("pod6", &[]))
        .await
        .expect_err("DEL hangs");
    let elapsed = started.elapsed();
    assert!(
        matches!(err, CniError::Timeout { timeout, .. } if timeout == PLUGIN_TIMEOUT),
        "{err}"
    );
    assert!(
        elapsed >= PLUGIN_TIMEOUT && elapsed < PLUGIN_TIMEOUT * 3,
        "{elapsed:?}"
    );

    // ADD times out too, and so does the DEL that rolls it back.
    let started = Instant::now();
    let err = network
        .add(&fake_pod("pod6", &[]))
        .await
        .expect_err("ADD hangs");
    assert!(matches!(err, CniError::Timeout { .. }), "{err}");
    assert!(
        started.elapsed() < PLUGIN_TIMEOUT * 4,
        "{:?}",
        started.elapsed()
    );

    let groups: HashSet<i32> = fs::read_to_string(&pids)
        .expect("plugin wrote its pid")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(groups.len(), 3, "three plugin runs");
    let deadline = Instant::now() + Duration::from_secs(2);
    while !live_members(&groups).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        live_members(&groups),
        Vec::<i32>::new(),
        "plugin processes left behind"
    );
}

#[tokio::test]
async fn missing_plugin_binary_is_a_clear_error() {
    let _serial = SERIAL.lock().await;
    let dirs = Dirs::new();
    dirs.write_conf(
        "10-m.conflist",
        &json!({"cniVersion": "1.0.0", "name": "missnet", "plugins": [{"type": "no-such-plugin"}]}),
    );
    let network = load(&dirs.settings(vec![dirs.path("bin"), dirs.path("bin2")]));
    let err = network
        .add(&fake_pod("pod7", &[]))
        .await
        .expect_err("missing");
    assert!(
        matches!(&err, CniError::PluginNotFound { plugin, .. } if plugin == "no-such-plugin"),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("no-such-plugin") && message.contains("bin2"),
        "{message}"
    );
}

#[tokio::test]
async fn invalid_pod_id_is_rejected_before_running_plugins() {
    let _serial = SERIAL.lock().await;
    let dirs = Dirs::new();
    let network = load(&two_fake_plugins(&dirs, "1.0.0"));
    let err = network
        .add(&fake_pod("../etc", &[]))
        .await
        .expect_err("bad id");
    assert!(
        matches!(
            err,
            CniError::InvalidArgument {
                field: "container id",
                ..
            }
        ),
        "{err}"
    );
    assert!(dirs.calls().is_empty());
}

// ---- real plugins: bridge + host-local + portmap, as root ----

/// Why the real-plugin tests cannot run here, if they cannot.
fn real_plugins_missing() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (netns, bridge, iptables)".into());
    }
    for tool in ["bridge", "host-local", "portmap"] {
        let path = Path::new(REAL_BIN_DIR).join(tool);
        if !path.exists() {
            return Some(format!(
                "{} missing (apt-get install containernetworking-plugins)",
                path.display()
            ));
        }
    }
    for tool in ["/usr/sbin/ip", "/usr/sbin/iptables"] {
        if !Path::new(tool).exists() {
            return Some(format!("{tool} missing"));
        }
    }
    None
}

macro_rules! require_real_plugins {
    () => {
        if let Some(reason) = real_plugins_missing() {
            eprintln!("skipping: {reason}");
            return;
        }
    };
}

/// A network namespace for one test (pinned in a temp dir, never the host's `/run/netns`),
/// removed on drop.
struct Netns {
    ns: TestNetns,
    path: PathBuf,
}

impl Netns {
    fn new() -> Netns {
        let ns = TestNetns::new().expect("create test network namespace");
        let path = ns.path().to_path_buf();
        Netns { ns, path }
    }

    fn addresses(&self, ifname: &str) -> Option<String> {
        let output = self.ns.ip(&["-4", "-o", "addr", "show", "dev", ifname]);
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// A free /24 in 10.88.100.0 - 10.88.250.0 (no route to it on the host yet).
fn free_subnet() -> Ipv4Net {
    let start = random_u64() % 151;
    for step in 0..151 {
        let octet = 100 + ((start + step) % 151) as u8;
        let subnet = Ipv4Net::new(Ipv4Addr::new(10, 88, octet, 0), 24).expect("valid /24");
        if run("ip", &["-4", "route", "show", &subnet.to_string()])
            .trim()
            .is_empty()
        {
            return subnet;
        }
    }
    panic!("no free /24 in 10.88.100.0-10.88.250.0");
}

/// One test's bridge network: conf dir, netns, bridge and IPAM dir, all removed on drop.
struct BridgeNet {
    dirs: Dirs,
    settings: CniSettings,
    bridge: String,
    subnet: Ipv4Net,
    netns: Netns,
    pod_id: String,
}

impl BridgeNet {
    fn new(version: &str) -> BridgeNet {
        let dirs = Dirs::new();
        let bridge = format!("cnitest{}", random_hex(4));
        let subnet = free_subnet();
        let conf = json!({
            "cniVersion": version,
            "name": format!("net-{bridge}"),
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": dirs.path("ipam"),
                        "ranges": [[{"subnet": subnet.to_string()}]],
                        "routes": [{"dst": "0.0.0.0/0"}]
                    }
                },
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        });
        dirs.write_conf("10-bridge.conflist", &conf);
        let settings = dirs.settings(vec![PathBuf::from(REAL_BIN_DIR)]);
        BridgeNet {
            dirs,
            settings,
            bridge,
            subnet,
            netns: Netns::new(),
            pod_id: format!("pod{}", random_hex(12)),
        }
    }

    fn pod<'a>(&'a self, ports: &'a [CniPortMapping]) -> CniPod<'a> {
        CniPod {
            id: &self.pod_id,
            netns: &self.netns.path,
            ifname: "eth0",
            name: "web-0",
            namespace: "default",
            uid: "6d1c3f0a-uid",
            port_mappings: ports,
        }
    }

    fn gateway(&self) -> IpAddr {
        IpAddr::V4(self.subnet.hosts().next().expect("subnet has hosts"))
    }

    fn nat_rules_mentioning_pod(&self) -> Vec<String> {
        run("iptables", &["-w", "-t", "nat", "-S"])
            .lines()
            .filter(|l| l.contains(&self.pod_id))
            .map(str::to_string)
            .collect()
    }

    fn assert_attached(&self, result: &CniResult) -> IpAddr {
        let ip = result.ips.first().expect("ADD returned an IP");
        assert!(
            IpNet::V4(self.subnet).contains(&ip.addr()),
            "{ip} not in {}",
            self.subnet
        );
        assert_eq!(ip.prefix_len(), 24);
        assert_eq!(result.gateway, Some(self.gateway()));
        assert!(
            result.interfaces.iter().any(|i| i == "eth0"),
            "{:?}",
            result.interfaces
        );
        let addrs = self
            .netns
            .addresses("eth0")
            .expect("eth0 exists in the netns");
        assert!(addrs.contains(&ip.to_string()), "{ip} not on eth0: {addrs}");
        ip.addr()
    }
}

impl Drop for BridgeNet {
    /// Best-effort DEL (also after a failed assertion), then the bridge itself.
    fn drop(&mut self) {
        let settings = self.settings.clone();
        let (id, netns) = (self.pod_id.clone(), self.netns.path.clone());
        let cleanup = thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let (Ok(runtime), Ok(Some(network))) = (runtime, CniNetwork::load(&settings)) else {
                return;
            };
            let pod = CniPod {
                id: &id,
                netns: &netns,
                ifname: "eth0",
                name: "web-0",
                namespace: "default",
                uid: "6d1c3f0a-uid",
                port_mappings: &[],
            };
            let _ = runtime.block_on(network.del(&pod));
        });
        let _ = cleanup.join();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

async fn add_check_del_roundtrip(version: &str) {
    let net = BridgeNet::new(version);
    let network = load(&net.settings);
    let pod = net.pod(&[]);
    let result = network.add(&pod).await.expect("ADD");
    net.assert_attached(&result);
    assert_eq!(network.cached_result(&net.pod_id), Some(result));

    network.check(&pod).await.expect("CHECK");
    network.del(&pod).await.expect("DEL");
    assert_eq!(net.netns.addresses("eth0"), None, "eth0 still in the netns");
    assert_eq!(network.cached_result(&net.pod_id), None);
    network.del(&pod).await.expect("second DEL");
}

#[tokio::test]
async fn bridge_add_check_del_with_cni_1_0_0() {
    let _serial = SERIAL.lock().await;
    require_real_plugins!();
    add_check_del_roundtrip("1.0.0").await;
}

#[tokio::test]
async fn bridge_add_check_del_with_cni_0_4_0() {
    let _serial = SERIAL.lock().await;
    require_real_plugins!();
    add_check_del_roundtrip("0.4.0").await;
}

#[tokio::test]
async fn del_after_restart_uses_cached_config_and_releases_ip() {
    let _serial = SERIAL.lock().await;
    require_real_plugins!();
    let net = BridgeNet::new("1.0.0");
    let ip = {
        let network = load(&net.settings);
        let result = network.add(&net.pod(&[])).await.expect("ADD");
        net.assert_attached(&result)
    };
    let lease = net
        .dirs
        .path("ipam")
        .join(format!("net-{}", net.bridge))
        .join(ip.to_string());
    assert!(
        lease.exists(),
        "host-local lease {} missing",
        lease.display()
    );

    // The config on disk changes to one that cannot work; DEL must use the cached one.
    net.dirs.write_conf(
        "10-bridge.conflist",
        &json!({"cniVersion": "1.0.0", "name": format!("net-{}", net.bridge), "plugins": [{"type": "no-such-plugin"}]}),
    );
    let restarted = load(&net.settings);
    assert!(
        restarted.cached_result(&net.pod_id).is_some(),
        "cache survives the restart"
    );
    restarted
        .del(&net.pod(&[]))
        .await
        .expect("DEL after restart");
    assert_eq!(net.netns.addresses("eth0"), None, "eth0 still in the netns");
    assert!(!lease.exists(), "IP not released");
    assert_eq!(restarted.cached_result(&net.pod_id), None);
}

/// Accepts one connection on `port` inside the netns and answers "hello".
fn serve_hello_in_netns(netns: &Path, port: u16) -> thread::JoinHandle<Result<(), String>> {
    let netns = netns.to_path_buf();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = thread::spawn(move || {
        let listener = bind_in_netns(&netns, port);
        let _ = ready_tx.send(());
        let listener = listener?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    return stream.write_all(b"hello").map_err(|e| e.to_string());
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline =>
                {
                    thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        }
    });
    let _ = ready_rx.recv_timeout(Duration::from_secs(5));
    server
}

fn bind_in_netns(netns: &Path, port: u16) -> Result<TcpListener, String> {
    let file = fs::File::open(netns).map_err(|e| format!("open {}: {e}", netns.display()))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("setns: {e}"))?;
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).map_err(|e| format!("bind: {e}"))
}

#[tokio::test]
async fn host_port_reaches_pod_through_portmap_and_del_removes_rules() {
    let _serial = SERIAL.lock().await;
    require_real_plugins!();
    let net = BridgeNet::new("1.0.0");
    let network = load(&net.settings);
    let host_port = 20000 + (random_u64() % 10000) as u16;
    let ports = [CniPortMapping {
        host_port,
        container_port: 8080,
        protocol: "tcp".into(),
        host_ip: String::new(),
    }];
    let result = network
        .add(&net.pod(&ports))
        .await
        .expect("ADD with port mapping");
    net.assert_attached(&result);
    assert!(
        !net.nat_rules_mentioning_pod().is_empty(),
        "portmap made no DNAT rules"
    );

    let server = serve_hello_in_netns(&net.netns.path, 8080);
    let target = SocketAddr::new(net.gateway(), host_port);
    let reply = tokio::task::spawn_blocking(move || -> Result<String, String> {
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(5))
            .map_err(|e| format!("connect {target}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let mut reply = String::new();
        stream
            .read_to_string(&mut reply)
            .map_err(|e| format!("read: {e}"))?;
        Ok(reply)
    })
    .await
    .expect("client thread");
    let served = server.join().expect("server thread");
    assert_eq!(reply, Ok("hello".to_string()), "server: {served:?}");

    network.del(&net.pod(&ports)).await.expect("DEL");
    assert_eq!(net.nat_rules_mentioning_pod(), Vec::<String>::new());
}
