//! Routing rules (ALR-01, ALR-05): event type (exact or `*`) → severity → channels, with a
//! suppression window and escalation.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::channels::valid_name;
use crate::error::{Error, Result};
use crate::signals;

pub const SEVERITIES: &[&str] = &["critical", "error", "warning", "info"];

/// A channel's name as rules refer to it (the schema of `channels::valid_name`).
#[derive(ToSchema)]
#[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
pub struct ChannelName(pub String);

/// `POST /v1/admin/alert-rules`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRule {
    /// An alerting event type (`KillSwitchActivated`, `CircuitBreakerOpened`,
    /// `EventDeadLettered`, `RiskLimitBreached`, `ReconciliationFailed`, `ServiceUnhealthy`)
    /// or `*` for all of them.
    #[schema(
        pattern = "^(\\*|KillSwitchActivated|RiskLimitBreached|CircuitBreakerOpened|EventDeadLettered|ReconciliationFailed|ServiceUnhealthy)$"
    )]
    pub event_type: String,
    /// `critical`, `error`, `warning` or `info`.
    #[schema(pattern = "^(critical|error|warning|info)$")]
    pub severity: String,
    /// Channel names notified when the alert fires.
    #[schema(value_type = Vec<ChannelName>, min_items = 1, max_items = 16)]
    pub channels: Vec<String>,
    /// A repeat within this many seconds is counted, not notified again.
    #[schema(minimum = 0, maximum = 604800)]
    pub suppress_seconds: Option<i32>,
    /// Still unacknowledged this long after firing → notify `escalate_to` as well. Given
    /// together with `escalate_to`, or neither.
    #[schema(minimum = 1, maximum = 604800)]
    pub escalate_after_seconds: Option<i32>,
    #[serde(default)]
    #[schema(value_type = Vec<ChannelName>, max_items = 16)]
    pub escalate_to: Vec<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Rule {
    pub id: Uuid,
    pub event_type: String,
    pub severity: String,
    pub channels: Vec<String>,
    pub suppress_seconds: Option<i32>,
    pub escalate_after_seconds: Option<i32>,
    pub escalate_to: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Checks a new rule; every problem is reported at once. Channels are names; whether they
/// exist is checked by the caller against the store.
pub fn validate(request: NewRule) -> Result<Rule> {
    let mut errors: Vec<(String, String)> = Vec::new();
    if request.event_type != "*" && !signals::RAISING.contains(&request.event_type.as_str()) {
        errors.push((
            "event_type".into(),
            format!("must be * or one of {}", signals::RAISING.join(", ")),
        ));
    }
    if !SEVERITIES.contains(&request.severity.as_str()) {
        errors.push((
            "severity".into(),
            "must be critical, error, warning or info".into(),
        ));
    }
    let names_ok = |names: &[String]| names.len() <= 16 && names.iter().all(|n| valid_name(n));
    if request.channels.is_empty() || !names_ok(&request.channels) {
        errors.push(("channels".into(), "1-16 channel names".into()));
    }
    if request
        .suppress_seconds
        .is_some_and(|s| !(0..=604_800).contains(&s))
    {
        errors.push(("suppress_seconds".into(), "0 to 604800 (a week)".into()));
    }
    match (
        request.escalate_after_seconds,
        request.escalate_to.is_empty(),
    ) {
        (None, true) => {}
        (Some(after), false)
            if (1..=604_800).contains(&after) && names_ok(&request.escalate_to) => {}
        (Some(_), false) => errors.push((
            "escalate_after_seconds".into(),
            "1 to 604800, with up to 16 channel names in escalate_to".into(),
        )),
        _ => errors.push((
            "escalate_to".into(),
            "escalate_after_seconds and escalate_to go together".into(),
        )),
    }
    if !errors.is_empty() {
        return Err(Error::fields(errors));
    }
    Ok(Rule {
        id: Uuid::now_v7(),
        event_type: request.event_type,
        severity: request.severity,
        channels: request.channels,
        suppress_seconds: request.suppress_seconds,
        escalate_after_seconds: request.escalate_after_seconds,
        escalate_to: request.escalate_to,
        created_at: OffsetDateTime::now_utc(),
    })
}

/// The rule that routes `event_type`: an exact match over `*`, the oldest among equals.
/// `rules` is ordered oldest first.
pub fn route<'r>(rules: &'r [Rule], event_type: &str) -> Option<&'r Rule> {
    rules
        .iter()
        .find(|r| r.event_type == event_type)
        .or_else(|| rules.iter().find(|r| r.event_type == "*"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rule(event_type: &str) -> Rule {
        validate(NewRule {
            event_type: event_type.into(),
            severity: "critical".into(),
            channels: vec!["ops".into()],
            suppress_seconds: None,
            escalate_after_seconds: None,
            escalate_to: vec![],
        })
        .unwrap()
    }

    #[test]
    fn an_exact_rule_beats_the_wildcard() {
        let rules = vec![rule("*"), rule("KillSwitchActivated")];
        assert_eq!(
            route(&rules, "KillSwitchActivated").unwrap().id,
            rules[1].id
        );
        assert_eq!(route(&rules, "EventDeadLettered").unwrap().id, rules[0].id);
        assert!(route(&rules[1..], "EventDeadLettered").is_none());
    }

    #[test]
    fn escalation_needs_both_halves() {
        let request = |after: Option<i32>, to: Vec<String>| NewRule {
            event_type: "*".into(),
            severity: "info".into(),
            channels: vec!["ops".into()],
            suppress_seconds: None,
            escalate_after_seconds: after,
            escalate_to: to,
        };
        assert!(validate(request(Some(60), vec![])).is_err());
        assert!(validate(request(None, vec!["boss".into()])).is_err());
        assert!(validate(request(Some(0), vec!["boss".into()])).is_err());
        assert!(validate(request(Some(60), vec!["boss".into()])).is_ok());
    }

    #[test]
    fn unknown_event_types_and_severities_are_refused() {
        assert!(
            validate(NewRule {
                event_type: "TradeSettled".into(),
                severity: "loud".into(),
                channels: vec![],
                suppress_seconds: Some(-1),
                escalate_after_seconds: None,
                escalate_to: vec![],
            })
            .is_err()
        );
    }
}
