"""The short-text check set (tests/data/short_set.jsonl): one-line reviews of films and
other products, written by hand in the style of real short reviews, never from the
augmentation's templates. A check, never training data."""

from __future__ import annotations

import re
from collections import Counter

from training.augment import generate, too_close
from training.evaluate import SHORT_SET, load_negation_set


def _words(t: str) -> set[str]:
    return set(re.findall(r"[a-z']+", t.lower()))


def test_the_short_set_is_large_balanced_distinct_and_one_line():
    items = load_negation_set(SHORT_SET)
    assert len(items) >= 150
    labels = Counter(i["label"] for i in items)
    assert labels["positive"] == labels["negative"]
    texts = [i["text"] for i in items]
    assert len({t.lower() for t in texts}) == len(texts)
    assert all("\n" not in t and 0 < len(t) <= 80 for t in texts)
    kinds = Counter(i["kind"] for i in items)
    assert kinds["film"] < len(items) / 2 < kinds["film"] + kinds["product"]  # not films alone
    for kind in kinds:  # each kind balanced too
        assert sum(i["label"] == "positive" for i in items if i["kind"] == kind) * 2 == kinds[kind]


def test_the_short_set_is_kept_apart_from_the_negation_set_and_the_augmentation():
    items = load_negation_set(SHORT_SET)
    negation = {i["text"].lower() for i in load_negation_set()}
    assert not any(i["text"].lower() in negation for i in items)
    words = [_words(i["text"]) for i in items]
    # no augmentation sentence (either kind of draw) shares half its words with an item
    for grammar in (False, True):
        assert not any(too_close(t, words) for t, _ in generate(3000, 1234, grammar=grammar))
