//! Which executor runs a pod's containers: the native one, or the OCI runtime of a
//! `[runtimes.<name>]` handler (docs/runtime-handlers.md).

use crate::error::Error;
use proto::shim::OciRuntime;

use crate::config::{Config, NATIVE_HANDLERS};

/// The OCI runtime a pod with `handler` runs its containers with: `None` for the native
/// executor; an unknown handler is refused naming the configured ones.
pub fn oci_runtime(config: &Config, handler: &str) -> Result<Option<OciRuntime>, Error> {
    if NATIVE_HANDLERS.contains(&handler) {
        return Ok(None);
    }
    let Some(h) = config.runtimes.get(handler) else {
        let mut known: Vec<&str> = NATIVE_HANDLERS.to_vec();
        known.extend(config.runtimes.keys().map(String::as_str));
        return Err(Error::invalid(format!(
            "runtime_handler `{handler}` is not configured (configured: {})",
            known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let oci_dir = config.state_dir.join("oci");
    let root = match h.root.as_os_str().is_empty() {
        true => oci_dir.join(handler),
        false => h.root.clone(),
    };
    Ok(Some(OciRuntime {
        name: handler.to_string(),
        path: h.path.display().to_string(),
        root: root.display().to_string(),
        systemd_cgroup: h.options.systemd_cgroup,
        bundle_dir: oci_dir.join("bundles").display().to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RuntimeHandlerConfig;

    #[test]
    fn handlers_resolve_to_the_native_executor_or_their_runtime() {
        let mut config = Config::default();
        config.runtimes.insert(
            "runc".into(),
            RuntimeHandlerConfig {
                path: "/usr/bin/runc".into(),
                ..Default::default()
            },
        );
        assert_eq!(oci_runtime(&config, "").expect("default"), None);
        assert_eq!(oci_runtime(&config, "berth").expect("native"), None);
        let runc = oci_runtime(&config, "runc").expect("runc").expect("oci");
        assert_eq!(runc.path, "/usr/bin/runc");
        assert_eq!(runc.root, "/run/berth/oci/runc");
        let err = oci_runtime(&config, "kata").expect_err("unknown");
        assert_eq!(err.kind(), crate::error::Kind::Invalid);
        assert!(err.message().contains("`kata`") && err.message().contains("`runc`"));
    }
}
