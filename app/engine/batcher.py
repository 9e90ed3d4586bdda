"""Dynamic batching for the classifier (/sentiment, /attention): the batching loop.

Every text becomes one row in a bounded pending list. ``threads`` worker threads (one
per core by default) each take one batch at a time and run it as one ONNX Runtime
call on a 1-thread session, so two calls run side by side on two cores with no
per-step barrier between threads (two 1-thread callers beat one 2-thread caller on
this graph: docs/benchmarks.md).

A batch is picked around the OLDEST waiting row (nobody starves): its nearest
neighbours in length join while that lowers the estimated cost per real token (the
LSTM runs every padded step; on a CPU batching pays up to ~4 rows), so calls are
neither padded nor starved of rows (see ``pick_batch``). While fewer than
``max_batch_size`` rows wait, a free worker waits at most ``max_wait_ms`` for more,
and only while requests that have arrived are still being decoded and tokenized
(``announce``): with nobody else on the way, waiting would only add latency.
Results go back to the event loop as soon as their call ends.

A lone call (no other call running, nothing else waiting) would leave the other
core idle; when the model was loaded with its recurrent directions split
(seqcore/split.py) and there are two or more workers, such a call runs its two
directions side by side, the forward one in a helper thread, and answers the same.

Answers do not depend on batching: the graph is batch-invariant (ONNX ``LSTM`` with
``sequence_lens``), each row reads only its own outputs, and rows are cut to their
own length.

Backpressure: ``submit`` raises ``Overloaded`` at once when ``max_queue`` rows wait,
and rows that waited longer than ``queue_timeout_s`` are refused (``Overloaded``)
without running. An ONNX Runtime error fails only the rows of that call
(``ModelFailure``). The pending rows and the choice of each batch are the
``RowQueue``'s; the worker threads and the calls, the ``ClassificationBatcher``'s.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from app.engine.cores import ClassifierCalls
from app.engine.errors import EngineStopped, ModelFailure, Overloaded
from app.ops import metrics, tracing
from seqcore.runtime import pad_rows
from seqcore.tasks.classification import ClassifiedRow, SentimentModel

log = logging.getLogger("seqserve.batching")


class InferenceError(Exception):
    """ONNX Runtime failed on a batch (the cause is chained)."""


@dataclass
class RowResult(ClassifiedRow):
    """A row's outputs and what it cost: time in the queue, and its call's time."""

    queue_s: float = 0.0
    inference_s: float = 0.0


@dataclass
class _Row:
    ids: list[int]
    future: asyncio.Future
    arrived: float
    queued: float = field(default_factory=time.perf_counter)
    trace: Any = None  # the request's trace (app/ops/tracing.py), when tracing is on

    @property
    def length(self) -> int:
        return max(1, len(self.ids))


def _deliver(rows: list[_Row], results: list[RowResult]) -> None:
    for r, res in zip(rows, results, strict=True):
        if not r.future.done():
            r.future.set_result(res)
        if r.trace is not None:
            start = r.arrived + res.queue_s
            tracing.record(r.trace, "queue", r.arrived, start)
            tracing.record(r.trace, "inference", start, start + res.inference_s,
                           batch_size=len(rows), tokens=len(r.ids))


def _fail(rows: list[_Row], make_exc) -> None:  # noqa: ANN001
    for r in rows:
        if not r.future.done():
            r.future.set_exception(make_exc())


def cpu_step_cost(rows: int) -> float:
    """Relative cost of one biLSTM time step over ``rows`` rows on one CPU thread
    (measured, H=128, T=50..800, µs per step: 6.4, 9.0, 11.7, 14.6, then ~3.65 per
    extra row): batching pays up to ~4 rows, after that a row costs what it costs."""
    return (0.0, 6.4, 9.0, 11.7)[rows] if rows < 4 else 14.6 + 3.65 * (rows - 4)


def gpu_step_cost(rows: int) -> float:
    """On a GPU one step of a small LSTM costs about the same for any batch (kernel
    launches dominate), so rows are worth adding unless they add much padding."""
    return 1.0


def pick_batch(lengths: list[int], max_batch: int,
               step_cost: Callable[[int], float] = cpu_step_cost) -> list[int]:
    """Indices (into ``lengths``, oldest first) of the next batch: row 0 (the oldest,
    so nobody starves) and its nearest neighbours in length, added one at a time
    while that strictly lowers the estimated cost per real token. The LSTM runs
    every padded step, so a call over rows r costs ``step_cost(len(r)) * max(len)``:
    a neighbour joins when sharing the call saves more than the padding it adds."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    lo = hi = order.index(0)  # the batch is order[lo : hi + 1], longest at hi
    real = lengths[0]
    best = step_cost(1)  # cost per real token of the oldest row alone
    while hi - lo + 1 < max_batch:
        n = hi - lo + 2
        left = right = float("inf")
        if lo > 0:
            left = step_cost(n) * lengths[order[hi]] / (real + lengths[order[lo - 1]])
        if hi + 1 < len(order):
            right = step_cost(n) * lengths[order[hi + 1]] / (real + lengths[order[hi + 1]])
        if min(left, right) >= best * (1 - 1e-9):  # no real saving: leave the row to
            break  # the next call, which another worker may run side by side
        if left <= right:
            lo -= 1
            real += lengths[order[lo]]
        else:
            hi += 1
            real += lengths[order[hi]]
        best = min(left, right)
    return sorted(order[lo : hi + 1])


