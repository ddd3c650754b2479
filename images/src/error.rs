//! Errors of the image store and pulls. `cri-server` maps each kind to a gRPC code.

use std::io;

use crate::unpack::UnpackError;

/// Everything that can go wrong with images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference `{reference}`: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("image `{0}` not found")]
    NotFound(String),
    #[error("registry {registry} refused credentials for {reference}: {message}")]
    Unauthorized {
        registry: String,
        reference: String,
        message: String,
    },
    #[error("pull {reference}: {message}")]
    Registry { reference: String, message: String },
    #[error("pull {reference}: {message}")]
    Unsupported { reference: String, message: String },
    #[error("pull {reference}: blob {digest}: {message}")]
    Corrupt {
        reference: String,
        digest: String,
        message: String,
    },
    #[error("pull {reference}: layer {digest} rejected: {source}")]
    UnsafeLayer {
        reference: String,
        digest: String,
        source: UnpackError,
    },
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
}

impl ImageError {
    /// An I/O error with what berth was doing.
    pub fn io(context: impl Into<String>, source: io::Error) -> ImageError {
        ImageError::Io {
            context: context.into(),
            source,
        }
    }

    /// True when the disk is full, so callers can answer ResourceExhausted.
    pub fn is_no_space(&self) -> bool {
        matches!(self, ImageError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC))
    }
}
