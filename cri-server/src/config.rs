//! berthd's configuration: one typed struct with a default for every field.
//!
//! Sources, later ones winning: the embedded defaults, the TOML file (`/etc/berth/berth.toml`
//! unless `--config`/`BERTH_CONFIG` says otherwise), then command-line flags and their
//! environment variables (see [`crate::cli`]). Unknown keys, wrong types and bad values fail
//! at start with the file, the key and the reason.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use runtime_core::cgroups::CgroupDriver;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where berthd looks for its config file when none is named.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/berth.toml";

/// The whole effective configuration of berthd.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The CRI gRPC socket kubelet and crictl connect to.
    pub socket: PathBuf,
    /// Persistent state: images, snapshots, pod and container records.
    pub root_dir: PathBuf,
    /// Volatile state: shim sockets, pinned namespaces, rootfs mounts.
    pub state_dir: PathBuf,
    /// How pod and container cgroups are named; must match kubelet's `--cgroup-driver`.
    pub cgroup_driver: CgroupDriver,
    /// The `berth-shim` binary; empty means `berth-shim` beside the berthd binary.
    pub shim_path: PathBuf,
    pub log: LogConfig,
    pub streaming: StreamingConfig,
    pub metrics: MetricsConfig,
    pub events: EventsConfig,
    pub registry: RegistryConfig,
    pub cni: CniConfig,
    pub network: NetworkConfig,
    pub nri: NriConfig,
    /// RuntimeClass handlers served by an OCI runtime, by handler name.
    pub runtimes: BTreeMap<String, RuntimeHandlerConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: "/run/berth/berth.sock".into(),
            root_dir: "/var/lib/berth".into(),
            state_dir: "/run/berth".into(),
            cgroup_driver: CgroupDriver::Cgroupfs,
            shim_path: PathBuf::new(),
            log: LogConfig::default(),
            streaming: StreamingConfig::default(),
            metrics: MetricsConfig::default(),
            events: EventsConfig::default(),
            registry: RegistryConfig::default(),
            cni: CniConfig::default(),
            network: NetworkConfig::default(),
            nri: NriConfig::default(),
            runtimes: BTreeMap::new(),
        }
    }
}

/// Log output of berthd (to stderr).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter: a level (`error`, `warn`, `info`, `debug`, `trace`) or directives
    /// such as `info,cri_server=debug`.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// The exec/attach/port-forward server whose URLs berthd hands to kubelet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingConfig {
    /// Listen address; port 0 picks a free port at start.
    pub address: SocketAddr,
    /// Seconds a streaming URL stays valid before it is used.
    pub token_ttl_seconds: u64,
    /// PEM certificate chain for https; with `tls_key_file`, the server speaks TLS only.
    pub tls_cert_file: PathBuf,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: PathBuf,
    /// Seconds a session may go without any data either way before it is closed.
    pub idle_timeout_seconds: u64,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            token_ttl_seconds: 60,
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
            idle_timeout_seconds: 4 * 60 * 60,
        }
    }
}

/// The Prometheus `/metrics` endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Listen address of `/metrics`; empty turns the endpoint off.
    pub address: ListenAddress,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            address: ListenAddress(Some(SocketAddr::from(([127, 0, 0, 1], 9120)))),
        }
    }
}

/// A listen address that can be switched off: `""` is off, otherwise `ip:port` (port 0 picks
/// a free port at start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddress(pub Option<SocketAddr>);

impl std::str::FromStr for ListenAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Ok(ListenAddress(None));
        }
        s.parse::<SocketAddr>()
            .map(|a| ListenAddress(Some(a)))
            .map_err(|_| {
                format!("`{s}` is not a listen address like `127.0.0.1:9120` (or \"\" for off)")
            })
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => Ok(()),
        }
    }
}

impl Serialize for ListenAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ListenAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The `GetContainerEvents` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Events queued for each subscriber; one that falls this far behind is dropped.
    pub subscriber_queue: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            subscriber_queue: 1024,
        }
    }
}

