//! Walks an attempt's artifact directory: regular files only, never following a symbolic link
//! (an agent must not get `/etc/shadow` stored by linking to it), names checked; everything
//! else is skipped and said why. Blocking: callers run it off the async threads.

use smith_core::artifact::check_name;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The most directory entries one walk looks at (files, directories, whatever else); a
/// directory holding more is over its file cap whatever the cap is.
pub const MAX_ENTRIES: usize = 100_000;
/// The deepest directory a walk enters.
const MAX_DEPTH: usize = 64;

/// A regular file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its path under the directory, components joined by `/`.
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
}

/// An entry not collected, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Its path under the directory (not UTF-8: lossily).
    pub name: String,
    pub why: String,
}

/// What a walk found, sorted by name.
#[derive(Debug, Default)]
pub struct Collected {
    pub files: Vec<Found>,
    pub skipped: Vec<Skipped>,
    /// The walk stopped early: more than the files asked for, or more than [`MAX_ENTRIES`]
    /// entries, or deeper than it goes.
    pub over: Option<String>,
}

impl Collected {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Walks `dir`, stopping once it has found more than `max_files` files (then `over` says so).
/// A missing directory holds nothing.
pub fn collect(dir: &Path, max_files: u64) -> std::io::Result<Collected> {
    let mut out = Collected::default();
    if !dir.exists() {
        return Ok(out);
    }
    let mut entries = 0;
    let mut stack = vec![(dir.to_path_buf(), String::new(), 0usize)];
    while let Some((path, prefix, depth)) = stack.pop() {
        for entry in std::fs::read_dir(&path)? {
            let entry = entry?;
            entries += 1;
            if entries > MAX_ENTRIES {
                out.over = Some(format!("the directory holds more than {MAX_ENTRIES} entries"));
                return Ok(out);
            }
            let raw = entry.file_name();
            let Some(part) = raw.to_str() else {
                let name = format!("{prefix}{}", raw.to_string_lossy());
                out.skipped.push(Skipped { name, why: "its name is not UTF-8".into() });
                continue;
            };
            let name = format!("{prefix}{part}");
            // the entry's own type: a symbolic link is a link here, never what it points to
            let kind = entry.file_type()?;
            if kind.is_symlink() {
                out.skipped.push(Skipped { name, why: "a symbolic link (never followed)".into() });
            } else if kind.is_dir() {
                if depth + 1 >= MAX_DEPTH {
                    out.over = Some(format!("the directory nests deeper than {MAX_DEPTH} levels"));
                    return Ok(out);
                }
                stack.push((entry.path(), format!("{name}/"), depth + 1));
            } else if !kind.is_file() {
                out.skipped.push(Skipped { name, why: "not a regular file".into() });
            } else if let Err(why) = check_name(&name) {
                out.skipped.push(Skipped { name, why });
            } else {
                let size = entry.metadata()?.len();
                out.files.push(Found { name, path: entry.path(), size });
                if out.files.len() as u64 > max_files {
                    out.over = Some(format!("more than {max_files} files"));
                    return Ok(out);
                }
            }
        }
    }
    out.files.sort_by(|a, b| a.name.cmp(&b.name));
    out.skipped.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Opens a collected file for reading without following a symbolic link, and only if it is
/// still a regular file.
pub(crate) fn open_regular(path: &Path) -> std::io::Result<File> {
    let f = std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NOFOLLOW).open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other(format!("{} is no longer a regular file", path.display())));
    }
    Ok(f)
}

/// The size and SHA-256 (lowercase hex) of a file's bytes, read without following a link.
pub fn sha256_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = open_regular(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        ctx.update(&buf[..n]);
    }
    Ok((size, crate::hex(ctx.finish().as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn names(c: &Collected) -> Vec<&str> {
        c.files.iter().map(|f| f.name.as_str()).collect()
    }

    #[test]
    fn regular_files_only_and_links_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "not yours").unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("a/b")).unwrap();
        std::fs::write(d.join("top.txt"), "top").unwrap();
        std::fs::write(d.join("a/b/deep.bin"), [0u8, 255, 7]).unwrap();
        std::fs::write(d.join("empty"), "").unwrap();
        symlink(outside.path().join("secret"), d.join("link")).unwrap();
        symlink(outside.path(), d.join("a/dirlink")).unwrap();
        nix::unistd::mkfifo(&d.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        std::fs::write(d.join("bad\\name"), "x").unwrap();

        let c = collect(d, 10).unwrap();
        assert_eq!(names(&c), ["a/b/deep.bin", "empty", "top.txt"]);
        assert_eq!(c.files.iter().map(|f| f.size).collect::<Vec<_>>(), [3, 0, 3]);
        assert_eq!(c.bytes(), 6);
        let skipped: Vec<(&str, &str)> = c.skipped.iter().map(|s| (s.name.as_str(), s.why.as_str())).collect();
        assert_eq!(skipped.len(), 4, "{skipped:?}");
        assert!(skipped.contains(&("link", "a symbolic link (never followed)")));
        assert!(skipped.contains(&("a/dirlink", "a symbolic link (never followed)")));
        assert!(skipped.contains(&("fifo", "not a regular file")));
        assert!(skipped.iter().any(|(n, why)| *n == "bad\\name" && why.contains("'\\\\'")));
        assert!(c.over.is_none());

        let (size, sha) = sha256_file(&d.join("empty")).unwrap();
        assert_eq!((size, sha.as_str()), (0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
        assert!(sha256_file(&d.join("link")).is_err(), "a link is not opened");
    }

    #[test]
    fn the_walk_stops_past_the_file_cap() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..5 {
            std::fs::write(dir.path().join(format!("f{i}")), "x").unwrap();
        }
        assert!(collect(dir.path(), 5).unwrap().over.is_none());
        let c = collect(dir.path(), 3).unwrap();
        assert_eq!(c.over.as_deref(), Some("more than 3 files"));
        assert!(collect(&dir.path().join("missing"), 3).unwrap().files.is_empty());
    }
}
