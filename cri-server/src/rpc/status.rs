//! `Status`: whether the runtime and the pod network are ready, and (verbose) the effective
//! configuration for `crictl info`.

use std::collections::HashMap;
use std::path::Path;

use nix::unistd::{AccessFlags, access};
use proto::cri::{RuntimeCondition, RuntimeStatus, StatusRequest, StatusResponse};

use crate::state::DaemonState;

/// CRI condition type: the runtime can run containers.
pub const RUNTIME_READY: &str = "RuntimeReady";
/// CRI condition type: the pod network is usable.
pub const NETWORK_READY: &str = "NetworkReady";

/// Answers `Status`; `verbose` adds `info["config"]` (secrets redacted) and the cgroup layout,
/// each value a JSON document as crictl expects.
pub fn status(state: &DaemonState, req: &StatusRequest) -> StatusResponse {
    let mut info = HashMap::new();
    if req.verbose {
        info.insert("config".into(), to_json(&state.config.redacted()));
        let layout = match &state.cgroup_layout {
            Ok(l) => serde_json::json!({ "layout": l, "driver": state.config.cgroup_driver }),
            Err(e) => serde_json::json!({ "error": e, "driver": state.config.cgroup_driver }),
        };
        info.insert("cgroups".into(), layout.to_string());
        let network = match state.pod_runtime.network_status() {
            Ok(kind) => serde_json::json!({ "network": kind }),
            Err(e) => serde_json::json!({ "error": e }),
        };
        info.insert("network".into(), network.to_string());
        let metrics = state
            .metrics_address
            .get()
            .map_or_else(String::new, ToString::to_string);
        info.insert("metricsAddress".into(), to_json(&metrics));
        let kubelet = serde_json::json!({
            "podCIDR": state.kubelet_config.pod_cidr(),
            "usedFor": "nothing: pods get addresses from network.pod_cidr (built-in network) or the CNI config's IPAM",
        });
        info.insert("runtimeConfig".into(), kubelet.to_string());
    }
    StatusResponse {
        status: Some(RuntimeStatus {
            conditions: vec![runtime_condition(state), network_condition(state)],
        }),
        info,
        runtime_handlers: crate::container::runtime_features::runtime_handlers(&state.config),
        features: Some(crate::container::runtime_features::runtime_features()),
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

fn runtime_condition(state: &DaemonState) -> RuntimeCondition {
    let c = &state.config;
    let problem = [("root_dir", &c.root_dir), ("state_dir", &c.state_dir)]
        .into_iter()
        .find_map(|(key, dir)| dir_problem(dir).map(|p| format!("{key} {}: {p}", dir.display())))
        .map(|m| ("StateDirUnavailable", m))
        .or_else(|| {
            state
                .cgroup_layout
                .as_ref()
                .err()
                .map(|e| ("CgroupsUnavailable", format!("cgroups: {e}")))
        });
    match problem {
        None => condition(RUNTIME_READY, None),
        Some((reason, message)) => condition(RUNTIME_READY, Some((reason, message))),
    }
}

fn network_condition(state: &DaemonState) -> RuntimeCondition {
    match state.pod_runtime.network_status() {
        Ok(_) => condition(NETWORK_READY, None),
        Err(message) => condition(NETWORK_READY, Some(("NetworkPluginNotReady", message))),
    }
}

fn condition(kind: &str, problem: Option<(&str, String)>) -> RuntimeCondition {
    match problem {
        None => RuntimeCondition {
            r#type: kind.into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        },
        Some((reason, message)) => RuntimeCondition {
            r#type: kind.into(),
            status: false,
            reason: reason.into(),
            message,
        },
    }
}

/// Why `dir` cannot hold berth's state, if it cannot.
fn dir_problem(dir: &Path) -> Option<String> {
    match std::fs::metadata(dir) {
        Err(e) => Some(e.to_string()),
        Ok(m) if !m.is_dir() => Some("not a directory".into()),
        Ok(_) => access(dir, AccessFlags::W_OK | AccessFlags::X_OK)
            .err()
            .map(|e| format!("not writable: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn state_in(dir: &Path) -> DaemonState {
        let mut config = Config {
            root_dir: dir.join("root"),
            state_dir: dir.join("state"),
            ..Config::default()
        };
        config.cni.conf_dir = dir.join("no-cni");
        // Any readable file: berthd only copies it into its sealed memfd here.
        config.shim_path = "/bin/true".into();
        let mut state = DaemonState::new(config).expect("daemon state");
        state.cgroup_layout = Ok(runtime_core::cgroups::CgroupLayout::Hybrid);
        state
    }

    #[test]
    fn missing_state_dir_makes_runtime_not_ready_with_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = state_in(dir.path());
        let resp = status(&state, &StatusRequest { verbose: false });
        let cond = &resp.status.expect("status").conditions[0];
        assert_eq!(cond.r#type, RUNTIME_READY);
        assert!(!cond.status);
        assert_eq!(cond.reason, "StateDirUnavailable");
        assert!(cond.message.contains("state_dir"), "{}", cond.message);
    }

    #[test]
    fn ready_runtime_has_no_reason_and_verbose_info_is_json() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = state_in(dir.path());
        std::fs::create_dir(&state.config.state_dir).expect("state dir");
        let resp = status(&state, &StatusRequest { verbose: true });
        let conds = resp.status.expect("status").conditions;
        assert!(conds[0].status && conds[0].reason.is_empty());
        assert_eq!(conds[1].r#type, NETWORK_READY);
        assert!(conds[1].status, "built-in network is ready: {:?}", conds[1]);
        let config: serde_json::Value =
            serde_json::from_str(&resp.info["config"]).expect("config is JSON");
        assert_eq!(config["network"]["pod_cidr"], "10.88.0.0/16");
        let cg: serde_json::Value = serde_json::from_str(&resp.info["cgroups"]).expect("JSON");
        assert_eq!(cg["layout"], "hybrid");
    }

    #[test]
    fn non_verbose_status_has_no_info() {
        let dir = tempfile::tempdir().expect("tempdir");
        let resp = status(&state_in(dir.path()), &StatusRequest { verbose: false });
        assert!(resp.info.is_empty());
    }
}
