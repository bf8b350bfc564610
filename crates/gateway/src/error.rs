//! API errors as `{"error":{"code","message"}}`, the one place codes become HTTP statuses,
//! and the extractors that turn bad requests into clear 4xx answers.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use smith_core::Code;

/// A gateway setting that cannot be used (a quota, a JWT key, an origin); the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl From<String> for ConfigError {
    fn from(s: String) -> Self {
        ConfigError(s)
    }
}

impl From<&str> for ConfigError {
    fn from(s: &str) -> Self {
        ConfigError(s.to_owned())
    }
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    /// Seconds for `Retry-After` on a 429 or 503 (default 1).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), retry_after: None }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(Code::Unprocessable, message)
    }
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

pub fn status_of(code: Code) -> StatusCode {
    match code {
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::Conflict | Code::Fenced => StatusCode::CONFLICT,
        Code::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Code::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Code::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(self.code);
        // a full store refuses every submission until space is freed: its gauge and alert say so
        if status.is_server_error() && self.code != Code::InsufficientStorage {
            tracing::error!(code = %self.code, message = %self.message, "request failed");
        }
        let body = serde_json::json!({"error": {"code": self.code.as_str(), "message": self.message}});
        let mut resp = (status, axum::Json(body)).into_response();
        if self.code == Code::Unauthenticated {
            resp.headers_mut().insert("www-authenticate", HeaderValue::from_static("Bearer"));
        }
        if self.code == Code::Unavailable || self.code == Code::RateLimited {
            let secs = self.retry_after.unwrap_or(1).to_string();
            resp.headers_mut().insert("retry-after", HeaderValue::from_str(&secs).expect("digits"));
        }
        resp
    }
}

impl From<smith_core::Error> for ApiError {
    fn from(e: smith_core::Error) -> Self {
        ApiError { code: e.code, message: e.message, retry_after: None }
    }
}

impl From<smith_store::Error> for ApiError {
    fn from(e: smith_store::Error) -> Self {
        match e {
            smith_store::Error::Domain(d) => d.into(),
            other => ApiError { code: other.code(), message: other.to_string(), retry_after: None },
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON body, read with the size limit: no `Content-Type: application/json` is 415,
/// malformed JSON 400, a valid document with a wrong or unknown field 422 naming it, an
/// oversized body 413.
pub struct JsonBody<T>(pub T);

/// The largest request body accepted; set per router as an extension.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        // a body must say it is JSON: a page from another site can send text, never JSON
        let ct = req.headers().get(axum::http::header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("?"));
        if !is_json(ct) {
            return Err(unsupported(ct));
        }
        let bytes = read_limited(req).await?;
        let value = parse_json(&bytes)?;
        // serde also builds a struct from an array, field by field in order: a body is an object
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            return Err(ApiError::unprocessable("the body must be a JSON object, not an array"));
        }
        Ok(JsonBody(value))
    }
}

/// A request body of at most the router's [`BodyLimit`], as bytes; too large is a JSON 413.
pub struct LimitedBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for LimitedBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        read_limited(req).await.map(LimitedBody)
    }
}

async fn read_limited(req: Request) -> ApiResult<axum::body::Bytes> {
    let limit = req.extensions().get::<BodyLimit>().map(|l| l.0).unwrap_or(1 << 20);
    axum::body::to_bytes(req.into_body(), limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if too_large {
            ApiError::new(Code::TooLarge, format!("request body is larger than {limit} bytes"))
        } else {
            ApiError::invalid(format!("cannot read request body: {e}"))
        }
    })
}

/// Decodes JSON; a value error names the field it is in (`priority: invalid value …`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data if path == "." || path.is_empty() => {
                ApiError::new(Code::Unprocessable, inner.to_string())
            }
            serde_json::error::Category::Data => ApiError::new(Code::Unprocessable, format!("{path}: {inner}")),
            _ => ApiError::invalid(format!("malformed JSON: {inner}")),
        }
    })?;
    de.end().map_err(|e| ApiError::invalid(format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// `deserialize_with` for an optional object field (`budget`): null or absent is `None`, an
/// object is decoded as `T` (naming the field inside it that is wrong), and anything else is
/// refused — serde alone would also build the struct from an array (`"budget": [5]`).
pub(crate) fn object_or_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    use serde::de::{Error, Unexpected};
    use serde_json::Value;
    let value = <Option<Value> as serde::Deserialize>::deserialize(d)?;
    let unexpected = match &value {
        None | Some(Value::Null) => return Ok(None),
        Some(v @ Value::Object(_)) => {
            return serde_path_to_error::deserialize(v.clone()).map(Some).map_err(|e| {
                let path = e.path().to_string();
                D::Error::custom(format!("{path}: {}", e.into_inner()))
            })
        }
        Some(Value::Array(_)) => Unexpected::Seq,
        Some(Value::Bool(b)) => Unexpected::Bool(*b),
        Some(Value::Number(_)) => Unexpected::Other("a number"),
        Some(Value::String(s)) => Unexpected::Str(s),
    };
    Err(D::Error::invalid_type(unexpected, &"an object or null"))
}

/// A path parameter as text; one that is not UTF-8 once percent-decoded is a JSON 400 (axum's
/// own rejection is plain text).
pub struct PathText(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathText {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(text)) => Ok(PathText(text)),
            Err(e) => Err(ApiError::invalid(format!("malformed path: {e}"))),
        }
    }
}

/// Query parameters; unknown or malformed ones are 400 and named.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(q).map(QueryParams).map_err(|e| ApiError::invalid(format!("bad query string: {e}")))
    }
}

/// A body must be `application/json` (`; charset=utf-8` allowed): a browser page can send a
/// body cross-site without a preflight only as text, a form or a blob, never as JSON.
pub fn is_json(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return false };
    let mut parts = ct.split(';');
    if !parts.next().unwrap_or("").trim().eq_ignore_ascii_case("application/json") {
        return false;
    }
    parts.all(|p| {
        let p = p.trim();
        match p.split_once('=') {
            Some((k, v)) => {
                k.trim().eq_ignore_ascii_case("charset") && v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            }
            None => p.is_empty(),
        }
    })
}

/// The refusal of a body that is not JSON.
pub fn unsupported(ct: Option<&str>) -> ApiError {
    let got = match ct {
        Some(ct) => format!("got {ct:?}"),
        None => "got none".to_string(),
    };
    ApiError::new(Code::UnsupportedMediaType, format!("a request body must be Content-Type: application/json, {got}"))
}
