//! Pod test support: a private pod network per berthd (its own bridge, /24 inside
//! 10.88.0.0/16 and nftables table, removed on drop), pod configs, and host inspection.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use proto::cri::{
    DnsConfig, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata,
};

/// A private pod network for one test daemon.
#[derive(Debug)]
pub struct TestNetwork {
    pub bridge: String,
    pub third_octet: u8,
    pub nft_table: String,
}

impl TestNetwork {
    /// Random names and a random free /24 in 10.88.100.0–10.88.249.0. The /24 is claimed
    /// with a lease file under [`LEASE_DIR`] holding this process's pid, so concurrent test
    /// processes (and several checkouts running suites at once) never share a subnet.
    pub fn new() -> TestNetwork {
        loop {
            let r: u32 = rand_u32();
            let third_octet = 100 + (r % 150) as u8;
            if routed_on_host(third_octet) {
                continue;
            }
            if claim_subnet(third_octet) {
                return TestNetwork {
                    bridge: format!("bte{:08x}", r)[..11].to_string(),
                    third_octet,
                    nft_table: format!("berth_e2e_{:08x}", r),
                };
            }
        }
    }

    pub fn cidr(&self) -> String {
        format!("10.88.{}.0/24", self.third_octet)
    }

    /// Whether `ip` is in this network's /24.
    pub fn contains(&self, ip: &str) -> bool {
        ip.parse::<Ipv4Addr>()
            .is_ok_and(|a| a.octets()[..3] == [10, 88, self.third_octet])
    }

    /// berthd config selecting this network (and no CNI config).
    pub fn config_toml(&self, cni_dir: &Path) -> String {
        format!(
            "[network]\nbridge = \"{}\"\npod_cidr = \"{}\"\nnft_table = \"{}\"\n[cni]\nconf_dir = \"{}\"\n",
            self.bridge,
            self.cidr(),
            self.nft_table,
            cni_dir.display()
        )
    }
}

impl Default for TestNetwork {
    fn default() -> Self {
        TestNetwork::new()
    }
}

/// The cgroup parent of this test process's pods (nextest runs each test in its own
/// process), so tests never leave cgroups under berth's production default `berth/`.
pub fn test_cgroup_parent() -> String {
    format!("berth-e2e-{}", std::process::id())
}

/// Removes this test process's (empty) cgroup parent from every hierarchy.
pub fn remove_test_cgroup_parent() {
    remove_empty_cgroup(&test_cgroup_parent());
}

/// Removes an empty top-level cgroup from every hierarchy (v1 controllers and v2).
pub fn remove_empty_cgroup(name: &str) {
    for entry in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = std::fs::remove_dir(entry.path().join(name));
    }
    let _ = std::fs::remove_dir(std::path::Path::new("/sys/fs/cgroup").join(name));
}

/// Where test processes lease their /24s.
pub const LEASE_DIR: &str = "/run/berth-e2e-subnets";

/// Whether the host routes 10.88.`octet`.0/24, or a network holding it, somewhere (another
/// berthd's bridge, a real installation): a test network there would not be reachable.
fn routed_on_host(octet: u8) -> bool {
    let cidr = format!("10.88.{octet}.0/24");
    let routes = |args: &[&str]| {
        Command::new("ip")
            .args(["-4", "-o", "route", "show", "table", "all"])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let inside = routes(&["root", &cidr]);
    let covering = routes(&["match", &cidr]);
    !inside.trim().is_empty()
        || covering
            .lines()
            .any(|l| !l.starts_with("default") && !l.starts_with("broadcast"))
}

/// Claims 10.88.`octet`.0/24 for this process: a new lease file, or a lease whose holder
/// process is gone.
fn claim_subnet(octet: u8) -> bool {
    let _ = std::fs::create_dir_all(LEASE_DIR);
    let path = Path::new(LEASE_DIR).join(octet.to_string());
    let me = std::process::id().to_string();
    if claim_subnet_once(&path, &me) {
        return true;
    }
    let holder = std::fs::read_to_string(&path).unwrap_or_default();
    let alive = holder
        .trim()
        .parse::<u32>()
        .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
    if alive || holder.is_empty() {
        return false;
    }
    // A dead holder's lease: take it over only if nobody else did first.
    let _ = std::fs::remove_file(&path);
    claim_subnet_once(&path, &me)
}

fn claim_subnet_once(path: &Path, me: &str) -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, me.as_bytes()))
        .is_ok()
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        let lease = Path::new(LEASE_DIR).join(self.third_octet.to_string());
        if std::fs::read_to_string(&lease).is_ok_and(|h| h.trim() == std::process::id().to_string())
        {
            let _ = std::fs::remove_file(lease);
        }
        remove_test_cgroup_parent();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        for family in ["inet", "ip"] {
            let _ = Command::new("nft")
                .args(["delete", "table", family, &self.nft_table])
                .output();
        }
    }
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    u32::from_ne_bytes(b) ^ std::process::id()
}

/// A pod config with unique metadata.
pub fn pod_config(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}-{:08x}", rand_u32()),
            namespace: "e2e".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: String::new(),
        dns_config: Some(DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["e2e.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        port_mappings: vec![],
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        annotations: HashMap::new(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: test_cgroup_parent(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        windows: None,
    }
}

/// Runs `f` on a thread that has joined the network namespace at `netns`.
pub fn in_netns<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let netns = netns.to_path_buf();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&netns)?;
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)?;
        f()
    })
    .join()
    .map_err(|_| std::io::Error::other("netns thread panicked"))?
}

/// Starts a one-shot TCP echo-ish listener in `netns` on `port`: it accepts one connection
/// and writes `reply`. Returns once it is listening.
pub fn listen_once_in(netns: &Path, port: u16, reply: &'static [u8]) -> std::io::Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let netns = netns.to_path_buf();
    std::thread::spawn(move || {
        let run = || -> std::io::Result<()> {
            let file = std::fs::File::open(&netns)?;
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            let listener = TcpListener::bind(("0.0.0.0", port))?;
            let _ = tx.send(Ok(()));
            let (mut conn, _) = listener.accept()?;
            std::io::Write::write_all(&mut conn, reply)
        };
        if let Err(e) = run() {
            let _ = tx.send(Err(e));
        }
    });
    rx.recv_timeout(Duration::from_secs(5))
        .map_err(|e| std::io::Error::other(format!("listener thread: {e}")))?
}

/// Connects to `addr` and reads what the peer writes.
pub fn read_from(addr: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut buf)?;
    Ok(buf)
}

/// Whether a network link exists on the host.
pub fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Host links whose name starts with `prefix`.
pub fn links_with_prefix(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["-o", "link", "show"]).output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Mount points under `dir` (from /proc/self/mountinfo).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// Whether a process with this PID exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}
