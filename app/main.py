"""The FastAPI application: wiring of settings, models, loops, middleware and routes.

``create_app(settings)`` builds an app; the lifespan loads every model folder, warms
each session up, starts one batching loop per classifier and one generation engine
per generator, and only then reports ready. SIGHUP reloads the models that changed
(app/engine/reload.py). On shutdown (SIGTERM: uvicorn stops
accepting and lets in-flight requests finish within SEQSERVE_SHUTDOWN_GRACE_S) the
app turns not-ready and stops its loops after the last request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.routing import BaseRoute

from app import __version__
from app.config import Settings
from app.deps import AppState, Loop
from app.engine.batcher import ClassificationBatcher, cpu_step_cost, gpu_step_cost
from app.engine.generator import GenerationEngine
from app.engine.registry import Registry
from app.engine.reload import early_sighup_seen, on_sighup
from app.http.errors import install_error_handlers
from app.http.layer import RequestLayer
from app.http.openapi import install_openapi, operation_id
from app.http.policy import NATIVE, OPS, WEB, Auth, Policy, PolicyMap
from app.ops import admin, health, metrics, tracing
from app.ops.logs import configure_logging
from app.protocols.native import classify, generate
from app.protocols.openai import routes as openai_compat
from app.protocols.openai.errors import OPENAI
from app.protocols.v2 import routes as v2
from app.protocols.v2.errors import V2
from app.web import routes as web
from seqcore.runtime import CUDA
from seqcore.tasks import LoadedModel
from seqcore.tasks.classification import SentimentModel
from seqcore.tasks.generation import CharModel

log = logging.getLogger("seqserve")


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (a
    container with ``cpus: 2`` on a 16-core host gets 2, not 16)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    n = n or 1
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]  # cgroup v2
    except (OSError, ValueError):
        try:  # cgroup v1
            quota = (cgroup / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (cgroup / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return n
    try:
        if quota not in ("max", "-1") and int(period) > 0:
            n = min(n, max(1, int(quota) // int(period)))
    except ValueError:
        pass
    return n


def parallel_calls(s: Settings) -> int:
    """SEQSERVE_PARALLEL_CALLS, or one ORT call at a time per available CPU, shared
    among the uvicorn worker processes (each call uses ``intra_op_threads`` CPUs), at
    most 8."""
    if s.parallel_calls:
        return s.parallel_calls
    return max(1, min(8, available_cpus() // (s.intra_op_threads * s.workers)))


def classification_loop(s: Settings, m: SentimentModel) -> ClassificationBatcher:
    return ClassificationBatcher(m, max_batch_size=s.max_batch_size,
                                 max_wait_ms=s.max_wait_ms, max_queue=s.max_queue,
                                 queue_timeout_s=s.queue_timeout_s, batching=s.batching,
                                 threads=parallel_calls(s),
                                 step_cost=gpu_step_cost if m.provider == CUDA
                                 else cpu_step_cost)


def generation_loop(s: Settings, m: CharModel) -> GenerationEngine:
    return GenerationEngine(m, max_streams=s.gen_max_streams, max_queue=s.gen_max_queue,
                            queue_timeout_s=s.queue_timeout_s, batching=s.gen_batching,
                            parallel=1 if m.provider == CUDA else parallel_calls(s),
                            flush_interval_s=s.gen_stream_interval_ms / 1000,
                            events_per_s=s.gen_stream_events_per_s,
                            drain_timeout_s=s.gen_timeout_s + s.queue_timeout_s + 5.0,
                            prefill_chunk_chars=s.gen_prefill_chunk_chars,
                            prefill_slice_s=s.gen_prefill_slice_ms / 1000,
                            prefill_max_cells=s.gen_prefill_max_cells,
                            max_prompt_chars_in_flight=s.gen_max_prompt_chars_in_flight)


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


# The loop that serves each task (seqcore.tasks.TASKS): a new task adds its line here.
LOOPS: dict[str, Callable[[Settings, Any], Loop]] = {
    SentimentModel.task: classification_loop,
    CharModel.task: generation_loop,
}


def start_loop(state: AppState, m: LoadedModel) -> Loop:
    """The started loop of ``m``'s task; the caller puts it in ``state.loops`` (at
    start-up, or at a reload's swap)."""
    loop = LOOPS[m.task](state.settings, m)
    loop.start()
    return loop


def start_loops(state: AppState) -> None:
    assert state.registry is not None
    for m in state.registry.models.values():
        metrics.MODEL_INFO.labels(m.name, m.version, m.task, m.provider).set(1)
        state.loops[m.name] = start_loop(state, m)


def _install_sighup(state: AppState) -> bool:
    """SIGHUP reloads the models (app/engine/reload.py) instead of ending the process. Only
    possible in the main thread of the serving process (``python -m app``, each
    uvicorn worker); elsewhere (a TestClient's thread) there is no signal to handle."""
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_sighup, state)
    except (NotImplementedError, RuntimeError, ValueError):
        return False
    return True


def _remove_sighup() -> None:
    try:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        # removing restores the default action, which would end a draining process
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    except (NotImplementedError, RuntimeError, ValueError):
        pass


def create_app(settings: Settings | None = None, registry: Registry | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_format)
    tracer = tracing.setup(settings)  # None unless SEQSERVE_OTEL=true
    state = AppState(settings=settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics.READY.set(0)
        state.registry = registry or Registry.load(settings)
        if settings.warmup:
            state.registry.warmup()
        else:
            for m in state.registry.models.values():
                m.warm = True
        start_loops(state)
        sighup = _install_sighup(state)
        state.ready = True
        if sighup and early_sighup_seen():  # sent while the models were loading
            on_sighup(state)
        metrics.READY.set(1)
        providers = {m.name: m.provider for m in state.registry.models.values()}
        log.info("ready: models %s, providers %s, batching=%s gen_batching=%s",
                 sorted(state.registry.models), providers, settings.batching,
                 settings.gen_batching)
        try:
            yield
        finally:
            state.ready = False
            state.not_ready_reason = "shutting down"
            metrics.READY.set(0)
            if sighup:
                _remove_sighup()
            retiring = list(state.retiring)  # old versions' loops still finishing work
            for task in list(state.tasks):  # a reload, or the retiring of an old version
                task.cancel()
            for loop in [*state.loops.values(), *retiring]:
                await loop.shutdown()
            log.info("stopped")

    app = FastAPI(
        title="seqserve",
        version=__version__,
        description="Recurrent sequence models on ONNX Runtime: IMDB sentiment with "
                    "attention, and a character-level text generator.",
        lifespan=lifespan,
        # /docs and /redoc come from app/web/routes.py, with their assets served from
        # the package (FastAPI's own pages load them from a CDN: blank when offline)
        docs_url=None, redoc_url=None,
        generate_unique_id_function=operation_id,
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
