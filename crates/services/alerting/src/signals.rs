//! What an event means to alerting (ALR-07), without IO: whether it raises an alert or
//! resolves one, the scope that (with the event type) fingerprints it, a one-line summary and
//! the severity it has when no rule routes it.
//!
//! Only the events listed here are alerts. `*` in a rule means "any of these", never "every
//! event on the stream" — `TradeSettled` is business as usual, not a page.

use events::Envelope;
use serde_json::Value;

/// What one event does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Raise (or count again) the alert `event_type` + `scope`.
    Raise {
        event_type: String,
        scope: String,
        summary: String,
        /// The severity when no rule routes the alert.
        default_severity: &'static str,
    },
    /// Resolve the open alert `raised_by` + `scope`, if there is one.
    Resolve {
        raised_by: &'static str,
        scope: String,
    },
}

/// The event types that raise alerts, and those that resolve them.
pub const RAISING: &[&str] = &[
    "KillSwitchActivated",
    "RiskLimitBreached",
    "CircuitBreakerOpened",
    "EventDeadLettered",
    "ReconciliationFailed",
    "ServiceUnhealthy",
];
pub const RESOLVING: &[&str] = &[
    "KillSwitchReleased",
    "CircuitBreakerClosed",
    "ServiceRecovered",
];

pub fn wants(event_type: &str) -> bool {
    RAISING.contains(&event_type) || RESOLVING.contains(&event_type)
}

/// The fingerprint of an alert: one open alert per (event type, scope).
pub fn fingerprint(event_type: &str, scope: &str) -> String {
    format!("{event_type}/{scope}")
}

fn text<'a>(payload: &'a Value, field: &str) -> &'a str {
    payload.get(field).and_then(Value::as_str).unwrap_or("?")
}

fn kill_switch_scope(payload: &Value) -> String {
    match payload.get("target").and_then(Value::as_str) {
        Some(target) => format!("{}:{target}", text(payload, "scope")),
        None => text(payload, "scope").to_owned(),
    }
}

/// Who calls whom: a breaker is per caller and upstream.
fn breaker_scope(event: &Envelope) -> String {
    let caller = event
        .payload
        .get("service")
        .and_then(Value::as_str)
        .unwrap_or(&event.producer);
    format!("{caller}->{}", text(&event.payload, "upstream"))
}

/// Reads `event`; `None` for events alerting does not act on.
pub fn read(event: &Envelope) -> Option<Signal> {
    let payload = &event.payload;
    let raise = |scope: String, summary: String, default_severity| Signal::Raise {
        event_type: event.event_type.clone(),
        scope,
        summary,
        default_severity,
    };
    let signal = match event.event_type.as_str() {
        "KillSwitchActivated" => {
            let scope = kill_switch_scope(payload);
            let summary = format!(
                "Kill switch activated ({scope}): {}",
                text(payload, "reason")
            );
            raise(scope, summary, "critical")
        }
        "KillSwitchReleased" => Signal::Resolve {
            raised_by: "KillSwitchActivated",
            scope: kill_switch_scope(payload),
        },
        "RiskLimitBreached" => {
            let scope = format!(
                "account:{}/symbol:{}",
                text(payload, "account_id"),
                text(payload, "symbol")
            );
            let summary = format!(
                "Risk limit {} breached by account {} on {} (net quantity {}, limit {})",
                text(payload, "limit"),
                text(payload, "account_id"),
                text(payload, "symbol"),
                text(payload, "net_quantity"),
                text(payload, "max_position"),
            );
            raise(scope, summary, "error")
        }
        "CircuitBreakerOpened" => {
            let scope = breaker_scope(event);
            let summary = format!("Circuit breaker open: {scope} gets no calls");
            raise(scope, summary, "error")
        }
        "CircuitBreakerClosed" => Signal::Resolve {
            raised_by: "CircuitBreakerOpened",
            scope: breaker_scope(event),
        },
        "EventDeadLettered" => {
            let scope = format!("{}/{}", text(payload, "stream"), text(payload, "group"));
            let summary = format!(
                "Event {} ({}) dead-lettered by {}: {}",
                text(payload, "event_id"),
                text(payload, "event_type"),
                text(payload, "group"),
                text(payload, "reason"),
            );
            raise(scope, summary, "error")
        }
        "ReconciliationFailed" => {
            let failed: Vec<&str> = payload
                .get("checks")
                .and_then(Value::as_array)
                .map(|checks| checks.iter().map(|c| text(c, "name")).collect())
                .unwrap_or_default();
            let summary = format!("Reconciliation of the ledger failed: {}", failed.join(", "));
            raise(event.producer.clone(), summary, "critical")
        }
        "ServiceUnhealthy" => {
            let scope = text(payload, "service").to_owned();
            let summary = format!("Service {scope} is not ready: {}", text(payload, "detail"));
            raise(scope, summary, "critical")
        }
        "ServiceRecovered" => Signal::Resolve {
            raised_by: "ServiceUnhealthy",
            scope: text(payload, "service").to_owned(),
        },
        _ => return None,
    };
    Some(signal)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn event(event_type: &str, payload: Value) -> Envelope {
        Envelope::new("risk", event_type, 1, "x", 0, payload)
    }

    #[test]
    fn a_kill_switch_and_its_release_share_a_scope() {
        let payload = json!({ "scope": "account", "target": "a1", "reason": "runaway algo" });
        let raised = read(&event("KillSwitchActivated", payload.clone())).unwrap();
        let resolved = read(&event("KillSwitchReleased", payload)).unwrap();
        let Signal::Raise { scope, summary, .. } = raised else {
            panic!("raises")
        };
        assert_eq!(scope, "account:a1");
        assert!(summary.contains("runaway algo"));
        assert_eq!(
            resolved,
            Signal::Resolve {
                raised_by: "KillSwitchActivated",
                scope: "account:a1".into()
            }
        );
    }

    #[test]
    fn a_breaker_is_scoped_by_caller_and_upstream() {
        let payload =
            json!({ "service": "orders", "upstream": "risk", "from": "closed", "to": "open" });
        let Some(Signal::Raise { scope, .. }) = read(&event("CircuitBreakerOpened", payload))
        else {
            panic!("raises")
        };
        assert_eq!(scope, "orders->risk");
    }

    #[test]
    fn business_events_are_not_alerts() {
        assert_eq!(read(&event("TradeSettled", json!({}))), None);
        assert!(!wants("TradeSettled"));
        assert!(wants("EventDeadLettered") && wants("CircuitBreakerClosed"));
    }
}
