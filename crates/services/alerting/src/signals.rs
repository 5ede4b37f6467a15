//! What an event means to alerting (ALR-07), without IO: whether it raises an alert or
//! resolves one, the scope that (with the event type) fingerprints it, a one-line summary and
//! the severity it has when no rule routes it.
//!
//! Only the events listed here are alerts. `*` in a rule means "any of these", never "every
//! event on the stream" — `TradeSettled` is business as usual, not a page.

use contracts::events::{
    BreakerTransition, CircuitBreakerClosed, CircuitBreakerOpened, Event, EventDeadLettered,
    KillSwitch, KillSwitchActivated, KillSwitchReleased, ReconciliationFailed, RiskLimitBreached,
    ServiceRecovered, ServiceUnhealthy,
};
use events::Envelope;
use events::envelope::PayloadError;

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
    KillSwitchActivated::TYPE,
    RiskLimitBreached::TYPE,
    CircuitBreakerOpened::TYPE,
    EventDeadLettered::TYPE,
    ReconciliationFailed::TYPE,
    ServiceUnhealthy::TYPE,
];
pub const RESOLVING: &[&str] = &[
    KillSwitchReleased::TYPE,
    CircuitBreakerClosed::TYPE,
    ServiceRecovered::TYPE,
];

pub fn wants(event_type: &str) -> bool {
    RAISING.contains(&event_type) || RESOLVING.contains(&event_type)
}

/// The fingerprint of an alert: one open alert per (event type, scope).
pub fn fingerprint(event_type: &str, scope: &str) -> String {
    format!("{event_type}/{scope}")
}

fn kill_switch_scope(switch: &KillSwitch) -> String {
    match &switch.target {
        Some(target) => format!("{}:{target}", switch.scope),
        None => switch.scope.clone(),
    }
}

/// Who calls whom: a breaker is per caller and upstream.
fn breaker_scope(transition: &BreakerTransition) -> String {
    format!("{}->{}", transition.service, transition.upstream)
}

/// Reads `event`: `None` for events alerting does not act on; an event of a type it acts on
/// but in a shape or version it does not read is refused (the consumer dead-letters it).
pub fn read(event: &Envelope) -> Result<Option<Signal>, PayloadError> {
    let raise = |scope: String, summary: String, default_severity| Signal::Raise {
        event_type: event.event_type.clone(),
        scope,
        summary,
        default_severity,
    };
    let signal = match event.event_type.as_str() {
        KillSwitchActivated::TYPE => {
            let KillSwitchActivated(switch) = event.decode()?;
            let scope = kill_switch_scope(&switch);
            let summary = format!("Kill switch activated ({scope}): {}", switch.reason);
            raise(scope, summary, "critical")
        }
        KillSwitchReleased::TYPE => Signal::Resolve {
            raised_by: KillSwitchActivated::TYPE,
            scope: kill_switch_scope(&event.decode::<KillSwitchReleased>()?.0),
        },
        RiskLimitBreached::TYPE => {
            let breach: RiskLimitBreached = event.decode()?;
            let scope = format!("account:{}/symbol:{}", breach.account_id, breach.symbol);
            let summary = format!(
                "Risk limit {} breached by account {} on {} (net quantity {}, limit {})",
                breach.limit,
                breach.account_id,
                breach.symbol,
                breach.net_quantity,
                breach.max_position,
            );
            raise(scope, summary, "error")
        }
        CircuitBreakerOpened::TYPE => {
            let scope = breaker_scope(&event.decode::<CircuitBreakerOpened>()?.0);
            let summary = format!("Circuit breaker open: {scope} gets no calls");
            raise(scope, summary, "error")
        }
        CircuitBreakerClosed::TYPE => Signal::Resolve {
            raised_by: CircuitBreakerOpened::TYPE,
            scope: breaker_scope(&event.decode::<CircuitBreakerClosed>()?.0),
        },
        EventDeadLettered::TYPE => {
            let dead: EventDeadLettered = event.decode()?;
            let scope = format!("{}/{}", dead.stream, dead.group);
            let summary = format!(
                "Event {} ({}) dead-lettered by {}: {}",
                dead.event_id.as_deref().unwrap_or("?"),
                dead.event_type.as_deref().unwrap_or("?"),
                dead.group,
                dead.reason,
            );
            raise(scope, summary, "error")
        }
        ReconciliationFailed::TYPE => {
            let failed: ReconciliationFailed = event.decode()?;
            let names: Vec<&str> = failed.checks.iter().map(|c| c.name.as_str()).collect();
            let summary = format!("Reconciliation of the ledger failed: {}", names.join(", "));
            raise(event.producer.clone(), summary, "critical")
        }
        ServiceUnhealthy::TYPE => {
            let ServiceUnhealthy(health) = event.decode()?;
            let summary = format!("Service {} is not ready: {}", health.service, health.detail);
            raise(health.service, summary, "critical")
        }
        ServiceRecovered::TYPE => Signal::Resolve {
            raised_by: ServiceUnhealthy::TYPE,
            scope: event.decode::<ServiceRecovered>()?.0.service,
        },
        _ => return Ok(None),
    };
    Ok(Some(signal))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;
    use uuid::Uuid;

    fn raw(payload: serde_json::Value) -> Box<serde_json::value::RawValue> {
        serde_json::value::to_raw_value(&payload).unwrap()
    }

    fn event<E: Event>(payload: &E) -> Envelope {
        Envelope::of("risk", "x", 0, payload).unwrap()
    }

    fn switch() -> KillSwitch {
        KillSwitch {
            kill_switch_id: Uuid::now_v7(),
            scope: "account".into(),
            target: Some("a1".into()),
            reason: "runaway algo".into(),
            by: Uuid::now_v7(),
        }
    }

    #[test]
    fn a_kill_switch_and_its_release_share_a_scope() {
        let raised = read(&event(&KillSwitchActivated(switch())))
            .unwrap()
            .unwrap();
        let resolved = read(&event(&KillSwitchReleased(switch())))
            .unwrap()
            .unwrap();
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
        let opened = CircuitBreakerOpened(BreakerTransition {
            service: "orders".into(),
            upstream: "risk".into(),
            from: "closed".into(),
            to: "open".into(),
        });
        let Ok(Some(Signal::Raise { scope, .. })) = read(&event(&opened)) else {
            panic!("raises")
        };
        assert_eq!(scope, "orders->risk");
    }

    #[test]
    fn business_events_are_not_alerts() {
        let settled = Envelope::new("settlement", "TradeSettled", 1, "x", 0, raw(json!({})));
        assert_eq!(read(&settled).unwrap(), None);
        assert!(!wants("TradeSettled"));
        assert!(wants("EventDeadLettered") && wants("CircuitBreakerClosed"));
    }

    #[test]
    fn an_alert_event_it_cannot_read_is_refused_not_half_read() {
        let mut malformed = event(&KillSwitchActivated(switch()));
        malformed.payload = raw(json!({ "scope": "account" }));
        assert!(matches!(
            read(&malformed),
            Err(PayloadError::Malformed { .. })
        ));
        let mut future = event(&KillSwitchActivated(switch()));
        future.version = 2;
        assert!(matches!(
            read(&future),
            Err(PayloadError::UnknownVersion { .. })
        ));
    }
}
