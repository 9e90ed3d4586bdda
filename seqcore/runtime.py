"""ONNX Runtime sessions, padding rows into a batch, and log-softmax: the three things
every user of a model folder needs, done one way.

- ``session``: the one place a session is created (the service, evaluation, export
  checks and the benchmarks all call it), with the threading choices written down.
- ``pad_rows``: id lists -> (ids [B, T], lengths [B]); an EMPTY row (a text without a
  single token) is read as one ``<unk>``, here and nowhere else, so training,
  evaluation and serving see the same thing.
- ``log_softmax``: row-wise, numerically stable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DEVICES = ("auto", "cpu", "cuda")


class ProviderError(RuntimeError):
    """The device asked for cannot be had from this onnxruntime."""


def quiet_telemetry() -> None:
    """ORT's usage telemetry tries to persist a device id at every start (and logs a
    warning in read-only containers); nothing here has any use for it."""
    disable = getattr(ort, "disable_telemetry_events", None)
    if disable is not None:
        disable()


def choose_providers(device: str) -> list[str]:
    """Execution providers for ``device`` (auto | cpu | cuda): auto takes CUDA when
    this onnxruntime has it; cuda without it raises ``ProviderError``."""
    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        if CUDA not in available:
            raise ProviderError(
                f"SEQSERVE_DEVICE=cuda but this onnxruntime has no CUDA provider "
                f"(available: {available}); install the gpu extra (onnxruntime-gpu)")
        return [CUDA, CPU]
    return [CUDA, CPU] if CUDA in available else [CPU]


def session(model: bytes | str | Path, *, threads: int = 1,
            providers: Sequence[str] = (CPU,), spinning: bool = False
            ) -> ort.InferenceSession:
    """A session of a serialized graph or a graph file. One session runs ``threads``
    intra-op threads and no inter-op parallelism (the graphs are a chain); callers
    that want several cores busy run several calls side by side instead, which
    measured better than wider calls on small recurrent graphs. Spinning threads burn
    a core while idle, so they are off unless asked for."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, so, providers=list(providers))


_libc: ctypes.CDLL | None | bool = False  # False: not looked up yet


def release_free_memory() -> bool:
    """Hands the C heap's free memory back to the system (glibc's ``malloc_trim``):
    freed blocks of the heap stay with the process otherwise, so a burst of large
    calls would keep its high-water mark. False where there is no glibc (a no-op)."""
    global _libc
    if _libc is False:
        name = ctypes.util.find_library("c")
        try:
            lib = ctypes.CDLL(name) if name else None
            _libc = lib if lib is not None and hasattr(lib, "malloc_trim") else None
        except OSError:
            _libc = None
    if not _libc:
        return False
    _libc.malloc_trim(0)  # type: ignore[union-attr]
    return True


def pad_rows(rows: Sequence[Sequence[int]], unk_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids [B, T] int64 padded with 0, lengths [B] int64), T the longest row. An empty
    row becomes one ``unk_id``: a graph cannot read a row of length 0, and a text
    without a token then reads as one unknown word."""
    lens = np.fromiter((max(1, len(r)) for r in rows), dtype=np.int64, count=len(rows))
    ids = np.zeros((len(rows), int(lens.max()) if len(rows) else 0), dtype=np.int64)
    for k, r in enumerate(rows):
        if len(r):
            ids[k, : len(r)] = r
        else:
            ids[k, 0] = unk_id
    return ids, lens


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log p over the last axis (float64), stable for any finite logits; -inf logits
    (banned ids) stay -inf."""
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))