/// Registry access: mirrors, credentials, plain-http registries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Layers downloaded and unpacked at once, across all pulls.
    pub max_concurrent_downloads: usize,
    /// Registry hosts (`host` or `host:port`) reached over plain http instead of https.
    pub insecure: Vec<String>,
    /// Per registry host, mirror endpoints (`https://host[:port]`) tried in order before it.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Per registry host, credentials used when a pull request carries none.
    pub credentials: BTreeMap<String, RegistryCredential>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            max_concurrent_downloads: images::DEFAULT_PARALLEL_LAYERS,
            insecure: Vec::new(),
            mirrors: BTreeMap::new(),
            credentials: BTreeMap::new(),
        }
    }
}

/// Credentials for one registry: a username and password, a base64 `auth` string
/// (`user:password`), or an identity token.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryCredential {
    pub username: String,
    pub password: String,
    pub auth: String,
    pub identity_token: String,
}

/// Where CNI network configs and plugins live. If `conf_dir` has a config, berth uses CNI;
/// otherwise its built-in bridge network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CniConfig {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
    /// Seconds one plugin call may take before it is killed and the operation fails.
    pub plugin_timeout_seconds: u64,
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            conf_dir: "/etc/cni/net.d".into(),
            bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            plugin_timeout_seconds: 60,
        }
    }
}

/// berth's built-in pod network (used when no CNI config exists).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// IPv4 range pod addresses come from: a /16 or narrower.
    #[serde(
        serialize_with = "serialize_cidr",
        deserialize_with = "deserialize_pod_cidr"
    )]
    pub pod_cidr: Ipv4Net,
    /// Name of the bridge the pods' veths attach to.
    pub bridge: String,
    /// The nftables table (family inet) holding berth's NAT and hostPort rules.
    pub nft_table: String,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            pod_cidr: Ipv4Net::new_assert(std::net::Ipv4Addr::new(10, 88, 0, 0), 16),
            bridge: "berth0".into(),
            nft_table: "berth".into(),
        }
    }
}

/// The Node Resource Interface (see docs/nri.md); the keys are containerd's
/// (`[plugins."io.containerd.nri.v1.nri"]`), with `enable` instead of containerd's `disable`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NriConfig {
    /// Serve NRI: relay pod and container events to plugins and apply their adjustments.
    pub enable: bool,
    /// Where external plugins connect.
    pub socket_path: PathBuf,
    /// Pre-installed plugins (`NN-name` executables) berthd launches at start.
    pub plugin_path: PathBuf,
    /// Their configuration files (`NN-name.conf` or `name.conf`).
    pub plugin_config_path: PathBuf,
    /// How long a plugin may take to register (and then to synchronize).
    pub plugin_registration_timeout: Duration,
    /// How long a plugin may take to answer one event.
    pub plugin_request_timeout: Duration,
    /// Do not accept external plugins on `socket_path` (pre-installed ones still run).
    pub disable_connections: bool,
}

impl Default for NriConfig {
    fn default() -> Self {
        NriConfig {
            enable: false,
            socket_path: "/var/run/nri/nri.sock".into(),
            plugin_path: "/opt/nri/plugins".into(),
            plugin_config_path: "/etc/nri/conf.d".into(),
            plugin_registration_timeout: Duration(std::time::Duration::from_secs(5)),
            plugin_request_timeout: Duration(std::time::Duration::from_secs(2)),
            disable_connections: false,
        }
    }
}

/// A RuntimeClass handler run by an OCI-CLI runtime (runc, crun); see
/// docs/runtime-handlers.md.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeHandlerConfig {
    /// The runtime binary: an absolute path, or a name looked up in `PATH`.
    pub path: PathBuf,
    /// The runtime's state directory (`--root`); empty: `<state_dir>/oci/<handler>`.
    pub root: PathBuf,
    pub options: RuntimeHandlerOptions,
}

/// Options passed to an OCI runtime.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeHandlerOptions {
    /// Let the runtime manage cgroups through systemd (`--systemd-cgroup`); needs the
    /// systemd cgroup driver.
    pub systemd_cgroup: bool,
}

