"""Hot reload of model folders: ``SIGHUP`` (every model) and ``POST
/v1/models/{name}/reload`` (one model) rescan SEQSERVE_MODELS_DIR.

A folder whose manifest, graph or vocabulary changed since it was loaded (its
``fingerprint``, seqcore/modelfolder.py) is a new version. It is loaded beside the serving
one, in a thread (the event loop keeps answering), and must pass the same checks as
at start-up: ONNX Runtime loads it, its inputs and outputs are the task's contract,
its task is the one it replaces, a two-row batch gives each row what it gives alone
(``smoke_check``), and the warm-up runs. Only then is it swapped in: the registry
entry and the model's batching loop or generation engine change in one step on the
event loop, with no ``await`` in between. A route looks up the model and its loop in
one step too (no ``await`` between ``model_for`` and ``state.loops[...]``), so every
request runs wholly on one version: requests and streams that started before the swap
finish on the old loop, which is retired once it has nothing left (``_retire``), and
the old session goes with it.

A version that fails any check leaves the old one serving. Why is logged (one ERROR
line), shown as ``reload_error`` on the model in /v1/models, and counted:
``seqserve_model_reloads_total{result="failed"}`` and
``seqserve_model_reload_failed`` = 1 until a later reload of that model succeeds.
A folder with a model name not loaded yet is loaded and starts serving; a folder
that disappeared leaves its model serving (removing a model under traffic needs a
restart) and is reported as a failed reload.

Reloads run one at a time (a lock): a second SIGHUP during a reload waits for it.
SIGHUP itself, and scheduling a reload in the background, are the application's
lifecycle (app/lifecycle.py); this module is the reload of the models.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from app.config import Settings
from app.engine.cores import ClassifierCalls
from app.engine.factory import Loop, start_loop
from app.engine.registry import Registry, load_model
from app.ops import metrics
from seqcore.modelfolder import ModelFolderError, fingerprint, not_model_folders, scan
from seqcore.tasks import LoadedModel, ModelLoadError, smoke_check

log = logging.getLogger("seqserve.reload")


class AppState(Protocol):
    """What a reload reads and changes of the application's state (``app.deps.AppState``
    is one): the registry and the loops, swapped together on the event loop."""

    settings: Settings
    registry: Registry | None
    loops: dict[str, Loop]
    retiring: set[Loop]
    ready: bool
    reload_lock: asyncio.Lock
    classifier_calls: ClassifierCalls

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task: ...


@dataclass
class ReloadOutcome:
    model: str
    result: str  # reloaded | loaded | unchanged | failed
    version: str | None = None  # serving after the reload
    previous_version: str | None = None
    fingerprint: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "result": self.result, "version": self.version,
                "previous_version": self.previous_version, "fingerprint": self.fingerprint,
                "reload_error": self.error}


def _prepare(folder: Path, state: AppState, old: LoadedModel | None) -> LoadedModel:
    """Load and check a model version beside the serving one (in a worker thread)."""
    m = load_model(folder, state.settings)  # ORT load, input/output contract
    if old is not None and m.task != old.task:
        raise ModelLoadError(f"{folder}: task {m.task!r} cannot replace the serving "
                             f"{old.task!r} model {old.name!r} (restart to change a task)")
    smoke_check(m)
    t0 = time.perf_counter()
    m.warmup()
    m.warm = True
    log.info("warmed up %s version %s in %.3fs", m.name, m.version, time.perf_counter() - t0)
    return m


async def _retire(state: AppState, loop: Loop) -> None:
    """Let an old version's loop finish the work it holds, then stop it. Nothing new
    reaches it after the swap, so once it is empty it stays empty."""
    try:
        await loop.retire_when_done()
        log.info("retired the previous version %s of %s", loop.model.version, loop.model.name)
    finally:
        state.retiring.discard(loop)


def _swap(state: AppState, new: LoadedModel, old: LoadedModel | None) -> None:
    """Puts ``new`` in service (event loop, no ``await``: atomic for the routes)."""
    assert state.registry is not None
    # its threads are running before any request sees it
    loop = start_loop(state.settings, new, state.classifier_calls)
    state.registry.models[new.name] = new
    if old is not None:
        previous = state.loops.pop(old.name, None)
        if (old.name, old.version, old.task, old.provider) != (
                new.name, new.version, new.task, new.provider):
            metrics.MODEL_INFO.remove(old.name, old.version, old.task, old.provider)
    else:
        previous = None
    state.loops[new.name] = loop
    metrics.MODEL_INFO.labels(new.name, new.version, new.task, new.provider).set(1)
    if previous is not None:
        state.retiring.add(previous)
        state.spawn(_retire(state, previous))


def _failed(state: AppState, name: str, error: str, old: LoadedModel | None) -> ReloadOutcome:
    log.error("reload of model %s failed, %s: %s", name,
              f"version {old.version} serves on" if old else "not loaded", error)
    metrics.MODEL_RELOADS.labels(name, "failed").inc()
    metrics.MODEL_RELOAD_FAILED.labels(name).set(1)
    if old is not None:
        old.reload_error = error
    return ReloadOutcome(name, "failed", old.version if old else None,
                         old.version if old else None, old.fingerprint if old else None, error)


async def _reload_one(state: AppState, name: str, folder: Path | None, problem: str | None
                      ) -> ReloadOutcome:
    assert state.registry is not None
    old = state.registry.models.get(name)
    if problem is not None:
        return _failed(state, name, problem, old)
    if folder is None:
        return _failed(state, name, f"no folder under {state.settings.models_dir} holds "
                       f"model {name!r} any more; the loaded version serves until a restart", old)
    digest = await asyncio.to_thread(fingerprint, folder)
    if old is not None and digest == old.fingerprint and folder == old.folder:
        old.reload_error = None  # what failed before is gone (the files were put back)
        metrics.MODEL_RELOADS.labels(name, "unchanged").inc()
        metrics.MODEL_RELOAD_FAILED.labels(name).set(0)
        return ReloadOutcome(name, "unchanged", old.version, old.version, old.fingerprint)
    try:
        new = await asyncio.to_thread(_prepare, folder, state, old)
    except ModelLoadError as e:
        return _failed(state, name, str(e), old)
    except Exception as e:  # a bug or an unforeseen ORT error: the old version serves on
        log.exception("reload of model %s: unexpected error", name)
        return _failed(state, name, f"{type(e).__name__}: {e}", old)
    if new.name != name:  # the manifest changed its name between the scan and the load
        return _failed(state, name, f"{folder}: the manifest now names {new.name!r}", old)
    _swap(state, new, old)
    result = "reloaded" if old is not None else "loaded"
    metrics.MODEL_RELOADS.labels(name, result).inc()
    metrics.MODEL_RELOAD_FAILED.labels(name).set(0)
    log.info("%s model %s: version %s (fingerprint %s) serves%s", result, name, new.version,
             new.fingerprint, f", replacing {old.version} ({old.fingerprint})" if old else "")
    return ReloadOutcome(name, result, new.version, old.version if old else None,
                         new.fingerprint)


async def reload_models(state: AppState, only: str | None = None) -> list[ReloadOutcome]:
    """Rescan the models folder and reload what changed: every model, or ``only``
    that one. Raises ``KeyError`` when ``only`` is neither loaded nor in the folder."""
    async with state.reload_lock:
        if state.registry is None or not state.ready:
            raise RuntimeError("the models are not loaded yet (or the server is stopping)")
        root = Path(state.settings.models_dir)
        try:
            names, problems, conflicts = await asyncio.to_thread(scan, root, False)
        except ModelFolderError as e:  # the whole folder is gone
            names, problems, conflicts = {}, {}, {}
            folder_error: str | None = str(e)
        else:
            folder_error = None
            # as at start-up: a folder that is not a model folder is said, not skipped
            for folder, why in (await asyncio.to_thread(not_model_folders, root)).items():
                log.warning("%s: not a model folder, not served: %s", folder, why)
        loaded = state.registry.models
        if only is not None:
            if only not in loaded and only not in names and only not in conflicts:
                raise KeyError(only)
            targets = [only]
        else:
            targets = sorted(set(loaded) | set(names) | set(conflicts))
        outcomes = []
        for name in targets:
            old = loaded.get(name)
            problem = folder_error or conflicts.get(name)
            if problem is None and name not in names and old is not None:
                problem = problems.get(old.folder)  # its manifest became unreadable
            outcomes.append(await _reload_one(state, name, names.get(name), problem))
        return outcomes
