"""Metrics belong to the data they came from (issue 32, point 6): the figures on the
hand-written movie-review sets are computed only for models trained on IMDB (its
archives by sha256, or its 25,000 + 25,000 reviews extracted), and every figure in a
trained model's manifest names the set it was computed on (``evaluation_sets``)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.training.test_training import _synthetic_imdb, corpus
from training.evaluate import IMDB_ARCHIVES, evaluation_sets, trained_on_imdb


def test_imdb_is_recognised_by_its_archives_or_its_review_counts():
    for sha in IMDB_ARCHIVES:
        assert trained_on_imdb({"source": "x.tar.gz", "sha256": sha}, 10, 10)
    assert not trained_on_imdb({"source": "reviews.tar.gz", "sha256": "ab" * 32}, 25_000, 25_000)
    assert trained_on_imdb({"source": "aclImdb", "sha256": None}, 25_000, 25_000)
    assert not trained_on_imdb({"source": "products", "sha256": None}, 900, 100)


def test_each_figure_names_its_set_by_the_longest_prefix():
    metrics = {"val_accuracy": 0.9, "test_accuracy": 0.8, "test_reviews": 10, "ece": 0.1,
               "negation_accuracy": 0.7, "evaluated_with": "onnxruntime", "eval_seconds": 1.0}
    sets = evaluation_sets(metrics, {"val_": "V", "test_": "T", "ece": "T", "negation_": "N"})
    assert sets == {"val_accuracy": "V", "test_accuracy": "T", "test_reviews": "T", "ece": "T",
                    "negation_accuracy": "N"}


def test_a_model_not_trained_on_imdb_gets_no_negation_figures(tmp_path: Path, capsys):
    from training.train_sentiment import main

    arc = _synthetic_imdb(tmp_path / "reviews.tar.gz", n=30)  # IMDB's layout, not IMDB
    out = tmp_path / "s"
    assert main(["--data", str(arc), "--out", str(out), "--emb-dim", "16", "--hidden", "8",
                 "--batch-size", "16", "--max-len", "24", "--head-len", "8", "--w2v-epochs",
                 "1", "--max-steps", "3"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    metrics, sets = manifest["metrics"], manifest["evaluation_sets"]
    assert "negation_accuracy" not in metrics and "negation_by_kind" not in metrics
    assert "negation set: not scored (reviews.tar.gz is not the IMDB dataset)" in capsys.readouterr().out
    assert set(sets) == set(metrics) - {"evaluated_with", "eval_seconds"}
    assert sets["test_accuracy"] == f"the reviews.tar.gz test split ({manifest['data']['test']} reviews)"
    assert sets["val_accuracy"].startswith("validation: 10% of the reviews.tar.gz train split")


def test_a_char_model_names_its_held_out_text(tmp_path: Path):
    from training.train_chargen import main

    out = tmp_path / "m"
    assert main(["--data", str(corpus(tmp_path / "c.txt")), "--out", str(out), "--hidden", "16",
                 "--emb-dim", "8", "--chunk", "32", "--batch-size", "8", "--eval-streams", "4",
                 "--max-steps", "2"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    sets = manifest["evaluation_sets"]
    assert set(sets) == set(manifest["metrics"]) - {"evaluated_with", "eval_seconds"} and sets
    assert all(s.startswith("held out: the last 5% of c.txt (") for s in sets.values())
