"""Per-request context shared with logging (the request id), and log hygiene.

Whatever a client controls (paths, model names, field names, ids) is logged through
``printable``: control characters escaped (a ``%0a`` in a path cannot forge a log
line, an ANSI escape cannot repaint a terminal) and the length capped (a 900 kB model
name is not written out 900 kB long). The formatter applies the same to every whole
message as a backstop.
"""

from __future__ import annotations

import logging
import re
from contextvars import ContextVar

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
MAX_LOGGED_MESSAGE = 4096


def _escape(m: re.Match[str]) -> str:
    o = ord(m.group())
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def printable(value: object, limit: int = 200) -> str:
    """``value`` as one safe line: controls escaped, at most ``limit`` characters kept."""
    s = str(value)
    if len(s) > limit:
        s = f"{s[:limit]}...[{len(s) - limit} more chars]"
    return _CONTROL.sub(_escape, s)


class SafeFormatter(logging.Formatter):
    """Escapes controls in the message (not in the traceback, which is ours)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = printable(record.message, MAX_LOGGED_MESSAGE)
        return super().formatMessage(record)

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(SafeFormatter(
        "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger("seqserve")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
