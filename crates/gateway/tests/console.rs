//! The console's files as the gateway serves them: every file in `console/` is served,
//! byte for byte, without credentials even when the API needs a token; everything a page
//! loads or imports exists; and nothing in them needs the Content-Security-Policy relaxed
//! (no inline script or style, no event-handler attributes, no markup built from strings).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use smith_gateway::{Gateway, GatewayOptions};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use tower::ServiceExt;

fn console_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("console")
}

/// Every file under `console/`, as a path relative to it.
fn files() -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("console dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, base, out);
            } else {
                out.push(path.strip_prefix(base).expect("under base").to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(&console_dir(), &console_dir(), &mut out);
    out.sort();
    out
}

fn read(file: &str) -> String {
    std::fs::read_to_string(console_dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

async fn gateway_with_token() -> (Gateway, tempfile_dir::Dir) {
    let dir = tempfile_dir::Dir::new();
    let opts = smith_store::OpenOptions { fsync: false, ..Default::default() };
    let store = smith_store::open(&format!("sqlite://{}", dir.0.join("smith.db").display()), &opts).await.unwrap();
    let bus = smith_bus::open("memory://").await.unwrap();
    let mut gopts = GatewayOptions::new("gw-console");
    gopts.token = Some("s3cret-token".into());
    (Gateway::new(gopts, store, bus), dir)
}

/// A temp dir removed on drop (the gateway crate has no tempfile dependency).
mod tempfile_dir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            let d = std::env::temp_dir().join(format!("smith-console-{}", uuid::Uuid::now_v7()));
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

async fn get(gw: &Gateway, path: &str) -> (StatusCode, Vec<u8>) {
    let req = Request::get(path).body(Body::empty()).unwrap();
    let resp = gw.router().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, body.to_vec())
}

#[tokio::test]
async fn every_file_is_served_without_credentials_while_the_api_needs_them() {
    let (gw, _dir) = gateway_with_token().await;
    for file in files() {
        let path = if file == "index.html" { "/".to_string() } else { format!("/console/{file}") };
        let (status, body) = get(&gw, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(body, std::fs::read(console_dir().join(&file)).unwrap(), "{path} differs from {file}");
    }
    let (status, _) = get(&gw, "/v1/tasks").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the API still needs the token");
    let (status, _) = get(&gw, "/metrics").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// Quoted strings after `from`, `import` and in `src=`/`href=` attributes that name a file.
fn references(file: &str, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let dir = Path::new(file).parent().unwrap_or(Path::new(""));
    for marker in ["from '", "import '", "src=\"/console/", "href=\"/console/"] {
        for (i, _) in text.match_indices(marker) {
            let rest = &text[i + marker.len()..];
            let end = rest.find(['\'', '"']).expect("closing quote");
            let target = &rest[..end];
            let resolved = if marker.contains("/console/") {
                target.to_string()
            } else {
                // a relative module specifier, resolved against the importing file
                let mut parts: Vec<&str> = dir.to_str().unwrap().split('/').filter(|p| !p.is_empty()).collect();
                for seg in target.split('/') {
                    match seg {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        s => parts.push(s),
                    }
                }
                parts.join("/")
            };
            out.push(resolved);
        }
    }
    out
}

#[test]
fn everything_a_page_loads_exists() {
    let all: BTreeSet<String> = files().into_iter().collect();
    for file in &all {
        if !(file.ends_with(".js") || file.ends_with(".html")) {
            continue;
        }
        for target in references(file, &read(file)) {
            assert!(all.contains(&target), "{file} loads {target}, which is not in console/");
        }
    }
    assert!(references("index.html", &read("index.html")).contains(&"js/app.js".to_string()));
}

#[test]
fn nothing_needs_the_content_security_policy_relaxed() {
    for file in files() {
        let text = read(&file);
        if file.ends_with(".html") {
            for (i, _) in text.match_indices("<script") {
                let tag_end = text[i..].find('>').unwrap() + i;
                assert!(text[i..tag_end].contains("src="), "{file}: an inline script");
            }
            assert!(!text.contains("<style"), "{file}: an inline style sheet");
            assert!(!text.contains(" style="), "{file}: a style attribute");
            assert!(!text.contains(" onclick=") && !text.contains(" onload="), "{file}: an event-handler attribute");
        }
        if file.ends_with(".js") {
            for bad in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
                assert!(!text.contains(bad), "{file} uses {bad}");
            }
            // the token travels in the Authorization header only, never in a URL
            assert!(!text.contains("token="), "{file} puts a token in a URL");
        }
    }
}
