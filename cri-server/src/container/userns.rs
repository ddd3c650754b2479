//! User namespaces as kubelet asks for them (`hostUsers: false`): `NamespaceOption.userns_options`
//! with mode POD and the pod's UID/GID mappings. Checked here, once for the pod and again for
//! each container (which must ask for the pod's namespace or none), with errors naming the
//! field.

use crate::error::Error;
use proto::cri::{self, IdMapping, NamespaceMode, UserNamespace};
use runtime_core::userns::{IdMap, IdRange, MAX_RANGES};

/// The pod's user namespace mappings from its config, `None` for the host's user namespace.
pub fn pod_user_namespace(config: &cri::PodSandboxConfig) -> Result<Option<IdMap>, Error> {
    let ns = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    let Some(ns) = ns else { return Ok(None) };
    let field = "config.linux.security_context.namespace_options";
    let map = user_namespace(ns.userns_options.as_ref(), field)?;
    if map.is_some() {
        let host = [("network", ns.network), ("ipc", ns.ipc), ("pid", ns.pid)]
            .into_iter()
            .find(|(_, mode)| *mode == NamespaceMode::Node as i32);
        if let Some((kind, _)) = host {
            return Err(Error::invalid(format!(
                "{field}.userns_options: a user namespace cannot be combined with the host's {kind} namespace ({field}.{kind} is NODE)"
            )));
        }
        if !runtime_core::mount_api::idmapped_mounts_supported() {
            return Err(Error::failed_precondition(format!(
                "{field}.userns_options: this host cannot run pods in user namespaces (they need user namespaces enabled and idmapped mounts of overlayfs layers, Linux 5.19+)"
            )));
        }
    }
    Ok(map)
}

/// Checks a container's `userns_options` against its pod's namespace: none, NODE for a pod
/// without one, or POD with exactly the pod's mappings.
pub fn check_container(config: &cri::ContainerConfig, pod: Option<&IdMap>) -> Result<(), Error> {
    let sc = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    let field = "config.linux.security_context.namespace_options";
    let requested = sc
        .and_then(|s| s.namespace_options.as_ref())
        .and_then(|n| n.userns_options.as_ref());
    if let Some(opts) = requested {
        let own = user_namespace(Some(opts), field)?;
        if own.as_ref() != pod {
            return Err(Error::invalid(format!(
                "{field}.userns_options must match the pod sandbox's user namespace (containers run in their pod's)"
            )));
        }
    }
    let Some(map) = pod else { return Ok(()) };
    if sc.is_some_and(|s| s.privileged) {
        return Err(Error::invalid(
            "config.linux.security_context.privileged: a privileged container cannot run in a user namespace",
        ));
    }
    check_mapped(map, config)
}

/// Checks the user and groups a container asks for are mapped in the pod's namespace (an
/// unmapped ID would fail at start).
fn check_mapped(map: &IdMap, config: &cri::ContainerConfig) -> Result<(), Error> {
    let sc = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default();
    let unmapped = |what: &str, id: i64, host: Option<u32>| {
        if host.is_none() {
            return Err(Error::invalid(format!(
                "config.linux.security_context.{what} {id} is not mapped in the pod's user namespace"
            )));
        }
        Ok(())
    };
    let id = |v: i64| u32::try_from(v).ok();
    if let Some(u) = &sc.run_as_user {
        unmapped(
            "run_as_user",
            u.value,
            id(u.value).and_then(|u| map.host_uid(u)),
        )?;
    }
    if let Some(g) = &sc.run_as_group {
        unmapped(
            "run_as_group",
            g.value,
            id(g.value).and_then(|g| map.host_gid(g)),
        )?;
    }
    for g in &sc.supplemental_groups {
        unmapped(
            "supplemental_groups",
            *g,
            id(*g).and_then(|g| map.host_gid(g)),
        )?;
    }
    Ok(())
}

/// The mappings of a `UserNamespace` option: `None` for NODE (or no option), the checked
/// mappings for POD; CONTAINER and TARGET are not modes kubelet uses for user namespaces.
fn user_namespace(opts: Option<&UserNamespace>, field: &str) -> Result<Option<IdMap>, Error> {
    let Some(opts) = opts else { return Ok(None) };
    let field = format!("{field}.userns_options");
    match NamespaceMode::try_from(opts.mode) {
        Ok(NamespaceMode::Node) => {
            if !opts.uids.is_empty() || !opts.gids.is_empty() {
                return Err(Error::invalid(format!(
                    "{field}: uids and gids must be empty for mode NODE (the host's user namespace)"
                )));
            }
            Ok(None)
        }
        Ok(NamespaceMode::Pod) => Ok(Some(IdMap {
            uids: ranges(&opts.uids, &format!("{field}.uids"))?,
            gids: ranges(&opts.gids, &format!("{field}.gids"))?,
        })),
        Ok(mode) => Err(Error::invalid(format!(
            "{field}.mode: {} is not supported for user namespaces (POD or NODE)",
            mode.as_str_name()
        ))),
        Err(_) => Err(Error::invalid(format!(
            "{field}.mode: unknown mode {}",
            opts.mode
        ))),
    }
}

