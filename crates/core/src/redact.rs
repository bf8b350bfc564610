//! What the platform shows in place of a secret.

/// What a served secret reads as.
pub const REDACTED: &str = "<redacted>";

/// A URL with the password of its user part replaced (`https://u:<redacted>@host/`).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:{REDACTED}@{host}{tail}")
        }
        None => url.to_string(),
    }
}
