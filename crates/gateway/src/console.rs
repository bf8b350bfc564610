//! The operator console: static HTML, CSS and JavaScript modules embedded in the binary and
//! served at `/` and `/console/*`.
//!
//! The assets are public — served outside the auth guard — because they hold no data: every
//! figure the console shows comes from the JSON API, with the operator's token, which the
//! browser keeps in its session storage. A strict Content-Security-Policy allows scripts,
//! styles and connections from this origin only and no inline script or style, so data from
//! the API can never run as code. Each asset has a strong ETag (a hash of its bytes) and is
//! revalidated on every use (`Cache-Control: no-cache`): a new binary is picked up at once.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::LazyLock;

/// What a console page may load and do: its own scripts, styles and images, requests to its
/// own origin (the API), nothing inline, no frames, no plugins, no form posts elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; \
                       frame-ancestors 'none'";

struct Asset {
    /// The path under `/console/`.
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $mime:expr) => {
        Asset { path: $path, content_type: $mime, body: include_bytes!(concat!("../console/", $path)) }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file under `crates/gateway/console/` (a test checks the list against the folder).
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("console.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("js/api.js", JS),
    asset!("js/app.js", JS),
    asset!("js/chart.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/metrics.js", JS),
    asset!("js/sse.js", JS),
    asset!("js/ui.js", JS),
    asset!("js/pages/approvals.js", JS),
    asset!("js/pages/feed.js", JS),
    asset!("js/pages/nodes.js", JS),
    asset!("js/pages/overview.js", JS),
    asset!("js/pages/scaling.js", JS),
    asset!("js/pages/schedules.js", JS),
    asset!("js/pages/session.js", JS),
    asset!("js/pages/sessions.js", JS),
    asset!("js/pages/task.js", JS),
    asset!("js/pages/tasks.js", JS),
    asset!("js/pages/webhooks.js", JS),
];

/// Each asset's ETag: a quoted FNV-1a hash of its bytes, computed once.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| HeaderValue::from_str(&format!("\"{:016x}\"", fnv1a(a.body))).expect("hex is a header value"))
        .collect()
});

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// `/` (the console's page) and `/console/{path}` (its assets).
pub(crate) fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/console/{*path}", get(asset))
        .method_not_allowed_fallback(method_not_allowed)
}

async fn index(headers: HeaderMap) -> Response {
    serve(0, &headers)
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|a| a.path == path) {
        Some(i) => serve(i, &headers),
        None => crate::ApiError::not_found(format!("no console asset {path:?}")).into_response(),
    }
}

async fn method_not_allowed() -> Response {
    let body = serde_json::json!({"error": {"code": "method_not_allowed", "message": "the console answers GET only"}});
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

/// The asset, or `304 Not Modified` when the browser's copy has its ETag.
fn serve(i: usize, headers: &HeaderMap) -> Response {
    let a = &ASSETS[i];
    let etag = ETAGS[i].clone();
    let fresh = headers.get_all(IF_NONE_MATCH).iter().any(|v| matches_etag(v.to_str().unwrap_or(""), &etag));
    let common = [
        (ETAG, etag),
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (HeaderName::from_static("content-security-policy"), HeaderValue::from_static(CSP)),
        (HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff")),
        (HeaderName::from_static("referrer-policy"), HeaderValue::from_static("no-referrer")),
        (HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY")),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (common, [(CONTENT_TYPE, HeaderValue::from_static(a.content_type))], a.body).into_response()
}

/// `If-None-Match`: `*` or a list of (possibly weak) ETags.
fn matches_etag(header: &str, etag: &HeaderValue) -> bool {
    let ours = etag.to_str().unwrap_or("");
    header.split(',').map(str::trim).any(|t| t == "*" || t.trim_start_matches("W/") == ours)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn fetch(path: &str, if_none_match: Option<&str>) -> Response {
        let mut req = Request::get(path);
        if let Some(tag) = if_none_match {
            req = req.header(IF_NONE_MATCH, tag);
        }
        router().oneshot(req.body(Body::empty()).expect("request")).await.expect("infallible")
    }

    fn header<'a>(resp: &'a Response, name: &str) -> &'a str {
        resp.headers().get(name).map(|v| v.to_str().expect("ascii")).unwrap_or("")
    }

    #[tokio::test]
    async fn serves_the_page_and_its_assets_with_their_types_and_policy() {
        for (path, want) in [
            ("/", "text/html"),
            ("/console/console.css", "text/css"),
            ("/console/js/app.js", "text/javascript"),
            ("/console/js/pages/task.js", "text/javascript"),
            ("/console/favicon.svg", "image/svg+xml"),
        ] {
            let resp = fetch(path, None).await;
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            assert!(header(&resp, "content-type").starts_with(want), "{path}: {:?}", resp.headers());
            assert_eq!(header(&resp, "content-security-policy"), CSP, "{path}");
            assert_eq!(header(&resp, "x-content-type-options"), "nosniff", "{path}");
            assert_eq!(header(&resp, "cache-control"), "no-cache", "{path}");
            assert!(header(&resp, "etag").starts_with('"'), "{path}");
        }
    }

    #[tokio::test]
    async fn a_known_etag_gets_not_modified() {
        let etag = header(&fetch("/console/js/app.js", None).await, "etag").to_string();
        let resp = fetch("/console/js/app.js", Some(&etag)).await;
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header(&resp, "etag"), etag);
        let weak = format!("\"other\", W/{etag}");
        assert_eq!(fetch("/console/js/app.js", Some(&weak)).await.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(fetch("/console/js/app.js", Some("\"other\"")).await.status(), StatusCode::OK);
        // another asset's tag is not this one's
        assert_eq!(fetch("/console/js/api.js", Some(&etag)).await.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn unknown_assets_and_other_methods_are_json_errors() {
        for path in ["/console/nope.js", "/console/../Cargo.toml", "/console/js/"] {
            let resp = fetch(path, None).await;
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
            assert!(header(&resp, "content-type").starts_with("application/json"), "{path}");
        }
        let post = Request::post("/").body(Body::empty()).expect("request");
        let resp = router().oneshot(post).await.expect("infallible");
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn every_asset_has_its_own_etag() {
        let mut tags: Vec<_> = ETAGS.iter().collect();
        tags.sort_by_key(|t| t.as_bytes());
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len());
    }
}
