//! The runtime handlers berth serves and what each supports, as `Status` reports them: kubelet
//! checks them before it sends user namespaces, recursive read-only mounts or a strict
//! supplemental groups policy.

use proto::cri::{RuntimeFeatures, RuntimeHandler, RuntimeHandlerFeatures};
use runtime_core::mount_api;

/// Handler names `RunPodSandbox` accepts: the default (`""`) and its explicit name. Both are
/// the native executor.
pub const HANDLERS: [&str; 2] = ["", "berth"];

/// Every configured handler with the features the running kernel gives it.
pub fn runtime_handlers() -> Vec<RuntimeHandler> {
    HANDLERS
        .iter()
        .map(|name| RuntimeHandler {
            name: name.to_string(),
            features: Some(handler_features()),
        })
        .collect()
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
        // A user namespace with the host's network is refused (crate::container::userns).
        user_namespaces_host_network: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accepted_handler_is_listed_once_with_features() {
        let handlers = runtime_handlers();
        let names: Vec<&str> = handlers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, HANDLERS);
        assert!(handlers.iter().all(|h| h.features.is_some()));
        assert!(runtime_features().supplemental_groups_policy);
    }
}
