"""The application's shared state and the dependencies that hand it to routes."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from pydantic import SecretStr

from app.config import Settings
from app.engine.batcher import ClassificationBatcher
from app.engine.cores import ClassifierCalls
from app.engine.factory import Loop
from app.engine.generator import GenerationEngine
from app.engine.registry import Registry
from app.http.errors import ApiError
from app.ops.logs import note_request, printable
from seqcore.tasks import LoadedModel


@dataclass
class AppState:
    settings: Settings
    registry: Registry | None = None
    loops: dict[str, Loop] = field(default_factory=dict)  # by model name
    ready: bool = False
    not_ready_reason: str = "starting: models not loaded yet"
    # hot reload (app/engine/reload.py): one at a time; the loops of replaced versions while
    # they finish their work; background tasks, kept referenced until they end
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # models with a reload request under way: another request for one of them gets 429
    reloading: set[str] = field(default_factory=set)
    retiring: set[Loop] = field(default_factory=set)
    tasks: set[asyncio.Task] = field(default_factory=set)
    # the classifier calls running now, shared by this app's loops (app/engine/cores.py)
    classifier_calls: ClassifierCalls = field(default_factory=ClassifierCalls)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        """Runs ``coro`` in the background (event loop), keeping a reference to it."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def not_ready(self) -> str | None:
        """Why this replica should get no traffic, or None: the one readiness rule
        (/readyz, the V2 server and model probes). Ready once every model is loaded and
        warmed up, and while every batching and generation thread runs."""
        if not self.ready:
            return self.not_ready_reason
        dead = self.dead_loops()
        return "; ".join(dead) if dead else None

    def dead_loops(self) -> list[str]:
        """Why each batching or generation loop that has died stopped (empty: all run)."""
        return [x.dead or "a model thread stopped" for x in self.loops.values() if not x.alive]

    # views of ``loops`` by kind (built on each call: for tests and diagnostics, not for
    # the request path, which looks up ``loops`` directly)
    @property
    def batchers(self) -> dict[str, ClassificationBatcher]:
        return {k: v for k, v in self.loops.items() if isinstance(v, ClassificationBatcher)}

    @property
    def engines(self) -> dict[str, GenerationEngine]:
        return {k: v for k, v in self.loops.items() if isinstance(v, GenerationEngine)}


# Dependencies are `async def` on purpose: FastAPI runs plain `def` dependencies in a
# thread pool, a costly hop on every request for a dictionary lookup.
async def get_state(request: Request) -> AppState:
    return request.app.state.seqserve


async def get_settings(request: Request) -> Settings:
    return request.app.state.seqserve.settings


def api_key_ok(settings: Settings, authorization: str) -> bool:
    """No key configured, or ``Authorization: Bearer <key>``. Constant-time comparison;
    the key is never logged."""
    return bearer_ok(settings.api_key, authorization)


def bearer_ok(key: SecretStr | None, authorization: str) -> bool:
    """No key, or ``Authorization: Bearer <key>`` (constant-time comparison)."""
    if key is None:
        return True
    scheme, _, supplied = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        supplied.strip().encode(), key.get_secret_value().encode())


# what a not-ready answer asks a client (or a load balancer) to wait, everywhere
NOT_READY_HEADERS = {"Retry-After": "1"}


def model_for(state: AppState, task: str | None, name: str | None,
              version: str | None = None) -> LoadedModel:
    """The loaded model named ``name`` (of ``task`` when one is given; with no name, the
    default model of ``task``), at ``version`` when one is asked for. Names are looked
    up among the loaded models only, never used as paths. Every route's lookup, and
    its one 404 (``model_not_found``)."""
    registry = state.registry
    m = None
    if registry is not None:
        m = registry.by_task(task, name) if task else registry.models.get(name or "")
    if m is None or (version is not None and version != m.version):
        raise model_not_found(state, task, name, version)
    note_request(model=m.name, model_version=m.version)
    return m


def model_not_found(state: AppState, task: str | None, name: str | None,
                    version: str | None = None) -> ApiError:
    """The 404 of a model name that no loaded model answers to."""
    models = state.registry.models.values() if state.registry else []
    loaded = [f"{m.name} {m.version}" if version else m.name for m in models
              if task is None or m.task == task]
    what = f"{task} model" if task else "model"
    at = f" at version {printable(repr(version), 80)}" if version is not None else ""
    return ApiError(404, "model_not_found", f"model: no {what} named "
                    f"{printable(repr(name), 80)}{at}; loaded: {loaded}")
