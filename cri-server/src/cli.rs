//! berthd's command line. Flags override the config file; each flag also reads the
//! environment variable named in `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use runtime_core::cgroups::CgroupDriver;

use crate::config::{self, Config, ConfigError, LogFormat};

/// berthd: a Kubernetes CRI runtime.
#[derive(Debug, Parser)]
#[command(name = "berthd", version, about)]
pub struct Cli {
    /// Config file (TOML). Without this flag, /etc/berth/berth.toml is read if it exists.
    #[arg(long, env = "BERTH_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print the default configuration as commented TOML and exit.
    #[arg(long)]
    pub print_default_config: bool,
    /// Load and validate the configuration, print the effective config as TOML, and exit.
    #[arg(long)]
    pub check_config: bool,
    /// CRI gRPC socket path.
    #[arg(long, env = "BERTH_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Persistent state directory.
    #[arg(long, env = "BERTH_ROOT_DIR", value_name = "DIR")]
    pub root_dir: Option<PathBuf>,
    /// Volatile state directory.
    #[arg(long, env = "BERTH_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Log filter (error, warn, info, debug, trace or tracing directives).
    #[arg(long, env = "BERTH_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log format.
    #[arg(long, env = "BERTH_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Cgroup driver; must match kubelet's --cgroup-driver.
    #[arg(long, env = "BERTH_CGROUP_DRIVER", value_parser = parse_driver)]
    pub cgroup_driver: Option<CgroupDriver>,
    /// Streaming server listen address.
    #[arg(long, env = "BERTH_STREAMING_ADDRESS", value_name = "ADDR")]
    pub streaming_address: Option<SocketAddr>,
    /// Prometheus /metrics listen address ("" turns the endpoint off).
    #[arg(long, env = "BERTH_METRICS_ADDRESS", value_name = "ADDR")]
    pub metrics_address: Option<config::ListenAddress>,
    /// Pod IPv4 range of the built-in network (a /16 or narrower).
    #[arg(long, env = "BERTH_POD_CIDR", value_name = "CIDR", value_parser = config::parse_pod_cidr)]
    pub pod_cidr: Option<ipnet::Ipv4Net>,
}

fn parse_driver(s: &str) -> Result<CgroupDriver, String> {
    match s {
        "cgroupfs" => Ok(CgroupDriver::Cgroupfs),
        "systemd" => Ok(CgroupDriver::Systemd),
        _ => Err(format!(
            "`{s}` is not a cgroup driver (cgroupfs or systemd)"
        )),
    }
}

impl Cli {
    /// The effective config: defaults, then the file, then these flags.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let mut c = match &self.config {
            Some(path) => Config::load(path, true)?,
            None => Config::load(config::DEFAULT_CONFIG_PATH.as_ref(), false)?,
        };
        self.apply(&mut c);
        c.validate()?;
        Ok(c)
    }

    fn apply(&self, c: &mut Config) {
        if let Some(v) = &self.socket {
            c.socket = v.clone();
        }
        if let Some(v) = &self.root_dir {
            c.root_dir = v.clone();
        }
        if let Some(v) = &self.state_dir {
            c.state_dir = v.clone();
        }
        if let Some(v) = &self.log_level {
            c.log.level = v.clone();
        }
        if let Some(v) = self.log_format {
            c.log.format = v;
        }
        if let Some(v) = self.cgroup_driver {
            c.cgroup_driver = v;
        }
        if let Some(v) = self.streaming_address {
            c.streaming.address = v;
        }
        if let Some(v) = self.metrics_address {
            c.metrics.address = v;
        }
        if let Some(v) = self.pod_cidr {
            c.network.pod_cidr = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("berth.toml");
        std::fs::write(
            &file,
            "socket = \"/run/file.sock\"\n[log]\nlevel = \"warn\"\n",
        )
        .expect("write config");
        let cli = Cli::try_parse_from([
            "berthd",
            "--config",
            file.to_str().expect("utf-8 path"),
            "--socket",
            "/run/flag.sock",
            "--pod-cidr",
            "10.88.5.0/24",
        ])
        .expect("parse flags");
        let c = cli.load_config().expect("load");
        assert_eq!(c.socket, PathBuf::from("/run/flag.sock"));
        assert_eq!(c.log.level, "warn");
        assert_eq!(c.network.pod_cidr.to_string(), "10.88.5.0/24");
    }

    #[test]
    fn bad_flag_values_are_rejected_with_the_reason() {
        let err = Cli::try_parse_from(["berthd", "--pod-cidr", "10.0.0.0/8"]).expect_err("cidr");
        assert!(err.to_string().contains("wider than /16"), "{err}");
        let err = Cli::try_parse_from(["berthd", "--cgroup-driver", "x"]).expect_err("driver");
        assert!(err.to_string().contains("cgroupfs or systemd"), "{err}");
    }

    #[test]
    fn flag_values_are_validated_like_file_values() {
        let cli = Cli::try_parse_from([
            "berthd",
            "--config",
            "/dev/null",
            "--root-dir",
            "relative/dir",
        ])
        .expect("parse flags");
        let err = cli.load_config().expect_err("relative").to_string();
        assert!(err.contains("root_dir"), "{err}");
    }
}
