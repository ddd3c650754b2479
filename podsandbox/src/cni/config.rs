//! Finding and parsing CNI network config lists (`.conflist`, `.conf`, `.json`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::CniError;

/// File extensions CNI configs may have, as containerd and CRI-O accept them.
const CONFIG_EXTENSIONS: [&str; 3] = ["conflist", "conf", "json"];

/// A CNI spec version berth can speak; all share the 0.3+/1.0 result shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
}

impl CniVersion {
    const SUPPORTED: &'static str = "1.0.0, 0.4.0, 0.3.1, 0.3.0";

    pub(crate) fn parse(version: &str) -> Option<CniVersion> {
        match version {
            "0.3.0" => Some(CniVersion::V0_3_0),
            "0.3.1" => Some(CniVersion::V0_3_1),
            "0.4.0" => Some(CniVersion::V0_4_0),
            "1.0.0" => Some(CniVersion::V1_0_0),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
        }
    }

    /// CHECK, and `prevResult` on DEL, exist from 0.4.0 on.
    pub(crate) fn has_check(self) -> bool {
        self >= CniVersion::V0_4_0
    }
}

/// One plugin entry of a list: its `type` and its config object as written.
#[derive(Debug, Clone)]
pub(crate) struct PluginConf {
    pub(crate) plugin_type: String,
    pub(crate) conf: Map<String, Value>,
}

/// A validated network config list.
#[derive(Debug, Clone)]
pub(crate) struct NetworkList {
    pub(crate) name: String,
    pub(crate) version: CniVersion,
    pub(crate) disable_check: bool,
    pub(crate) plugins: Vec<PluginConf>,
    /// The list as JSON (a single `.conf` already wrapped), kept for the cache.
    pub(crate) raw: Value,
}

/// Loads the lexicographically first config in `dir`; `None` if there is none.
pub(crate) fn load_first(dir: &Path) -> Result<Option<NetworkList>, CniError> {
    let Some(path) = first_config_file(dir)? else {
        return Ok(None);
    };
    let bytes = fs::read(&path).map_err(|e| config_error(&path, format!("read: {e}")))?;
    let raw = parse_config_bytes(&path, &bytes)?;
    NetworkList::from_value(raw)
        .map(Some)
        .map_err(|reason| config_error(&path, reason))
}

fn first_config_file(dir: &Path) -> Result<Option<PathBuf>, CniError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CniError::ConfDir {
                dir: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut candidates = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| CniError::ConfDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if has_config_extension(&path) && path.is_file() {
            candidates.push(path);
        }
    }
    candidates.sort();
    Ok(candidates.into_iter().next())
}

fn has_config_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| CONFIG_EXTENSIONS.contains(&ext))
}

/// Parses a config file; a single-plugin config is wrapped as a one-entry list.
fn parse_config_bytes(path: &Path, bytes: &[u8]) -> Result<Value, CniError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| config_error(path, format!("invalid JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(config_error(path, "not a JSON object".to_string()));
    };
    let is_list =
        path.extension().is_some_and(|ext| ext == "conflist") || object.contains_key("plugins");
    if is_list {
        Ok(Value::Object(object))
    } else {
        Ok(wrap_single_plugin(object))
    }
}

fn wrap_single_plugin(conf: Map<String, Value>) -> Value {
    let mut list = Map::new();
    for key in ["cniVersion", "name", "disableCheck"] {
        if let Some(value) = conf.get(key) {
            list.insert(key.to_string(), value.clone());
        }
    }
    list.insert(
        "plugins".to_string(),
        Value::Array(vec![Value::Object(conf)]),
    );
    Value::Object(list)
}

fn config_error(path: &Path, reason: String) -> CniError {
    CniError::Config {
        path: path.to_path_buf(),
        reason,
    }
}

