//! The parts of a CNI result (0.3.0 to 1.0.0 shape) that berth uses.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use super::config::CniVersion;

/// What an ADD produced: addresses for the pod status, plus the full JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct CniResult {
    /// Every address in the result, with its prefix length, in result order.
    pub ips: Vec<IpNet>,
    /// The gateway of the first address that has one.
    pub gateway: Option<IpAddr>,
    /// Names of the interfaces the plugins report (host side and sandbox side).
    pub interfaces: Vec<String>,
    /// The final plugin's result as it printed it.
    pub raw: Value,
}

#[derive(Deserialize)]
struct WireResult {
    #[serde(rename = "cniVersion")]
    cni_version: String,
    #[serde(default)]
    interfaces: Vec<WireInterface>,
    #[serde(default)]
    ips: Vec<WireIp>,
}

#[derive(Deserialize)]
struct WireInterface {
    name: String,
}

#[derive(Deserialize)]
struct WireIp {
    address: String,
    #[serde(default)]
    gateway: Option<String>,
}

impl CniResult {
    /// Parses a result JSON; the error is a reason for `CniError::InvalidResult`.
    pub(crate) fn from_value(raw: Value) -> Result<CniResult, String> {
        let wire = WireResult::deserialize(&raw).map_err(|e| e.to_string())?;
        if CniVersion::parse(&wire.cni_version).is_none() {
            return Err(format!(
                "unsupported result cniVersion {:?}",
                wire.cni_version
            ));
        }
        let ips = wire
            .ips
            .iter()
            .map(|ip| {
                ip.address
                    .parse()
                    .map_err(|e| format!("ip {:?}: {e}", ip.address))
            })
            .collect::<Result<Vec<IpNet>, String>>()?;
        let gateway = first_gateway(&wire.ips)?;
        Ok(CniResult {
            ips,
            gateway,
            interfaces: wire.interfaces.into_iter().map(|i| i.name).collect(),
            raw,
        })
    }
}

fn first_gateway(ips: &[WireIp]) -> Result<Option<IpAddr>, String> {
    let Some(gateway) = ips.iter().find_map(|ip| ip.gateway.as_deref()) else {
        return Ok(None);
    };
    gateway
        .parse()
        .map(Some)
        .map_err(|e| format!("gateway {gateway:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_1_0_0_result() {
        let raw = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "10.88.5.7/24", "gateway": "10.88.5.1", "interface": 2}]
        });
        let result = CniResult::from_value(raw).expect("valid");
        assert_eq!(
            result.ips,
            vec!["10.88.5.7/24".parse::<IpNet>().expect("net")]
        );
        assert_eq!(result.gateway, Some("10.88.5.1".parse().expect("ip")));
        assert_eq!(result.interfaces, ["cni0", "veth1", "eth0"]);
    }

    #[test]
    fn parses_0_4_0_result_with_ip_version() {
        let raw =
            json!({"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.1.0.5/16"}]});
        let result = CniResult::from_value(raw).expect("valid");
        assert_eq!(result.ips.len(), 1);
        assert_eq!(result.gateway, None);
    }

    #[test]
    fn rejects_0_2_0_result() {
        let raw = json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.5/16"}});
        assert!(CniResult::from_value(raw).is_err());
    }

    #[test]
    fn rejects_bad_address() {
        let raw = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.500/16"}]});
        let err = CniResult::from_value(raw).expect_err("bad ip");
        assert!(err.contains("10.1.0.500/16"), "{err}");
    }
}
