//! One request to a provider, streamed: retries with backoff, stall detection, cancel.

use super::{
    cancelled, excerpt, send, Api, Config, Meter, Reply, Round, StreamError, BAD_STREAM, MAX_EVENT, MAX_RESPONSE,
};
use crate::{Failure, RunContext, PROVIDER_ERROR, PROVIDER_UNAVAILABLE};
use bytes::Bytes;
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::Value;
use smith_core::sse::SseParser;
use smith_core::trace::{Kind, Span};
use smith_core::EventKind;
use std::future::Future;
use std::time::{Duration, SystemTime};

/// Tries of one request within an attempt, the first included.
pub(super) const MAX_TRIES: u32 = 4;
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// The longest `retry-after` honoured within an attempt.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// A 429 that asks to wait at least this long is the account's limit: the task parks until
/// then (its slot freed, the attempt not spent) instead of waiting inside the attempt.
pub(super) const PARK_AFTER: Duration = Duration::from_secs(2);
/// How much of an error response is read for its message.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// How long the rest of a finished response is read so its connection can be reused.
const DRAIN_TIME: Duration = Duration::from_millis(250);

/// Why one try failed.
enum TryError {
    /// Worth another try (429, 5xx, connection error, stall, cut stream) — only while the
    /// response has produced no output.
    Retry { why: String, retry_after: Option<Duration> },
    /// Final for this attempt.
    Fail(Failure),
}

impl From<Failure> for TryError {
    fn from(f: Failure) -> Self {
        TryError::Fail(f)
    }
}

