"""The web page at ``/``, its static files, offline API docs, and the page's live summary.

``/`` serves ``app/web/static/index.html``: a page for people (attention heatmap, batch
sentiment, generation playground, model cards, live latency) in plain HTML, CSS and
JavaScript, with no build step and nothing fetched from outside the server.

``/docs`` and ``/redoc`` are Swagger UI and ReDoc from files vendored under
``app/web/static/vendor/`` (with their licences), so they work on a machine without
internet access; FastAPI's own pages load them from a CDN.

Static files are read, hashed and gzipped once, on their first request, and kept in
memory: every later answer is a dictionary lookup. Every answer carries an ``ETag`` (a conditional
request gets a 304) and a ``Cache-Control``: the page's own files are revalidated on
every load (``no-cache``: a new release shows at once, an unchanged file costs a 304),
the vendored files live under a versioned folder and are cached for a week. Nothing
here touches the inference routes, and no middleware is added: compression is done
per file here, not by a GZip middleware that would also wrap the API and its SSE.

``GET /v1/stats`` summarises the request metrics of ``app/ops/metrics.py`` over the last
minute for the page's "Live" part: per route, the request rate and the p50/p99
latency. Prometheus histograms are cumulative, so the endpoint keeps a few snapshots
(at most one a second, taken only when it is called) and answers with the difference
between now and the snapshot about a minute old.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import mimetypes
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from app.deps import AppState, get_state
from app.http.encoding import accepts_gzip
from app.http.errors import error_response
from app.ops import metrics
from app.ops.logs import printable

STATIC_DIR = Path(__file__).resolve().parent / "static"
SWAGGER = "vendor/swagger-ui-5.35.0"
REDOC = "vendor/redoc-2.5.4"

# None of these routes is in the OpenAPI schema: the page, its files and the docs are not
# API, and /v1/stats is the page's own summary (its shape is in the README; /metrics is
# the interface for monitoring).
# Three routers, each with its own line in app.main.ROUTES: the page and its files
# (open: they hold no data, and the page asks for the key), the docs pages and the
# live summary (behind the key with SEQSERVE_PROTECT_OPS).
router = APIRouter(include_in_schema=False)
docs_router = APIRouter(include_in_schema=False)
stats_router = APIRouter(include_in_schema=False)


# ------------------------------------------------------------------ static files
@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes | None  # None when compressing does not pay (images, tiny files)
    etag: str  # quoted, of the uncompressed body; the gzipped variant adds "-gz"
    media_type: str
    cache_control: str


_COMPRESSIBLE = ("text/", "application/javascript", "application/json", "image/svg+xml")
_files: dict[str, Path] | None = None
_assets: dict[str, Asset] = {}


def _media_type(name: str) -> str:
    if name.endswith(".js"):
        return "application/javascript; charset=utf-8"  # mimetypes varies by platform
    guessed = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return guessed + "; charset=utf-8" if guessed.startswith("text/") else guessed


def _load(path: Path, rel: str) -> Asset:
    body = path.read_bytes()
    media = _media_type(path.name)
    gz = None
    if media.startswith(_COMPRESSIBLE) and len(body) > 512:
        # mtime=0: the same bytes every time, so every worker sends the same variant
        gz = gzip.compress(body, compresslevel=9, mtime=0)
        if len(gz) >= len(body):
            gz = None
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    cache = "public, max-age=604800, immutable" if rel.startswith("vendor/") else "no-cache"
    return Asset(body, gz, etag, media, cache)


def static_files() -> dict[str, Path]:
    """Every file under app/web/static by its relative path. A request can only name a
    file in this table, so no path taken from a URL ever reaches the disk."""
    global _files
    if _files is None:
        _files = {p.relative_to(STATIC_DIR).as_posix(): p for p in sorted(STATIC_DIR.rglob("*"))
                  if p.is_file() and not p.name.startswith(".")}
    return _files


async def asset(rel: str) -> Asset | None:
    """The file, read and gzipped on its first request (in a thread: the 1.7 MB Swagger
    bundle takes a while to compress, and the event loop serves the API meanwhile)."""
    found = _assets.get(rel)
    if found is None:
        path = static_files().get(rel)
        if path is None:
            return None
        found = _assets[rel] = await run_in_threadpool(_load, path, rel)
    return found


# The page loads only its own files: no inline script or style attribute, no other
# origin, and no framing (clickjacking). The style-src allows the CSSOM only (scripts
# colour the heatmap through element.style, which CSP does not govern).
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")
# The docs pages (Swagger UI, ReDoc) are FastAPI's, with an inline script of their own:
# they are kept from being framed and sniffed, not from running it.
DOCS_HEADERS = {"Content-Security-Policy": "frame-ancestors 'none'",
                "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff"}
# a 404 names at most this much of the path it did not find
ECHO_CHARS = 80


async def serve_asset(request: Request, rel: str) -> Response:
    a = await asset(rel)
    if a is None:
        return error_response(404, "not_found",
                              f"no static file {printable(repr(rel), ECHO_CHARS)}")
    use_gz = a.gzipped is not None and accepts_gzip(request.scope)
    etag = a.etag[:-1] + '-gz"' if use_gz else a.etag
    headers = {"ETag": etag, "Cache-Control": a.cache_control, "Vary": "Accept-Encoding",
               "X-Content-Type-Options": "nosniff"}
    if a.media_type.startswith("text/html"):
        headers["Content-Security-Policy"] = PAGE_CSP
        headers["X-Frame-Options"] = "DENY"
    inm = request.headers.get("if-none-match", "")
    if inm:
        # weak comparison (RFC 9110 13.1.2): either variant's tag revalidates
        tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
        if "*" in tags or etag in tags or a.etag in tags:
            return Response(status_code=304, headers=headers)
    if use_gz:
        headers["Content-Encoding"] = "gzip"
    body = a.gzipped if use_gz else a.body
    assert body is not None
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(body))
        return Response(status_code=200, headers=headers, media_type=a.media_type)
    return Response(body, headers=headers, media_type=a.media_type)


@router.api_route("/", methods=["GET", "HEAD"])
async def index(request: Request) -> Response:
    return await serve_asset(request, "index.html")


@router.api_route("/static/{path:path}", methods=["GET", "HEAD"])
async def static(path: str, request: Request) -> Response:
    return await serve_asset(request, path)


@router.api_route("/favicon.ico", methods=["GET", "HEAD"])
async def favicon(request: Request) -> Response:
    # browsers ask for it whatever the page says; an SVG answers as well as an .ico
    return await serve_asset(request, "favicon.svg")


# ------------------------------------------------------------------ offline docs
def _openapi_url(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/") + (request.app.openapi_url or "")


def _static_url(request: Request, rel: str) -> str:
    return request.scope.get("root_path", "").rstrip("/") + "/static/" + rel


@docs_router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    page = get_swagger_ui_html(
        openapi_url=_openapi_url(request), title=request.app.title + " - Swagger UI",
        swagger_js_url=_static_url(request, SWAGGER + "/swagger-ui-bundle.js"),
        swagger_css_url=_static_url(request, SWAGGER + "/swagger-ui.css"),
        swagger_favicon_url=_static_url(request, "favicon.svg"),
        # null: never send the spec to the public online validator for its badge
        swagger_ui_parameters={"validatorUrl": None})
    page.headers.update(DOCS_HEADERS)
    return page


@docs_router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    page = get_redoc_html(
        openapi_url=_openapi_url(request), title=request.app.title + " - ReDoc",
        redoc_js_url=_static_url(request, REDOC + "/redoc.standalone.js"),
        redoc_favicon_url=_static_url(request, "favicon.svg"), with_google_fonts=False)
    page.headers.update(DOCS_HEADERS)
    return page


# ------------------------------------------------------------------ page settings
@router.get("/web/config")
async def web_config(state: AppState = Depends(get_state)) -> dict:
    """What the page needs to know before its first call: whether to ask for an API key
    (a 401 would tell it too, but only after the reader typed a review), and the limits
    it shows next to its inputs."""
    s = state.settings
    return {"api_key_required": s.api_key is not None, "max_text_chars": s.max_text_chars,
            "max_texts": s.max_texts, "max_new_chars": s.max_new_chars,
            "max_stop": s.max_stop, "max_prompt_chars": s.max_prompt_chars}


# ------------------------------------------------------------------ live summary
WINDOW_S = 60.0

# per (route, method): {le: cumulative count} over every status, plus the 5xx count
Snapshot = dict[tuple[str, str], tuple[dict[float, float], float, float]]


def _families(*wanted: str):
    """The metric families named ``wanted``, aggregated over the uvicorn workers when
    there are several (as /metrics does)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import CollectorRegistry, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return [f for f in registry.collect() if f.name in wanted]
    by_name = {"seqserve_request_duration_seconds": metrics.REQUEST_DURATION,
               "seqserve_active_streams": metrics.ACTIVE_STREAMS,
               "seqserve_requests_in_flight": metrics.IN_FLIGHT}
    return [f for n in wanted for f in by_name[n].collect()]


