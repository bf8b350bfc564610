//! The bus's error type; each variant maps to a stable domain code.

use smith_core::Code;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A malformed subject, pattern or queue group name; the string says why.
    #[error("invalid subject: {0}")]
    InvalidSubject(String),
    /// The bus (or the connection behind it) has shut down.
    #[error("bus is closed")]
    Closed,
    /// A request got no reply in time.
    #[error("bus request timed out")]
    Timeout,
    /// A request was published to a subject nobody listens on.
    #[error("no responders on `{0}`")]
    NoResponders(String),
    /// The backend failed (connection lost, protocol error…).
    #[error("bus backend: {0}")]
    Backend(String),
    /// The bus URL or its options are wrong.
    #[error("bus configuration: {0}")]
    Config(String),
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidSubject(_) => Code::InvalidArgument,
            // A backend failure is a lost connection far more often than a bug: callers may retry.
            Error::Closed | Error::Timeout | Error::NoResponders(_) | Error::Backend(_) => Code::Unavailable,
            Error::Config(_) => Code::Internal,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
