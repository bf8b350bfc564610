//! The store's error type; each variant maps to a stable domain code.

use smith_core::Code;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong (unknown agent, bad cursor…).
    #[error(transparent)]
    Domain(#[from] smith_core::Error),
    #[error("task {0} is not held by this attempt")]
    Fenced(smith_core::TaskId),
    #[error("task {0} not found")]
    NotFound(smith_core::TaskId),
    #[error("store configuration: {0}")]
    Config(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store: {0}")]
    Backend(String),
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::Domain(e) => e.code,
            Error::Fenced(_) => Code::Fenced,
            Error::NotFound(_) => Code::NotFound,
            Error::Config(_) | Error::Backend(_) => Code::Internal,
            Error::Unavailable(_) => Code::Unavailable,
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DatabaseBusy => {
                Error::Unavailable(e.to_string())
            }
            other => Error::Backend(other.to_string()),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Backend(format!("corrupt JSON column: {e}"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
