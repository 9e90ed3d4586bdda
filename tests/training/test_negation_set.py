"""The hand-written negation set (a check of the sentiment model, never training data)
and the evaluate command that scores a model on it."""

from __future__ import annotations

import json
from collections import Counter

from training.evaluate import NEGATION_SET, load_negation_set, main

KINDS = {"negated_praise", "negated_criticism", "contrast", "double_negation", "hedge"}


def test_the_set_is_large_balanced_short_and_covers_every_kind():
    items = load_negation_set()
    assert len(items) >= 150
    labels = Counter(i["label"] for i in items)
    assert labels["positive"] == labels["negative"] == len(items) // 2
    assert {i["kind"] for i in items} == KINDS
    assert len({i["text"] for i in items}) == len(items)
    for i in items:  # 1-3 sentences each
        sentences = sum(i["text"].count(c) for c in ".!?;")
        assert 1 <= max(sentences, 1) <= 4 and len(i["text"]) < 200, i
    # negated praise is negative and negated criticism positive, by construction
    assert {i["label"] for i in items if i["kind"] == "negated_praise"} == {"negative"}
    assert {i["label"] for i in items if i["kind"] == "negated_criticism"} == {"positive"}


def test_evaluate_negation_reports_overall_and_per_kind(tiny_models_dir, capsys):
    assert main(["negation", "--model-dir", str(tiny_models_dir / "sentiment"),
                 "--set", str(NEGATION_SET)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["negation_items"] >= 150
    assert 0.0 <= report["negation_accuracy"] <= 1.0
    assert KINDS <= set(report["by_kind"])
    assert report["evaluated_with"] == "onnxruntime"


def test_evaluate_without_data_for_a_dataset_task_is_one_line(tiny_models_dir, capsys):
    assert main(["sentiment", "--model-dir", str(tiny_models_dir / "sentiment")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--data" in err
