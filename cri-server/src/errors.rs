//! The one place where berth's internal errors become gRPC statuses.

use images::ImageError;
use tonic::Status;

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

/// The gRPC status for an I/O error while doing `what`: ResourceExhausted when the disk (or
/// the quota) is full, so the caller knows freeing space helps; Internal otherwise.
pub fn io_status(what: &str, e: &std::io::Error) -> Status {
    let msg = format!("{what}: {e}");
    match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => Status::resource_exhausted(msg),
        _ => Status::internal(msg),
    }
}

/// The gRPC status for a pod sandbox error.
pub fn pod_status(e: podsandbox::pod::PodError) -> Status {
    match e {
        podsandbox::pod::PodError::Invalid(m) => Status::invalid_argument(m),
        other => Status::internal(other.to_string()),
    }
}
