"""The application's life: start-up, SIGHUP reloads, and shutdown.

``lifespan(state, registry)`` is the app's lifespan: it loads every model folder (or
takes the registry it was given), warms each session up, starts one loop per model
(``app.engine.factory``), and only then reports ready. SIGHUP schedules a reload of
every model in the background (``app.engine.reload`` does the reload itself); one
sent while the models were still loading is noted and acted on once ready. On
shutdown (SIGTERM: uvicorn stops accepting and lets in-flight requests finish within
SEQSERVE_SHUTDOWN_GRACE_S) the app turns not-ready and stops its loops after the last
request, the loops of replaced versions still finishing their work included.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from app.deps import AppState
from app.engine.factory import start_loop
from app.engine.registry import Registry
from app.engine.reload import reload_models
from app.ops import metrics

log = logging.getLogger("seqserve")

_early_sighup = threading.Event()


def catch_early_sighup() -> None:
    """Until the lifespan installs ``on_sighup``, a SIGHUP is only noted (the serving
    process's entry point calls this; nothing happens outside the main thread)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGHUP, lambda signum, frame: _early_sighup.set())


def early_sighup_seen() -> bool:
    """Whether a SIGHUP came before the reload handler was installed (and forget it)."""
    seen = _early_sighup.is_set()
    _early_sighup.clear()
    return seen


def on_sighup(state: AppState) -> None:
    """The SIGHUP handler (event loop): a reload of every model, in the background."""
    log.info("SIGHUP: reloading the models under %s", state.settings.models_dir)

    async def run() -> None:
        try:
            outcomes = await reload_models(state)
        except Exception as e:  # not ready yet, stopping: nothing to reload
            log.warning("SIGHUP: no reload (%s)", e)
            return
        summary = ", ".join(f"{o.model}: {o.result}" for o in outcomes)
        log.info("SIGHUP reload done: %s", summary or "no models")

    state.spawn(run())


def _install_sighup(state: AppState) -> bool:
    """SIGHUP reloads the models instead of ending the process. Only possible in the
    main thread of the serving process (``python -m app``, each uvicorn worker);
    elsewhere (a TestClient's thread) there is no signal to handle."""
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


def start_loops(state: AppState) -> None:
    """One started loop per loaded model, in ``state.loops``."""
    assert state.registry is not None
    for m in state.registry.models.values():
        metrics.MODEL_INFO.labels(m.name, m.version, m.task, m.provider).set(1)
        state.loops[m.name] = start_loop(state.settings, m, state.classifier_calls)


async def _start(state: AppState, registry: Registry | None) -> bool:
    """Models loaded and warm, loops started, SIGHUP installed: ready. Whether SIGHUP
    is handled here (see ``_install_sighup``)."""
    settings = state.settings
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
    return sighup


async def _stop(state: AppState, sighup: bool) -> None:
    """Not ready, then every loop stopped (a reload's and an old version's included)."""
    state.ready = False
    state.not_ready_reason = "shutting down"
    metrics.READY.set(0)
    if sighup:
        _remove_sighup()
    retiring = list(state.retiring)  # old versions' loops still finishing work
    for task in list(state.tasks):  # a reload, or the retiring of an old version
        task.cancel()
    for loop in [*state.loops.values(), *retiring]:
        await loop.stop()
    log.info("stopped")


def lifespan(state: AppState, registry: Registry | None = None
             ) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """The app's lifespan (``FastAPI(lifespan=...)``): ``registry`` when given (tests),
    else the models folder of ``state.settings``."""

    @asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        sighup = await _start(state, registry)
        try:
            yield
        finally:
            await _stop(state, sighup)

    return run
