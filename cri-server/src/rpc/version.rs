//! `Version`: who berth is and which CRI it speaks.

use proto::cri::{VersionRequest, VersionResponse};

/// The runtime name reported to kubelet and crictl.
pub const RUNTIME_NAME: &str = "berth";
/// The CRI API version berth serves.
pub const RUNTIME_API_VERSION: &str = "v1";
/// The kubelet runtime API version field; CRI v1 runtimes all report `0.1.0`.
pub const KUBE_RUNTIME_API_VERSION: &str = "0.1.0";

/// Answers `Version`. The request's `version` (kubelet's API version) needs no validation:
/// berth serves only CRI v1, which is what the gRPC service path already selected.
pub fn version(_req: &VersionRequest) -> VersionResponse {
    VersionResponse {
        version: KUBE_RUNTIME_API_VERSION.into(),
        runtime_name: RUNTIME_NAME.into(),
        runtime_version: env!("CARGO_PKG_VERSION").into(),
        runtime_api_version: RUNTIME_API_VERSION.into(),
    }
}
