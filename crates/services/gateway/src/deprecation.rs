//! Retiring a route (OPS-11, docs/api-versioning.md): what a deprecated route says on every
//! answer, and the 410 it gives once its sunset has passed.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use service_kit::http::Problem;
use time::OffsetDateTime;
use time::macros::format_description;

use crate::route_table::Deprecation;

const DEPRECATION: HeaderName = HeaderName::from_static("deprecation");
const SUNSET: HeaderName = HeaderName::from_static("sunset");

/// `Deprecation: @<since>`, `Sunset: <HTTP-date>` and `Link: <successor>; rel="successor-version"`.
pub fn headers(deprecation: &Deprecation) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(since) = HeaderValue::try_from(format!("@{}", deprecation.since)) {
        headers.insert(DEPRECATION, since);
    }
    if let Some(sunset) =
        http_date(deprecation.sunset).and_then(|date| HeaderValue::try_from(date).ok())
    {
        headers.insert(SUNSET, sunset);
    }
    if let Ok(link) = HeaderValue::try_from(format!(
        "<{}>; rel=\"successor-version\"",
        deprecation.successor
    )) {
        headers.insert(axum::http::header::LINK, link);
    }
    headers
}

/// 410 Gone once `now` (Unix seconds) is past the sunset, with the same headers.
pub fn gone(deprecation: &Deprecation, now: i64) -> Option<Problem> {
    (now >= deprecation.sunset).then(|| {
        let mut problem = Problem::new(
            StatusCode::GONE,
            "sunset",
            format!(
                "this route was retired; use {} instead",
                deprecation.successor
            ),
        );
        for (name, value) in &headers(deprecation) {
            problem = problem.with_header(name.clone(), value.clone());
        }
        problem
    })
}

/// An IMF-fixdate (RFC 9110 §5.6.7), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(unix: i64) -> Option<String> {
    let format = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()?
        .format(&format)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETIRING: Deprecation = Deprecation {
        since: 1_798_761_600,  // 2027-01-01T00:00:00Z
        sunset: 1_814_400_000, // 2027-07-01T00:00:00Z
        successor: "/v2/orders",
    };

    #[test]
    fn a_deprecated_route_announces_when_it_goes_and_what_replaces_it() {
        let headers = headers(&RETIRING);
        assert_eq!(headers["deprecation"], "@1798761600");
        assert_eq!(headers["sunset"], "Thu, 01 Jul 2027 00:00:00 GMT");
        assert_eq!(headers["link"], "</v2/orders>; rel=\"successor-version\"");
    }

    #[test]
    fn after_its_sunset_a_route_is_gone() {
        assert!(gone(&RETIRING, RETIRING.sunset - 1).is_none());
        let problem = gone(&RETIRING, RETIRING.sunset).unwrap();
        assert_eq!(problem.status(), StatusCode::GONE);
        assert_eq!(problem.code(), "sunset");
    }
}
