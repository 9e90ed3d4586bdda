"""Errors in each protocol's own shape on the OpenAI-compatible and Open Inference
Protocol (KServe V2 / Triton) routes.

Every error of the service is made once, in the one shape of app/http/errors.py, by the
same code (schema validation, limits, API key, overload, timeouts, body size and
content type in the middleware), so the status codes are the same on every route.
This pure-ASGI layer, just outside the body-limit middleware, only rewrites the
body of an error answer on these paths:

- every path under ``/v1/`` (completions, chat completions, models, and a path that
  is no route at all): OpenAI's ``{"error": {"message", "type", "param", "code"}}``
  (``code`` is this API's code, ``param`` the field at fault), which OpenAI's client
  libraries read; and a validation error is 400 there, as OpenAI answers it (422
  elsewhere in this API), so OpenAI's clients raise ``BadRequestError``;
- the ``/v2`` routes: the protocol's ``{"error": "<message>"}``.

It also lets an inference request of the Open Inference Protocol through without a
Content-Type, or with ``application/octet-stream``: Triton's clients send none (or
that one with the binary tensor extension), and the protocol defines the body (JSON,
then binary tensor data if ``Inference-Header-Content-Length`` says so). Only that
path; the body size limit still applies.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http.errors import ApiError

_V2_INFER = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$")
_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error",
                 404: "invalid_request_error", 429: "rate_limit_error"}


# The V2 paths of the protocol's routes (any model name), not the whole prefix: a path
# that is no route at all (/v2/nothing) is this API's 404, in its own shape. Under /v1/
# everything is OpenAI's, the 404 of a path that is no route included.
_OPENAI_PATHS = re.compile(r"^/v1/")
_V2_PATHS = re.compile(r"^/v2(/health/(live|ready)|/repository/index|/models/[^/]+"
                       r"(/versions/[^/]+)?(/ready|/infer)?)?$")


def protocol_of(path: str) -> str | None:
    if _OPENAI_PATHS.match(path):
        return "openai"
    if _V2_PATHS.match(path):
        return "v2"
    return None


def openai_error(status: int, error: dict) -> dict:
    """This API's error object as OpenAI's."""
    details = error.get("details") or []
    param = details[0].get("field") if details and isinstance(details[0], dict) else None
    typ = _OPENAI_TYPES.get(status) or ("server_error" if status >= 500
                                        else "invalid_request_error")
    return {"error": {"message": error.get("message", ""), "type": typ,
                      "param": None if param == "body" else param, "code": error.get("code")}}


def openai_status(status: int, body: bytes) -> int:
    """OpenAI answers a request it cannot validate with 400, never 422: a validation
    error (this API's 422 ``validation_error``) is 400; other statuses stay (a failed
    admin reload's 422 ``reload_failed`` is not a malformed request)."""
    if status != 422:
        return status
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return status
    return 400 if code == "validation_error" else status


def reshape(protocol: str, status: int, body: bytes) -> bytes | None:
    """The error body in ``protocol``'s shape, or None to leave it as it is."""
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(error, dict) or "message" not in error:
        return None  # already reshaped by the route (or not one of ours)
    if protocol == "openai":
        return json.dumps(openai_error(status, error)).encode()
    return json.dumps({"error": error["message"]}).encode()


class ProtocolErrorMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        protocol = protocol_of(scope["path"]) if scope["type"] == "http" else None
        if protocol is None:
            await self.app(scope, receive, send)
            return
        if protocol == "v2" and scope["method"] == "POST" and _V2_INFER.match(scope["path"]):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            ctype = dict(scope["headers"]).get(b"content-type", b"")
            if ctype.split(b";")[0].strip().lower() in (b"", b"application/octet-stream"):
                ctype = b"application/json"
            scope = {**scope, "headers": [*headers, (b"content-type", ctype)]}

        start: Message | None = None
        chunks: list[bytes] = []

        async def send_reshaped(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                ctype = dict(message.get("headers", [])).get(b"content-type", b"")
                if message["status"] >= 400 and ctype.startswith(b"application/json"):
                    start = message  # held until the whole (small) error body is here
                    return
            elif message["type"] == "http.response.body" and start is not None:
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = b"".join(chunks)
                if protocol == "openai":
                    start = {**start, "status": openai_status(start["status"], body)}
                new = reshape(protocol, start["status"], body)
                if new is not None:
                    body = new
                headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
                await send({**start, "headers": [*headers,
                                                 (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return
            await send(message)

        await self.app(scope, receive, send_reshaped)


@contextmanager
def fields_renamed(names: dict[str, str]) -> Iterator[None]:
    """Re-raise the validation errors of the shared checks (app/protocols/native/limits.py) with
    this protocol's field names: ``max_new_chars`` is ``max_tokens`` to an OpenAI
    client, ``texts.3`` is element 3 of the input tensor ``text`` to a V2 client."""
    try:
        yield
    except ApiError as exc:
        if not exc.details:
            raise
        old = str(exc.details[0].get("field", ""))
        head, dot, rest = old.partition(".")
        if head not in names:
            raise
        new = names[head] + dot + rest
        message = new + exc.message.removeprefix(old) if exc.message.startswith(old) else exc.message
        raise ApiError(exc.status, exc.code, message, headers=exc.headers,
                       details=[{**exc.details[0], "field": new}, *exc.details[1:]]) from None
