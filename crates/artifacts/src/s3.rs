//! Artifacts in an S3-compatible bucket (`s3://bucket/prefix?endpoint=…&region=…`): PutObject,
//! GetObject and DeleteObject over reqwest, each request signed with AWS Signature Version 4
//! (HMAC-SHA256 and SHA-256 from ring) — no SDK. With an `endpoint` (MinIO, moto, LocalStack)
//! requests are path-style (`endpoint/bucket/key`); without, virtual-hosted on AWS
//! (`bucket.s3.region.amazonaws.com/key`). A put sends the file streamed, with its SHA-256 as
//! the signed payload hash, so the bucket refuses bytes that are not the ones hashed.
//! Credentials come from the environment and are never logged or shown.

use crate::collect::open_regular;
use crate::{hex, Error, Object, Result, Storage};
use async_trait::async_trait;
use futures_util::StreamExt;
use reqwest::{StatusCode, Url};
use ring::{digest, hmac};
use std::path::Path;
use std::time::Duration;
use tokio_util::io::ReaderStream;

/// SHA-256 of nothing: the payload hash of a GET or DELETE.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// Tries of one request that met a connection error or a 5xx/429 answer.
const TRIES: u32 = 3;

/// Where objects go, from the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Location {
    bucket: String,
    /// Key prefix without slashes at either end (may be empty).
    prefix: String,
    /// `http(s)://host:port`: path-style requests to it.
    endpoint: Option<Url>,
    region: Option<String>,
}

impl Location {
    pub(crate) fn parse(url: &str) -> Result<Location> {
        let bad = |why: String| Error::Config(format!("artifact storage URL {url:?}: {why}"));
        let rest = url.strip_prefix("s3://").ok_or_else(|| bad("write it s3://bucket/prefix".into()))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !bucket_ok {
            return Err(bad(format!(
                "{bucket:?} is not a bucket name (3 to 63 lowercase letters, digits, dots and hyphens)"
            )));
        }
        let mut loc = Location {
            bucket: bucket.to_string(),
            prefix: crate::percent_decode(prefix.trim_matches('/')),
            endpoint: None,
            region: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = crate::percent_decode(v);
            match k {
                "endpoint" => {
                    let e = Url::parse(&v).map_err(|e| bad(format!("endpoint {v:?}: {e}")))?;
                    if !matches!(e.scheme(), "http" | "https") || e.host_str().is_none() {
                        return Err(bad(format!("endpoint {v:?} must be http://host[:port] or https://…")));
                    }
                    if e.path() != "/" || e.query().is_some() {
                        return Err(bad(format!("endpoint {v:?} takes no path or query")));
                    }
                    loc.endpoint = Some(e);
                }
                "region" if !v.is_empty() => loc.region = Some(v),
                other => return Err(bad(format!("unknown parameter {other:?} (endpoint, region)"))),
            }
        }
        Ok(loc)
    }
}

/// AWS credentials: a key pair and, for temporary ones, a session token.
#[derive(Clone)]
pub(crate) struct Credentials {
    access_key: String,
    secret: String,
    token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

/// ECS's container credentials endpoint, which `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` is a path of.
const ECS_CREDENTIALS_HOST: &str = "http://169.254.170.2";
/// Temporary credentials are fetched again this long before they expire.
const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);

/// Where the credentials come from, in the order the AWS SDKs look: the environment's keys
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), else the container
/// credentials endpoint (an ECS task's role: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, or
/// `AWS_CONTAINER_CREDENTIALS_FULL_URI` with `AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE]`), whose
/// temporary keys are kept until shortly before they expire.
pub(crate) enum CredentialSource {
    Static(Credentials),
    Container {
        url: String,
        /// The `Authorization` header the endpoint wants, or the file that holds it.
        auth: Option<Auth>,
        cached: tokio::sync::Mutex<Option<(Credentials, Option<smith_core::Micros>)>>,
    },
}

pub(crate) enum Auth {
    Token(String),
    File(std::path::PathBuf),
}

