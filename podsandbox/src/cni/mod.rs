//! CNI plugin invocation for pod sandboxes, as containerd and CRI-O do it.
//!
//! berth uses the lexicographically first config in the CNI config dir, runs
//! its plugins for ADD, CHECK and DEL, and caches each ADD's result together
//! with the config that produced it, so CHECK and DEL behave the same after a
//! berthd restart or a config change.
//!
//! ```no_run
//! # use podsandbox::cni::{CniError, CniNetwork, CniPod, CniSettings};
//! # async fn example(settings: &CniSettings, pod: &CniPod<'_>) -> Result<(), CniError> {
//! if let Some(network) = CniNetwork::load(settings)? {
//!     let result = network.add(pod).await?;
//!     println!("pod IPs: {:?}", result.ips);
//!     network.del(pod).await?;
//! }
//! # Ok(()) }
//! ```

mod cache;
mod config;
mod error;
mod invoke;
mod result;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};

use cache::CacheEntry;
use config::{NetworkList, PluginConf};
pub use error::{CniCommand, CniError, PluginCall};
use invoke::{PluginEnv, PluginRunner};
pub use result::CniResult;

/// Where CNI configs, plugins and berth's result cache live.
#[derive(Debug, Clone)]
pub struct CniSettings {
    /// Directory holding `*.conflist`, `*.conf` and `*.json` network configs.
    pub conf_dir: PathBuf,
    /// Directories searched, in order, for plugin executables (also `CNI_PATH`).
    pub bin_dirs: Vec<PathBuf>,
    /// Persistent directory for cached ADD results, e.g. `/var/lib/berth/network/cni-cache`.
    pub cache_dir: PathBuf,
    /// Upper bound for each single plugin invocation; a plugin still running is killed.
    pub timeout: Duration,
}

/// A pod port published on the host, passed to plugins with the `portMappings` capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniPortMapping {
    /// Port on the host.
    pub host_port: u16,
    /// Port inside the pod.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// Host address to bind; empty for all.
    pub host_ip: String,
}

/// The pod sandbox being attached to or detached from the network.
#[derive(Debug, Clone, Copy)]
pub struct CniPod<'a> {
    /// Pod sandbox id, passed as `CNI_CONTAINERID`.
    pub id: &'a str,
    /// Path of the pod's network namespace; may be empty for DEL if it is gone.
    pub netns: &'a Path,
    /// Interface name inside the pod, usually `eth0`.
    pub ifname: &'a str,
    /// Kubernetes pod name.
    pub name: &'a str,
    /// Kubernetes pod namespace.
    pub namespace: &'a str,
    /// Kubernetes pod UID.
    pub uid: &'a str,
    /// Host ports to publish.
    pub port_mappings: &'a [CniPortMapping],
}

/// One loaded network config list, ready to attach pods.
#[derive(Debug, Clone)]
pub struct CniNetwork {
    list: NetworkList,
    settings: CniSettings,
}

/// How an operation runs: with which list, capability args and previous result.
struct Attachment<'a> {
    list: &'a NetworkList,
    capability_args: &'a Value,
    prev_result: Option<&'a Value>,
}

impl CniNetwork {
    /// Loads the lexicographically first `*.conflist`, `*.conf` or `*.json` in
    /// `conf_dir`; `Ok(None)` if the directory is missing or holds none.
    pub fn load(settings: &CniSettings) -> Result<Option<CniNetwork>, CniError> {
        let list = config::load_first(&settings.conf_dir)?;
        Ok(list.map(|list| CniNetwork {
            list,
            settings: settings.clone(),
        }))
    }

    /// The network's `name`.
    pub fn name(&self) -> &str {
        &self.list.name
    }

    /// The network's `cniVersion`.
    pub fn cni_version(&self) -> &str {
        self.list.version.as_str()
    }

    /// Attaches the pod: runs every plugin in order and caches the final result.
    /// On failure the plugins are DELeted again (best effort) and nothing is cached.
    pub async fn add(&self, pod: &CniPod<'_>) -> Result<CniResult, CniError> {
        let env = plugin_env(pod)?;
        let capability_args = capability_args(pod.port_mappings);
        tracing::info!(pod_id = pod.id, network = %self.list.name, "CNI ADD");
        match self.add_and_cache(pod, &env, &capability_args).await {
            Ok(result) => {
                tracing::info!(
                    pod_id = pod.id,
                    network = %self.list.name,
                    ips = ?result.ips,
                    "CNI ADD done"
                );
                Ok(result)
            }
            Err(err) => {
                self.roll_back_add(&env, &capability_args).await;
                Err(err)
            }
        }
    }