/// A duration written like containerd's: `"5s"`, `"500ms"`, `"2m"`, `"1m30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration(pub std::time::Duration);

impl std::str::FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a duration like \"2s\", \"500ms\" or \"1m30s\"");
        let mut total = std::time::Duration::ZERO;
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            if digits == 0 {
                return Err(bad());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = match &rest[..unit_len] {
                "ms" => std::time::Duration::from_millis(n),
                "s" => std::time::Duration::from_secs(n),
                "m" => std::time::Duration::from_secs(n.saturating_mul(60)),
                "h" => std::time::Duration::from_secs(n.saturating_mul(3600)),
                _ => return Err(bad()),
            };
            total = total.saturating_add(unit);
            rest = &rest[unit_len..];
        }
        Ok(Duration(total))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The widest pod network berth accepts: it never claims more than a /16 of address space.
pub const WIDEST_POD_PREFIX: u8 = 16;

/// Parses a pod CIDR: an IPv4 network address with a prefix of /16 or narrower.
pub fn parse_pod_cidr(s: &str) -> Result<Ipv4Net, String> {
    let net: Ipv4Net = s
        .parse()
        .map_err(|_| format!("`{s}` is not an IPv4 CIDR (expected e.g. `10.88.0.0/16`)"))?;
    if net.prefix_len() < WIDEST_POD_PREFIX {
        return Err(format!(
            "`{s}` is wider than /{WIDEST_POD_PREFIX}; berth never claims more than a /{WIDEST_POD_PREFIX} for pods"
        ));
    }
    if net.addr() != net.network() {
        return Err(format!(
            "`{s}` has host bits set; did you mean `{}`?",
            net.trunc()
        ));
    }
    if net.prefix_len() > 30 {
        return Err(format!("`{s}` leaves no room for pod addresses"));
    }
    Ok(net)
}

fn deserialize_pod_cidr<'de, D: Deserializer<'de>>(d: D) -> Result<Ipv4Net, D::Error> {
    let s = String::deserialize(d)?;
    parse_pod_cidr(&s).map_err(serde::de::Error::custom)
}

fn serialize_cidr<S: Serializer>(net: &Ipv4Net, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(net)
}

/// A config that could not be loaded, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {location}: {reason}")]
    Invalid {
        path: PathBuf,
        location: String,
        reason: String,
    },
    #[error("config: {key}: {reason}")]
    InvalidValue { key: &'static str, reason: String },
}

