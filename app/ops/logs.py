"""Per-request context shared with logging (the request id), and log hygiene.

Whatever a client controls (paths, model names, field names, ids) is logged through
``printable``: control characters escaped (a ``%0a`` in a path cannot forge a log
line, an ANSI escape cannot repaint a terminal) and the length capped (a 900 kB model
name is not written out 900 kB long). The formatter applies the same to every whole
message as a backstop.

``SEQSERVE_LOG_FORMAT=json`` (``configure_logging`` for the app, ``uvicorn_log_config``
for uvicorn's own loggers) writes every line as one JSON object: ``time``, ``level``,
``logger``, ``message``, ``request_id``, and where they apply ``route``, ``method``,
``status``, ``duration_ms``, ``model``, ``model_version``, ``client``, ``bytes``
(response body, as sent), ``error_id``, ``reason`` and
``exception`` (a traceback, as one JSON string). The same escaping and caps apply to
every string field, and the encoding is ASCII-only JSON, so no field can break the
one-object-per-line framing.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from contextvars import ContextVar
from typing import Any

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
# Facts about the request under way that code deeper in it learns (the model it used,
# the error id of its failure), for the request's completion line: a dict set by the
# request-context middleware and filled in place, so that it is seen whatever task or
# context copy the route ran in.
request_info_var: ContextVar[dict[str, Any] | None] = ContextVar("request_info", default=None)


def note_request(**facts: Any) -> None:
    """Adds ``facts`` to the completion log line of the request under way (if any)."""
    info = request_info_var.get()
    if info is not None:
        info.update(facts)


# Record attributes copied into a JSON line when present (``extra=`` of a log call).
JSON_FIELDS = ("route", "method", "status", "duration_ms", "model", "model_version",
               "client", "bytes", "error_id", "reason", "trace_id")
MAX_LOGGED_TRACEBACK = 20_000


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (ASCII-only JSON: controls, line
    separators and non-ASCII characters are escaped by the encoder)."""

    def format(self, record: logging.LogRecord) -> str:
        t = record.created
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": printable(record.getMessage(), MAX_LOGGED_MESSAGE),
            "request_id": getattr(record, "request_id", None) or request_id_var.get(),
        }
        for k in JSON_FIELDS:
            v = record.__dict__.get(k)
            if v is not None:
                out[k] = v if isinstance(v, int | float | bool) else printable(v)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)[-MAX_LOGGED_TRACEBACK:]
        elif record.exc_text:
            out["exception"] = record.exc_text[-MAX_LOGGED_TRACEBACK:]
        if record.stack_info:
            out["stack"] = record.stack_info[-MAX_LOGGED_TRACEBACK:]
        return json.dumps(out, ensure_ascii=True, default=str)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def formatter(fmt: str) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else SafeFormatter(TEXT_FORMAT)


def configure_logging(level: str, fmt: str = "text") -> None:
    """The service's loggers (``seqserve.*``) write to stderr in ``fmt``. With json,
    everything else the process may write goes through the same formatter: other
    libraries' loggers (the root logger), Python warnings, and uncaught exceptions in
    threads and in the main thread."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger("seqserve")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    if fmt != "json":
        return
    other = logging.StreamHandler()
    other.setFormatter(JsonFormatter())
    logging.getLogger().handlers[:] = [other]
    logging.captureWarnings(True)
    crash = logging.getLogger("seqserve.crash")

    def thread_hook(a: threading.ExceptHookArgs) -> None:
        if a.exc_type is not SystemExit:
            crash.critical("uncaught exception in thread %s",
                           a.thread.name if a.thread else "?",
                           exc_info=(a.exc_type, a.exc_value, a.exc_traceback))  # type: ignore[arg-type]

    def main_hook(t: type[BaseException], v: BaseException, tb: Any) -> None:
        crash.critical("uncaught exception", exc_info=(t, v, tb))

    threading.excepthook = thread_hook
    sys.excepthook = main_hook


def uvicorn_log_config(settings: Any) -> dict[str, Any]:
    """uvicorn's ``log_config``: its own default, or with ``log_format=json`` the same
    loggers writing through ``JsonFormatter`` (uvicorn applies it in every worker)."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    if settings.log_format != "json":
        return copy.deepcopy(LOGGING_CONFIG)
    handler = {"formatter": "json", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "app.ops.logs.JsonFormatter"}},
        "handlers": {"default": handler, "access": handler},
        "root": {"handlers": ["default"], "level": "WARNING"},
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }
