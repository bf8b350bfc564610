//! Stable error codes shared by every crate; the gateway maps them to HTTP statuses in one place.

use std::fmt;

/// A stable, machine-readable error code (`{"error":{"code": …}}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// Malformed request (bad JSON, bad id, bad query).
    InvalidArgument,
    /// Well-formed but unacceptable value (unknown field, unknown agent, out of range).
    Unprocessable,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    Conflict,
    TooLarge,
    /// A request body that is not `application/json`.
    UnsupportedMediaType,
    RateLimited,
    /// The store is over its size limit: new work is refused until space is freed.
    InsufficientStorage,
    Unavailable,
    /// A write lost its fence: the task is no longer held by this attempt.
    Fenced,
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidArgument => "invalid_argument",
            Code::Unprocessable => "unprocessable",
            Code::Unauthenticated => "unauthenticated",
            Code::PermissionDenied => "permission_denied",
            Code::NotFound => "not_found",
            Code::Conflict => "conflict",
            Code::TooLarge => "too_large",
            Code::UnsupportedMediaType => "unsupported_media_type",
            Code::RateLimited => "rate_limited",
            Code::InsufficientStorage => "insufficient_storage",
            Code::Unavailable => "unavailable",
            Code::Fenced => "fenced",
            Code::Internal => "internal",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A domain error: a code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    pub code: Code,
    pub message: String,
}

impl Error {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Error { code, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(Code::Unprocessable, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
