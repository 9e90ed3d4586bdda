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
50 MB body is never held in memory. A body with absurdly many object keys or arrays
(``structure_problem``) gets its 422 here, before a parser and a validator build one
object and one error per key: 100,000 unknown keys once cost 0.5 s and a 10 MB answer.
The body it read is replayed to the app.
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

from app.config import Settings
from app.deps import api_key_ok
from app.http.errors import error_body
from app.ops import metrics
from app.ops.logs import printable, request_id_var, request_info_var

log = logging.getLogger("seqserve.http")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# the request metrics' ``method`` label: any other method a client invents is "other",
# so clients cannot grow the label set (paths are already route templates or "unmatched")
METRIC_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


async def send_error(send: Send, status: int, code: str, message: str,
                     headers: list[tuple[bytes, bytes]] | None = None, **extra: str) -> None:
    body = json.dumps(error_body(status, code, message, **extra)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


# No request schema comes near these: a body past them is hostile or broken
MAX_BODY_KEYS = 4096
MAX_BODY_CONTAINERS = 16_384  # arrays and objects
PREFIX_BYTES = 65_536
# a JSON string (its escapes included), written so that a run of plain characters is
# one step of the matcher: 4 ms a megabyte of text, 20 ms for 100,000 short keys
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def _keys_at_least(body: bytes) -> int:
    """A lower bound of the object keys of a JSON text (see ``structure_problem``)."""
    tight = body.translate(None, b" \t\r\n")
    return tight.count(b'":') - tight.count(b'\\":')


def structure_problem(body: bytes) -> str | None:
    """Why a JSON body has too many keys or containers to parse, or None.

    Outside its strings, a JSON text has one ':' per key and one '[' or '{' per
    container, so counted over the whole body (strings included) these are upper
    bounds, and most bodies stop there. A lower bound of the keys is as cheap: with
    the blanks taken out, each key ends in '":', and inside a string that pair is
    always escaped ('\\":'); a prefix of the body gives a lower bound too. So a body of
    keys from its start is refused from its first 64 kB (what a hostile client sends
    costs the server little), and only a body over a limit whose keys hide further in
    has its strings taken out and the counts made again, exactly."""
    if _keys_at_least(body[:PREFIX_BYTES]) > MAX_BODY_KEYS:
        return f"too many object keys (over {MAX_BODY_KEYS})"
    if body.count(b":") <= MAX_BODY_KEYS and (
            body.count(b"[") + body.count(b"{") <= MAX_BODY_CONTAINERS):
        return None
    if len(body) > PREFIX_BYTES and _keys_at_least(body) > MAX_BODY_KEYS:
        return f"too many object keys (over {MAX_BODY_KEYS})"
    bare = _JSON_STRING.sub(b"", body)
    keys = bare.count(b":")
    containers = bare.count(b"[") + bare.count(b"{")
    if keys > MAX_BODY_KEYS:
        return f"too many object keys ({keys}; at most {MAX_BODY_KEYS})"
    if containers > MAX_BODY_CONTAINERS:
        return f"too many arrays and objects ({containers}; at most {MAX_BODY_CONTAINERS})"
    return None


# a \u escape of a surrogate (D800-DFFF): a pair of them is one character, a lone one
# is no character at all
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def lone_surrogate_field(body: bytes) -> str | None:
    """The first field (``texts.2``) whose string holds a lone surrogate, or None.
    JSON may spell one (``"\\ud800"``), Python's json module reads it, and the text is
    then no valid Unicode: it could not be written back as UTF-8, in an answer or a
    log line. Only a body with such an escape is parsed here (paired surrogates, an
    escaped emoji, pass)."""
    if not _SURROGATE_ESCAPE.search(body):
        return None
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None  # not JSON: the route's parser answers that

    def walk(v: object, path: tuple) -> str | None:
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return ".".join(map(str, path)) or "body"
            return None
        items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
        for k, x in items:
            if isinstance(k, str) and walk(k, path) is not None:  # a key itself
                return ".".join(map(str, path)) or "body"
            found = walk(x, (*path, printable(str(k), 64)))
            if found is not None:
                return found
        return None

    return walk(doc, ())


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
            method = scope["method"] if scope["method"] in METRIC_METHODS else "other"
            key = (path, method, status)
            children = self._children.get(key)
            if children is None:  # the labelled series, looked up once per combination
                labels = (path, method, str(status))
                children = (metrics.REQUEST_DURATION.labels(*labels),
                            metrics.REQUESTS.labels(*labels))
                if len(self._children) < 4096:  # paths are route templates: few
                    self._children[key] = children
            children[0].observe(dt)
            children[1].inc()
            if (path not in ("/metrics", "/healthz", "/health", "/readyz")
                    and log.isEnabledFor(logging.INFO)):
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


class HeadMiddleware:
    """HEAD on every GET route (RFC 9110: HEAD is GET without the body). FastAPI's
    routes answer only the methods they declare, so a HEAD reaches the app as a GET and
    the body of its answer is dropped here (its headers, Content-Length included, go
    out as they are)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        ended = False

        async def send_head(message: Message) -> None:
            nonlocal ended
            if message["type"] != "http.response.body":
                await send(message)
            elif not message.get("more_body", False) and not ended:
                ended = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self.app({**scope, "method": "GET"}, receive, send_head)


def framing_problem(scope: Scope) -> tuple[int, str] | None:
    """(status, why) for a request whose body framing is not plainly one of HTTP/1.1's
    two (RFC 9112 6): a Transfer-Encoding other than a lone ``chunked`` (``gzip,
    chunked`` was read as chunked with the gzip ignored: 501), Transfer-Encoding on
    HTTP/1.0, or a length that is not all digits (``+5``, `` 5 ``, ``1_0``: Python's
    ``int`` takes each). Such requests are where a proxy and this server may disagree
    on where a request ends (request smuggling). None when the framing is fine."""
    codings: list[bytes] = []
    lengths: list[bytes] = []
    for k, v in scope.get("headers", []):
        if k == b"transfer-encoding":
            codings += [c.strip().lower() for c in v.split(b",")]
        elif k in (b"content-length", b"inference-header-content-length"):
            lengths.append(v)
    if codings:
        if scope.get("http_version") == "1.0":
            return 400, "Transfer-Encoding is not allowed on HTTP/1.0"
        if codings[-1] != b"chunked":
            return 400, "Transfer-Encoding: chunked must be the last coding"
        if len(codings) > 1:
            return 501, "Transfer-Encoding: only chunked is supported"
    for v in lengths:
        if not (v.isdigit() and v.isascii()):
            return 400, "Content-Length and Inference-Header-Content-Length must be digits"
    return None


class BodyLimitMiddleware:
    """Body size and content type. An oversized body is read and thrown away (in
    constant memory, up to ``DRAIN_FACTOR`` times the limit) before the 413 goes out:
    a client that does not wait for ``100 Continue`` (Python's urllib, many SDKs) is
    still sending, and closing the socket under it would give it a connection reset
    instead of the answer. Past that bound, or once the client pauses for
    ``DRAIN_STALL_S`` (it waits for the answer), the 413 goes out with
    ``Connection: close``.

    A body refused for its structure (``structure_problem``: thousands of keys) costs
    the server about a millisecond, so a client looping on such bodies would get
    hundreds of answers a second and take the cores from everyone else. A client (by
    address) that sends another one within ``REPEAT_WINDOW_S`` of its last gets its
    answer ``TARPIT_S`` later: a timer, no work, and the body is let go first. An
    ordinary request never comes near it."""

    DRAIN_FACTOR = 16
    DRAIN_STALL_S = 0.5
    REPEAT_WINDOW_S = 1.0
    TARPIT_S = 0.2

    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app = app
        self.limit = max_body_bytes
        self._refused_at: dict[str, float] = {}  # client address -> last structure refusal

    def _repeat_offender(self, scope: Scope) -> bool:
        client = scope.get("client")
        host = client[0] if client else ""
        now = time.monotonic()
        last = self._refused_at.get(host)
        if len(self._refused_at) >= 10_000:  # a bound, not a policy
            self._refused_at.clear()
        self._refused_at[host] = now
        return last is not None and now - last < self.REPEAT_WINDOW_S

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
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        framing = framing_problem(scope)
        if framing is not None:
            status, message = framing
            metrics.REJECTED.labels("bad_framing").inc()
            log.info("%s %s -> %d %s", scope["method"], printable(scope["path"]), status, message)
            await send_error(send, status, "bad_request" if status == 400 else "not_implemented",
                             message, headers=[(b"connection", b"close")])
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared is not None:
            n_declared = int(declared)  # (digits only: framing_problem)
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
        body = b"".join(chunks)
        head = body
        # (a V2 request's binary tensors follow its JSON header: only the header counts)
        binary_at = headers.get(b"inference-header-content-length", b"")
        if binary_at.isdigit():
            head = body[:int(binary_at)]
        problem = structure_problem(head)
        if problem is not None:
            metrics.REJECTED.labels("body_structure").inc()
            log.info("%s %s -> 422 body: %s", scope["method"], printable(scope["path"]), problem)
            if self._repeat_offender(scope):
                del body, head, chunks  # nothing of it is kept while it waits
                await asyncio.sleep(self.TARPIT_S)
            await send_error(send, 422, "validation_error", f"body: {problem}",
                             details=[{"field": "body", "message": problem,
                                       "type": "too_complex"}])
            return
        field = lone_surrogate_field(head)
        if field is not None:
            msg = "not valid Unicode text (a lone surrogate escape such as \\ud800)"
            log.info("%s %s -> 422 %s: %s", scope["method"], printable(scope["path"]), field, msg)
            await send_error(send, 422, "validation_error", f"{field}: {msg}",
                             details=[{"field": field, "message": msg, "type": "string_unicode"}])
            return
        await self.app(scope, replay(body, receive), send)


# GET routes that stay open whatever SEQSERVE_PROTECT_OPS says: probes must work
# without a key, and the web page's own files hold no data (the page asks for the key).
_ALWAYS_OPEN = frozenset({"/healthz", "/health", "/readyz", "/v2/health/live",
                          "/v2/health/ready"})
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


def is_reload(path: str) -> bool:
    """The admin route, which checks the admin key itself (``require_admin``): with an
    admin key set, a reload carries that key, not the API key."""
    return path.startswith("/v1/models/") and path.endswith("/reload")


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
                and needs_key(scope["method"], scope["path"], s.protect_ops)
                and not (s.admin_key is not None and is_reload(scope["path"]))):
            auth = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            if not api_key_ok(s, auth.decode("latin-1")):
                metrics.REJECTED.labels("unauthorized").inc()
                await send_error(send, 401, "unauthorized", "missing or wrong API key: send "
                                 "'Authorization: Bearer <key>'",
                                 headers=[(b"www-authenticate", b"Bearer")])
                return
        await self.app(scope, receive, send)
