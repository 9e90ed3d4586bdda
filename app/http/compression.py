"""gzip for responses over ~1 KB, when the client accepts it (pure ASGI).

Compressed: JSON, text and the Prometheus exposition (``/metrics``, ~50 KB -> a few
KB), when the response is at least ``MINIMUM_SIZE`` bytes and the request's
``Accept-Encoding`` allows gzip. Never compressed: Server-Sent Events (each event
must reach the client when it is sent, and a proxy may buffer a compressed stream),
responses that already carry a ``Content-Encoding`` or an ``ETag`` (the web page's
static route serves its own precompressed variants, app/web/routes.py), HEAD
requests, bodiless statuses and non-text types (images).

The hot path pays almost nothing: a /sentiment answer is well under 1 KB and carries
its ``Content-Length``, so its start message is looked at once and passed on
unbuffered. Starlette's GZipMiddleware, by contrast, holds every response's start
message until the first body chunk.
"""

from __future__ import annotations

import zlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MINIMUM_SIZE = 1024
# Level 1: a 64 KB /attention answer -> 16.8 KB in 0.7 ms (level 5: 14.7 KB in 1.7 ms,
# level 6: 14.7 KB in 1.9 ms): on the event loop, CPU time matters more than 2 KB
LEVEL = 1
_COMPRESSIBLE = (b"application/json", b"text/", b"application/javascript",
                 b"application/openmetrics-text", b"image/svg+xml", b"application/xml")


def accepts_gzip(scope: Scope) -> bool:
    for k, v in scope["headers"]:
        if k == b"accept-encoding":
            for part in v.split(b","):
                coding, _, params = part.strip().partition(b";")
                if coding.strip().lower() in (b"gzip", b"*"):
                    q = params.strip().lower()
                    if not q.startswith(b"q="):
                        return True
                    try:
                        return float(q[2:]) > 0  # q=0: "not acceptable"
                    except ValueError:
                        return False
    return False


class GZipMiddleware:
    def __init__(self, app: ASGIApp, minimum_size: int = MINIMUM_SIZE, level: int = LEVEL):
        self.app = app
        self.minimum_size = minimum_size
        self.level = level

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "HEAD" or not accepts_gzip(scope):
            await self.app(scope, receive, send)
            return
        start: Message | None = None  # held back while deciding (no Content-Length)
        compressor = None
        passthrough = False
        buffered: list[bytes] = []
        size = 0

        def should_compress(message: Message) -> bool | None:
            """True/False when the start message decides; None: look at the body."""
            status = message["status"]
            if status < 200 or status in (204, 206, 304):
                return False
            length = None
            ctype = b""
            for k, v in message.get("headers", ()):
                if k == b"content-length":
                    length = int(v)
                elif k == b"content-type":
                    ctype = v.lower()
                elif k in (b"content-encoding", b"etag"):
                    return False
            if ctype.startswith(b"text/event-stream") or not ctype.startswith(_COMPRESSIBLE):
                return False
            if length is not None:
                return length >= self.minimum_size
            return None

        def compressed_start(message: Message, body_length: int | None) -> Message:
            headers = [(k, v) for k, v in message.get("headers", ())
                       if k not in (b"content-length", b"vary")]
            vary = [v for k, v in message.get("headers", ()) if k == b"vary"]
            headers.append((b"content-encoding", b"gzip"))
            headers.append((b"vary", b", ".join([*vary, b"Accept-Encoding"])))
            if body_length is not None:
                headers.append((b"content-length", str(body_length).encode()))
            return {**message, "headers": headers}

        async def send_gzip(message: Message) -> None:
            nonlocal start, compressor, passthrough, size
            if passthrough:
                await send(message)
                return
            if message["type"] == "http.response.start":
                decision = should_compress(message)
                if decision is False:
                    passthrough = True
                    await send(message)
                    return
                start = message
                if decision:
                    compressor = zlib.compressobj(self.level, zlib.DEFLATED, 31)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            assert start is not None
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if compressor is None:  # no Content-Length: buffer up to the threshold
                buffered.append(body)
                size += len(body)
                if size < self.minimum_size:
                    if more:
                        return
                    passthrough = True
                    await send(start)
                    await send({"type": "http.response.body", "body": b"".join(buffered)})
                    return
                compressor = zlib.compressobj(self.level, zlib.DEFLATED, 31)
                body = b"".join(buffered)
            if not more:
                data = compressor.compress(body) + compressor.flush()
                if start is not None:  # the whole body in one message: its exact length
                    await send(compressed_start(start, len(data)))
                    start = None
                await send({"type": "http.response.body", "body": data})
                return
            # a streamed body: each chunk goes out as it comes (a sync flush)
            data = compressor.compress(body) + compressor.flush(zlib.Z_SYNC_FLUSH)
            if start is not None:
                await send(compressed_start(start, None))
                start = None
            await send({"type": "http.response.body", "body": data, "more_body": True})

        await self.app(scope, receive, send_gzip)
