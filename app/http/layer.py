"""The service's one ASGI layer of its own, outermost: everything a request meets before
a route, and the record of its answer.

In order, for each HTTP request:

1. the route is resolved once (``PolicyMap``), and with it the policy its router
   declared in ``app.main.ROUTES``: the protocol (the shape of every error body the
   request may get, from here or from the app) and the auth class;
2. request context: the request id (``X-Request-ID`` accepted when sane, else
   generated; echoed and logged), the in-flight gauge;
3. HEAD is answered as GET without the body (RFC 9110), on every GET route;
4. gzip, through Starlette's GZipMiddleware, for the requests whose
   ``Accept-Encoding`` admits it (app/http/encoding.py), so the logged bytes are the
   bytes sent; then the request's server span when tracing is on (app/ops/tracing.py),
   and Starlette's CORS layer when SEQSERVE_CORS_ORIGINS is set;
5. the API key, before anything reads the body: a request without it gets its 401
   whatever it sends, and costs no parsing (constant-time comparison; never logged);
6. framing, body size, media type and structure (app/http/body.py); the body read is
   replayed to the app.

When the answer is done: the request-duration histogram and counter by route
template, method and status (timed from arrival to the last byte), and one access log
line. An unhandled exception (a bug) becomes a 500 here, with the request id and an
``error_id`` that is logged with the traceback, once.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable

from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.deps import api_key_ok
from app.http.body import BodyGuard, framing_problem, replay
from app.http.encoding import accepts_gzip, gzip
from app.http.errors import shaped_error
from app.http.policy import Policy, PolicyMap, policy_var
from app.ops import metrics
from app.ops.logs import printable, request_id_var, request_info_var

log = logging.getLogger("seqserve.http")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# the request metrics' ``method`` label: any other method a client invents is "other",
# so clients cannot grow the label set (paths are already route templates or "unmatched")
METRIC_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# probes and scrapes: counted, not logged
_QUIET = frozenset({"/metrics", "/healthz", "/health", "/readyz"})
_JSON = b"application/json"


class RequestIds:
    """Request ids, 32 hex digits from the OS's random source (as random as
    ``uuid4().hex``), drawn ``batch`` at a time. ``os.urandom`` releases the GIL around
    its system call; on the event loop under load, with the classifier's worker threads
    taking the GIL between their ONNX Runtime calls, getting it back took 60-400 µs of
    wall time per call (a few µs alone), and the loop stood still meanwhile. One draw
    per ``batch`` requests pays that once."""

    def __init__(self, batch: int = 256):
        self.batch = batch
        self._pool: list[str] = []

    def next(self) -> str:
        if not self._pool:
            raw = os.urandom(16 * self.batch).hex()
            self._pool = [raw[i:i + 32] for i in range(0, len(raw), 32)]
        return self._pool.pop()


async def send_error(send: Send, status: int, code: str, message: str,
                     headers: list[tuple[bytes, bytes]] | None = None, **extra: object) -> None:
    """An error answered by this layer, in the request's protocol shape."""
    status, body = shaped_error(status, code, message, **extra)
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", _JSON),
                            (b"content-length", str(len(data)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


def exception_handler(handlers: dict, exc: Exception) -> Callable | None:
    """The app's handler for ``exc``, looked up as Starlette's ExceptionMiddleware
    does: by status code for an HTTPException, then by the exception's classes, most
    specific first. (500 and ``Exception`` are not looked up: Starlette gives them to
    its outermost error middleware, and this layer answers an unhandled error itself.)"""
    if isinstance(exc, HTTPException) and exc.status_code in handlers:
        return handlers[exc.status_code]
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None


class RequestLayer:
    def __init__(self, app: ASGIApp, settings: Settings, policies: PolicyMap,
                 cors_origins: list[str] | None = None,
                 traced: Callable[[ASGIApp], ASGIApp] | None = None):
        self.app = app
        self.settings = settings
        self.policies = policies
        self.body = BodyGuard(settings.max_body_bytes, send_error)
        inner: ASGIApp = self._guarded
        if cors_origins:
            inner = CORSMiddleware(inner, allow_origins=cors_origins,
                                   allow_methods=["GET", "POST"], allow_headers=["*"],
                                   expose_headers=["X-Request-ID", "Server-Timing",
                                                   "traceresponse"])
        if traced is not None:  # the request's server span (SEQSERVE_OTEL)
            inner = traced(inner)
        self.inner = inner
        self.gzipped = gzip(inner)
        self._children: dict[tuple, tuple] = {}
        self.ids = RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrived = time.perf_counter()
        scope.setdefault("state", {})["arrived"] = arrived
        method = scope["method"]
        head = method == "HEAD"
        if head:  # answered as GET, its body dropped
            scope = {**scope, "method": "GET"}
        resolved = self.policies.resolve(scope)
        scope["seqserve.policy"] = resolved.policy
        scope["seqserve.route"] = resolved.route
        policy_token = policy_var.set(resolved.policy)
        rid = ""
        for k, v in scope["headers"]:
            if k == b"x-request-id":
                rid = v.decode("latin-1")
                break
        if not _SAFE_ID.match(rid):
            rid = self.ids.next()
        token = request_id_var.set(rid)
        info: dict = {}  # filled in by the route (note_request): model, error_id
        info_token = request_info_var.set(info)
        status = 499  # the app returned without an answer: the client went away
        started = False
        ended = False
        sent = 0  # response body bytes, as they go out (compressed, when they are)
        metrics.IN_FLIGHT.inc()

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started, sent, ended
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode())]
            elif message["type"] == "http.response.body":
                if head:  # the headers (Content-Length included) go out as they are
                    if message.get("more_body", False) or ended:
                        return
                    ended = True
                    message = {"type": "http.response.body", "body": b"", "more_body": False}
                sent += len(message.get("body", b""))
            await send(message)

        app = self.inner if head or not accepts_gzip(scope) else self.gzipped
        try:
            await app(scope, receive, send_wrapper)
        except Exception as exc:
            # A bug, not a client's mistake: answered here (not by Starlette's outermost
            # handler) so the 500 carries the request id, and logged once, with an
            # error id that is also in the body.
            if started:
                raise  # headers are out; uvicorn closes the connection
            error_id = uuid.uuid4().hex[:12]
            log.error("unhandled error %s on %s %s", error_id, method,
                      printable(scope["path"]), exc_info=exc)
            await send_error(send_wrapper, 500, "internal_error",
                             f"internal error; quote error_id {error_id}", error_id=error_id)
        finally:
            metrics.IN_FLIGHT.dec()
            self._record(scope, method, resolved.template or "unmatched", status,
                         time.perf_counter() - arrived, sent, info)
            request_info_var.reset(info_token)
            request_id_var.reset(token)
            policy_var.reset(policy_token)

    def _record(self, scope: Scope, method: str, route: str, status: int, dt: float,
                sent: int, info: dict) -> None:
        """The request's metrics and its access log line."""
        label = method if method in METRIC_METHODS else "other"
        key = (route, label, status)
        children = self._children.get(key)
        if children is None:  # the labelled series, looked up once per combination
            labels = (route, label, str(status))
            children = (metrics.REQUEST_DURATION.labels(*labels),
                        metrics.REQUESTS.labels(*labels))
            if len(self._children) < 4096:  # routes are templates: few
                self._children[key] = children
        children[0].observe(dt)
        children[1].inc()
        if route not in _QUIET and log.isEnabledFor(logging.INFO):
            client = scope.get("client")
            # the fields of the JSON line (SEQSERVE_LOG_FORMAT=json); the text line
            # shows the message only
            log.info("%s %s %d %.1fms", method, printable(scope["path"]), status,
                     dt * 1000, extra={
                         "route": route, "method": method, "status": status,
                         "duration_ms": round(dt * 1000, 3), "bytes": sent,
                         "client": f"{client[0]}:{client[1]}" if client else None, **info})

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Key, framing and body: each refusal costs the app nothing."""
        policy: Policy = scope["seqserve.policy"]
        s = self.settings
        if s.api_key is not None and policy.needs_key(scope["method"], s.protect_ops,
                                                      s.admin_key is not None):
            auth = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            if not api_key_ok(s, auth.decode("latin-1")):
                metrics.REJECTED.labels("unauthorized").inc()
                await send_error(send, 401, "unauthorized", "missing or wrong API key: send "
                                 "'Authorization: Bearer <key>'",
                                 [(b"www-authenticate", b"Bearer")])
                return
        framing = framing_problem(scope)
        if framing is not None:
            status, message = framing
            metrics.REJECTED.labels("bad_framing").inc()
            log.info("%s %s -> %d %s", scope["method"], printable(scope["path"]), status, message)
            await send_error(send, status, "bad_request" if status == 400 else "not_implemented",
                             message, [(b"connection", b"close")])
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self._route(scope, receive, send)
            return
        body = await self.body.read(scope, receive, send, dict(scope["headers"]),
                                    policy.media_types)
        if body is not None:
            await self._route(scope, replay(body, receive), send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app's answer. A route whose endpoint needs nothing of FastAPI's request
        machinery (``direct_endpoint``, found with its policy) is called here, its
        errors answered by the app's own exception handlers, as FastAPI would; any
        other request goes through FastAPI."""
        route = scope["seqserve.route"]
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"], scope["endpoint"], scope["path_params"] = route, route.endpoint, {}
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request)
        except Exception as exc:
            handler = exception_handler(scope["app"].exception_handlers, exc)
            if handler is None:
                raise  # a bug: answered 500 by __call__
            response = (await handler(request, exc) if inspect.iscoroutinefunction(handler)
                        else await run_in_threadpool(handler, request, exc))
        if not isinstance(response, Response):
            raise TypeError(f"endpoint {route.endpoint.__qualname__} returned "
                            f"{type(response).__name__}, not a Response")
        await response(scope, receive, send)
