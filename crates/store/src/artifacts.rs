//! What every backend shares about artifact records: the checks made before a write.

use crate::Result;
use smith_core::Artifact;

/// Refuses a record no backend may hold: a name [`smith_core::artifact::check_name`] refuses,
/// a SHA-256 that is not 64 lowercase hex digits, a size past `i64`, or a name given twice.
pub(crate) fn check(artifacts: &[Artifact]) -> Result<()> {
    let invalid = |m: String| -> crate::Error { smith_core::Error::invalid(m).into() };
    let mut names = std::collections::HashSet::new();
    for a in artifacts {
        smith_core::artifact::check_name(&a.name).map_err(|e| invalid(format!("artifact {:?}: {e}", a.name)))?;
        let hex = a.sha256.len() == 64 && a.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex {
            return Err(invalid(format!("artifact {:?}: sha256 must be 64 lowercase hex digits", a.name)));
        }
        if i64::try_from(a.size).is_err() {
            return Err(invalid(format!("artifact {:?}: size {} is too large", a.name, a.size)));
        }
        if !names.insert(a.name.as_str()) {
            return Err(invalid(format!("artifact {:?} is named twice", a.name)));
        }
    }
    Ok(())
}
