"""What the engine signals when it cannot serve a request: domain errors, not HTTP.

Each carries facts (why, how long to wait before retrying, the id of a logged
failure); which HTTP status, error code and ``Retry-After`` a caller sees is decided
in one table at the HTTP edge (``app.http.errors.ENGINE_ERRORS``), like TGI's router
owning the status codes while its engine knows nothing of HTTP.
"""

from __future__ import annotations


class EngineError(Exception):
    """The engine refused or failed a request; ``message`` is for the caller."""

    retry_after_s: int | None = None  # the caller may retry after this many seconds

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Overloaded(EngineError):
    """No room now (a full queue, too many prompt characters in flight, a wait past
    the queue deadline, a server shutting down): retry after ``retry_after_s``;
    ``reason`` is the rejection's label in the metrics."""

    def __init__(self, message: str, retry_after_s: int = 1, reason: str = "queue_full"):
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.reason = reason


class EngineStopped(EngineError):
    """A model's batching or generation thread has ended: this replica cannot serve the
    model until it restarts (/readyz says so too)."""

    retry_after_s = 5

    def __init__(self, reason: str):
        super().__init__(f"{reason}; this replica must be restarted")
        self.reason = reason


class ModelFailure(EngineError):
    """ONNX Runtime (or the loop around it) failed on a batch; only that batch's
    requests see it. The failure was logged once, with ``error_id``."""

    def __init__(self, error_id: str):
        super().__init__(f"inference failed; quote error_id {error_id} when reporting")
        self.error_id = error_id


class DeadlineExceeded(EngineError):
    """The model did not answer (or a generation did not start or finish) in time."""


class ClientGone(EngineError):
    """The client closed the connection before its answer (nobody reads it)."""

    def __init__(self) -> None:
        super().__init__("the client closed the connection")
