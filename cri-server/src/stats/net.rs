//! Pod network counters: `/proc/<pid>/net/dev` of a process in the pod's network namespace.
//!
//! The pod's shim lives in that namespace (it unshared it), so its `/proc/<pid>/net/dev` is the
//! pod's: one file read, no `setns` and no netlink round trip. The shim PID is checked against
//! the pinned namespace (same nsfs inode) so a recycled PID never reports another namespace;
//! if the check fails, a short-lived thread joins the pinned namespace and reads
//! `/proc/thread-self/net/dev` instead.

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use podsandbox::pod::PodHostState;

/// The interface kubelet treats as the pod's default one, when present.
pub const DEFAULT_INTERFACE: &str = "eth0";

/// Cumulative counters of one network interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InterfaceCounters {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// Parses `/proc/net/dev`: two header lines, then `name: 8 receive and 8 transmit counters`.
fn parse_net_dev(text: &str) -> Result<Vec<InterfaceCounters>, String> {
    let mut interfaces = Vec::new();
    for line in text.lines().skip(2).filter(|l| !l.trim().is_empty()) {
        let (name, counters) = line
            .split_once(':')
            .ok_or_else(|| format!("line {line:?} has no interface name"))?;
        let values = counters
            .split_whitespace()
            .map(|v| v.parse::<u64>())
            .collect::<Result<Vec<u64>, _>>()
            .map_err(|e| format!("line {line:?}: {e}"))?;
        if values.len() < 16 {
            return Err(format!(
                "line {line:?} has {} counters, not 16",
                values.len()
            ));
        }
        interfaces.push(InterfaceCounters {
            name: name.trim().to_string(),
            rx_bytes: values[0],
            rx_packets: values[1],
            rx_errors: values[2],
            rx_dropped: values[3],
            tx_bytes: values[8],
            tx_packets: values[9],
            tx_errors: values[10],
            tx_dropped: values[11],
        });
    }
    Ok(interfaces)
}

/// The pod's interfaces except loopback (as containerd reports them); `None` for a
/// hostNetwork pod, whose traffic is the node's and not the pod's.
pub fn pod_interfaces(host: &PodHostState) -> Result<Option<Vec<InterfaceCounters>>, String> {
    let Some(netns) = &host.netns else {
        return Ok(None);
    };
    let text = match shim_net_dev(host.shim_pid, netns) {
        Some(text) => text,
        None => net_dev_via_setns(netns)?,
    };
    let mut interfaces = parse_net_dev(&text)?;
    interfaces.retain(|i| i.name != "lo");
    Ok(Some(interfaces))
}

/// `/proc/<shim>/net/dev` if the shim is still in the pinned namespace `netns`.
fn shim_net_dev(shim_pid: u32, netns: &Path) -> Option<String> {
    if shim_pid == 0 {
        return None;
    }
    let pinned = std::fs::metadata(netns).ok()?;
    let current = std::fs::metadata(format!("/proc/{shim_pid}/ns/net")).ok()?;
    if (pinned.dev(), pinned.ino()) != (current.dev(), current.ino()) {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{shim_pid}/net/dev")).ok()?;
    // The shim may have exited between the check and the read: check again.
    let after = std::fs::metadata(format!("/proc/{shim_pid}/ns/net")).ok()?;
    ((after.dev(), after.ino()) == (pinned.dev(), pinned.ino())).then_some(text)
}

/// Reads `net/dev` from a thread that joined `netns` (and exits with it).
fn net_dev_via_setns(netns: &Path) -> Result<String, String> {
    let path = netns.to_path_buf();
    std::thread::spawn(move || {
        let file =
            std::fs::File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("join network namespace {}: {e}", path.display()))?;
        std::fs::read_to_string("/proc/thread-self/net/dev")
            .map_err(|e| format!("read net/dev in {}: {e}", path.display()))
    })
    .join()
    .map_err(|_| "network namespace reader thread panicked".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     560       8    0    0    0     0          0         0      560       8    0    0    0     0       0          0
  eth0: 1048576     900    2    3    0     0          0         1    20480     120    4    5    0     0       0          0
";

    #[test]
    fn net_dev_counters_are_parsed_per_interface() {
        let interfaces = parse_net_dev(NET_DEV).expect("parse");
        assert_eq!(interfaces.len(), 2);
        assert_eq!(
            interfaces[1],
            InterfaceCounters {
                name: "eth0".into(),
                rx_bytes: 1_048_576,
                rx_packets: 900,
                rx_errors: 2,
                rx_dropped: 3,
                tx_bytes: 20_480,
                tx_packets: 120,
                tx_errors: 4,
                tx_dropped: 5,
            }
        );
        assert_eq!(interfaces[0].name, "lo");
    }

    #[test]
    fn malformed_net_dev_lines_are_rejected() {
        let header = "h1\nh2\n";
        assert!(parse_net_dev(&format!("{header}eth0 1 2 3\n")).is_err());
        assert!(parse_net_dev(&format!("{header}eth0: 1 2 3\n")).is_err());
        assert!(parse_net_dev(&format!("{header}eth0: {}x\n", "1 ".repeat(15))).is_err());
        assert_eq!(parse_net_dev(header).expect("no interfaces"), vec![]);
    }

    #[test]
    fn host_network_pods_report_no_interfaces() {
        let host = PodHostState {
            shim_pid: std::process::id(),
            shim_socket: "/nonexistent".into(),
            ns_dir: "/nonexistent".into(),
            netns: None,
            ips: vec![],
            cgroup: String::new(),
            files_dir: "/nonexistent".into(),
            network: String::new(),
        };
        assert_eq!(pod_interfaces(&host), Ok(None));
    }

    #[test]
    fn own_namespace_reads_through_the_pid() {
        // This process stands in for a shim: its own netns file is the "pinned" one.
        let own = Path::new("/proc/self/ns/net");
        let text = shim_net_dev(std::process::id(), own).expect("same namespace");
        assert!(parse_net_dev(&text).is_ok());
        assert!(shim_net_dev(0, own).is_none());
    }

    #[test]
    fn setns_fallback_reads_the_pinned_namespace() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: setns needs CAP_SYS_ADMIN");
            return;
        }
        let text = net_dev_via_setns(Path::new("/proc/self/ns/net")).expect("own namespace");
        let names: Vec<String> = parse_net_dev(&text)
            .expect("parse")
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert!(names.iter().any(|n| n == "lo"), "{names:?}");
        let err = net_dev_via_setns(Path::new("/nonexistent/net")).expect_err("no such ns");
        assert!(err.contains("/nonexistent/net"), "{err}");
    }
}
