//! What a run measured: latency per action from its scheduled start (HdrHistogram), answers
//! by status, and the invariants' verdicts.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::stream_checks::Subscriber;
use crate::workload::Kind;

/// One finished action.
pub struct Sample {
    pub kind: Kind,
    /// From the scheduled start to the answer: queueing included.
    pub latency: Duration,
    /// The HTTP status, or `None` when no answer came (connection refused, timeout).
    pub status: Option<u16>,
    /// A refusal's problem `code` (`insufficient_funds`, `no_reference_price`, …).
    pub code: Option<String>,
}

pub struct Report {
    pub rate: u32,
    pub duration: Duration,
    latencies: BTreeMap<Kind, Histogram<u64>>,
    all: Histogram<u64>,
    /// (action, status or "no_answer", with a refusal's code: `422 insufficient_funds`) → count.
    pub answers: BTreeMap<(Kind, String), u64>,
    /// Starts skipped because `max_in_flight` requests were outstanding.
    pub not_started: u64,
    pub orders_placed: u64,
    /// What each WebSocket subscriber received.
    pub subscribers: Vec<Subscriber>,
    /// Invariants that did not hold, each with what was found.
    pub violations: Vec<String>,
}

/// Microsecond resolution up to an hour, three significant digits.
#[allow(clippy::expect_used)] // constant bounds that are valid: it cannot fail
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

impl Report {
    pub fn new(rate: u32, duration: Duration) -> Self {
        Self {
            rate,
            duration,
            latencies: BTreeMap::new(),
            all: histogram(),
            answers: BTreeMap::new(),
            not_started: 0,
            orders_placed: 0,
            subscribers: Vec::new(),
            violations: Vec::new(),
        }
    }

