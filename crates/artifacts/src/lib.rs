//! Artifact storage: where the files agents leave in `$SMITH_ARTIFACTS` are kept, behind the
//! object-safe [`Storage`] trait, chosen by URL in [`open`] — a local directory (`file:///…`,
//! what `smith up` uses) or an S3-compatible bucket (`s3://bucket/prefix?…`, signed with SigV4
//! over reqwest). Objects are keyed `<tenant>/<task-id>/<name>` ([`key`]). [`collect`] walks an
//! attempt's directory (regular files only, never following a symbolic link) and hashes what it
//! found. What the store records about artifacts, and the caps, are the worker's.

mod collect;
mod file;
mod s3;

pub use collect::{collect, sha256_file, Collected, Found, Skipped, MAX_ENTRIES};
pub use file::FileStorage;
pub use s3::S3Storage;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use smith_core::TaskId;
use std::path::Path;
use std::sync::Arc;

/// Error code of a task whose artifacts are over a cap (per task: bytes or files; per tenant:
/// bytes); nothing of the attempt's is stored. Not retried.
pub const TOO_LARGE: &str = "artifacts_too_large";
/// Error code of a task whose artifacts could not be stored (the storage failed, the directory
/// could not be made or read). Retried.
pub const UNAVAILABLE: &str = "artifacts_unavailable";

/// What a storage operation failed with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL or the environment is wrong: nothing will work until it is fixed.
    #[error("artifact storage configuration: {0}")]
    Config(String),
    /// The storage could not be reached or refused the operation.
    #[error("artifact storage: {0}")]
    Unavailable(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A stored object, streamed.
pub struct Object {
    pub size: u64,
    pub body: BoxStream<'static, std::io::Result<Bytes>>,
}

/// Where artifacts' bytes are kept. Keys are `/`-separated paths made by [`key`].
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Stores the local file at `path` — `size` bytes whose SHA-256 is `sha256` (lowercase
    /// hex) — under `key`, replacing what the key held. Streams the file; never holds it whole.
    async fn put(&self, key: &str, path: &Path, size: u64, sha256: &str) -> Result<()>;

    /// The object under `key`, streamed; `None` when there is none.
    async fn get(&self, key: &str) -> Result<Option<Object>>;

    /// Removes the object under `key`; a missing one is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// The storage's URL as it may be shown (no credential is ever part of it).
    fn describe(&self) -> String;
}

/// Caps on what artifacts may hold; an attempt over any fails [`TOO_LARGE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Bytes of one task's artifacts (all its attempts', a later one's replacing by name).
    pub task_bytes: u64,
    /// Files of one task.
    pub task_files: u64,
    /// Bytes of every artifact of one tenant.
    pub tenant_bytes: u64,
}

impl Caps {
    pub const DEFAULT_TASK_BYTES: u64 = 100 << 20;
    pub const DEFAULT_TASK_FILES: u64 = 1000;
    pub const DEFAULT_TENANT_BYTES: u64 = 10 << 30;
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            task_bytes: Self::DEFAULT_TASK_BYTES,
            task_files: Self::DEFAULT_TASK_FILES,
            tenant_bytes: Self::DEFAULT_TENANT_BYTES,
        }
    }
}

/// The object key of a task's artifact: `<tenant>/<task-id>/<name>`. The tenant is escaped into
/// one safe component (bytes other than ASCII letters, digits, `-` and `_` as `%XX`), so no
/// tenant name can reach another's keys; the name must have passed
/// [`smith_core::artifact::check_name`].
pub fn key(tenant: &str, task: TaskId, name: &str) -> String {
    let mut t = String::with_capacity(tenant.len());
    for b in tenant.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            t.push(b as char);
        } else {
            t.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{t}/{task}/{name}")
}

/// Checks a storage URL without opening anything: `file:///absolute/dir` or
/// `s3://bucket[/prefix][?endpoint=http://host:port&region=…]`. The error names what is wrong.
pub fn check_url(url: &str) -> Result<()> {
    if url.starts_with("file:") {
        file::parse(url).map(drop)
    } else if url.starts_with("s3:") {
        s3::Location::parse(url).map(drop)
    } else {
        Err(Error::Config(format!("unsupported artifact storage URL {url:?}: use file:///DIR or s3://BUCKET/PREFIX")))
    }
}

/// Opens the storage a URL names (see [`check_url`]). S3 takes its credentials from
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, its region from the URL's
/// `region`, else `AWS_REGION`/`AWS_DEFAULT_REGION`, else `us-east-1`.
pub async fn open(url: &str) -> Result<Arc<dyn Storage>> {
    check_url(url)?;
    if url.starts_with("file:") {
        return Ok(Arc::new(FileStorage::open(&file::parse(url)?).await?));
    }
    Ok(Arc::new(S3Storage::open(s3::Location::parse(url)?, s3::CredentialSource::from_env()?)?))
}

/// SHA-256 of `bytes` as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Percent-decodes a URL component (`%XX`); anything malformed is kept as written.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_tenants_apart() {
        let id: TaskId = "0190f5d2-0000-7000-8000-000000000001".parse().unwrap();
        assert_eq!(key("acme", id, "out/a.txt"), format!("acme/{id}/out/a.txt"));
        assert_eq!(key("../etc", id, "x"), format!("%2E%2E%2Fetc/{id}/x"));
        assert_eq!(key("a/b", id, "x"), format!("a%2Fb/{id}/x"));
        assert_ne!(key("a/b", id, "x"), key("a%2Fb", id, "x"), "the escape itself is escaped");
    }

    #[test]
    fn urls_are_checked_by_scheme() {
        assert!(check_url("file:///var/lib/smith/artifacts").is_ok());
        assert!(check_url("s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=eu-west-1").is_ok());
        assert!(check_url("s3://bucket").is_ok());
        for (bad, why) in [
            ("ftp://x/y", "unsupported"),
            ("file://relative/dir", "absolute"),
            ("file:///", "a directory"),
            ("s3:///prefix", "bucket"),
            ("s3://bucket/p?endpoint=ftp://x", "endpoint"),
            ("s3://bucket/p?colour=blue", "colour"),
        ] {
            let e = check_url(bad).expect_err(bad).to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn percent_decoding_keeps_what_is_not_an_escape() {
        assert_eq!(percent_decode("a%20b%2Fc"), "a b/c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