impl NetworkList {
    /// Validates a config list; the error is a reason without the file name.
    pub(crate) fn from_value(raw: Value) -> Result<NetworkList, String> {
        let object = raw.as_object().ok_or("not a JSON object")?;
        let name = required_str(object, "name")?;
        validate_name(name).map_err(|reason| format!("invalid name {name:?}: {reason}"))?;
        let version_str = required_str(object, "cniVersion")?;
        let version = CniVersion::parse(version_str).ok_or_else(|| {
            format!(
                "unsupported cniVersion {version_str:?} (supported: {})",
                CniVersion::SUPPORTED
            )
        })?;
        let disable_check = parse_disable_check(object.get("disableCheck"))?;
        let plugins = parse_plugins(object.get("plugins"))?;
        Ok(NetworkList {
            name: name.to_string(),
            version,
            disable_check,
            plugins,
            raw,
        })
    }
}

fn required_str<'a>(object: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    match object.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(format!("field {key:?} is empty")),
        Some(_) => Err(format!("field {key:?} is not a string")),
        None => Err(format!("missing field {key:?}")),
    }
}

fn parse_disable_check(value: Option<&Value>) -> Result<bool, String> {
    match value {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" || s == "false" => Ok(s == "true"),
        Some(other) => Err(format!("field \"disableCheck\" is not a boolean: {other}")),
    }
}

fn parse_plugins(value: Option<&Value>) -> Result<Vec<PluginConf>, String> {
    let plugins = match value {
        Some(Value::Array(plugins)) if !plugins.is_empty() => plugins,
        Some(Value::Array(_)) => return Err("field \"plugins\" is empty".to_string()),
        Some(_) => return Err("field \"plugins\" is not an array".to_string()),
        None => return Err("missing field \"plugins\"".to_string()),
    };
    plugins
        .iter()
        .enumerate()
        .map(|(index, plugin)| parse_plugin(plugin).map_err(|e| format!("plugins[{index}]: {e}")))
        .collect()
}

fn parse_plugin(value: &Value) -> Result<PluginConf, String> {
    let conf = value.as_object().ok_or("not a JSON object")?;
    let plugin_type = required_str(conf, "type")?;
    if plugin_type.contains('/') || plugin_type == "." || plugin_type == ".." {
        return Err(format!("type {plugin_type:?} is not a plain file name"));
    }
    Ok(PluginConf {
        plugin_type: plugin_type.to_string(),
        conf: conf.clone(),
    })
}

/// The spec's rule for network names and container ids: an alphanumeric first
/// character, then alphanumerics, `_`, `.` or `-`.
pub(crate) fn validate_name(value: &str) -> Result<(), &'static str> {
    let mut chars = value.chars();
    match chars.next() {
        None => return Err("is empty"),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return Err("must start with an ASCII letter or digit");
        }
        Some(_) => {}
    }
    if chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        Ok(())
    } else {
        Err("may only contain ASCII letters, digits, '_', '.' and '-'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn single_plugin_config_is_wrapped_as_list() {
        let conf = br#"{"cniVersion":"0.4.0","name":"net","type":"bridge"}"#;
        let raw = parse_config_bytes(Path::new("/x/10-net.conf"), conf).expect("parse");
        let list = NetworkList::from_value(raw).expect("valid");
        assert_eq!(list.name, "net");
        assert_eq!(list.version, CniVersion::V0_4_0);
        assert_eq!(list.plugins.len(), 1);
        assert_eq!(list.plugins[0].plugin_type, "bridge");
    }

    #[test]
    fn unsupported_version_is_rejected() {
        let raw = json!({"cniVersion":"0.2.0","name":"n","plugins":[{"type":"bridge"}]});
        let err = NetworkList::from_value(raw).expect_err("0.2.0");
        assert!(err.contains("unsupported cniVersion \"0.2.0\""), "{err}");
    }

    #[test]
    fn plugin_type_with_path_is_rejected() {
        let raw = json!({"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../sh"}]});
        let err = NetworkList::from_value(raw).expect_err("path type");
        assert!(err.contains("plugins[0]"), "{err}");
    }

    #[test]
    fn names_follow_the_spec() {
        assert!(validate_name("abc-1.2_3").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("-a").is_err());
        assert!(validate_name("a/b").is_err());
    }

    #[test]
    fn versions_from_0_4_0_have_check() {
        assert!(!CniVersion::V0_3_1.has_check());
        assert!(CniVersion::V0_4_0.has_check());
        assert!(CniVersion::V1_0_0.has_check());
    }
}
