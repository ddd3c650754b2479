//! The domain's error: a [`Kind`] (what the caller can do about it) and a message naming
//! what failed. `container/`, `pod/`, `lifecycle/` and `nri_hooks.rs` return it; the kind is
//! set where the error arises (an errno, an image store or pod step error, a refused request
//! field) and kept up to the RPC layer, which turns it into a gRPC status with the one
//! `From<Error> for Status` below (a full disk during any create or start is
//! `RESOURCE_EXHAUSTED`, so the caller knows freeing space helps).

use std::fmt;

use images::ImageError;
use tonic::{Code, Status};

/// What kind of failure, as far as the caller is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The pod, container or image named does not exist (ENOENT).
    NotFound,
    /// The name is taken (EEXIST).
    AlreadyExists,
    /// The request is wrong; the message names the field.
    Invalid,
    /// Out of disk or quota (ENOSPC, EDQUOT).
    Exhausted,
    /// A registry or a peer cannot be reached now; trying again may help.
    Unavailable,
    /// The object is not in the state the call needs (a pod not Ready, a refused field).
    FailedPrecondition,
    /// The work did not finish in time.
    DeadlineExceeded,
    /// A registry refused the credentials.
    Unauthenticated,
    /// Stored data is corrupt.
    DataLoss,
    /// A command failed in a way berth cannot classify.
    Unknown,
    /// Anything else: a bug or an unexpected OS error.
    Internal,
}

