"""Dynamic batching for the classifier (/sentiment, /attention): the batching loop.

Every text becomes one row in a bounded queue. One loop per model takes what
is queued (waiting at most ``max_wait_ms`` for a batch to fill once it holds fewer
than ``max_batch_size`` rows), sorts the rows by length and cuts them into length
buckets so little padding is computed, and runs each bucket as one ONNX Runtime
call in the batching thread (off the event loop). Each row's result goes
back to its own future.

Answers do not depend on batching: the graph is batch-invariant (ONNX ``LSTM`` with
``sequence_lens``), each row reads only its own outputs, and rows are cut to their
own length.

Backpressure: ``submit`` raises ``Overloaded`` at once when the queue is full, and
rows that waited longer than ``queue_timeout_s`` are answered 503 without running.
An ONNX Runtime error fails only the rows of that call (``ModelFailure``).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from app import metrics
from app.errors import ModelFailure, Overloaded
from app.registry import SentimentModel

log = logging.getLogger("seqserve.batching")


@dataclass
class RowResult:
    probability: float
    attention: np.ndarray  # [len(ids)]
    queue_s: float
    inference_s: float


@dataclass
class _Row:
    ids: list[int]
    future: asyncio.Future
    arrived: float
    queued: float = field(default_factory=time.perf_counter)


def _deliver(rows: list[_Row], results: list[RowResult]) -> None:
    for r, res in zip(rows, results, strict=True):
        if not r.future.done():
            r.future.set_result(res)


def _fail(rows: list[_Row], make_exc) -> None:  # noqa: ANN001
    for r in rows:
        if not r.future.done():
            r.future.set_exception(make_exc())


def length_buckets(lengths: list[int], max_batch: int, min_split_len: int = 32,
                   ratio: float = 1.5) -> list[list[int]]:
    """Indices sorted by length, cut into batches of at most ``max_batch`` rows;
    a new batch also starts when a row is ``ratio`` times longer than the batch's
    shortest (and long enough for padding to matter)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur and (len(cur) >= max_batch or (
                lengths[i] >= min_split_len and lengths[i] > ratio * lengths[cur[0]])):
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return out


class ClassificationBatcher:
    """The batching loop runs in its own thread (like the generation engine): it takes
    rows from a thread-safe queue, runs ONNX Runtime and hands each batch's results
    back to the event loop with one ``call_soon_threadsafe``. Running the loop on the
    event loop instead left ONNX Runtime idle ~25 % of the time under load, waiting
    for a busy event loop to notice a finished call and start the next."""

    def __init__(self, model: SentimentModel, *, max_batch_size: int, max_wait_ms: float,
                 max_queue: int, queue_timeout_s: float, batching: bool = True,
                 bucket_ratio: float = 1.5):
        self.model = model
        self.max_batch = max_batch_size if batching else 1
        self.max_wait = max_wait_ms / 1000 if batching else 0.0
        self.queue_timeout_s = queue_timeout_s
        self.queue: queue.Queue[_Row] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._running = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.incoming = 0  # requests announced (being decoded) but not yet submitted
        self.bucket_ratio = bucket_ratio
        n = model.name
        self._m_infer = metrics.INFERENCE.labels(n, "classify")
        self._m_batch = metrics.BATCH_SIZE.labels(n, "classify")
        self._m_real = metrics.REAL_TOKENS.labels(n)
        self._m_pad = metrics.PADDING.labels(n)
        self._m_queue = metrics.QUEUE_WAIT.labels(n)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._running = True
        self._thread = threading.Thread(target=self._work, name=f"ort-{self.model.name}",
                                        daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._running = False
        if self._thread:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10.0)
        while True:
            try:
                row = self.queue.get_nowait()
            except queue.Empty:
                break
            if not row.future.done():
                row.future.set_exception(Overloaded("server is shutting down", 5,
                                                    "shutting_down"))

    def announce(self, n: int) -> None:
        """``n`` rows are on their way (event loop only); ``submit`` counts them off."""
        self.incoming += n

    def submit(self, ids: list[int], arrived: float) -> asyncio.Future:
        """Queue one row; raises ``Overloaded`` at once if the queue is full."""
        fut = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(_Row(ids, fut, arrived))
        except queue.Full:
            metrics.REJECTED.labels("queue_full").inc()
            raise Overloaded("classification queue is full; retry shortly") from None
        self.incoming -= 1
        return fut

    # -- worker thread --------------------------------------------------------------
    def _collect(self) -> list[_Row]:
        """What is queued, up to max_batch rows (none after 0.1 s of silence). The loop
        waits up to max_wait for more only while requests that have arrived are still
        being decoded and tokenized (``incoming``): when nobody else is on the way (a
        lone caller, or every caller already queued) waiting would only add latency."""
        try:
            rows = [self.queue.get(timeout=0.1)]
        except queue.Empty:
            return []
        deadline = time.perf_counter() + self.max_wait
        while len(rows) < self.max_batch:
            try:
                rows.append(self.queue.get_nowait())
                continue
            except queue.Empty:
                pass
            remaining = deadline - time.perf_counter()
            if remaining <= 0 or self.incoming <= 0:
                break
            try:
                rows.append(self.queue.get(timeout=remaining))
            except queue.Empty:
                break
        return rows

    def _call(self, fn, *args) -> None:  # noqa: ANN001
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # event loop closed during shutdown
            pass

    def _work(self) -> None:
        while self._running:
            rows = self._collect()
            if not rows:
                continue
            now = time.perf_counter()
            live, late = [], []
            for r in rows:
                if r.future.done():  # client went away (cancelled) before we ran it
                    continue
                (late if now - r.arrived > self.queue_timeout_s else live).append(r)
            if late:
                metrics.REJECTED.labels("queue_timeout").inc(len(late))
                self._call(_fail, late, lambda: Overloaded("waited too long in the queue", 1,
                                                           "queue_timeout"))
            if not live:
                continue
            try:
                results = self._run(live)
            except Exception as e:  # one failed ORT call fails only its own rows
                error_id = uuid.uuid4().hex[:12]
                log.error("inference error %s on %d rows: %s", error_id, len(live), e)
                self._call(_fail, live, lambda eid=error_id: ModelFailure(eid))
                continue
            self._call(_deliver, live, results)

    def _run(self, rows: list[_Row]) -> list[RowResult]:
        """Runs in the batching thread."""
        start = time.perf_counter()
        out: list[RowResult | None] = [None] * len(rows)
        lengths = [max(1, len(r.ids)) for r in rows]
        for bucket in length_buckets(lengths, self.max_batch, ratio=self.bucket_ratio):
            T = max(lengths[i] for i in bucket)
            ids = np.zeros((len(bucket), T), dtype=np.int64)
            lens = np.empty(len(bucket), dtype=np.int64)
            for k, i in enumerate(bucket):
                row_ids = rows[i].ids or [self.model.tokenizer.unk_id]  # type: ignore[union-attr]
                ids[k, : len(row_ids)] = row_ids
                lens[k] = len(row_ids)
            t0 = time.perf_counter()
            probs, attn = self.model.run(ids, lens)
            dt = time.perf_counter() - t0
            self._m_infer.observe(dt)
            self._m_batch.observe(len(bucket))
            real = int(lens.sum())
            self._m_real.inc(real)
            self._m_pad.inc(ids.size - real)
            for k, i in enumerate(bucket):
                q = start - rows[i].arrived
                self._m_queue.observe(max(q, 0.0))
                out[i] = RowResult(float(probs[k]), attn[k, : lens[k]].copy(), q, dt)
        return out  # type: ignore[return-value]
