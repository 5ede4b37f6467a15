//! Silences (ALR-04): a matcher on event type, severity and scope (every given field must
//! equal) that keeps matching alerts from notifying until `ends_at`. A silenced alert is still
//! recorded and counted: silence mutes the pager, not the history.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{Error, Result};

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    #[schema(min_length = 1, max_length = 200)]
    pub event_type: Option<String>,
    #[schema(min_length = 1, max_length = 200)]
    pub severity: Option<String>,
    #[schema(min_length = 1, max_length = 200)]
    pub scope: Option<String>,
}

impl Matcher {
    pub fn matches(&self, event_type: &str, severity: &str, scope: &str) -> bool {
        let equal = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        equal(&self.event_type, event_type)
            && equal(&self.severity, severity)
            && equal(&self.scope, scope)
    }
}

/// `POST /v1/admin/silences`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    pub matcher: Matcher,
    /// In the future, at most 30 days ahead.
    #[serde(with = "time::serde::rfc3339")]
    pub ends_at: OffsetDateTime,
    /// 1-500 characters, not only spaces.
    #[schema(min_length = 1, max_length = 500, pattern = "\\S")]
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Silence {
    pub id: Uuid,
    pub matcher: Matcher,
    #[serde(with = "time::serde::rfc3339")]
    pub starts_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub ends_at: OffsetDateTime,
    pub reason: String,
}

/// The longest a silence may last: a forgotten silence must not mute a service for ever.
const MAX_DAYS: i64 = 30;

pub fn validate(request: NewSilence, now: OffsetDateTime) -> Result<Silence> {
    let mut errors: Vec<(String, String)> = Vec::new();
    let m = &request.matcher;
    if m.event_type.is_none() && m.severity.is_none() && m.scope.is_none() {
        errors.push((
            "matcher".into(),
            "give at least one of event_type, severity, scope".into(),
        ));
    }
    if [&m.event_type, &m.severity, &m.scope]
        .into_iter()
        .flatten()
        .any(|v| v.is_empty() || v.chars().count() > 200)
    {
        errors.push(("matcher".into(), "fields are 1-200 characters".into()));
    }
    if request.ends_at <= now {
        errors.push(("ends_at".into(), "must be in the future".into()));
    } else if request.ends_at - now > time::Duration::days(MAX_DAYS) {
        errors.push(("ends_at".into(), format!("at most {MAX_DAYS} days ahead")));
    }
    if request.reason.trim().is_empty() || request.reason.chars().count() > 500 {
        errors.push(("reason".into(), "1-500 characters".into()));
    }
    if !errors.is_empty() {
        return Err(Error::fields(errors));
    }
    Ok(Silence {
        id: Uuid::now_v7(),
        matcher: request.matcher,
        starts_at: now,
        ends_at: request.ends_at,
        reason: request.reason.trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_given_field_must_equal() {
        let matcher = Matcher {
            event_type: Some("KillSwitchActivated".into()),
            scope: Some("global".into()),
            severity: None,
        };
        assert!(matcher.matches("KillSwitchActivated", "critical", "global"));
        assert!(!matcher.matches("KillSwitchActivated", "critical", "symbol:BTC-USD"));
        assert!(!matcher.matches("EventDeadLettered", "critical", "global"));
    }

    #[test]
    fn a_silence_needs_a_matcher_a_future_end_and_a_reason() {
        let now = OffsetDateTime::now_utc();
        let request = |matcher: Matcher, ends_at, reason: &str| NewSilence {
            matcher,
            ends_at,
            reason: reason.into(),
        };
        let some = Matcher {
            severity: Some("info".into()),
            ..Matcher::default()
        };
        assert!(
            validate(
                request(Matcher::default(), now + time::Duration::hours(1), "x"),
                now
            )
            .is_err()
        );
        assert!(
            validate(
                request(some.clone(), now - time::Duration::hours(1), "x"),
                now
            )
            .is_err()
        );
        assert!(
            validate(
                request(some.clone(), now + time::Duration::days(31), "x"),
                now
            )
            .is_err()
        );
        assert!(
            validate(
                request(some.clone(), now + time::Duration::hours(1), " "),
                now
            )
            .is_err()
        );
        assert!(validate(request(some, now + time::Duration::hours(1), "deploy"), now).is_ok());
    }
}
