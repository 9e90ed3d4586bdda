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


def model_for(state: AppState, task: str, name: str | None) -> LoadedModel:
    """The loaded model of ``task`` named ``name`` (or the first one): names are looked
    up among the loaded models only, never used as paths."""
    assert state.registry is not None
    m = state.registry.by_task(task, name)
    if m is not None:
        note_request(model=m.name, model_version=m.version)
    else:
        names = [k for k, v in state.registry.models.items() if v.task == task]
        raise ApiError(404, "model_not_found", f"model: no {task} model named "
                       f"{printable(repr(name), 80)}; "
                       f"loaded: {names}")
    return m
