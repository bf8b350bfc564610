//! API errors as `{"error":{"code","message"}}`, the one place codes become HTTP statuses,
//! and the extractors that turn bad requests into clear 4xx answers.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use smith_core::Code;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into() }
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
        Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(self.code);
        if status.is_server_error() {
            tracing::error!(code = %self.code, message = %self.message, "request failed");
        }
        let body = serde_json::json!({"error": {"code": self.code.as_str(), "message": self.message}});
        let mut resp = (status, axum::Json(body)).into_response();
        if self.code == Code::Unauthenticated {
            resp.headers_mut().insert("www-authenticate", HeaderValue::from_static("Bearer"));
        }
        if self.code == Code::Unavailable || self.code == Code::RateLimited {
            resp.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
        }
        resp
    }
}

impl From<smith_core::Error> for ApiError {
    fn from(e: smith_core::Error) -> Self {
        ApiError { code: e.code, message: e.message }
    }
}

impl From<smith_store::Error> for ApiError {
    fn from(e: smith_store::Error) -> Self {
        match e {
            smith_store::Error::Domain(d) => d.into(),
            other => ApiError { code: other.code(), message: other.to_string() },
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON body, read with the size limit: malformed JSON is 400, a valid document with a
/// wrong or unknown field is 422 naming it, an oversized body 413.
pub struct JsonBody<T>(pub T);

/// The largest request body accepted; set per router as an extension.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(ct) = req.headers().get(axum::http::header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("");
            if !ct.is_empty() && !ct.starts_with("application/json") && !ct.contains("+json") {
                return Err(ApiError::invalid(format!("content-type must be application/json, got {ct:?}")));
            }
        }
        let bytes = read_limited(req).await?;
        parse_json(&bytes).map(JsonBody)
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

/// Query parameters; unknown or malformed ones are 400 and named.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(q).map(QueryParams).map_err(|e| ApiError::invalid(format!("bad query string: {e}")))
    }
}
