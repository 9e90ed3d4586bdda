"""Connection-level limits for the bare server: uvicorn's HTTP protocol, guarded.

uvicorn closes idle keep-alive connections, but it puts no deadline on a client that
sends its headers or body slowly (or sends nothing at all after connecting), no limit
on the size of the request head (httptools buffers an unterminated header without
bound), no deadline on a client that stops reading a response, and it lets idle
connections use up the process's file descriptors. ``GuardedHttpToolsProtocol`` adds:

- **Header deadline** (``SEQSERVE_HEADER_TIMEOUT_S``): from the connection's start, or
  the first byte of a later request, to the end of its headers. Then 408 and close
  (a connection that sent nothing is just closed).
- **Body deadline** (``SEQSERVE_BODY_TIMEOUT_S``): from the end of the headers to the
  end of the body. Then 408 and close.
- **Header size** (``SEQSERVE_MAX_HEADER_BYTES``): request line and headers; then 431
  and close. Counted per request: a read that holds a whole request and the start of
  the next (pipelining) counts only towards the request it ends in, and the read in
  which a head begins is measured when the head completes (its URL and headers) or
  left out of the running count, so at most one read (64 kB) is buffered past the limit.
- **Graceful shutdown**: a connection with nothing under way is not closed the moment
  the server stops: it is read for ``SHUTDOWN_READ_GRACE_S`` more, so a request already
  sent (its bytes in the socket, not read yet) is answered, with ``Connection: close``.
- **Write deadline** (``SEQSERVE_WRITE_TIMEOUT_S``): a response blocked on a full send
  buffer (the client stopped reading) that does not move on within the deadline is
  aborted; the stream behind it is cancelled and its slot freed.
- **Connection cap** (``SEQSERVE_MAX_CONNECTIONS``, default: the open-files limit
  minus a reserve): a connection past the cap is answered 503 and closed at once, so
  the process never runs out of descriptors for its own work.

Deadlines only run while the server is reading: a pipelined request waiting behind a
long answer (reading paused) is not the client's fault. ``python -m app`` uses this
protocol; every refusal is counted in ``seqserve_rejected_requests_total``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.ops import metrics

log = logging.getLogger("seqserve.connections")

# descriptors kept for the process's own use (model files, logs, ORT, metrics files)
FD_RESERVE = 128
# on shutdown, an idle connection is read this much longer before it is closed
SHUTDOWN_READ_GRACE_S = 0.5


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    write_timeout_s: float = 30.0
    max_header_bytes: int = 16_384
    max_connections: int = 1000


def raise_open_files_limit(target: int = 65_536) -> int:
    """Raise the soft open-files limit towards the hard one (as most servers do) and
    return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = target if hard == resource.RLIM_INFINITY else min(hard, target)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return int(soft) if soft != resource.RLIM_INFINITY else target


def limits_from(settings: Any) -> ConnectionLimits:
    cap = settings.max_connections or max(16, raise_open_files_limit() - FD_RESERVE)
    return ConnectionLimits(settings.header_timeout_s, settings.body_timeout_s,
                            settings.write_timeout_s, settings.max_header_bytes, cap)


_limits: ConnectionLimits | None = None


def current_limits() -> ConnectionLimits:
    """From the SEQSERVE_ settings, read once per process (each uvicorn worker reads
    the same environment)."""
    global _limits
    if _limits is None:
        from app.config import Settings

        _limits = limits_from(Settings())
    return _limits


