//! What an OCI runtime binary says it supports (`<runtime> features`, runtime-spec
//! `features.md`), as the CRI's handler features: recursive read-only mounts need the `rro`
//! mount option; user namespaces need the runtime to join a `user` namespace by path (the
//! shim makes the idmapped mounts itself, so runc 1.1, which has no idmapped mounts, will do;
//! the kernel's support for them is checked by the caller, as for the native handler).

use std::process::{Command, Stdio};

use oci_spec::runtime::{Features, LinuxNamespaceType};

/// The CRI features of one handler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandlerFeatures {
    pub recursive_read_only_mounts: bool,
    pub user_namespaces: bool,
}

/// Asks the runtime; a runtime without `features` (crun 1.8) supports neither.
pub fn query(path: &str) -> HandlerFeatures {
    let output = Command::new(path)
        .arg("features")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match output {
        Ok(out) if out.status.success() => parse(&out.stdout),
        _ => HandlerFeatures::default(),
    }
}

/// Reads `features` JSON.
pub fn parse(json: &[u8]) -> HandlerFeatures {
    let Ok(features) = serde_json::from_slice::<Features>(json) else {
        return HandlerFeatures::default();
    };
    let rro = features
        .mount_options()
        .as_ref()
        .is_some_and(|o| o.iter().any(|o| o == "rro"));
    let userns = features
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|n| n.contains(&LinuxNamespaceType::User));
    HandlerFeatures {
        recursive_read_only_mounts: rro,
        user_namespaces: userns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rro_in_mount_options_means_recursive_read_only_mounts() {
        let with =
            br#"{"ociVersionMin":"1.0.0","ociVersionMax":"1.0.2","mountOptions":["ro","rro"]}"#;
        let without = br#"{"ociVersionMin":"1.0.0","ociVersionMax":"1.0.2","mountOptions":["ro"]}"#;
        assert!(parse(with).recursive_read_only_mounts);
        assert!(!parse(without).recursive_read_only_mounts);
        assert_eq!(parse(b"not json"), HandlerFeatures::default());
    }

    #[test]
    fn a_runtime_that_knows_user_namespaces_gets_them() {
        let runc_1_1 = br#"{"ociVersionMin":"1.0.0","ociVersionMax":"1.0.2-dev",
            "linux":{"namespaces":["cgroup","ipc","mount","network","pid","user","uts"]}}"#;
        let without = br#"{"ociVersionMin":"1.0.0","ociVersionMax":"1.0.2",
            "linux":{"namespaces":["ipc","mount","network","pid","uts"]}}"#;
        let silent = br#"{"ociVersionMin":"1.0.0","ociVersionMax":"1.0.2"}"#;
        assert!(parse(runc_1_1).user_namespaces);
        assert!(!parse(without).user_namespaces);
        assert!(!parse(silent).user_namespaces);
    }
}