impl Config {
    /// Loads `path`; a missing file is fine only when `required` is false (the default path).
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::from_toml(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.into(),
                source,
            }),
        }
    }

    /// Parses TOML text; `path` only names the source in errors.
    fn from_toml(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let invalid = |location: String, reason: String| ConfigError::Invalid {
            path: path.into(),
            location,
            reason,
        };
        let de = toml::de::Deserializer::parse(text)
            .map_err(|e| invalid(span_location(text, e.span()), e.message().to_string()))?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let at = span_location(text, inner.span());
            let location = if key == "." {
                at
            } else {
                format!("key `{key}` ({at})")
            };
            invalid(location, inner.message().to_string())
        })?;
        config.validate().map_err(|e| match e {
            ConfigError::InvalidValue { key, reason } => invalid(format!("key `{key}`"), reason),
            other => other,
        })?;
        Ok(config)
    }

    /// Checks what types alone cannot: values that must make sense together or as strings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad =
            |key: &'static str, reason: String| Err(ConfigError::InvalidValue { key, reason });
        for (key, path) in [
            ("socket", &self.socket),
            ("root_dir", &self.root_dir),
            ("state_dir", &self.state_dir),
            ("cni.conf_dir", &self.cni.conf_dir),
            ("nri.socket_path", &self.nri.socket_path),
        ] {
            if !path.is_absolute() {
                return bad(
                    key,
                    format!("`{}` must be an absolute path", path.display()),
                );
            }
        }
        let (cert, key) = (&self.streaming.tls_cert_file, &self.streaming.tls_key_file);
        if cert.as_os_str().is_empty() != key.as_os_str().is_empty() {
            return bad(
                "streaming.tls_cert_file",
                "tls_cert_file and tls_key_file must be set together".into(),
            );
        }
        for (key, d) in [
            (
                "nri.plugin_registration_timeout",
                self.nri.plugin_registration_timeout,
            ),
            (
                "nri.plugin_request_timeout",
                self.nri.plugin_request_timeout,
            ),
        ] {
            if d.0.is_zero() {
                return bad(key, "must be longer than zero".into());
            }
        }
        if self.streaming.token_ttl_seconds == 0 {
            return bad(
                "streaming.token_ttl_seconds",
                "must be at least 1 second".into(),
            );
        }
        if self.streaming.idle_timeout_seconds == 0 {
            return bad(
                "streaming.idle_timeout_seconds",
                "must be at least 1 second".into(),
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return bad(
                "log.level",
                format!("`{}` is not a log filter: {e}", self.log.level),
            );
        }
        let nft_ok = |t: &str| {
            !t.is_empty()
                && t.len() <= 64
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        if !nft_ok(&self.network.nft_table) {
            return bad(
                "network.nft_table",
                format!(
                    "`{}` must be 1 to 64 letters, digits or underscores",
                    self.network.nft_table
                ),
            );
        }
        if self.network.bridge.is_empty() || self.network.bridge.len() > 15 {
            return bad(
                "network.bridge",
                format!(
                    "`{}` must be 1 to 15 characters (a Linux interface name)",
                    self.network.bridge
                ),
            );
        }
        if !(1..=1_000_000).contains(&self.events.subscriber_queue) {
            return bad(
                "events.subscriber_queue",
                format!(
                    "{} must be between 1 and 1000000",
                    self.events.subscriber_queue
                ),
            );
        }
        if !(1..=3600).contains(&self.cni.plugin_timeout_seconds) {
            return bad(
                "cni.plugin_timeout_seconds",
                format!(
                    "{} must be between 1 and 3600",
                    self.cni.plugin_timeout_seconds
                ),
            );
        }
        if !(1..=64).contains(&self.registry.max_concurrent_downloads) {
            return bad(
                "registry.max_concurrent_downloads",
                format!(
                    "{} must be between 1 and 64",
                    self.registry.max_concurrent_downloads
                ),
            );
        }
        for (host, mirrors) in &self.registry.mirrors {
            if let Some(m) = mirrors
                .iter()
                .find(|m| !(m.starts_with("https://") || m.starts_with("http://")))
            {
                return bad(
                    "registry.mirrors",
                    format!("mirror `{m}` of `{host}` must start with https:// or http://"),
                );
            }
        }
        for (name, handler) in &self.runtimes {
            check_handler_config(name, handler).map_err(|reason| ConfigError::InvalidValue {
                key: "runtimes",
                reason,
            })?;
        }
        for (host, c) in &self.registry.credentials {
            let cred = images::Credential::from_fields(
                &c.username,
                &c.password,
                &c.auth,
                &c.identity_token,
                "",
            );
            match cred {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return bad(
                        "registry.credentials",
                        format!("`{host}` needs username/password, auth or identity_token"),
                    );
                }
                Err(e) => return bad("registry.credentials", format!("`{host}`: {e}")),
            }
        }
        Ok(())
    }

    /// The config with secrets replaced, safe to log or return from `Status`.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        for cred in c.registry.credentials.values_mut() {
            for secret in [&mut cred.password, &mut cred.auth, &mut cred.identity_token] {
                if !secret.is_empty() {
                    *secret = "<redacted>".into();
                }
            }
        }
        c
    }
}

/// `line L, column C` for a byte span in `text`.
fn span_location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return "top level".into();
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("line {line}, column {column}")
}