class RowQueue:
    """The rows waiting for a call, and the choice of each call's rows (a lock and a
    condition shared by the worker threads)."""

    def __init__(self, *, max_batch: int, max_wait_s: float, max_queue: int,
                 queue_timeout_s: float, step_cost: Callable[[int], float]):
        self.max_batch = max_batch
        self.max_wait = max_wait_s
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.step_cost = step_cost
        self.pending: list[_Row] = []  # arrival order
        self.cond = threading.Condition()
        self.running = False
        self.incoming = 0  # requests announced (being decoded) but not yet submitted
        self.busy = 0  # calls running now (under the lock)

    def put(self, row: _Row) -> None:
        """Queue ``row`` (it was announced); ``Overloaded`` at once if the queue is full."""
        with self.cond:
            if len(self.pending) >= self.max_queue:
                raise Overloaded("classification queue is full; retry shortly")
            self.pending.append(row)
            self.incoming -= 1
            self.cond.notify()

    def drain(self) -> list[_Row]:
        with self.cond:
            rows, self.pending = self.pending, []
        return rows

    def stop(self) -> None:
        with self.cond:
            self.running = False
            self.cond.notify_all()

    def _pick(self, late: Callable[[list[_Row]], None]) -> list[_Row]:
        """The next batch (under the lock): rows whose client left are dropped, rows
        past the queue deadline go to ``late``, then ``pick_batch`` chooses."""
        now = time.perf_counter()
        keep, overdue = [], []
        for r in self.pending:
            if r.future.done():  # client went away (cancelled) before we ran it
                continue
            (overdue if now - r.arrived > self.queue_timeout_s else keep).append(r)
        if overdue:
            late(overdue)
        if len(keep) <= 1 or self.max_batch == 1:
            self.pending = keep[1:]
            return keep[:1]
        chosen = pick_batch([r.length for r in keep], self.max_batch, self.step_cost)
        taken = set(chosen)
        self.pending = [r for i, r in enumerate(keep) if i not in taken]
        return [keep[i] for i in chosen]

    def take(self, late: Callable[[list[_Row]], None]) -> tuple[list[_Row], bool] | None:
        """Blocks until there is a batch to run: (its rows, whether it is a lone call:
        nothing else running, waiting or on its way when it was taken); None when
        stopping. While fewer than ``max_batch`` rows wait, waits at most ``max_wait``
        for the rows announced but not yet submitted."""
        with self.cond:
            while self.running and not self.pending:
                self.cond.wait(0.1)
            if not self.running:
                return None
            deadline = time.perf_counter() + self.max_wait
            while self.running and len(self.pending) < self.max_batch and self.incoming > 0:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self.cond.wait(remaining)
            rows = self._pick(late)
            lone = self.busy == 0 and not self.pending and self.incoming <= 0
            self.busy += bool(rows)
            return rows, lone

    def call_ended(self) -> None:
        with self.cond:
            self.busy -= 1


