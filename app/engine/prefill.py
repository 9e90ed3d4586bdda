"""Chunked prefill for the generation engine: prompts are read in slices between steps.

A prompt is read in chunks of at most ``chunk_chars`` characters, always cut at the same
places (multiples of ``chunk_chars`` from its start), so what a stream computes does
not depend on what else is in flight. Each engine iteration makes at most one prefill
call, over the oldest prompts first, sized by a budget of cells (rows x characters of
the call):

- while streams are running, the budget is what the engine can read in ``slice_s``
  (from the measured cost per cell), so a running stream waits at most about one slice
  between two characters, however large the prompts that arrive (vLLM's chunked
  prefill, TGI's ``max_batch_prefill_tokens``);
- with nothing running, nobody waits on it, and the call may take ``max_cells``.

A call is ``start``, the ONNX Runtime call, then ``finish``; the engine may run the
call on another thread in between (app/engine/admission.py: while streams run, on its
helper thread, beside their steps), and makes no other prefill call until it is
finished.

Either way a call never holds more than ``max_cells`` cells, which bounds the memory
ONNX Runtime needs for it (its CPU arena keeps the largest call's buffers for the life
of the session: one [16, 8000] prefill held over a gigabyte), and the call that reads
the last waiting prompt to its end asks ONNX Runtime to give its arena's free memory
back, so the memory of a burst returns when the burst ends. A row whose prompt ends in
a call leaves with the logits of its last character and its state; the others keep
their state for the next chunk. Prompts admitted together that are equal (``n``
choices, a page's default prompt) are read once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# (ids, lengths, h, c, shrink=...) -> (logits, hN, cN); ``shrink``: the call ends the
# burst, give the memory it took back (seqcore.tasks.generation.SHRINK)
Run = Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(eq=False)
class Job:
    """One distinct prompt being read, and the streams (``_Gen``) that wait for it."""

    ids: np.ndarray  # the prompt's ids, int64 [T]
    gens: list[Any]
    h: np.ndarray  # the state after ``pos`` characters: [layers, 1, hidden]
    c: np.ndarray
    pos: int = 0
    started: float = 0.0  # its first chunk ran (0: not yet)

    @property
    def remaining(self) -> int:
        return len(self.ids) - self.pos


@dataclass
class Done:
    """A prompt read to its end: the logits after its last character and the state."""

    job: Job
    logits: np.ndarray  # [V]
    h: np.ndarray  # [layers, 1, hidden]
    c: np.ndarray


@dataclass(eq=False)
class Call:
    """One prefill call's inputs (``Prefill.start``), for ``Prefill.finish``."""

    rows: list[tuple[Job, int]]  # (job, characters the call reads of it)
    ids: np.ndarray  # [B, T]
    lens: np.ndarray  # [B]
    h: np.ndarray
    c: np.ndarray
    last: bool  # it reads every waiting prompt to its end


@dataclass
class Chunk:
    """What one prefill call did (for the engine's metrics)."""

    rows: int
    cells: int  # rows x characters of the call
    real: int  # characters read
    seconds: float
    last: bool = False  # it read the last waiting prompt to its end
    burst_cells: int = 0  # cells read since the queue was last empty, this call's included
    done: list[Done] = field(default_factory=list)


