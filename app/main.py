"""The FastAPI application: wiring of settings, routes and the request layer.

``create_app(settings)`` builds an app: every router of ``ROUTES`` with its declared
policy, and the one request layer (app/http/layer.py). Its lifespan (app/lifecycle.py)
loads the models, starts their loops (app/engine/factory.py) and reports ready,
reloads on SIGHUP, and stops the loops on shutdown.
"""

from __future__ import annotations

import inspect
import logging
from functools import partial

from fastapi import APIRouter, FastAPI
from starlette.routing import BaseRoute

from app import __version__, lifecycle
from app.config import Settings
from app.deps import AppState
from app.engine.registry import Registry
from app.http.errors import install_error_handlers
from app.http.layer import RequestLayer
from app.http.openapi import install_openapi, operation_id
from app.http.policy import NATIVE, OPS, WEB, Auth, Policy, PolicyMap
from app.ops import admin, health, tracing
from app.ops.logs import configure_logging
from app.protocols.native import classify, generate
from app.protocols.openai import routes as openai_compat
from app.protocols.openai.errors import OPENAI
from app.protocols.v2 import routes as v2
from app.protocols.v2.errors import V2
from app.web import routes as web

log = logging.getLogger("seqserve")

# FastAPI's own OpenTelemetry (FastAPI >= 0.16x) traces every request once a tracer
# provider is installed, so with SEQSERVE_OTEL (which installs one) or
# `opentelemetry-instrument` each request got a second server span, named "POST" as
# the request layer routes, plus its own metrics. app/ops/tracing.py traces the
# request; FastAPI's is turned off (which also spares its per-request check for a
# provider). Older FastAPI has no such option.
NO_FASTAPI_TELEMETRY = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters else {})


# Every router, in the order its routes are matched, with the policy it declares: the
# protocol (the shape of its error bodies) and the auth class (app/http/policy.py). The
# request layer reads a request's policy from the route it matched; no path table
# decides either. A new protocol route is one module and one line here. The page's
# routes come after the API's, and OpenAI's "no such route" last of all.
_V2_BODIES = frozenset({b"", b"application/octet-stream"})  # Triton's clients send these
ROUTES: tuple[tuple[APIRouter, Policy], ...] = (
    (classify.router, Policy(NATIVE, Auth.API_KEY)),
    (generate.router, Policy(NATIVE, Auth.API_KEY)),
    (health.router, Policy(OPS, Auth.PUBLIC)),
    (health.models_router, Policy(OPENAI, Auth.OPS)),
    (health.metrics_router, Policy(OPS, Auth.OPS)),
    (admin.router, Policy(OPENAI, Auth.ADMIN)),
    (openai_compat.router, Policy(OPENAI, Auth.API_KEY)),
    (v2.probe_router, Policy(V2, Auth.PUBLIC)),
    (v2.router, Policy(V2, Auth.OPS)),
    (v2.infer_router, Policy(V2, Auth.API_KEY, media_types=_V2_BODIES)),
    (web.docs_router, Policy(WEB, Auth.OPS)),
    (web.stats_router, Policy(WEB, Auth.OPS)),
    (web.router, Policy(WEB, Auth.PUBLIC)),
    (openai_compat.unknown_router, Policy(OPENAI, Auth.OPS)),
)
# FastAPI's own route, /openapi.json: behind the key with SEQSERVE_PROTECT_OPS
SCHEMA_POLICY = Policy(OPS, Auth.OPS)


def include_routes(app: FastAPI) -> PolicyMap:
    """Includes the routers of ``ROUTES`` and returns every route of the app, in the
    order they are matched, with its declared policy. FastAPI's own schema route comes
    first (it is the app's); any other route that no line of ``ROUTES`` declares (an
    ``@app.get``, a router included elsewhere) is a start-up error: it could not be
    served without knowing its auth and error shape."""
    own = list(app.router.routes)  # before the routers: matched first
    for r in own:
        if getattr(r, "path", None) != app.openapi_url:
            raise RuntimeError(f"route {getattr(r, 'path', type(r).__name__)!r} is in no router of "
                               "app.main.ROUTES: declare its protocol and auth there")
    policy: dict[int, Policy] = {id(r): SCHEMA_POLICY for r in own}
    for router, declared in ROUTES:
        app.include_router(router)
        policy.update((id(r), declared) for r in router.routes)
    if len(app.router.routes) != len(own) + len(ROUTES):
        raise RuntimeError("a router was included outside app.main.ROUTES")
    routes: list[BaseRoute] = [*own, *(r for router, _ in ROUTES for r in router.routes)]
    return PolicyMap(routes, lambda r: policy[id(r)])


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
        **NO_FASTAPI_TELEMETRY,
    )
    app.state.seqserve = state
    install_error_handlers(app)
    policies = include_routes(app)
    traced = None
    if tracer is not None:
        known = {res.template for _, res in policies.routes if res.template}
        traced = partial(tracing.TracingMiddleware, tracer=tracer, known_paths=known)
    app.add_middleware(RequestLayer, settings=settings, policies=policies,
                       cors_origins=settings.cors_origins, traced=traced)
    install_openapi(app, settings, policies)
    return app
