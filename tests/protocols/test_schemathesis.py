"""schemathesis against the app's own OpenAPI schema: no 5xx, every response as documented.

The app runs in-process (ASGI; schemathesis starts its lifespan) on the tiny models.
For every operation, schema-valid (positive) and schema-violating (negative) requests
are generated; every response must be a non-5xx, carry a documented status code,
content type and headers, match the documented body schema (the one error shape for
every 4xx), and negative data must be rejected. SEQSERVE_SCHEMATHESIS_EXAMPLES sets
the examples per operation and mode (default 100) for a longer run.

(schemathesis' lazy ``from_fixture`` loader does not work with pytest 9, so the cases
are drawn with ``APIOperation.as_strategy`` in a plain hypothesis test.)
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.config import Settings
from app.main import create_app

MAX_EXAMPLES = int(os.environ.get("SEQSERVE_SCHEMATHESIS_EXAMPLES", "100"))
CHECKS = [schemathesis.checks.not_a_server_error, status_code_conformance,
          content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]
OPERATIONS = [("POST", "/sentiment"), ("POST", "/attention"), ("POST", "/generate"),
              ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/v1/models"),
              ("GET", "/metrics"),
              # the streaming twin of /generate, the OpenAI-compatible and V2 routes
              ("POST", "/generate/stream"), ("POST", "/v1/completions"),
              ("POST", "/v1/chat/completions"), ("GET", "/health"),
              ("GET", "/v1/models/{model_id}"), ("GET", "/v2"), ("GET", "/v2/health/live"),
              ("GET", "/v2/health/ready"), ("GET", "/v2/models/{model_name}"),
              ("GET", "/v2/models/{model_name}/versions/{model_version}"),
              ("GET", "/v2/models/{model_name}/ready"),
              ("GET", "/v2/models/{model_name}/versions/{model_version}/ready"),
              ("POST", "/v2/models/{model_name}/infer"), ("POST", "/v2/repository/index"),
              ("POST", "/v2/models/{model_name}/versions/{model_version}/infer")]


@pytest.fixture(scope="module")
def api_schema(tiny_models_dir):
    from schemathesis.python import asgi

    # Small limits so generated inputs reach them and generation stays short; the body
    # limit leaves room for a list one item over the schema's absolute cap (4,096
    # texts), so schema-violating lists meet the 422, not the 413.
    app = create_app(Settings(models_dir=tiny_models_dir, max_new_chars=50, max_texts=8,
                              max_text_chars=2_000, max_prompt_chars=500,
                              max_body_bytes=400_000, log_level="warning"))
    # a schema-violating body can also be over the body limit: 413 rejects it too (the
    # limit is checked before the body is parsed), beside schemathesis' default statuses
    config = SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {
        "expected-statuses": ["400", "401", "403", "404", "405", "406", "409", "413", "415",
                              "422", "428", "429", "5xx"]}}})
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    yield loaded
    asgi.shutdown_lifespans()  # stop the batching loops and the generation engine


def test_every_operation_of_the_schema_is_fuzzed(api_schema):
    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


# GET operations take no input, so there is nothing to negate for them.
@pytest.mark.parametrize("method, path, mode", [
    *[(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS],
    *[(m, p, GenerationMode.NEGATIVE) for m, p in OPERATIONS if m == "POST"]],
    ids=lambda v: v.value if isinstance(v, GenerationMode) else v)
def test_operation_conforms_to_its_openapi_schema(api_schema, method, path, mode):
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        case.call_and_validate(checks=CHECKS)

    run()