/// The default configuration as commented TOML (what `--print-default-config` prints).
pub fn default_config_toml() -> String {
    let d = Config::default();
    let q = |p: &Path| toml_string(&p.display().to_string());
    let bins: Vec<String> = d.cni.bin_dirs.iter().map(|p| q(p)).collect();
    format!(
        r#"# berthd configuration. Every key is optional; the values below are the defaults.
# Command-line flags (berthd --help) override this file.

# The CRI gRPC socket (mode 0660) kubelet and crictl connect to:
#   kubelet --container-runtime-endpoint=unix://<socket>
socket = {socket}
# Persistent state: image content, snapshots, pod and container records.
root_dir = {root}
# Volatile state (normally tmpfs): shim sockets, pinned namespaces, rootfs mounts.
state_dir = {state}
# Cgroup driver: "cgroupfs" (berth writes cgroupfs paths) or "systemd" (pods are transient
# scope units in kubelet's slices, made over D-Bus). Must match kubelet's --cgroup-driver.
cgroup_driver = "{driver}"
# The berth-shim binary; empty means berth-shim beside the berthd binary.
shim_path = ""

[log]
# A tracing filter: error, warn, info, debug, trace, or directives like "info,cri_server=debug".
level = {level}
# "text" or "json" lines on stderr.
format = "{format}"

[streaming]
# Listen address of the exec/attach/port-forward server; port 0 picks a free port.
address = "{saddr}"
# Seconds a streaming URL handed to kubelet stays valid before it is used.
token_ttl_seconds = {ttl}
# TLS: a PEM certificate chain and its key; both empty means plain http (keep it on loopback).
tls_cert_file = ""
tls_key_file = ""
# Seconds an exec/attach/port-forward session may go without data before it is closed.
idle_timeout_seconds = {idle}

[metrics]
# Listen address of the Prometheus /metrics endpoint (plain http); "" turns it off.
address = "{maddr}"

[events]
# GetContainerEvents: events queued for each subscriber. A subscriber that falls this far
# behind is dropped: its stream ends with RESOURCE_EXHAUSTED, and it must subscribe again.
subscriber_queue = {queue}

[registry]
# Layers downloaded and unpacked at once, across all pulls.
max_concurrent_downloads = {downloads}
# Registry hosts ("host" or "host:port") pulled from over plain http.
insecure = []

[registry.mirrors]
# Mirrors per registry host, tried in order before the registry itself, e.g.
# "docker.io" = ["https://mirror.example.com"]

[registry.credentials]
# Credentials per registry host, used when kubelet sends none, e.g.
# "registry.example.com" = {{ username = "me", password = "secret" }}
# "other.example.com" = {{ auth = "<base64 of user:password>" }}
# "tokens.example.com" = {{ identity_token = "<token>" }}

[cni]
# CNI network configs. If this holds a config, pods use CNI; otherwise berth's built-in bridge.
conf_dir = {cni_conf}
# Where CNI plugin binaries are searched, in order.
bin_dirs = [{bins}]
# Seconds one plugin call may take; a plugin still running then is killed and the call fails.
plugin_timeout_seconds = {cni_timeout}

[network]
# IPv4 range of pod addresses for the built-in network: a /16 or narrower.
pod_cidr = "{cidr}"
# Bridge the pods' veth pairs attach to.
bridge = {bridge}
# nftables table (family inet) holding berth's masquerade and hostPort rules.
nft_table = {nft_table}

[nri]
# Serve the Node Resource Interface to NRI plugins (docs/nri.md).
enable = {nri_enable}
# Socket external plugins connect to.
socket_path = {nri_socket}
# Pre-installed plugins ("NN-name" executables) launched at start, and their configs.
plugin_path = {nri_plugins}
plugin_config_path = {nri_conf}
# How long a plugin may take to register (and then to synchronize), and to answer one event.
plugin_registration_timeout = "{nri_reg}"
plugin_request_timeout = "{nri_req}"
# Do not accept external plugins on socket_path.
disable_connections = {nri_noconn}

[runtimes]
# RuntimeClass handlers run by an OCI runtime, by handler name (docs/runtime-handlers.md).
# The default handler ("" or "berth") is always berth's native executor. For example:
# runc = {{ path = "/usr/bin/runc" }}
# crun = {{ path = "/usr/bin/crun", root = "/run/berth/oci/crun" }}
"#,
        socket = q(&d.socket),
        root = q(&d.root_dir),
        state = q(&d.state_dir),
        driver = d.cgroup_driver,
        level = toml_string(&d.log.level),
        format = d.log.format,
        saddr = d.streaming.address,
        ttl = d.streaming.token_ttl_seconds,
        idle = d.streaming.idle_timeout_seconds,
        maddr = d.metrics.address,
        queue = d.events.subscriber_queue,
        downloads = d.registry.max_concurrent_downloads,
        cni_conf = q(&d.cni.conf_dir),
        bins = bins.join(", "),
        cni_timeout = d.cni.plugin_timeout_seconds,
        cidr = d.network.pod_cidr,
        bridge = toml_string(&d.network.bridge),
        nft_table = toml_string(&d.network.nft_table),
        nri_enable = d.nri.enable,
        nri_socket = q(&d.nri.socket_path),
        nri_plugins = q(&d.nri.plugin_path),
        nri_conf = q(&d.nri.plugin_config_path),
        nri_reg = d.nri.plugin_registration_timeout,
        nri_req = d.nri.plugin_request_timeout,
        nri_noconn = d.nri.disable_connections,
    )
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The native executor's handler names: the default (`""`) and its explicit name.
pub const NATIVE_HANDLERS: [&str; 2] = ["", "berth"];

/// Checks one `[runtimes.<name>]` entry.
fn check_handler_config(name: &str, h: &RuntimeHandlerConfig) -> Result<(), String> {
    if NATIVE_HANDLERS.contains(&name) {
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
            "`{name}`: options.systemd_cgroup is not supported yet: an OCI runtime gets a cgroupfs path inside the pod's cgroup (or scope) made by berth"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("/etc/berth/test.toml"), text)
    }

    #[test]
    fn printed_default_config_parses_back_to_the_defaults() {
        let parsed = parse(&default_config_toml()).expect("default config parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn configuration_reference_embeds_the_printed_default_config() {
        let doc = include_str!("../../docs/configuration.md");
        assert!(
            doc.contains(&default_config_toml()),
            "docs/configuration.md is stale: paste `berthd --print-default-config` into it"
        );
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(parse("").expect("empty"), Config::default());
    }

    #[test]
    fn unknown_key_names_file_key_and_line() {
        let err = parse("socket = \"/run/x.sock\"\n[network]\nbridg = \"b0\"\n")
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("/etc/berth/test.toml"), "{err}");
        assert!(err.contains("unknown field `bridg`"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err = parse("[streaming]\ntoken_ttl_seconds = \"soon\"\n")
            .expect_err("wrong type")
            .to_string();
        assert!(err.contains("key `streaming.token_ttl_seconds`"), "{err}");
        assert!(err.contains("invalid type"), "{err}");
    }

    #[test]
    fn unparseable_cidr_names_the_key_and_value() {
        let err = parse("[network]\npod_cidr = \"10.88.0/16\"\n")
            .expect_err("bad cidr")
            .to_string();
        assert!(err.contains("key `network.pod_cidr`"), "{err}");
        assert!(err.contains("`10.88.0/16` is not an IPv4 CIDR"), "{err}");
    }

    #[test]
    fn pod_cidr_wider_than_16_or_with_host_bits_is_rejected() {
        assert!(
            parse_pod_cidr("10.0.0.0/8")
                .unwrap_err()
                .contains("wider than /16")
        );
        assert!(
            parse_pod_cidr("10.88.1.0/16")
                .unwrap_err()
                .contains("did you mean `10.88.0.0/16`")
        );
        assert!(parse_pod_cidr("10.88.0.0/31").is_err());
        assert_eq!(
            parse_pod_cidr("10.88.7.0/24").expect("ok").to_string(),
            "10.88.7.0/24"
        );
    }

    #[test]
    fn bad_cgroup_driver_lists_the_choices() {
        let err = parse("cgroup_driver = \"cgroupv3\"\n")
            .expect_err("bad driver")
            .to_string();
        assert!(err.contains("key `cgroup_driver`"), "{err}");
        assert!(err.contains("cgroupfs") && err.contains("systemd"), "{err}");
    }

    #[test]
    fn relative_paths_and_bad_log_filters_are_rejected() {
        let err = parse("root_dir = \"var/lib/berth\"\n")
            .expect_err("relative")
            .to_string();
        assert!(
            err.contains("key `root_dir`") && err.contains("absolute"),
            "{err}"
        );
        let err = parse("[log]\nlevel = \"info,=[\"\n")
            .expect_err("filter")
            .to_string();
        assert!(err.contains("key `log.level`"), "{err}");
    }

    #[test]
    fn metrics_address_can_be_turned_off_and_bad_ones_name_the_key() {
        let off = parse("[metrics]\naddress = \"\"\n").expect("off");
        assert_eq!(off.metrics.address, ListenAddress(None));
        let any_port = parse("[metrics]\naddress = \"127.0.0.1:0\"\n").expect("port 0");
        assert_eq!(any_port.metrics.address.to_string(), "127.0.0.1:0");
        let err = parse("[metrics]\naddress = \"localhost\"\n")
            .expect_err("bad")
            .to_string();
        assert!(err.contains("key `metrics.address`"), "{err}");
        let err = parse("[events]\nsubscriber_queue = 0\n")
            .expect_err("zero queue")
            .to_string();
        assert!(err.contains("events.subscriber_queue"), "{err}");
    }

    #[test]
    fn nri_durations_parse_like_containerd_and_bad_ones_name_the_key() {
        let c = parse("[nri]\nenable = true\nplugin_request_timeout = \"1m30s\"\nplugin_registration_timeout = \"250ms\"\n")
            .expect("nri");
        assert!(c.nri.enable);
        assert_eq!(c.nri.plugin_request_timeout.0.as_secs(), 90);
        assert_eq!(c.nri.plugin_registration_timeout.0.as_millis(), 250);
        assert_eq!(c.nri.plugin_registration_timeout.to_string(), "250ms");
        for bad in ["\"\"", "\"5\"", "\"s\"", "\"5x\"", "\"0s\""] {
            let err = parse(&format!("[nri]\nplugin_request_timeout = {bad}\n"))
                .expect_err(bad)
                .to_string();
            assert!(err.contains("nri.plugin_request_timeout"), "{bad}: {err}");
        }
    }

    #[test]
    fn syntax_errors_give_a_line() {
        let err = parse("socket = \n").expect_err("syntax").to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn registry_settings_parse_and_secrets_are_redacted() {
        let c = parse(
            r#"
[registry]
insecure = ["127.0.0.1:5000"]
[registry.mirrors]
"docker.io" = ["https://mirror.local"]
[registry.credentials]
"r.example" = { username = "u", password = "p" }
"#,
        )
        .expect("registry config");
        assert_eq!(c.registry.insecure, vec!["127.0.0.1:5000"]);
        assert_eq!(
            c.registry.mirrors["docker.io"],
            vec!["https://mirror.local"]
        );
        let red = c.redacted();
        assert_eq!(red.registry.credentials["r.example"].password, "<redacted>");
        assert_eq!(red.registry.credentials["r.example"].username, "u");
    }

    #[test]
    fn mirror_without_scheme_and_empty_credentials_are_rejected() {
        let err = parse("[registry.mirrors]\n\"docker.io\" = [\"mirror.local\"]\n")
            .expect_err("mirror")
            .to_string();
        assert!(
            err.contains("registry.mirrors") && err.contains("https://"),
            "{err}"
        );
        let err = parse("[registry.credentials]\n\"r\" = {}\n")
            .expect_err("cred")
            .to_string();
        assert!(err.contains("registry.credentials"), "{err}");
    }

    #[test]
    fn missing_default_file_gives_defaults_but_missing_named_file_fails() {
        let missing = Path::new("/nonexistent/berth.toml");
        assert_eq!(
            Config::load(missing, false).expect("optional"),
            Config::default()
        );
        let err = Config::load(missing, true)
            .expect_err("required")
            .to_string();
        assert!(err.contains("/nonexistent/berth.toml"), "{err}");
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
