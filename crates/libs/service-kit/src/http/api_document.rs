//! Adjusting a service's OpenAPI document to how it is configured: what a static schema cannot
//! know (the assets this deployment trades) is stated when the document is served, so the
//! document refuses exactly what the service refuses.

use serde_json::Value;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::{OpenApi, RefOr};

/// Restricts `schema.property` (a string) to `values`. Returns whether the property was found:
/// a renamed field must not silently leave the document unrestricted.
pub fn restrict_to(
    document: &mut OpenApi,
    schema: &str,
    property: &str,
    values: impl IntoIterator<Item = String>,
) -> bool {
    let Some(RefOr::T(Schema::Object(object))) = document
        .components
        .as_mut()
        .and_then(|components| components.schemas.get_mut(schema))
    else {
        return false;
    };
    let Some(RefOr::T(Schema::Object(field))) = object.properties.get_mut(property) else {
        return false;
    };
    field.enum_values = Some(values.into_iter().map(Value::String).collect());
    true
}
