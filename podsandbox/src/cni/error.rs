//! Errors from loading CNI configs and running CNI plugins.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// A CNI operation, as passed to plugins in `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniCommand {
    /// Attach the pod to the network.
    Add,
    /// Verify an attachment made by a previous ADD.
    Check,
    /// Detach the pod and release its resources.
    Del,
}

impl CniCommand {
    /// The value of `CNI_COMMAND`.
    pub fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Check => "CHECK",
            CniCommand::Del => "DEL",
        }
    }
}

impl fmt::Display for CniCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which plugin invocation an error came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginCall {
    /// Network (config list) name.
    pub network: String,
    /// Plugin `type`, i.e. the executable's name.
    pub plugin: String,
    /// The command the plugin was running.
    pub command: CniCommand,
}

impl fmt::Display for PluginCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CNI plugin {} {} (network {})",
            self.plugin, self.command, self.network
        )
    }
}

/// Everything that can go wrong with CNI.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// The config directory could not be listed.
    #[error("read CNI config dir {dir}: {source}")]
    ConfDir { dir: PathBuf, source: io::Error },
    /// A config file (or cached config) is unreadable or invalid.
    #[error("CNI config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    /// A pod field cannot be passed to plugins as given.
    #[error("invalid CNI {field} {value:?}: {reason}")]
    InvalidArgument {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    /// No executable named after the plugin's `type` in any bin dir.
    #[error("CNI plugin {plugin:?} (network {network}) not found in {}", join_paths(.bin_dirs))]
    PluginNotFound {
        network: String,
        plugin: String,
        bin_dirs: Vec<PathBuf>,
    },
    /// The plugin could not be started or talked to.
    #[error("{call}: run {path}: {source}")]
    Spawn {
        call: PluginCall,
        path: PathBuf,
        source: io::Error,
    },
    /// The plugin failed and reported a CNI error (`code`, `msg`, `details`).
    #[error("{call}: error code {code}: {msg}{}", details_suffix(.details))]
    Plugin {
        call: PluginCall,
        code: u64,
        msg: String,
        details: String,
    },
    /// The plugin failed without a parseable CNI error.
    #[error("{call}: {status}: {}", failure_output(.stderr, .stdout))]
    PluginFailed {
        call: PluginCall,
        status: ExitStatus,
        stderr: String,
        stdout: String,
    },
    /// The plugin did not finish in time and was killed.
    #[error("{call}: timed out after {timeout:?}, killed")]
    Timeout { call: PluginCall, timeout: Duration },
    /// The plugin succeeded but its output is not a usable result.
    #[error("{call}: invalid result: {reason}")]
    InvalidResult { call: PluginCall, reason: String },
    /// CHECK was asked of a network whose cniVersion predates it (< 0.4.0).
    #[error("CNI network {network}: cniVersion {version} does not support CHECK")]
    CheckUnsupported { network: String, version: String },
    /// CHECK needs the result of a previous ADD, and there is none.
    #[error("CNI network {network}: no cached ADD result for pod {pod_id}")]
    NotAttached { network: String, pod_id: String },
    /// The result cache could not be written or removed.
    #[error("CNI result cache {path}: {source}")]
    Cache { path: PathBuf, source: io::Error },
}

fn join_paths(paths: &[PathBuf]) -> String {
    let joined: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    format!("[{}]", joined.join(", "))
}

fn details_suffix(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(" ({details})")
    }
}

fn failure_output(stderr: &str, stdout: &str) -> String {
    match (stderr.is_empty(), stdout.is_empty()) {
        (true, true) => "no error message".to_string(),
        (false, true) => format!("stderr: {stderr}"),
        (true, false) => format!("stdout: {stdout}"),
        (false, false) => format!("stderr: {stderr}; stdout: {stdout}"),
    }
}