/// Checks one list of mappings: present, non-empty ranges that fit in 32 bits, overlap neither
/// inside nor outside, in at most [`MAX_RANGES`] ranges. The CRI sets no limit on how many IDs
/// a pod maps (kubelet gives each pod 65536 by default, but its range length is configurable).
pub fn ranges(mappings: &[IdMapping], field: &str) -> Result<Vec<IdRange>, Error> {
    let invalid = |reason: String| Err(Error::invalid(format!("{field}: {reason}")));
    if mappings.is_empty() {
        return invalid("at least one mapping is required for mode POD".into());
    }
    if mappings.len() > MAX_RANGES {
        return invalid(format!(
            "{} mappings, the kernel takes at most {MAX_RANGES}",
            mappings.len()
        ));
    }
    for (i, m) in mappings.iter().enumerate() {
        if m.length == 0 {
            return invalid(format!("[{i}].length must be positive"));
        }
        for (side, start) in [("container_id", m.container_id), ("host_id", m.host_id)] {
            if u64::from(start) + u64::from(m.length) > 1 << 32 {
                return invalid(format!(
                    "[{i}]: {side} {start} + length {} passes 2^32",
                    m.length
                ));
            }
        }
    }
    // As containerd: the namespace's root must exist, for the pod's files and for the
    // container's own setup to have an owner inside.
    if !mappings.iter().any(|m| m.container_id == 0) {
        return invalid("container ID 0 must be mapped".into());
    }
    for side in ["container_id", "host_id"] {
        if let Some((a, b)) = overlap(mappings, side) {
            return invalid(format!("[{a}] and [{b}] overlap in {side}"));
        }
    }
    Ok(mappings
        .iter()
        .map(|m| IdRange {
            container_id: m.container_id,
            host_id: m.host_id,
            length: m.length,
        })
        .collect())
}

/// The first two mappings whose ranges on `side` ("container_id" or "host_id") overlap.
fn overlap(mappings: &[IdMapping], side: &str) -> Option<(usize, usize)> {
    let start = |m: &IdMapping| {
        u64::from(if side == "host_id" {
            m.host_id
        } else {
            m.container_id
        })
    };
    for (i, a) in mappings.iter().enumerate() {
        for (j, b) in mappings.iter().enumerate().skip(i + 1) {
            let (sa, sb) = (start(a), start(b));
            if sa < sb + u64::from(b.length) && sb < sa + u64::from(a.length) {
                return Some((i, j));
            }
        }
    }
    None
}

/// The shim protocol's form of a pod's mappings: (uids, gids).
pub fn to_proto(map: Option<&IdMap>) -> (Vec<proto::shim::IdMapping>, Vec<proto::shim::IdMapping>) {
    match map {
        Some(m) => (IdMap::to_proto(&m.uids), IdMap::to_proto(&m.gids)),
        None => (Vec::new(), Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(container_id: u32, host_id: u32, length: u32) -> IdMapping {
        IdMapping {
            host_id,
            container_id,
            length,
        }
    }

    fn opts(mode: NamespaceMode, uids: Vec<IdMapping>) -> UserNamespace {
        UserNamespace {
            mode: mode as i32,
            gids: uids.clone(),
            uids,
        }
    }

    fn err(opts: &UserNamespace) -> String {
        user_namespace(Some(opts), "f")
            .expect_err("refused")
            .message()
            .to_string()
    }

    #[test]
    fn pod_mode_with_kubelets_mapping_is_accepted() {
        let map = user_namespace(
            Some(&opts(NamespaceMode::Pod, vec![mapping(0, 65536, 65536)])),
            "f",
        )
        .expect("valid")
        .expect("a namespace");
        assert_eq!(map.host_uid(0), Some(65536));
        assert_eq!(
            user_namespace(Some(&opts(NamespaceMode::Node, vec![])), "f").expect("node"),
            None
        );
    }

    #[test]
    fn bad_mappings_are_refused_naming_the_field() {
        let e = err(&opts(
            NamespaceMode::Pod,
            vec![mapping(0, 100_000, 1000), mapping(500, 200_000, 1000)],
        ));
        assert!(
            e.contains("f.userns_options.uids") && e.contains("overlap in container_id"),
            "{e}"
        );
        let e = err(&opts(
            NamespaceMode::Pod,
            vec![mapping(0, 100_000, 1000), mapping(5000, 100_500, 10)],
        ));
        assert!(e.contains("overlap in host_id"), "{e}");
        // critest maps 100000 IDs: the CRI sets no per-pod limit.
        user_namespace(
            Some(&opts(
                NamespaceMode::Pod,
                vec![mapping(0, 100_000, 100_000)],
            )),
            "f",
        )
        .expect("a large mapping is accepted");
        let e = err(&opts(NamespaceMode::Pod, vec![mapping(1, 100_000, 1000)]));
        assert!(e.contains("container ID 0 must be mapped"), "{e}");
        let e = err(&opts(NamespaceMode::Pod, vec![]));
        assert!(e.contains("at least one mapping"), "{e}");
        let e = err(&opts(NamespaceMode::Pod, vec![mapping(0, u32::MAX, 2)]));
        assert!(e.contains("passes 2^32"), "{e}");
        let e = err(&opts(NamespaceMode::Node, vec![mapping(0, 100_000, 10)]));
        assert!(e.contains("must be empty for mode NODE"), "{e}");
        let e = err(&opts(
            NamespaceMode::Container,
            vec![mapping(0, 100_000, 10)],
        ));
        assert!(
            e.contains("f.userns_options.mode") && e.contains("CONTAINER"),
            "{e}"
        );
    }
}
