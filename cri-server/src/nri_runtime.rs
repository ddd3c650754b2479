//! berthd's handle on NRI, held in `DaemonState` (the hooks are in `nri_hooks`, what plugins
//! ask of berthd in `nri_plugins`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::NriConfig;

/// berthd's NRI: the runtime side and, per container, whether its stop was relayed.
pub struct NriHooks {
    pub nri: Arc<nri::Nri>,
    pub(crate) stops: Arc<Mutex<HashMap<String, Arc<tokio::sync::OnceCell<()>>>>>,
}

impl NriHooks {
    pub fn new(cfg: &NriConfig) -> NriHooks {
        NriHooks {
            nri: nri::Nri::new(nri::Config {
                socket_path: cfg.socket_path.clone(),
                plugin_path: cfg.plugin_path.clone(),
                plugin_config_path: cfg.plugin_config_path.clone(),
                registration_timeout: cfg.plugin_registration_timeout.0,
                request_timeout: cfg.plugin_request_timeout.0,
                disable_connections: cfg.disable_connections,
                runtime_name: "berth".into(),
                runtime_version: env!("CARGO_PKG_VERSION").into(),
            }),
            stops: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Whether container `id`'s stop was relayed to plugins (set once).
    pub(crate) fn stop_cell(&self, id: &str) -> Arc<tokio::sync::OnceCell<()>> {
        self.stops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone()
    }
}
