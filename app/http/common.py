"""Bits shared by the inference routes: reading the body, documented error responses,
timing headers."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from app.http.openapi import schema_ref
from app.protocols.native.schemas import ErrorResponse

M = TypeVar("M", bound=BaseModel)


async def parse_body(request: Request, model: type[M]) -> M:
    """The request's body as ``model``, decoded and validated in one pydantic-core call
    (``model_validate_json`` on the raw bytes: no intermediate Python objects, and no
    FastAPI body machinery). Errors go to the one validation handler (app/http/errors.py):
    400 ``invalid_json`` for a body that is not JSON (malformed, not UTF-8, nested too
    deep), 422 naming each invalid field otherwise (an empty body: the body itself)."""
    body = await request.body()
    if not body:  # as FastAPI answers a missing body: the body is a required field
        raise RequestValidationError([{"type": "missing", "loc": ("body",),
                                       "msg": "Field required", "input": None}])
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if not any(e["type"] == "json_invalid" for e in errors):
            raise RequestValidationError(errors) from None
    # Not JSON to pydantic-core. Its parser is stricter than the JSON grammar in one
    # place, an escaped lone surrogate ("\ud800"), but the body-limit middleware refuses
    # those before any route reads the body (app/http/body.py lone_surrogate_field); a
    # body that fails here is malformed, and Python's json module words the 400. Only
    # bodies that failed above pay for this second parse.
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError) as e:  # malformed, not UTF-8, nested too deep
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body",),
                                       "msg": "JSON decode error",
                                       "ctx": {"error": str(e) or type(e).__name__}}]) from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a body that the route reads with ``parse_body``."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": schema_ref(model)}}}}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "body is not JSON (malformed, not UTF-8, "
          "too deeply nested) or Content-Length is not a number"},
    401: {"model": ErrorResponse, "description": "API key missing or wrong"},
    404: {"model": ErrorResponse, "description": "no loaded model of that name"},
    413: {"model": ErrorResponse, "description": "body over SEQSERVE_MAX_BODY_BYTES"},
    415: {"model": ErrorResponse, "description": "Content-Type is not application/json"},
    422: {"model": ErrorResponse, "description": "invalid input: which field and why"},
    500: {"model": ErrorResponse, "description": "inference failed (error_id in the body)"},
    503: {"model": ErrorResponse, "description": "overloaded or shutting down (Retry-After)"},
    504: {"model": ErrorResponse, "description": "no answer in time"},
}


def timing_headers(queue_s: float, inference_s: float, **extra_ms: float) -> dict[str, str]:
    h = {"X-Queue-Time-Ms": f"{queue_s * 1000:.3f}",
         "X-Inference-Time-Ms": f"{inference_s * 1000:.3f}"}
    parts = [f"queue;dur={queue_s * 1000:.3f}", f"inference;dur={inference_s * 1000:.3f}"]
    for k, v in extra_ms.items():
        name = k.replace("_", "-")
        h["X-" + "-".join(w.capitalize() for w in name.split("-")) + "-Ms"] = f"{v:.3f}"
        parts.append(f"{name};dur={v:.3f}")
    h["Server-Timing"] = ", ".join(parts)
    return h
