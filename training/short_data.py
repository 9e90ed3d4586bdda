"""Short labelled texts written by others, for the n-gram term (issue 31's short-text floor).

Source: the sentence-level ground truth of Hutto & Gilbert, "VADER: A Parsimonious
Rule-based Model for Sentiment Analysis of Social Media Text" (ICWSM 2014), shipped in
the source distribution of the PyPI package ``vaderSentiment`` 3.3.2
(``additional_resources/hutto_ICWSM_2014.tar.gz``; MIT License, Copyright (c) 2016
C.J. Hutto: training/data/vader_snippets.LICENSE). Each snippet there carries the mean of
20 independent human ratings on -4 .. +4:

- ``amazon``: 3,708 sentences from 309 Amazon product reviews;
- ``movie``: 10,605 sentences from Rotten Tomatoes movie reviews (Pang & Lee's set);
- ``tweets``: 4,200 tweets.

(The NYT editorial snippets of the same archive are left out: opinion articles, not
reviews.) A snippet is kept when its mean rating is at least +1 (positive) or at most
-1 (negative); the rest are neutral or mixed. Then every snippet sharing half or more of
its words (``training.augment.too_close``) with an item of a check set (the short-text
set, the negation set) or of the validation negation items is dropped, and so is every
exact duplicate. A seeded 15 % of what is left is held out (``split = "val"``): it
decides between models, never trains them. The result is committed as
training/data/vader_snippets.tsv (``source, id, rating, label, split, text``); this
module builds it again from the package's source archive:

    pip download --no-deps --no-binary :all: vaderSentiment==3.3.2 -d /tmp/vader
    python -m training.short_data /tmp/vader/vaderSentiment-3.3.2.tar.gz

The same archive's word lexicon (``vaderSentiment/vader_lexicon.txt``, same licence: the
mean of 10 human ratings of each word on -4 .. +4) gives one-word rows: every entry
that is a word of letters (inner apostrophes allowed) kept whole by the service's
tokenizer (no emoticons: ":o" would read as "o")
with a mean of at least +1.5 or at most -1.5, less exact duplicates and every word sharing
half its words with a check item (a two-word check item holding it). They are all for
training (``split = "train"``): the held-out sentences stay what they were, so their
accuracy compares with earlier models. Committed as training/data/vader_words.tsv
(same columns, ``source = "lexicon"``, ``id`` the word); ``training.ngrams
--short-lexicon`` adds them to the snippets.
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import sys
import tarfile
from pathlib import Path

from training.augment import _words, too_close

SNIPPETS = Path(__file__).resolve().parent / "data" / "vader_snippets.tsv"
WORDS = Path(__file__).resolve().parent / "data" / "vader_words.tsv"
LEXICON = "vaderSentiment/vader_lexicon.txt"
WORD_THRESHOLD = 1.5  # |mean rating| on -4 .. +4
SOURCES = {"amazon": "amazonReviewSnippets_GroundTruth.txt",
           "movie": "movieReviewSnippets_GroundTruth.txt",
           "tweets": "tweets_GroundTruth.txt"}
THRESHOLD = 1.0  # |mean rating| on -4 .. +4
HELD_OUT = 0.15
SEED = 1234
FIELDS = ("source", "id", "rating", "label", "split", "text")


def _ground_truth(sdist: Path) -> dict[str, list[tuple[str, float, str]]]:
    """The (id, mean rating, text) rows of each source, read from the sdist tarball."""
    with tarfile.open(sdist) as outer:
        inner_member = next(m for m in outer.getmembers()
                            if m.name.endswith("additional_resources/hutto_ICWSM_2014.tar.gz"))
        inner = tarfile.open(fileobj=io.BytesIO(outer.extractfile(inner_member).read()))
        out = {}
        for source, name in SOURCES.items():
            member = next(m for m in inner.getmembers() if m.name.endswith("/" + name))
            raw = inner.extractfile(member).read().decode("utf-8", errors="replace")
            rows = []
            for line in raw.splitlines():
                parts = line.split("\t")
                if len(parts) != 3 or not parts[2].strip():
                    continue
                rows.append((parts[0].strip(), float(parts[1]), " ".join(parts[2].split())))
            out[source] = rows
    return out


def _lexicon(sdist: Path) -> list[tuple[str, float]]:
    """The (entry, mean rating) rows of the word lexicon, read from the sdist tarball."""
    with tarfile.open(sdist) as outer:
        member = next(m for m in outer.getmembers() if m.name.endswith("/" + LEXICON))
        raw = outer.extractfile(member).read().decode("utf-8", errors="replace")
    rows = []
    for line in raw.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0].strip():
            rows.append((parts[0].strip(), float(parts[1])))
    return rows


def build_words(sdist: Path) -> tuple[list[dict], dict]:
    """The kept lexicon words (dicts of FIELDS, all ``train``) and counts of the rest."""
    from seqcore.tokenizer import token_strings

    check = check_words()
    rows, seen = [], set()
    counts = {"read": 0, "weak": 0, "not_one_word": 0, "close_to_a_check_item": 0,
              "duplicate": 0}
    for entry, rating in _lexicon(sdist):
        counts["read"] += 1
        if abs(rating) < WORD_THRESHOLD:
            counts["weak"] += 1
            continue
        toks = token_strings(entry)
        if toks != [entry.lower()] or not entry.replace("'", "").isalpha():  # ":o" -> "o"
            counts["not_one_word"] += 1
            continue
        word = toks[0]
        if word in seen:
            counts["duplicate"] += 1
            continue
        seen.add(word)
        if too_close(word, check):
            counts["close_to_a_check_item"] += 1
            continue
        rows.append({"source": "lexicon", "id": word, "rating": rating,
                     "label": int(rating > 0), "split": "train", "text": word})
    counts["kept"] = len(rows)
    return rows, counts


def load_words(path: Path | None = None) -> list[tuple[str, int]]:
    """(word, label) of the committed lexicon words (training/data/vader_words.tsv)."""
    with open(path or WORDS, encoding="utf-8", newline="") as f:
        return [(r["text"], int(r["label"])) for r in csv.DictReader(f, delimiter="\t")]


def check_words() -> list[set[str]]:
    """The words of every item of the check sets and the validation negation items."""
    from training.evaluate import NEGATION_SET, NEGATION_VAL, SHORT_SET, load_negation_set

    return [_words(i["text"]) for path in (SHORT_SET, NEGATION_SET, NEGATION_VAL)
            for i in load_negation_set(path)]


def build(sdist: Path) -> tuple[list[dict], dict]:
    """The kept snippets (dicts of FIELDS) and counts of what was dropped."""
    check = check_words()
    rows, seen = [], set()
    counts = {"read": 0, "neutral_or_mixed": 0, "close_to_a_check_item": 0, "duplicate": 0}
    for source, items in _ground_truth(sdist).items():
        for sid, rating, text in items:
            counts["read"] += 1
            if abs(rating) < THRESHOLD:
                counts["neutral_or_mixed"] += 1
                continue
            key = text.lower()
            if key in seen:
                counts["duplicate"] += 1
                continue
            seen.add(key)
            if too_close(text, check):
                counts["close_to_a_check_item"] += 1
                continue
            rows.append({"source": source, "id": sid, "rating": rating,
                         "label": int(rating > 0), "split": "train", "text": text})
    order = list(range(len(rows)))
    random.Random(SEED).shuffle(order)
    for i in order[: round(HELD_OUT * len(rows))]:
        rows[i]["split"] = "val"
    counts["kept"] = len(rows)
    return rows, counts


def write(rows: list[dict], path: Path = SNIPPETS) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        w.writerow(FIELDS)
        for r in rows:
            w.writerow([r[k] for k in FIELDS])


def load(split: str, path: Path | None = None, sources: tuple[str, ...] = tuple(SOURCES)
         ) -> list[tuple[str, int]]:
    """(text, label) of the committed snippets of ``split`` ("train" or "val"; None:
    both)."""
    with open(path or SNIPPETS, encoding="utf-8", newline="") as f:
        return [(r["text"], int(r["label"])) for r in csv.DictReader(f, delimiter="\t")
                if split in (None, r["split"]) and r["source"] in sources]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sdist", help="vaderSentiment-3.3.2.tar.gz (the package's source archive)")
    p.add_argument("--out", default=str(SNIPPETS))
    p.add_argument("--words", action="store_true",
                   help="build the lexicon words instead (to --words-out)")
    p.add_argument("--words-out", default=str(WORDS))
    a = p.parse_args(argv)
    if a.words:
        rows, counts = build_words(Path(a.sdist))
        write(rows, Path(a.words_out))
        print({**counts, "positive": sum(r["label"] for r in rows)}, file=sys.stderr)
        return 0
    rows, counts = build(Path(a.sdist))
    write(rows, Path(a.out))
    by = {f"{s}/{sp}/{lab}": sum(1 for r in rows if (r["source"], r["split"], r["label"])
                                 == (s, sp, lab))
          for s in SOURCES for sp in ("train", "val") for lab in (0, 1)}
    print({**counts, **by}, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
