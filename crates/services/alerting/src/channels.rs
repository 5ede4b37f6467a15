//! Channels (ALR-02, ALR-03): where notifications go, validated, and shown only masked.
//!
//! A channel's target can itself be a credential (a Slack webhook URL carries its token in
//! the path) and its secret always is (an HMAC key, a PagerDuty routing key). Both live in
//! [`Channel`] as [`SecretString`], so neither a log line nor a `Debug` print can show them,
//! and the API answers with [`ChannelView`]: the target masked, the secret only as "set".

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Generic JSON POST, HMAC-SHA256 signed when a secret is set.
    Webhook,
    /// Slack-compatible incoming webhook: `{"text": …}`.
    Slack,
    /// PagerDuty Events API v2: the secret is the routing key.
    Pagerduty,
    /// Email over SMTP to the target address.
    Email,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Webhook => "webhook",
            Kind::Slack => "slack",
            Kind::Pagerduty => "pagerduty",
            Kind::Email => "email",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "webhook" => Some(Kind::Webhook),
            "slack" => Some(Kind::Slack),
            "pagerduty" => Some(Kind::Pagerduty),
            "email" => Some(Kind::Email),
            _ => None,
        }
    }
}

/// `POST /v1/admin/alert-channels`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewChannel {
    /// Lowercase letters, digits, `-` and `_`; rules name channels by it.
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub name: String,
    pub kind: Kind,
    /// A URL (webhook, slack, pagerduty) or an email address.
    #[schema(min_length = 1, max_length = 2048)]
    pub target: String,
    /// The webhook's HMAC key, or PagerDuty's routing key (required there). Never returned.
    #[schema(value_type = Option<String>, min_length = 1, max_length = 512)]
    pub secret: Option<SecretString>,
}

/// A stored channel, as the notifier uses it.
#[derive(Clone, Debug)]
pub struct Channel {
    pub id: Uuid,
    pub name: String,
    pub kind: Kind,
    pub target: SecretString,
    pub secret: Option<SecretString>,
    pub created_at: OffsetDateTime,
}

/// A channel as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelView {
    pub id: Uuid,
    pub name: String,
    pub kind: Kind,
    /// `https://hooks.example.com/…`: scheme and host only; an email address in full.
    pub target: String,
    /// Whether a secret is set; the secret itself is never returned.
    pub has_secret: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<&Channel> for ChannelView {
    fn from(channel: &Channel) -> Self {
        Self {
            id: channel.id,
            name: channel.name.clone(),
            kind: channel.kind,
            target: mask(channel.kind, channel.target.expose_secret()),
            has_secret: channel.secret.is_some(),
            created_at: channel.created_at,
        }
    }
}

/// What of a target may be shown: an email address, or a URL's scheme and host.
pub fn mask(kind: Kind, target: &str) -> String {
    if kind == Kind::Email {
        return target.to_owned();
    }
    match reqwest::Url::parse(target) {
        Ok(url) => format!("{}://{}/…", url.scheme(), url.host_str().unwrap_or("?")),
        Err(_) => "…".to_owned(),
    }
}

pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn valid_email(address: &str) -> bool {
    address.parse::<lettre::Address>().is_ok()
}

/// Checks a new channel; every problem is reported at once.
pub fn validate(request: NewChannel, email_enabled: bool) -> Result<Channel> {
    let mut errors: Vec<(String, String)> = Vec::new();
    if !valid_name(&request.name) {
        errors.push((
            "name".into(),
            "1-63 lowercase letters, digits, - and _".into(),
        ));
    }
    let target = request.target.trim().to_owned();
    match request.kind {
        Kind::Email => {
            if !valid_email(&target) {
                errors.push(("target".into(), "must be an email address".into()));
            }
            if !email_enabled {
                errors.push((
                    "kind".into(),
                    "email needs BOURSE_ALERTING_SMTP_URL to be configured".into(),
                ));
            }
        }
        _ => match reqwest::Url::parse(&target) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {}
            _ => errors.push(("target".into(), "must be an http(s) URL".into())),
        },
    }
    if target.len() > 2048 {
        errors.push(("target".into(), "at most 2048 characters".into()));
    }
    let secret = request.secret.filter(|s| !s.expose_secret().is_empty());
    match (&secret, request.kind) {
        (None, Kind::Pagerduty) => {
            errors.push(("secret".into(), "pagerduty needs its routing key".into()))
        }
        (Some(_), Kind::Slack | Kind::Email) => errors.push((
            "secret".into(),
            "slack and email channels take no secret".into(),
        )),
        (Some(s), _) if s.expose_secret().len() > 512 => {
            errors.push(("secret".into(), "at most 512 characters".into()))
        }
        _ => {}
    }
    if !errors.is_empty() {
        return Err(Error::fields(errors));
    }
    Ok(Channel {
        id: Uuid::now_v7(),
        name: request.name,
        kind: request.kind,
        target: SecretString::from(target),
        secret,
        created_at: OffsetDateTime::now_utc(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn request(kind: Kind, target: &str, secret: Option<&str>) -> NewChannel {
        NewChannel {
            name: "ops".into(),
            kind,
            target: target.into(),
            secret: secret.map(|s| SecretString::from(s.to_owned())),
        }
    }

    #[test]
    fn a_slack_token_in_the_path_is_never_shown() {
        let channel = validate(
            request(
                Kind::Slack,
                "https://hooks.slack.com/services/T0/B0/sekrit",
                None,
            ),
            false,
        )
        .unwrap();
        let view = ChannelView::from(&channel);
        assert_eq!(view.target, "https://hooks.slack.com/…");
        assert!(!format!("{channel:?}").contains("sekrit"));
        assert!(!serde_json::to_string(&view).unwrap().contains("sekrit"));
    }

    #[test]
    fn a_pagerduty_channel_needs_its_routing_key() {
        assert!(
            validate(
                request(Kind::Pagerduty, "https://events.example/v2", None),
                false
            )
            .is_err()
        );
        let channel = validate(
            request(
                Kind::Pagerduty,
                "https://events.example/v2",
                Some("routing-key"),
            ),
            false,
        )
        .unwrap();
        assert!(!format!("{channel:?}").contains("routing-key"));
    }

    #[test]
    fn targets_are_checked_by_kind() {
        assert!(validate(request(Kind::Webhook, "ftp://x", None), false).is_err());
        assert!(validate(request(Kind::Webhook, "not a url", None), false).is_err());
        assert!(validate(request(Kind::Email, "ops@example.com", None), true).is_ok());
        assert!(validate(request(Kind::Email, "ops@example.com", None), false).is_err());
        assert!(validate(request(Kind::Email, "nobody", None), true).is_err());
    }
}
