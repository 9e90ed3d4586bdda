"""The generation engine's step: one batched forward, then per-request token choosing.

``Runner`` makes the ONNX Runtime calls: a large call is cut into ``parallel`` parts
of at least ``min_rows`` rows run side by side on the cores (the engine thread runs
one, helper threads the others). An uncut call may run on the model's two-thread
session when the engine has a second core and no classifier call holds it
(``ClassifierCalls``), but only while that measures faster (``Widen``): on an idle
machine it is (a 200-character prefill 18.2 -> 13.5 ms), but when anything else
wants the second core (the event loop, a client on the same machine, a neighbour)
the second thread waits for it at every operator, and a lone stream's steps were
slower on two threads than on one (docs/benchmarks.md). Rows are independent
(``sequence_lens``, per-row state) and the two sessions' answers are bitwise equal
(checked at load), so neither the split nor the session changes any answer.

``TokenChooser`` turns each row's logits into its next character (one vectorised
``RowSampler`` call, one draw from each stream's own seeded generator: TGI's
``NextTokenChooser``, per request), feeds it to the stream's stopping criteria
(``StopMatcher``), and decides when streamed text is flushed to the event loop.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from app.engine.cores import ClassifierCalls
from app.engine.outbox import fail_all
from app.engine.rows import Batch, Stream
from app.ops import metrics
from seqcore.sampling import RowSampler, min_p_array
from seqcore.tasks.generation import CharModel

# with an event budget, a streaming stream still gets its text at least this often
MAX_FLUSH_INTERVAL_S = 0.1
# per-step character counts reach their counters at least this often (``Tally``)
TALLY_FLUSH_CHARS = 1000

States = tuple[np.ndarray, np.ndarray, np.ndarray]


class Widen:
    """Whether an uncut call runs on the two-thread session, from measurements: each
    kind of call (a prefill or a step, and its rows to the nearest power of two) keeps
    its last ``window`` seconds per cell on one thread and on two, each way measured
    ``first`` times to begin with, and the way with the lower median serves (a median,
    because one call in a while is descheduled and takes a hundred times longer). Now
    and then a call tries the other way, so a change in what else runs on the machine
    is noticed: after ``explore`` calls at first, and twice as many calls later each
    time the try confirms the choice (up to ``max_explore``). A two-thread call on a
    busy machine can take many times a one-thread one (its second thread waits for a
    core at every operator), so the tries must stay rare where they lose."""

    def __init__(self, explore: int = 64, max_explore: int = 8192, window: int = 5,
                 first: int = 3):
        self.explore = explore
        self.max_explore = max_explore
        self.first = first
        self.window = window
        self.samples: dict[tuple[str, int, bool], deque[float]] = {}  # s/cell
        self._next: dict[tuple[str, int], list[int]] = {}  # -> [calls to the next try, gap]

    def cost(self, kind: str, rows: int, wide: bool) -> float | None:
        """Seconds per cell of a call of ``rows`` rows, each way (None: not measured)."""
        return self._median((*self._key(kind, rows), wide))

    def _median(self, key: tuple[str, int, bool]) -> float | None:
        got = self.samples.get(key)
        return statistics.median(got) if got else None

    def _faster(self, key: tuple[str, int]) -> bool:
        return self._median((*key, True)) < self._median((*key, False))  # type: ignore[operator]

    def _key(self, kind: str, rows: int) -> tuple[str, int]:
        return kind, rows.bit_length()

    def choose(self, kind: str, rows: int) -> bool:
        key = self._key(kind, rows)
        n = [len(self.samples.get((*key, w), ())) for w in (False, True)]
        if min(n) < self.first:  # measuring both ways first, in turn
            return n[1] < n[0]
        faster = wide = self._faster(key)
        due = self._next.setdefault(key, [self.explore, self.explore])
        due[0] -= 1
        if due[0] <= 0:  # a try of the other way (``observe`` sets the next one)
            wide = not faster
        return wide

    def observe(self, kind: str, rows: int, wide: bool, seconds: float, cells: int) -> None:
        key = self._key(kind, rows)
        due = self._next.get(key)
        tried = due is not None and due[0] <= 0
        before = self._faster(key) if tried else None
        got = self.samples.setdefault((*key, wide), deque(maxlen=self.window))
        got.append(seconds / max(cells, 1))
        if tried:  # the next try: later when this one confirmed the choice, else soon
            assert due is not None
            due[1] = (min(2 * due[1], self.max_explore) if self._faster(key) == before
                      else self.explore)
            due[0] = due[1]


class Runner:
    """The engine's ONNX Runtime calls, cut in parallel parts when that pays."""

    def __init__(self, model: CharModel, parallel: int, calls: ClassifierCalls):
        self.model = model
        self.parallel = parallel
        self.calls = calls
        self.pool: ThreadPoolExecutor | None = None
        self.widen = Widen()
        self.busy: Future | None = None  # a ``submit`` call on the helper thread

    @property
    def can_submit(self) -> bool:
        """Whether a call can run on the helper thread (``submit``)."""
        return self.pool is not None

    def submit(self, ids: np.ndarray, lens: np.ndarray, h: np.ndarray, c: np.ndarray,
               shrink: bool = False) -> Future:
        """One call on the helper thread, on the one-thread session, while the engine
        thread goes on: until it ends, ``run`` makes uncut one-thread calls, as the
        helper's core is taken. Its result: ((logits, hN, cN), start, seconds)."""
        assert self.pool is not None

        def call() -> tuple[States, float, float]:
            t0 = time.perf_counter()
            out = self.model.run(ids, lens, h, c, shrink=shrink)
            return out, t0, time.perf_counter() - t0

        self.busy = self.pool.submit(call)
        return self.busy

    def start(self) -> None:
        if self.parallel > 1:
            self.pool = ThreadPoolExecutor(self.parallel - 1,
                                           thread_name_prefix=f"gen-{self.model.name}-part")

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False)

    def _uncut(self, ids: np.ndarray, lens: np.ndarray, h: np.ndarray, c: np.ndarray,
               shrink: bool) -> States:
        """One call over every row. It leaves the engine's other core idle, so it may
        run on the model's two-thread session (same answers): not while a classifier
        call holds that core (measured: two threads then lose ~10 %), not for a lone
        stream's step, and only while ``Widen`` measures it faster.

        A lone stream's steps always run on one thread: on an idle machine two gain at
        most ~8 % there (0.245 -> 0.224 ms), but the second thread takes the core the
        event loop (and, in a benchmark, the client) needs to deliver the text, which
        the call's own time does not show: through HTTP a lone stream was faster with
        them on one thread (docs/benchmarks.md)."""
        if (self.pool is None or getattr(self.model, "wide", None) is None
                or not self.calls.idle):
            return self.model.run(ids, lens, h, c, shrink=shrink)
        B, T = ids.shape
        if B == 1 and T == 1:  # a lone stream's step: see LONE_STEP_NARROW
            return self.model.run(ids, lens, h, c, shrink=shrink)
        kind = "step" if T == 1 else "prefill"
        wide = self.widen.choose(kind, B)
        t0 = time.perf_counter()
        out = self.model.run(ids, lens, h, c, wide=wide, shrink=shrink)
        self.widen.observe(kind, B, wide, time.perf_counter() - t0, B * T)
        return out

    def run(self, ids: np.ndarray, lens: np.ndarray, h: np.ndarray, c: np.ndarray,
            min_rows: int, shrink: bool = False) -> States:
        """``model.run`` over the rows, cut into up to ``parallel`` contiguous parts of
        at least ``min_rows`` rows run side by side (each part trimmed to its own
        longest row)."""
        if self.busy is not None:
            if not self.busy.done():  # the helper thread runs a submitted call
                return self.model.run(ids, lens, h, c, shrink=shrink)
            self.busy = None
        B = len(ids)
        parts = min(self.parallel, B // max(1, min_rows))
        if parts <= 1 or self.pool is None:
            return self._uncut(ids, lens, h, c, shrink)
        cuts = [B * i // parts for i in range(parts + 1)]

        def part(a: int, b: int) -> States:
            T = max(1, int(lens[a:b].max()))
            return self.model.run(ids[a:b, :T], lens[a:b], np.ascontiguousarray(h[:, a:b]),
                                  np.ascontiguousarray(c[:, a:b]), shrink=shrink)

        later = [self.pool.submit(part, cuts[i], cuts[i + 1]) for i in range(1, parts)]
        results = [part(cuts[0], cuts[1])] + [f.result() for f in later]
        return (np.concatenate([r[0] for r in results], axis=0),
                np.concatenate([r[1] for r in results], axis=1),
                np.concatenate([r[2] for r in results], axis=1))


class Tally:
    """Per-step counts and observations, handed to their metrics in bulk (when a
    stream leaves, before its Finish is delivered, or every ``TALLY_FLUSH_CHARS``
    characters): two counter updates and two histogram observations per step were ~6 %
    of a lone stream's engine thread."""

    def __init__(self, name: str):
        self.step = metrics.BulkHistogram(metrics.INFERENCE.labels(name, "step"))
        self.step_batch = metrics.BulkHistogram(metrics.BATCH_SIZE.labels(name, "step"))
        self._m_chars = metrics.GENERATED_CHARS.labels(name)
        self._m_real = metrics.REAL_TOKENS.labels(name)
        self.chars = 0
        self.real = 0

    def flush(self) -> None:
        self.step.flush()
        self.step_batch.flush()
        if self.chars:
            self._m_chars.inc(self.chars)
            self.chars = 0
        if self.real:
            self._m_real.inc(self.real)
            self.real = 0


class TokenChooser:
    """Each row's next character, its stopping criteria, and when text is flushed."""

    def __init__(self, model: CharModel, tally: Tally, flush_interval_s: float,
                 events_per_s: float):
        self.tally = tally
        # streamed text goes to the event loop at most this often (first characters at
        # once): one wake-up per interval instead of one per character and stream
        self.flush_interval_s = flush_interval_s
        # ... and, with many streams, less often: all streams together get at most about
        # ``events_per_s`` events a second (0: no budget), each still one at least every
        # MAX_FLUSH_INTERVAL_S
        self.events_per_s = events_per_s
        self.last_flush = time.perf_counter()
        self.banned = (model.vocab.unk_id,) if model.vocab else ()  # never emit <unk>
        self.chars = model.vocab.chars if model.vocab else []

    def advance(self, b: Batch, logits: np.ndarray, now: float, out: list,
                batches: list[Batch], flush: bool = False) -> None:
        """Sample one character for every row (one vectorised call, one draw from each
        stream's generator); the text each stream's matcher releases joins its buffer,
        and streaming streams' buffers are queued when ``flush`` or when the flush
        interval (``interval(batches)``) has passed since the last time."""
        u = [draw() for draw in b.draws]
        if b.sampler is None:
            b.sampler = RowSampler(b.temp, b.top_k, b.top_p, self.banned, logits.shape[1],
                                   min_p=min_p_array([g.stream.params for g in b.gens]),
                                   penalties=[g.penalty for g in b.gens])
        ids = b.sampler(logits, u)
        b.ids = ids.astype(np.int64, copy=False).reshape(-1, 1)
        chars = self.chars
        self.tally.chars += len(b.gens)
        for g, idx in zip(b.gens, ids.tolist(), strict=True):
            text, reason = g.matcher.push(chars[idx])
            if text:
                g.buffer.append(text)
            if reason is not None:
                g.reason, g.done, g.ended = reason, True, now
        if flush or now - self.last_flush >= self.flush_interval_s:
            if not flush:
                if now - self.last_flush < self.interval(batches):
                    return
                self.last_flush = now
            for g in b.gens:
                if g.buffer and g.stream.streaming and not g.done:  # done: its Finish takes it
                    out.append((g.stream, "".join(g.buffer)))
                    g.buffer.clear()

    def interval(self, batches: list[Batch]) -> float:
        """The flush interval now: ``flush_interval_s``, longer when the streaming
        streams are so many that they would get more than ``events_per_s`` events a
        second in all, but never over ``MAX_FLUSH_INTERVAL_S``."""
        if self.events_per_s <= 0:
            return self.flush_interval_s
        n = sum(g.stream.streaming for b in batches for g in b.gens)
        return max(self.flush_interval_s, min(MAX_FLUSH_INTERVAL_S, n / self.events_per_s))


def step(batches: list[Batch], runner: Runner, chooser: TokenChooser, min_rows: int,
         out: list[tuple[Stream, object]]) -> None:
    """One character for every active stream: one ORT call per batch (one batch
    unless batching is off), then each row's token choice."""
    tally = chooser.tally
    for b in batches:
        t0 = time.perf_counter()
        try:
            logits, hn, cn = runner.run(b.ids, b.lens, b.h, b.c, min_rows)
        except Exception as e:
            fail_all(b.gens, e)
            continue
        now = time.perf_counter()
        tally.step.observe(now - t0)
        B = len(b.gens)
        tally.step_batch.observe(B)
        tally.real += B
        b.h, b.c = hn, cn
        chooser.advance(b, logits, now, out, batches)
