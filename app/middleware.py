"""Pure-ASGI middleware (no BaseHTTPMiddleware, so streams and disconnects pass through).

``RequestContextMiddleware`` (outermost): request id (``X-Request-ID`` accepted when
sane, else generated; echoed and logged), in-flight gauge, and the request-duration
histogram and counter by route template, method and status, timed from arrival to
the last byte of the response. An unhandled exception (a bug) becomes a 500 in the
error shape here, with the request id and an ``error_id`` that is logged with the
traceback, once.

``BodyLimitMiddleware``: for requests with a body, rejects a declared
``Content-Length`` over the limit at once (413), rejects non-JSON content types of a body
(415), and reads at most ``max_body_bytes + 1`` bytes before giving up (413), so a
50 MB body is never held in memory. The body it read is replayed to the app.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics
from app.config import Settings
from app.context import printable, request_id_var, request_info_var
from app.errors import error_body
from app.state import api_key_ok

log = logging.getLogger("seqserve.http")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


async def send_error(send: Send, status: int, code: str, message: str,
                     headers: list[tuple[bytes, bytes]] | None = None, **extra: str) -> None:
    body = json.dumps(error_body(status, code, message, **extra)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app ``body`` (already read) as one message, then
    passes on to the real ``receive`` (for the disconnect)."""
    replayed = False

    async def receive_again() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_again


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, known_paths: set[str] | frozenset[str] = frozenset()):
        self.app = app
        self.known_paths = known_paths
        self._children: dict[tuple, tuple] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrived = time.perf_counter()
        scope.setdefault("state", {})["arrived"] = arrived
        rid = ""
        for k, v in scope.get("headers", []):
            if k == b"x-request-id":
                rid = v.decode("latin-1")
                break
        if not _SAFE_ID.match(rid):
            rid = os.urandom(16).hex()  # as random as uuid4().hex, a third of the cost
        token = request_id_var.set(rid)
        info: dict = {}  # filled in by the route (note_request): model, error_id
        info_token = request_info_var.set(info)
        status = 499  # the app returned without an answer: the client went away
        started = False
        sent = 0  # response body bytes, as they go out (compressed, when they are)
        metrics.IN_FLIGHT.inc()

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started, sent
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            else:
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            # A bug, not a client's mistake: answered here (not by Starlette's outermost
            # handler) so the 500 carries the request id, and logged once, with an
            # error id that is also in the body.
            if started:
                raise  # headers are out; uvicorn closes the connection
            error_id = uuid.uuid4().hex[:12]
            log.error("unhandled error %s on %s %s", error_id, scope["method"],
                      printable(scope["path"]), exc_info=exc)
            await send_error(send_wrapper, 500, "internal_error",
                             f"internal error; quote error_id {error_id}", error_id=error_id)
        finally:
            metrics.IN_FLIGHT.dec()
            route = scope.get("route")
            path = getattr(route, "path", None) or (
                scope["path"] if scope["path"] in self.known_paths else "unmatched")
            dt = time.perf_counter() - arrived
            key = (path, scope["method"], status)
            children = self._children.get(key)
            if children is None:  # the labelled series, looked up once per combination
                labels = (path, scope["method"], str(status))
                children = (metrics.REQUEST_DURATION.labels(*labels),
                            metrics.REQUESTS.labels(*labels))
                if len(self._children) < 4096:  # paths are route templates: few
                    self._children[key] = children
            children[0].observe(dt)
            children[1].inc()
            if path not in ("/metrics", "/healthz", "/readyz") and log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                # the fields of the JSON line (SEQSERVE_LOG_FORMAT=json); the text line
                # shows the message only
                log.info("%s %s %d %.1fms", scope["method"], printable(scope["path"]), status,
                         dt * 1000, extra={
                             "route": path, "method": scope["method"], "status": status,
                             "duration_ms": round(dt * 1000, 3), "bytes": sent,
                             "client": f"{client[0]}:{client[1]}" if client else None, **info})
            request_info_var.reset(info_token)
            request_id_var.reset(token)