    pub fn record(&mut self, sample: &Sample) {
        let micros = u64::try_from(sample.latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.latencies
            .entry(sample.kind)
            .or_insert_with(histogram)
            .saturating_record(micros);
        self.all.saturating_record(micros);
        let status = match (&sample.status, &sample.code) {
            (None, _) => "no_answer".to_owned(),
            (Some(status), Some(code)) => format!("{status} {code}"),
            (Some(status), None) => status.to_string(),
        };
        *self.answers.entry((sample.kind, status)).or_default() += 1;
        if sample.kind.places_an_order() && sample.status == Some(201) {
            self.orders_placed += 1;
        }
    }

    /// Answers that are faults: any 5xx, or no answer at all.
    pub fn faults(&self) -> u64 {
        self.answers
            .iter()
            .filter(|((_, status), _)| status.starts_with('5') || status == "no_answer")
            .map(|(_, count)| count)
            .sum()
    }

    /// Answers that are 500 exactly: never acceptable, whatever the load.
    pub fn internal_errors(&self) -> u64 {
        self.answers
            .iter()
            .filter(|((_, status), _)| status == "500")
            .map(|(_, count)| count)
            .sum()
    }

    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// Placements of every order type answered other than 201, by answer (`503
    /// funds_loading`): what an outage or a deploy cost order entry, in one line.
    pub fn placements_not_placed(&self) -> BTreeMap<&str, u64> {
        let mut by_answer = BTreeMap::new();
        for ((kind, status), count) in &self.answers {
            if kind.places_an_order() && status != "201" {
                *by_answer.entry(status.as_str()).or_default() += count;
            }
        }
        by_answer
    }
}

fn millis(micros: u64) -> String {
    format!("{:.2}", micros as f64 / 1000.0)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let actions = self.all.len();
        writeln!(
            f,
            "{actions} actions at {} /s for {} s ({} orders placed, {:.0} orders/s); {} not started",
            self.rate,
            self.duration.as_secs(),
            self.orders_placed,
            self.orders_placed as f64 / self.duration.as_secs_f64().max(1.0),
            self.not_started,
        )?;
        writeln!(
            f,
            "{:<14} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency (ms)", "count", "p50", "p90", "p99", "p99.9", "max"
        )?;
        let mut rows: Vec<(&str, &Histogram<u64>)> =
            self.latencies.iter().map(|(k, h)| (k.name(), h)).collect();
        rows.push(("all", &self.all));
        for (name, h) in rows {
            writeln!(
                f,
                "{name:<14} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
                h.len(),
                millis(h.value_at_quantile(0.5)),
                millis(h.value_at_quantile(0.9)),
                millis(h.value_at_quantile(0.99)),
                millis(h.value_at_quantile(0.999)),
                millis(h.max()),
            )?;
        }
        write!(f, "answers:")?;
        for ((kind, status), count) in &self.answers {
            write!(f, " {}:{}={count}", kind.name(), status.replace(' ', "/"))?;
        }
        writeln!(f)?;
        write!(f, "placements not placed:")?;
        let not_placed = self.placements_not_placed();
        if not_placed.is_empty() {
            write!(f, " none")?;
        }
        for (status, count) in not_placed {
            write!(f, " {}={count}", status.replace(' ', "/"))?;
        }
        writeln!(f)?;
        let per_subscriber = |part: fn(&Subscriber) -> u64| -> Vec<u64> {
            self.subscribers.iter().map(part).collect()
        };
        writeln!(
            f,
            "stream messages per subscriber: {:?}; trades {:?}; own orders accepted {:?}, fills {:?}, ended {:?}; book updates {:?}, of them after a gap {:?}",
            per_subscriber(|s| s.messages),
            per_subscriber(|s| s.trades.trades.len() as u64),
            per_subscriber(|s| s.own_orders.accepted.len() as u64),
            per_subscriber(|s| s.own_orders.fills.len() as u64),
            per_subscriber(
                |s| (s.own_orders.completed.len() + s.own_orders.cancelled.len()) as u64
            ),
            per_subscriber(|s| s.book.updates),
            per_subscriber(|s| s.book.gaps),
        )?;
        for (index, subscriber) in self.subscribers.iter().enumerate() {
            if !subscriber.reconnects.is_empty() {
                writeln!(
                    f,
                    "subscriber {index}: connected again after: {}; caught up {} trades and {} order messages",
                    subscriber.reconnects.join("; "),
                    subscriber.trades.caught_up,
                    subscriber.own_orders.caught_up,
                )?;
            }
            if let Some(closed) = &subscriber.closed {
                writeln!(
                    f,
                    "subscriber {index}: the server closed the stream: {closed}"
                )?;
            }
        }
        if self.violations.is_empty() {
            writeln!(f, "invariants: all hold")
        } else {
            writeln!(f, "invariants violated:")?;
            for violation in &self.violations {
                writeln!(f, "  - {violation}")?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(kind: Kind, status: Option<u16>, code: Option<&str>) -> Sample {
        Sample {
            kind,
            latency: Duration::from_millis(3),
            status,
            code: code.map(str::to_owned),
        }
    }

    #[test]
    fn placements_not_placed_are_summed_over_order_types_by_answer() {
        let mut report = Report::new(100, Duration::from_secs(1));
        for sample in [
            answered(Kind::LimitGtc, Some(201), None),
            answered(Kind::LimitGtc, Some(503), Some("funds_loading")),
            answered(Kind::LimitIoc, Some(503), Some("funds_loading")),
            answered(Kind::Market, Some(503), Some("upstream_unavailable")),
            answered(Kind::LimitFok, None, None),
            // Not placements: a refused cancel or read is not counted.
            answered(Kind::Cancel, Some(503), Some("funds_loading")),
            answered(Kind::ReadBalances, Some(503), Some("upstream_unavailable")),
        ] {
            report.record(&sample);
        }

        let not_placed = report.placements_not_placed();

        assert_eq!(
            not_placed,
            BTreeMap::from([
                ("503 funds_loading", 2),
                ("503 upstream_unavailable", 1),
                ("no_answer", 1),
            ])
        );
        let printed = report.to_string();
        assert!(
            printed.contains(
                "placements not placed: 503/funds_loading=2 503/upstream_unavailable=1 no_answer=1\n"
            ),
            "{printed}"
        );
    }

    #[test]
    fn a_run_that_placed_everything_says_so() {
        let mut report = Report::new(100, Duration::from_secs(1));
        report.record(&answered(Kind::LimitGtc, Some(201), None));
        report.record(&answered(Kind::Cancel, Some(409), Some("order_not_open")));

        assert!(report.placements_not_placed().is_empty());
        assert!(report.to_string().contains("placements not placed: none\n"));
    }
}
