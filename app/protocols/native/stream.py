"""The events of a POST /generate stream, for the OpenAPI schema (``itemSchema`` of
the text/event-stream responses, see app/http/openapi.py).

The routes build these events as plain dicts (app/protocols/native/generate.py); the models
here describe them so that clients know each ``data:`` payload without reading code.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class GenerateStreamEvent(BaseModel):
    """One ``data:`` payload of a /generate stream. Text events carry ``text`` and
    ``finish_reason: null``; the last event has ``text: ""``, the finish reason and the
    remaining fields. An error after the stream started is sent as ``event: error``
    with the usual error body ({"error": {...}}) instead."""

    text: str = Field(..., description="the next characters of the continuation")
    finish_reason: Literal["length", "stop"] | None = Field(
        ..., description="null until the last event")
    generated_chars: int | None = Field(None, description="last event only")
    seed: int | None = Field(None, description="last event only: the seed used")
    prompt_chars: int | None = Field(None, description="last event only")
    unknown_prompt_chars: int | None = Field(None, description="last event only")
    model: str | None = Field(None, description="last event only")
    model_version: str | None = Field(None, description="last event only")
    queue_time_ms: float | None = Field(None, description="last event only")
    time_to_first_char_ms: float | None = Field(None, description="last event only")
    time_per_char_ms: float | None = Field(None, description="last event only")
