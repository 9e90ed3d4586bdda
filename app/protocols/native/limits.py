"""The limits of every protocol's requests, in one place: the static caps that the
schemas (native, OpenAI, V2) put on every number and count, and the checks of the
limits that depend on settings, run after the schema, in the one error shape
(``fields_renamed`` gives their errors a protocol's own field names)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from app.config import Settings
from app.http.errors import ApiError, invalid

# Absolute caps on every number and count a request carries, whatever the settings say,
# so nothing downstream meets a value it cannot hold (a top_k of 2**63 once overflowed
# int64 inside the generation thread and killed it). The settings' own limits, checked
# below, are usually far lower.
TOP_K_CAP = 1_000_000  # far above any vocabulary; keeps the engine's int arrays small
MAX_NEW_CHARS_CAP = 1_000_000  # SEQSERVE_MAX_NEW_CHARS is the real limit
MAX_TEXTS_CAP = 4096
MAX_STOP_CAP = 64
SEED_MAX = 2**63 - 1


def check_text(field: str, text: str, limit: int) -> None:
    if "\x00" in text:
        raise invalid(field, "must not contain NUL characters")
    if not text.strip():
        raise invalid(field, "must contain at least one non-whitespace character")
    if len(text) > limit:
        raise invalid(field, f"at most {limit} characters (got {len(text)}); "
                      "raise SEQSERVE_MAX_TEXT_CHARS or split the text")


def check_texts(texts: list[str], s: Settings) -> None:
    if not texts:
        raise invalid("texts", "must hold at least one text")
    if len(texts) > s.max_texts:
        raise invalid("texts", f"at most {s.max_texts} texts per request (got {len(texts)})")
    for i, t in enumerate(texts):
        check_text(f"texts.{i}", t, s.max_text_chars)


def check_generate(prompt: str, max_new_chars: int, stop: list[str], s: Settings) -> None:
    if "\x00" in prompt:
        raise invalid("prompt", "must not contain NUL characters")
    if not prompt:
        raise invalid("prompt", "must not be empty")
    if len(prompt) > s.max_prompt_chars:
        raise invalid("prompt", f"at most {s.max_prompt_chars} characters (got {len(prompt)})")
    if max_new_chars > s.max_new_chars:
        raise invalid("max_new_chars", f"at most {s.max_new_chars} (got {max_new_chars})")
    if len(stop) > s.max_stop:
        raise invalid("stop", f"at most {s.max_stop} stop sequences (got {len(stop)})")
    for i, st in enumerate(stop):
        if not st:
            raise invalid(f"stop.{i}", "stop sequences must not be empty")
        if len(st) > s.max_stop_chars:
            raise invalid(f"stop.{i}", f"at most {s.max_stop_chars} characters")


def default_max_new(default: int, s: Settings) -> int:
    """A protocol's default number of new characters, clamped to SEQSERVE_MAX_NEW_CHARS:
    a default must never trip a lower limit (an explicit value over it is refused)."""
    return min(default, s.max_new_chars)


@contextmanager
def fields_renamed(names: dict[str, str]) -> Iterator[None]:
    """Re-raise the validation errors of the checks above with a protocol's field
    names: ``max_new_chars`` is ``max_tokens`` to an OpenAI client, ``texts.3`` is
    element 3 of the input tensor ``text`` to a V2 client."""
    try:
        yield
    except ApiError as exc:
        if not exc.details:
            raise
        old = str(exc.details[0].get("field", ""))
        head, dot, rest = old.partition(".")
        if head not in names:
            raise
        new = names[head] + dot + rest
        message = new + exc.message.removeprefix(old) if exc.message.startswith(old) else exc.message
        raise ApiError(exc.status, exc.code, message, headers=exc.headers,
                       details=[{**exc.details[0], "field": new}, *exc.details[1:]]) from None
