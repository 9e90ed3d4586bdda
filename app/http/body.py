"""The request body, checked before any route reads it (app/http/layer.py calls
``BodyGuard.read``).

For requests with a body: a declared ``Content-Length`` over the limit is refused at
once (413), a media type the route does not take is refused (415), and at most
``max_body_bytes + 1`` bytes are read before giving up (413), so a 50 MB body is never
held in memory. A body with absurdly many object keys or arrays (``structure_problem``)
gets its 422 here, before a parser and a validator build one object and one error per
key: 100,000 unknown keys once cost 0.5 s and a 10 MB answer. A string holding a lone
surrogate escape gets its 422 here too (``lone_surrogate_field``). ``framing_problem``
refuses request framings where a proxy and this server may disagree on where a request
ends. The body read is replayed to the app (``replay``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable

from starlette.types import Message, Receive, Scope, Send

from app.ops import metrics
from app.ops.logs import printable

log = logging.getLogger("seqserve.http")

# answers an error in the request's protocol shape: (send, status, code, message,
# headers, **extra)
SendError = Callable[..., Awaitable[None]]


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



class BodyGuard:
    """Body size, media type and structure of one request. An oversized body is read
    and thrown away (in constant memory, up to ``DRAIN_FACTOR`` times the limit) before
    the 413 goes out: a client that does not wait for ``100 Continue`` (Python's urllib,
    many SDKs) is still sending, and closing the socket under it would give it a
    connection reset instead of the answer. Past that bound, or once the client pauses
    for ``DRAIN_STALL_S`` (it waits for the answer), the 413 goes out with
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

    def __init__(self, max_body_bytes: int, send_error: SendError):
        self.limit = max_body_bytes
        self.send_error = send_error
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
        await self.send_error(send, 413, "payload_too_large",
                              f"body: {what} is over the limit of {self.limit} bytes",
                              [(b"connection", b"close")] if more_body else None)

    async def read(self, scope: Scope, receive: Receive, send: Send,
                   headers: dict[bytes, bytes], media_types: frozenset[bytes]) -> bytes | None:
        """The whole body, checked; None when an answer went out instead (or the client
        left). ``media_types``: what the route takes besides application/json."""
        declared = headers.get(b"content-length")
        if declared is not None:
            n_declared = int(declared)  # (digits only: framing_problem)
            if n_declared > self.limit:
                await self._too_large(receive, send, 0, n_declared > 0, n_declared)
                return None
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        # a request without a body has no media type to check (``curl -X POST
        # .../reload``; urllib labels even an empty body form-encoded)
        bodiless = declared in (None, b"0") and b"transfer-encoding" not in headers
        if ctype != b"application/json" and ctype not in media_types and not bodiless:
            metrics.REJECTED.labels("unsupported_media_type").inc()
            await self.send_error(send, 415, "unsupported_media_type",
                                  "body: Content-Type must be application/json")
            return None
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None  # client gone: nothing to answer
            chunk = msg.get("body", b"")
            size += len(chunk)
            more = msg.get("more_body", False)
            if size > self.limit:
                await self._too_large(receive, send, size, more, None)
                return None
            chunks.append(chunk)
            if not more:
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        del chunks
        refusal = self._refusal(scope, headers, body)
        if refusal is None:
            return body
        del body  # nothing of it is kept while the answer waits
        message, detail, tarpit = refusal
        if tarpit:
            await asyncio.sleep(self.TARPIT_S)
        await self.send_error(send, 422, "validation_error", message, details=[detail])
        return None

    def _refusal(self, scope: Scope, headers: dict[bytes, bytes],
                 body: bytes) -> tuple[str, dict[str, str], bool] | None:
        """(message, detail, tarpit) for a body refused for its form, or None."""
        head = body
        # (a V2 request's binary tensors follow its JSON header: only the header counts)
        binary_at = headers.get(b"inference-header-content-length", b"")
        if binary_at.isdigit():
            head = body[:int(binary_at)]
        problem = structure_problem(head)
        if problem is not None:
            metrics.REJECTED.labels("body_structure").inc()
            log.info("%s %s -> 422 body: %s", scope["method"], printable(scope["path"]), problem)
            return (f"body: {problem}", {"field": "body", "message": problem,
                                         "type": "too_complex"}, self._repeat_offender(scope))
        field = lone_surrogate_field(head)
        if field is not None:
            msg = "not valid Unicode text (a lone surrogate escape such as \\ud800)"
            log.info("%s %s -> 422 %s: %s", scope["method"], printable(scope["path"]), field, msg)
            return f"{field}: {msg}", {"field": field, "message": msg,
                                       "type": "string_unicode"}, False
        return None
