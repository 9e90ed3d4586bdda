"""The generation engine's retirement: finished and cancelled streams leave the batch.

A stream ends when its stopping criteria say so (a stop sequence, or its length:
``StopMatcher``), and then gets what it still holds of its text and its ``Finish``,
with its accounting (metrics, trace spans). A cancelled stream leaves without a word
(nobody reads it). Retirement also runs right after admission, so a stream that ended
at its first character, or was cancelled meanwhile, takes no row in the step.
"""

from __future__ import annotations

from typing import Any

from app.engine.rows import Active, Finish, Gen, Stream
from app.engine.step import TALLY_FLUSH_CHARS, Tally
from app.ops import metrics, tracing


class Retirement:
    """Phase 3 of an iteration (see the module docstring)."""

    def __init__(self, name: str, active: Active, tally: Tally):
        self.name = name
        self.active = active
        self.tally = tally
        self._m_per_char = metrics.TIME_PER_CHAR.labels(name)
        self._gauge_n = -1  # the active-streams gauge's last value (set only on change)

    def retire(self, out: list[tuple[Stream, object]], gauge: Any) -> None:
        """Finished and cancelled streams leave their batch; a finished one gets its
        Finish; the active-streams ``gauge`` follows."""
        batches, n, left = [], 0, False
        for b in self.active.batches:
            stay = [k for k, g in enumerate(b.gens) if not (g.done or g.stream.cancelled)]
            if len(stay) < len(b.gens):
                left = True
                for g in b.gens:
                    if g.reason is not None and not g.failed:
                        self.finish(g, out)
                if not stay:
                    continue
                b.keep(stay)
            batches.append(b)
            n += len(b.gens)
        self.active.batches = batches
        if n != self._gauge_n:
            gauge.set(n)
            self._gauge_n = n
        if left or self.tally.chars >= TALLY_FLUSH_CHARS:
            self.tally.flush()

    def finish(self, g: Gen, out: list[tuple[Stream, object]]) -> None:
        s, m = g.stream, g.matcher
        if g.buffer:
            out.append((s, "".join(g.buffer)))
        per_char = (g.ended - g.first_char_at) / (m.n - 1) if m.n > 1 else 0.0
        if m.n > 1:
            self._m_per_char.observe(per_char)
        if s.trace is not None:
            tracing.record(s.trace, "queue", s.arrived, g.started)
            tracing.record(s.trace, "generate", g.started, g.ended, chars=m.n,
                           model=self.name)
        out.append((s, Finish(g.reason, m.released, g.started - s.arrived,  # type: ignore[arg-type]
                              g.first_char_at - s.arrived, per_char)))
