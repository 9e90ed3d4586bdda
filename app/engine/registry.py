"""The loaded models of the service, by name.

Model folders are read by the core (``seqcore.modelfolder``, ``seqcore.tasks``); this
module applies the service's settings to them. Every folder with a manifest is loaded
at start-up; a missing or corrupt file raises ``ModelLoadError`` naming the file and
the problem, and the process exits non-zero (we do not start degraded: a replica that
cannot serve should fail its deployment, not sit behind a load balancer). Two folders
whose manifests give the same model name are refused the same way, with one error
naming both (otherwise the one sorting last would silently serve every request).

Every model passes the checks of ``seqcore.tasks.CHECKS`` before it serves, at
start-up as at a reload: ONNX Runtime loads it, its inputs and outputs are its task's
contract, a row gives alone what it gives in a padded batch (batch invariance), and
(SEQSERVE_WARMUP) the warm-up runs. A folder that fails one stops the start-up with
one line naming the folder and the check (``python -m app`` exits 3). A folder under
the models folder that is not a model folder (no manifest.json: a graph copied in
alone) or cannot be read is logged (WARNING), never skipped in silence.

Each task has a default model, the one a request that names none gets:
SEQSERVE_DEFAULT_MODELS pins it; without it the bundled name (``BUNDLED_DEFAULTS``)
when such a model is loaded, else the first by folder name. Which one, and why, is
logged at start-up, and /v1/models marks it (``"default": true``).

Each loaded model carries a ``fingerprint`` of its manifest, graph and vocabulary
files: a reload (app/engine/reload.py) loads a folder again only when it changed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import ClassVar

from app.config import Settings
from seqcore import runtime, tasks
from seqcore.modelfolder import ModelFolderError, not_model_folders, scan
from seqcore.tasks import LoadedModel, ModelLoadError

log = logging.getLogger("seqserve.registry")

# the default model of a task when SEQSERVE_DEFAULT_MODELS names none and one of this
# name is loaded: the models this repository ships
BUNDLED_DEFAULTS = {"text-classification": "sentiment", "text-generation": "chargen"}


class DefaultModelError(ModelLoadError):
    """SEQSERVE_DEFAULT_MODELS names a model that is not loaded (a setting's mistake:
    ``python -m app`` exits 2)."""


def choose_defaults(models: list[LoadedModel], pinned: dict[str, str]) -> dict[str, str]:
    """Task -> the name of its default model (see the module's docstring), logged."""
    by_task: dict[str, list[str]] = {}
    for m in models:
        by_task.setdefault(m.task, []).append(m.name)
    for task, name in pinned.items():
        if name not in by_task.get(task, []):
            raise DefaultModelError(
                f"SEQSERVE_DEFAULT_MODELS={task}={name}: no {task} model named {name!r} is "
                f"loaded (loaded {task} models: {by_task.get(task, [])}; tasks loaded: "
                f"{sorted(by_task)})")
    defaults = {}
    for task, names in by_task.items():
        if task in pinned:
            name, why, level = pinned[task], "SEQSERVE_DEFAULT_MODELS", logging.INFO
        elif BUNDLED_DEFAULTS.get(task) in names:
            name, why, level = BUNDLED_DEFAULTS[task], "the bundled model", logging.INFO
        else:
            name = names[0]
            why = "the first folder by name" + (
                f" of {len(names)}; SEQSERVE_DEFAULT_MODELS={task}=NAME pins one"
                if len(names) > 1 else ", the only one")
            level = logging.WARNING if len(names) > 1 else logging.INFO
        defaults[task] = name
        log.log(level, "default %s model: %s (%s)", task, name, why)
    return defaults


def load_model(folder: Path, settings: Settings) -> LoadedModel:
    """The model folder at ``folder``, loaded with the service's device and threads."""
    return tasks.load_model(folder, **load_options(settings))


def load_options(settings: Settings) -> dict:
    return dict(device=str(settings.device), threads=settings.intra_op_threads,
                spinning=settings.allow_spinning, split=settings.split_lone_calls)


class Registry:
    """The loaded models, by name. Requests may only name models in this set."""

    # (models folder, registry): loaded and checked by ``python -m app`` before uvicorn
    # starts (a failure is one line there), taken over by the app's start-up
    preloaded: ClassVar[tuple[Path, Registry] | None] = None

    def __init__(self, models: list[LoadedModel], defaults: dict[str, str] | None = None):
        self.models = {m.name: m for m in models}
        self.defaults = defaults or {}  # task -> the name of its default model

    @classmethod
    def load(cls, settings: Settings) -> Registry:
        root = Path(settings.models_dir)
        pre, Registry.preloaded = Registry.preloaded, None
        if pre is not None and pre[0].resolve() == root.resolve():
            return pre[1]
        runtime.quiet_telemetry()
        try:
            names, problems, _ = scan(root)
        except ModelFolderError as e:
            raise ModelLoadError(str(e)) from None
        for folder, why in problems.items():
            raise ModelLoadError(f"model folder {folder} failed the load check: {why}")
        for folder, why in not_model_folders(root).items():
            log.warning("%s: not a model folder, not served: %s", folder, why)
        if not names:
            raise ModelLoadError(f"{root}: no model folders (each needs a manifest.json)")
        models = []
        for f in names.values():
            try:
                m = tasks.checked_model(f, warmup=settings.warmup, **load_options(settings))
            except ModelLoadError as e:
                raise ModelLoadError(f"model folder {f} failed the {e.check} check: {e}",
                                     e.check) from None
            log.info("loaded model %s version %s task %s on %s in %.2fs (checked: %s)",
                     m.name, m.version, m.task, m.provider, m.load_seconds,
                     ", ".join(tasks.CHECKS if settings.warmup else tasks.CHECKS[:-1]))
            models.append(m)
        return cls(models, choose_defaults(models, settings.default_models))

    def is_default(self, m: LoadedModel) -> bool:
        return self.defaults.get(m.task) == m.name

    def warmup(self) -> None:
        """Warms up the models not warm yet (``load`` warms them up when
        SEQSERVE_WARMUP is on)."""
        for m in self.models.values():
            if m.warm:
                continue
            t0 = time.perf_counter()
            m.warmup()
            m.warm = True
            log.info("warmed up %s in %.3fs", m.name, time.perf_counter() - t0)

    def by_task(self, task: str, name: str | None = None) -> LoadedModel | None:
        if name is not None:
            m = self.models.get(name)
            return m if m is not None and m.task == task else None
        m = self.models.get(self.defaults.get(task, ""))
        if m is not None and m.task == task:
            return m
        return next((m for m in self.models.values() if m.task == task), None)

    @property
    def ready(self) -> bool:
        return bool(self.models) and all(m.warm for m in self.models.values())