def raw_error(status: int, code: str, message: str, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 error answer in the service's error shape, ``Connection: close``."""
    body = json.dumps({"error": {"code": code, "message": message, "status": status,
                                 "request_id": "-"}}).encode()
    reason = {408: "Request Timeout", 431: "Request Header Fields Too Large",
              503: "Service Unavailable"}[status]
    head = [f"HTTP/1.1 {status} {reason}", "content-type: application/json",
            f"content-length: {len(body)}", "connection: close"]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


_last_warning = 0.0


def _warn(message: str, *args: object) -> None:
    """At most one warning per 10 s: an attack must not flood the log."""
    global _last_warning
    now = time.monotonic()
    if now - _last_warning >= 10.0:
        _last_warning = now
        log.warning(message, *args)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lim = current_limits()
        self._timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._in_head = False
        self._head_bytes = 0
        self._began = False  # a request began in the read being parsed
        self._head_open = False  # a request began and its headers are not complete
        self._stopping = False  # the server is shutting down
        self._requests = 0
        self._refused = False

    # -- connection --------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._lim.max_connections:
            self._refused = True
            metrics.REJECTED.labels("too_many_connections").inc()
            _warn("connection refused: %d open connections, limit %d (SEQSERVE_MAX_CONNECTIONS)",
                  len(self.connections), self._lim.max_connections)
            transport.write(raw_error(503, "overloaded", "too many open connections; retry "
                                      "shortly", retry_after=1))
            transport.close()
            return
        self._start_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        was_in_head = self._in_head
        self._began = False
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            # a head that was under way before this read and is still: the whole read is
            # its own. One that began inside this read (after the end of the previous
            # request, perhaps its body) has an unknown share of it: counted from the
            # next read on, and exactly at on_headers_complete
            if was_in_head and not self._began:
                self._head_bytes += len(data)
            if self._head_bytes > self._lim.max_header_bytes:
                self._refuse(431, "header_too_large", "request line and headers: over "
                             f"{self._lim.max_header_bytes} bytes", "header")

    # -- parser callbacks ----------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._began = self._head_open = True
        if not self._in_head:  # a later request on a kept-alive connection
            self._start_head()

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_head = self._head_open = False
        self._requests += 1
        size = len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers)
        if size > self._lim.max_header_bytes:
            self._refuse(431, "header_too_large", "request line and headers: over "
                         f"{self._lim.max_header_bytes} bytes", "header")
            return
        self._arm(self._lim.body_timeout_s, "body")
        super().on_headers_complete()
        if self._stopping and self.cycle is not None:
            self.cycle.keep_alive = False  # answered, then closed

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        if not self._refused:
            super().on_message_complete()

    # -- graceful shutdown -----------------------------------------------------------
    def shutdown(self) -> None:
        self._stopping = True
        if self._refused or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            super().shutdown()  # the answer under way goes out, then the connection closes
        elif not self._head_open:
            # idle, as far as this process has read: a request may be in the socket
            self.loop.call_later(SHUTDOWN_READ_GRACE_S, self._close_if_idle)
        # (a head under way: it is answered, or its header deadline ends it)

    def _close_if_idle(self) -> None:
        if self.transport.is_closing() or self._head_open:
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()

    # -- deadlines -----------------------------------------------------------------
    def _start_head(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._arm(self._lim.header_timeout_s, "header")

    def _arm(self, delay: float, phase: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, self._expired, phase, delay)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self, phase: str, delay: float) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:  # we are not reading: not the client's fault
            self._arm(delay, phase)
            return
        if phase == "header" and self._head_bytes == 0 and not self._in_progress():
            # connected (or kept alive) and sent nothing: close without a word
            metrics.REJECTED.labels("idle_connection").inc()
            self.transport.close()
            return
        metrics.REJECTED.labels(f"{phase}_timeout").inc()
        _warn("closing a connection from %s: %s not received within %.0f s",
              self.client[0] if self.client else "?", phase, delay)
        self._refuse(408, "request_timeout",
                     f"request {'headers' if phase == 'header' else 'body'} not received "
                     f"within {delay:g} s", phase)

    def _in_progress(self) -> bool:
        """A response on this connection has started and not finished."""
        return self.cycle is not None and not self.cycle.response_complete

    def _refuse(self, status: int, reason: str, message: str, phase: str) -> None:
        """Answer ``status`` (unless an answer is under way or done for this request)
        and close. In the header phase ``self.cycle`` is the previous request's."""
        if status == 431:
            metrics.REJECTED.labels(reason).inc()
            _warn("closing a connection from %s: %s",
                  self.client[0] if self.client else "?", message)
        self._refused = True
        self._disarm()
        if phase == "header":
            answered = self._in_progress()
        else:
            answered = self.cycle is not None and self.cycle.response_started
        if not answered:
            self.transport.write(raw_error(status, reason, message))
        self.transport.close()

    # -- write deadline ------------------------------------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self._lim.write_timeout_s,
                                                     self._write_expired)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_expired(self) -> None:
        self._write_timer = None
        if not self.flow.write_paused:
            return
        metrics.REJECTED.labels("write_timeout").inc()
        _warn("aborting a connection from %s: the client read nothing for %.0f s",
              self.client[0] if self.client else "?", self._lim.write_timeout_s)
        self.transport.abort()