    /// Verifies the pod's attachment against the cached ADD result (cniVersion 0.4.0+).
    /// Succeeds without running plugins if the config sets `disableCheck`.
    pub async fn check(&self, pod: &CniPod<'_>) -> Result<(), CniError> {
        let env = plugin_env(pod)?;
        ensure_check_supported(&self.list)?;
        let Some((list, entry)) = self.cached_attachment(pod.id)? else {
            return Err(CniError::NotAttached {
                network: self.list.name.clone(),
                pod_id: pod.id.to_string(),
            });
        };
        ensure_check_supported(&list)?;
        if list.disable_check {
            return Ok(());
        }
        let attachment = Attachment {
            list: &list,
            capability_args: &entry.capability_args,
            prev_result: Some(&entry.result),
        };
        self.run_all(CniCommand::Check, &attachment, &env).await
    }

    /// Detaches the pod: runs the plugins in reverse order, with the cached config
    /// and result if there are any, then drops the cache entry. Idempotent.
    pub async fn del(&self, pod: &CniPod<'_>) -> Result<(), CniError> {
        let env = plugin_env(pod)?;
        tracing::info!(pod_id = pod.id, network = %self.list.name, "CNI DEL");
        let cached = self.cached_attachment(pod.id).unwrap_or_else(|err| {
            tracing::warn!(pod_id = pod.id, error = %err, "ignoring unusable CNI cache entry");
            None
        });
        let pod_capability_args = capability_args(pod.port_mappings);
        let attachment = match &cached {
            Some((list, entry)) => Attachment {
                list,
                capability_args: &entry.capability_args,
                prev_result: list.version.has_check().then_some(&entry.result),
            },
            None => Attachment {
                list: &self.list,
                capability_args: &pod_capability_args,
                prev_result: None,
            },
        };
        self.run_all(CniCommand::Del, &attachment, &env).await?;
        let path = self.cache_path(pod.id);
        blocking(path.clone(), move || cache::remove(&path)).await
    }

    /// The cached result of the pod's last successful ADD on this network, if any.
    pub fn cached_result(&self, pod_id: &str) -> Option<CniResult> {
        if config::validate_name(pod_id).is_err() {
            return None;
        }
        match self.cached_attachment(pod_id) {
            Ok(cached) => cached.and_then(|(_, entry)| CniResult::from_value(entry.result).ok()),
            Err(err) => {
                tracing::debug!(pod_id, error = %err, "unusable CNI cache entry");
                None
            }
        }
    }

    async fn add_and_cache(
        &self,
        pod: &CniPod<'_>,
        env: &PluginEnv,
        capability_args: &Value,
    ) -> Result<CniResult, CniError> {
        let attachment = Attachment {
            list: &self.list,
            capability_args,
            prev_result: None,
        };
        let (last_call, raw) = self.run_add_chain(&attachment, env).await?;
        let result =
            CniResult::from_value(raw.clone()).map_err(|reason| CniError::InvalidResult {
                call: last_call,
                reason,
            })?;
        let entry = CacheEntry {
            kind: cache::KIND.to_string(),
            network: self.list.name.clone(),
            pod_id: pod.id.to_string(),
            if_name: pod.ifname.to_string(),
            cni_args: env.args.clone(),
            capability_args: capability_args.clone(),
            config: self.list.raw.clone(),
            result: raw,
        };
        let path = self.cache_path(pod.id);
        blocking(path.clone(), move || cache::write(&path, &entry)).await?;
        Ok(result)
    }

    /// Runs ADD through the list, each plugin getting the previous one's result.
    async fn run_add_chain(
        &self,
        attachment: &Attachment<'_>,
        env: &PluginEnv,
    ) -> Result<(PluginCall, Value), CniError> {
        let runner = self.runner(env);
        let mut last: Option<(PluginCall, Value)> = None;
        for plugin in &attachment.list.plugins {
            let call = plugin_call(attachment.list, plugin, CniCommand::Add);
            let prev_result = last.as_ref().map(|(_, result)| result);
            let stdin = plugin_stdin(
                attachment.list,
                plugin,
                prev_result,
                attachment.capability_args,
            );
            let stdout = runner.run(&call, &stdin).await?;
            let result = parse_add_output(&call, &stdout)?;
            last = Some((call, result));
        }
        last.ok_or_else(|| CniError::Config {
            path: self.settings.conf_dir.clone(),
            reason: format!("network {} has no plugins", attachment.list.name),
        })
    }

