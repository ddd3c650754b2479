//! The one place where berth's internal errors become gRPC statuses.

use tonic::Status;

/// The answer of an RPC whose feature has not landed yet: `Unimplemented`, naming the RPC and
/// the feature area so an operator knows it is berth's gap, not their request's fault.
pub fn not_implemented(rpc: &str, area: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc} is not implemented yet in berth {}: {area} support has not landed",
        env!("CARGO_PKG_VERSION")
    ))
}

/// Feature areas named in [`not_implemented`] messages.
pub mod area {
    pub const PODS: &str = "pod sandbox";
    pub const CONTAINERS: &str = "container";
    pub const STREAMING: &str = "exec/attach/port-forward streaming";
    pub const STATS: &str = "stats and metrics";
    pub const EVENTS: &str = "container events";
    pub const UPDATES: &str = "live resource and runtime config update";
    pub const CHECKPOINT: &str = "container checkpoint";
    pub const IMAGES: &str = "image service";
}
