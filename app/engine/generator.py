"""Continuous batching for the character generator: the generation engine.

One engine thread per generator model owns every active stream. Each iteration has
three phases, each its own module (as in TGI):

- **admit** (app/engine/admission.py): waiting streams join (up to ``max_streams``
  active or being read); their prompts are read in chunks (chunked prefill,
  app/engine/prefill.py; while enough streams run, the call runs on the helper thread
  beside their steps), and a stream whose prompt has been read gets its first character from
  the prefill logits and joins the batch;
- **step** (app/engine/step.py): every active stream advances by one character with
  one batched step call ([N, 1] ids, the batch's LSTM states) and its own token
  chooser (one vectorised sampling call, each stream's own seeded generator);
- **retire** (app/engine/retirement.py): streams whose stopping criteria ended them,
  and cancelled ones, leave the batch; a finished one gets its ``Finish``.

A stream's cost per character is one row of one step call: O(1) in prompt and output
length, the context is never re-run. A large prompt costs the running streams at most
one prefill slice per character, and the prompt characters waiting to be read are
capped (``max_prompt_chars_in_flight``; beyond it ``submit`` refuses at once). Rows
are independent in the graph and in sampling, so a stream's text does not depend on
what else runs. With ``batching=False`` (the naive baseline) every stream is a batch
of its own and gets its own ORT calls.

Output goes back to the event loop as text chunks on each stream's asyncio queue,
then a ``Finish`` (app/engine/outbox.py). New streams' first characters go out at
once; after that, streamed text is flushed at most every ``flush_interval_s``
(``SEQSERVE_GEN_STREAM_INTERVAL_MS``), and with many streams less often, within an
event budget (``SEQSERVE_GEN_STREAM_EVENTS_PER_S``): each event costs the server and
the client about the same whatever text it carries. A non-streamed answer is
delivered once, at its finish. The measurements behind these choices are in
docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import uuid
from typing import Any

from app.engine.admission import Admission, PromptBudget
from app.engine.cores import ClassifierCalls
from app.engine.errors import EngineStopped, ModelFailure, Overloaded
from app.engine.outbox import deliver, drain, fail, fail_streams
from app.engine.prefill import Prefill
from app.engine.retirement import Retirement
from app.engine.rows import Active, Batch, Finish, Stream
from app.engine.step import Runner, Tally, TokenChooser, step
from app.ops import metrics, tracing
from seqcore.tasks.generation import CharModel

__all__ = ["Finish", "GenerationEngine", "Stream"]

log = logging.getLogger("seqserve.generation")


class GenerationEngine:
    """The generation loop of one character model (see the module docstring)."""

    def __init__(self, model: CharModel, *, max_streams: int, max_queue: int,
                 queue_timeout_s: float, batching: bool = True, parallel: int = 1,
                 split_min_rows: int = 8, step_split_min_rows: int = 8,
                 background_min_rows: int = 8,
                 flush_interval_s: float = 0.0, events_per_s: float = 0.0,
                 drain_timeout_s: float | None = None, prefill_chunk_chars: int = 256,
                 prefill_slice_s: float = 0.04, prefill_max_cells: int = 4096,
                 max_prompt_chars_in_flight: int = 0,
                 classifier_calls: ClassifierCalls | None = None):
        self.model = model
        self.batching = batching
        self.max_queue = max_queue
        self.step_split_min_rows = step_split_min_rows
        self.prompt_budget = PromptBudget(max_prompt_chars_in_flight)
        # a retired engine waits at most this for its streams (the factory passes a
        # generation's own longest run: SEQSERVE_GEN_TIMEOUT_S + the queue wait + 5 s)
        self.drain_timeout_s = (queue_timeout_s + 30.0 if drain_timeout_s is None
                                else drain_timeout_s)
        self.pending: queue.Queue[Stream] = queue.Queue()
        self.prefill = Prefill(model.zero_state, chunk_chars=prefill_chunk_chars,
                               slice_s=prefill_slice_s, max_cells=prefill_max_cells)
        self.active = Active(self.prefill)
        self.runner = Runner(model, parallel if batching else 1,
                             classifier_calls or ClassifierCalls())
        self.tally = Tally(model.name)
        self.chooser = TokenChooser(model, self.tally, flush_interval_s, events_per_s)
        self.admission = Admission(
            model.name, len(self.chooser.chars), self.pending, self.active, self.runner,
            self.chooser, max_streams=max_streams, queue_timeout_s=queue_timeout_s,
            batching=batching, split_min_rows=split_min_rows,
            background_min_rows=background_min_rows)
        self.retirement = Retirement(model.name, self.active, self.tally)
        self._running = False
        self._thread: threading.Thread | None = None
        self.dead: str | None = None  # why the engine thread ended, when it should run
        self._retiring = False  # a newer version took over: finish what is here, then end

    # -- the loop interface (app.engine.factory.Loop) ----------------------------------
    def start(self) -> None:
        self._running = True
        self.runner.start()
        self._thread = threading.Thread(target=self._run, name=f"gen-{self.model.name}",
                                        daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self.dead is None and self._thread is not None and self._thread.is_alive()

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop taking work, end the thread (waiting up to ``timeout``), and answer
        every stream still held ``Overloaded`` (shutting down)."""
        await asyncio.to_thread(self.close, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """``stop``, blocking (a thread that is not the event loop's)."""
        self._running = False
        if self._thread:
            self._thread.join(timeout)
        self.runner.close()
        fail_streams(self.active.streams() + drain(self.pending),
                     Overloaded("server is shutting down", 5, "shutting_down"))

    async def retire_when_done(self) -> None:
        """Finish the streams already queued or running (a reload swapped in a newer
        version of the model, and nothing new is submitted here), waiting up to
        ``drain_timeout_s``, then stop."""
        self._retiring = True
        await asyncio.to_thread(self.join, self.drain_timeout_s)
        await self.stop(1.0)

    def join(self, timeout: float) -> bool:
        """Waits up to ``timeout`` for the engine thread to end (blocking): True if it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    def submit(self, stream: Stream) -> None:
        """Queue ``stream``; ``Overloaded`` at once when the queue or the prompt
        characters in flight are full, ``EngineStopped`` when the thread is gone."""
        if self.dead:
            raise EngineStopped(self.dead)
        if self.pending.qsize() >= self.max_queue:
            metrics.REJECTED.labels("queue_full").inc()
            raise Overloaded("generation queue is full; retry shortly")
        stream.release = self.prompt_budget.take(len(stream.prompt_ids))
        stream.trace = tracing.current()
        self.pending.put(stream)

    @property
    def prompt_chars_in_flight(self) -> int:
        return self.prompt_budget.n

    # -- the phases, by name (tests drive an engine through them) ---------------------
    @property
    def _batches(self) -> list[Batch]:
        return self.active.batches

    @_batches.setter
    def _batches(self, batches: list[Batch]) -> None:
        self.active.batches = batches

    @property
    def events_per_s(self) -> float:
        return self.chooser.events_per_s

    @events_per_s.setter
    def events_per_s(self, value: float) -> None:
        self.chooser.events_per_s = value

    def _admit(self, out: list) -> bool:
        return self.admission.admit(out)

    def _step(self, out: list) -> None:
        step(self.active.batches, self.runner, self.chooser, self.step_split_min_rows, out)

    def _retire(self, out: list, gauge: Any) -> None:
        self.retirement.retire(out, gauge)

    def _interval(self) -> float:
        return self.chooser.interval(self.active.batches)

    def _iteration(self, gauge: Any) -> None:
        out: list[tuple[Stream, object]] = []
        if not self._admit(out):
            return  # idle: nothing waited
        self._retire(out, gauge)
        if out:  # first characters (and early finishes) go out before the step
            deliver(out)
            out = []
        if self.active.batches:
            self._step(out)
            # the gauge is set again here: when the last stream leaves, the idle wait
            # in admit returns early and it would stay stale
            self._retire(out, gauge)
        deliver(out)
        self.active.current = []

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
                if (self._retiring and not self.active.batches and not self.prefill.jobs
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
                current = [g.stream for g in self.active.current if not g.failed]
                fail_streams(current + self.active.streams() + drain(self.pending),
                             EngineStopped(self.dead))
                self.active.batches = []
                self.prefill.jobs = []
            self.tally.flush()
            gauge.set(0)

    def _fail_iteration(self, e: Exception) -> None:
        """A bug or a bad value surfaced in one iteration (not an ORT error, which
        fails only its call's streams): fail the streams it was handling, keep the loop."""
        metrics.LOOP_ERRORS.labels(self.model.name, "generation").inc()
        # (a Finish queued in this iteration was lost with it: those fail too)
        gens = [g for g in self.active.current if not g.failed]
        error_id = uuid.uuid4().hex[:12]
        log.error("generation loop error %s on %d streams", error_id, len(gens), exc_info=e)
        for g in gens:
            fail(g, ModelFailure(error_id))
        # the iteration's streams are every active one: their batches go as a whole
        # (their arrays may be half-updated)
        self.prefill.drop(lambda g: g.done)
        batches = [b for b in self.active.batches if not all(g.done for g in b.gens)]
        for b in batches:
            if any(g.done for g in b.gens):
                b.keep([k for k, g in enumerate(b.gens) if not g.done])
        self.active.batches = batches