    /// Runs CHECK (in order, stopping at the first failure) or DEL (in reverse, every plugin
    /// even after one failed, so a broken plugin does not keep the others from releasing what
    /// they hold; the first failure is returned) with the same previous result for all.
    async fn run_all(
        &self,
        command: CniCommand,
        attachment: &Attachment<'_>,
        env: &PluginEnv,
    ) -> Result<(), CniError> {
        let runner = self.runner(env);
        let plugins: Vec<&PluginConf> = match command {
            CniCommand::Del => attachment.list.plugins.iter().rev().collect(),
            CniCommand::Add | CniCommand::Check => attachment.list.plugins.iter().collect(),
        };
        let mut first_error = None;
        for plugin in plugins {
            let call = plugin_call(attachment.list, plugin, command);
            let stdin = plugin_stdin(
                attachment.list,
                plugin,
                attachment.prev_result,
                attachment.capability_args,
            );
            match runner.run(&call, &stdin).await {
                Ok(_) => {}
                Err(err) if command == CniCommand::Del => {
                    tracing::warn!(pod_id = %env.container_id, error = %err, "CNI DEL failed; running the remaining plugins");
                    first_error.get_or_insert(err);
                }
                Err(err) => return Err(err),
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The spec's advice after a failed ADD: DEL every plugin, even those not reached.
    async fn roll_back_add(&self, env: &PluginEnv, capability_args: &Value) {
        let attachment = Attachment {
            list: &self.list,
            capability_args,
            prev_result: None,
        };
        if let Err(err) = self.run_all(CniCommand::Del, &attachment, env).await {
            tracing::warn!(pod_id = %env.container_id, error = %err, "CNI DEL after failed ADD");
        }
    }

    fn cached_attachment(
        &self,
        pod_id: &str,
    ) -> Result<Option<(NetworkList, CacheEntry)>, CniError> {
        let path = self.cache_path(pod_id);
        let invalid = |reason: String| CniError::Config {
            path: path.clone(),
            reason,
        };
        let Some(entry) = cache::read(&path).map_err(invalid)? else {
            return Ok(None);
        };
        let list = NetworkList::from_value(entry.config.clone())
            .map_err(|reason| invalid(format!("cached config: {reason}")))?;
        Ok(Some((list, entry)))
    }

    fn cache_path(&self, pod_id: &str) -> PathBuf {
        cache::entry_path(&self.settings.cache_dir, &self.list.name, pod_id)
    }

    fn runner<'a>(&'a self, env: &'a PluginEnv) -> PluginRunner<'a> {
        PluginRunner {
            bin_dirs: &self.settings.bin_dirs,
            timeout: self.settings.timeout,
            env,
        }
    }
}

fn ensure_check_supported(list: &NetworkList) -> Result<(), CniError> {
    if list.version.has_check() {
        Ok(())
    } else {
        Err(CniError::CheckUnsupported {
            network: list.name.clone(),
            version: list.version.as_str().to_string(),
        })
    }
}

fn plugin_call(list: &NetworkList, plugin: &PluginConf, command: CniCommand) -> PluginCall {
    PluginCall {
        network: list.name.clone(),
        plugin: plugin.plugin_type.clone(),
        command,
    }
}

/// The plugin's own config with the list's `name` and `cniVersion`, the
/// previous result and the `runtimeConfig` its capabilities ask for.
fn plugin_stdin(
    list: &NetworkList,
    plugin: &PluginConf,
    prev_result: Option<&Value>,
    capability_args: &Value,
) -> Vec<u8> {
    let mut conf = plugin.conf.clone();
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert(
        "cniVersion".into(),
        Value::String(list.version.as_str().into()),
    );
    if let Some(prev_result) = prev_result {
        conf.insert("prevResult".into(), prev_result.clone());
    }
    let runtime_config = runtime_config(&plugin.conf, capability_args);
    if !runtime_config.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime_config));
    }
    Value::Object(conf).to_string().into_bytes()
}

