"""Bits shared by the inference routes: documented error responses, timing headers."""

from __future__ import annotations

from typing import Any

from app.schemas import ErrorResponse

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
