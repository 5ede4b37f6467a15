//! Request extractors whose rejections are problem+json.
//!
//! axum's own extractors answer bad input with plain text; a client of Bourse always gets a
//! problem with a `code` instead (SEC-10). Bodies are typed and, by convention, every request
//! type carries `#[serde(deny_unknown_fields)]`.
//!
//! No text with a NUL character (U+0000) gets past them: every service keeps its text in
//! PostgreSQL, which cannot store it, so a NUL deep in some field would otherwise surface as a
//! 500 from whichever statement met it first. Refusing it here, once, covers every route.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::problem::Problem;

/// `axum::Json` with problem+json rejections: 415 without a JSON content type, 413 beyond the
/// body limit, 400 for what is not JSON, 422 for JSON that is not this request (wrong types,
/// missing or unknown fields), with the path of the value refused.
///
/// A number with a zero fraction (`1345.0`) is taken where an integer is expected: JSON and
/// JSON Schema do not tell them apart, so a client generated from the API document may send
/// either.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the request body exceeds the size limit",
                )
            } else {
                Problem::bad_request("unreadable_body", rejection.body_text())
            }
        })?;
        if has_escaped_nul(&bytes) {
            return Err(Problem::unprocessable(
                "invalid_body",
                "text must not contain the NUL character (\\u0000)",
            ));
        }
        let refused = match deserialize::<T>(&bytes) {
            Ok(value) => return Ok(Self(value)),
            Err(refused) => refused,
        };
        if refused.inner().is_syntax() || refused.inner().is_eof() {
            return Err(Problem::bad_request(
                "malformed_json",
                format!(
                    "Failed to parse the request body as JSON: {}",
                    refused.inner()
                ),
            ));
        }
        // Only a body that holds integral floats gets a second, normalized try.
        if let Ok(mut value) = serde_json::from_slice::<Value>(&bytes)
            && integral_floats_to_integers(&mut value)
            && let Ok(normalized) = serde_json::to_vec(&value)
            && let Ok(value) = deserialize::<T>(&normalized)
        {
            return Ok(Self(value));
        }
        Err(Problem::unprocessable(
            "invalid_body",
            format!("Failed to deserialize the JSON body into the target type: {refused}"),
        ))
    }
}

fn deserialize<T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(bytes))
}

/// Whether a JSON text holds `\u0000` as an escape (a raw NUL byte is not valid JSON anyway):
/// the `u` must follow an odd run of backslashes, since `\\u0000` is a backslash and "u0000".
fn has_escaped_nul(bytes: &[u8]) -> bool {
    let mut backslashes = 0usize;
    for (i, &byte) in bytes.iter().enumerate() {
        if byte == b'\\' {
            backslashes += 1;
            continue;
        }
        if byte == b'u' && backslashes % 2 == 1 && bytes.get(i + 1..i + 5) == Some(b"0000") {
            return true;
        }
        backslashes = 0;
    }
    false
}

/// Whether a percent-encoded path or query holds a NUL (`%00`).
fn has_encoded_nul(text: &str) -> bool {
    text.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0')
}

/// `application/json` or any `application/*+json`, parameters aside.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(essence) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
    else {
        return false;
    };
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Rewrites every number with a zero fraction that fits an integer as that integer; whether
/// it changed anything.
fn integral_floats_to_integers(value: &mut Value) -> bool {
    match value {
        Value::Number(number) if number.is_f64() => {
            let Some(float) = number.as_f64() else {
                return false;
            };
            // Exactly representable integers only (|x| < 2^53); beyond that a float is inexact.
            if float.fract() == 0.0 && float.abs() < 9_007_199_254_740_992.0 {
                #[allow(clippy::cast_possible_truncation)]
                let integer = float as i64;
                *value = Value::from(integer);
                return true;
            }
            false
        }
        Value::Array(items) => items.iter_mut().fold(false, |changed, item| {
            integral_floats_to_integers(item) | changed
        }),
        Value::Object(fields) => fields.values_mut().fold(false, |changed, field| {
            integral_floats_to_integers(field) | changed
        }),
        _ => false,
    }
}

/// `axum::extract::Path` with problem+json rejections (a malformed id is a 400, not a 500).
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if has_encoded_nul(parts.uri.path()) {
            return Err(Problem::bad_request(
                "invalid_path",
                "the path must not contain the NUL character (%00)",
            ));
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|rejection: PathRejection| {
                Problem::bad_request("invalid_path", rejection.body_text())
            })
    }
}

/// `axum::extract::Query` with problem+json rejections.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if parts.uri.query().is_some_and(has_encoded_nul) {
            return Err(Problem::bad_request(
                "invalid_query",
                "the query must not contain the NUL character (%00)",
            ));
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|rejection: QueryRejection| {
                Problem::bad_request("invalid_query", rejection.body_text())
            })
    }
}
