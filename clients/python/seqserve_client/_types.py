"""Result types and the error, built from the service's JSON answers. Unknown fields
are ignored, so that a newer server does not break an older client."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

T = TypeVar("T")


def _build(cls: type[T], data: dict[str, Any], **override: Any) -> T:
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names}, **override)


@dataclass(frozen=True)
class Probabilities:
    """Every label's probability in ``by_label``; ``negative`` and ``positive`` are
    those labels' (None for a model without such a label: one trained on other labels)."""

    negative: float | None = None
    positive: float | None = None
    by_label: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: dict[str, float]) -> Probabilities:
        return cls(d.get("negative"), d.get("positive"), dict(d))


@dataclass(frozen=True)
class Sentiment:
    label: Literal["positive", "negative"] | str  # a model of other labels: its own names
    score: float
    probabilities: Probabilities
    model: str
    model_version: str
    tokens_read: int
    truncated: bool

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Sentiment:
        return _build(cls, {k: v for k, v in d.items() if k != "probabilities"},
                      probabilities=Probabilities.from_json(d["probabilities"]))


@dataclass(frozen=True)
class AttentionToken:
    text: str
    start: int
    end: int
    weight: float


@dataclass(frozen=True)
class Attention(Sentiment):
    tokens: list[AttentionToken] = field(default_factory=list)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Attention:
        rest = {k: v for k, v in d.items() if k not in ("probabilities", "tokens")}
        return _build(cls, rest, probabilities=Probabilities.from_json(d["probabilities"]),
                      tokens=[_build(AttentionToken, t) for t in d.get("tokens", [])])


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: Literal["length", "stop"]
    generated_chars: int
    seed: int
    prompt_chars: int
    unknown_prompt_chars: int
    model: str
    model_version: str

    @classmethod
    def from_json(cls, d: dict[str, Any], text: str | None = None) -> Generation:
        data = dict(d)
        if text is not None:
            data["text"] = text
        return _build(cls, data)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    task: str
    provider: str
    ready: bool
    metrics: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelInfo:
        return cls(name=d["name"], version=d["version"], task=d["task"],
                   provider=d["provider"], ready=d["ready"], metrics=d.get("metrics") or {},
                   details=d)


class SeqserveError(Exception):
    """An error answer (or error event) from the service."""

    def __init__(self, status: int, code: str, message: str, request_id: str | None = None,
                 details: list[dict[str, Any]] | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.request_id, self.details, self.retry_after = request_id, details, retry_after

    @classmethod
    def from_body(cls, status: int, body: Any, request_id: str | None = None,
                  retry_after: float | None = None) -> SeqserveError:
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):  # this API's shape (and OpenAI's)
            return cls(status, str(err.get("code") or "error"), str(err.get("message", "")),
                       err.get("request_id") or request_id, err.get("details"), retry_after)
        if isinstance(err, str):  # the Open Inference Protocol's shape
            return cls(status, "error", err, request_id, None, retry_after)
        return cls(status, "http_error", f"HTTP {status}", request_id, None, retry_after)


class SeqserveConnectionError(SeqserveError):
    """The service could not be reached, or the connection broke before a whole answer
    (refused, DNS, reset): no answer from the server. ``status`` is 0; ``__cause__``
    is the httpx error."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "connection_error", message)


class SeqserveTimeout(SeqserveError):
    """No answer in time (connecting, or waiting for the next bytes): the client's
    ``timeout``. ``status`` is 0; ``__cause__`` is the httpx timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "timeout", message)