/// Sends one request and streams its response: text deltas become `output` events and usage
/// is reported as it changes. `text` collects the attempt's text.
pub(super) async fn exchange<A: Api>(
    api: &A,
    cfg: &Config,
    body: Bytes,
    ctx: &RunContext,
    meter: &mut Meter,
    text: &mut String,
) -> Result<Reply, Failure> {
    let mut tries = 0;
    // kept for retries only until output begins (after that a failure is final): thousands of
    // streaming agents should not each hold their request body for the whole stream
    let mut body = Some(body);
    loop {
        tries += 1;
        // every try is a request the provider counts: each waits for room in the account's
        // rate limit, and what it used settles the estimate it was let through with
        let estimate = crate::limit::estimate(body.as_ref().map_or(0, Bytes::len), cfg.max_tokens);
        if let Some(limiter) = &ctx.limiter {
            if !limiter.acquire(estimate, &ctx.cancel).await {
                return Err(cancelled());
            }
        }
        // a client span per request (OpenTelemetry's GenAI conventions), under the executor's
        let mut span = match smith_core::trace::enabled() {
            true => Span::start(format!("chat {}", cfg.model), Kind::Client, ctx.traceparent.as_deref()),
            false => Span::none(),
        };
        if span.is_some() {
            span.attr("gen_ai.operation.name", "chat");
            span.attr("gen_ai.provider.name", A::NAME);
            span.attr("gen_ai.request.model", cfg.model.clone());
            span.attr("smith.try", i64::from(tries));
        }
        let outcome = one_try(api, cfg, &mut body, ctx, meter, text).await;
        if span.is_some() {
            span.attr("gen_ai.usage.input_tokens", meter.current.input as i64);
            span.attr("gen_ai.usage.output_tokens", meter.current.output as i64);
            match &outcome {
                Ok(_) => {}
                Err(TryError::Retry { why, .. }) => span.fail(why.clone()),
                Err(TryError::Fail(f)) => span.fail(format!("{}: {}", f.error.code, f.error.message)),
            }
        }
        drop(span);
        if let Some(limiter) = &ctx.limiter {
            limiter.settle(estimate, meter.current.input.saturating_add(meter.current.output)).await;
        }
        meter.commit();
        let (why, retry_after) = match outcome {
            Ok(reply) => return Ok(reply),
            Err(TryError::Fail(f)) => return Err(f),
            Err(TryError::Retry { why, retry_after }) => (why, retry_after),
        };
        if tries >= MAX_TRIES {
            let message = format!("{} is unavailable: {tries} tries failed, the last with {why}", A::NAME);
            return Err(Failure::new(PROVIDER_UNAVAILABLE, message, true));
        }
        let wait = retry_after.unwrap_or_else(|| backoff(tries));
        tracing::warn!(tries, wait_ms = wait.as_millis() as u64, error = %why, "provider request failed; retrying");
        tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => return Err(cancelled()),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn one_try<A: Api>(
    api: &A,
    cfg: &Config,
    body: &mut Option<Bytes>,
    ctx: &RunContext,
    meter: &mut Meter,
    text: &mut String,
) -> Result<Reply, TryError> {
    let Some(payload) = body.clone() else {
        return Err(Failure::new(PROVIDER_UNAVAILABLE, format!("{}: no request left to retry", A::NAME), true).into());
    };
    let request = A::authorize(api.client().post(&cfg.url), &cfg.key)
        .header(CONTENT_TYPE, "application/json")
        .header(ACCEPT, "text/event-stream")
        .body(payload);
    let mut response = match bounded(ctx, cfg.stall, request.send()).await? {
        None => return Err(retry(format!("no response in {}", seconds(cfg.stall)))),
        Some(Err(e)) if e.is_builder() => {
            let message = format!("cannot build a request to {}: {}", cfg.shown_url, chain(&e.without_url()));
            return Err(Failure::new(super::MISCONFIGURED, message, false).into());
        }
        Some(Err(e)) => return Err(retry(format!("{} ({})", chain(&e.without_url()), cfg.shown_url))),
        Some(Ok(r)) => r,
    };
    let status = response.status();
    let is_json = content_type_is(response.headers(), "application/json");
    if !status.is_success() || is_json {
        let now = SystemTime::now();
        let asked = asked_wait(response.headers(), now);
        let retry_after = asked.map(|d| d.min(MAX_RETRY_AFTER));
        let body = read_capped(&mut response, ctx, cfg.stall).await?;
        let detail = error_detail(&body);
        if status.is_success() {
            let message = format!("{} answered with JSON instead of an event stream: {detail}", A::NAME);
            return Err(Failure::new(BAD_STREAM, message, false).into());
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            if let Some(wait) = asked.filter(|w| *w >= PARK_AFTER) {
                let until = smith_core::Micros::now().plus(wait);
                let message =
                    format!("{} usage limit (HTTP 429, resets in {}): {detail}", A::NAME, seconds(Some(wait)));
                return Err(Failure::usage_limit(until, message).into());
            }
        }
        if is_transient(status) {
            return Err(TryError::Retry { why: format!("HTTP {}: {detail}", status.as_u16()), retry_after });
        }
        let message = format!("{} refused the request (HTTP {}): {detail}", A::NAME, status.as_u16());
        return Err(Failure::new(PROVIDER_ERROR, message, false).into());
    }

    let mut parser = SseParser::new(MAX_EVENT);
    let mut round = A::Round::default();
    let mut began = false;
    let mut received = 0usize;
    let broken = |began: bool, why: String| {
        if began {
            TryError::Fail(Failure::new(PROVIDER_UNAVAILABLE, format!("{}: {why}", A::NAME), true))
        } else {
            retry(why)
        }
    };
    loop {
        loop {
            let event = match parser.next_event() {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(e) => return Err(bad_stream(format!("{} sent a bad event stream: {e}", A::NAME))),
            };
            if round.is_done() {
                continue;
            }
            received += event.data.len();
            if received > MAX_RESPONSE {
                return Err(bad_stream(format!("{} sent a response larger than {MAX_RESPONSE} bytes", A::NAME)));
            }
            let step = match round.on_event(&event) {
                Ok(step) => step,
                Err(StreamError::Malformed(why)) => return Err(bad_stream(format!("{} sent {why}", A::NAME))),
                Err(StreamError::Provider(why)) => return Err(broken(began, format!("error in the stream: {why}"))),
            };
            if let Some(delta) = step.text {
                if !began {
                    *body = None;
                }
                began = true;
                text.push_str(&delta);
                send(ctx, EventKind::Output, Value::String(delta)).await?;
            }
            if step.usage && round.tokens() != meter.current {
                meter.current = round.tokens();
                let usage = serde_json::to_value(meter.usage()).expect("usage serializes");
                send(ctx, EventKind::Usage, usage).await?;
            }
        }
        if round.is_done() {
            drain(&mut response, &ctx.cancel).await;
            return Ok(round.into_reply());
        }
        match bounded(ctx, cfg.stall, response.chunk()).await? {
            None => return Err(broken(began, format!("stalled: no bytes for {}", seconds(cfg.stall)))),
            Some(Err(e)) => return Err(broken(began, format!("the stream broke: {}", chain(&e.without_url())))),
            Some(Ok(None)) => return Err(broken(began, "the stream ended early, before its end marker".into())),
            Some(Ok(Some(bytes))) => parser.push(&bytes),
        }
    }
}

fn retry(why: String) -> TryError {
    TryError::Retry { why, retry_after: None }
}

fn bad_stream(message: String) -> TryError {
    TryError::Fail(Failure::new(BAD_STREAM, message, false))
}

/// Runs `fut` until it finishes, the stall timeout passes (`None`) or the attempt is cancelled.
async fn bounded<F: Future>(ctx: &RunContext, stall: Option<Duration>, fut: F) -> Result<Option<F::Output>, TryError> {
    let timed = async {
        match stall {
            Some(limit) => tokio::time::timeout(limit, fut).await.ok(),
            None => Some(fut.await),
        }
    };
    tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => Err(cancelled().into()),
        out = timed => Ok(out),
    }
}

/// Reads the start of an error response, for its message.
async fn read_capped(
    response: &mut reqwest::Response,
    ctx: &RunContext,
    stall: Option<Duration>,
) -> Result<String, TryError> {
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY {
        match bounded(ctx, stall, response.chunk()).await? {
            Some(Ok(Some(bytes))) => body.extend_from_slice(&bytes[..bytes.len().min(MAX_ERROR_BODY - body.len())]),
            _ => break,
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Reads what is left of a finished response (usually just the end of its chunked body), so
/// its connection goes back to the pool; gives up quickly.
async fn drain(response: &mut reqwest::Response, cancel: &tokio_util::sync::CancellationToken) {
    let rest = async {
        let mut left = MAX_ERROR_BODY;
        while let Ok(Some(bytes)) = response.chunk().await {
            left = left.saturating_sub(bytes.len());
            if left == 0 {
                break;
            }
        }
    };
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::timeout(DRAIN_TIME, rest) => {}
    }
}

/// Statuses worth another try: rate limits, timeouts and server errors.
fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT || status.is_server_error()
}

/// The provider's error message from an error body (`{"error": {"message": ...}}` in both
/// APIs), else the body's start.
fn error_detail(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let message = error.and_then(|e| e.get("message").and_then(|m| m.as_str()).or_else(|| e.as_str()));
    match message {
        Some(m) => {
            let kind = error.and_then(|e| e.get("type")).and_then(|t| t.as_str());
            excerpt(&kind.map_or_else(|| m.to_string(), |k| format!("{k}: {m}")), 500)
        }
        None if body.trim().is_empty() => "(empty body)".into(),
        None => excerpt(body.trim(), 200),
    }
}

/// The wait a 429/503 asks for, capped for a retry within the attempt.
#[cfg(test)]
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    asked_wait(headers, now).map(|d| d.min(MAX_RETRY_AFTER))
}

/// The wait a 429/503 asks for: `retry-after-ms` (OpenAI), or `retry-after` in seconds or as
/// an HTTP date, else the latest reset (RFC 3339) of an exhausted Anthropic rate limit
/// (`anthropic-ratelimit-<limit>-remaining: 0` with its `-reset`). Up to a day.
fn asked_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    const DAY: f64 = 86_400.0;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let from_secs = |s: f64| (s.is_finite() && s >= 0.0).then(|| Duration::from_secs_f64(s.min(DAY)));
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if let Some(d) = from_secs(ms / 1000.0) {
            return Some(d);
        }
    }
    if let Some(value) = header(RETRY_AFTER.as_str()) {
        if let Ok(secs) = value.parse::<f64>() {
            return from_secs(secs);
        }
        if let Ok(at) = httpdate::parse_http_date(value) {
            return from_secs(at.duration_since(now).unwrap_or(Duration::ZERO).as_secs_f64());
        }
    }
    let limits = ["requests", "tokens", "input-tokens", "output-tokens"];
    limits
        .iter()
        .filter(|l| header(&format!("anthropic-ratelimit-{l}-remaining")) == Some("0"))
        .filter_map(|l| smith_core::Micros::parse_rfc3339(header(&format!("anthropic-ratelimit-{l}-reset"))?))
        .map(smith_core::Micros::to_system_time)
        .filter_map(|at| from_secs(at.duration_since(now).unwrap_or(Duration::ZERO).as_secs_f64()))
        .max()
}

