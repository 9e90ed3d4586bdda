"""What the generation engine sends back to the event loop: text, finishes, failures.

Output goes back as items on each stream's asyncio queue, with one
``call_soon_threadsafe`` for all the items of an iteration. A failure is an engine
error (app/engine/errors.py) on the stream's queue: ``ModelFailure`` with an error id
logged once at ERROR for the whole failed call.
"""

from __future__ import annotations

import logging
import queue
import uuid
from collections.abc import Iterable

from app.engine.errors import EngineError, ModelFailure
from app.engine.rows import Gen, Stream

log = logging.getLogger("seqserve.generation")


def deliver(items: list[tuple[Stream, object]]) -> None:
    """Puts every (stream, item) on its stream's queue, in one event-loop callback."""
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


def fail(g: Gen, exc: EngineError) -> None:
    g.done = g.failed = True
    g.release()
    deliver([(g.stream, exc)])


def fail_streams(streams: Iterable[Stream], exc: EngineError) -> None:
    for s in dict.fromkeys(streams):  # each once
        if s.release is not None:
            s.release()
        deliver([(s, exc)])


def fail_all(gens: list[Gen], e: Exception) -> None:
    """An ONNX Runtime call failed: every stream of it gets ``ModelFailure``."""
    error_id = uuid.uuid4().hex[:12]
    log.error("generation inference error %s on %d streams: %s", error_id, len(gens), e)
    for g in gens:
        fail(g, ModelFailure(error_id))


def drain(pending: queue.Queue[Stream]) -> list[Stream]:
    """Every stream waiting in ``pending``, taken out."""
    out = []
    while True:
        try:
            out.append(pending.get_nowait())
        except queue.Empty:
            return out
