//! What an OCI runtime binary says it supports (`<runtime> features`, runtime-spec
//! `features.md`), as the CRI's handler features: recursive read-only mounts need the `rro`
//! mount option, user namespaces need idmapped mounts.

use std::process::{Command, Stdio};

use oci_spec::runtime::Features;

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

/// Reads `features` JSON. User namespaces stay off: berth's OCI handler does not translate
/// them yet, whatever the runtime can do.
pub fn parse(json: &[u8]) -> HandlerFeatures {
    let Ok(features) = serde_json::from_slice::<Features>(json) else {
        return HandlerFeatures::default();
    };
    let rro = features
        .mount_options()
        .as_ref()
        .is_some_and(|o| o.iter().any(|o| o == "rro"));
    HandlerFeatures {
        recursive_read_only_mounts: rro,
        user_namespaces: false,
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
}
