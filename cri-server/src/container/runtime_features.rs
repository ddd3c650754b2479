//! The runtime handlers berth serves and what each supports, as `Status` reports them: kubelet
//! checks them before it sends user namespaces, recursive read-only mounts or a strict
//! supplemental groups policy. Besides the native executor, each `[runtimes.<name>]` of the
//! config is a handler run by an OCI runtime (docs/runtime-handlers.md).

use proto::cri::{RuntimeFeatures, RuntimeHandler, RuntimeHandlerFeatures};
use runtime_core::mount_api;

#[cfg(test)]
use crate::config::RuntimeHandlerConfig;
use crate::config::{Config, NATIVE_HANDLERS};

/// Every configured handler: the native ones with the features the running kernel gives
/// them, then each OCI runtime with the features it reports (`<runtime> features`).
pub fn runtime_handlers(config: &Config) -> Vec<RuntimeHandler> {
    let native = NATIVE_HANDLERS.iter().map(|name| RuntimeHandler {
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
                // The shim makes the idmapped mounts (runc 1.1 has none): the kernel must.
                user_namespaces: reported.user_namespaces && mount_api::idmapped_mounts_supported(),
            }),
        }
    });
    native.chain(oci).collect()
}

/// The native executor's features: recursive read-only mounts need `mount_setattr`, user
/// namespaces need idmapped mounts (of overlayfs layers too).
fn handler_features() -> RuntimeHandlerFeatures {
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
        // A user namespace with the host's network is refused (crate::container::userns).
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
}
