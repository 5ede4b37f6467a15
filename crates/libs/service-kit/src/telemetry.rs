//! Logs, traces and trace context.
//!
//! Logs are JSON lines on stdout by default; every line written while serving a request carries
//! the request span's fields: `request_id`, `trace_id`, `span_id` and, once authenticated,
//! `principal` (OBS-01). Trace context follows W3C Trace Context: an inbound `traceparent` is
//! continued, otherwise a new trace starts, and outbound calls carry it on (OBS-06). When
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are also exported over OTLP/HTTP, and the ids in
//! the logs are the exported spans' ids, so a log line leads straight to its trace (OBS-02).

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// Whether spans go to an OpenTelemetry pipeline (then their ids are the ones to log and send).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The installed telemetry; [`Telemetry::shutdown`] flushes spans not yet exported (REL-02).
#[must_use = "call shutdown() before the process exits, or buffered spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(err) = provider.shutdown()
        {
            tracing::warn!(error = %err, "flushing traces failed");
        }
    }
}

/// Where and as whom to export traces.
#[derive(Clone, Debug)]
pub struct OtlpSettings {
    /// Base URL of an OTLP/HTTP receiver, e.g. `http://otel-collector:4318`.
    pub endpoint: String,
    pub service_name: String,
}

/// Installs the global subscriber writing to stdout. Call once, at start-up.
pub fn init(format: LogFormat, filter: &str, otlp: Option<&OtlpSettings>) -> Telemetry {
    init_with_writer(format, filter, otlp, io::stdout)
}

/// Installs the global subscriber with a writer of the caller's choosing. Does nothing (and
/// exports nothing) if a subscriber is already installed.
pub fn init_with_writer<W>(
    format: LogFormat,
    filter: &str,
    otlp: Option<&OtlpSettings>,
    writer: W,
) -> Telemetry
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_writer(writer).boxed(),
    };
    let provider = otlp.and_then(|settings| match tracer_provider(settings) {
        Ok(provider) => Some(provider),
        Err(err) => {
            // Traces are diagnostics: a bad collector address must not stop the service.
            eprintln!("OTLP trace export disabled: {err}");
            None
        }
    });
    let traces = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("bourse")));
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .try_init()
        .is_ok();
    if installed && provider.is_some() {
        EXPORTING.store(true, Ordering::Relaxed);
    }
    Telemetry {
        provider: provider.filter(|_| installed),
    }
}

fn tracer_provider(settings: &OtlpSettings) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig;
    let endpoint = format!("{}/v1/traces", settings.endpoint.trim_end_matches('/'));
    // The exporter's blocking HTTP client belongs on a thread of its own: creating or dropping
    // it on the async runtime is not allowed.
    let exporter = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_endpoint(endpoint)
                    .with_timeout(std::time::Duration::from_secs(3))
                    .build()
            })
            .join()
    })
    .map_err(|_| "exporter construction panicked".to_owned())?
    .map_err(|e| e.to_string())?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(settings.service_name.clone())
                .build(),
        )
        .build())
}

/// Joins `span` to the trace of `parent` (an inbound `traceparent`), records its `trace_id` and
/// `span_id` fields, and returns the context to send on outbound calls made under it.
pub fn bind_span(span: &tracing::Span, parent: Option<TraceContext>) -> TraceContext {
    let context = if EXPORTING.load(Ordering::Relaxed) {
        if let Some(parent) = parent {
            let remote = SpanContext::new(
                TraceId::from_bytes(parent.trace_id),
                SpanId::from_bytes(parent.span_id),
                if parent.sampled {
                    TraceFlags::SAMPLED
                } else {
                    TraceFlags::default()
                },
                true,
                TraceState::default(),
            );
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        }
        let otel = span.context();
        let exported = otel.span().span_context().clone();
        if exported.is_valid() {
            TraceContext {
                trace_id: exported.trace_id().to_bytes(),
                span_id: exported.span_id().to_bytes(),
                sampled: exported.is_sampled(),
            }
        } else {
            TraceContext::child_of(parent)
        }
    } else {
        TraceContext::child_of(parent)
    };
    span.record("trace_id", tracing::field::display(context.trace_id_hex()));
    span.record("span_id", tracing::field::display(context.span_id_hex()));
    context
}

/// W3C trace context of one hop: the trace it belongs to and this hop's span.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl TraceContext {
    /// The remote parent named by a `traceparent` header; `None` when it is absent or malformed
    /// — a bad header from a client must never break a request, it just starts a new trace.
    pub fn parse(traceparent: Option<&str>) -> Option<Self> {
        traceparent.and_then(parse_traceparent)
    }

    /// A new span in `parent`'s trace, or the root of a new trace.
    pub fn child_of(parent: Option<Self>) -> Self {
        match parent {
            Some(parent) => Self {
                trace_id: parent.trace_id,
                span_id: random_span_id(),
                sampled: parent.sampled,
            },
            None => Self::start(),
        }
    }

    /// Continues the trace in `traceparent` (a new span in it), or starts a new one.
    pub fn continue_or_start(traceparent: Option<&str>) -> Self {
        Self::child_of(Self::parse(traceparent))
    }

    pub fn start() -> Self {
        let mut trace_id = [0u8; 16];
        fill_random(&mut trace_id);
        Self {
            trace_id,
            span_id: random_span_id(),
            sampled: true,
        }
    }

    /// The `traceparent` header to send on an outbound call made from this span.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{}",
            hex(&self.trace_id),
            hex(&self.span_id),
            if self.sampled { "01" } else { "00" }
        )
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())
    }
}

fn parse_traceparent(value: &str) -> Option<TraceContext> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    if version != "00" || parts.next().is_some() || parent.len() != 16 || flags.len() != 2 {
        return None;
    }
    let trace_id: [u8; 16] = unhex(trace)?.try_into().ok()?;
    let parent_id: [u8; 8] = unhex(parent)?.try_into().ok()?;
    // All-zero ids are invalid per the spec.
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(TraceContext {
        trace_id,
        span_id: parent_id,
        sampled: flags & 1 == 1,
    })
}

fn random_span_id() -> [u8; 8] {
    let mut id = [0u8; 8];
    fill_random(&mut id);
    id
}

fn fill_random(buf: &mut [u8]) {
    // The system RNG does not fail on supported platforms; an all-zero id would be rejected by
    // the next hop and simply start a new trace there.
    let _ = SystemRandom::new().fill(buf);
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2)
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_a_valid_traceparent_in_a_new_span() {
        let inbound = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::continue_or_start(Some(inbound));
        assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(ctx.span_id_hex(), "00f067aa0ba902b7");
        assert!(
            ctx.traceparent()
                .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        );
    }

    #[test]
    fn malformed_or_zero_traceparents_start_a_new_trace() {
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            let ctx = TraceContext::continue_or_start(Some(bad));
            assert_ne!(
                ctx.trace_id_hex(),
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "{bad}"
            );
            assert_ne!(ctx.trace_id, [0; 16]);
        }
    }
}
