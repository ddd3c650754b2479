//! Seccomp profiles as OCI runtime-spec `linux.seccomp` JSON, for OCI runtime handlers (runc,
//! crun), which compile the profile themselves with libseccomp.

use serde_json::{Value, json};

use super::profile::{Action, Cmp, Policy};
use super::{SeccompError, SeccompProfile, default, host_arch};

/// The profile as `linux.seccomp` JSON; `None` for Unconfined. A Localhost profile is checked
/// as the native executor checks it (same errors) and handed on unchanged; RuntimeDefault is
/// berth's own default policy rendered rule by rule, so both handlers filter the same calls.
pub fn to_oci_json(profile: &SeccompProfile) -> Result<Option<Value>, SeccompError> {
    match profile {
        SeccompProfile::Unconfined => Ok(None),
        SeccompProfile::RuntimeDefault => {
            let arch = host_arch()?;
            Ok(Some(render(&default::runtime_default(), arch.scmp_name())))
        }
        SeccompProfile::Localhost(path) => {
            super::compile(profile)?;
            let bytes = std::fs::read(path).map_err(|source| SeccompError::Read {
                path: path.to_owned(),
                source,
            })?;
            let value = serde_json::from_slice(&bytes).map_err(|e| SeccompError::Invalid {
                origin: path.display().to_string(),
                field: "(document)".to_owned(),
                reason: e.to_string(),
            })?;
            Ok(Some(value))
        }
    }
}

fn render(policy: &Policy, arch: &str) -> Value {
    let (default_action, default_errno) = action(policy.default_action);
    let syscalls: Vec<Value> = policy
        .rules
        .iter()
        .map(|rule| {
            let (name, errno) = action(rule.action);
            let mut syscall = json!({ "names": rule.names, "action": name });
            if let Some(errno) = errno {
                syscall["errnoRet"] = json!(errno);
            }
            if !rule.conditions.is_empty() {
                let args: Vec<Value> = rule
                    .conditions
                    .iter()
                    .map(|c| {
                        let (op, value, value_two) = cmp(c.cmp);
                        json!({ "index": c.index, "value": value, "valueTwo": value_two, "op": op })
                    })
                    .collect();
                syscall["args"] = json!(args);
            }
            syscall
        })
        .collect();
    let mut out = json!({
        "defaultAction": default_action,
        "architectures": [arch],
        "syscalls": syscalls,
    });
    if let Some(errno) = default_errno {
        out["defaultErrnoRet"] = json!(errno);
    }
    let mut flags = Vec::new();
    if policy.flags & libc::SECCOMP_FILTER_FLAG_LOG != 0 {
        flags.push("SECCOMP_FILTER_FLAG_LOG");
    }
    if policy.flags & libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW != 0 {
        flags.push("SECCOMP_FILTER_FLAG_SPEC_ALLOW");
    }
    if !flags.is_empty() {
        out["flags"] = json!(flags);
    }
    out
}

/// The libseccomp action name and its errno (or trace) data.
fn action(a: Action) -> (&'static str, Option<u16>) {
    match a {
        Action::Allow => ("SCMP_ACT_ALLOW", None),
        Action::Errno(e) => ("SCMP_ACT_ERRNO", Some(e)),
        Action::KillThread => ("SCMP_ACT_KILL_THREAD", None),
        Action::KillProcess => ("SCMP_ACT_KILL_PROCESS", None),
        Action::Trap => ("SCMP_ACT_TRAP", None),
        Action::Trace(d) => ("SCMP_ACT_TRACE", Some(d)),
        Action::Log => ("SCMP_ACT_LOG", None),
    }
}

fn cmp(c: Cmp) -> (&'static str, u64, u64) {
    match c {
        Cmp::Eq(v) => ("SCMP_CMP_EQ", v, 0),
        Cmp::Ne(v) => ("SCMP_CMP_NE", v, 0),
        Cmp::Lt(v) => ("SCMP_CMP_LT", v, 0),
        Cmp::Le(v) => ("SCMP_CMP_LE", v, 0),
        Cmp::Gt(v) => ("SCMP_CMP_GT", v, 0),
        Cmp::Ge(v) => ("SCMP_CMP_GE", v, 0),
        Cmp::MaskedEq { mask, value } => ("SCMP_CMP_MASKED_EQ", mask, value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_default_renders_to_a_profile_berth_parses_back_the_same() {
        let json = to_oci_json(&SeccompProfile::RuntimeDefault)
            .expect("render")
            .expect("a profile");
        let bytes = serde_json::to_vec(&json).expect("bytes");
        let arch = host_arch().expect("arch");
        let back = super::super::profile::parse_oci(&bytes, "test", arch).expect("parse");
        assert_eq!(back, default::runtime_default());
    }

    #[test]
    fn unconfined_has_no_profile() {
        assert!(
            to_oci_json(&SeccompProfile::Unconfined)
                .expect("ok")
                .is_none()
        );
    }
}