impl CredentialSource {
    pub(crate) fn from_env() -> Result<CredentialSource> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let (Some(access_key), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            return Ok(CredentialSource::Static(Credentials { access_key, secret, token: var("AWS_SESSION_TOKEN") }));
        }
        let url = match (var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"), var("AWS_CONTAINER_CREDENTIALS_FULL_URI")) {
            (Some(path), _) => format!("{ECS_CREDENTIALS_HOST}{path}"),
            (None, Some(full)) => full,
            (None, None) => {
                return Err(Error::Config(
                    "S3 artifact storage needs credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a \
                     container credentials endpoint (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, as ECS sets for a \
                     task role, or AWS_CONTAINER_CREDENTIALS_FULL_URI)"
                        .into(),
                ))
            }
        };
        match Url::parse(&url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
            _ => return Err(Error::Config(format!("the container credentials URL {url:?} is not an http(s) URL"))),
        }
        let auth = match (var("AWS_CONTAINER_AUTHORIZATION_TOKEN"), var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")) {
            (Some(t), _) => Some(Auth::Token(t)),
            (None, Some(f)) => Some(Auth::File(f.into())),
            (None, None) => None,
        };
        Ok(CredentialSource::Container { url, auth, cached: Default::default() })
    }

    /// The credentials to sign with now.
    async fn get(&self, http: &reqwest::Client) -> Result<Credentials> {
        let CredentialSource::Container { url, auth, cached } = self else {
            let CredentialSource::Static(c) = self else { unreachable!("two kinds of source") };
            return Ok(c.clone());
        };
        let mut held = cached.lock().await;
        let now = smith_core::Micros::now();
        if let Some((c, expires)) = held.as_ref() {
            if expires.is_none_or(|e| now.plus(REFRESH_BEFORE) < e) {
                return Ok(c.clone());
            }
        }
        let fetched = fetch_container_credentials(http, url, auth.as_ref()).await?;
        *held = Some(fetched.clone());
        Ok(fetched.0)
    }
}

/// Temporary credentials from a container credentials endpoint, with when they expire.
async fn fetch_container_credentials(
    http: &reqwest::Client,
    url: &str,
    auth: Option<&Auth>,
) -> Result<(Credentials, Option<smith_core::Micros>)> {
    let unavailable =
        |why: String| Error::Unavailable(format!("cannot get S3 credentials from the container endpoint: {why}"));
    let mut req = http.get(url).timeout(Duration::from_secs(5));
    let header = match auth {
        Some(Auth::Token(t)) => Some(t.clone()),
        Some(Auth::File(f)) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| unavailable(format!("cannot read {}: {e}", f.display())))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    if let Some(h) = header {
        let mut value = reqwest::header::HeaderValue::from_str(&h)
            .map_err(|_| unavailable("the authorization token is not a header value".into()))?;
        value.set_sensitive(true);
        req = req.header(reqwest::header::AUTHORIZATION, value);
    }
    let r = req.send().await.map_err(|e| unavailable(without_url(&e)))?;
    if !r.status().is_success() {
        return Err(unavailable(format!("it answered {}", r.status())));
    }
    let body: serde_json::Value =
        r.json().await.map_err(|e| unavailable(format!("its answer is not JSON: {}", without_url(&e))))?;
    let field = |k: &str| body[k].as_str().filter(|v| !v.is_empty()).map(str::to_string);
    let (Some(access_key), Some(secret)) = (field("AccessKeyId"), field("SecretAccessKey")) else {
        return Err(unavailable("its answer has no AccessKeyId and SecretAccessKey".into()));
    };
    let expires = field("Expiration").and_then(|e| smith_core::Micros::parse_rfc3339(&e));
    Ok((Credentials { access_key, secret, token: field("Token") }, expires))
}

pub struct S3Storage {
    http: reqwest::Client,
    loc: Location,
    region: String,
    creds: CredentialSource,
}

