"""Errors in the Open Inference Protocol's shape (KServe V2 / Triton), for the routes
that declare it (app.main.ROUTES): ``{"error": "<message>"}``, with this API's status
codes."""

from __future__ import annotations

from typing import Any

from app.http.policy import Protocol


def v2_shape(status: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return status, {"error": body["error"]["message"]}


V2 = Protocol("v2", v2_shape)
