//! Artifacts in a local directory (`file:///dir`): one file per key under it. A put copies into
//! `<dir>/.tmp/` and renames into place, so a reader sees the old bytes or the new, never half.

use crate::collect::open_regular;
use crate::{percent_decode, Error, Object, Result, Storage};
use async_trait::async_trait;
use futures_util::StreamExt;
use std::path::{Path, PathBuf};
use tokio_util::io::ReaderStream;

/// The directory a `file:` URL names: `file:///absolute/dir` (percent-escapes decoded).
pub(crate) fn parse(url: &str) -> Result<PathBuf> {
    let bad = |why: &str| Error::Config(format!("artifact storage URL {url:?}: {why}"));
    let rest = url.strip_prefix("file://").ok_or_else(|| bad("write it file:///absolute/dir"))?;
    if !rest.starts_with('/') {
        return Err(bad("the directory must be an absolute path (file:///absolute/dir)"));
    }
    if rest.contains(['?', '#']) {
        return Err(bad("a file URL takes no query or fragment"));
    }
    let path = PathBuf::from(percent_decode(rest));
    if path.parent().is_none() {
        return Err(bad("name a directory, not the file system's root"));
    }
    Ok(path)
}

pub struct FileStorage {
    root: PathBuf,
}

impl FileStorage {
    /// Uses `root`, creating it if need be.
    pub async fn open(root: &Path) -> Result<FileStorage> {
        tokio::fs::create_dir_all(root.join(".tmp"))
            .await
            .map_err(|e| Error::Config(format!("cannot create the artifact directory {}: {e}", root.display())))?;
        Ok(FileStorage { root: root.to_path_buf() })
    }

    /// The file of a key; a key that could leave the root is refused.
    fn path(&self, key: &str) -> Result<PathBuf> {
        let unsafe_part = key.split('/').any(|p| p.is_empty() || p == "." || p == ".." || p.starts_with(".tmp"));
        if unsafe_part || key.contains('\0') {
            return Err(Error::Unavailable(format!("refused an unsafe key {key:?}")));
        }
        Ok(self.root.join(key))
    }
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Unavailable(format!("{what} {}: {e}", path.display()))
}

#[async_trait]
impl Storage for FileStorage {
    async fn put(&self, key: &str, path: &Path, size: u64, _sha256: &str) -> Result<()> {
        let dest = self.path(key)?;
        let tmp = self.root.join(".tmp").join(format!("{:016x}", fastrand::u64(..)));
        let (from, to) = (path.to_path_buf(), tmp.clone());
        // a copy is blocking I/O (kernel copy_file_range where it can): off the async threads
        let copied = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            let mut src = open_regular(&from)?;
            let mut dst = std::fs::File::create(&to)?;
            let n = std::io::copy(&mut src, &mut dst)?;
            dst.sync_all()?;
            Ok(n)
        })
        .await
        .map_err(|e| Error::Unavailable(format!("the copy of {} stopped: {e}", path.display())))?;
        let fail = |e: Error| {
            let _ = std::fs::remove_file(&tmp);
            e
        };
        let n = copied.map_err(|e| fail(io("cannot copy", path, e)))?;
        if n != size {
            return Err(fail(Error::Unavailable(format!(
                "{} changed while stored ({n} bytes, not {size})",
                path.display()
            ))));
        }
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(|e| fail(io("cannot create", parent, e)))?;
        }
        tokio::fs::rename(&tmp, &dest).await.map_err(|e| fail(io("cannot write", &dest, e)))
    }

    async fn get(&self, key: &str) -> Result<Option<Object>> {
        let path = self.path(key)?;
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("cannot open", &path, e)),
        };
        let meta = file.metadata().await.map_err(|e| io("cannot read", &path, e))?;
        if !meta.is_file() {
            return Ok(None);
        }
        let body = ReaderStream::with_capacity(file, 64 * 1024).boxed();
        Ok(Some(Object { size: meta.len(), body }))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("cannot remove", &path, e)),
        }
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(o: Object) -> Vec<u8> {
        let mut body = o.body;
        let mut out = Vec::new();
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn put_get_replace_and_delete() {
        let root = tempfile::tempdir().unwrap();
        let src = tempfile::tempdir().unwrap();
        let s = FileStorage::open(&root.path().join("store")).await.unwrap();
        let file = src.path().join("f");
        std::fs::write(&file, b"first").unwrap();
        s.put("acme/t1/out/a.txt", &file, 5, "").await.unwrap();
        let o = s.get("acme/t1/out/a.txt").await.unwrap().expect("stored");
        assert_eq!(o.size, 5);
        assert_eq!(read(o).await, b"first");
        std::fs::write(&file, b"second!").unwrap();
        s.put("acme/t1/out/a.txt", &file, 7, "").await.unwrap();
        assert_eq!(read(s.get("acme/t1/out/a.txt").await.unwrap().unwrap()).await, b"second!");
        assert!(s.put("acme/t1/x", &file, 3, "").await.is_err(), "a size that does not match is refused");
        assert!(s.get("acme/t1/x").await.unwrap().is_none(), "and leaves nothing");
        s.delete("acme/t1/out/a.txt").await.unwrap();
        s.delete("acme/t1/out/a.txt").await.unwrap();
        assert!(s.get("acme/t1/out/a.txt").await.unwrap().is_none());
        for bad in ["../x", "a//b", "a/./b", ".tmp/x", ""] {
            assert!(s.get(bad).await.is_err(), "{bad}");
        }
        assert_eq!(std::fs::read_dir(root.path().join("store/.tmp")).unwrap().count(), 0, "no temp file left");
    }

    #[test]
    fn file_urls_name_absolute_directories() {
        assert_eq!(parse("file:///var/lib/a%20b").unwrap(), PathBuf::from("/var/lib/a b"));
        assert!(parse("file://host/dir").is_err());
        assert!(parse("file:///dir?x=1").is_err());
    }
}