/// Exponential backoff with jitter: about 200 ms, 400 ms, 800 ms, … up to 10 s, each drawn
/// from its upper half.
fn backoff(tries: u32) -> Duration {
    let ceiling = BACKOFF_START.saturating_mul(1u32 << tries.saturating_sub(1).min(16)).min(BACKOFF_MAX);
    let half = ceiling.as_millis() as u64 / 2;
    Duration::from_millis(half + fastrand::u64(0..=half))
}

fn seconds(d: Option<Duration>) -> String {
    d.map_or_else(|| "ever".into(), |d| format!("{:.1} s", d.as_secs_f64()))
}

/// An error with its causes ("error sending request: connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// Whether the headers' `Content-Type` is `mime` (with or without parameters).
pub(super) fn content_type_is(headers: &HeaderMap, mime: &str) -> bool {
    headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim_start().starts_with(mime))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_str(v).unwrap())).collect()
    }

    #[test]
    fn a_long_wait_is_read_whole_and_an_exhausted_anthropic_limit_gives_its_reset() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let h = headers(&[("retry-after", "3600")]);
        assert_eq!(asked_wait(&h, now), Some(Duration::from_secs(3600)));
        let h = headers(&[
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2023-11-14T22:13:50Z"),
            ("anthropic-ratelimit-tokens-remaining", "5"),
            ("anthropic-ratelimit-tokens-reset", "2023-11-14T23:13:20Z"),
        ]);
        assert_eq!(asked_wait(&h, now), Some(Duration::from_secs(30)), "only an exhausted limit's reset counts");
        assert_eq!(asked_wait(&headers(&[]), now), None);
    }

    #[test]
    fn retry_after_reads_seconds_dates_and_milliseconds_and_is_capped() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        type Headers = &'static [(&'static str, &'static str)];
        let cases: [(Headers, Option<Duration>); 8] = [
            (&[("retry-after", "1")], Some(Duration::from_secs(1))),
            (&[("retry-after", " 2.5 ")], Some(Duration::from_millis(2500))),
            (&[("retry-after", "3600")], Some(MAX_RETRY_AFTER)),
            (&[("retry-after", "Sun, 06 Nov 1994 08:49:47 GMT")], Some(Duration::from_secs(10))),
            (&[("retry-after", "Sun, 06 Nov 1994 08:49:00 GMT")], Some(Duration::ZERO)),
            (&[("retry-after", "-4")], None),
            (&[("retry-after", "soon")], None),
            (&[("retry-after-ms", "150"), ("retry-after", "9")], Some(Duration::from_millis(150))),
        ];
        for (h, want) in cases {
            assert_eq!(retry_after(&headers(h), now), want, "{h:?}");
        }
    }

    #[test]
    fn backoff_grows_with_jitter_up_to_its_cap() {
        for _ in 0..100 {
            let first = backoff(1);
            assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(200), "{first:?}");
            let third = backoff(3);
            assert!(third >= Duration::from_millis(400) && third <= Duration::from_millis(800), "{third:?}");
            assert!(backoff(40) <= BACKOFF_MAX);
        }
    }

    #[test]
    fn error_details_name_the_providers_message() {
        let anthropic = r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too big"}}"#;
        assert_eq!(error_detail(anthropic), "invalid_request_error: max_tokens: too big");
        let openai = r#"{"error":{"message":"Invalid model","type":"invalid_request_error","param":null}}"#;
        assert_eq!(error_detail(openai), "invalid_request_error: Invalid model");
        assert_eq!(error_detail(""), "(empty body)");
        assert_eq!(error_detail("<html>bad gateway</html>"), "<html>bad gateway</html>");
    }
}
