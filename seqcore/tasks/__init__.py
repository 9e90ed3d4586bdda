"""Tasks: one module per task, each a ``LoadedModel`` subclass with named stages.

- ``load``: the folder's graph is checked against the task's input/output contract and
  its vocabulary read (``from_folder``);
- ``encode``: a request's text -> ids (the model's own tokenizer);
- ``run``: a padded batch through ONNX Runtime;
- ``decode``: a row's outputs -> the answer's fields.

A task module registers its class with ``@register``; ``load_model`` picks the class
by the manifest's ``task``. Adding a task is one new module here (plus the loop that
serves it in the app, registered the same way).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import onnxruntime as ort

from seqcore import runtime
from seqcore.modelfolder import ModelFolder, ModelFolderError, fingerprint

# The checks a model folder passes before it serves, in order: the server runs them at
# start-up (app/engine/registry.py) and at reload (app/engine/reload.py), ``python -m seqcore.folder
# check`` runs them alone. "load": the manifest, graph and vocabulary are read and ONNX
# Runtime loads the graph; "contract": the graph's inputs and outputs are the task's
# roles; "batch-invariance": a row gives alone what it gives in a padded batch beside a
# longer one (and finite outputs); "warm-up": the shapes of the first requests run.
CHECKS = ("load", "contract", "batch-invariance", "warm-up")


class ModelLoadError(ModelFolderError):
    """A model folder cannot be served (missing file, wrong graph, failed check);
    ``check`` names the check of ``CHECKS`` that failed."""

    def __init__(self, message: str, check: str = "load"):
        super().__init__(message)
        self.check = check


@dataclass
class LoadedModel:
    """A model folder loaded into an ONNX Runtime session, and what is known of it."""

    task: ClassVar[str] = ""
    name: str
    version: str
    folder: Path
    manifest: dict[str, Any]
    session: ort.InferenceSession
    provider: str
    load_seconds: float = 0.0
    warm: bool = False
    fingerprint: str = ""  # of the manifest, graph and vocab files, as loaded
    loaded_at: float = field(default_factory=time.time)
    # why the last reload of this model's folder failed (this version kept serving);
    # None when it has not failed since this version was loaded
    reload_error: str | None = None

    @classmethod
    def from_folder(cls, folder: ModelFolder, common: dict[str, Any]) -> LoadedModel:
        raise NotImplementedError

    def warmup(self) -> None:
        """Runs the shapes the first requests will, so they do not pay for it."""

    def prepare_split(self, graph: Path,
                      make_session: Callable[..., ort.InferenceSession]) -> None:
        """Tasks whose lone calls can use two cores prepare for it here (the
        classifier: its graph cut in two, seqcore/split.py; the generator: a second
        session with two intra-op threads). ``make_session(graph, threads=1)`` makes a
        CPU session of a graph (bytes or path)."""

    def probe(self, ids: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """The first output of a batch (one row per row), for ``smoke_check``."""
        raise NotImplementedError

    @property
    def probe_vocab(self) -> int:
        """Ids below this are valid probe inputs."""
        return 2

    def probe_problem(self, out: np.ndarray) -> str | None:
        """What is wrong with the probe batch's first output, if anything (the
        classifier: a probability outside [0, 1], a logit)."""
        return None

    def contract(self) -> str:
        """The graph's inputs and outputs, in words (``python -m seqcore.folder check``)."""
        ins = ", ".join(i.name for i in self.session.get_inputs())
        outs = ", ".join(o.name for o in self.session.get_outputs())
        return f"inputs {ins} -> outputs {outs}"

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        return {"name": self.name, "version": self.version, "task": self.task,
                "provider": self.provider, "ready": self.warm,
                # manifests from before --cell are all LSTMs
                "cell": m.get("cell", "lstm"), "ngram_term": "ngram" in m,
                "architecture": m.get("architecture"), "parameters": m.get("parameters"),
                "metrics": m.get("metrics", {}), "export_checks": m.get("export_checks", {}),
                # each figure of metrics -> the set it was computed on (null: folders
                # written before training named them)
                "evaluation_sets": m.get("evaluation_sets"),
                "created_at": m.get("created_at"), "model_sha256": m.get("model_sha256"),
                "fingerprint": self.fingerprint,
                "loaded_at": datetime.fromtimestamp(self.loaded_at, UTC).isoformat(
                    timespec="seconds"),
                "reload_error": self.reload_error}