class BodyLimitMiddleware:
    """Body size and content type. An oversized body is read and thrown away (in
    constant memory, up to ``DRAIN_FACTOR`` times the limit) before the 413 goes out:
    a client that does not wait for ``100 Continue`` (Python's urllib, many SDKs) is
    still sending, and closing the socket under it would give it a connection reset
    instead of the answer. Past that bound, or once the client pauses for
    ``DRAIN_STALL_S`` (it waits for the answer), the 413 goes out with
    ``Connection: close``."""

    DRAIN_FACTOR = 16
    DRAIN_STALL_S = 0.5

    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app = app
        self.limit = max_body_bytes

    async def _too_large(self, receive: Receive, send: Send, received: int,
                         more_body: bool, declared: int | None) -> None:
        metrics.REJECTED.labels("body_too_large").inc()
        bound = self.limit * self.DRAIN_FACTOR
        size = received
        while more_body and size <= bound and (declared is None or declared <= bound):
            try:  # a client that stops sending waits for its answer: give it
                msg = await asyncio.wait_for(receive(), self.DRAIN_STALL_S)
            except TimeoutError:
                break
            if msg["type"] == "http.disconnect":
                return  # client gone: nothing to answer
            size += len(msg.get("body", b""))
            more_body = msg.get("more_body", False)
        what = f"{declared} bytes" if declared is not None else "over"
        await send_error(send, 413, "payload_too_large",
                         f"body: {what} is over the limit of {self.limit} bytes",
                         headers=[(b"connection", b"close")] if more_body else None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                n_declared = int(declared)
                if n_declared < 0:
                    raise ValueError
            except ValueError:
                await send_error(send, 400, "bad_request", "Content-Length is not a number")
                return
            if n_declared > self.limit:
                await self._too_large(receive, send, 0, n_declared > 0, n_declared)
                return
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        # a request without a body has no media type to check (``curl -X POST
        # .../reload``; urllib labels even an empty body form-encoded)
        bodiless = declared in (None, b"0") and b"transfer-encoding" not in headers
        if ctype != b"application/json" and not bodiless:
            metrics.REJECTED.labels("unsupported_media_type").inc()
            await send_error(send, 415, "unsupported_media_type",
                             "body: Content-Type must be application/json")
            return
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return  # client gone: nothing to answer
            chunk = msg.get("body", b"")
            size += len(chunk)
            more = msg.get("more_body", False)
            if size > self.limit:
                await self._too_large(receive, send, size, more, None)
                return
            chunks.append(chunk)
            if not more:
                break
        await self.app(scope, replay(b"".join(chunks), receive), send)


# GET routes that stay open whatever SEQSERVE_PROTECT_OPS says: probes must work
# without a key, and the web page's own files hold no data (the page asks for the key).
_ALWAYS_OPEN = frozenset({"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"})
# GET routes that SEQSERVE_PROTECT_OPS puts behind the key: metrics, model listings
# (versions, metrics), the schema and its docs pages.
_OPS_PREFIXES = ("/metrics", "/v1/", "/v2", "/docs", "/redoc", "/openapi.json")


def needs_key(method: str, path: str, protect_ops: bool) -> bool:
    """Whether a request must carry the API key (when one is configured): every
    POST (all inference), and with ``protect_ops`` the operations GETs too."""
    if method == "OPTIONS":
        return False  # CORS preflight: browsers send it without credentials
    if method not in ("GET", "HEAD"):
        return True
    if not protect_ops or path in _ALWAYS_OPEN:
        return False
    if path.startswith("/v2/models/") and path.endswith("/ready"):
        return False
    return path.startswith(_OPS_PREFIXES)


class ApiKeyMiddleware:
    """The API key, checked before anything reads or parses the body: a request
    without the key gets its 401 whatever it sends (a malformed or oversized body
    included), and costs no parsing. Constant-time comparison (``api_key_ok``); the key
    is never logged."""

    def __init__(self, app: ASGIApp, settings: Settings):
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        s = self.settings
        if (scope["type"] == "http" and s.api_key is not None
                and needs_key(scope["method"], scope["path"], s.protect_ops)):
            auth = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            if not api_key_ok(s, auth.decode("latin-1")):
                metrics.REJECTED.labels("unauthorized").inc()
                await send_error(send, 401, "unauthorized", "missing or wrong API key: send "
                                 "'Authorization: Bearer <key>'",
                                 headers=[(b"www-authenticate", b"Bearer")])
                return
        await self.app(scope, receive, send)
