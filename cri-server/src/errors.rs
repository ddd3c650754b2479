//! The one place where berth's internal errors become gRPC statuses.

use images::ImageError;
use tonic::Status;

/// The answer of an RPC whose feature has not landed yet: `Unimplemented`, naming the RPC and
/// the feature area so an operator knows it is berth's gap, not their request's fault.
pub fn not_implemented(rpc: &str, area: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc} is not implemented yet in berth {}: {area} support has not landed",
        env!("CARGO_PKG_VERSION")
    ))
}

/// The gRPC status for an image store or pull error.
pub fn image_status(e: ImageError) -> Status {
    let msg = e.to_string();
    match e {
        ImageError::InvalidReference { .. } => Status::invalid_argument(msg),
        ImageError::NotFound(_) => Status::not_found(msg),
        ImageError::Unauthorized { .. } => Status::unauthenticated(msg),
        ImageError::Registry { .. } => Status::unavailable(msg),
        ImageError::Unsupported { .. } | ImageError::UnsafeLayer { .. } => {
            Status::failed_precondition(msg)
        }
        ImageError::Corrupt { .. } => Status::data_loss(msg),
        ImageError::Io { .. } if e.is_no_space() => Status::resource_exhausted(msg),
        ImageError::Io { .. } => Status::internal(msg),
    }
}

/// The gRPC status for a pod sandbox error.
pub fn pod_status(e: podsandbox::pod::PodError) -> Status {
    match e {
        podsandbox::pod::PodError::Invalid(m) => Status::invalid_argument(m),
        other => Status::internal(other.to_string()),
    }
}

/// Feature areas named in [`not_implemented`] messages.
pub mod area {
    pub const STREAMING: &str = "exec/attach/port-forward streaming";
    pub const STATS: &str = "stats and metrics";
    pub const EVENTS: &str = "container events";
    pub const UPDATES: &str = "live resource and runtime config update";
    pub const CHECKPOINT: &str = "container checkpoint";
}
