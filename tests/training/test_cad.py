"""Counterfactual pairs (training/cad.py), their exclusion from IMDB training, the pair
metrics and calibration error of the evaluate CLI, and the calibration folded into the
n-gram term's constants (training/ngrams.py --calibrate). Tiny data made here: no
/work/shared, no network."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tests.training.test_training import TINY_SENTIMENT, _synthetic_imdb
from training.cad import exclude_cad, load_cad, load_pairs, normalise, pair_metrics, pair_rows
from training.data import DataError, Review, load_imdb
from training.evaluate import expected_calibration_error, reliability

SWAP = {"great": "awful", "wonderful": "boring", "loved": "hated", "superb": "worst",
        "best": "dull"}
SWAP.update({v: k for k, v in SWAP.items()})


def _revise(text: str) -> str:
    return " ".join(SWAP.get(w, w) for w in text.split())


def tiny_cad(folder: Path, imdb: Path, per_split: tuple[int, int, int] = (12, 4, 4)) -> Path:
    """A CAD-like folder: originals are IMDB *train* reviews of the archive (written with
    a spreadsheet's quoting and a line break, as the real files are), revisions swap
    every polar word for its opposite."""
    folder.mkdir(parents=True, exist_ok=True)
    train = load_imdb(imdb)["train"]
    k = 0
    for split, n in zip(("train", "dev", "test"), per_split, strict=True):
        rows = []
        for i in range(n):
            r = train[k]
            k += 7
            orig = r.text.replace(" and ", ' "and" <br /><br />', 1)
            lab = "Positive" if r.label else "Negative"
            opp = "Negative" if r.label else "Positive"
            rows += [(lab, orig, str(i)), (opp, _revise(r.text), str(i))]
        for name, keep in ((f"{split}_paired.tsv", None), (f"orig_{split}.tsv", 0)):
            with open(folder / name, "w", encoding="utf-8", newline="") as f:
                w = csv.writer(f, delimiter="\t")
                w.writerow(["Sentiment", "Text"] + (["batch_id"] if keep is None else []))
                for j, row in enumerate(rows):
                    if keep is None:
                        w.writerow(row)
                    elif j % 2 == keep:
                        w.writerow(row[:2])
    return folder


@pytest.fixture()
def data(tmp_path: Path) -> tuple[Path, Path]:
    imdb = _synthetic_imdb(tmp_path / "imdb.tar.gz")
    return imdb, tiny_cad(tmp_path / "cad", imdb)


def test_normalise_ignores_case_quotes_spacing_and_line_breaks():
    assert normalise('A "great"  film.<br /><br />Loved it!') == normalise("a great film loved it")
    assert normalise("not bad") != normalise("bad")


def test_pairs_load_with_the_original_first_and_opposite_labels(data):
    imdb, cad = data
    pairs = load_pairs(cad, "train")
    assert len(pairs) == 12
    for p in pairs:
        assert p.original.label != p.revised.label
        assert normalise(p.revised.text) == _revise(normalise(p.original.text))
    assert len(pair_rows(pairs, 3)) == 72
    with pytest.raises(DataError, match="missing"):
        load_pairs(cad.parent / "nowhere", "train")


def test_every_cad_review_is_left_out_of_imdb_train(data):
    imdb, cad = data
    train = load_imdb(imdb)["train"]
    kept, removed = exclude_cad(train, load_cad(cad))
    assert removed == 20  # every original of the three splits, despite the quoting
    assert len(kept) == len(train) - 20
    seen = {normalise(p.original.text) for ps in load_cad(cad).values() for p in ps}
    assert not any(normalise(r.text) in seen for r in kept)


def test_pair_metrics_count_both_members():
    pairs = [type("P", (), {"original": Review("a", 1), "revised": Review("b", 0)})()
             for _ in range(4)]
    m = pair_metrics([0.9, 0.9, 0.1, 0.9], [0.2, 0.7, 0.2, 0.8], pairs)
    assert m == {"pairs": 4, "originals": 0.75, "revisions": 0.5, "consistency": 0.25}


def test_expected_calibration_error():
    # confident and always right: the error is how far from 1 the confidence is
    assert expected_calibration_error([0.9, 0.1, 0.9, 0.1], [1, 0, 1, 0]) == pytest.approx(0.1)
    # 0.8 confident, right 3 times in 4: error 0.05
    assert expected_calibration_error([0.8, 0.8, 0.8, 0.2], [1, 1, 0, 0]) == pytest.approx(0.05)
    # always wrong at 1.0: the worst
    assert expected_calibration_error([1.0, 0.0], [0, 1]) == pytest.approx(1.0)
    bins = reliability([0.55, 0.97, 0.03], [1, 1, 1])
    assert [b["rows"] for b in bins] == [1, 2]
    assert bins[1]["accuracy"] == 0.5 and bins[1]["confidence"] == pytest.approx(0.97)


def test_training_with_cad_excludes_trains_on_pairs_and_calibrates(data, tmp_path, capsys):
    from training.evaluate import main as evaluate_main
    from training.ngrams import main as ngrams_main
    from training.train_sentiment import main as train_main

    imdb, cad = data
    enc = tmp_path / "enc"
    assert train_main(["--data", str(imdb), "--out", str(enc), *TINY_SENTIMENT, "--epochs", "3",
                       "--w2v-epochs", "0", "--cad", str(cad), "--cad-repeat", "2",
                       "--stack-ngrams", "2", "--no-test"]) == 0
    m = json.loads((enc / "manifest.json").read_text())
    rec = m["data"]["cad"]
    assert rec["removed_from_train"] + rec["removed_from_validation"] == 20
    # 160 train reviews: 144 after the split less the CAD ones, + 12 pairs x 2 x 2 rows
    assert m["data"]["train"] == 144 - rec["removed_from_train"] + 48
    assert m["data"]["validation"] == 16 - rec["removed_from_validation"] + 8  # + 4 dev pairs
    out, unc = tmp_path / "cal", tmp_path / "uncal"
    assert ngrams_main(["--base", str(enc), "--data", str(imdb), "--out", str(out),
                        "--buckets", "4096", "--epochs", "2", "--no-test", "--cad", str(cad),
                        "--blend-on", "imdb+cad", "--calibrate",
                        "--uncalibrated-out", str(unc)]) == 0
    cal = json.loads((out / "manifest.json").read_text())
    c = cal["calibration"]
    assert c["temperature"] > 0 and set(c["ece_15_bins_validation"]) == {"before", "after"}
    assert "cad_dev" in cal["metrics"] and 0 <= cal["metrics"]["cad_dev"]["consistency"] <= 1
    # the calibrated graph is the uncalibrated one's logit / T + b, in the graph itself
    texts = ["great film loved it", "awful and boring", "the plot was", "best best worst"]
    p_cal, p_unc = _probs(out, texts), _probs(unc, texts)
    z = np.log(p_unc) - np.log1p(-p_unc)
    expect = 1 / (1 + np.exp(-(z / c["temperature"] + c["bias"])))
    assert np.allclose(p_cal, expect, atol=2e-3)  # the n-gram weights are float16
    # the evaluate CLI: pair metrics and calibration errors
    capsys.readouterr()
    assert evaluate_main(["cad", "--data", str(cad), "--split", "test",
                          "--model-dir", str(out)]) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["pairs"] == 4 and 0 <= rep["consistency"] <= min(rep["originals"],
                                                                  rep["revisions"])
    assert 0 <= rep["ece_revisions"] <= 1
    assert evaluate_main(["sentiment", "--data", str(imdb), "--split", "validation",
                          "--cad", str(cad), "--model-dir", str(out)]) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["test_reviews"] == 16 - rec["removed_from_validation"]
    assert rep["cad_reviews_left_out"] == rec["removed_from_validation"]
    assert 0 <= rep["ece"] <= 1
    # the reliability diagram of both, on the IMDB test split and the CAD test revisions
    from training.reliability import main as reliability_main

    png = tmp_path / "rel.png"
    assert reliability_main(["--data", str(imdb), "--cad", str(cad), "--model",
                             f"before={unc}", "--model", f"after={out}", "--out", str(png)]) == 0
    rel = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert set(rel["ece"]) == {"before", "after"}
    for per in rel["bins"].values():
        for bins in per.values():
            assert sum(b["rows"] for b in bins) in (4, 160)  # CAD test revisions, IMDB test


def _probs(folder: Path, texts: list[str]) -> np.ndarray:
    from seqcore.tokenizer import WordTokenizer
    from training.evaluate import sentiment_probabilities_onnx

    tok = WordTokenizer.load(folder / "vocab.json")
    return sentiment_probabilities_onnx(str(folder / "model.onnx"), tok, texts)[0]


def test_a_temperature_alone_changes_no_answer(data, tmp_path):
    from training.ngrams import fit_calibration
    from training.ngrams import main as ngrams_main
    from training.train_sentiment import main as train_main

    rng = np.random.default_rng(0)
    z = rng.normal(0, 4, 400)
    y = (z + rng.normal(0, 3, 400) > 0).astype(int)  # over-confident logits
    w = np.full(400, 1 / 400)
    T, b = fit_calibration(z, y, w, fit_bias=False)
    assert b == 0.0 and T > 1.0  # softened
    imdb, cad = data
    enc = tmp_path / "enc"
    assert train_main(["--data", str(imdb), "--out", str(enc), *TINY_SENTIMENT, "--epochs", "2",
                       "--w2v-epochs", "0", "--cad", str(cad), "--no-test"]) == 0
    out, unc = tmp_path / "cal", tmp_path / "uncal"
    assert ngrams_main(["--base", str(enc), "--data", str(imdb), "--out", str(out),
                        "--buckets", "4096", "--epochs", "2", "--no-test", "--cad", str(cad),
                        "--calibrate", "--no-calibration-bias",
                        "--uncalibrated-out", str(unc)]) == 0
    c = json.loads((out / "manifest.json").read_text())["calibration"]
    assert c["bias"] == 0.0 and "temperature alone" in c["method"]
    texts = [r.text for r in load_imdb(imdb)["test"][:60]]
    p_cal, p_unc = _probs(out, texts), _probs(unc, texts)
    assert ((p_cal > 0.5) == (p_unc > 0.5)).all()
