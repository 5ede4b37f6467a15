//! Logs and trace context.
//!
//! Logs are JSON lines on stdout by default; every line written while serving a request carries
//! the request span's fields: `request_id`, `trace_id`, `span_id` and, once authenticated,
//! `principal` (OBS-01). Trace context follows W3C Trace Context: an inbound `traceparent` is
//! continued, otherwise a new trace starts, and outbound calls carry it on (OBS-02, OBS-06).

use std::fmt;
use std::io;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use tracing_subscriber::{
    EnvFilter, fmt::MakeWriter, layer::SubscriberExt, util::SubscriberInitExt,
};

use crate::config::LogFormat;

/// Installs the global subscriber writing to stdout. Call once, at start-up.
pub fn init(format: LogFormat, filter: &str) {
    init_with_writer(format, filter, io::stdout);
}

/// Installs the global subscriber with a writer of the caller's choosing (tests capture logs
/// this way). Does nothing if a subscriber is already installed.
pub fn init_with_writer<W>(format: LogFormat, filter: &str, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(writer),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().with_writer(writer))
            .try_init(),
    };
    // Already installed (a second service in the same process, or a test): keep the first.
    let _ = result;
}

/// W3C trace context of one hop: the trace it belongs to and this hop's span.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl TraceContext {
    /// Continues the trace in `traceparent` (a new span in it), or starts a new trace when the
    /// header is absent or malformed — a bad header from a client must never break a request.
    pub fn continue_or_start(traceparent: Option<&str>) -> Self {
        match traceparent.and_then(parse_traceparent) {
            Some((trace_id, sampled)) => Self {
                trace_id,
                span_id: random_span_id(),
                sampled,
            },
            None => Self::start(),
        }
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

fn parse_traceparent(value: &str) -> Option<([u8; 16], bool)> {
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
    Some((trace_id, flags & 1 == 1))
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
