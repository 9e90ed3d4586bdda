"""Training on your own data (issue 32): the dataset readers (CSV, TSV, JSONL, a folder
per label; their errors name the file, the row and what was expected), the splits
(test optional, validation carved from train unless given), and a model of three
labels trained from a CSV built here, served by name, answering /sentiment,
/attention, the V2 protocol and the page's calls with three probabilities."""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from training.data import DataError
from training.datasets import load_dataset, order_labels, read_table

WORDS = {"negative": ["awful", "boring", "dreadful"], "neutral": ["okay", "average", "fine"],
         "positive": ["superb", "wonderful", "brilliant"]}
FILLER = ["the", "film", "plot", "was", "a", "it", "and", "story", "cast", "of", "this"]


def _rows(n: int, seed: int, labels=("negative", "neutral", "positive")) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = labels[i % len(labels)]
        toks = [rng.choice(FILLER) for _ in range(rng.randint(4, 12))]
        for _ in range(2):
            toks.insert(rng.randrange(len(toks)), rng.choice(WORDS[label]))
        out.append((" ".join(toks), label))
    return out


def _csv(path: Path, rows, header=("review", "sentiment"), delimiter=",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


# ---------------------------------------------------------------- readers and errors


def test_csv_tsv_jsonl_and_label_folders_read_the_same_rows(tmp_path):
    rows = _rows(12, 0)
    c = _csv(tmp_path / "d.csv", rows)
    t = _csv(tmp_path / "d.tsv", rows, header=("text", "label"), delimiter="\t")
    j = tmp_path / "d.jsonl"
    j.write_text("".join(json.dumps({"id": i, "text": x, "label": y}) + "\n"
                         for i, (x, y) in enumerate(rows)))
    folders = tmp_path / "byfolder"
    for i, (x, y) in enumerate(rows):
        (folders / y).mkdir(parents=True, exist_ok=True)
        (folders / y / f"{i:03d}.txt").write_text(x)
    want = sorted(rows)
    for src in (c, t, j):  # review/sentiment and text/label found without flags
        got = load_dataset(src)
        assert got["labels"] == ["negative", "neutral", "positive"]
        assert sorted((r.text, got["labels"][r.label]) for r in got["train"]) == want
        assert got["test"] == [] and got["validation"] is None
    got = load_dataset(folders)
    assert sorted((r.text, got["labels"][r.label]) for r in got["train"]) == want


def test_columns_by_flag_and_label_order(tmp_path):
    c = _csv(tmp_path / "d.csv", [("good one", "5"), ("bad", "1"), ("meh", "10")],
             header=("body_text", "stars_given"))
    with pytest.raises(DataError, match="no text column .*--text-column"):
        load_dataset(c)
    got = load_dataset(c, text_column="body_text", label_column="stars_given")
    assert got["labels"] == ["1", "5", "10"]  # numbers in numeric order
    assert order_labels({"positive", "negative"}) == ["negative", "positive"]
    assert order_labels({"b", "a", "c"}) == ["a", "b", "c"]


@pytest.mark.parametrize("body, expected", [
    ("text,label\ngood,pos\n,neg\n", r"d\.csv, line 3: the text \('text'\) is empty"),
    ("text,label\ngood,pos\nbad\n", r"d\.csv, line 3: 1 fields, expected 2"),
    ("text,label\ngood,pos\nbad,\n", r"d\.csv, line 3: the label \('label'\) is ''"),
    ("words,stars\ngood,1\n", r"d\.csv: no text column .*columns: 'words', 'stars'"),
])
def test_csv_errors_name_the_file_the_row_and_what_was_expected(tmp_path, body, expected):
    (tmp_path / "d.csv").write_text(body)
    with pytest.raises(DataError, match=expected):
        read_table(tmp_path / "d.csv")


def test_jsonl_and_other_errors(tmp_path):
    j = tmp_path / "d.jsonl"
    j.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"\n')
    with pytest.raises(DataError, match=r"d\.jsonl, line 2: not a JSON object"):
        load_dataset(j)
    j.write_text('{"text": "a", "label": "x"}\n["b", "y"]\n')
    with pytest.raises(DataError, match=r"d\.jsonl, line 2: a JSON list, expected an object"):
        load_dataset(j)
    one = _csv(tmp_path / "one.csv", [("a", "x"), ("b", "x")])
    with pytest.raises(DataError, match="at least two labels"):
        load_dataset(one)
    (tmp_path / "d.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"unknown file type '\.xlsx'"):
        load_dataset(tmp_path / "d.xlsx")
    train = _csv(tmp_path / "train.csv", [("a", "x"), ("b", "y")])
    test = _csv(tmp_path / "test.csv", [("c", "x"), ("d", "z")])
    with pytest.raises(DataError, match=r"test\.csv, line 3: label 'z' is not one of the "
                                        r"training data's labels \(x, y\)"):
        load_dataset(train, test_data=str(test))


def test_splits_test_optional_validation_given_or_carved(tmp_path):
    train = _csv(tmp_path / "train.csv", _rows(9, 3))
    val = _csv(tmp_path / "val.csv", _rows(3, 4))
    got = load_dataset(train, val_data=str(val))
    assert len(got["validation"]) == 3 and got["test"] == []
    # a folder with train/<label>/ and test/<label>/: both splits
    for split, rows in (("train", _rows(6, 5)), ("test", _rows(3, 6))):
        for i, (x, y) in enumerate(rows):
            (tmp_path / "f" / split / y).mkdir(parents=True, exist_ok=True)
            (tmp_path / "f" / split / y / f"{i}.txt").write_text(x)
    got = load_dataset(tmp_path / "f")
    assert (len(got["train"]), len(got["test"]), got["validation"]) == (6, 3, None)


def test_parquet_without_pyarrow_or_pandas_says_so(tmp_path):
    try:
        import pyarrow  # noqa: F401
        pytest.skip("pyarrow is installed here: the message is for machines without it")
    except ImportError:
        pass
    try:
        import pandas  # noqa: F401
        pytest.skip("pandas is installed here")
    except ImportError:
        pass
    p = tmp_path / "d.parquet"
    p.write_bytes(b"PAR1")
    with pytest.raises(DataError, match="needs pyarrow or pandas"):
        load_dataset(p)


def test_train_sentiment_prints_a_data_error_in_one_line(tmp_path, capsys):
    from training.train_sentiment import main

    bad = tmp_path / "reviews.csv"
    bad.write_text("text,label\ngreat,positive\nbad\n")
    assert main(["--data", str(bad), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: {bad}, line 3: 1 fields, expected 2")


# ---------------------------------------------------------------- three labels, end to end

TINY = ["--emb-dim", "16", "--hidden", "16", "--batch-size", "16", "--lr", "0.02",
        "--max-len", "24", "--head-len", "8", "--w2v-epochs", "0", "--threads", "1",
        "--emb-dropout", "0.0", "--out-dropout", "0.0", "--word-dropout", "0.0"]


@pytest.fixture(scope="module")
def three_label_model(tmp_path_factory) -> Path:
    from training.train_sentiment import main

    d = tmp_path_factory.mktemp("three")
    train = _csv(d / "train.csv", _rows(240, 1))
    test = _csv(d / "test.csv", _rows(60, 2))
    out = d / "stars"
    assert main(["--data", str(train), "--test-data", str(test), "--out", str(out),
                 "--name", "stars", *TINY, "--epochs", "10", "--patience", "10"]) == 0
    return out


def test_a_three_label_csv_trains_and_exports_one_output_per_label(three_label_model):
    import onnxruntime as ort

    m = json.loads((three_label_model / "manifest.json").read_text())
    assert m["labels"] == ["negative", "neutral", "positive"]
    assert m["metrics"]["test_accuracy"] >= 0.8, m["metrics"]
    assert m["data"]["test"] == 60
    assert "negation_accuracy" not in m["metrics"]
    assert m["export_checks"]["row_alone_vs_batch_max_abs_diff"] <= 1e-5
    sess = ort.InferenceSession(str(three_label_model / "model.onnx"))
    ids = np.array([[2, 3, 4], [5, 6, 0]], dtype=np.int64)
    p, a = sess.run(["probability", "attention"], {"input_ids": ids,
                                                  "lengths": np.array([3, 2])})
    assert p.shape == (2, 3) and np.allclose(p.sum(1), 1.0, atol=1e-5)
    assert a.shape == (2, 3)


def test_a_three_label_model_serves_by_name_everywhere(three_label_model, tiny_models_dir,
                                                       make_client, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir, models)
    shutil.copytree(three_label_model, models / "stars")
    c = make_client(models)
    names = ["negative", "neutral", "positive"]
    texts = {"negative": "the plot was awful and dreadful", "neutral": "it was okay and fine",
             "positive": "a superb and wonderful film"}
    for want, text in texts.items():
        r = c.post("/sentiment", json={"text": text, "model": "stars"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert list(body["probabilities"]) == names
        assert abs(sum(body["probabilities"].values()) - 1.0) < 1e-5
        assert body["label"] == want and body["score"] == body["probabilities"][want]
        assert body["model"] == "stars"
        att = c.post("/attention", json={"text": text, "model": "stars",
                                         "faithfulness": True}).json()
        assert att["probabilities"] == pytest.approx(body["probabilities"], abs=1e-5)
        assert len(att["tokens"]) == len(text.split())
        assert abs(sum(t["weight"] for t in att["tokens"]) - 1.0) < 1e-4
        assert {f["explanation"] for f in att["faithfulness"]} == {"attention"}
    # a batch: each row alone and among others answers the same
    batch = c.post("/sentiment", json={"texts": list(texts.values()), "model": "stars"}).json()
    assert [x["label"] for x in batch["results"]] == list(texts)
    # the V2 protocol: [N, 3] probabilities in the labels' order, and the labels named
    v2 = c.post("/v2/models/stars/infer", json={"inputs": [
        {"name": "text", "datatype": "BYTES", "shape": [3], "data": list(texts.values())}]})
    assert v2.status_code == 200, v2.text
    outs = {o["name"]: o for o in v2.json()["outputs"]}
    assert outs["probabilities"]["shape"] == [3, 3]
    assert outs["label"]["data"] == list(texts)
    assert v2.json()["parameters"]["labels"] == names
    rows = np.array(outs["probabilities"]["data"]).reshape(3, 3)
    for k, res in enumerate(batch["results"]):
        assert rows[k] == pytest.approx([res["probabilities"][n] for n in names], abs=1e-5)
    meta = c.get("/v2/models/stars").json()
    assert next(o for o in meta["outputs"] if o["name"] == "probabilities")["shape"] == [-1, 3]
    # the Python client reads every label (its transport here: this test's app)
    import sys

    import httpx

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python"))
    from seqserve_client import Client

    def relay(req: httpx.Request) -> httpx.Response:
        r = c.post(req.url.path, content=req.content,
                   headers={"content-type": "application/json"})
        return httpx.Response(r.status_code, json=r.json())

    with Client("http://x", transport=httpx.MockTransport(relay)) as cl:
        got = cl.sentiment(texts["neutral"], model="stars")
        assert got.label == "neutral" and list(got.probabilities.by_label) == names
        assert got.probabilities.positive == got.probabilities.by_label["positive"]
        assert cl.attention(texts["neutral"], model="stars").probabilities.by_label == \
            pytest.approx(got.probabilities.by_label, abs=1e-5)
    # the two-label model beside it answers as before
    two = c.post("/sentiment", json={"text": "good"}).json()
    assert set(two["probabilities"]) == {"negative", "positive"}
    assert two["label"] in ("negative", "positive")
    v2two = c.post("/v2/models/sentiment/infer", json={"inputs": [
        {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["good"]}]}).json()
    assert "parameters" not in v2two


def test_the_page_asks_the_chosen_classifier_and_shows_every_label():
    """No browser here (tests/web/test_web_browser.py needs chromium): the page's code is
    checked for the calls it makes. It sends the chosen classifier's name with /attention
    and /sentiment, and builds one meter per key of ``probabilities``."""
    root = Path(__file__).resolve().parents[2] / "app" / "web" / "static"
    js, html = (root / "app.js").read_text(), (root / "index.html").read_text()
    assert 'data-testid="classify-model"' in html and 'id="sentiment-probs"' in html
    assert "body: withClassifier({ text, faithfulness" in js
    assert "body: withClassifier({ texts: lines })" in js
    assert "Object.entries(probs || {})" in js and 'el("meter"' in js
    assert 'm.task === "text-classification"' in js
    node = shutil.which("node")
    if node:
        import subprocess

        assert subprocess.run([node, "--check", str(root / "app.js")]).returncode == 0


# ---------------------------------------------------------------- the prepared-data cache


def test_a_second_run_on_the_same_data_reads_the_prepared_data_cache(tmp_path, monkeypatch,
                                                                     capsys):
    import training.train_sentiment as ts

    train = _csv(tmp_path / "train.csv", _rows(90, 7))
    test = _csv(tmp_path / "test.csv", _rows(30, 8))
    cache = tmp_path / "cache"
    args = ["--data", str(train), "--test-data", str(test), *TINY, "--w2v-epochs", "1",
            "--epochs", "2", "--cache-dir", str(cache)]
    assert ts.main([*args, "--out", str(tmp_path / "a")]) == 0
    first = capsys.readouterr().out
    assert "cache: dataset written" in first and "cache: word2vec written" in first
    kinds = sorted(p.name.split("-")[0] for p in cache.iterdir())
    assert kinds == ["dataset", "encoded", "test", "word2vec"]

    def not_again(*a, **k):
        raise AssertionError("prepared again despite the cache")

    monkeypatch.setattr(ts, "word2vec_init", not_again)
    monkeypatch.setattr(ts.WordTokenizer, "build", not_again)
    monkeypatch.setattr(ts, "load_dataset", not_again)
    assert ts.main([*args, "--out", str(tmp_path / "b")]) == 0
    second = capsys.readouterr().out
    for kind in ("dataset", "encoded", "word2vec", "test"):
        assert f"cache: {kind} from" in second
    a, b = (json.loads((tmp_path / x / "manifest.json").read_text()) for x in "ab")
    assert a["model_sha256"] == b["model_sha256"]  # the same model from the cached data
    assert a["metrics"]["test_accuracy"] == b["metrics"]["test_accuracy"]
    # another recipe (vocabulary size) is another entry: the tokenizer is built again
    monkeypatch.undo()
    assert ts.main([*args, "--max-vocab", "30", "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "cache: dataset from" in out and "cache: encoded written" in out
    # a changed file is another dataset
    train.write_text(train.read_text() + "one more superb film,positive\n")
    assert ts.main([*args, "--out", str(tmp_path / "d")]) == 0
    assert "cache: dataset written" in capsys.readouterr().out


def test_the_cache_folder_is_git_ignored():
    import subprocess

    root = Path(__file__).resolve().parents[2]
    r = subprocess.run(["git", "check-ignore", "-q", ".cache/prepared/x"], cwd=root)
    if r.returncode == 128:
        pytest.skip("not a git checkout")
    assert r.returncode == 0


def test_readme_has_a_table_of_contents_and_the_own_data_sections_near_the_top():
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    heads = re.findall(r"^#{2,3} (.+)$", readme, flags=re.M)

    def anchor(h: str) -> str:
        return re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-")

    anchors = {anchor(h) for h in heads}
    toc = readme.split("## Contents", 1)[1].split("\n## ", 1)[0]
    links = re.findall(r"\]\(#([^)]+)\)", toc)
    assert len(links) >= 15 and not set(links) - anchors, set(links) - anchors
    tops = re.findall(r"^## (.+)$", readme, flags=re.M)[:4]  # Contents, Quick start, ...
    assert "Train on your data" in tops and "Serve your own model" in tops, tops
    assert "--data reviews.csv" in readme


def test_an_imdb_archive_without_a_test_split_trains(tmp_path, capsys):
    """Issue 32: the test split is optional for the IMDB layout too (it was required,
    even with --no-test)."""
    import io
    import tarfile

    from training.data import load_imdb
    from training.train_sentiment import main

    arc = tmp_path / "train_only.tar.gz"
    with tarfile.open(arc, "w:gz") as tar:
        for i, (text, label) in enumerate(_rows(60, 9, labels=("negative", "positive"))):
            body = text.encode()
            info = tarfile.TarInfo(f"aclImdb/train/{label[:3]}/{i}_1.txt")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    with pytest.raises(DataError, match="no test reviews"):
        load_imdb(arc)  # the loader's own default is unchanged
    got = load_dataset(arc)
    assert len(got["train"]) == 60 and got["test"] == []
    assert main(["--data", str(arc), "--out", str(tmp_path / "m"), *TINY, "--epochs", "1"]) == 0
    assert "test: no test split" in capsys.readouterr().out
    m = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert m["labels"] == ["negative", "positive"] and "test_accuracy" not in m["metrics"]
