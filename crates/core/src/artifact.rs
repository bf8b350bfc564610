//! Artifacts: the files an agent leaves in `$SMITH_ARTIFACTS`, stored when its attempt ends —
//! what one is, and which names are acceptable (a relative path with `/` that cannot leave the
//! directory it is written into).

use crate::time::Micros;
use serde::{Deserialize, Serialize};

/// The longest artifact name, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;
/// The longest component of a name (a file or directory name), in bytes: Linux's `NAME_MAX`.
pub const MAX_COMPONENT_BYTES: usize = 255;

/// A stored artifact of a task, as the API serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// Its path under `$SMITH_ARTIFACTS`, components joined by `/`.
    pub name: String,
    pub size: u64,
    /// SHA-256 of its bytes, 64 lowercase hex digits.
    pub sha256: String,
    /// When the attempt that stored it ended.
    pub created_at: Micros,
}

/// Checks an artifact name: a relative path of `/`-separated components, none empty, `.` or
/// `..`, none longer than [`MAX_COMPONENT_BYTES`], at most [`MAX_NAME_BYTES`] in all, and no
/// control character or backslash anywhere. Such a name joined to a directory stays inside it
/// on every system the CLI runs on. The error says what is wrong.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!("the name is {} bytes long, more than {MAX_NAME_BYTES}", name.len()));
    }
    if let Some(c) = name.chars().find(|c| c.is_control() || *c == '\\') {
        return Err(format!("the name holds {c:?}"));
    }
    if name.starts_with('/') {
        return Err("the name is an absolute path".into());
    }
    for part in name.split('/') {
        match part {
            "" => return Err("the name has an empty component".into()),
            "." | ".." => return Err(format!("the name has a {part:?} component")),
            p if p.len() > MAX_COMPONENT_BYTES => {
                return Err(format!("a component of the name is longer than {MAX_COMPONENT_BYTES} bytes"))
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_inside_their_directory() {
        let long = "x".repeat(MAX_COMPONENT_BYTES);
        let ok = ["a", "report.txt", "out/deep/er/file.bin", ".hidden", "a..b", "spaced name", "ünï/cödé", &long];
        for name in ok {
            assert!(check_name(name).is_ok(), "{name:?}: {:?}", check_name(name));
        }
        let too_long_part = "x".repeat(MAX_COMPONENT_BYTES + 1);
        let too_long = ["ab/"; 400].concat() + "c";
        let bad = [
            ("", "empty"),
            ("/etc/passwd", "absolute"),
            ("../up", "\"..\""),
            ("a/../../b", "\"..\""),
            ("./a", "\".\""),
            ("a//b", "empty component"),
            ("a/", "empty component"),
            ("a\\b", "'\\\\'"),
            ("new\nline", "'\\n'"),
            ("nul\0", "'\\0'"),
            (&too_long_part, "longer than 255"),
            (&too_long, "more than 1024"),
        ];
        for (name, why) in bad {
            let e = check_name(name).expect_err(name);
            assert!(e.contains(why), "{name:?}: {e}");
        }
    }
}
