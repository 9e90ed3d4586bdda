"""Continuous batching for the character generator: the generation engine.

One engine thread per generator model owns every active stream. Each iteration has
three phases:

- **admit**: waiting streams join (up to ``max_streams`` active or being read); their
  prompts are read in chunks, at most one prefill call per iteration and within a time
  budget while streams run (``app.engine.prefill``: rows of different lengths,
  ``sequence_lens``), and a stream whose prompt has been read gets its first character
  from the prefill logits and joins the batch;
- **step**: every active stream advances by one character with one step call
  ([N, 1] ids, the batch's LSTM states) and one vectorised sampling call;
- **retire**: finished and cancelled streams leave the batch; a finished one gets its
  ``Finish`` and its accounting (metrics, trace spans).

Retire also runs right after admit, so a stream that ended at its first character, or
was cancelled meanwhile, takes no row in the step. A stream's cost per character is
one row of one step call: O(1) in prompt and output length, the context is never re-run.
A large prompt costs the running streams at most one prefill slice per character, and
the prompt characters waiting to be read are capped (``max_prompt_chars_in_flight``;
beyond it a request gets 503 at once).

The active streams live in a ``_Batch``: row k of its arrays (LSTM state, last id,
sampling parameters) belongs to its k-th stream, so a step passes the arrays to ORT
as they are, with no per-row stacking; the arrays are rebuilt only when streams join
or leave. Each stream keeps its own sampling parameters and seeded random generator
(one draw per character), and rows are independent in the graph and in sampling, so
its text does not depend on what else runs. With ``batching=False`` (the naive
baseline) every stream is a batch of its own and gets its own ORT calls.

When to stop is the ``StopMatcher``'s decision (like TGI's StoppingCriteria): sampling
produces a character, the matcher says what may be released and whether a stop
sequence or the length limit ended the stream, and retire records the finish. Text
is held back while it could still be the start of a stop sequence, so a stop sequence
never reaches the caller, streamed or not.

A large prefill call (many streams read at once) is cut into ``parallel`` parts of at
least ``split_min_rows`` rows, run side by side on the cores (the engine thread runs
one, helper threads the others): prefill time grows with the prompts and dominates
when many streams arrive together. A step is cut the same way once every part has at
least ``step_split_min_rows`` rows: below that, handing part of a short step to
another thread and joining costs about what it saves. Rows are independent
(``sequence_lens``, per-row state), so the split changes no answer. The measurements
behind these choices are in docs/benchmarks.md.

Output goes back to the event loop as text chunks on each stream's asyncio queue,
then a ``Finish``, with one ``call_soon_threadsafe`` for all streams at a time. New
streams' first characters go out at once (time to first character is not traded
away); after that, streamed text is flushed at most every ``flush_interval_s``
(``SEQSERVE_GEN_STREAM_INTERVAL_MS``, 20 ms by default): a reader sees text within a
frame or two of its existence, and the event loop wakes 50 times a second instead of
once per character, which at a few thousand characters a second per stream would
otherwise take the CPU the engine needs. With many streams the interval grows so that
all of them together get at most ``events_per_s`` events a second
(``SEQSERVE_GEN_STREAM_EVENTS_PER_S``), up to ``MAX_FLUSH_INTERVAL_S``: each event
costs the server (and the client) about the same whatever text it carries. A
non-streamed answer is delivered once, at its finish.
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

from app.engine.batcher import CLASSIFIER_CALLS
from app.engine.prefill import Chunk, Prefill
from app.engine.stopping import StopMatcher
from app.http.errors import ApiError, EngineStopped, ModelFailure, Overloaded
from app.ops import metrics, tracing
from seqcore import runtime
from seqcore.sampling import (
    RepetitionPenalty,
    RowSampler,
    SamplingParams,
    Uniforms,
    min_p_array,
    params_arrays,
)
from seqcore.tasks.generation import CharModel

log = logging.getLogger("seqserve.generation")

# with an event budget, a streaming stream still gets its text at least this often
MAX_FLUSH_INTERVAL_S = 0.1
# per-step character counts reach their counters at least this often (see _tally_chars)
TALLY_FLUSH_CHARS = 1000
# a burst of prefills this large (cells) ends with the C heap trimmed (a few ms)
TRIM_AFTER_CELLS = 65_536


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
    its text chunks, then a ``Finish`` (or an ``ApiError``), arrive on. The engine's
    own per-stream state is private to it (``_Gen``)."""

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


