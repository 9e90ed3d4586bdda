"""Response compression: Starlette's GZipMiddleware, behind the one reading of
``Accept-Encoding`` in the service (``accepts_gzip``, which the web page's
precompressed files use too).

The pinned Starlette's GZipMiddleware already leaves alone what must not be
compressed: Server-Sent Events (``text/event-stream`` is in its excluded types, so
each event reaches the client when it is sent), responses that carry a
``Content-Encoding`` (the page's precompressed files), partial content, and answers
under ``minimum_size``; tests/http/test_compression.py pins each. What it does not do
is honour ``q=0`` (it looks for the substring ``gzip``), so the request layer only
hands it the requests that ``accepts_gzip`` admits, and HEAD requests never.
"""

from __future__ import annotations

from starlette.middleware.gzip import DEFAULT_EXCLUDED_CONTENT_TYPES, GZipMiddleware
from starlette.types import ASGIApp, Scope

MINIMUM_SIZE = 1024
# Level 1: a 64 KB /attention answer -> 16.8 KB in 0.7 ms (level 5: 14.7 KB in 1.7 ms,
# level 6: 14.7 KB in 1.9 ms): on the event loop, CPU time matters more than 2 KB
LEVEL = 1
# icons are served as they are (the page's own route decides what it precompresses)
EXCLUDED = (*DEFAULT_EXCLUDED_CONTENT_TYPES, "image/x-icon", "image/vnd.microsoft.icon")


def accepts_gzip(scope: Scope) -> bool:
    """Whether the request's ``Accept-Encoding`` admits gzip: ``gzip`` or ``*`` with no
    q-value or a positive one (``q=0`` is "not acceptable"; an unreadable q is no)."""
    for k, v in scope["headers"]:
        if k == b"accept-encoding":
            for part in v.split(b","):
                coding, _, params = part.strip().partition(b";")
                if coding.strip().lower() in (b"gzip", b"*"):
                    q = params.strip().lower().replace(b" ", b"")
                    if not q.startswith(b"q="):
                        return True
                    try:
                        return float(q[2:]) > 0
                    except ValueError:
                        return False
    return False


def gzip(app: ASGIApp) -> ASGIApp:
    return GZipMiddleware(app, minimum_size=MINIMUM_SIZE, compresslevel=LEVEL,
                          exclude_content_types=EXCLUDED)
