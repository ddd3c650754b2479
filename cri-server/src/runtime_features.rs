//! The runtime handlers berth serves and what each supports, as `Status` reports them: kubelet
//! checks them before it sends user namespaces, recursive read-only mounts or a strict
//! supplemental groups policy. Besides the native executor, each `[runtimes.<name>]` of the
//! config is a handler run by an OCI runtime (docs/runtime-handlers.md).

use proto::cri::{RuntimeFeatures, RuntimeHandler, RuntimeHandlerFeatures};
use proto::shim::OciRuntime;
use runtime_core::mount_api;
use tonic::Status;

use crate::config::{Config, RuntimeHandlerConfig};

/// The native executor's handler names: the default (`""`) and its explicit name.
pub const HANDLERS: [&str; 2] = ["", "berth"];

/// Every configured handler: the native ones with the features the running kernel gives
/// them, then each OCI runtime with the features it reports (`<runtime> features`).
pub fn runtime_handlers(config: &Config) -> Vec<RuntimeHandler> {
    let native = HANDLERS.iter().map(|name| RuntimeHandler {
        name: name.to_string(),
        features: Some(handler_features()),
    });
    let oci = config.runtimes.iter().map(|(name, handler)| {
        let reported = runtime_core::oci::features::query(&handler.path.to_string_lossy());
        RuntimeHandler {
            name: name.clone(),
            features: Some(RuntimeHandlerFeatures {
                recursive_read_only_mounts: reported.recursive_read_only_mounts
                    && mount_api::mount_setattr_supported(),
                user_namespaces: reported.user_namespaces,
            }),
        }
    });
    native.chain(oci).collect()
}

/// The OCI runtime a pod with `handler` runs its containers with: `None` for the native
/// executor; an unknown handler is refused naming the configured ones.
pub fn oci_runtime(config: &Config, handler: &str) -> Result<Option<OciRuntime>, Status> {
    if HANDLERS.contains(&handler) {
        return Ok(None);
    }
    let Some(h) = config.runtimes.get(handler) else {
        let mut known: Vec<&str> = HANDLERS.to_vec();
        known.extend(config.runtimes.keys().map(String::as_str));
        return Err(Status::invalid_argument(format!(
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

/// Checks one `[runtimes.<name>]` entry.
pub fn check_handler_config(name: &str, h: &RuntimeHandlerConfig) -> Result<(), String> {
    if HANDLERS.contains(&name) {
        return Err(format!(
            "`{name}` names the native executor and cannot be an OCI runtime"
        ));
    }
    let name_ok = name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !name_ok {
        return Err(format!(
            "handler name `{name}` must be 1 to 63 letters, digits, `-`, `_` or `.`"
        ));
    }
    if h.path.as_os_str().is_empty() {
        return Err(format!("`{name}`: path (the runtime binary) is required"));
    }
    if !h.root.as_os_str().is_empty() && !h.root.is_absolute() {
        return Err(format!(
            "`{name}`: root `{}` must be an absolute path",
            h.root.display()
        ));
    }
    if h.options.systemd_cgroup {
        return Err(format!(
            "`{name}`: options.systemd_cgroup needs the systemd cgroup driver, which berth does not support yet"
        ));
    }
    Ok(())
}

/// The native executor's features: recursive read-only mounts need `mount_setattr`, user
/// namespaces need idmapped mounts (of overlayfs layers too).
pub fn handler_features() -> RuntimeHandlerFeatures {
    RuntimeHandlerFeatures {
        recursive_read_only_mounts: mount_api::mount_setattr_supported(),
        user_namespaces: mount_api::idmapped_mounts_supported(),
    }
}

/// Features of berth itself, whatever the handler: `supplemental_groups_policy` (Merge and
/// Strict) and `ContainerStatus.user` are always supported.
pub fn runtime_features() -> RuntimeFeatures {
    RuntimeFeatures {
        supplemental_groups_policy: true,
        // A user namespace with the host's network is refused (crate::userns).
        user_namespaces_host_network: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accepted_handler_is_listed_once_with_features() {
        let mut config = Config::default();
        config.runtimes.insert(
            "runc".into(),
            RuntimeHandlerConfig {
                path: "/nonexistent/runc".into(),
                ..Default::default()
            },
        );
        let handlers = runtime_handlers(&config);
        let names: Vec<&str> = handlers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["", "berth", "runc"]);
        assert!(handlers.iter().all(|h| h.features.is_some()));
        // A runtime that cannot say what it supports gets no optional feature.
        assert_eq!(
            handlers[2].features,
            Some(RuntimeHandlerFeatures::default())
        );
        assert!(runtime_features().supplemental_groups_policy);
    }

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
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("`kata`") && err.message().contains("`runc`"));
    }

    #[test]
    fn handler_config_is_checked() {
        let ok = RuntimeHandlerConfig {
            path: "runc".into(),
            ..Default::default()
        };
        assert!(check_handler_config("runc", &ok).is_ok());
        assert!(check_handler_config("berth", &ok).is_err());
        assert!(check_handler_config("bad name", &ok).is_err());
        assert!(check_handler_config("runc", &RuntimeHandlerConfig::default()).is_err());
        let relative_root = RuntimeHandlerConfig {
            root: "run/runc".into(),
            ..ok.clone()
        };
        assert!(check_handler_config("runc", &relative_root).is_err());
    }
}