/// A domain error: its kind and a message with the context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    kind: Kind,
    message: String,
}

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, message)
    }

    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(Kind::AlreadyExists, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Kind::Invalid, message)
    }

    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(Kind::FailedPrecondition, message)
    }

    pub fn deadline_exceeded(message: impl Into<String>) -> Self {
        Self::new(Kind::DeadlineExceeded, message)
    }

    pub fn unknown(message: impl Into<String>) -> Self {
        Self::new(Kind::Unknown, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Kind::Internal, message)
    }

    /// An I/O error while doing `what`, its kind from the errno ([`Kind::of_io`]).
    pub fn io(what: &str, e: &std::io::Error) -> Self {
        Self::new(Kind::of_io(e), format!("{what}: {e}"))
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl Kind {
    /// The kind of an I/O error: a full disk or quota is [`Kind::Exhausted`], a missing file
    /// [`Kind::NotFound`], an existing one [`Kind::AlreadyExists`], anything else
    /// [`Kind::Internal`].
    pub fn of_io(e: &std::io::Error) -> Kind {
        match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => Kind::Exhausted,
            Some(libc::ENOENT) => Kind::NotFound,
            Some(libc::EEXIST) => Kind::AlreadyExists,
            _ => Kind::Internal,
        }
    }

    /// The gRPC code of this kind.
    pub fn code(self) -> Code {
        match self {
            Kind::NotFound => Code::NotFound,
            Kind::AlreadyExists => Code::AlreadyExists,
            Kind::Invalid => Code::InvalidArgument,
            Kind::Exhausted => Code::ResourceExhausted,
            Kind::Unavailable => Code::Unavailable,
            Kind::FailedPrecondition => Code::FailedPrecondition,
            Kind::DeadlineExceeded => Code::DeadlineExceeded,
            Kind::Unauthenticated => Code::Unauthenticated,
            Kind::DataLoss => Code::DataLoss,
            Kind::Unknown => Code::Unknown,
            Kind::Internal => Code::Internal,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self::new(Kind::of_io(&e), e.to_string())
    }
}

impl From<ImageError> for Error {
    fn from(e: ImageError) -> Self {
        let kind = match &e {
            ImageError::InvalidReference { .. } => Kind::Invalid,
            ImageError::NotFound(_) => Kind::NotFound,
            ImageError::Unauthorized { .. } => Kind::Unauthenticated,
            ImageError::Registry { .. } => Kind::Unavailable,
            ImageError::Unsupported { .. } | ImageError::UnsafeLayer { .. } => {
                Kind::FailedPrecondition
            }
            ImageError::Corrupt { .. } => Kind::DataLoss,
            ImageError::Io { .. } if e.is_no_space() => Kind::Exhausted,
            ImageError::Io { .. } => Kind::Internal,
        };
        Self::new(kind, e.to_string())
    }
}

impl From<podsandbox::pod::PodError> for Error {
    fn from(e: podsandbox::pod::PodError) -> Self {
        use podsandbox::pod::{Failure, PodError};
        match e {
            PodError::Invalid(m) => Self::invalid(m),
            PodError::Step {
                failure: Failure::NoSpace,
                ..
            } => Self::new(Kind::Exhausted, e.to_string()),
            other => Self::internal(other.to_string()),
        }
    }
}

/// The one place a domain error becomes a gRPC status.
impl From<Error> for Status {
    fn from(e: Error) -> Self {
        Status::new(e.kind.code(), e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [(Kind, Code); 11] = [
        (Kind::NotFound, Code::NotFound),
        (Kind::AlreadyExists, Code::AlreadyExists),
        (Kind::Invalid, Code::InvalidArgument),
        (Kind::Exhausted, Code::ResourceExhausted),
        (Kind::Unavailable, Code::Unavailable),
        (Kind::FailedPrecondition, Code::FailedPrecondition),
        (Kind::DeadlineExceeded, Code::DeadlineExceeded),
        (Kind::Unauthenticated, Code::Unauthenticated),
        (Kind::DataLoss, Code::DataLoss),
        (Kind::Unknown, Code::Unknown),
        (Kind::Internal, Code::Internal),
    ];

    #[test]
    fn each_kind_becomes_its_grpc_code_with_the_message() {
        for (kind, code) in KINDS {
            let status = Status::from(Error::new(kind, "config.x: why"));
            assert_eq!(status.code(), code, "{kind:?}");
            assert_eq!(status.message(), "config.x: why");
        }
    }

    #[test]
    fn an_errno_gives_the_kind() {
        let io = |errno| std::io::Error::from_raw_os_error(errno);
        for (errno, kind) in [
            (libc::ENOSPC, Kind::Exhausted),
            (libc::EDQUOT, Kind::Exhausted),
            (libc::ENOENT, Kind::NotFound),
            (libc::EEXIST, Kind::AlreadyExists),
            (libc::EIO, Kind::Internal),
            (libc::EACCES, Kind::Internal),
        ] {
            assert_eq!(Error::from(io(errno)).kind(), kind, "errno {errno}");
            let e = Error::io("record pod p", &io(errno));
            assert_eq!(e.kind(), kind);
            assert!(e.message().starts_with("record pod p: "), "{}", e.message());
        }
        let full = Status::from(Error::io("create upper", &io(libc::ENOSPC)));
        assert_eq!(full.code(), Code::ResourceExhausted);
    }

    #[test]
    fn image_errors_keep_their_kind() {
        let io = |errno| ImageError::io("unpack layer", std::io::Error::from_raw_os_error(errno));
        for (e, kind) in [
            (ImageError::NotFound("busybox".into()), Kind::NotFound),
            (
                ImageError::InvalidReference {
                    reference: "A:b".into(),
                    reason: "uppercase".into(),
                },
                Kind::Invalid,
            ),
            (
                ImageError::Registry {
                    reference: "r/x".into(),
                    message: "connection reset".into(),
                },
                Kind::Unavailable,
            ),
            (io(libc::ENOSPC), Kind::Exhausted),
            (io(libc::EIO), Kind::Internal),
        ] {
            let message = e.to_string();
            let err = Error::from(e);
            assert_eq!((err.kind(), err.message()), (kind, message.as_str()));
        }
    }

    #[test]
    fn a_pod_step_that_found_the_disk_full_is_exhausted() {
        use podsandbox::pod::{Failure, PodError};
        let step = |failure| PodError::Step {
            pod: "p".into(),
            step: "write pod files",
            message: "hosts: No space left on device (os error 28)".into(),
            failure,
        };
        assert_eq!(Error::from(step(Failure::NoSpace)).kind(), Kind::Exhausted);
        assert_eq!(Error::from(step(Failure::Other)).kind(), Kind::Internal);
        assert_eq!(
            Error::from(PodError::Invalid("hostname: bad".into())).kind(),
            Kind::Invalid
        );
    }
}