TASKS: dict[str, type[LoadedModel]] = {}
M = TypeVar("M", bound=type[LoadedModel])


def register(cls: M) -> M:
    """Class decorator: ``cls`` serves manifests whose ``task`` is ``cls.task``."""
    TASKS[cls.task] = cls
    return cls


def check_contract(folder: ModelFolder, sess: ort.InferenceSession, inputs: set[str],
                   outputs: list[str]) -> tuple[set[str], set[str]]:
    """The graph's input and output names, if it has exactly ``inputs`` and at least
    ``outputs``; ``ModelLoadError`` saying what it has otherwise."""
    have_in = {i.name for i in sess.get_inputs()}
    have_out = {o.name for o in sess.get_outputs()}
    if have_in != inputs or not set(outputs) <= have_out:
        raise ModelLoadError(f"{folder.graph_path}: expected inputs {sorted(inputs)} and outputs "
                             f"{outputs}, found {sorted(have_in)} -> {sorted(have_out)}",
                             "contract")
    return have_in, have_out


def load_model(path: Path, *, device: str = "auto", threads: int = 1,
               spinning: bool = False, split: bool = False) -> LoadedModel:
    """The model folder at ``path``, loaded for its task; ``ModelLoadError`` naming the
    file and the problem when it cannot be served. ``split``: on the CPU, also prepare
    lone calls on two cores (``LoadedModel.prepare_split``; needs the onnx package)."""
    import seqcore.tasks.classification  # noqa: F401  (registers the tasks)
    import seqcore.tasks.generation  # noqa: F401

    t0 = time.perf_counter()
    digest = fingerprint(path)  # before reading: a change during the load is seen next time
    try:
        folder = ModelFolder.open(path)
    except ModelFolderError as e:
        raise ModelLoadError(str(e)) from None
    cls = TASKS.get(folder.task)
    if cls is None:
        raise ModelLoadError(f"{folder.manifest_path}: unknown task {folder.task!r} "
                             f"(known: {sorted(TASKS)})")
    if not folder.graph_path.is_file():
        raise ModelLoadError(f"{folder.graph_path}: file is missing")
    try:
        providers = runtime.choose_providers(device)
    except runtime.ProviderError as e:
        raise ModelLoadError(str(e)) from None
    try:
        sess = runtime.session(folder.graph_path, threads=threads, providers=providers,
                               spinning=spinning)
    except Exception as e:  # ORT raises several private exception types
        raise ModelLoadError(f"{folder.graph_path}: ONNX Runtime cannot load the model "
                             f"({e})") from None
    active = sess.get_providers()[0]
    if device == "cuda" and active != runtime.CUDA:
        raise ModelLoadError(
            f"{folder.graph_path}: SEQSERVE_DEVICE=cuda but ONNX Runtime fell back to "
            f"{active} (CUDA 13 / cuDNN 9 libraries missing?)")
    common = dict(name=folder.name, version=folder.version, folder=path,
                  manifest=folder.manifest, session=sess, provider=active)
    try:
        model = cls.from_folder(folder, common)
    except ModelLoadError:
        raise
    except ModelFolderError as e:
        raise ModelLoadError(str(e)) from None
    except (KeyError, ValueError, TypeError) as e:
        raise ModelLoadError(f"{folder.vocab_path} or manifest: malformed ({e!r})") from None
    if split and active == runtime.CPU:
        model.prepare_split(folder.graph_path, lambda graph, threads=1: runtime.session(
            graph, threads=threads, providers=[runtime.CPU], spinning=spinning))
    model.load_seconds = time.perf_counter() - t0
    model.fingerprint = digest
    return model


