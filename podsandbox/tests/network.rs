//! Integration tests of the built-in bridge network. They need root, `ip` and
//! `nft`; each test owns its bridge, /24 inside 10.88.0.0/16, nft table, state
//! dir and network namespaces, and removes them even when it fails.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use podsandbox::network::{BridgeConfig, BridgeNetwork, NetworkError, PortMapping, Protocol};
use sha2::{Digest, Sha256};

mod support;
use support::netns::{TestNetns, ip_in_path};

const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// True when the host can run these tests; on CI a missing feature is a failure.
fn can_run() -> bool {
    let missing = if !nix::unistd::geteuid().is_root() {
        Some("not running as root")
    } else if !tool_works("nft", &["--version"]) {
        Some("`nft` is not installed (Debian package nftables)")
    } else if !tool_works("ip", &["-V"]) {
        Some("`ip` is not installed (Debian package iproute2)")
    } else {
        None
    };
    match missing {
        None => true,
        Some(reason) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("network tests must run on CI: {reason}")
        }
        Some(reason) => {
            eprintln!("skipping network test: {reason}");
            false
        }
    }
}

fn tool_works(tool: &str, args: &[&str]) -> bool {
    Command::new(tool)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn random_u32() -> u32 {
    let mut buf = [0u8; 4];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    u32::from_le_bytes(buf)
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd} {args:?}: {e}"))
}

fn stdout_of(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A /24 in 10.88.100-250.0 not used by another test of this process and
/// holding no route or address on the host (a covering /16 is fine: ours is
/// more specific).
fn free_subnet() -> ipnet::Ipv4Net {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let start = random_u32() % 151;
    let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..151 {
        let octet = 100 + NEXT.fetch_add(1, Ordering::SeqCst) % 151;
        let cidr = format!("10.88.{octet}.0/24");
        let args = ["-4", "route", "show", "table", "all", "root", &cidr];
        if stdout_of("ip", &args).trim().is_empty() {
            return cidr.parse().expect("valid cidr");
        }
    }
    panic!("no free /24 left in 10.88.100-250.0/24");
}

/// Test fixture owning a bridge network and namespaces; Drop removes them all.
struct TestNet {
    net: Arc<BridgeNetwork>,
    cfg: BridgeConfig,
    tag: String,
    namespaces: Vec<TestNetns>,
    state: tempfile::TempDir,
}

impl TestNet {
    fn new() -> TestNet {
        TestNet::with_prefix(24)
    }

    /// A network on the first `prefix_len` bits of a free /24 (at least 24).
    fn with_prefix(prefix_len: u8) -> TestNet {
        let tag = format!("{:04x}", random_u32() & 0xffff);
        let state = tempfile::tempdir().expect("create state dir");
        let subnet = free_subnet();
        let cfg = BridgeConfig {
            bridge: format!("btest{tag}"),
            pod_cidr: ipnet::Ipv4Net::new(subnet.network(), prefix_len).expect("prefix length"),
            state_dir: state.path().join("network"),
            nft_table: format!("berth_test_{tag}"),
        };
        let net = Arc::new(BridgeNetwork::new(cfg.clone()).expect("valid config"));
        TestNet {
            net,
            cfg,
            tag,
            namespaces: Vec::new(),
            state,
        }
    }

    /// Creates a namespace pinned in a temp dir (never the host's `/run/netns`); returns its
    /// bind-mounted file.
    fn add_netns(&mut self) -> PathBuf {
        let ns = TestNetns::new().expect("create test network namespace");
        let path = ns.path().to_path_buf();
        self.namespaces.push(ns);
        path
    }

    fn pod_id(&self, what: &str) -> String {
        format!("{what}-{}-{:08x}", self.tag, random_u32())
    }

    fn port(&self) -> u16 {
        20000 + (random_u32() % 30000) as u16
    }

    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cfg.pod_cidr.network()) + 1)
    }

    fn ipam_files(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.cfg.state_dir.join("ipam")) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.parse::<Ipv4Addr>().is_ok())
            .collect()
    }

    fn nft_table(&self) -> Output {
        run("nft", &["list", "table", "ip", &self.cfg.nft_table])
    }

    /// Asserts that nothing of `pod_id` is left: veth, address file, nft rules.
    fn assert_pod_gone(&self, pod_id: &str) {
        let veth = host_veth(pod_id);
        assert!(
            !run("ip", &["link", "show", &veth]).status.success(),
            "{veth} still exists"
        );
        for file in self.ipam_files() {
            let owner = std::fs::read_to_string(self.cfg.state_dir.join("ipam").join(&file));
            assert_ne!(
                owner.ok().as_deref(),
                Some(pod_id),
                "IP file {file} still held"
            );
        }
        let table = String::from_utf8_lossy(&self.nft_table().stdout).into_owned();
        assert!(
            !table.contains(pod_id),
            "nft rules of {pod_id} remain:\n{table}"
        );
        assert!(self.net.attachment(pod_id).is_none());
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let net = Arc::clone(&self.net);
        let teardown = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime
                .block_on(net.teardown_host())
                .map_err(io::Error::other)
        });
        if let Ok(Err(e)) = teardown.join() {
            eprintln!("teardown_host of {}: {e}", self.cfg.bridge);
        }
        let _ = run("ip", &["link", "delete", &self.cfg.bridge]);
        let _ = run("nft", &["delete", "table", "ip", &self.cfg.nft_table]);
    }
}

