//! gRPC statuses for the errors of code not yet converted to the domain's typed
//! [`Error`] (`lifecycle/`, `nri_hooks.rs`, the spec builders, the RPC files' own checks).
//! Image and pod errors get the kind [`Error`] gives them; an I/O error here is
//! ResourceExhausted for a full disk or quota and Internal otherwise, as these callers have
//! always answered (`Error::io` also tells a missing or existing file apart).

use images::ImageError;
use tonic::Status;

use crate::error::Error;

/// The gRPC status for an image store or pull error (the kind [`Error`] gives it).
pub fn image_status(e: ImageError) -> Status {
    Error::from(e).into()
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
/// ResourceExhausted, as for [`io_status`] (the kind [`Error`] gives it).
pub fn pod_status(e: podsandbox::pod::PodError) -> Status {
    Error::from(e).into()
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
