"""The one tokenizer of each model, shared by training and serving (no torch, no numpy).

``WordTokenizer`` (sentiment): lowercase words with inner apostrophes kept whole
("don't", "director's"), "!" and "?" kept as tokens, HTML line breaks (``<br />``)
dropped. Every token carries ``start``/``end`` character offsets into the ORIGINAL
text, so ``text[start:end].lower() == token`` always holds; ``/attention`` returns them.

``CharVocab`` (generator): lowercased characters seen in the training text plus one
unknown id. Prompt characters outside the vocabulary map to the unknown id (the
generator was trained with a little unknown-id noise, so it copes) and are counted.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import NamedTuple

PAD = "<pad>"
UNK = "<unk>"

# Alternation order matters: an HTML line break is consumed (and skipped) before the
# word pattern could read "br" out of it. [^\W_] is "a letter or digit" in Unicode.
#
# Every pattern that sees user text runs in linear time: each part can match in one
# way only, and the quantifiers are possessive (``*+``, ``++``: never given back), so a
# failed attempt is never retried with another split. The earlier line-break pattern
# ``<\s*br\s*/?\s*>`` had two whitespace runs that could share a run of blanks in
# every way: ``<br`` followed by 50,000 blanks and no ``>`` took 6 s, not 5 ms.
_BR = r"<\s*+br\s*+(?:/\s*+)?>"
_WORD = r"[^\W_]++(?:['\u2019][^\W_]++)*+"
_TOKEN_RE = re.compile(rf"(?P<br>{_BR})|(?P<word>{_WORD})|(?P<punct>[!?])", re.IGNORECASE)


class Token(NamedTuple):  # a tuple: ~3x cheaper to create than a frozen dataclass
    text: str  # lowercased form, the vocabulary key
    start: int  # offsets into the original text: original[start:end]
    end: int


# The same pattern without groups, for ASCII text lowercased up front: ASCII lowercasing
# is per character (no context such as Greek final sigma), keeps every offset, and
# lets one ``lower()`` and ``findall`` replace a ``lower()`` per token. Same tokens.
_ASCII_RE = re.compile(rf"{_BR}|{_WORD}|[!?]")
# For ``token_strings``: in lowercased ASCII a letter-or-digit is [a-z0-9] and only the
# ASCII apostrophe can occur; the one group is empty for a line break, which
# ``filter(None, ...)`` then drops in C. Same tokens, ~20 % faster.
_ASCII_WORDS_RE = re.compile(rf"{_BR}|([a-z0-9]++(?:'[a-z0-9]++)*+|[!?])", re.ASCII)


# For ``token_strings`` on other text: the token pattern with the line break
# non-capturing and the rest in one group, so ``findall`` returns strings (empty for a
# line break) instead of match objects; each token is lowercased on its own, as in
# ``tokenize`` (lowercasing the whole text first could split a word: "İ" -> "i̇").
_WORDS_RE = re.compile(rf"{_BR}|({_WORD}|[!?])", re.IGNORECASE)


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into lowercased tokens with offsets into ``text``."""
    if text.isascii():
        return [Token(m.group(), m.start(), m.end())
                for m in _ASCII_RE.finditer(text.lower()) if m.group()[0] != "<"]
    return [Token(m.group().lower(), m.start(), m.end())
            for m in _TOKEN_RE.finditer(text) if m.lastgroup != "br"]


def token_strings(text: str) -> list[str]:
    """``[t.text for t in tokenize(text)]``, faster: no offsets (the /sentiment path)."""
    if text.isascii():
        return list(filter(None, _ASCII_WORDS_RE.findall(text.lower())))
    return [w.lower() for w in _WORDS_RE.findall(text) if w]


@dataclass
class Encoded:
    ids: list[int]
    tokens: list[Token]  # the tokens the model reads, aligned with ids
    truncated: bool
    n_tokens_total: int


