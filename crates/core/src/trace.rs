//! Distributed traces (OpenTelemetry): the spans the platform makes for a task, from the
//! gateway's request through its time queued, its claim, each attempt and its executor, and
//! the store and bus calls on the way (docs/telemetry.md).
//!
//! Off unless the process installs a tracer ([`install`]; the `smith` binary does when an OTLP
//! endpoint is configured). Off, [`Span::start`] and its kin return [`Span::none`] after one
//! atomic load: nothing is allocated, no id is drawn, no clock is read.
//!
//! A task carries its trace context as a W3C `traceparent` string (the task's `traceparent`:
//! the span its spans hang under), through the store to whichever worker claims it, and hands
//! it to its agent as `TRACEPARENT` so the agent's own spans join the trace. A client's
//! `traceparent` is kept even when this process traces nothing, so an agent still joins the
//! client's trace.

use crate::Micros;
use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue, Value};
use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

pub use opentelemetry::trace::SpanKind as Kind;

static TRACER: OnceLock<BoxedTracer> = OnceLock::new();

/// Makes `tracer` the process's: every span from now on is built with it. Only the first call
/// takes effect (`false` after that).
pub fn install(tracer: BoxedTracer) -> bool {
    TRACER.set(tracer).is_ok()
}

/// Whether this process builds spans.
#[inline]
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// The parent a W3C `traceparent` names (`00-<32 hex trace id>-<16 hex span id>-<2 hex
/// flags>`), or `None` when it is not one: a bad header starts a new trace rather than failing
/// the request (W3C Trace Context, "restarting the trace").
pub fn parse_traceparent(header: &str) -> Option<SpanContext> {
    let mut parts = header.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    // version 00 has exactly four fields; a later version may append more
    if !hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()? & 1);
    Some(SpanContext::new(trace_id, span_id, flags, true, TraceState::default()))
}

/// The normalised `traceparent` of a header, or `None` when it is not one.
pub fn normalize_traceparent(header: &str) -> Option<String> {
    parse_traceparent(header).map(|cx| format_traceparent(&cx))
}

/// `cx` as a version-00 `traceparent`.
pub fn format_traceparent(cx: &SpanContext) -> String {
    format!("00-{}-{}-{:02x}", cx.trace_id(), cx.span_id(), cx.trace_flags().to_u8())
}

fn parent_context(traceparent: Option<&str>) -> Context {
    match traceparent.and_then(parse_traceparent) {
        Some(cx) => Context::new().with_remote_span_context(cx),
        None => Context::new(),
    }
}

fn system_time(at: Micros) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(at.0.max(0) as u64)
}

/// One span, or nothing when tracing is off (every method is then a no-op). Ends when dropped
/// unless [`Span::end_at`] ended it first.
#[derive(Default)]
pub struct Span(Option<BoxedSpan>);

impl Span {
    /// No span.
    pub const fn none() -> Span {
        Span(None)
    }

    /// A span starting now under the span `traceparent` names (a new trace when `None` or not
    /// a traceparent).
    #[inline]
    pub fn start(name: impl Into<Cow<'static, str>>, kind: SpanKind, traceparent: Option<&str>) -> Span {
        match TRACER.get() {
            None => Span(None),
            Some(t) => Span(Some(
                t.build_with_context(t.span_builder(name.into()).with_kind(kind), &parent_context(traceparent)),
            )),
        }
    }

    /// A span that started at `at` (a span recorded after the fact: a task's time queued).
    #[inline]
    pub fn started_at(
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        traceparent: Option<&str>,
        at: Micros,
    ) -> Span {
        match TRACER.get() {
            None => Span(None),
            Some(t) => Span(Some(t.build_with_context(
                t.span_builder(name.into()).with_kind(kind).with_start_time(system_time(at)),
                &parent_context(traceparent),
            ))),
        }
    }

    /// A span starting now under this one (none when this is none).
    #[inline]
    pub fn child(&self, name: impl Into<Cow<'static, str>>, kind: SpanKind) -> Span {
        match (TRACER.get(), &self.0) {
            (Some(t), Some(parent)) => Span(Some(t.build_with_context(
                t.span_builder(name.into()).with_kind(kind),
                &Context::new().with_remote_span_context(parent.span_context().clone()),
            ))),
            _ => Span(None),
        }
    }

    /// Whether this is a real span.
    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }

    /// This span as a `traceparent` (what a child elsewhere is started under).
    pub fn traceparent(&self) -> Option<String> {
        self.0.as_ref().map(|s| format_traceparent(s.span_context())).filter(|_| self.is_valid())
    }

    fn is_valid(&self) -> bool {
        self.0.as_ref().is_some_and(|s| s.span_context().is_valid())
    }

    /// Sets an attribute (`key` from OpenTelemetry's semantic conventions where one fits).
    #[inline]
    pub fn attr(&mut self, key: &'static str, value: impl Into<Value>) {
        if let Some(s) = &mut self.0 {
            s.set_attribute(KeyValue::new(key, value));
        }
    }

    /// Marks the span failed, with why.
    pub fn fail(&mut self, message: impl Into<Cow<'static, str>>) {
        if let Some(s) = &mut self.0 {
            s.set_status(Status::error(message));
        }
    }

    /// Ends the span at `at` (a span recorded after the fact).
    pub fn end_at(mut self, at: Micros) {
        if let Some(mut s) = self.0.take() {
            s.end_with_timestamp(system_time(at));
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(mut s) = self.0.take() {
            s.end();
        }
    }
}

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.traceparent() {
            Some(tp) => write!(f, "Span({tp})"),
            None => f.write_str("Span(none)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_read_strictly_and_written_back_the_same() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = parse_traceparent(tp).expect("valid");
        assert!(cx.is_remote() && cx.is_sampled());
        assert_eq!(format_traceparent(&cx), tp);
        // unsampled, and unknown flag bits dropped
        assert_eq!(
            normalize_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-fe").as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
        );
        // a later version may carry more fields
        assert!(parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn with_no_tracer_no_span_is_built() {
        // this test binary installs no tracer
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut s = Span::start("x", SpanKind::Server, Some(tp));
        s.attr("k", "v");
        assert!(!s.is_some() && s.traceparent().is_none() && !s.child("y", SpanKind::Internal).is_some());
        assert!(!Span::started_at("q", SpanKind::Internal, Some(tp), Micros(1)).is_some());
    }
}
