"""The short labelled snippets written by others (training/short_data.py: VADER's
human-rated Amazon, movie and tweet sentences) that the n-gram term may train on: kept
apart from every check set, split once, and used by ``training.ngrams --short-data``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from tests.training.test_training import TINY_SENTIMENT, _synthetic_imdb
from training import short_data
from training.augment import _words, too_close
from training.evaluate import NEGATION_SET, NEGATION_VAL, SHORT_SET, load_negation_set


def _rows(path: Path = short_data.SNIPPETS) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _toy_snippets(path: Path) -> Path:
    """40 toy snippets (every fifth held out), written where ``short_data`` reads them."""
    short_data.write([{"source": "amazon", "id": str(i), "rating": 2.0 if i % 2 else -2.0,
                       "label": i % 2, "split": "val" if i % 5 == 0 else "train",
                       "text": "great product loved it" if i % 2 else "broke awful waste"}
                      for i in range(40)], path)
    return path


def _toy_encoder(tmp_path: Path) -> tuple[Path, Path]:
    """(a synthetic IMDB archive, a tiny encoder-only model trained on it)."""
    from training.train_sentiment import main as train_main

    imdb = _synthetic_imdb(tmp_path / "imdb.tar.gz")
    enc = tmp_path / "enc"
    assert train_main(["--data", str(imdb), "--out", str(enc), *TINY_SENTIMENT, "--epochs", "1",
                       "--w2v-epochs", "0", "--no-test"]) == 0
    return imdb, enc


def test_the_committed_snippets_are_labelled_split_and_licensed():
    rows = _rows()
    assert len(rows) > 10_000
    assert {r["source"] for r in rows} == set(short_data.SOURCES)
    assert all(r["label"] in ("0", "1") and r["split"] in ("train", "val") for r in rows)
    # polar by the raters' mean: >= +1 positive, <= -1 negative
    assert all((float(r["rating"]) >= 1) if r["label"] == "1" else (float(r["rating"]) <= -1)
               for r in rows)
    held = sum(r["split"] == "val" for r in rows) / len(rows)
    assert abs(held - short_data.HELD_OUT) < 0.005
    assert len({r["text"].lower() for r in rows}) == len(rows)
    lic = (short_data.SNIPPETS.parent / "vader_snippets.LICENSE").read_text()
    assert "MIT License" in lic and "Hutto" in lic


def test_no_snippet_shares_half_its_words_with_a_check_or_validation_item():
    check = [_words(i["text"]) for path in (SHORT_SET, NEGATION_SET, NEGATION_VAL)
             for i in load_negation_set(path)]
    assert len(check) >= 160 + 160 + 92
    close = [r["text"] for r in _rows() if too_close(r["text"], check)]
    assert close == []
    exact = {i["text"].lower() for path in (SHORT_SET, NEGATION_SET)
             for i in load_negation_set(path)}
    assert not any(r["text"].lower() in exact for r in _rows())


def test_load_returns_a_split(tmp_path):
    path = tmp_path / "s.tsv"
    short_data.write([{"source": "amazon", "id": "1_1", "rating": 2.0, "label": 1,
                       "split": "train", "text": "works like a charm"},
                      {"source": "movie", "id": "2", "rating": -2.5, "label": 0,
                       "split": "val", "text": "a tedious mess"}], path)
    assert short_data.load("train", path) == [("works like a charm", 1)]
    assert short_data.load("val", path) == [("a tedious mess", 0)]
    assert short_data.load("val", path, sources=("amazon",)) == []
    assert len(short_data.load(None, path)) == 2


def test_ngrams_trains_on_the_snippets_and_scores_the_held_out_ones(tmp_path, monkeypatch,
                                                                      capsys):
    from training.evaluate import main as evaluate_main
    from training.ngrams import main as ngrams_main

    monkeypatch.setattr(short_data, "SNIPPETS", _toy_snippets(tmp_path / "snippets.tsv"))
    imdb, enc = _toy_encoder(tmp_path)
    out = tmp_path / "term"
    assert ngrams_main(["--base", str(enc), "--data", str(imdb), "--out", str(out),
                        "--buckets", "4096", "--epochs", "2", "--no-test", "--short-data",
                        "--short-repeat", "2", "--blend-on", "imdb+short", "--calibrate",
                        "--no-calibration-bias"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["training"]["short_data"] and m["training"]["short_repeat"] == 2
    assert m["data"]["train"] == 144 + 2 * 32  # the reviews + the train snippets twice
    sv = m["metrics"]["short_snippets_validation"]
    assert sv["snippets"] == 8 and 0 <= sv["accuracy"] <= 1
    assert m["calibration"]["fitted_on"]["short_snippets_validation"] == 8
    capsys.readouterr()
    assert evaluate_main(["snippets", "--split", "val", "--model-dir", str(out)]) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["snippets"] == 8 and rep["by_source"]["amazon"]["items"] == 8
    assert abs(rep["snippets_accuracy"] - sv["accuracy"]) <= 1 / 8  # float16 weights


def test_the_committed_lexicon_words_are_polar_whole_words_for_training_only():
    from seqcore.tokenizer import token_strings

    rows = _rows(short_data.WORDS)
    assert len(rows) > 3_000
    assert all(r["source"] == "lexicon" and r["split"] == "train" for r in rows)
    assert all((float(r["rating"]) >= 1.5) if r["label"] == "1" else (float(r["rating"]) <= -1.5)
               for r in rows)
    assert all(token_strings(r["text"]) == [r["text"]] == [r["id"]] for r in rows)
    assert len({r["text"] for r in rows}) == len(rows)
    check = [_words(i["text"]) for path in (SHORT_SET, NEGATION_SET, NEGATION_VAL)
             for i in load_negation_set(path)]
    assert [r["text"] for r in rows if too_close(r["text"], check)] == []
    # the held-out sentences are untouched: no word joins the validation split
    assert short_data.load_words() == [(r["text"], int(r["label"])) for r in rows]


def _sdist_with_lexicon(path: Path, lines: list[str]) -> Path:
    import io
    import tarfile

    data = "\r\n".join(lines).encode()
    with tarfile.open(path, "w:gz") as t:
        info = tarfile.TarInfo("vaderSentiment-3.3.2/vaderSentiment/vader_lexicon.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return path


def test_build_words_keeps_strong_whole_words_and_drops_emoticons_weak_and_duplicates(tmp_path):
    sdist = _sdist_with_lexicon(tmp_path / "v.tar.gz", [
        "great\t3.1\t0.7\t[3, 3]", "Great\t3.0\t0.7\t[3, 3]", "awful\t-2.9\t0.5\t[-3]",
        "meh\t-0.5\t0.5\t[0]", ":o\t-1.5\t0.5\t[-1]", ":)\t2.0\t0.5\t[2]",
        "can't\t-1.6\t0.5\t[-2]", "xoxo\t2.2\t0.5\t[2]"])
    rows, counts = short_data.build_words(sdist)
    assert [(r["text"], r["label"], r["split"]) for r in rows] == [
        ("great", 1, "train"), ("awful", 0, "train"), ("can't", 0, "train"),
        ("xoxo", 1, "train")]
    assert counts == {"read": 8, "weak": 1, "not_one_word": 2, "close_to_a_check_item": 0,
                      "duplicate": 1, "kept": 4}
    out = tmp_path / "w.tsv"
    short_data.write(rows, out)
    assert short_data.load_words(out) == [("great", 1), ("awful", 0), ("can't", 0),
                                          ("xoxo", 1)]


def test_ngrams_short_lexicon_adds_the_words_to_the_training_snippets(tmp_path, monkeypatch):
    from training.ngrams import main as ngrams_main

    words = tmp_path / "words.tsv"
    short_data.write([{"source": "lexicon", "id": w, "rating": r, "label": int(r > 0),
                       "split": "train", "text": w}
                      for w, r in (("superb", 3.0), ("dreadful", -2.8), ("lovely", 2.5))], words)
    monkeypatch.setattr(short_data, "SNIPPETS", _toy_snippets(tmp_path / "snippets.tsv"))
    monkeypatch.setattr(short_data, "WORDS", words)
    imdb, enc = _toy_encoder(tmp_path)
    out = tmp_path / "term"
    assert ngrams_main(["--base", str(enc), "--data", str(imdb), "--out", str(out),
                        "--buckets", "4096", "--epochs", "1", "--no-test", "--short-data",
                        "--short-repeat", "2", "--short-lexicon"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["training"]["short_lexicon"] is True
    assert m["data"]["train"] == 144 + 2 * (32 + 3)  # the reviews + (snippets + words) twice
    assert m["metrics"]["short_snippets_validation"]["snippets"] == 8  # sentences only


def test_the_encoder_trains_on_the_snippets_too(tmp_path, monkeypatch):
    """train_sentiment --short-data: the training snippets join the encoder's training
    rows (repeated), the held-out ones never do, and the manifest records both settings."""
    from training import train_sentiment

    monkeypatch.setattr(short_data, "SNIPPETS", _toy_snippets(tmp_path / "snippets.tsv"))
    seen: list[int] = []
    real = train_sentiment.encode_rows

    def spy(*args, **kwargs):
        rows = real(*args, **kwargs)
        seen.append(len(rows.train_x))
        return rows

    monkeypatch.setattr(train_sentiment, "encode_rows", spy)
    imdb = _synthetic_imdb(tmp_path / "imdb.tar.gz")
    out = tmp_path / "enc"
    assert train_sentiment.main(["--data", str(imdb), "--out", str(out), *TINY_SENTIMENT,
                                 "--epochs", "1", "--w2v-epochs", "0", "--no-test",
                                 "--short-data", "--short-repeat", "3"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["training"]["short_data"] is True and m["training"]["short_repeat"] == 3
    assert seen == [144 + 3 * 32]  # the reviews + the 32 training snippets three times
