//! nftables rules of the pod network, applied by feeding scripts to `nft -f -`
//! (each script is one atomic transaction).
//!
//! Layout of the berth-owned `ip` table:
//! - `prerouting` / `output` (nat, dstnat): `fib daddr type local jump hostports`;
//! - `hostports`: one `jump pod-<hash>` per pod with port mappings, commented
//!   `berth pod <id>`, so detach finds exactly that pod's rules;
//! - `pod-<hash>`: the pod's DNAT rules;
//! - `postrouting` (nat, srcnat): masquerade pod traffic leaving the pod CIDR,
//!   DNATed loopback traffic (hostPort on 127.0.0.1) and DNATed pod-to-pod
//!   traffic (hairpin), like the CNI portmap plugin.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;

use ipnet::Ipv4Net;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::error::NetworkError;
use super::{PortMapping, Protocol};

/// Chain jumped to from `prerouting` and `output` for local destinations.
const HOSTPORTS: &str = "hostports";

/// One berth-owned nftables table (family `ip`).
#[derive(Debug, Clone)]
pub(crate) struct NftTable {
    pub(crate) name: String,
}

/// The rules of one pod.
pub(crate) struct PodRules<'a> {
    pub(crate) pod_id: &'a str,
    pub(crate) chain: String,
    pub(crate) ip: Ipv4Addr,
    pub(crate) ports: &'a [PortMapping],
}

impl NftTable {
    /// Creates the table and its base chains, resetting their static rules.
    pub(crate) async fn ensure_base(
        &self,
        pod_id: &str,
        cidr: Ipv4Net,
    ) -> Result<(), NetworkError> {
        self.run(pod_id, &self.base_script(cidr)).await
    }

    /// Installs the pod's hostPort rules, replacing any stale ones.
    pub(crate) async fn add_pod(&self, rules: &PodRules<'_>) -> Result<(), NetworkError> {
        // Pod IDs are fresh and random: a pod without host ports has no rules to replace, so
        // it costs no `nft` process.
        if rules.ports.is_empty() {
            return Ok(());
        }
        let listing = self.list(rules.pod_id).await?;
        let mut script = self.remove_script(&listing, rules.pod_id, &rules.chain);
        if !rules.ports.is_empty() {
            script.push_str(&self.pod_script(rules));
        }
        if script.is_empty() {
            return Ok(());
        }
        self.run(rules.pod_id, &script).await
    }

    /// Deletes the pod's jump rules and chain; missing ones are fine.
    pub(crate) async fn remove_pod(&self, pod_id: &str, chain: &str) -> Result<(), NetworkError> {
        let listing = self.list(pod_id).await?;
        let script = self.remove_script(&listing, pod_id, chain);
        if script.is_empty() {
            return Ok(());
        }
        self.run(pod_id, &script).await
    }

    /// Deletes the whole table if it exists.
    pub(crate) async fn delete(&self, pod_id: &str) -> Result<(), NetworkError> {
        if self.list(pod_id).await?.is_empty() {
            return Ok(());
        }
        self.run(pod_id, &format!("delete table ip {}\n", self.name))
            .await
    }

    fn base_script(&self, cidr: Ipv4Net) -> String {
        let t = &self.name;
        format!(
            "add table ip {t}\n\
             add chain ip {t} prerouting {{ type nat hook prerouting priority -100; policy accept; }}\n\
             add chain ip {t} output {{ type nat hook output priority -100; policy accept; }}\n\
             add chain ip {t} postrouting {{ type nat hook postrouting priority 100; policy accept; }}\n\
             add chain ip {t} {HOSTPORTS}\n\
             flush chain ip {t} prerouting\n\
             flush chain ip {t} output\n\
             flush chain ip {t} postrouting\n\
             add rule ip {t} prerouting fib daddr type local jump {HOSTPORTS}\n\
             add rule ip {t} output fib daddr type local jump {HOSTPORTS}\n\
             add rule ip {t} postrouting ip saddr 127.0.0.0/8 ip daddr {cidr} ct status dnat masquerade\n\
             add rule ip {t} postrouting ip saddr {cidr} ip daddr {cidr} ct status dnat masquerade\n\
             add rule ip {t} postrouting ip saddr {cidr} ip daddr != {cidr} masquerade\n"
        )
    }

    fn pod_script(&self, rules: &PodRules<'_>) -> String {
        let (t, chain, comment) = (&self.name, &rules.chain, comment(rules.pod_id));
        let mut script = format!("add chain ip {t} {chain}\n");
        for port in rules.ports {
            let daddr = match port.host_ip {
                Some(ip) if !ip.is_unspecified() => format!("ip daddr {ip} "),
                _ => String::new(),
            };
            let proto = protocol_name(port.protocol);
            let _ = writeln!(
                script,
                "add rule ip {t} {chain} {daddr}{proto} dport {} dnat to {}:{} comment \"{comment}\"",
                port.host_port, rules.ip, port.container_port
            );
        }
        let _ = writeln!(
            script,
            "add rule ip {t} {HOSTPORTS} jump {chain} comment \"{comment}\""
        );
        script
    }

