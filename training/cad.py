"""Counterfactually-augmented IMDb pairs (Kaushik, Hovy and Lipton, ICLR 2020).

People revised IMDb reviews, with as few changes as possible, so that the opposite label
applies. The folder (``../shared/data/cad``) holds ``{train,dev,test}_paired.tsv``:
``Sentiment``, ``Text``, ``batch_id``, both members of every pair. Every original comes
from the IMDb *train* split, so a model that trains on IMDb train must leave them out
before anything it scores on these pairs means reading rather than memory:
``exclude_cad`` drops every CAD review (originals and revisions of all three splits) from
a list of IMDb reviews, matched on normalised text (``normalise``).

``CadOptions`` are the two command-line options of every command that trains on the pairs
(``--cad``, ``--cad-repeat``), and ``with_cad`` what those commands do with them.

Pair metrics (``pair_metrics``): accuracy on the originals, on the revisions, and
consistency, the fraction of pairs with both members right.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from training.data import DataError, Review
from training.scaffold import option

SPLITS = ("train", "dev", "test")
_BR = re.compile(r"<\s*br\s*/?\s*>", re.IGNORECASE)
_NON_WORD = re.compile(r"[^0-9a-z]+")


def normalise(text: str) -> str:
    """Lowercase, HTML line breaks and every run of non-alphanumerics one space: the
    form in which a CAD review and its IMDb file are compared (the CAD files went
    through a spreadsheet's quoting; quotes and spacing may differ)."""
    return _NON_WORD.sub(" ", _BR.sub(" ", text).lower()).strip()


@dataclass
class CadOptions:
    """The CAD options of the commands that train on the pairs (train_sentiment, ngrams)."""

    help_group: ClassVar[str] = "counterfactually-augmented data (training.cad)"
    cad: str = option("", "folder of the counterfactually-augmented IMDb pairs "
                          "(training.cad): every CAD review is removed from IMDB train and "
                          "validation, the CAD train pairs are trained on, the dev pairs "
                          "join the validation (after the IMDB reviews)")
    cad_repeat: int = option(4, "with --cad: each CAD train pair is seen this many times an "
                                "epoch", at_least=1)


@dataclass
class Pair:
    original: Review
    revised: Review
    batch_id: str


def _read_tsv(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(f"{path} is missing: pass the folder of the counterfactually-"
                        "augmented IMDb data (train_paired.tsv, dev_paired.tsv, "
                        "test_paired.tsv)")
    csv.field_size_limit(1 << 24)
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or not {"Sentiment", "Text"} <= set(rows[0]):
        raise DataError(f"{path}: expected the columns Sentiment, Text (and batch_id)")
    return rows


def _label(s: str, path: Path) -> int:
    s = s.strip().lower()
    if s not in ("positive", "negative"):
        raise DataError(f"{path}: Sentiment {s!r} is neither Positive nor Negative")
    return int(s == "positive")


def load_pairs(folder: str | Path, split: str) -> list[Pair]:
    """The pairs of one split, in file order. In ``{split}_paired.tsv`` each batch_id has
    two rows, the original first, then its revision (the files' own order; the original
    is also the row found in ``orig_{split}.tsv`` when that file is there)."""
    if split not in SPLITS:
        raise DataError(f"CAD split {split!r}: one of {', '.join(SPLITS)}")
    folder = Path(folder)
    path = folder / f"{split}_paired.tsv"
    rows = _read_tsv(path)
    originals: set[str] = set()
    orig_file = folder / f"orig_{split}.tsv"
    if orig_file.is_file():
        originals = {normalise(r["Text"]) for r in _read_tsv(orig_file)}
    by_id: dict[str, list[Review]] = {}
    for r in rows:
        by_id.setdefault(r.get("batch_id", ""), []).append(
            Review(r["Text"], _label(r["Sentiment"], path)))
    pairs = []
    for bid, members in by_id.items():
        if len(members) != 2 or members[0].label == members[1].label:
            raise DataError(f"{path}: batch_id {bid} is not one pair of opposite labels")
        a, b = members
        if originals and normalise(b.text) in originals and normalise(a.text) not in originals:
            a, b = b, a
        pairs.append(Pair(a, b, bid))
    return pairs


def load_cad(folder: str | Path) -> dict[str, list[Pair]]:
    """``{"train": [...], "dev": [...], "test": [...]}``."""
    return {s: load_pairs(folder, s) for s in SPLITS}


def cad_texts(cad: dict[str, list[Pair]]) -> set[str]:
    """The normalised text of every CAD review, originals and revisions of every split."""
    return {normalise(r.text) for pairs in cad.values() for p in pairs
            for r in (p.original, p.revised)}


def exclude_cad(reviews: list[Review], cad: dict[str, list[Pair]]) -> tuple[list[Review], int]:
    """``reviews`` without any CAD review (normalised text), and how many were dropped."""
    seen = cad_texts(cad)
    kept = [r for r in reviews if normalise(r.text) not in seen]
    return kept, len(reviews) - len(kept)


def pair_rows(pairs: list[Pair], repeat: int = 1) -> list[Review]:
    """Both members of every pair, ``repeat`` times (training rows)."""
    return [r for _ in range(repeat) for p in pairs for r in (p.original, p.revised)]


def pair_metrics(p_orig, p_rev, pairs: list[Pair]) -> dict:
    """Accuracy on originals, on revisions, and consistency (both members right), from
    P(positive) of each original and each revision."""
    import numpy as np

    y_o = np.array([p.original.label for p in pairs], bool)
    y_r = np.array([p.revised.label for p in pairs], bool)
    ok_o = (np.asarray(p_orig) > 0.5) == y_o
    ok_r = (np.asarray(p_rev) > 0.5) == y_r
    return {"pairs": len(pairs), "originals": round(float(ok_o.mean()), 4),
            "revisions": round(float(ok_r.mean()), 4),
            "consistency": round(float((ok_o & ok_r).mean()), 4)}


@dataclass
class CadSplits:
    """What ``with_cad`` made of a training run's IMDB splits."""

    train: list[Review]  # the IMDB training reviews, no CAD review among them
    validation: list[Review]  # the IMDB validation reviews, likewise
    train_pairs: list[Review]  # the CAD train pairs (each ``repeat`` times), to train on
    dev_pairs: list[Review]  # the CAD dev pairs, to join validation
    record: dict  # the manifest's ``data.cad`` ({} without CAD)
    pairs: dict[str, list[Pair]]  # the pairs as read (empty without CAD)


def with_cad(options: CadOptions, train: list[Review], validation: list[Review]) -> CadSplits:
    """The IMDB splits of a run with ``options``: without ``--cad`` as they are; with it,
    every CAD review dropped from both (after the seed's split was carved, so the split
    is the seed's), and the CAD train and dev pairs beside them."""
    if not options.cad:
        return CadSplits(train, validation, [], [], {}, {})
    cad = load_cad(options.cad)
    train, n_tr = exclude_cad(train, cad)
    validation, n_va = exclude_cad(validation, cad)
    print(f"CAD: {n_tr} + {n_va} reviews removed from IMDB train / validation", flush=True)
    record = {"removed_from_train": n_tr, "removed_from_validation": n_va,
              "train_pairs": len(cad["train"]), "repeat": options.cad_repeat,
              "dev_pairs_in_validation": len(cad["dev"])}
    return CadSplits(train, validation, pair_rows(cad["train"], options.cad_repeat),
                     pair_rows(cad["dev"]), record, cad)
