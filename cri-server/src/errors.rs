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

/// The gRPC status for a pod sandbox error: a step that found the disk full is
/// ResourceExhausted, as for [`io_status`].
pub fn pod_status(e: podsandbox::pod::PodError) -> Status {
    use podsandbox::pod::{Failure, PodError};
    match e {
        PodError::Invalid(m) => Status::invalid_argument(m),
        PodError::Step {
            failure: Failure::NoSpace,
            ..
        } => Status::resource_exhausted(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podsandbox::pod::{Failure, PodError};

    fn step(failure: Failure) -> PodError {
        PodError::Step {
            pod: "p".into(),
            step: "write pod files",
            message: "hosts: No space left on device (os error 28)".into(),
            failure,
        }
    }

    #[test]
    fn a_pod_step_that_found_the_disk_full_is_resource_exhausted() {
        assert_eq!(
            pod_status(step(Failure::NoSpace)).code(),
            tonic::Code::ResourceExhausted
        );
        assert_eq!(
            pod_status(step(Failure::Other)).code(),
            tonic::Code::Internal
        );
        let enospc = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(
            io_status("record pod", &enospc).code(),
            tonic::Code::ResourceExhausted
        );
    }
}