class _Gen:
    """The engine's own state of one admitted stream (routes never see it). Its LSTM
    state, last id and sampling parameters are its row of the ``_Batch`` arrays."""

    __slots__ = ("stream", "matcher", "buffer", "rng", "started", "first_char_at",
                 "ended", "reason", "done", "failed", "penalty")

    def __init__(self, stream: Stream, vocab: int = 0):
        self.stream = stream
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


class _Batch:
    """Streams that step together: row k of every array belongs to ``gens[k]``."""

    __slots__ = ("gens", "h", "c", "ids", "lens", "temp", "top_k", "top_p", "draws", "sampler")

    def __init__(self, gens: list[_Gen], h: np.ndarray, c: np.ndarray):
        self.gens = gens
        self.h, self.c = h, c  # [layers, B, hidden]
        self.ids = np.zeros((len(gens), 1), dtype=np.int64)  # each row's last character
        self.lens = np.ones(len(gens), dtype=np.int64)
        self.temp, self.top_k, self.top_p = params_arrays([g.stream.params for g in gens])
        self.sampler: RowSampler | None = None  # built at the first step, again when rows change
        self.draws = [g.rng for g in gens]

    def extend(self, other: _Batch) -> None:
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


class GenerationEngine:
    """The generation loop of one character model (see the module docstring)."""

    def __init__(self, model: CharModel, *, max_streams: int, max_queue: int,
                 queue_timeout_s: float, batching: bool = True, parallel: int = 1,
                 split_min_rows: int = 8, step_split_min_rows: int = 8,
                 flush_interval_s: float = 0.0, events_per_s: float = 0.0,
                 drain_timeout_s: float | None = None, prefill_chunk_chars: int = 256,
                 prefill_slice_s: float = 0.04, prefill_max_cells: int = 4096,
                 max_prompt_chars_in_flight: int = 0):
        self.model = model
        # prompts being read, a chunk per iteration (app.prefill)
        self.prefill = Prefill(model.zero_state, chunk_chars=prefill_chunk_chars,
                               slice_s=prefill_slice_s, max_cells=prefill_max_cells)
        # prompt characters queued or being read, capped (0: no cap): submit refuses
        # beyond it, so a burst of long prompts waits in clients, not in this process
        self.max_prompt_chars_in_flight = max_prompt_chars_in_flight
        self._inflight = 0
        self._inflight_lock = threading.Lock()
        # a retired engine waits at most this for its streams (app.main passes a
        # generation's own longest run: SEQSERVE_GEN_TIMEOUT_S + the queue wait + 5 s)
        self.drain_timeout_s = (queue_timeout_s + 30.0 if drain_timeout_s is None
                                else drain_timeout_s)
        # streamed text goes to the event loop at most this often (first characters at
        # once): one wake-up per interval instead of one per character and stream
        self.flush_interval_s = flush_interval_s
        # ... and, with many streams, less often: all streams together get at most about
        # ``events_per_s`` events a second (0: no budget), each still one at least every
        # MAX_FLUSH_INTERVAL_S
        self.events_per_s = events_per_s
        self._last_flush = time.perf_counter()
        self.parallel = parallel if batching else 1
        self.split_min_rows = split_min_rows
        self.step_split_min_rows = step_split_min_rows
        self._pool: ThreadPoolExecutor | None = None
        self.max_streams = max_streams
        self.batching = batching
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.pending: queue.Queue[Stream] = queue.Queue()
        # the active streams: one batch, or (batching off) one batch per stream
        self._batches: list[_Batch] = []
        self._running = False
        self._thread: threading.Thread | None = None
        self._current: list[_Gen] = []  # the streams of the iteration under way
        self.dead: str | None = None  # why the engine thread ended, when it should run
        self._retiring = False  # a newer version took over: finish what is here, then end
        self._banned = (model.vocab.unk_id,) if model.vocab else ()  # never emit <unk>
        self._chars = model.vocab.chars if model.vocab else []
        name = model.name
        self._m_queue = metrics.QUEUE_WAIT.labels(name)
        self._m_chars = metrics.GENERATED_CHARS.labels(name)
        self._m_ttfc = metrics.TTFC.labels(name)
        self._m_per_char = metrics.TIME_PER_CHAR.labels(name)
        # per step: handed over in bulk with the counts below (``_flush_tally``)
        self._m_step = metrics.BulkHistogram(metrics.INFERENCE.labels(name, "step"))
        self._m_step_batch = metrics.BulkHistogram(metrics.BATCH_SIZE.labels(name, "step"))
        self._m_real = metrics.REAL_TOKENS.labels(name)
        self._m_prefill = metrics.INFERENCE.labels(name, "prefill")
        self._m_prefill_batch = metrics.BATCH_SIZE.labels(name, "prefill")
        self._m_padding = metrics.PADDING.labels(name)
        # per-step counts are added up here and reach their counters when a stream
        # leaves (before its Finish is delivered) or every TALLY_FLUSH_CHARS characters:
        # two counter updates and two histogram observations per step were ~6 % of a
        # lone stream's engine thread
        self._tally_chars = 0
        self._tally_real = 0
        self._gauge_n = -1  # the active-streams gauge's last value (set only on change)

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
        self._fail_streams(self._active_streams() + self._drain_pending(),
                           Overloaded("server is shutting down", 5, "shutting_down"))

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

    async def retire_when_done(self) -> None:
        """``retire``, then wait up to ``drain_timeout_s`` for the held streams to finish."""
        self.retire()
        await asyncio.to_thread(self.join, self.drain_timeout_s)
        await asyncio.to_thread(self.stop, 1.0)

    def submit(self, stream: Stream) -> None:
        if self.dead:
            raise EngineStopped(self.dead)
        if self.pending.qsize() >= self.max_queue:
            metrics.REJECTED.labels("queue_full").inc()
            raise Overloaded("generation queue is full; retry shortly")
        n = len(stream.prompt_ids)
        with self._inflight_lock:
            cap = self.max_prompt_chars_in_flight
            # (a prompt alone is always let in: its length is capped by the routes)
            if cap and self._inflight and self._inflight + n > cap:
                metrics.REJECTED.labels("prefill_full").inc()
                raise Overloaded("too many prompt characters are waiting to be read; "
                                 "retry shortly", 1, "prefill_full")
            self._inflight += n
        held = [n]

        def release() -> None:
            with self._inflight_lock:
                self._inflight -= held[0]
                held[0] = 0

        stream.release = release
        stream.trace = tracing.current()
        self.pending.put(stream)

    @property
    def prompt_chars_in_flight(self) -> int:
        return self._inflight

    # -- engine thread: supervision ---------------------------------------------------
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
                if (self._retiring and not self._batches and not self.prefill.jobs
                        and self.pending.empty()):
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
                current = [g.stream for g in self._current if not g.failed]
                self._fail_streams(current + self._active_streams() + self._drain_pending(),
                                   EngineStopped(self.dead))
                self._batches = []
                self.prefill.jobs = []
            self._flush_tally()
            gauge.set(0)

    def _fail_iteration(self, e: Exception) -> None:
        """A bug or a bad value surfaced in one iteration (not an ORT error, which
        ``_fail_all`` handles): fail the streams it was handling, keep the loop."""
        metrics.LOOP_ERRORS.labels(self.model.name, "generation").inc()
        # (a Finish queued in this iteration was lost with it: those fail too)
        gens = [g for g in self._current if not g.failed]
        error_id = uuid.uuid4().hex[:12]
        log.error("generation loop error %s on %d streams", error_id, len(gens), exc_info=e)
        for g in gens:
            self._fail(g, ModelFailure(error_id))
        # the iteration's streams are every active one: their batches go as a whole
        # (their arrays may be half-updated)
        self.prefill.drop(lambda g: g.done)
        self._batches = [b for b in self._batches if not all(g.done for g in b.gens)]
        for b in self._batches:
            if any(g.done for g in b.gens):
                b.keep([k for k, g in enumerate(b.gens) if not g.done])

    def _iteration(self, gauge: Gauge) -> None:
        out: list[tuple[Stream, object]] = []
        if not self._admit(out):
            return  # idle: nothing waited
        self._retire(out, gauge)
        if out:  # first characters (and early finishes) go out before the step
            self._deliver(out)
            out = []
        if self._batches:
            self._step(out)
            # the gauge is set again here: when the last stream leaves, the idle wait
            # in admit returns early and it would stay stale
            self._retire(out, gauge)
        self._deliver(out)
        self._current = []

    # -- phase 1: admit ---------------------------------------------------------------
    def _admit(self, out: list) -> bool:
        """Waiting streams join, up to ``max_streams`` active or being read, and one
        prefill call reads the next chunk of the waiting prompts; a stream whose prompt
        is read gets its first character and joins the batch. False when the engine is
        idle and nothing arrived."""
        self._current = []
        active = [g for b in self._batches for g in b.gens]
        reading = self.prefill.gens
        new: list[Stream] = []
        if not active and not reading:
            try:
                new.append(self.pending.get(timeout=0.05))
            except queue.Empty:
                return False
        while (len(active) + len(reading) + len(new) < self.max_streams
               and self.pending.qsize()):
            try:
                new.append(self.pending.get_nowait())
            except queue.Empty:
                break
        gens = [_Gen(s, len(self._chars)) for s in new]
        self._current = gens + reading + active
        now = time.perf_counter()
        admitted = []
        for g in gens:
            if g.stream.cancelled:
                self._release(g)
                continue
            if now - g.stream.arrived > self.queue_timeout_s:
                metrics.REJECTED.labels("queue_timeout").inc()
                self._fail(g, Overloaded("waited too long for a generation slot", 1,
                                         "queue_timeout"))
                continue
            admitted.append(g)
        self.prefill.add(admitted, lambda g: g.stream.prompt_ids)
        for g in self.prefill.drop(lambda g: g.stream.cancelled):
            self._release(g)
        if self.prefill.jobs:
            self._prefill(out)
        return True

    def _prefill(self, out: list) -> None:
        """One prefill call (``app.engine.prefill``); the streams whose prompts it finished get
        their first character and join the batch (batching off: a batch each)."""
        try:
            chunk = self.prefill.step(
                lambda ids, lens, h, c, shrink: self._run_parts(
                    ids, lens, h, c, self.split_min_rows, shrink=shrink),
                protect=bool(self._batches))
        except Exception as e:
            gens = self.prefill.gens
            self.prefill.jobs = []
            for g in gens:
                self._release(g)
            self._fail_all(gens, e)
            return
        if chunk is None:
            return
        self._observe_prefill(chunk)
        if not chunk.done:
            return
        now = time.perf_counter()
        gens, rows = [], []
        for k, d in enumerate(chunk.done):
            for g in d.job.gens:
                gens.append(g)
                rows.append(k)
                g.started = d.job.started
                self._m_queue.observe(max(g.started - g.stream.arrived, 0.0))
                g.rng = Uniforms(g.stream.seed)
                self._release(g)
        logits = np.stack([d.logits for d in chunk.done])[rows]
        hn = np.concatenate([d.h for d in chunk.done], axis=1)[:, rows]
        cn = np.concatenate([d.c for d in chunk.done], axis=1)[:, rows]
        groups = [list(range(len(gens)))] if self.batching else [[k] for k in range(len(gens))]
        for idx in groups:
            batch = _Batch([gens[k] for k in idx], np.ascontiguousarray(hn[:, idx]),
                           np.ascontiguousarray(cn[:, idx]))
            self._advance(batch, logits[idx], now, out, flush=True)  # first characters: at once
            if self.batching and self._batches:
                self._batches[0].extend(batch)
            else:
                self._batches.append(batch)
        for g in gens:  # every stream's first character came from this prefill
            g.first_char_at = now
            self._m_ttfc.observe(now - g.stream.arrived)

    def _observe_prefill(self, chunk: Chunk) -> None:
        if chunk.last and chunk.burst_cells >= TRIM_AFTER_CELLS:
            # the burst is over: what its buffers took goes back to the system (ORT's
            # arena gave its part back in the call itself: ``shrink``)
            runtime.release_free_memory()
        self._m_prefill.observe(chunk.seconds)
        self._m_prefill_batch.observe(chunk.rows)
        self._m_padding.inc(chunk.cells - chunk.real)
        self._m_real.inc(chunk.real)

    @staticmethod
    def _release(g: _Gen) -> None:
        if g.stream.release is not None:
            g.stream.release()

    def _run_parts(self, ids: np.ndarray, lens: np.ndarray, h: np.ndarray, c: np.ndarray,
                   min_rows: int, shrink: bool = False
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``model.run`` over the rows, cut into up to ``parallel`` contiguous parts of
        at least ``min_rows`` rows run side by side (each part trimmed to its own
        longest row)."""
        B = len(ids)
        parts = min(self.parallel, B // max(1, min_rows))
        if parts <= 1 or self._pool is None:
            # a call not cut in parts leaves the engine's other core idle: it runs on
            # the model's two-thread session when it has one (same answers), unless a
            # classifier call holds that core (measured: two threads then lose ~10 %)
            wide = self._pool is not None and CLASSIFIER_CALLS.n == 0
            return self.model.run(ids, lens, h, c, wide=wide, shrink=shrink)
        cuts = [B * i // parts for i in range(parts + 1)]

        def part(a: int, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            T = max(1, int(lens[a:b].max()))
            return self.model.run(ids[a:b, :T], lens[a:b], np.ascontiguousarray(h[:, a:b]),
                                  np.ascontiguousarray(c[:, a:b]), shrink=shrink)

        later = [self._pool.submit(part, cuts[i], cuts[i + 1]) for i in range(1, parts)]
        results = [part(cuts[0], cuts[1])] + [f.result() for f in later]
        return (np.concatenate([r[0] for r in results], axis=0),
                np.concatenate([r[1] for r in results], axis=1),
                np.concatenate([r[2] for r in results], axis=1))

    # -- phase 2: step ----------------------------------------------------------------
    def _step(self, out: list) -> None:
        """One character for every active stream: one ORT call per batch (one batch
        unless batching is off), then sampling."""
        for b in self._batches:
            t0 = time.perf_counter()
            try:
                logits, hn, cn = self._run_parts(b.ids, b.lens, b.h, b.c,
                                                 self.step_split_min_rows)
            except Exception as e:
                self._fail_all(b.gens, e)
                continue
            now = time.perf_counter()
            self._m_step.observe(now - t0)
            B = len(b.gens)
            self._m_step_batch.observe(B)
            self._tally_real += B
            b.h, b.c = hn, cn
            self._advance(b, logits, now, out)

    def _advance(self, b: _Batch, logits: np.ndarray, now: float, out: list,
                 flush: bool = False) -> None:
        """Sample one character for every row (one vectorised call, one draw from each
        stream's generator); the text each stream's matcher releases joins its buffer,
        and streaming streams' buffers are queued when ``flush`` or when
        ``flush_interval_s`` has passed since the last time."""
        u = [draw() for draw in b.draws]
        if b.sampler is None:
            b.sampler = RowSampler(b.temp, b.top_k, b.top_p, self._banned, logits.shape[1],
                                   min_p=min_p_array([g.stream.params for g in b.gens]),
                                   penalties=[g.penalty for g in b.gens])
        ids = b.sampler(logits, u)
        b.ids = ids.astype(np.int64, copy=False).reshape(-1, 1)
        chars = self._chars
        self._tally_chars += len(b.gens)
        for g, idx in zip(b.gens, ids.tolist(), strict=True):
            text, reason = g.matcher.push(chars[idx])
            if text:
                g.buffer.append(text)
            if reason is not None:
                g.reason, g.done, g.ended = reason, True, now
        if flush or now - self._last_flush >= self.flush_interval_s:
            if not flush:
                if now - self._last_flush < self._interval():
                    return
                self._last_flush = now
            for g in b.gens:
                if g.buffer and g.stream.streaming and not g.done:  # done: its Finish takes it
                    out.append((g.stream, "".join(g.buffer)))
                    g.buffer.clear()

    def _interval(self) -> float:
        """The flush interval now: ``flush_interval_s``, longer when the streaming
        streams are so many that they would get more than ``events_per_s`` events a
        second in all, but never over ``MAX_FLUSH_INTERVAL_S``."""
        if self.events_per_s <= 0:
            return self.flush_interval_s
        n = sum(g.stream.streaming for b in self._batches for g in b.gens)
        return max(self.flush_interval_s, min(MAX_FLUSH_INTERVAL_S, n / self.events_per_s))

    # -- phase 3: retire --------------------------------------------------------------
    def _retire(self, out: list, gauge: Gauge) -> None:
        """Finished and cancelled streams leave their batch; a finished one gets its
        Finish. A cancelled one leaves without a word (nobody reads it)."""
        batches, n, left = [], 0, False
        for b in self._batches:
            stay = [k for k, g in enumerate(b.gens) if not (g.done or g.stream.cancelled)]
            if len(stay) < len(b.gens):
                left = True
                for g in b.gens:
                    if g.reason is not None and not g.failed:
                        self._finish(g, out)
                if not stay:
                    continue
                b.keep(stay)
            batches.append(b)
            n += len(b.gens)
        self._batches = batches
        if n != self._gauge_n:
            gauge.set(n)
            self._gauge_n = n
        if left or self._tally_chars >= TALLY_FLUSH_CHARS:
            self._flush_tally()

    def _flush_tally(self) -> None:
        self._m_step.flush()
        self._m_step_batch.flush()
        if self._tally_chars:
            self._m_chars.inc(self._tally_chars)
            self._tally_chars = 0
        if self._tally_real:
            self._m_real.inc(self._tally_real)
            self._tally_real = 0

    def _finish(self, g: _Gen, out: list) -> None:
        s, m = g.stream, g.matcher
        if g.buffer:
            out.append((s, "".join(g.buffer)))
        per_char = (g.ended - g.first_char_at) / (m.n - 1) if m.n > 1 else 0.0
        if m.n > 1:
            self._m_per_char.observe(per_char)
        if s.trace is not None:
            tracing.record(s.trace, "queue", s.arrived, g.started)
            tracing.record(s.trace, "generate", g.started, g.ended, chars=m.n,
                           model=self.model.name)
        out.append((s, Finish(g.reason, m.released, g.started - s.arrived,  # type: ignore[arg-type]
                              g.first_char_at - s.arrived, per_char)))

    # -- delivery and failures --------------------------------------------------------
    def _active_streams(self) -> list[Stream]:
        return [g.stream for b in self._batches for g in b.gens] + [
            g.stream for g in self.prefill.gens]

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

    def _fail(self, g: _Gen, exc: ApiError) -> None:
        g.done = g.failed = True
        self._release(g)
        self._deliver([(g.stream, exc)])

    def _fail_streams(self, streams: list[Stream], exc: ApiError) -> None:
        for s in dict.fromkeys(streams):  # each once
            if s.release is not None:
                s.release()
            self._deliver([(s, exc)])

    def _fail_all(self, gens: list[_Gen], e: Exception) -> None:
        error_id = uuid.uuid4().hex[:12]
        log.error("generation inference error %s on %d streams: %s", error_id, len(gens), e)
        for g in gens:
            self._fail(g, ModelFailure(error_id))
