//! Which sysctls a pod may set: only namespaced ones, and only in namespaces it owns.

use std::collections::BTreeMap;

/// Why a sysctl was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sysctl `{key}`: {reason}")]
pub struct SysctlError {
    pub key: String,
    pub reason: String,
}

/// Checks `sysctls` (names with `.` or `/` separators) and returns them normalized to `.`.
/// Allowed, as runc allows them: `net.*` when the pod has its own network namespace;
/// `kernel.shm*`, `kernel.msg*`, `kernel.sem` and `fs.mqueue.*` when it has its own IPC
/// namespace; `kernel.hostname` and `kernel.domainname` when it has its own UTS namespace
/// (berth gives a pod its own UTS namespace exactly when it has its own network namespace).
pub fn validate(
    sysctls: &BTreeMap<String, String>,
    own_net: bool,
    own_ipc: bool,
) -> Result<BTreeMap<String, String>, SysctlError> {
    let mut out = BTreeMap::new();
    for (raw_key, value) in sysctls {
        let key = raw_key.replace('/', ".");
        let bad = |reason: &str| SysctlError {
            key: raw_key.clone(),
            reason: reason.into(),
        };
        let well_formed = !key.is_empty()
            && key.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            });
        if !well_formed {
            return Err(bad("not a sysctl name"));
        }
        if value.contains('\n') || value.len() > 4096 {
            return Err(bad("value must be one line of at most 4096 bytes"));
        }
        if key.starts_with("net.") {
            if !own_net {
                return Err(bad(
                    "network sysctls need the pod's own network namespace (not hostNetwork)",
                ));
            }
        } else if key.starts_with("kernel.shm")
            || key.starts_with("kernel.msg")
            || key == "kernel.sem"
            || key.starts_with("fs.mqueue.")
        {
            if !own_ipc {
                return Err(bad(
                    "IPC sysctls need the pod's own IPC namespace (not hostIPC)",
                ));
            }
        } else if key == "kernel.hostname" || key == "kernel.domainname" {
            if !own_net {
                return Err(bad(
                    "UTS sysctls need the pod's own UTS namespace (not hostNetwork)",
                ));
            }
        } else {
            return Err(bad(
                "not a namespaced sysctl a pod may set (allowed: net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*, kernel.hostname, kernel.domainname)",
            ));
        }
        out.insert(key, value.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn safe_sysctls_pass_and_slashes_normalize() {
        let ok = validate(
            &map(&[
                ("net/ipv4/ip_unprivileged_port_start", "0"),
                ("kernel.shmmax", "1000"),
                ("kernel.sem", "1 2 3 4"),
                ("fs.mqueue.msg_max", "100"),
                ("kernel.domainname", "example"),
            ]),
            true,
            true,
        )
        .expect("valid");
        assert!(ok.contains_key("net.ipv4.ip_unprivileged_port_start"));
    }

    #[test]
    fn unsafe_or_host_namespace_sysctls_are_refused() {
        let e = validate(&map(&[("kernel.panic", "1")]), true, true).expect_err("kernel.panic");
        assert!(e.to_string().contains("kernel.panic"));
        assert!(validate(&map(&[("vm.swappiness", "1")]), true, true).is_err());
        let e = validate(&map(&[("net.ipv4.ip_forward", "1")]), false, true).expect_err("host net");
        assert!(e.reason.contains("hostNetwork"));
        assert!(validate(&map(&[("kernel.msgmax", "1")]), true, false).is_err());
        assert!(validate(&map(&[("fs.mqueue.msg_max", "1")]), true, false).is_err());
        assert!(validate(&map(&[("fs.file-max", "1")]), true, true).is_err());
        assert!(validate(&map(&[("kernel.domainname", "x")]), false, true).is_err());
        assert!(validate(&map(&[("net..x", "1")]), true, true).is_err());
        assert!(validate(&map(&[("net.x", "1\n2")]), true, true).is_err());
    }
}