def take_snapshot() -> Snapshot:
    snap: Snapshot = {}
    for fam in _families("seqserve_request_duration_seconds"):
        for s in fam.samples:
            key = (s.labels.get("route", ""), s.labels.get("method", ""))
            buckets, count, errors = snap.get(key, ({}, 0.0, 0.0))
            if s.name.endswith("_bucket"):
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
            elif s.name.endswith("_count"):
                count += s.value
                if s.labels.get("status", "").startswith("5"):
                    errors += s.value
            snap[key] = (buckets, count, errors)
    return snap


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile on cumulative bucket counts: linear inside the
    bucket the rank falls in; the largest finite bound when it falls in +Inf."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    prev_le, prev_c = 0.0, 0.0
    for le in bounds:
        c = buckets[le]
        if c >= rank:
            if math.isinf(le):
                return prev_le
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return prev_le


class Window:
    """Snapshots of the request histogram, the oldest about WINDOW_S old: enough to
    answer "over the last minute" without any work outside /v1/stats itself."""

    def __init__(self, window_s: float = WINDOW_S, min_gap_s: float = 1.0) -> None:
        self.window_s, self.min_gap_s = window_s, min_gap_s
        # the process's start as the first baseline: nothing counted before it
        self.snaps: deque[tuple[float, Snapshot]] = deque([(time.monotonic(), {})])

    def summary(self) -> dict:
        now = time.monotonic()
        current = take_snapshot()
        # baseline: the newest snapshot at least a window old, else the oldest kept
        base_t, base = self.snaps[0]
        for t, snap in self.snaps:
            if t <= now - self.window_s:
                base_t, base = t, snap
        if now - self.snaps[-1][0] >= self.min_gap_s:
            self.snaps.append((now, current))
        while len(self.snaps) > 1 and self.snaps[1][0] <= now - self.window_s:
            self.snaps.popleft()  # the next one is old enough to be the baseline
        span = max(now - base_t, 1e-9)
        routes = []
        for (route, method), (buckets, count, errors) in current.items():
            b0, c0, e0 = base.get((route, method), ({}, 0.0, 0.0))
            n = count - c0
            if n <= 0:
                continue
            delta = {le: c - b0.get(le, 0.0) for le, c in buckets.items()}
            p50, p99 = quantile(0.5, delta), quantile(0.99, delta)
            routes.append({"route": route, "method": method, "requests": int(n),
                           "rate_per_s": round(n / span, 4), "errors_5xx": int(errors - e0),
                           "p50_ms": None if p50 is None else round(p50 * 1000, 3),
                           "p99_ms": None if p99 is None else round(p99 * 1000, 3)})
        routes.sort(key=lambda r: (-r["requests"], r["route"], r["method"]))
        return {"window_s": round(span, 3), "routes": routes}


_window = Window()


def _gauge_total(name: str) -> float:
    return sum(s.value for f in _families(name) for s in f.samples if s.name == name)


@stats_router.get("/v1/stats",
            summary="Request rate and p50/p99 latency per route over the last minute")
async def stats() -> JSONResponse:
    """Request rate and p50/p99 latency per route over the last minute (from the
    request-duration histogram; p50/p99 are interpolated inside its buckets, as
    Prometheus' histogram_quantile does), plus the in-flight requests and active
    generation streams now."""
    out = _window.summary()
    out["active_streams"] = int(_gauge_total("seqserve_active_streams"))
    out["in_flight"] = int(_gauge_total("seqserve_requests_in_flight"))
    return JSONResponse(out, headers={"Cache-Control": "no-store"})
