//! Logging and tracing: one `init_tracing` for every binary.
//!
//! Logs are JSON lines (or human-readable) on stderr. With
//! `log.otlp_traces_endpoint` set, spans are also exported over OTLP/HTTP
//! to an OpenTelemetry collector, with W3C trace context propagation: a
//! request's span continues its caller's trace, and what it publishes
//! carries the request's span on (see [`outgoing_traceparent`]).

use std::sync::OnceLock;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::config::{LogConfig, LogFormat};

/// The exporting provider, when export is configured.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs the global subscriber: JSON lines (default) or human-readable
/// output on stderr (stdout stays free for what a command prints), filtered
/// by `RUST_LOG` if set, else by the configured filter; and the OTLP span
/// exporter when configured. Calling it twice is harmless (the second call
/// does nothing).
pub fn init_tracing(config: &LogConfig, service: &'static str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let output = match config.format {
        LogFormat::Json => fmt::layer()
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
        LogFormat::Pretty => fmt::layer().with_writer(std::io::stderr).boxed(),
    };
    let (otel, export_error) = match exporting_provider(config, service) {
        Ok(Some(provider)) => {
            let tracer = provider.tracer(service);
            let _ = PROVIDER.set(provider);
            (
                Some(tracing_opentelemetry::layer().with_tracer(tracer)),
                None,
            )
        }
        Ok(None) => (None, None),
        Err(e) => (None, Some(e)),
    };
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .with(otel)
        .try_init();
    if result.is_ok() {
        tracing::info!(service, version = env!("CARGO_PKG_VERSION"), "starting");
        if let Some(e) = export_error {
            tracing::error!(error = %e, "trace export not started");
        }
    }
}

fn exporting_provider(
    config: &LogConfig,
    service: &'static str,
) -> Result<Option<SdkTracerProvider>, String> {
    if config.otlp_traces_endpoint.is_empty() {
        return Ok(None);
    }
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(config.otlp_traces_endpoint.clone())
        .build()
        .map_err(|e| e.to_string())?;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service)
                    .build(),
            )
            .build(),
    ))
}

/// Sends the spans not yet exported (call before the process exits).
pub fn flush() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(e) = provider.force_flush() {
            eprintln!("flushing trace spans failed: {e}");
        }
    }
}

/// Whether spans are exported.
pub fn exporting() -> bool {
    PROVIDER.get().is_some()
}

struct One<'a>(&'a str);

impl Extractor for One<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

#[derive(Default)]
struct Collect(Option<String>);

impl Injector for Collect {
    fn set(&mut self, key: &str, value: String) {
        if key == "traceparent" {
            self.0 = Some(value);
        }
    }
}

/// Makes `span` continue the trace a W3C `traceparent` names (when spans
/// are exported).
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    if exporting() {
        let parent = TraceContextPropagator::new().extract(&One(traceparent));
        let _ = span.set_parent(parent);
    }
}

/// Links `span` to the trace a W3C `traceparent` names (when spans are
/// exported): a batch span links every request whose events it carries.
pub fn link_trace(span: &tracing::Span, traceparent: &str) {
    use opentelemetry::trace::TraceContextExt;
    if exporting() {
        let cx = TraceContextPropagator::new().extract(&One(traceparent));
        span.add_link(cx.span().span_context().clone());
    }
}

/// The `traceparent` to put on what the current span sends on: the
/// current span's own context when spans are exported, else `incoming`
/// (the request's), passed through.
pub fn outgoing_traceparent(incoming: Option<&str>) -> Option<String> {
    if exporting() {
        let mut collect = Collect::default();
        TraceContextPropagator::new()
            .inject_context(&tracing::Span::current().context(), &mut collect);
        if collect.0.is_some() {
            return collect.0;
        }
    }
    incoming.map(str::to_owned)
}
