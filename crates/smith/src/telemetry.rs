//! OpenTelemetry traces out of this process (docs/telemetry.md): the SDK and its OTLP/HTTP
//! (protobuf) exporter, installed when an endpoint is configured — `[telemetry] endpoint`, or
//! the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` — and
//! neither `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` says no. Otherwise nothing
//! is installed and [`smith_core::trace`] builds no span.
//!
//! The exporter sends over this process's own reqwest client on its tokio runtime (the SDK's
//! batch thread waits on the spawned request), so no second HTTP stack is linked.

use anyhow::{bail, Context as _, Result};
use opentelemetry::KeyValue;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// `[telemetry]`: every key optional. Keys set here win over the `OTEL_*` variables.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// The collector's OTLP/HTTP base URL (`http://collector:4318`; `/v1/traces` is added), as
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: Option<String>,
    /// Headers sent with every export (a collector's credentials), as
    /// `OTEL_EXPORTER_OTLP_HEADERS`. Never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The share of new traces kept, 0.0..=1.0 (a trace a caller started follows the caller's
    /// sampling decision). Unset: `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`, else all.
    pub sample_ratio: Option<f64>,
    /// `service.name` of this process's spans. Unset: `OTEL_SERVICE_NAME`, else `smith`.
    pub service_name: Option<String>,
}

/// The installed tracer provider: flushed and shut down by [`Telemetry::shutdown`].
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports what is still batched and stops the exporter (at most a few seconds).
    pub async fn shutdown(self) {
        let provider = self.provider;
        // the batch thread's last export runs on this runtime: wait for it off the runtime
        let done = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(Duration::from_secs(5))).await;
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "traces: the last export failed");
        }
    }
}

/// Shuts `telemetry` down when it was installed (see [`Telemetry::shutdown`]).
pub async fn shutdown(telemetry: Option<Telemetry>) {
    if let Some(t) = telemetry {
        t.shutdown().await;
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// Installs the exporter when one is configured (see the module's doc); `role` is this
/// process's (`up`, `gateway`, `worker`, `supervisor`), a resource attribute of its spans.
/// Must run on the tokio runtime that will carry the exports.
pub fn install(section: &TelemetrySection, role: &str) -> Result<Option<Telemetry>> {
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    match env("OTEL_TRACES_EXPORTER").as_deref() {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => bail!("OTEL_TRACES_EXPORTER={other} is not supported: use otlp or none"),
    }
    let configured = section.endpoint.is_some()
        || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
    if !configured {
        return Ok(None);
    }
    let sampler = sampler(section)?;
    for var in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
        if let Some(p) = env(var) {
            if p != "http/protobuf" {
                bail!("{var}={p} is not supported: smith exports traces over OTLP/HTTP with protobuf (http/protobuf)");
            }
            break;
        }
    }
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http().with_http_client(Client {
        http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?,
        runtime: tokio::runtime::Handle::current(),
    });
    if let Some(base) = &section.endpoint {
        let url = reqwest::Url::parse(base).with_context(|| format!("telemetry.endpoint {base:?} is not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("telemetry.endpoint must be an http:// or https:// URL, got {base:?}");
        }
        exporter = exporter.with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')));
    }
    if !section.headers.is_empty() {
        exporter = exporter.with_headers(section.headers.clone().into_iter().collect());
    }
    let exporter = exporter.build().context("cannot build the OTLP trace exporter")?;
    let name = section.service_name.clone().or_else(|| env("OTEL_SERVICE_NAME")).unwrap_or_else(|| "smith".into());
    let resource = Resource::builder()
        .with_service_name(name)
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("smith.role", role.to_string()),
        ])
        .build();
    let mut provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource);
    if let Some(sampler) = sampler {
        provider = provider.with_sampler(sampler);
    }
    let provider = provider.build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    smith_core::trace::install(opentelemetry::global::tracer("smith"));
    tracing::info!(role, "traces exported over OTLP/HTTP");
    Ok(Some(Telemetry { provider }))
}

/// `[telemetry] sample_ratio` as a sampler: new traces kept at that ratio, a caller's decision
/// followed. `None`: the SDK's own (`OTEL_TRACES_SAMPLER`, else every trace).
fn sampler(section: &TelemetrySection) -> Result<Option<Sampler>> {
    match section.sample_ratio {
        None => Ok(None),
        Some(r) if (0.0..=1.0).contains(&r) => Ok(Some(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r))))),
        Some(r) => bail!("telemetry.sample_ratio must be between 0.0 and 1.0, got {r}"),
    }
}

/// The exporter's HTTP client: this process's reqwest, each request spawned on its runtime.
#[derive(Debug)]
struct Client {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for Client {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let http = self.http.clone();
        let request = reqwest::Request::try_from(request)?;
        let sent = self.runtime.spawn(async move {
            let resp = http.execute(request).await?;
            let mut out = Response::builder().status(resp.status().as_u16());
            for (k, v) in resp.headers() {
                out = out.header(k.as_str(), v.as_bytes());
            }
            let body = resp.bytes().await?;
            Ok::<_, HttpError>(out.body(body)?)
        });
        sent.await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_with_unknown_keys_or_a_bad_ratio_is_refused() {
        assert!(toml::from_str::<TelemetrySection>("endpoint = \"http://c:4318\"\nsample = 1").is_err());
        let s: TelemetrySection = toml::from_str("endpoint = \"http://c:4318\"\nsample_ratio = 0.25").unwrap();
        assert!(sampler(&s).unwrap().is_some());
        for bad in [-0.1, 1.5, f64::NAN] {
            let s = TelemetrySection { sample_ratio: Some(bad), ..Default::default() };
            assert!(sampler(&s).is_err(), "{bad} must be refused");
        }
    }
}
