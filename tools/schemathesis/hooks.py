"""A check of Bourse's own, loaded by run.sh (SCHEMATHESIS_HOOKS).

schemathesis.toml lets a few operations refuse schema-valid data with 422, each for a rule a
JSON Schema cannot state. This check keeps that exception narrow: a schema-valid request may be
refused for such a rule, never for its shape — the problem codes of shape refusals are below.
"""

import schemathesis

SHAPE_REFUSALS = {
    "malformed_json",
    "invalid_body",
    "invalid_query",
    "invalid_path",
    "idempotency_key_invalid",
    "unsupported_media_type",
}


@schemathesis.check
def schema_valid_requests_are_never_refused_for_their_shape(ctx, response, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    if response.status_code not in (400, 415, 422):
        return None
    try:
        code = response.json().get("code")
    except Exception:  # not JSON: the content-type check reports it
        return None
    if code in SHAPE_REFUSALS:
        raise AssertionError(
            f"a request valid by the document was refused for its shape: {response.status_code} {code}"
        )
    return None
