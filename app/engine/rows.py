"""The generation engine's streams and the batch they step in.

``Stream`` is a request as the protocols see it: what to generate, and the queue its
text chunks, then a ``Finish`` (or an engine error), arrive on. ``Gen`` is the
engine's own state of an admitted stream (its stopping criteria, its token chooser's
state), ``Batch`` the streams that step together: row k of its arrays (LSTM state,
last id, sampling parameters) belongs to its k-th stream, so a step passes the arrays
to ONNX Runtime as they are, and they are rebuilt only when streams join or leave
(TGI's ``concatenate`` and ``filter``: ``extend`` and ``keep``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.engine.stopping import StopMatcher
from seqcore.sampling import RepetitionPenalty, RowSampler, SamplingParams, Uniforms, params_arrays


@dataclass
class Finish:
    reason: str  # "length" | "stop"
    generated_chars: int
    queue_s: float
    ttfc_s: float
    per_char_s: float


@dataclass(eq=False, slots=True)
class Stream:
    """One generation request, as the routes see it: what to generate, and the queue
    its text chunks, then a ``Finish`` (or an ``EngineError``), arrive on. The
    engine's own per-stream state is private to it (``Gen``)."""

    prompt_ids: list[int]
    params: SamplingParams
    seed: int
    max_new: int
    stop: list[str]
    arrived: float
    loop: asyncio.AbstractEventLoop
    streaming: bool = True  # False: the text is delivered once, at the end
    out: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    trace: Any = None  # the request's trace (app/ops/tracing.py), set by submit when tracing is on
    min_new: int = 0  # stop sequences do not end the stream before this many characters

    # gives back the prompt characters this stream holds of its engine's in-flight cap
    # (set by submit; called once its prompt is read, or it is cancelled or failed)
    release: Any = None

    def cancel(self) -> None:
        """Frees the stream's slot at the next iteration (a no-op once finished)."""
        self.cancelled = True
        if self.release is not None:
            self.release()


class Gen:
    """The engine's own state of one admitted stream (routes never see it). Its LSTM
    state, last id and sampling parameters are its row of the ``Batch`` arrays."""

    __slots__ = ("stream", "matcher", "buffer", "rng", "started", "first_char_at",
                 "ended", "reason", "done", "failed", "penalty")

    def __init__(self, stream: Stream, vocab: int = 0):
        self.stream = stream
        # the stream's stopping criteria (TGI's StoppingCriteria)
        self.matcher = StopMatcher(stream.stop, stream.max_new, stream.min_new)
        # the repetition penalty's state (characters seen), None when it is off
        self.penalty = RepetitionPenalty.for_stream(stream.params, stream.prompt_ids, vocab)
        # released text not yet delivered: a streaming stream's goes out at the engine's
        # next flush (``flush_interval_s``), a non-streaming one's at its finish
        self.buffer: list[str] = []
        self.rng: Uniforms | None = None
        self.started = 0.0  # its prefill began
        self.first_char_at = 0.0
        self.ended = 0.0
        self.reason: str | None = None  # why it finished ("length" | "stop")
        self.done = False  # no more characters: finished, or failed
        self.failed = False  # an error was delivered to it

    def release(self) -> None:
        """Gives back the prompt characters it holds of the engine's in-flight cap."""
        if self.stream.release is not None:
            self.stream.release()


class Batch:
    """Streams that step together: row k of every array belongs to ``gens[k]``."""

    __slots__ = ("gens", "h", "c", "ids", "lens", "temp", "top_k", "top_p", "draws", "sampler")

    def __init__(self, gens: list[Gen], h: np.ndarray, c: np.ndarray):
        self.gens = gens
        self.h, self.c = h, c  # [layers, B, hidden]
        self.ids = np.zeros((len(gens), 1), dtype=np.int64)  # each row's last character
        self.lens = np.ones(len(gens), dtype=np.int64)
        self.temp, self.top_k, self.top_p = params_arrays([g.stream.params for g in gens])
        self.sampler: RowSampler | None = None  # built at the first step, again when rows change
        self.draws = [g.rng for g in gens]

    def extend(self, other: Batch) -> None:
        self.gens = self.gens + other.gens
        self.draws = self.draws + other.draws
        self.h = np.concatenate([self.h, other.h], axis=1)
        self.c = np.concatenate([self.c, other.c], axis=1)
        self.ids = np.concatenate([self.ids, other.ids])
        self.lens = np.ones(len(self.gens), dtype=np.int64)
        self.temp = np.concatenate([self.temp, other.temp])
        self.top_k = np.concatenate([self.top_k, other.top_k])
        self.top_p = np.concatenate([self.top_p, other.top_p])
        self.sampler = None

    def keep(self, rows: list[int]) -> None:
        self.gens = [self.gens[k] for k in rows]
        self.draws = [self.draws[k] for k in rows]
        idx = np.array(rows, dtype=np.intp)
        # (indexing a middle axis gives a strided array: ORT would copy it every step)
        self.h = np.ascontiguousarray(self.h[:, idx])
        self.c = np.ascontiguousarray(self.c[:, idx])
        self.ids, self.lens = self.ids[idx], self.lens[idx]
        self.temp, self.top_k, self.top_p = self.temp[idx], self.top_k[idx], self.top_p[idx]
        self.sampler = None


class Active:
    """The engine's streams: the batches stepping, the prompts being read
    (``prefill``, an ``app.engine.prefill.Prefill``), and the streams of the iteration
    under way (``current``: failed together if the iteration fails)."""

    def __init__(self, prefill: Any):
        self.batches: list[Batch] = []
        self.prefill = prefill
        self.current: list[Gen] = []

    def gens(self) -> list[Gen]:
        return [g for b in self.batches for g in b.gens]

    def streams(self) -> list[Stream]:
        return [g.stream for g in self.gens()] + [g.stream for g in self.prefill.gens]
