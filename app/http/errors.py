"""The one JSON error shape, and the mapping of every failure onto it.

    {"error": {"code": "validation_error", "message": "texts: at most 64 items",
               "status": 422, "request_id": "...", "details": [...]}}

Every error body of the service is built here (``shaped_error``), in the shape of the
protocol that the request's route declared: this one for the native, operations and
web routes, OpenAI's and the Open Inference Protocol's for theirs.

Client mistakes are logged at INFO without a traceback; only server faults are
logged at ERROR, with an ``error_id`` that is also returned to the caller. An
unhandled exception (a bug) is answered 500 by the request layer
(app/http/layer.py), which sits inside Starlette's own error layer: a handler for
``Exception`` registered here would never be reached, so there is none.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.engine.errors import (
    ClientGone,
    DeadlineExceeded,
    EngineError,
    EngineStopped,
    ModelFailure,
    Overloaded,
)
from app.http.policy import current_protocol
from app.ops.logs import note_request, printable, request_id_var

log = logging.getLogger("seqserve.errors")


class ApiError(Exception):
    """An error with an HTTP status, a stable code and a message for the caller."""

    def __init__(self, status: int, code: str, message: str, *,
                 details: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details, self.headers = details, headers
        self.cause: EngineError | None = None  # the engine's error it stands for


# The engine's domain errors (app/engine/errors.py) as HTTP answers: (status, code).
# Retry-After comes from the error's own ``retry_after_s``; a ModelFailure's body also
# carries its ``error_id``. The one place where an engine error meets a status code.
ENGINE_ERRORS: dict[type[EngineError], tuple[int, str]] = {
    Overloaded: (503, "overloaded"),
    EngineStopped: (503, "engine_stopped"),
    ModelFailure: (500, "inference_error"),
    DeadlineExceeded: (504, "timeout"),
    ClientGone: (499, "client_closed_request"),  # nginx's 499: nobody reads it
}


def api_error(exc: ApiError | EngineError) -> ApiError:
    """``exc`` as an ``ApiError``: an engine error through ``ENGINE_ERRORS``."""
    if isinstance(exc, ApiError):
        return exc
    status, code = next(ENGINE_ERRORS[t] for t in type(exc).__mro__ if t in ENGINE_ERRORS)
    headers = None if exc.retry_after_s is None else {"Retry-After": str(exc.retry_after_s)}
    out = ApiError(status, code, exc.message, headers=headers)
    out.cause = exc
    return out


def invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "validation_error", f"{field}: {message}",
                    details=[{"field": field, "message": message}])


def error_body(status: int, code: str, message: str, details: Any = None,
               **extra: Any) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message, "status": status,
                           "request_id": request_id_var.get()}
    if details:
        err["details"] = details
    err.update(extra)
    return {"error": err}


def shaped_error(status: int, code: str, message: str, details: Any = None,
                 **extra: Any) -> tuple[int, dict[str, Any]]:
    """The status and body of an error as the request's protocol writes them: the
    protocol its route declared (app.main.ROUTES; OpenAI's and V2's shapes are in
    app/protocols/openai/errors.py and app/protocols/v2/errors.py)."""
    return current_protocol().shape(status, error_body(status, code, message, details, **extra))


def error_response(status: int, code: str, message: str, details: Any = None,
                   headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    status, body = shaped_error(status, code, message, details, **extra)
    return JSONResponse(body, status_code=status, headers=headers)


def _field(loc: tuple | list) -> str:
    # field names can come from the client (an unknown key): escaped and capped
    parts = [printable(p, 64) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


# a validation error names at most this many problems (and says how many there were):
# the answer and its cost stay small whatever the body holds
MAX_ERROR_DETAILS = 20


def _describe_validation(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]], int]:
    details = []
    errors = exc.errors()
    for e in errors[:MAX_ERROR_DETAILS]:
        field = _field(e.get("loc", ()))
        typ = e.get("type", "")
        msg = str(e.get("msg", "invalid"))
        if typ == "json_invalid":
            field, msg = "body", "invalid JSON: " + str(e.get("ctx", {}).get("error", msg))
        elif typ == "extra_forbidden":
            msg = "unknown field (not part of this endpoint's schema)"
        elif typ == "missing":
            msg = "field required"
        elif typ == "value_error":  # raised by our own validators: drop pydantic's prefix
            msg = msg.removeprefix("Value error, ")
        details.append({"field": field, "message": msg, "type": typ})
    first = details[0] if details else {"field": "body", "message": "invalid request"}
    summary = f"{first['field']}: {first['message']}"
    if len(errors) > 1:
        summary += f" (and {len(errors) - 1} more)"
    return summary, details, len(errors)


def api_error_response(method: str, path: str, exc: ApiError) -> JSONResponse:
    """An ``ApiError`` as a response, logged: server faults at ERROR, the rest at INFO.

    A model failure (``ModelFailure``, ``EngineStopped``) was logged once, at ERROR,
    by the loop that met it, with its error id; each request it failed only adds the
    error id to its own completion line, so one failure is one ERROR line."""
    cause = exc.cause
    extra = {"error_id": cause.error_id} if isinstance(cause, ModelFailure) else {}
    if isinstance(cause, ModelFailure | EngineStopped):
        note_request(error_id=extra.get("error_id"), reason=exc.code)
    elif exc.status >= 500 and not isinstance(cause, Overloaded):
        log.error("%s: %s", exc.code, exc.message)
    else:
        log.info("%s %s -> %d %s", method, path, exc.status, exc.message)
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers, **extra)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return api_error_response(request.method, printable(request.url.path), exc)

    @app.exception_handler(EngineError)
    async def _engine_error(request: Request, exc: EngineError) -> JSONResponse:
        return api_error_response(request.method, printable(request.url.path), api_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        summary, details, total = _describe_validation(exc)
        extra = {"details_total": total} if total > len(details) else {}
        if details and all(d["type"] == "json_invalid" for d in details):
            # the body is not JSON at all: same status as other unparseable bodies
            log.info("%s %s -> 400 %s", request.method, printable(request.url.path), summary)
            return error_response(400, "invalid_json", summary, details)
        log.info("%s %s -> 422 %s", request.method, printable(request.url.path), summary)
        return error_response(422, "validation_error", summary, details, **extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "bad_request", 401: "unauthorized", 404: "not_found",
                405: "method_not_allowed", 413: "payload_too_large",
                415: "unsupported_media_type"}.get(exc.status_code, "http_error")
        msg = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 400 and "parsing the body" in msg:
            code = "invalid_json"
            msg = "body: not parseable as JSON (malformed, too deeply nested, or not UTF-8)"
        log.info("%s %s -> %d %s", request.method, printable(request.url.path), exc.status_code, msg)
        return error_response(exc.status_code, code, msg, headers=getattr(exc, "headers", None))
