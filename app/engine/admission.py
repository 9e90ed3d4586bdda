"""The generation engine's admission: waiting streams join, their prompts are read.

Waiting streams join up to ``max_streams`` active or being read; one that waited past
the queue deadline is refused (``Overloaded``). Their prompts are read in chunks
(``app.engine.prefill``: chunked prefill, at most one call per iteration and within
a time budget while streams run; while enough of them run, on the helper thread beside
their steps), and a stream whose prompt has been read gets its
first character from the prefill logits, at once, and joins the batch (with batching
off, a batch of its own).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from app.engine.errors import Overloaded
from app.engine.outbox import fail, fail_all
from app.engine.prefill import Call, Chunk
from app.engine.rows import Active, Batch, Gen, Stream
from app.engine.step import Runner, TokenChooser
from app.ops import metrics
from seqcore import runtime
from seqcore.sampling import Uniforms

# a burst of prefills this large (cells) ends with the C heap trimmed (a few ms)
TRIM_AFTER_CELLS = 65_536


class Admission:
    """Phase 1 of an iteration (see the module docstring)."""

    def __init__(self, name: str, vocab: int, pending: queue.Queue[Stream], active: Active,
                 runner: Runner, chooser: TokenChooser, *, max_streams: int,
                 queue_timeout_s: float, batching: bool, split_min_rows: int,
                 background_min_rows: int = 8):
        self.vocab = vocab
        self.pending = pending
        self.active = active
        self.runner = runner
        self.chooser = chooser
        self.max_streams = max_streams
        self.queue_timeout_s = queue_timeout_s
        self.batching = batching
        self.split_min_rows = split_min_rows
        # prompts are read beside the steps only while this many streams run: a step of
        # fewer rows costs more per row than a prompt cell, so the engine thread then
        # helps read the prompts (the running streams wait up to one slice)
        self.background_min_rows = background_min_rows
        self._m_queue = metrics.QUEUE_WAIT.labels(name)
        self._m_ttfc = metrics.TTFC.labels(name)
        self._m_prefill = metrics.INFERENCE.labels(name, "prefill")
        self._m_prefill_batch = metrics.BATCH_SIZE.labels(name, "prefill")
        self._m_padding = metrics.PADDING.labels(name)
        self._m_real = metrics.REAL_TOKENS.labels(name)
        self._m_timeout = metrics.REJECTED.labels("queue_timeout")
        self.call: tuple[Call, Future] | None = None  # a prefill call on the helper thread

    def _arrivals(self, idle: bool) -> list[Stream] | None:
        """The streams that join now; None when the engine is idle and nothing came
        (an idle engine waits up to 50 ms for one)."""
        new: list[Stream] = []
        if idle:
            try:
                new.append(self.pending.get(timeout=0.05))
            except queue.Empty:
                return None
        held = len(self.active.gens()) + len(self.active.prefill.gens)
        while held + len(new) < self.max_streams and self.pending.qsize():
            try:
                new.append(self.pending.get_nowait())
            except queue.Empty:
                break
        return new

    def admit(self, out: list) -> bool:
        """Waiting streams join, and one prefill call reads the next chunk of the
        waiting prompts. False when the engine is idle and nothing arrived."""
        active, prefill = self.active, self.active.prefill
        active.current = []
        running, reading = active.gens(), prefill.gens
        new = self._arrivals(idle=not running and not reading)
        if new is None:
            return False
        gens = [Gen(s, self.vocab) for s in new]
        active.current = gens + reading + running
        now = time.perf_counter()
        admitted = []
        for g in gens:
            if g.stream.cancelled:
                g.release()
                continue
            if now - g.stream.arrived > self.queue_timeout_s:
                self._m_timeout.inc()
                fail(g, Overloaded("waited too long for a generation slot", 1, "queue_timeout"))
                continue
            admitted.append(g)
        prefill.add(admitted, lambda g: g.stream.prompt_ids)
        for g in prefill.drop(lambda g: g.stream.cancelled):
            g.release()
        if prefill.jobs or self.call is not None:
            self.read(out)
        return True

    def read(self, out: list) -> None:
        """One prefill call; the streams whose prompts it finished get their first
        character and join the batch (batching off: a batch each).

        While ``background_min_rows`` streams or more run and the engine has a helper
        thread, the call runs there
        (``Runner.submit``) and the running streams go on stepping on this thread
        meanwhile, instead of waiting for it: each thread's work is then one-thread
        calls of its own, which do not wait for each other (a call cut in two waits for
        its slower half at every step, and under HTTP load the event loop often delays
        one of them). The call's prompts join when it has ended, at the next
        iteration; with nothing left running, the engine waits for it."""
        prefill = self.active.prefill
        if self.call is not None:
            call, fut = self.call
            if not fut.done() and self.active.batches:
                return  # the running streams step meanwhile
            self.call = None
            try:
                (logits, hn, cn), t0, dt = fut.result()
            except Exception as e:
                self._failed(e)
                return
            self._done(prefill.finish(call, logits, hn, cn, t0, dt), out)
        if not prefill.jobs:
            return
        if (self.runner.can_submit and sum(len(b.gens) for b in self.active.batches)
                >= max(1, self.background_min_rows)):
            call = prefill.start(protect=True)
            if call is not None:
                self.call = (call, self.runner.submit(call.ids, call.lens, call.h, call.c,
                                                      shrink=call.last))
            return
        try:
            chunk = prefill.step(
                lambda ids, lens, h, c, shrink: self.runner.run(
                    ids, lens, h, c, self.split_min_rows, shrink=shrink),
                protect=bool(self.active.batches))
        except Exception as e:
            self._failed(e)
            return
        if chunk is not None:
            self._done(chunk, out)

    def _failed(self, e: Exception) -> None:
        """A prefill call failed: every stream reading a prompt gets ``ModelFailure``."""
        prefill = self.active.prefill
        gens = prefill.gens
        prefill.abandon()
        for g in gens:
            g.release()
        fail_all(gens, e)

    def _done(self, chunk: Chunk, out: list) -> None:
        self._observe(chunk)
        if chunk.done:
            self._join(chunk, out)

    def _join(self, chunk: Chunk, out: list) -> None:
        """The streams whose prompts ``chunk`` read to the end: their first character
        (delivered at once), then their rows join the batch."""
        now = time.perf_counter()
        gens, rows = [], []
        for k, d in enumerate(chunk.done):
            for g in d.job.gens:
                gens.append(g)
                rows.append(k)
                g.started = d.job.started
                self._m_queue.observe(max(g.started - g.stream.arrived, 0.0))
                g.rng = Uniforms(g.stream.seed)
                g.release()
        logits = np.stack([d.logits for d in chunk.done])[rows]
        hn = np.concatenate([d.h for d in chunk.done], axis=1)[:, rows]
        cn = np.concatenate([d.c for d in chunk.done], axis=1)[:, rows]
        groups = [list(range(len(gens)))] if self.batching else [[k] for k in range(len(gens))]
        batches = self.active.batches
        for idx in groups:
            batch = Batch([gens[k] for k in idx], np.ascontiguousarray(hn[:, idx]),
                          np.ascontiguousarray(cn[:, idx]))
            # first characters: at once
            self.chooser.advance(batch, logits[idx], now, out, batches, flush=True)
            if self.batching and batches:
                batches[0].extend(batch)
            else:
                batches.append(batch)
        for g in gens:  # every stream's first character came from this prefill
            g.first_char_at = now
            self._m_ttfc.observe(now - g.stream.arrived)

    def _observe(self, chunk: Chunk) -> None:
        if chunk.last and chunk.burst_cells >= TRIM_AFTER_CELLS:
            # the burst is over: what its buffers took goes back to the system (ORT's
            # arena gave its part back in the call itself: ``shrink``)
            runtime.release_free_memory()
        self._m_prefill.observe(chunk.seconds)
        self._m_prefill_batch.observe(chunk.rows)
        self._m_padding.inc(chunk.cells - chunk.real)
        self._m_real.inc(chunk.real)


class PromptBudget:
    """Prompt characters queued or being read, capped (0: no cap): ``take`` refuses
    beyond it, so a burst of long prompts waits in clients, not in this process. A
    prompt alone is always let in (its length is capped by the protocols)."""

    def __init__(self, cap: int):
        self.cap = cap
        self.n = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> Callable[[], None]:
        """Holds ``n`` characters (``Overloaded`` when over the cap); returns the
        function that gives them back (once, however often it is called)."""
        with self._lock:
            if self.cap and self.n and self.n + n > self.cap:
                metrics.REJECTED.labels("prefill_full").inc()
                raise Overloaded("too many prompt characters are waiting to be read; "
                                 "retry shortly", 1, "prefill_full")
            self.n += n
        held = [n]

        def release() -> None:
            with self._lock:
                self.n -= held[0]
                held[0] = 0

        return release