impl S3Storage {
    pub(crate) fn open(loc: Location, creds: CredentialSource) -> Result<S3Storage> {
        let region = loc
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok().filter(|v| !v.is_empty()))
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok().filter(|v| !v.is_empty()))
            .unwrap_or_else(|| "us-east-1".into());
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the S3 client: {e}")))?;
        Ok(S3Storage { http, loc, region, creds })
    }

    /// The object's URL, its `Host` header and its canonical (encoded) path.
    fn target(&self, key: &str) -> Result<(Url, String, String)> {
        let full = if self.loc.prefix.is_empty() { key.to_string() } else { format!("{}/{key}", self.loc.prefix) };
        let (base, path) = match &self.loc.endpoint {
            Some(e) => {
                let base = e.as_str().trim_end_matches('/').to_string();
                (base, format!("/{}/{}", uri_encode(&self.loc.bucket), uri_encode(&full)))
            }
            None => {
                let host = format!("https://{}.s3.{}.amazonaws.com", self.loc.bucket, self.region);
                (host, format!("/{}", uri_encode(&full)))
            }
        };
        let url = Url::parse(&format!("{base}{path}")).map_err(|e| Error::Unavailable(format!("object URL: {e}")))?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => return Err(Error::Unavailable("the object URL has no host".into())),
        };
        Ok((url, host, path))
    }

    /// The signed headers of a request.
    fn signed(
        &self,
        creds: &Credentials,
        method: &str,
        host: &str,
        path: &str,
        payload_sha256: &str,
    ) -> Vec<(String, String)> {
        let (date, datetime) = amz_date(smith_core::Micros::now());
        let mut headers = vec![
            ("host".to_string(), host.to_string()),
            ("x-amz-content-sha256".to_string(), payload_sha256.to_string()),
            ("x-amz-date".to_string(), datetime.clone()),
        ];
        if let Some(t) = &creds.token {
            headers.push(("x-amz-security-token".to_string(), t.clone()));
        }
        let key = SigningKey { access_key: &creds.access_key, secret: &creds.secret, region: &self.region };
        let auth = key.authorization(method, path, "", &headers, payload_sha256, &date, &datetime);
        headers.retain(|(k, _)| k != "host");
        headers.push(("authorization".to_string(), auth));
        headers
    }

    /// Sends a signed request, retrying connection errors and 5xx/429 answers; `body` makes
    /// each try's body.
    async fn send(
        &self,
        method: reqwest::Method,
        key: &str,
        payload_sha256: &str,
        mut body: impl FnMut() -> Result<Option<(reqwest::Body, u64)>>,
    ) -> Result<reqwest::Response> {
        let (url, host, path) = self.target(key)?;
        let mut wait = Duration::from_millis(200);
        let mut tries = 0;
        loop {
            tries += 1;
            let creds = self.creds.get(&self.http).await?;
            let mut req = self.http.request(method.clone(), url.clone());
            for (k, v) in self.signed(&creds, method.as_str(), &host, &path, payload_sha256) {
                req = req.header(k, v);
            }
            if let Some((b, len)) = body()? {
                req = req
                    .header(reqwest::header::CONTENT_LENGTH, len)
                    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .body(b);
            }
            let why = match req.send().await {
                Ok(r) if !(r.status().is_server_error() || r.status() == StatusCode::TOO_MANY_REQUESTS) => {
                    return Ok(r)
                }
                Ok(r) => failure(method.as_str(), r).await,
                Err(e) => format!("S3 {method} failed: {}", without_url(&e)),
            };
            if tries >= TRIES {
                return Err(Error::Unavailable(why));
            }
            tracing::warn!(%method, tries, error = %why, "S3 request failed; retrying");
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
}

/// A reqwest error without its URL (which holds nothing secret, but is long).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(u) = e.url() {
        text = text.replace(u.as_str(), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// What an S3 error answer says: its status, `<Code>` and `<Message>`.
async fn failure(op: &str, r: reqwest::Response) -> String {
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    let tag = |t: &str| {
        let open = format!("<{t}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{t}>"))? + start;
        Some(text[start..end].to_string())
    };
    match (tag("Code"), tag("Message")) {
        (Some(c), Some(m)) => format!("S3 {op} answered {status}: {c}: {m}"),
        (Some(c), None) => format!("S3 {op} answered {status}: {c}"),
        _ => format!("S3 {op} answered {status}"),
    }
}

#[async_trait]
impl Storage for S3Storage {
    async fn put(&self, key: &str, path: &Path, size: u64, sha256: &str) -> Result<()> {
        let open = || -> Result<Option<(reqwest::Body, u64)>> {
            let f =
                open_regular(path).map_err(|e| Error::Unavailable(format!("cannot open {}: {e}", path.display())))?;
            let stream = ReaderStream::with_capacity(tokio::fs::File::from_std(f), 64 * 1024);
            Ok(Some((reqwest::Body::wrap_stream(stream), size)))
        };
        let r = self.send(reqwest::Method::PUT, key, sha256, open).await?;
        if !r.status().is_success() {
            return Err(Error::Unavailable(failure("PUT", r).await));
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Object>> {
        let r = self.send(reqwest::Method::GET, key, EMPTY_SHA256, || Ok(None)).await?;
        if r.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !r.status().is_success() {
            return Err(Error::Unavailable(failure("GET", r).await));
        }
        let size = r.content_length().ok_or_else(|| Error::Unavailable("S3 GET answered no length".into()))?;
        let body = r.bytes_stream().map(|c| c.map_err(std::io::Error::other)).boxed();
        Ok(Some(Object { size, body }))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let r = self.send(reqwest::Method::DELETE, key, EMPTY_SHA256, || Ok(None)).await?;
        if r.status().is_success() || r.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(Error::Unavailable(failure("DELETE", r).await))
    }

    fn describe(&self) -> String {
        let mut d = format!("s3://{}/{}", self.loc.bucket, self.loc.prefix);
        if let Some(e) = &self.loc.endpoint {
            d.push_str(&format!("?endpoint={}", e.as_str().trim_end_matches('/')));
        }
        d
    }
}

/// `20130524` and `20130524T000000Z` of a time.
fn amz_date(at: smith_core::Micros) -> (String, String) {
    let t = at.rfc3339(); // 2013-05-24T00:00:00.000000Z
    let datetime = format!("{}{}{}T{}{}{}Z", &t[0..4], &t[5..7], &t[8..10], &t[11..13], &t[14..16], &t[17..19]);
    (datetime[..8].to_string(), datetime)
}

/// A path as SigV4 (and S3) encode it: every byte but the unreserved ones and `/` as `%XX`.
fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, bytes).as_ref())
}