    /// Script deleting what `listing` shows of the pod; empty when nothing is there.
    fn remove_script(&self, listing: &[Value], pod_id: &str, chain: &str) -> String {
        let t = &self.name;
        let mut script = String::new();
        for handle in jump_handles(listing, &comment(pod_id)) {
            let _ = writeln!(script, "delete rule ip {t} {HOSTPORTS} handle {handle}");
        }
        if has_chain(listing, chain) {
            let _ = writeln!(
                script,
                "flush chain ip {t} {chain}\ndelete chain ip {t} {chain}"
            );
        }
        script
    }

    /// The table as `nft -j` objects; empty when the table does not exist.
    async fn list(&self, pod_id: &str) -> Result<Vec<Value>, NetworkError> {
        let args = ["-j", "list", "table", "ip", self.name.as_str()];
        let output = Command::new(nft_binary())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| self.error(pod_id, format!("run nft list: {e}")))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            if stderr.contains("No such file or directory") {
                return Ok(Vec::new());
            }
            return Err(self.error(pod_id, format!("nft list failed: {}", stderr.trim())));
        }
        let json: Value = serde_json::from_slice(&output.stdout)
            .map_err(|e| self.error(pod_id, format!("parse nft -j output: {e}")))?;
        match json.get("nftables").and_then(Value::as_array) {
            Some(objects) => Ok(objects.clone()),
            None => Err(self.error(pod_id, "nft -j output lacks \"nftables\"".into())),
        }
    }

    /// Applies `script` atomically with `nft -f -`.
    async fn run(&self, pod_id: &str, script: &str) -> Result<(), NetworkError> {
        tracing::debug!(pod_id, table = %self.name, script, "applying nftables script");
        let mut child = Command::new(nft_binary())
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.error(pod_id, format!("run nft: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .await
                .map_err(|e| self.error(pod_id, format!("write nft script: {e}")))?;
        }
        let output = child
            .wait_with_output()
            .await
            .map_err(|e| self.error(pod_id, format!("wait for nft: {e}")))?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(self.error(pod_id, format!("nft -f failed: {}", stderr.trim())))
    }

    fn error(&self, pod_id: &str, reason: String) -> NetworkError {
        NetworkError::Nft {
            pod_id: pod_id.to_string(),
            table: self.name.clone(),
            reason,
        }
    }
}

/// The comment tagging every rule of a pod.
pub(crate) fn comment(pod_id: &str) -> String {
    format!("berth pod {pod_id}")
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// Path of the `nft` binary (daemons often run without `/usr/sbin` in `PATH`).
fn nft_binary() -> &'static str {
    ["/usr/sbin/nft", "/sbin/nft"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("nft")
}

/// Handles of the `hostports` rules carrying `comment`.
fn jump_handles(listing: &[Value], comment: &str) -> Vec<u64> {
    listing
        .iter()
        .filter_map(|obj| obj.get("rule"))
        .filter(|rule| rule.get("chain").and_then(Value::as_str) == Some(HOSTPORTS))
        .filter(|rule| rule.get("comment").and_then(Value::as_str) == Some(comment))
        .filter_map(|rule| rule.get("handle").and_then(Value::as_u64))
        .collect()
}

fn has_chain(listing: &[Value], chain: &str) -> bool {
    listing
        .iter()
        .filter_map(|obj| obj.get("chain"))
        .any(|c| c.get("name").and_then(Value::as_str) == Some(chain))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table() -> NftTable {
        NftTable { name: "t".into() }
    }

    #[test]
    fn pod_script_dnats_each_port_and_jumps_with_the_pod_comment() {
        let ports = [
            PortMapping {
                protocol: Protocol::Tcp,
                container_port: 80,
                host_port: 8080,
                host_ip: Some(Ipv4Addr::LOCALHOST),
            },
            PortMapping {
                protocol: Protocol::Udp,
                container_port: 53,
                host_port: 5353,
                host_ip: None,
            },
        ];
        let rules = PodRules {
            pod_id: "p1",
            chain: "pod-abc".into(),
            ip: Ipv4Addr::new(10, 88, 0, 5),
            ports: &ports,
        };
        let script = table().pod_script(&rules);
        assert!(script.contains(
            "add rule ip t pod-abc ip daddr 127.0.0.1 tcp dport 8080 dnat to 10.88.0.5:80 comment \"berth pod p1\""
        ));
        assert!(script.contains("add rule ip t pod-abc udp dport 5353 dnat to 10.88.0.5:53"));
        assert!(
            script.ends_with("add rule ip t hostports jump pod-abc comment \"berth pod p1\"\n")
        );
    }

    #[test]
    fn remove_script_targets_only_the_pods_rules() {
        let listing = vec![
            json!({"chain": {"name": "pod-abc"}}),
            json!({"rule": {"chain": "hostports", "handle": 7, "comment": "berth pod p1"}}),
            json!({"rule": {"chain": "hostports", "handle": 8, "comment": "berth pod p10"}}),
        ];
        let script = table().remove_script(&listing, "p1", "pod-abc");
        assert_eq!(
            script,
            "delete rule ip t hostports handle 7\nflush chain ip t pod-abc\ndelete chain ip t pod-abc\n"
        );
        assert!(table().remove_script(&listing, "p2", "pod-def").is_empty());
    }
}
