"""When a generated stream stops, and which of its text may be released yet.

The generation engine (app/engine/generator.py) keeps stopping apart from sampling, as
TGI's StoppingCriteria does: sampling produces a character, a ``StopMatcher`` decides
what of it may be released and whether the stream ends there, and the engine records
the finish.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """When one stream stops, and which of its text may be released yet.

    ``push`` takes each newly generated piece of text (the engine pushes one
    character at a time) and returns the text that may be released now and the finish
    reason, if the stream ends here: ``"stop"`` when a stop sequence completes (the
    one that completes first; of several completing at the same character, the first
    given), ``"length"`` at the ``max_new``-th piece. Text is held back while it could
    still be the start of a stop sequence, so a stop sequence never reaches the
    caller. At a length finish what was held back is released; at a stop the stop
    sequence and whatever followed it in the same piece are dropped.

    Only the held-back suffix is kept, not the whole text: a stop sequence completed
    by the new piece always lies within the held-back text and that piece.

    ``min_new`` (vLLM's ``min_tokens``): a stop sequence that completes before the
    ``min_new``-th piece does not end the stream; its text is released like any other
    (the generator has no end token, so stop sequences are the only early stop).
    """

    __slots__ = ("stops", "max_new", "n", "released", "_held", "_ends", "_inner", "_prefixes",
                 "min_new")

    def __init__(self, stops: Sequence[str] = (), max_new: int | None = None,
                 min_new: int = 0):
        self.min_new = min_new
        self.stops = tuple(stops)
        self.max_new = max_new
        self.n = 0  # pieces pushed
        self.released = 0  # characters released
        self._held = ""
        # last characters of the stops (None: an empty stop, which matches anywhere)
        self._ends = frozenset(s[-1] for s in self.stops) if all(self.stops) else None
        # characters inside a stop's proper prefixes: text that ends with none of them
        # holds nothing back, decided without trying every prefix length
        self._inner = frozenset("".join(s[:-1] for s in self.stops))
        # each stop's proper prefixes with their lengths, longest first
        self._prefixes = [[(k, s[:k]) for k in range(len(s) - 1, 0, -1)] for s in self.stops]

    @property
    def held(self) -> str:
        """The text held back so far (it could still start a stop sequence)."""
        return self._held

    def push(self, text: str) -> tuple[str, str | None]:
        self.n += 1
        if not self.stops:
            reason = "length" if self.max_new is not None and self.n >= self.max_new else None
            self.released += len(text)
            return text, reason
        t = self._held + text if self._held else text
        if not t:
            return "", self._length()
        last = t[-1]
        if self.n < self.min_new:
            pass  # too early to stop: no stop check (text is still held back below)
        elif len(text) == 1:  # the engine's case: a stop can only end here
            ends = self._ends
            if ends is None or last in ends:
                for stop in self.stops:
                    if t.endswith(stop):
                        return self._stopped(t, len(t) - len(stop))
        else:
            cut = self._first_stop(t)
            if cut >= 0:
                return self._stopped(t, cut)
        reason = self._length()
        if reason is not None or last not in self._inner:
            self._held = ""
            self.released += len(t)
            return t, reason
        keep = self._holdback(t)
        cut = len(t) - keep
        self._held = t[cut:]
        self.released += cut
        return t[:cut], None

    def _stopped(self, t: str, cut: int) -> tuple[str, str]:
        self._held = ""
        self.released += cut
        return t[:cut], "stop"

    def _first_stop(self, t: str) -> int:
        """Where the text before the first completed stop ends in ``t``; -1: none."""
        best_end, best_cut = len(t) + 1, -1
        for stop in self.stops:
            if not stop:  # an empty stop matches at the end, as str.endswith does
                start = len(t)
            else:
                start = t.find(stop)
                if start < 0:
                    continue
            if start + len(stop) < best_end:
                best_end, best_cut = start + len(stop), start
        return best_cut

    def _length(self) -> str | None:
        return "length" if self.max_new is not None and self.n >= self.max_new else None

    def _holdback(self, t: str) -> int:
        """Length of the longest suffix of ``t`` that is a proper prefix of a stop."""
        best = 0
        for prefixes in self._prefixes:
            for k, p in prefixes:  # longest first
                if k <= best:
                    break
                if t.endswith(p):
                    best = k
                    break
        return best