/// What signs one request (service `s3`).
struct SigningKey<'a> {
    access_key: &'a str,
    secret: &'a str,
    region: &'a str,
}

impl SigningKey<'_> {
    /// The `Authorization` header of a request: `headers` are the signed ones (lowercase
    /// names), `path` is the canonical (encoded) path, `query` the canonical query string.
    #[allow(clippy::too_many_arguments)]
    fn authorization(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(String, String)],
        payload_sha256: &str,
        date: &str,
        datetime: &str,
    ) -> String {
        let mut sorted: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.trim())).collect();
        sorted.sort();
        let canonical_headers: String = sorted.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let signed_headers = sorted.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(";");
        let canonical = format!("{method}\n{path}\n{query}\n{canonical_headers}\n{signed_headers}\n{payload_sha256}");
        let scope = format!("{date}/{}/s3/aws4_request", self.region);
        let to_sign = format!("AWS4-HMAC-SHA256\n{datetime}\n{scope}\n{}", sha256_hex(canonical.as_bytes()));
        let mac = |key: &[u8], data: &str| hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes());
        let k_date = mac(format!("AWS4{}", self.secret).as_bytes(), date);
        let k_region = mac(k_date.as_ref(), self.region);
        let k_service = mac(k_region.as_ref(), "s3");
        let k_signing = mac(k_service.as_ref(), "aws4_request");
        let signature = hex(mac(k_signing.as_ref(), &to_sign).as_ref());
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            self.access_key
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The GetObject example of AWS's "Signature Calculations for the Authorization Header"
    /// (example bucket, the documented key pair): the signature must be the documented one.
    #[test]
    fn sigv4_matches_the_documented_example() {
        let key = SigningKey {
            access_key: "AKIAIOSFODNN7EXAMPLE",
            secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            region: "us-east-1",
        };
        let headers = [
            ("host".to_string(), "examplebucket.s3.amazonaws.com".to_string()),
            ("range".to_string(), "bytes=0-9".to_string()),
            ("x-amz-content-sha256".to_string(), EMPTY_SHA256.to_string()),
            ("x-amz-date".to_string(), "20130524T000000Z".to_string()),
        ];
        let auth = key.authorization("GET", "/test.txt", "", &headers, EMPTY_SHA256, "20130524", "20130524T000000Z");
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
        assert_eq!(sha256_hex(b""), EMPTY_SHA256);
    }

    #[test]
    fn dates_and_paths_are_formatted_as_sigv4_wants() {
        let at = smith_core::Micros::parse_rfc3339("2013-05-24T01:02:03.456789Z").unwrap();
        assert_eq!(amz_date(at), ("20130524".to_string(), "20130524T010203Z".to_string()));
        assert_eq!(uri_encode("acme/t/out dir/ü~+.txt"), "acme/t/out%20dir/%C3%BC~%2B.txt");
    }

    #[test]
    fn objects_are_addressed_path_style_with_an_endpoint() {
        let creds = Credentials { access_key: "AK".into(), secret: "SECRET".into(), token: Some("TOKEN".into()) };
        let loc = Location::parse("s3://bucket/pre/fix/?endpoint=http://127.0.0.1:9000&region=eu-west-1").unwrap();
        let s = S3Storage::open(loc, CredentialSource::Static(creds.clone())).unwrap();
        let (url, host, path) = s.target("acme/t/a b").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:9000/bucket/pre/fix/acme/t/a%20b");
        assert_eq!((host.as_str(), path.as_str()), ("127.0.0.1:9000", "/bucket/pre/fix/acme/t/a%20b"));
        assert_eq!(s.describe(), "s3://bucket/pre/fix?endpoint=http://127.0.0.1:9000");
        let headers = s.signed(&creds, "GET", &host, &path, EMPTY_SHA256);
        let names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["x-amz-content-sha256", "x-amz-date", "x-amz-security-token", "authorization"]);
        assert!(headers[3].1.contains("/eu-west-1/s3/aws4_request") && !headers[3].1.contains("SECRET"));
        assert!(!format!("{creds:?}").contains("SECRET"), "credentials never print");

        let aws =
            S3Storage::open(Location::parse("s3://bucket?region=us-west-2").unwrap(), CredentialSource::Static(creds))
                .unwrap();
        let (url, host, _) = aws.target("k").unwrap();
        assert_eq!(url.as_str(), "https://bucket.s3.us-west-2.amazonaws.com/k");
        assert_eq!(host, "bucket.s3.us-west-2.amazonaws.com");
    }

    /// A container credentials endpoint on loopback: answers every GET with credentials that
    /// expire `expires_in` from now, counting requests and keeping their Authorization headers.
    async fn endpoint(expires_in: Duration) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/creds", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let n = conn.read(&mut buf).await.unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let auth = req.lines().find_map(|l| l.strip_prefix("authorization: ")).unwrap_or("").to_string();
                let k = log.lock().unwrap().len();
                log.lock().unwrap().push(auth);
                let expires = smith_core::Micros::now().plus(expires_in).rfc3339();
                let body = format!(
                    r#"{{"AccessKeyId":"AK{k}","SecretAccessKey":"SK{k}","Token":"T{k}","Expiration":"{expires}"}}"#
                );
                let head = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
                let _ = conn.write_all(format!("{head}{body}").as_bytes()).await;
            }
        });
        (url, seen)
    }

    #[tokio::test]
    async fn a_task_role_is_read_from_the_container_endpoint_and_refreshed_before_it_expires() {
        let http = reqwest::Client::new();
        // long-lived: fetched once, with the authorization token, then kept
        let (url, seen) = endpoint(Duration::from_secs(3600)).await;
        let source =
            CredentialSource::Container { url, auth: Some(Auth::Token("tok".into())), cached: Default::default() };
        let first = source.get(&http).await.unwrap();
        let again = source.get(&http).await.unwrap();
        assert_eq!((first.access_key.as_str(), first.token.as_deref()), ("AK0", Some("T0")));
        assert_eq!(again.access_key, "AK0");
        assert_eq!(*seen.lock().unwrap(), ["tok"]);
        // about to expire: fetched again on every use
        let (url, seen) = endpoint(Duration::from_secs(60)).await;
        let source = CredentialSource::Container { url, auth: None, cached: Default::default() };
        assert_eq!(source.get(&http).await.unwrap().access_key, "AK0");
        assert_eq!(source.get(&http).await.unwrap().access_key, "AK1");
        assert_eq!(seen.lock().unwrap().len(), 2);
        // an endpoint that is not there is a clear, retryable error
        let gone = CredentialSource::Container {
            url: "http://127.0.0.1:9/creds".into(),
            auth: None,
            cached: Default::default(),
        };
        let e = gone.get(&http).await.unwrap_err().to_string();
        assert!(e.contains("container endpoint"), "{e}");
    }
}
