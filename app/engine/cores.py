"""Who holds a core now: the classifier calls running in this process.

A generation engine with two cores' worth of parallel calls runs an uncut call on the
model's two-thread session only while no classifier call runs: the second thread
would otherwise wait for the core that call holds (measured: two threads then lose
~10 %). The count used to be a module-level global that the generator imported from
the batcher; now one ``ClassifierCalls`` is made per application
(``app.engine.factory``) and handed to every loop it starts: the classification
batchers count their calls in it, the generation engines read it.
"""

from __future__ import annotations

import threading


class ClassifierCalls:
    """Classifier calls running now, across every classifier's loop of one app."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.n = 0

    def add(self, k: int) -> None:
        with self._lock:
            self.n += k

    @property
    def idle(self) -> bool:
        """No classifier call runs: a second thread would find its core free."""
        return self.n == 0
