"""Model discovery and ONNX Runtime sessions: the one place that reads model folders.

A model folder is ``<models_dir>/<name>/`` with ``manifest.json``, ``model.onnx`` and
``vocab.json`` (see training/manifest.py). Every folder with a manifest is loaded at
start-up; a missing or corrupt file raises ``ModelLoadError`` naming the file and the
problem, and the process exits non-zero (we do not start degraded: a replica that
cannot serve should fail its deployment, not sit behind a load balancer). Two folders
whose manifests give the same model name are refused the same way, with one error
naming both (otherwise the one sorting last would silently serve every request).

Each loaded model carries a ``fingerprint`` of its manifest, graph and vocabulary
files: a reload (app/reload.py) loads a folder again only when it changed. The
``version`` string comes from the manifest and already carries the graph's sha256.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from app.config import Device, Settings
from app.tokenizer import CharVocab, WordTokenizer

log = logging.getLogger("seqserve.registry")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

SENTIMENT_INPUTS = {"input_ids", "lengths"}
SENTIMENT_OUTPUTS = ["probability", "attention"]
# optional third output of a classifier with a wide n-gram term (training/ngrams.py):
# each token's share of the n-gram part of the logit
NGRAM_OUTPUT = "ngram_contributions"
CHAR_INPUTS = {"input_ids", "lengths", "h0", "c0"}
CHAR_OUTPUTS = ["logits", "hN", "cN"]


class ModelLoadError(RuntimeError):
    pass


@dataclass
class LoadedModel:
    name: str
    version: str
    task: str
    folder: Path
    manifest: dict[str, Any]
    session: ort.InferenceSession
    provider: str
    load_seconds: float = 0.0
    warm: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""  # of the manifest, graph and vocab files, as loaded
    loaded_at: float = field(default_factory=time.time)
    # why the last reload of this model's folder failed (this version kept serving);
    # None when it has not failed since this version was loaded
    reload_error: str | None = None

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        return {"name": self.name, "version": self.version, "task": self.task,
                "provider": self.provider, "ready": self.warm,
                # manifests from before --cell are all LSTMs
                "cell": m.get("cell", "lstm"), "ngram_term": "ngram" in m,
                "architecture": m.get("architecture"), "parameters": m.get("parameters"),
                "metrics": m.get("metrics", {}), "export_checks": m.get("export_checks", {}),
                "created_at": m.get("created_at"), "model_sha256": m.get("model_sha256"),
                "fingerprint": self.fingerprint,
                "loaded_at": datetime.fromtimestamp(self.loaded_at, UTC).isoformat(
                    timespec="seconds"),
                "reload_error": self.reload_error}


@dataclass
class SentimentModel(LoadedModel):
    """The classifier. Calls come from several batching threads at once (ONNX Runtime
    sessions may be run concurrently); each call uses ``intra_op_threads`` threads."""

    tokenizer: WordTokenizer | None = None
    has_ngrams: bool = False  # the graph also returns NGRAM_OUTPUT

    def run(self, ids: np.ndarray, lengths: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(probability [B], attention [B, T], n-gram contributions [B, T] or None)."""
        if self.has_ngrams:
            p, a, ng = self.session.run([*SENTIMENT_OUTPUTS, NGRAM_OUTPUT],
                                        {"input_ids": ids, "lengths": lengths})
            return p, a, ng
        p, a = self.session.run(SENTIMENT_OUTPUTS, {"input_ids": ids, "lengths": lengths})
        return p, a, None

    def warmup(self) -> None:
        tok = self.tokenizer
        assert tok is not None
        for B, T in ((1, 8), (1, tok.max_len), (4, tok.max_len)):
            ids = np.full((B, T), tok.unk_id, dtype=np.int64)
            self.run(ids, np.full(B, T, dtype=np.int64))