def probe_batch(vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """The padded batch the load-time checks run: two rows of different lengths (12
    and 5) of varied ids below ``vocab``, above the padding and ``<unk>`` ids where the
    vocabulary has any."""
    low = 2 if vocab > 2 else 0
    span = max(vocab - low, 1)
    rows = [[(7 * k) % span + low for k in range(1, 13)], [(5 * k) % span + low for k in range(1, 6)]]
    return runtime.pad_rows(rows, 1)


def smoke_check(model: LoadedModel) -> float | None:
    """Cheap checks of a loaded model before it serves: a batch of two rows of
    different lengths gives each row what it gives alone (no padding leaks between
    rows), and the outputs are finite (and in range: ``probe_problem``). Raises
    ``ModelLoadError`` saying what failed; returns the largest difference, or None for
    a task without a probe."""
    ids, lens = probe_batch(model.probe_vocab)
    probe: Callable[[np.ndarray, np.ndarray], np.ndarray] = model.probe
    try:
        together = probe(ids, lens)
        alone = [probe(ids[k : k + 1, : lens[k]], lens[k : k + 1])[0] for k in range(2)]
    except NotImplementedError:
        return None
    except Exception as e:  # ORT's several exception types
        raise ModelLoadError(f"{model.folder}: a test batch failed ({type(e).__name__}: {e})",
                             "batch-invariance") from None
    together = np.asarray(together, dtype=np.float64)
    if not np.all(np.isfinite(together)):
        raise ModelLoadError(f"{model.folder}: a test batch gave non-finite outputs",
                             "batch-invariance")
    problem = model.probe_problem(together)
    if problem:
        raise ModelLoadError(f"{model.folder}: {problem}", "contract")
    worst = max(float(np.max(np.abs(together[k] - np.asarray(alone[k])))) for k in range(2))
    if worst > 1e-3:
        raise ModelLoadError(f"{model.folder}: rows batched together differ from the same rows "
                             f"alone by {worst:.3g} (the graph is not batch-invariant: does it "
                             "read `lengths`?)", "batch-invariance")
    return worst


def warm_up(model: LoadedModel) -> float:
    """``model.warmup()``, its seconds; ``ModelLoadError`` (check "warm-up") when it fails."""
    t0 = time.perf_counter()
    try:
        model.warmup()
    except Exception as e:  # ORT's several exception types, a shape the graph refuses
        raise ModelLoadError(f"{model.folder}: the warm-up failed ({type(e).__name__}: {e})",
                             "warm-up") from None
    model.warm = True
    return time.perf_counter() - t0


def checked_model(path: Path, *, warmup: bool = True, **load: Any) -> LoadedModel:
    """The model folder at ``path`` loaded (``load_model(path, **load)``) and checked as
    before it serves: the contract, batch invariance, and (``warmup``) the warm-up.
    ``ModelLoadError`` whose ``check`` names the check that failed otherwise."""
    model = load_model(path, **load)
    smoke_check(model)
    if warmup:
        warm_up(model)
    return model


def run_checks(path: Path, **load: Any) -> tuple[LoadedModel | None, list[tuple[str, bool, str]]]:
    """Every check of ``CHECKS`` on the folder at ``path``, as ``checked_model`` runs
    them, up to the first that fails: (the model if all passed, [(check, passed, what
    was found)])."""
    out: list[tuple[str, bool, str]] = []

    def failed(e: ModelLoadError) -> tuple[None, list[tuple[str, bool, str]]]:
        if e.check == "contract" and not out:
            out.append(("load", True, "ONNX Runtime loads the graph"))
        out[:] = [x for x in out if x[0] != e.check]
        out.append((e.check, False, str(e)))
        return None, out

    try:
        model = load_model(path, **load)
    except ModelLoadError as e:
        return failed(e)
    out.append(("load", True, f"{model.task} model {model.name!r} version {model.version} "
                f"on {model.provider} in {model.load_seconds:.2f}s"))
    out.append(("contract", True, model.contract()))
    try:
        worst = smoke_check(model)
    except ModelLoadError as e:
        return failed(e)
    out.append(("batch-invariance", True, "rows alone and in a padded batch differ by at most "
                f"{worst:.2g}" if worst is not None else "not applicable to this task"))
    try:
        seconds = warm_up(model)
    except ModelLoadError as e:
        return failed(e)
    out.append(("warm-up", True, f"{seconds:.3f}s"))
    return model, out