/// Host veth name as documented: `bth` + 12 hex chars of SHA-256(pod id).
fn host_veth(pod_id: &str) -> String {
    let digest = Sha256::digest(pod_id.as_bytes());
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("bth{hex}")
}

/// Runs `f` on a fresh thread that first enters the namespace at `netns`.
fn in_netns<T: Send + 'static>(
    netns: Option<&Path>,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let netns = netns.map(Path::to_path_buf);
    std::thread::spawn(move || {
        if let Some(path) = netns {
            let file = File::open(&path)?;
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)?;
        }
        f()
    })
    .join()
    .map_err(|_| io::Error::other("namespace thread panicked"))?
}

/// A TCP listener on `0.0.0.0:port` inside the namespace.
fn listen_in(netns: &Path, port: u16) -> TcpListener {
    in_netns(Some(netns), move || TcpListener::bind(("0.0.0.0", port))).expect("listen in pod")
}

/// Accepts `count` connections (bounded by a deadline), answering each with `reply`.
fn serve(listener: TcpListener, reply: &'static str, count: usize) -> JoinHandle<io::Result<()>> {
    std::thread::spawn(move || {
        listener.set_nonblocking(true)?;
        let deadline = Instant::now() + IO_TIMEOUT * 2;
        let mut served = 0;
        while served < count {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(false)?;
                    stream.write_all(reply.as_bytes())?;
                    served += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
}

/// Connects to `addr` from the namespace (host when `None`) and reads the reply.
fn fetch(netns: Option<&Path>, addr: SocketAddr) -> io::Result<String> {
    in_netns(netns, move || {
        let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        Ok(reply)
    })
}

fn finish(server: JoinHandle<io::Result<()>>) {
    server
        .join()
        .expect("server thread")
        .expect("server accepted every connection");
}

/// `ip args…` inside a namespace created by [`TestNet::add_netns`].
fn ip_in(netns: &Path, args: &[&str]) -> String {
    let out = ip_in_path(netns, args);
    assert!(
        out.status.success(),
        "ip {args:?} in {}: {}",
        netns.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn link_is_up(netns: &Path, dev: &str) -> bool {
    let line = ip_in(netns, &["-o", "link", "show", "dev", dev]);
    let flags = line
        .split('<')
        .nth(1)
        .and_then(|s| s.split('>').next())
        .unwrap_or("");
    flags.split(',').any(|f| f == "UP")
}

fn tcp(host_port: u16, container_port: u16, host_ip: Option<Ipv4Addr>) -> PortMapping {
    PortMapping {
        protocol: Protocol::Tcp,
        container_port,
        host_port,
        host_ip,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_two_pods_gives_addresses_routes_and_connectivity() {
    if !can_run() {
        return;
    }
    let mut t = TestNet::new();
    let (ns_a, ns_b) = (t.add_netns(), t.add_netns());
    let (pod_a, pod_b) = (t.pod_id("a"), t.pod_id("b"));
    let a = t.net.attach(&pod_a, &ns_a, &[]).await.expect("attach a");
    let b = t.net.attach(&pod_b, &ns_b, &[]).await.expect("attach b");

    assert_ne!(a.ip, b.ip);
    for (att, ns) in [(&a, &ns_a), (&b, &ns_b)] {
        assert!(t.cfg.pod_cidr.contains(&att.ip) && att.ip != t.gateway());
        assert_eq!(
            (att.prefix_len, att.gateway, att.interface.as_str()),
            (24, t.gateway(), "eth0")
        );
        assert!(
            ip_in(ns, &["-o", "-4", "addr", "show", "dev", "eth0"])
                .contains(&format!("inet {}/24", att.ip))
        );
        assert!(
            link_is_up(ns, "eth0") && link_is_up(ns, "lo"),
            "eth0 and lo must be up"
        );
        let route = ip_in(ns, &["route", "show", "default"]);
        assert!(
            route.contains(&format!("default via {} dev eth0", t.gateway())),
            "route: {route}"
        );
    }
    assert_eq!(t.net.attachment(&pod_a), Some(a.clone()));
    let mut attached = t.net.list_attached();
    attached.sort();
    let mut expected = vec![pod_a.clone(), pod_b.clone()];
    expected.sort();
    assert_eq!(attached, expected);

    let server = serve(listen_in(&ns_a, 8080), "hello from a", 2);
    let pod_to_pod = fetch(Some(&ns_b), SocketAddr::from((a.ip, 8080)));
    let host_to_pod = fetch(None, SocketAddr::from((a.ip, 8080)));
    assert_eq!(pod_to_pod.expect("pod b reaches pod a"), "hello from a");
    assert_eq!(
        host_to_pod.expect("host reaches pod a via the bridge"),
        "hello from a"
    );
    finish(server);

    t.net.detach(&pod_a, Some(&ns_a)).await.expect("detach a");
    t.net.detach(&pod_b, Some(&ns_b)).await.expect("detach b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_host_veth_of_the_same_pod_is_replaced() {
    if !can_run() {
        return;
    }
    let mut t = TestNet::new();
    let ns = t.add_netns();
    let pod = t.pod_id("stale");
    // What a crash between attach and detach could leave: a device with the host end's name.
    let veth = host_veth(&pod);
    let peer = format!("bsp{}", &veth[3..]);
    let made = run(
        "ip",
        &["link", "add", &veth, "type", "veth", "peer", "name", &peer],
    );
    assert!(made.status.success(), "{made:?}");
    let a = t
        .net
        .attach(&pod, &ns, &[])
        .await
        .expect("attach over a stale veth");
    let kind = stdout_of("ip", &["-d", "link", "show", &veth]);
    assert!(
        !run("ip", &["link", "show", &peer]).status.success(),
        "the stale pair is left"
    );
    assert!(
        kind.contains(&format!("master {}", t.cfg.bridge)),
        "host end not on the bridge: {kind}"
    );
    assert!(ip_in(&ns, &["-o", "-4", "addr", "show", "dev", "eth0"]).contains(&a.ip.to_string()));
    t.net.detach(&pod, Some(&ns)).await.expect("detach");
    t.assert_pod_gone(&pod);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_deleted_after_the_first_pod_is_made_again() {
    if !can_run() {
        return;
    }
    let mut t = TestNet::new();
    let (ns1, ns2) = (t.add_netns(), t.add_netns());
    let (first, second) = (t.pod_id("before"), t.pod_id("after"));
    t.net.attach(&first, &ns1, &[]).await.expect("first attach");
    // Someone deletes the bridge berthd found (and remembers) for the first pod.
    let deleted = run("ip", &["link", "del", &t.cfg.bridge]);
    assert!(deleted.status.success(), "{deleted:?}");
    let a = t
        .net
        .attach(&second, &ns2, &[])
        .await
        .expect("attach after the bridge was deleted");
    let kind = stdout_of("ip", &["-d", "link", "show", &host_veth(&second)]);
    assert!(
        kind.contains(&format!("master {}", t.cfg.bridge)),
        "host end not on a new bridge: {kind}"
    );
    let gateway = stdout_of("ip", &["-o", "-4", "addr", "show", "dev", &t.cfg.bridge]);
    assert!(
        gateway.contains(&format!("{}/", t.gateway())),
        "bridge without its gateway address: {gateway}"
    );
    assert!(ip_in(&ns2, &["-o", "-4", "addr", "show", "dev", "eth0"]).contains(&a.ip.to_string()));
    for (pod, ns) in [(&first, &ns1), (&second, &ns2)] {
        t.net.detach(pod, Some(ns)).await.expect("detach");
        t.assert_pod_gone(pod);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_port_on_loopback_reaches_pod() {
    if !can_run() {
        return;
    }
    let mut t = TestNet::new();
    let ns = t.add_netns();
    let pod = t.pod_id("hostport");
    let hp_local = t.port();
    let hp_any = 20000 + (hp_local - 20000 + 1) % 30000;
    let ports = [
        tcp(hp_local, 8080, Some(Ipv4Addr::LOCALHOST)),
        tcp(hp_any, 8080, None),
    ];
    t.net
        .attach(&pod, &ns, &ports)
        .await
        .expect("attach with host ports");

    let server = serve(listen_in(&ns, 8080), "hello via hostport", 3);
    let on_loopback = fetch(None, SocketAddr::from((Ipv4Addr::LOCALHOST, hp_local)));
    let on_any = fetch(None, SocketAddr::from((Ipv4Addr::LOCALHOST, hp_any)));
    let hairpin = fetch(Some(&ns), SocketAddr::from((t.gateway(), hp_any)));
    assert_eq!(
        on_loopback.expect("127.0.0.1 hostPort"),
        "hello via hostport"
    );
    assert_eq!(
        on_any.expect("wildcard hostPort via 127.0.0.1"),
        "hello via hostport"
    );
    assert_eq!(
        hairpin.expect("pod reaches itself via its hostPort"),
        "hello via hostport"
    );
    finish(server);

    t.net.detach(&pod, Some(&ns)).await.expect("detach");
    t.assert_pod_gone(&pod);
    let after = fetch(None, SocketAddr::from((Ipv4Addr::LOCALHOST, hp_local)));
    assert!(after.is_err(), "hostPort still answers after detach");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_removes_veth_ip_file_and_rules_and_is_idempotent() {
    if !can_run() {
        return;
    }
    let mut t = TestNet::new();
    let ns = t.add_netns();
    let pod = t.pod_id("detach");
    let att = t
        .net
        .attach(&pod, &ns, &[tcp(t.port(), 80, None)])
        .await
        .expect("attach");
    assert_eq!(att.host_veth, host_veth(&pod));
    let master = stdout_of("ip", &["-o", "link", "show", "dev", &att.host_veth]);
    assert!(
        master.contains(&format!("master {}", t.cfg.bridge)),
        "veth not on bridge: {master}"
    );
    assert_eq!(t.ipam_files(), vec![att.ip.to_string()]);
    let table = String::from_utf8_lossy(&t.nft_table().stdout).into_owned();
    assert!(
        table.contains(&format!("berth pod {pod}")),
        "rules missing:\n{table}"
    );

    t.net.detach(&pod, Some(&ns)).await.expect("detach");
    t.assert_pod_gone(&pod);
    assert!(
        ip_in(&ns, &["-o", "link", "show"])
            .lines()
            .all(|l| !l.contains("eth0"))
    );
    t.net.detach(&pod, Some(&ns)).await.expect("detach twice");
    t.net
        .detach(&pod, None)
        .await
        .expect("detach without netns");
    assert!(t.nft_table().status.success(), "detach must keep the table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_detach_frees_ports_at_once_and_the_address_only_after_the_veth() {
    if !can_run() {
        return;
    }
    let mut t = TestNet::new();
    let ns = t.add_netns();
    let pod = t.pod_id("deferred");
    let att = t
        .net
        .attach(&pod, &ns, &[tcp(t.port(), 80, None)])
        .await
        .expect("attach");

    t.net
        .detach_deferred(&pod, true)
        .await
        .expect("detach deferred");
    // Host ports are free when the call returns.
    let table = String::from_utf8_lossy(&t.nft_table().stdout).into_owned();
    assert!(!table.contains(&pod), "rules of {pod} remain:\n{table}");
    // The address is held for as long as the veth exists.
    let veth_exists = run("ip", &["link", "show", &att.host_veth])
        .status
        .success();
    let address_held = t.net.attachment(&pod).is_some();
    assert!(
        address_held || !veth_exists,
        "address released while {} still exists",
        att.host_veth
    );
    // A second stop while the first runs (or after it) is fine.
    t.net
        .detach_deferred(&pod, false)
        .await
        .expect("detach deferred again");

    assert!(t.net.settle(Duration::from_secs(5)).await, "detach settled");
    t.assert_pod_gone(&pod);
    assert!(t.net.settle(Duration::ZERO).await, "nothing pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_range_waits_for_the_address_of_a_pod_being_detached() {
    if !can_run() {
        return;
    }
    // A /30: the gateway and one pod address.
    let mut t = TestNet::with_prefix(30);
    let (ns_a, ns_b) = (t.add_netns(), t.add_netns());
    let (pod_a, pod_b) = (t.pod_id("a"), t.pod_id("b"));
    let a = t.net.attach(&pod_a, &ns_a, &[]).await.expect("attach a");
    t.net.detach_deferred(&pod_a, false).await.expect("stop a");

    let b = t.net.attach(&pod_b, &ns_b, &[]).await.expect("attach b");
    assert_eq!(b.ip, a.ip, "the only address, freed by a's detach");
    t.assert_pod_gone(&pod_a);
    t.net.detach(&pod_b, None).await.expect("detach b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipam_state_survives_a_new_instance() {
    if !can_run() {
        return;
    }
    let mut t = TestNet::new();
    let (ns_a, ns_b) = (t.add_netns(), t.add_netns());
    let (pod_a, pod_b) = (t.pod_id("a"), t.pod_id("b"));
    let a = t.net.attach(&pod_a, &ns_a, &[]).await.expect("attach a");

    let restarted = BridgeNetwork::new(t.cfg.clone()).expect("second instance");
    assert_eq!(restarted.attachment(&pod_a), Some(a.clone()));
    let b = restarted
        .attach(&pod_b, &ns_b, &[])
        .await
        .expect("attach b");
    assert_eq!(
        u32::from(b.ip),
        u32::from(a.ip) + 1,
        "next after the last allocated"
    );
    let again = restarted.attach(&pod_a, &ns_a, &[]).await;
    assert!(matches!(again, Err(NetworkError::AlreadyAttached { ip, .. }) if ip == a.ip));
    assert_eq!(restarted.list_attached().len(), 2);

    restarted.detach(&pod_a, None).await.expect("detach a");
    restarted.detach(&pod_b, None).await.expect("detach b");
    assert!(t.ipam_files().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_attaches_get_unique_addresses() {
    if !can_run() {
        return;
    }
    let mut t = TestNet::new();
    let pods: Vec<(String, PathBuf)> = (0..8)
        .map(|i| (t.pod_id(&format!("c{i}")), t.add_netns()))
        .collect();
    let attaches = pods.iter().map(|(pod, ns)| {
        let net = Arc::clone(&t.net);
        let (pod, ns) = (pod.clone(), ns.clone());
        tokio::spawn(async move { net.attach(&pod, &ns, &[]).await })
    });
    let mut ips = HashSet::new();
    for result in futures_util::future::join_all(attaches).await {
        let att = result.expect("attach task").expect("concurrent attach");
        assert!(t.cfg.pod_cidr.contains(&att.ip));
        assert!(ips.insert(att.ip), "address {} handed out twice", att.ip);
    }
    assert_eq!(t.ipam_files().len(), 8);

    let detaches = pods.iter().map(|(pod, _)| {
        let net = Arc::clone(&t.net);
        let pod = pod.clone();
        tokio::spawn(async move { net.detach(&pod, None).await })
    });
    for result in futures_util::future::join_all(detaches).await {
        result.expect("detach task").expect("concurrent detach");
    }
    assert!(t.ipam_files().is_empty() && t.net.list_attached().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attach_rolls_back_everything() {
    if !can_run() {
        return;
    }
    let mut t = TestNet::new();
    let ports = [tcp(t.port(), 80, None)];

    let missing = t.pod_id("missing");
    let path = t.state.path().join("no-such-netns");
    let err = t
        .net
        .attach(&missing, &path, &ports)
        .await
        .expect_err("missing netns");
    assert!(
        matches!(err, NetworkError::Netns { .. }) && err.to_string().contains(&missing),
        "{err}"
    );
    eprintln!("expected error: {err}");
    t.assert_pod_gone(&missing);

    // A plain file opens fine but is no namespace: fails after veth and IP exist.
    let not_ns = t.pod_id("notns");
    let plain = t.state.path().join("plain-file");
    File::create(&plain).expect("create plain file");
    let err = t
        .net
        .attach(&not_ns, &plain, &ports)
        .await
        .expect_err("not a netns");
    assert!(err.to_string().contains(&not_ns), "{err}");
    eprintln!("expected error: {err}");
    t.assert_pod_gone(&not_ns);

    // An existing eth0 makes the rename inside the pod fail after the move.
    let ns = t.add_netns();
    ip_in(&ns, &["link", "add", "eth0", "type", "bridge"]);
    let taken = t.pod_id("taken");
    let err = t
        .net
        .attach(&taken, &ns, &ports)
        .await
        .expect_err("eth0 taken");
    assert!(
        err.to_string().contains(&taken) && err.to_string().contains("eth0"),
        "{err}"
    );
    eprintln!("expected error: {err}");
    t.assert_pod_gone(&taken);
    let links = ip_in(&ns, &["-o", "link", "show"]);
    assert!(
        !links.contains("btp"),
        "temporary peer left in the pod: {links}"
    );
    assert!(t.ipam_files().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_host_removes_bridge_and_table() {
    if !can_run() {
        return;
    }
    let mut t = TestNet::new();
    let ns = t.add_netns();
    let pod = t.pod_id("teardown");
    t.net
        .attach(&pod, &ns, &[tcp(t.port(), 80, None)])
        .await
        .expect("attach");
    assert!(run("ip", &["link", "show", &t.cfg.bridge]).status.success());
    t.net.detach(&pod, Some(&ns)).await.expect("detach");
    t.net.teardown_host().await.expect("teardown");
    t.net.teardown_host().await.expect("teardown twice");

    assert!(
        !run("ip", &["link", "show", &t.cfg.bridge]).status.success(),
        "bridge remains"
    );
    assert!(!t.nft_table().status.success(), "nft table remains");
    assert!(
        !run("ip", &["link", "show", &host_veth(&pod)])
            .status
            .success(),
        "veth remains"
    );
    assert!(t.ipam_files().is_empty());
}