@dataclass
class CharModel(LoadedModel):
    vocab: CharVocab | None = None
    layers: int = 0
    hidden: int = 0

    def zero_state(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        h = np.zeros((self.layers, batch, self.hidden), dtype=np.float32)
        return h, h.copy()

    def run(self, ids: np.ndarray, lengths: np.ndarray, h: np.ndarray, c: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lo, hn, cn = self.session.run(CHAR_OUTPUTS, {"input_ids": ids, "lengths": lengths,
                                                     "h0": h, "c0": c})
        return lo, hn, cn

    def warmup(self) -> None:
        for B, T in ((1, 1), (1, 64), (8, 1)):
            h, c = self.zero_state(B)
            self.run(np.ones((B, T), dtype=np.int64), np.full(B, T, dtype=np.int64), h, c)


def _quiet_telemetry() -> None:
    # ORT's usage telemetry tries to persist a device id at every start (and logs a
    # warning in read-only containers); a service has no use for it.
    disable = getattr(ort, "disable_telemetry_events", None)
    if disable is not None:
        disable()


def choose_providers(device: Device) -> list[str]:
    available = ort.get_available_providers()
    if device == Device.cpu:
        return [CPU]
    if device == Device.cuda:
        if CUDA not in available:
            raise ModelLoadError(
                f"SEQSERVE_DEVICE=cuda but this onnxruntime has no CUDA provider "
                f"(available: {available}); install the gpu extra (onnxruntime-gpu)")
        return [CUDA, CPU]
    return [CUDA, CPU] if CUDA in available else [CPU]


def _session(path: Path, settings: Settings, providers: list[str]) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = settings.intra_op_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning",
                                "1" if settings.allow_spinning else "0")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        sess = ort.InferenceSession(str(path), so, providers=providers)
    except Exception as e:  # ORT raises several private exception types
        raise ModelLoadError(f"{path}: ONNX Runtime cannot load the model ({e})") from None
    return sess


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelLoadError(f"{path}: file is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    return data


def model_files(folder: Path, manifest: dict[str, Any]) -> list[Path]:
    """The files a model is made of: its manifest, graph and vocabulary."""
    files = manifest.get("files", {"model": "model.onnx", "vocab": "vocab.json"})
    if not isinstance(files, dict):
        files = {}
    return [folder / "manifest.json", folder / str(files.get("model", "model.onnx")),
            folder / str(files.get("vocab", "vocab.json"))]


def fingerprint(folder: Path) -> str:
    """A digest of the folder's manifest, graph and vocabulary (their bytes, so a
    copied-in file with an old mtime still counts as a change). A missing or unreadable
    file gives a digest of its own: the load that follows says what is wrong."""
    h = hashlib.sha256()
    try:
        manifest = json.loads((folder / "manifest.json").read_bytes())
    except (OSError, ValueError):
        manifest = {}
    for path in model_files(folder, manifest if isinstance(manifest, dict) else {}):
        h.update(str(path.name).encode() + b"\0")
        try:
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        except OSError as e:
            h.update(f"unreadable: {e}".encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def scan(root: Path, strict: bool = True
         ) -> tuple[dict[str, Path], dict[Path, str], dict[str, str]]:
    """The model folders under ``root``: by the model name their manifest gives, the
    folders whose manifest could not be read (folder -> why), and the names that two
    folders give (name -> an error naming both). ``strict`` (start-up) raises
    ``ModelLoadError`` for the first name given twice instead."""
    if not root.is_dir():
        raise ModelLoadError(f"{root}: models folder is missing (SEQSERVE_MODELS_DIR)")
    names: dict[str, Path] = {}
    problems: dict[Path, str] = {}
    conflicts: dict[str, str] = {}
    for folder in sorted(p for p in root.iterdir() if (p / "manifest.json").exists()):
        try:
            name = str(_read_json(folder / "manifest.json").get("name", folder.name))
        except ModelLoadError as e:
            problems[folder] = str(e)
            continue
        if name in names or name in conflicts:
            first = names.pop(name, None)
            conflicts[name] = conflicts.get(name) or (
                f"model name {name!r} is given by two folders, {first} and {folder}: rename "
                "one (its manifest's \"name\") or move it out of the models folder")
            if strict:
                raise ModelLoadError(conflicts[name])
            continue
        names[name] = folder
    return names, problems, conflicts


def smoke_check(model: LoadedModel) -> None:
    """Cheap checks of a loaded model before it serves: a batch of two rows of
    different lengths gives each row what it gives alone (no padding leaks between
    rows), and the outputs are finite. Raises ``ModelLoadError`` saying what failed."""
    rows = [np.arange(1, 6, dtype=np.int64) % 5 + 2, np.arange(1, 13, dtype=np.int64) % 7 + 2]
    ids = np.zeros((2, 12), dtype=np.int64)
    lens = np.array([5, 12], dtype=np.int64)
    for k, r in enumerate(rows):
        ids[k, : len(r)] = r
    try:
        if isinstance(model, SentimentModel):
            together = model.run(ids, lens)[0]
            alone = [model.run(r[None, :], np.array([len(r)], dtype=np.int64))[0][0] for r in rows]
        elif isinstance(model, CharModel):
            vocab = model.vocab.vocab_size if model.vocab else 2  # type: ignore[attr-defined]
            ids = ids % max(vocab, 2)
            h, c = model.zero_state(2)
            together = model.run(ids, lens, h, c)[0]
            alone = []
            for k in range(2):
                h1, c1 = model.zero_state(1)
                alone.append(model.run(ids[k : k + 1, : lens[k]], lens[k : k + 1], h1, c1)[0][0])
        else:
            return
    except Exception as e:  # ORT's several exception types
        raise ModelLoadError(f"{model.folder}: a test batch failed ({type(e).__name__}: {e})") from None
    together = np.asarray(together, dtype=np.float64)
    if not np.all(np.isfinite(together)):
        raise ModelLoadError(f"{model.folder}: a test batch gave non-finite outputs")
    worst = max(float(np.max(np.abs(together[k] - np.asarray(alone[k])))) for k in range(2))
    if worst > 1e-3:
        raise ModelLoadError(f"{model.folder}: rows batched together differ from the same rows "
                             f"alone by {worst:.3g} (the graph is not batch-invariant)")


def load_model(folder: Path, settings: Settings) -> LoadedModel:
    t0 = time.perf_counter()
    digest = fingerprint(folder)  # before reading: a change during the load is seen next time
    manifest = _read_json(folder / "manifest.json")
    files = manifest.get("files", {"model": "model.onnx", "vocab": "vocab.json"})
    task = manifest.get("task")
    model_path = folder / files.get("model", "model.onnx")
    vocab_path = folder / files.get("vocab", "vocab.json")
    if not model_path.is_file():
        raise ModelLoadError(f"{model_path}: file is missing")
    vocab_json = _read_json(vocab_path)
    providers = choose_providers(settings.device)
    sess = _session(model_path, settings, providers)
    active = sess.get_providers()[0]
    if settings.device == Device.cuda and active != CUDA:
        raise ModelLoadError(
            f"{model_path}: SEQSERVE_DEVICE=cuda but ONNX Runtime fell back to {active} "
            "(CUDA 13 / cuDNN 9 libraries missing?)")
    inputs = {i.name for i in sess.get_inputs()}
    outputs = {o.name for o in sess.get_outputs()}
    common = dict(name=manifest.get("name", folder.name), version=str(manifest.get("version", "0")),
                  task=str(task), folder=folder, manifest=manifest, session=sess, provider=active)
    try:
        if task == "text-classification":
            if inputs != SENTIMENT_INPUTS or not set(SENTIMENT_OUTPUTS) <= outputs:
                raise ModelLoadError(f"{model_path}: expected inputs {sorted(SENTIMENT_INPUTS)} "
                                     f"and outputs {SENTIMENT_OUTPUTS}, found {sorted(inputs)} "
                                     f"-> {sorted(outputs)}")
            model: LoadedModel = SentimentModel(**common,
                                                tokenizer=WordTokenizer.from_json(vocab_json),
                                                has_ngrams=NGRAM_OUTPUT in outputs)
        elif task == "text-generation":
            if inputs != CHAR_INPUTS or not set(CHAR_OUTPUTS) <= outputs:
                raise ModelLoadError(f"{model_path}: expected inputs {sorted(CHAR_INPUTS)} and "
                                     f"outputs {CHAR_OUTPUTS}, found {sorted(inputs)}")
            st = manifest.get("state") or {}
            model = CharModel(**common, vocab=CharVocab.from_json(vocab_json),
                              layers=int(st["layers"]), hidden=int(st["hidden"]))
        else:
            raise ModelLoadError(f"{folder / 'manifest.json'}: unknown task {task!r}")
    except (KeyError, ValueError, TypeError) as e:
        raise ModelLoadError(f"{vocab_path} or manifest: malformed ({e!r})") from None
    model.load_seconds = time.perf_counter() - t0
    model.fingerprint = digest
    return model


class Registry:
    """The loaded models, by name. Requests may only name models in this set."""

    def __init__(self, models: list[LoadedModel]):
        self.models = {m.name: m for m in models}

    @classmethod
    def load(cls, settings: Settings) -> Registry:
        _quiet_telemetry()
        root = Path(settings.models_dir)
        names, problems, _ = scan(root)
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
            m.warmup()  # type: ignore[attr-defined]
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