/// Capability arguments for the capabilities the plugin enables.
fn runtime_config(conf: &Map<String, Value>, capability_args: &Value) -> Map<String, Value> {
    let Some(capabilities) = conf.get("capabilities").and_then(Value::as_object) else {
        return Map::new();
    };
    capabilities
        .iter()
        .filter(|(_, enabled)| enabled.as_bool() == Some(true))
        .filter_map(|(name, _)| {
            let arg = capability_args.get(name)?;
            Some((name.clone(), arg.clone()))
        })
        .collect()
}

fn capability_args(port_mappings: &[CniPortMapping]) -> Value {
    let mappings: Vec<Value> = port_mappings
        .iter()
        .map(|mapping| {
            json!({
                "hostPort": mapping.host_port,
                "containerPort": mapping.container_port,
                "protocol": mapping.protocol.to_ascii_lowercase(),
                "hostIP": mapping.host_ip,
            })
        })
        .collect();
    json!({ "portMappings": mappings })
}

fn parse_add_output(call: &PluginCall, stdout: &[u8]) -> Result<Value, CniError> {
    let invalid = |reason: String| CniError::InvalidResult {
        call: call.clone(),
        reason,
    };
    if stdout.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid("no result on stdout".to_string()));
    }
    let value: Value =
        serde_json::from_slice(stdout).map_err(|e| invalid(format!("not JSON: {e}")))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(invalid("not a JSON object".to_string()))
    }
}

/// Validates the pod's fields and renders the `CNI_*` environment.
fn plugin_env(pod: &CniPod<'_>) -> Result<PluginEnv, CniError> {
    config::validate_name(pod.id)
        .map_err(|reason| invalid_argument("container id", pod.id, reason))?;
    validate_ifname(pod.ifname).map_err(|reason| invalid_argument("ifname", pod.ifname, reason))?;
    for (field, value) in [
        ("pod name", pod.name),
        ("pod namespace", pod.namespace),
        ("pod uid", pod.uid),
    ] {
        if value.contains([';', '=']) {
            return Err(invalid_argument(
                field,
                value,
                "must not contain ';' or '='",
            ));
        }
    }
    let args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        pod.namespace, pod.name, pod.id, pod.uid
    );
    Ok(PluginEnv {
        container_id: pod.id.to_string(),
        netns: pod.netns.to_path_buf(),
        ifname: pod.ifname.to_string(),
        args,
    })
}

/// The spec's interface name rule (Linux's): 1 to 15 bytes, no '/', ':' or whitespace.
fn validate_ifname(ifname: &str) -> Result<(), &'static str> {
    if ifname.is_empty() || ifname.len() > 15 {
        Err("must be 1 to 15 bytes long")
    } else if ifname == "." || ifname == ".." {
        Err("must not be '.' or '..'")
    } else if ifname.contains(|c: char| c == '/' || c == ':' || c.is_whitespace()) {
        Err("must not contain '/', ':' or whitespace")
    } else {
        Ok(())
    }
}

fn invalid_argument(field: &'static str, value: &str, reason: &'static str) -> CniError {
    CniError::InvalidArgument {
        field,
        value: value.to_string(),
        reason,
    }
}

/// Runs blocking cache I/O off the async workers.
async fn blocking<T, F>(path: PathBuf, work: F) -> Result<T, CniError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, CniError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|join_error| CniError::Cache {
            path,
            source: std::io::Error::other(join_error),
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(conf: Value) -> PluginConf {
        let conf = conf.as_object().cloned().unwrap_or_default();
        PluginConf {
            plugin_type: "portmap".into(),
            conf,
        }
    }

    #[test]
    fn runtime_config_only_carries_enabled_capabilities() {
        let args = capability_args(&[CniPortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "TCP".into(),
            host_ip: String::new(),
        }]);
        let enabled = plugin(json!({"type": "portmap", "capabilities": {"portMappings": true}}));
        let rc = runtime_config(&enabled.conf, &args);
        assert_eq!(
            Value::Object(rc),
            json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]})
        );
        let disabled = plugin(json!({"type": "portmap", "capabilities": {"portMappings": false}}));
        assert!(runtime_config(&disabled.conf, &args).is_empty());
    }

    #[test]
    fn ifname_rules() {
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("").is_err());
        assert!(validate_ifname("a-very-long-ifname").is_err());
        assert!(validate_ifname("eth:0").is_err());
    }
}
