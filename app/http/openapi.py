"""What the generated OpenAPI document adds to FastAPI's: stream event schemas and the
bearer security scheme.

Server-Sent Events responses are documented as ``text/event-stream`` the way FastAPI
documents its own event streams (OpenAPI 3.2's ``itemSchema``: one event, whose
``data`` string holds JSON of the model named by ``contentSchema``), plus a typeless
``schema`` for the whole stream, so that a generated client returns the stream as text
instead of parsing it as JSON. The event models are not referenced by any JSON body,
so ``install_openapi`` adds them to ``components.schemas``, as it does the models of
bodies that a route parses itself (``schema_ref``: the V2 infer body may be followed
by binary tensor data).

Integer bounds are written as integers (FastAPI writes floats, and 2**63 - 1 does not
survive that). Operation ids are set on every route (``classify_sentiment``,
``generate_text``, ...); a route without one gets its function's name, and the HEAD
twin of a GET route gets ``<id>_head``, so that every id is unique and a generated
client reads well.

When SEQSERVE_API_KEY is set, the document declares an HTTP bearer scheme and marks
every operation that needs the key, so Swagger UI's "Authorize" button makes "Try it
out" send it. Without a key there is no scheme, as there is nothing to send.
"""

from __future__ import annotations

import warnings
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel

from app.config import Settings
from app.http.policy import PolicyMap

_EXTRA_MODELS: dict[str, type[BaseModel]] = {}
REF = "#/components/schemas/{model}"
BEARER = "bearerAuth"


def sse_response(model: type[BaseModel], description: str) -> dict[str, Any]:
    """A ``responses`` entry for an SSE stream whose ``data:`` payloads are ``model``."""
    return {"description": description, "content": {"text/event-stream": {
        "schema": {"description": "the whole stream, as text"},
        "itemSchema": {
            "type": "object", "required": ["data"],
            "description": f"one event: `data` is a {model.__name__} as JSON",
            "properties": {
                "data": {"type": "string", "contentMediaType": "application/json",
                         "contentSchema": schema_ref(model)},
                "event": {"type": "string", "description": "`error` for an error "
                          "(`data` is then an error body), else absent"},
                "id": {"type": "string"},
                "retry": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}}}}}}


def schema_ref(model: type[BaseModel]) -> dict[str, str]:
    """A reference to ``model``'s schema, which the document will hold (for bodies that
    a route parses itself, and for stream events)."""
    _EXTRA_MODELS[model.__name__] = model
    return {"$ref": REF.format(model=model.__name__)}


INT64_MAX = 2**63 - 1
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _integer_bounds(node: Any) -> None:
    """Integer bounds back to integers. FastAPI's schema model keeps every bound as a
    float, so ``le=2**63 - 1`` (the seeds) would be documented as 9.223372036854776e18,
    which is 2**63: one more than the server accepts. Every integer of this API fits in
    int64, so a bound at or past 2**63 is int64's maximum."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for key in _BOUNDS:
                v = node.get(key)
                if isinstance(v, float) and v.is_integer():
                    node[key] = max(-INT64_MAX - 1, min(int(v), INT64_MAX))
        for child in node.values():
            _integer_bounds(child)
    elif isinstance(node, list):
        for child in node:
            _integer_bounds(child)


def operation_id(route: APIRoute) -> str:
    """The operation id of a route that sets none: its function's name."""
    return route.name


def _apply_policies(doc: dict[str, Any], settings: Settings, policies: PolicyMap) -> None:
    """What each route's declared policy says about its operations: the bearer scheme on
    those that need the key (the request layer's rule), and no 422 on a protocol that
    answers a validation error with another status (OpenAI's 400)."""
    paths = doc.get("paths", {})
    for route, resolved in policies.routes:
        item = paths.get(getattr(route, "path_format", None))
        if not isinstance(route, APIRoute) or item is None:
            continue
        policy = resolved.policy
        probe = {"error": {"code": "validation_error", "message": ""}}
        for method in route.methods:
            op = item.get(method.lower())
            if op is None:
                continue
            if policy.protocol.shape(422, probe)[0] != 422:
                op.get("responses", {}).pop("422", None)
            if settings.api_key is not None and policy.needs_key(
                    method, settings.protect_ops, settings.admin_key is not None):
                op["security"] = [{BEARER: []}]


def install_openapi(app: FastAPI, settings: Settings, policies: PolicyMap) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        with warnings.catch_warnings():
            # a GET+HEAD route has one id for both; the HEAD twin is renamed below
            warnings.filterwarnings("ignore", message="Duplicate Operation ID")
            doc = get_openapi(title=app.title, version=app.version,
                              description=app.description, routes=app.routes,
                              tags=app.openapi_tags, servers=app.servers)
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for name, model in _EXTRA_MODELS.items():
            if name not in schemas:
                schema = model.model_json_schema(ref_template=REF)
                for sub, sub_schema in schema.pop("$defs", {}).items():
                    schemas.setdefault(sub, sub_schema)  # FastAPI's, if it has one
                schemas[name] = schema
        _integer_bounds(doc)
        for item in doc.get("paths", {}).values():
            head = item.get("head")
            if head is not None and "get" in item:
                head["operationId"] = item["get"]["operationId"] + "_head"
        if settings.api_key is not None:
            doc["components"].setdefault("securitySchemes", {})[BEARER] = {
                "type": "http", "scheme": "bearer",
                "description": "SEQSERVE_API_KEY, sent as `Authorization: Bearer <key>`"}
        _apply_policies(doc, settings, policies)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
