"""Continuous batching for the character generator: the generation loop.

One engine thread per generator model owns every active stream. Each iteration it
(1) admits waiting streams (up to ``max_streams`` active) and prefills their prompts
in one ONNX Runtime call (rows of different lengths, ``sequence_lens``), sampling
each new stream's first character from the prefill logits; (2) advances EVERY active
stream by one character with one step call ([N, 1] ids, the stacked LSTM states);
(3) drops finished or cancelled streams at once. A stream's cost per character is
one row of one step call: O(1) in prompt and output length, the context is never
re-run.

Each stream keeps its own LSTM state, sampling parameters and seeded random
generator (one draw per character), so its text does not depend on what else runs.
With ``batching=False`` (the naive baseline) every stream gets its own ORT calls.

A large prefill (many streams admitted at once) is cut into ``parallel`` parts of at
least ``split_min_rows`` rows, run side by side on the cores (the engine thread runs
one, helper threads the others): 32 prompts of 200 characters take ~85 ms in one
call and ~45 ms in two (32 streams, in the engine: 26,000 -> 30,500 chars/s). Steps
are not cut: a step is short, and handing half of it to another thread and joining
cost ~0.3 ms of thread wake-ups per step here, more than it saved (one lane of
streams per core was tried as well: +24 % at 64 streams, nothing at 32 through HTTP,
and GIL contention below 16 streams). Rows are independent (``sequence_lens``,
per-row state), so the split changes no answer.

Output goes back to the event loop once per iteration (one ``call_soon_threadsafe``
for all streams) as text chunks on each stream's asyncio queue, then a ``Finish``.
Stop sequences: text is held back while it could still be the start of a stop
sequence, so a stop sequence never reaches the caller, streamed or not.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import Gauge

from app import metrics, tracing
from app.errors import ApiError, EngineStopped, ModelFailure, Overloaded
from app.sampling import SamplingParams, params_arrays, sample_rows
from seqcore.tasks.generation import CharModel

log = logging.getLogger("seqserve.generation")


@dataclass
class Finish:
    reason: str  # "length" | "stop"
    generated_chars: int
    queue_s: float
    ttfc_s: float
    per_char_s: float


@dataclass
class Stream:
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
    # engine-side state
    rng: np.random.Generator | None = None
    h: np.ndarray | None = None
    c: np.ndarray | None = None
    last_id: int = 0
    text: str = ""
    emitted: int = 0
    n: int = 0
    started: float = 0.0
    first_char_at: float = 0.0
    finished: bool = False
    trace: Any = None  # the request's trace (app/tracing.py), when tracing is on

    def cancel(self) -> None:
        self.cancelled = True


def _holdback(text: str, stops: list[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
    if not text or not any(text[-1] in s[:-1] for s in stops):
        return 0  # the usual case, decided without trying every prefix length
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


class GenerationEngine:
    def __init__(self, model: CharModel, *, max_streams: int, max_queue: int,
                 queue_timeout_s: float, batching: bool = True, parallel: int = 1,
                 split_min_rows: int = 8):
        self.model = model
        self.parallel = parallel if batching else 1
        self.split_min_rows = split_min_rows
        self._pool: ThreadPoolExecutor | None = None
        self.max_streams = max_streams
        self.batching = batching
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.pending: queue.Queue[Stream] = queue.Queue()
        self.active: list[Stream] = []
        self._running = False
        self._thread: threading.Thread | None = None
        self._current: list[Stream] = []  # the streams of the iteration under way
        self.dead: str | None = None  # why the engine thread ended, when it should run
        self._retiring = False  # a newer version took over: finish what is here, then end
        self._banned = (model.vocab.unk_id,) if model.vocab else ()  # never emit <unk>
        name = model.name
        self._m_queue = metrics.QUEUE_WAIT.labels(name)
        self._m_chars = metrics.GENERATED_CHARS.labels(name)
        self._m_ttfc = metrics.TTFC.labels(name)
        self._m_per_char = metrics.TIME_PER_CHAR.labels(name)
        self._m_step = metrics.INFERENCE.labels(name, "step")
        self._m_step_batch = metrics.BATCH_SIZE.labels(name, "step")
        self._m_real = metrics.REAL_TOKENS.labels(name)

    # -- event-loop side -------------------------------------------------------------
    def start(self) -> None:
        self._running = True
        if self.parallel > 1:
            self._pool = ThreadPoolExecutor(self.parallel - 1,
                                            thread_name_prefix=f"gen-{self.model.name}-part")
        self._thread = threading.Thread(target=self._run, name=f"gen-{self.model.name}",
                                        daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self.dead is None and self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        self._running = False
        if self._thread:
            self._thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        for s in self.active + self._drain_pending():
            self._fail(s, Overloaded("server is shutting down", 5, "shutting_down"))

    def retire(self) -> None:
        """Finish the streams already queued or running, then end the thread (a reload
        swapped in a newer version of the model, and nothing new is submitted here)."""
        self._retiring = True

    def join(self, timeout: float) -> bool:
        """Waits up to ``timeout`` for the engine thread to end (blocking): True if it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    # -- the loop interface (app.state.Loop) ------------------------------------------
    async def shutdown(self) -> None:
        await asyncio.to_thread(self.stop)

    async def retire_when_done(self, timeout: float) -> None:
        """``retire``, then wait up to ``timeout`` for the held streams to finish."""
        self.retire()
        await asyncio.to_thread(self.join, timeout)
        await asyncio.to_thread(self.stop, 1.0)

    def submit(self, stream: Stream) -> None:
        if self.dead:
            raise EngineStopped(self.dead)
        if self.pending.qsize() >= self.max_queue:
            metrics.REJECTED.labels("queue_full").inc()
            raise Overloaded("generation queue is full; retry shortly")
        stream.trace = tracing.current()
        self.pending.put(stream)

    @property
    def load(self) -> tuple[int, int]:
        return len(self.active), self.pending.qsize()

    # -- engine thread ----------------------------------------------------------------
    def _drain_pending(self) -> list[Stream]:
        out = []
        while True:
            try:
                out.append(self.pending.get_nowait())
            except queue.Empty:
                return out

    def _deliver(self, items: list[tuple[Stream, object]]) -> None:
        if not items:
            return
        loop = items[0][0].loop

        def put_all() -> None:
            for s, item in items:
                s.out.put_nowait(item)

        try:
            loop.call_soon_threadsafe(put_all)
        except RuntimeError:  # event loop closed during shutdown
            pass

    def _fail(self, s: Stream, exc: ApiError) -> None:
        s.finished = True
        self._deliver([(s, exc)])

    def _run(self) -> None:
        """The engine thread. An exception in one iteration fails only the streams of
        that iteration (``_fail_iteration``) and the loop goes on. If the thread ends
        anyway while it should run, ``dead`` says why: /readyz turns 503 and
        ``seqserve_loop_up`` 0, so an orchestrator restarts the replica, and new
        requests are refused at once instead of waiting for a thread that is gone."""
        name = self.model.name
        gauge = metrics.ACTIVE_STREAMS.labels(name)
        up = metrics.LOOP_UP.labels(name, "generation")
        up.set(1)
        try:
            while self._running:
                try:
                    self._iteration(gauge)
                except Exception as e:
                    self._fail_iteration(e)
                # only this thread moves streams from pending to active, and nothing
                # is submitted to a retired engine: empty both and it has no work left
                if self._retiring and not self.active and self.pending.empty():
                    self._running = False
        except BaseException as e:
            self.dead = f"generation loop of {name!r} stopped: {type(e).__name__}: {e}"
            log.critical("%s", self.dead, exc_info=e)
            raise
        finally:
            if self._running and not self.dead:
                self.dead = f"generation loop of {name!r} stopped"
            if self.dead:
                up.set(0)
                for s in self._current + self.active + self._drain_pending():
                    self._fail(s, EngineStopped(self.dead))
                self.active = []
            gauge.set(0)

    def _fail_iteration(self, e: Exception) -> None:
        """A bug or a bad value surfaced in one iteration (not an ORT error, which
        ``_fail_all`` handles): fail the streams it was handling, keep the loop."""
        metrics.LOOP_ERRORS.labels(self.model.name, "generation").inc()
        streams = [s for s in self._current if not s.finished]
        error_id = uuid.uuid4().hex[:12]
        log.error("generation loop error %s on %d streams", error_id, len(streams), exc_info=e)
        for s in streams:
            self._fail(s, ModelFailure(error_id))
        self.active = [s for s in self.active if not s.finished]

    def _iteration(self, gauge: Gauge) -> None:
        new: list[Stream] = []
        self._current = new
        if not self.active:
            try:
                new.append(self.pending.get(timeout=0.05))
            except queue.Empty:
                return
        while len(self.active) + len(new) < self.max_streams:
            try:
                new.append(self.pending.get_nowait())
            except queue.Empty:
                break
        self._current = new + self.active
        out: list[tuple[Stream, object]] = []
        now = time.perf_counter()
        admitted = []
        for s in new:
            if s.cancelled:
                continue
            if now - s.arrived > self.queue_timeout_s:
                metrics.REJECTED.labels("queue_timeout").inc()
                self._fail(s, Overloaded("waited too long for a generation slot", 1,
                                         "queue_timeout"))
                continue
            admitted.append(s)
        if admitted:
            groups = [admitted] if self.batching else [[s] for s in admitted]
            for g in groups:
                self._prefill(g, out)
            self.active += [s for s in admitted if not s.finished]
        self.active = [s for s in self.active if not (s.finished or s.cancelled)]
        gauge.set(len(self.active))
        if self.active:
            groups = [self.active] if self.batching else [[s] for s in self.active]
            for g in groups:
                self._step(g, out)
            self.active = [s for s in self.active if not (s.finished or s.cancelled)]
            # set again: when the last stream leaves here, the idle wait above
            # returns early and the gauge would stay stale
            gauge.set(len(self.active))
        self._deliver(out)
        self._current = []

    def _run_parts(self, ids: np.ndarray, lens: np.ndarray, h: np.ndarray, c: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``model.run`` over the rows (a prefill), cut into up to ``parallel``
        contiguous parts run side by side (each part trimmed to its own longest row)."""
        B = len(ids)
        parts = min(self.parallel, B // self.split_min_rows)
        if parts <= 1 or self._pool is None:
            return self.model.run(ids, lens, h, c)
        cuts = [B * i // parts for i in range(parts + 1)]

        def part(a: int, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            T = max(1, int(lens[a:b].max()))
            return self.model.run(ids[a:b, :T], lens[a:b], np.ascontiguousarray(h[:, a:b]),
                                  np.ascontiguousarray(c[:, a:b]))

        later = [self._pool.submit(part, cuts[i], cuts[i + 1]) for i in range(1, parts)]
        results = [part(cuts[0], cuts[1])] + [f.result() for f in later]
        return (np.concatenate([r[0] for r in results], axis=0),
                np.concatenate([r[1] for r in results], axis=1),
                np.concatenate([r[2] for r in results], axis=1))

    def _prefill(self, streams: list[Stream], out: list) -> None:
        name = self.model.name
        # by prompt length, so the parts of a split call carry little padding
        streams = sorted(streams, key=lambda s: len(s.prompt_ids))
        B = len(streams)
        lens = np.array([len(s.prompt_ids) for s in streams], dtype=np.int64)
        ids = np.zeros((B, max(1, int(lens.max()))), dtype=np.int64)
        for k, s in enumerate(streams):
            ids[k, : len(s.prompt_ids)] = s.prompt_ids
        h, c = self.model.zero_state(B)
        t0 = time.perf_counter()
        try:
            logits, hn, cn = self._run_parts(ids, lens, h, c)
        except Exception as e:
            self._fail_all(streams, e)
            return
        dt = time.perf_counter() - t0
        metrics.INFERENCE.labels(name, "prefill").observe(dt)
        metrics.BATCH_SIZE.labels(name, "prefill").observe(B)
        metrics.PADDING.labels(name).inc(ids.size - int(lens.sum()))
        metrics.REAL_TOKENS.labels(name).inc(int(lens.sum()))
        for k, s in enumerate(streams):
            s.started = t0
            self._m_queue.observe(max(t0 - s.arrived, 0.0))
            s.rng = np.random.default_rng(s.seed)
            s.h, s.c = hn[:, k], cn[:, k]
        self._advance(streams, logits, out)

    def _step(self, streams: list[Stream], out: list) -> None:
        B = len(streams)
        ids = np.array([[s.last_id] for s in streams], dtype=np.int64)
        h = np.stack([s.h for s in streams], axis=1)
        c = np.stack([s.c for s in streams], axis=1)
        t0 = time.perf_counter()
        try:
            logits, hn, cn = self.model.run(ids, np.ones(B, dtype=np.int64), h, c)
        except Exception as e:
            self._fail_all(streams, e)
            return
        dt = time.perf_counter() - t0
        self._m_step.observe(dt)
        self._m_step_batch.observe(B)
        self._m_real.inc(B)
        for k, s in enumerate(streams):
            s.h, s.c = hn[:, k], cn[:, k]
        self._advance(streams, logits, out)

    def _fail_all(self, streams: list[Stream], e: Exception) -> None:
        error_id = uuid.uuid4().hex[:12]
        log.error("generation inference error %s on %d streams: %s", error_id, len(streams), e)
        for s in streams:
            self._fail(s, ModelFailure(error_id))

    def _advance(self, streams: list[Stream], logits: np.ndarray, out: list) -> None:
        """Sample one character for every stream (one vectorised call) and queue
        whatever text each stream can release."""
        now = time.perf_counter()
        temp, top_k, top_p = params_arrays([s.params for s in streams])
        u = np.array([s.rng.random() for s in streams])  # type: ignore[union-attr]
        ids = sample_rows(logits, temp, top_k, top_p, u, self._banned)
        chars = self.model.vocab.chars  # type: ignore[union-attr]
        self._m_chars.inc(len(streams))
        for s, idx in zip(streams, ids.tolist(), strict=True):
            s.last_id = idx
            s.text += chars[idx]
            s.n += 1
            if s.n == 1:
                s.first_char_at = now
                self._m_ttfc.observe(now - s.arrived)
            reason = None
            cut = len(s.text)
            for stop in s.stop:
                if s.text.endswith(stop):
                    reason, cut = "stop", len(s.text) - len(stop)
                    break
            if reason is None and s.n >= s.max_new:
                reason = "length"
            if reason:
                release = cut
            elif s.streaming:
                release = len(s.text) - _holdback(s.text, s.stop)
            else:  # nobody reads partial text: spare the event loop a wake-up per step
                release = 0
            if release > s.emitted:
                out.append((s, s.text[s.emitted : release]))
                s.emitted = release
            if reason:
                s.finished = True
                s.text = s.text[:cut]
                per_char = (now - s.first_char_at) / (s.n - 1) if s.n > 1 else 0.0
                if s.n > 1:
                    self._m_per_char.observe(per_char)
                if s.trace is not None:
                    tracing.record(s.trace, "queue", s.arrived, s.started)
                    tracing.record(s.trace, "generate", s.started, now, chars=s.n,
                                   model=self.model.name)
                out.append((s, Finish(reason, len(s.text), s.started - s.arrived,
                                      s.first_char_at - s.arrived, per_char)))
