"""The loaded models of the service, by name.

Model folders are read by the core (``seqcore.modelfolder``, ``seqcore.tasks``); this
module applies the service's settings to them. Every folder with a manifest is loaded
at start-up; a missing or corrupt file raises ``ModelLoadError`` naming the file and
the problem, and the process exits non-zero (we do not start degraded: a replica that
cannot serve should fail its deployment, not sit behind a load balancer). Two folders
whose manifests give the same model name are refused the same way, with one error
naming both (otherwise the one sorting last would silently serve every request).

Each loaded model carries a ``fingerprint`` of its manifest, graph and vocabulary
files: a reload (app/reload.py) loads a folder again only when it changed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from app.config import Settings
from seqcore import runtime, tasks
from seqcore.modelfolder import ModelFolderError, scan
from seqcore.tasks import LoadedModel, ModelLoadError

log = logging.getLogger("seqserve.registry")


def load_model(folder: Path, settings: Settings) -> LoadedModel:
    """The model folder at ``folder``, loaded with the service's device and threads."""
    return tasks.load_model(folder, device=str(settings.device),
                            threads=settings.intra_op_threads,
                            spinning=settings.allow_spinning,
                            split=settings.split_lone_calls)


class Registry:
    """The loaded models, by name. Requests may only name models in this set."""

    def __init__(self, models: list[LoadedModel]):
        self.models = {m.name: m for m in models}

    @classmethod
    def load(cls, settings: Settings) -> Registry:
        runtime.quiet_telemetry()
        root = Path(settings.models_dir)
        try:
            names, problems, _ = scan(root)
        except ModelFolderError as e:
            raise ModelLoadError(str(e)) from None
        if problems:
            raise ModelLoadError(next(iter(problems.values())))
        if not names:
            raise ModelLoadError(f"{root}: no model folders (each needs a manifest.json)")
        models = [load_model(f, settings) for f in names.values()]
        for m in models:
            log.info("loaded model %s version %s task %s on %s in %.2fs", m.name, m.version,
                     m.task, m.provider, m.load_seconds)
        return cls(models)

    def warmup(self) -> None:
        for m in self.models.values():
            t0 = time.perf_counter()
            m.warmup()
            m.warm = True
            log.info("warmed up %s in %.3fs", m.name, time.perf_counter() - t0)

    def by_task(self, task: str, name: str | None = None) -> LoadedModel | None:
        if name is not None:
            m = self.models.get(name)
            return m if m is not None and m.task == task else None
        return next((m for m in self.models.values() if m.task == task), None)

    @property
    def ready(self) -> bool:
        return bool(self.models) and all(m.warm for m in self.models.values())