class Prefill:
    """The prompts waiting to be read, and the choice of each call (module docstring)."""

    def __init__(self, zero_state: Callable[[int], tuple[np.ndarray, np.ndarray]], *,
                 chunk_chars: int = 256, slice_s: float = 0.04, max_cells: int = 4096):
        self.zero_state = zero_state
        self.chunk_chars = max(1, chunk_chars)
        self.slice_s = slice_s
        self.max_cells = max(self.chunk_chars, max_cells)
        self.jobs: list[Job] = []
        # seconds per cell, measured on every call (moving average); a first guess
        # until then, on the high side so that the first call is short
        self.cell_s = 50e-6
        self.burst_cells = 0  # cells read since the queue was last empty

    @property
    def gens(self) -> list[Any]:
        return [g for j in self.jobs for g in j.gens]

    def add(self, gens: list[Any], prompt: Callable[[Any], list[int]]) -> None:
        """Queue the streams' prompts; equal prompts among ``gens`` share one job."""
        by_prompt: dict[tuple[int, ...], Job] = {}
        for g in gens:
            key = tuple(prompt(g))
            job = by_prompt.get(key)
            if job is None:
                h, c = self.zero_state(1)
                # an empty prompt reads one id 0 (the graph cannot read a row of length 0)
                ids = np.asarray(key if key else (0,), dtype=np.int64)
                job = by_prompt[key] = Job(ids, [], h, c)
                self.jobs.append(job)
            job.gens.append(g)

    def drop(self, gone: Callable[[Any], bool]) -> list[Any]:
        """Removes the streams for which ``gone`` holds (cancelled, failed), and the jobs
        left without a stream; returns the removed streams."""
        removed = []
        for job in self.jobs:
            keep = [g for g in job.gens if not gone(g)]
            removed += [g for g in job.gens if gone(g)]
            job.gens = keep
        self.jobs = [j for j in self.jobs if j.gens]
        return removed

    def budget(self, protect: bool) -> int:
        """Cells for the next call: a slice's worth while streams run (``protect``)."""
        if not protect:
            return self.max_cells
        return max(1, min(self.max_cells, int(self.slice_s / self.cell_s)))

    def plan(self, protect: bool) -> list[tuple[Job, int]]:
        """The next call's rows, oldest prompts first: (job, characters it reads)."""
        cells = self.budget(protect)
        rows: list[tuple[Job, int]] = []
        width = 0
        for job in self.jobs:
            n = min(job.remaining, self.chunk_chars)
            w = max(width, n)
            if rows and (len(rows) + 1) * w > cells:
                break
            rows.append((job, n))
            width = w
        return rows

    def step(self, run: Run, protect: bool) -> Chunk | None:
        """One prefill call (``run`` is the model's, with its parallel parts); None
        when no prompt waits. Errors of ``run`` propagate: the caller fails the jobs."""
        call = self.start(protect)
        if call is None:
            return None
        t0 = time.perf_counter()
        logits, hn, cn = run(call.ids, call.lens, call.h, call.c, shrink=call.last)
        return self.finish(call, logits, hn, cn, t0, time.perf_counter() - t0)

    def start(self, protect: bool) -> Call | None:
        """The next call's inputs (None when no prompt waits); ``finish`` takes its
        outputs. Between the two the call may run on another thread: the jobs it reads
        are not read again until it is finished."""
        rows = self.plan(protect)
        if not rows:
            return None
        B, T = len(rows), max(n for _, n in rows)
        ids = np.zeros((B, T), dtype=np.int64)
        lens = np.empty(B, dtype=np.int64)
        for k, (job, n) in enumerate(rows):
            ids[k, :n] = job.ids[job.pos:job.pos + n]
            lens[k] = n
        h = np.concatenate([job.h for job, _ in rows], axis=1)
        c = np.concatenate([job.c for job, _ in rows], axis=1)
        last = len(rows) == len(self.jobs) and all(n == j.remaining for j, n in rows)
        return Call(rows, ids, lens, h, c, last)

    def finish(self, call: Call, logits: np.ndarray, hn: np.ndarray, cn: np.ndarray,
               t0: float, dt: float) -> Chunk:
        """The call's outputs: its rows' states move on, and the prompts it read to their
        end leave (``Chunk.done``; a job whose streams all left meanwhile has none)."""
        B, T = call.ids.shape
        self.cell_s = 0.7 * self.cell_s + 0.3 * (dt / (B * T))
        self.burst_cells += B * T
        chunk = Chunk(rows=B, cells=B * T, real=int(call.lens.sum()), seconds=dt,
                      last=call.last, burst_cells=self.burst_cells)
        if call.last:
            self.burst_cells = 0
        finished = set()
        for k, (job, n) in enumerate(call.rows):
            if not job.started:
                job.started = t0
            job.pos += n
            job.h = np.ascontiguousarray(hn[:, k:k + 1])
            job.c = np.ascontiguousarray(cn[:, k:k + 1])
            if job.remaining <= 0:
                if job.gens:
                    chunk.done.append(Done(job, logits[k], job.h, job.c))
                finished.add(id(job))
        self.jobs = [j for j in self.jobs if id(j) not in finished]
        return chunk

    def abandon(self) -> None:
        """A call that ``start`` made failed: its jobs go (the caller fails their streams)."""
        self.jobs = []