class ClassificationBatcher:
    """``threads`` worker threads share one ``RowQueue``: each takes a batch, runs ONNX
    Runtime (which releases the GIL) and hands the results back to the event loop with
    one ``call_soon_threadsafe``. Running the loop on the event loop instead left ONNX
    Runtime idle ~25 % of the time under load, waiting for a busy event loop to notice
    a finished call and start the next."""

    def __init__(self, model: SentimentModel, *, max_batch_size: int, max_wait_ms: float,
                 max_queue: int, queue_timeout_s: float, batching: bool = True,
                 threads: int = 1, step_cost: Callable[[int], float] = cpu_step_cost,
                 calls: ClassifierCalls | None = None):
        self.model = model
        # a retired loop waits at most this for its rows: a request's own longest wait
        # (app/engine/classify.py)
        self.drain_timeout_s = queue_timeout_s + 30.0
        self.rows = RowQueue(max_batch=max_batch_size if batching else 1,
                             max_wait_s=max_wait_ms / 1000 if batching else 0.0,
                             max_queue=max_queue, queue_timeout_s=queue_timeout_s,
                             step_cost=step_cost)
        self.threads = threads
        # the classifier calls running in the app, which its generation engines read
        self.calls = calls or ClassifierCalls()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dead: str | None = None  # why a worker thread ended while it should run
        # the helper thread of lone calls (None: every call runs the whole graph)
        self._assist: ThreadPoolExecutor | None = None
        self.split_calls = 0  # lone calls run with the two directions side by side
        n = model.name
        self._m_infer = metrics.INFERENCE.labels(n, "classify")
        self._m_batch = metrics.BATCH_SIZE.labels(n, "classify")
        self._m_real = metrics.REAL_TOKENS.labels(n)
        self._m_pad = metrics.PADDING.labels(n)
        self._m_queue = metrics.QUEUE_WAIT.labels(n)
        self._m_timeout = metrics.REJECTED.labels("queue_timeout")
        self._m_full = metrics.REJECTED.labels("queue_full")
        self._m_split = metrics.SPLIT_CALLS.labels(n)

    # -- the loop interface (app.engine.factory.Loop) ----------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.rows.running = True
        if self.threads >= 2 and getattr(self.model, "split", None) is not None:
            self._assist = ThreadPoolExecutor(1, thread_name_prefix=f"ort-{self.model.name}-assist")
        self._threads = [threading.Thread(target=self._work, name=f"ort-{self.model.name}-{i}",
                                          daemon=True) for i in range(self.threads)]
        for t in self._threads:
            t.start()

    async def stop(self) -> None:
        """Stop taking work, let the calls running end, and answer every row still
        waiting ``Overloaded`` (shutting down)."""
        self.rows.stop()
        loop = asyncio.get_running_loop()
        for t in self._threads:
            await loop.run_in_executor(None, t.join, 10.0)
        if self._assist is not None:
            self._assist.shutdown(wait=False)
        _fail(self.rows.drain(), lambda: Overloaded("server is shutting down", 5, "shutting_down"))

    async def retire_when_done(self) -> None:
        """Let the rows already queued or being tokenized (``incoming``) run, up to
        ``drain_timeout_s``, then stop: nothing new reaches a retired loop, so once
        empty it stays empty."""
        deadline = time.monotonic() + self.drain_timeout_s
        while (self.rows.pending or self.rows.incoming > 0) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self.stop()  # the rows being run finish before the threads end

    @property
    def alive(self) -> bool:
        return self.dead is None and all(t.is_alive() for t in self._threads)

    @property
    def incoming(self) -> int:
        return self.rows.incoming

    def announce(self, n: int) -> None:
        """``n`` rows are on their way (event loop only); ``submit`` counts them off."""
        self.rows.incoming += n

    def submit(self, ids: list[int], arrived: float) -> asyncio.Future:
        """Queue one row; raises ``Overloaded`` at once if the queue is full."""
        if self.dead:
            raise EngineStopped(self.dead)
        fut = asyncio.get_running_loop().create_future()
        try:
            self.rows.put(_Row(ids, fut, arrived, trace=tracing.current()))
        except Overloaded:
            self._m_full.inc()
            raise
        return fut

    # -- worker threads -------------------------------------------------------------
    def _call(self, fn, *args) -> None:  # noqa: ANN001
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # event loop closed during shutdown
            pass

    def _late(self, rows: list[_Row]) -> None:
        self._m_timeout.inc(len(rows))
        self._call(_fail, rows, lambda: Overloaded("waited too long in the queue", 1,
                                                   "queue_timeout"))

    def _work(self) -> None:
        """One worker thread. Any exception while picking or running a batch fails only
        the rows of that iteration and the loop goes on; if the thread ends anyway
        while it should run, ``dead`` says why (/readyz turns 503, ``seqserve_loop_up``
        0) and new rows are refused at once."""
        up = metrics.LOOP_UP.labels(self.model.name, "classify")
        up.set(1)
        try:
            while self._iterate():
                pass
        except BaseException as e:
            self.dead = (f"classification loop of {self.model.name!r} stopped: "
                         f"{type(e).__name__}: {e}")
            log.critical("%s", self.dead, exc_info=e)
            raise
        finally:
            if self.rows.running and not self.dead:
                self.dead = f"classification loop of {self.model.name!r} stopped"
            if self.dead:
                up.set(0)
                reason = self.dead
                self._call(_fail, self.rows.drain(), lambda: EngineStopped(reason))

    def _iterate(self) -> bool:
        """One batch: False when stopping."""
        rows: list[_Row] | None = None
        try:
            taken = self.rows.take(self._late)
            if taken is None:
                return False
            rows, lone = taken
            if rows:
                self.calls.add(1)
                try:
                    results = self._run(rows, lone)
                finally:
                    self.calls.add(-1)
                    self.rows.call_ended()
                self._call(_deliver, rows, results)
        except Exception as e:  # one failed iteration fails only its own rows
            error_id = uuid.uuid4().hex[:12]
            if rows is None:  # failed while picking: the rows it was picking among
                rows = self.rows.drain()
            if isinstance(e, InferenceError):
                log.error("inference error %s on %d rows: %s", error_id, len(rows), e.__cause__)
            else:  # a bug or a bad value outside the model call
                metrics.LOOP_ERRORS.labels(self.model.name, "classify").inc()
                log.error("classification loop error %s on %d rows", error_id, len(rows),
                          exc_info=e)
            self._call(_fail, rows, lambda eid=error_id: ModelFailure(eid))
        return True

    def _run(self, rows: list[_Row], lone: bool = False) -> list[RowResult]:
        """One ONNX Runtime call for ``rows`` (in a worker thread); a ``lone`` call runs
        its recurrent directions side by side when the model has them split."""
        start = time.perf_counter()
        ids, lens = pad_rows([r.ids for r in rows],
                             self.model.tokenizer.unk_id)  # type: ignore[union-attr]
        assist = self._assist if lone else None
        try:  # (p, a) or (p, a, n-gram contributions)
            out = (self.model.run(ids, lens) if assist is None
                   else self.model.run(ids, lens, assist))
            probs, attn = out[0], out[1]
            ngrams = out[2] if len(out) > 2 else None
        except Exception as e:
            raise InferenceError() from e
        dt = time.perf_counter() - start
        if assist is not None:
            self.split_calls += 1
            self._m_split.inc()
        self._m_infer.observe(dt)
        self._m_batch.observe(len(rows))
        real = int(lens.sum())
        self._m_real.inc(real)
        self._m_pad.inc(ids.size - real)
        results = []
        for k, r in enumerate(rows):
            q = start - r.arrived
            self._m_queue.observe(max(q, 0.0))
            p = float(probs[k]) if probs.ndim == 1 else probs[k].copy()  # [labels]
            results.append(RowResult(p, attn[k, : lens[k]].copy(),
                                     None if ngrams is None else ngrams[k, : lens[k]].copy(),
                                     queue_s=q, inference_s=dt))
        return results
