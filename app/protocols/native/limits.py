"""Limits that depend on settings, checked after the schema, in the one error shape."""

from __future__ import annotations

from app.config import Settings
from app.http.errors import invalid


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
