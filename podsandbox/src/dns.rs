//! The pod's `/etc/resolv.conf`, `/etc/hosts` and `/etc/hostname` files, written once per pod
//! for containers to bind-mount.

use std::fmt::Write as _;
use std::net::IpAddr;

/// DNS settings from the pod config; all empty means "use the host's resolv.conf".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsSettings {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// Why DNS settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dns_config: {0}")]
pub struct DnsError(pub String);

/// Renders resolv.conf from `dns`, or returns `host` unchanged when `dns` is empty.
pub fn resolv_conf(dns: &DnsSettings, host: &str) -> Result<String, DnsError> {
    if dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty() {
        return Ok(host.to_string());
    }
    let mut out = String::new();
    for s in &dns.servers {
        s.parse::<IpAddr>()
            .map_err(|_| DnsError(format!("server `{s}` is not an IP address")))?;
        let _ = writeln!(out, "nameserver {s}");
    }
    for field in dns.searches.iter().chain(&dns.options) {
        if field.is_empty() || field.chars().any(char::is_whitespace) {
            return Err(DnsError(format!("`{field}` must be one word")));
        }
    }
    if !dns.searches.is_empty() {
        let _ = writeln!(out, "search {}", dns.searches.join(" "));
    }
    if !dns.options.is_empty() {
        let _ = writeln!(out, "options {}", dns.options.join(" "));
    }
    Ok(out)
}

/// The pod's hosts file: localhost entries, plus the pod's own address for its hostname.
pub fn hosts(hostname: &str, ip: Option<IpAddr>) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    if let (Some(ip), false) = (ip, hostname.is_empty()) {
        let _ = writeln!(out, "{ip}\t{hostname}");
    }
    out
}

/// Checks a hostname against what the kernel and the pod's files can hold: at most 64 bytes
/// (`HOST_NAME_MAX`), and no whitespace or control characters, which would corrupt the pod's
/// `/etc/hosts` and `/etc/hostname`. Anything else is the kubelet's to validate, as in
/// containerd and CRI-O (capitals, long labels and underscores are accepted).
pub fn validate_hostname(name: &str) -> Result<(), String> {
    if name.len() > 64 {
        return Err(format!(
            "hostname `{name}` is {} bytes; the kernel takes at most 64",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "hostname {name:?} contains {c:?}; whitespace and control characters would corrupt the pod's /etc/hosts"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_settings_copy_the_host_file() {
        assert_eq!(
            resolv_conf(&DnsSettings::default(), "nameserver 1.2.3.4\n").expect("ok"),
            "nameserver 1.2.3.4\n"
        );
    }

    #[test]
    fn settings_render_servers_search_and_options() {
        let dns = DnsSettings {
            servers: vec!["10.96.0.10".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(&dns, "").expect("ok"),
            "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5\n"
        );
        let bad = DnsSettings {
            servers: vec!["dns.example".into()],
            ..Default::default()
        };
        assert!(resolv_conf(&bad, "").is_err());
    }

    #[test]
    fn hosts_include_the_pod_address() {
        let h = hosts("web-0", Some("10.88.0.5".parse().expect("ip")));
        assert!(h.contains("127.0.0.1\tlocalhost"));
        assert!(h.ends_with("10.88.0.5\tweb-0\n"));
        assert!(validate_hostname("web-0.svc").is_ok());
        // What the kernel takes and other runtimes accept.
        assert!(validate_hostname("-odd_Name.").is_ok());
        assert!(validate_hostname(&"A".repeat(64)).is_ok());
        assert!(validate_hostname(&"a".repeat(65)).is_err());
        assert!(validate_hostname("two words").is_err());
        assert!(validate_hostname("line\n10.0.0.1 evil").is_err());
    }
}
