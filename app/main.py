"""The FastAPI application: wiring of settings, models, loops, middleware and routes.

``create_app(settings)`` builds an app; its lifespan (app/lifecycle.py) loads the
models, starts their loops (app/engine/factory.py) and reports ready, reloads on
SIGHUP, and stops the loops on shutdown.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app import __version__, lifecycle
from app.config import Settings
from app.deps import AppState
from app.engine.registry import Registry
from app.http.compression import GZipMiddleware
from app.http.errors import install_error_handlers
from app.http.middleware import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    HeadMiddleware,
    RequestContextMiddleware,
)
from app.http.openapi import install_openapi, operation_id
from app.http.protocol_errors import ProtocolErrorMiddleware
from app.ops import admin, health, tracing
from app.ops.logs import configure_logging
from app.protocols.native import classify, generate
from app.protocols.openai import routes as openai_compat
from app.protocols.v2 import routes as v2
from app.web import routes as web

log = logging.getLogger("seqserve")


# The routers, in the order they are matched: the page's last, so its routes never
# precede the API's.
ROUTERS = (classify.router, generate.router, health.router, admin.router,
           openai_compat.router, v2.router, v2.infer_router, web.router)


def create_app(settings: Settings | None = None, registry: Registry | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_format)
    tracer = tracing.setup(settings)  # None unless SEQSERVE_OTEL=true
    state = AppState(settings=settings)

    app = FastAPI(
        title="seqserve",
        version=__version__,
        description="Recurrent sequence models on ONNX Runtime: IMDB sentiment with "
                    "attention, and a character-level text generator.",
        lifespan=lifecycle.lifespan(state, registry),
        # /docs and /redoc come from app/web/routes.py, with their assets served from
        # the package (FastAPI's own pages load them from a CDN: blank when offline)
        docs_url=None, redoc_url=None,
        generate_unique_id_function=operation_id,
    )
    app.state.seqserve = state
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, settings=settings)  # before anything reads the body
    # errors of the OpenAI and V2 routes in their protocols' shapes, whichever layer made them
    app.add_middleware(ProtocolErrorMiddleware)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST"], allow_headers=["*"],
                           expose_headers=["X-Request-ID", "Server-Timing", "traceresponse"])
    # every route's path template, for the metrics' route label (the routers' own lists:
    # FastAPI may keep included routers as one lazy entry in app.routes)
    known = {r.path for router in (app.router, *ROUTERS)
             for r in router.routes if isinstance(getattr(r, "path", None), str)}
    app.add_middleware(HeadMiddleware)  # HEAD on every GET route
    # gzip inside the request context, so the logged bytes are the bytes sent
    app.add_middleware(GZipMiddleware)
    if tracer is not None:
        app.add_middleware(tracing.TracingMiddleware, tracer=tracer, known_paths=known)
    app.add_middleware(RequestContextMiddleware, known_paths=known)
    install_openapi(app, settings)
    return app