@dataclass
class WordTokenizer:
    """Word vocabulary plus the truncation policy the model was trained with.

    Long texts keep their first ``head_len`` tokens and the last
    ``max_len - head_len`` tokens (head+tail): reviews tend to put their verdict
    at the end, and their framing at the start.
    """

    itos: list[str]
    max_len: int = 800
    head_len: int = 200
    stoi: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.itos[:2] != [PAD, UNK]:
            raise ValueError("vocabulary must start with <pad>, <unk>")
        if not 0 <= self.head_len <= self.max_len:
            raise ValueError("head_len must lie in [0, max_len]")
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    pad_id = 0
    unk_id = 1

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        max_vocab: int,
        min_count: int = 2,
        max_len: int = 800,
        head_len: int = 200,
    ) -> WordTokenizer:
        counts: Counter[str] = Counter()
        for t in texts:
            counts.update(tok.text for tok in tokenize(t))
        # Ties broken alphabetically so the vocabulary is a pure function of the data.
        ranked = sorted(
            (w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w)
        )
        return cls([PAD, UNK, *ranked[: max_vocab - 2]], max_len=max_len, head_len=head_len)

    def encode(self, text: str, offsets: bool = True) -> Encoded:
        """Ids of the tokens the model reads; ``tokens`` (with offsets) only when
        ``offsets`` is true, else empty."""
        toks: list = tokenize(text) if offsets else token_strings(text)
        n = len(toks)
        truncated = n > self.max_len
        if truncated:
            tail = self.max_len - self.head_len
            toks = toks[: self.head_len] + (toks[n - tail :] if tail else [])
        get, unk = self.stoi.get, self.unk_id
        if offsets:
            ids = [get(t.text, unk) for t in toks]
            return Encoded(ids=ids, tokens=toks, truncated=truncated, n_tokens_total=n)
        return Encoded(ids=list(map(get, toks, repeat(unk))), tokens=[], truncated=truncated,
                       n_tokens_total=n)

    def to_json(self) -> dict:
        return {
            "kind": "word",
            "tokenizer": "seqserve-word-v1",
            "lowercase": True,
            "max_len": self.max_len,
            "head_len": self.head_len,
            "pad_id": self.pad_id,
            "unk_id": self.unk_id,
            "itos": self.itos,
        }

    @classmethod
    def from_json(cls, d: dict) -> WordTokenizer:
        if d.get("kind") != "word":
            raise ValueError("not a word vocabulary")
        return cls(list(d["itos"]), max_len=int(d["max_len"]), head_len=int(d["head_len"]))

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> WordTokenizer:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


@dataclass
class CharVocab:
    """Lowercased characters; id 0 is the unknown character."""

    chars: list[str]
    stoi: dict[str, int] = field(init=False, repr=False)

    unk_id = 0

    def __post_init__(self) -> None:
        if self.chars[:1] != [UNK]:
            raise ValueError("character vocabulary must start with <unk>")
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @classmethod
    def build(cls, text: str) -> CharVocab:
        return cls([UNK, *sorted(set(text.lower()))])

    def encode(self, text: str) -> tuple[list[int], int]:
        """Ids for ``text`` (lowercased) and how many characters were unknown."""
        ids = [self.stoi.get(c, self.unk_id) for c in text.lower()]
        return ids, sum(1 for i in ids if i == self.unk_id)

    def decode(self, ids: Iterable[int]) -> str:
        # The unknown id is never sampled by the service (masked), but decode safely.
        return "".join(self.chars[i] if i != self.unk_id else "\ufffd" for i in ids)

    def to_json(self) -> dict:
        return {"kind": "char", "tokenizer": "seqserve-char-v1", "lowercase": True,
                "unk_id": self.unk_id, "chars": self.chars}

    @classmethod
    def from_json(cls, d: dict) -> CharVocab:
        if d.get("kind") != "char":
            raise ValueError("not a character vocabulary")
        return cls(list(d["chars"]))

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> CharVocab:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
