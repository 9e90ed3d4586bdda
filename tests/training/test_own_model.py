"""Serving a model trained elsewhere, and the checks a folder passes before it serves
(issue 32): a small PyTorch LSTM exported with torch.onnx (the worked example of
docs/models.md) is imported (``python -m seqcore.folder import``), checked, and served
by name; one that ignores ``lengths`` is refused, by the import and at start-up (one
line, exit 3); a folder holding only a graph is logged; the default model of a task
is pinned by SEQSERVE_DEFAULT_MODELS and shown in /v1/models."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.__main__ import check_models
from app.config import Settings
from app.engine.registry import DefaultModelError, Registry
from seqcore.folder import main as folder_main
from seqcore.folder import read_vocab, write_folder
from seqcore.tasks import ModelLoadError

ROOT = Path(__file__).resolve().parents[2]
WORDS = ["<pad>", "<unk>", "good", "great", "bad", "awful", "kettle", "the", "a", "it", "was"]
ROLES = "input_ids=tokens,lengths=lens,probability=prob"


def export_lstm(path: Path, use_lengths: bool = True, seed: int = 0) -> Path:
    """The worked example of docs/models.md: an LSTM classifier with attention,
    exported with torch.onnx. ``use_lengths=False`` reads the last time step, padding
    included: its answer depends on the batch's longest row."""
    import torch
    from torch import nn

    class Classifier(nn.Module):
        def __init__(self, vocab: int, dim: int = 16, hidden: int = 16):
            super().__init__()
            self.emb = nn.Embedding(vocab, dim, padding_idx=0)
            self.lstm = nn.LSTM(dim, hidden, batch_first=True)
            self.att = nn.Linear(hidden, 1)
            self.out = nn.Linear(hidden, 1)

        def forward(self, tokens: torch.Tensor, lens: torch.Tensor):
            h, _ = self.lstm(self.emb(tokens))  # [B, T, H]
            mask = torch.arange(tokens.shape[1])[None, :] < lens[:, None]
            w = torch.softmax(self.att(h).squeeze(-1).masked_fill(~mask, -1e9), dim=1)
            last = h[torch.arange(tokens.shape[0]), lens - 1] if use_lengths else h[:, -1]
            return torch.sigmoid(self.out(last)).squeeze(-1), w

    torch.manual_seed(seed)
    m = Classifier(len(WORDS)).eval()
    ids, lens = torch.randint(2, len(WORDS), (2, 7)), torch.tensor([7, 4])
    torch.onnx.export(m, (ids, lens), str(path), input_names=["tokens", "lens"],
                      output_names=["prob", "weights"], dynamo=False,
                      dynamic_axes={"tokens": {0: "batch", 1: "time"}, "lens": {0: "batch"},
                                    "prob": {0: "batch"}, "weights": {0: "batch", 1: "time"}})
    return path


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("graphs")
    (d / "words.json").write_text(json.dumps(WORDS))
    return {"good": export_lstm(d / "lstm.onnx"),
            "bad": export_lstm(d / "lstm_ignores_lengths.onnx", use_lengths=False),
            "words": d / "words.json"}


@pytest.fixture
def models(tiny_models_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "models"
    shutil.copytree(tiny_models_dir, out)
    return out


def _import(graphs: dict[str, Path], out: Path, *extra: str, graph: str = "good") -> int:
    return folder_main(["import", str(graphs[graph]), "--vocab", str(graphs["words"]),
                        "--out", str(out), *extra])


def test_import_checks_and_serves_an_lstm_exported_from_pytorch(graphs, models, make_client,
                                                                capsys):
    rc = _import(graphs, models / "product", "--map", ROLES + ",attention=weights",
                 "--cell", "lstm")
    out = capsys.readouterr().out
    assert rc == 0, out
    for check in ("load: ok", "contract: ok", "batch-invariance: ok", "warm-up: ok"):
        assert check in out
    manifest = json.loads((models / "product" / "manifest.json").read_text())
    assert manifest["tensors"] == {"input_ids": "tokens", "lengths": "lens",
                                   "probability": "prob", "attention": "weights"}
    assert manifest["name"] == "product" and manifest["labels"] == ["negative", "positive"]
    assert set(manifest["import_checks"]) == {"load", "contract", "batch-invariance", "warm-up"}
    assert not list(models.glob(".*"))  # the work folder is gone

    assert folder_main(["check", str(models / "product")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [x.split(":")[0] for x in lines[:4]] == ["load", "contract", "batch-invariance",
                                                    "warm-up"]

    c = make_client(models)
    text = "the kettle was great"
    a = c.post("/sentiment", json={"text": text, "model": "product"})
    assert a.status_code == 200 and a.json()["model"] == "product", a.text
    # the answer of a row does not depend on its batch neighbours
    b = c.post("/sentiment", json={"texts": [text, "a " * 30 + "awful"], "model": "product"})
    assert abs(b.json()["results"][0]["probabilities"]["positive"]
               - a.json()["probabilities"]["positive"]) < 1e-5
    att = c.post("/attention", json={"text": text, "model": "product"})
    assert att.status_code == 200
    assert [t["text"] for t in att.json()["tokens"]] == text.split()
    assert abs(sum(t["weight"] for t in att.json()["tokens"]) - 1.0) < 1e-4
    # the bundled sentiment stays the default of its task though "product" sorts first
    cards = {m["id"]: m for m in c.get("/v1/models").json()["data"]}
    assert cards["sentiment"]["default"] and not cards["product"]["default"]
    assert cards["product"]["attention"] is True
    # the V2 protocol serves it too, and its metadata
    v2 = c.post("/v2/models/product/infer", json={"inputs": [
        {"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}]})
    assert v2.status_code == 200, v2.text
    probs = next(o for o in v2.json()["outputs"] if o["name"] == "probabilities")["data"]
    assert abs(probs[1] - a.json()["probabilities"]["positive"]) < 1e-5
    assert c.get("/v2/models/product").status_code == 200
    assert c.post("/sentiment", json={"text": text}).json()["model"] == "sentiment"


def test_a_model_without_attention_serves_sentiment_and_attention_says_so(
        graphs, models, make_client, capsys):
    assert _import(graphs, models / "plain", "--map", ROLES) == 0, capsys.readouterr().out
    c = make_client(models)
    r = c.post("/sentiment", json={"text": "good", "model": "plain"})
    assert r.status_code == 200 and 0.0 <= r.json()["score"] <= 1.0
    r = c.post("/attention", json={"text": "good", "model": "plain"})
    assert r.status_code == 400 and "no attention output" in r.json()["error"]["message"], r.text
    assert c.get("/v1/models/plain").json()["attention"] is False


def test_import_refuses_a_graph_that_ignores_lengths_and_writes_nothing(graphs, models, capsys):
    rc = _import(graphs, models / "leaky", "--map", ROLES, graph="bad")
    out = capsys.readouterr().out
    assert rc == 1
    assert "batch-invariance: FAILED" in out and "not batch-invariant" in out
    assert "warm-up: not run" in out
    assert not (models / "leaky").exists() and not list(models.glob(".*"))


def test_import_names_what_is_wrong_with_the_arguments(graphs, models, tmp_path, capsys):
    assert _import(graphs, models / "x", "--map", "probabilty=prob") == 2
    assert "unknown role 'probabilty'" in capsys.readouterr().err
    # no map: the contract check says what the graph has and how to map it
    assert _import(graphs, models / "x") == 1
    out = capsys.readouterr().out
    assert "contract: FAILED" in out and "['lens', 'tokens']" in out and "--map" in out
    bad_vocab = tmp_path / "vocab.json"
    bad_vocab.write_text(json.dumps(["good", "bad"]))
    assert folder_main(["import", str(graphs["good"]), "--vocab", str(bad_vocab),
                        "--out", str(models / "x"), "--map", ROLES]) == 2
    assert "<pad>, <unk>" in capsys.readouterr().err
    assert _import(graphs, models / "x", "--map", ROLES, "--labels", "bad,good") == 2
    assert "two-label" in capsys.readouterr().err


def _write_leaky(graphs: dict[str, Path], folder: Path) -> None:
    """A folder written by hand around the graph that ignores lengths (no checks)."""
    write_folder(folder, graphs["bad"], read_vocab(graphs["words"], 800, 200), name=folder.name,
                 version="1", labels=["negative", "positive"],
                 tensors={"input_ids": "tokens", "lengths": "lens", "probability": "prob"},
                 cell="lstm")


def test_start_up_refuses_a_model_that_is_not_batch_invariant(graphs, models):
    _write_leaky(graphs, models / "leaky")
    with pytest.raises(ModelLoadError) as e:
        Registry.load(Settings(models_dir=models))
    assert e.value.check == "batch-invariance"
    assert str(e.value).startswith(f"model folder {models / 'leaky'} failed the "
                                   "batch-invariance check")


def test_python_m_app_stops_with_one_line_and_exit_3(graphs, models):
    _write_leaky(graphs, models / "leaky")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQSERVE_")}
    env.update(PYTHONPATH=str(ROOT), SEQSERVE_MODELS_DIR=str(models),
               SEQSERVE_LOG_LEVEL="warning", SEQSERVE_PORT="18999")
    r = subprocess.run([sys.executable, "-m", "app"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 3, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(models / "leaky") in r.stderr and "batch-invariance check" in r.stderr


def test_a_folder_with_only_a_graph_is_logged_not_skipped_in_silence(graphs, models, make_client,
                                                                     capture_log):
    (models / "only-graph").mkdir()
    shutil.copy(graphs["good"], models / "only-graph" / "model.onnx")
    (models / ".cache").mkdir()  # dot folders are left alone
    log = capture_log()
    reg = Registry.load(Settings(models_dir=models))
    assert sorted(reg.models) == ["chargen", "sentiment"]
    warned = [r.getMessage() for r in log.records if r.levelno == logging.WARNING]
    assert len(warned) == 1, warned
    assert str(models / "only-graph") in warned[0] and "no manifest.json" in warned[0]
    assert "model.onnx" in warned[0] and "seqcore.folder import" in warned[0]
    # and at a reload (a graph copied in while the server runs)
    c = make_client(models)
    (models / "later").mkdir()
    shutil.copy(graphs["good"], models / "later" / "model.onnx")
    log = capture_log()
    assert c.post("/v1/models/sentiment/reload").json()["result"] == "unchanged"
    warned = [r.getMessage() for r in log.records if r.levelno == logging.WARNING]
    assert any(str(models / "later") in w and "not a model folder" in w for w in warned), warned


def test_a_folder_that_cannot_be_read_is_logged(models, monkeypatch, capture_log):
    locked = models / "locked"
    locked.mkdir()
    exists, iterdir = Path.exists, Path.iterdir

    def denied(path: Path) -> bool:
        return path == locked or path.parent == locked

    def no_exists(self: Path, *a, **k):
        if denied(self):
            raise PermissionError(13, "Permission denied", str(self))
        return exists(self, *a, **k)

    def no_iterdir(self: Path):
        if denied(self):
            raise PermissionError(13, "Permission denied", str(self))
        return iterdir(self)

    monkeypatch.setattr(Path, "exists", no_exists)
    monkeypatch.setattr(Path, "iterdir", no_iterdir)
    log = capture_log()
    reg = Registry.load(Settings(models_dir=models))
    assert sorted(reg.models) == ["chargen", "sentiment"]
    assert f"{locked}: not a model folder, not served: cannot be read (Permission denied)" \
        in [r.getMessage() for r in log.records]


def test_default_models_pinned_by_the_setting_else_bundled_else_first(graphs, models,
                                                                      capture_log):
    assert _import(graphs, models / "product", "--map", ROLES) == 0
    log = capture_log()
    reg = Registry.load(Settings(models_dir=models))
    assert reg.defaults == {"text-classification": "sentiment", "text-generation": "chargen"}
    said = [r.getMessage() for r in log.records]
    assert "default text-classification model: sentiment (the bundled model)" in said
    reg = Registry.load(Settings(models_dir=models,
                                 default_models={"text-classification": "product"}))
    assert reg.by_task("text-classification").name == "product"  # type: ignore[union-attr]
    assert reg.by_task("text-generation").name == "chargen"  # type: ignore[union-attr]
    # without the bundled name: the first folder by name, with a warning naming the setting
    shutil.rmtree(models / "sentiment")
    assert _import(graphs, models / "widget", "--map", ROLES) == 0
    log = capture_log()
    reg = Registry.load(Settings(models_dir=models))
    assert reg.defaults["text-classification"] == "product"
    warned = [r.getMessage() for r in log.records if r.levelno == logging.WARNING]
    assert any("default text-classification model: product (the first folder by name of 2; "
               "SEQSERVE_DEFAULT_MODELS=text-classification=NAME pins one)" in w for w in warned)
    # a pinned name that is not loaded: a setting's mistake, one line, exit 2
    with pytest.raises(DefaultModelError, match="no text-classification model named 'nope'"):
        Registry.load(Settings(models_dir=models, default_models={"text-classification": "nope"}))
    with pytest.raises(SystemExit) as e:
        check_models(Settings(models_dir=models, default_models={"text-generation": "nope"}))
    assert e.value.code == 2


def test_v1_models_marks_the_pinned_default(models, make_client):
    shutil.copytree(models / "sentiment", models / "second")
    manifest = json.loads((models / "second" / "manifest.json").read_text())
    (models / "second" / "manifest.json").write_text(json.dumps({**manifest, "name": "second"}))
    c = make_client(models, default_models={"text-classification": "second"})
    cards = {m["id"]: m["default"] for m in c.get("/v1/models").json()["data"]}
    assert cards == {"chargen": True, "second": True, "sentiment": False}
    assert c.post("/sentiment", json={"text": "good"}).json()["model"] == "second"


def test_the_worked_example_of_docs_models_md_runs_imports_and_serves(models, make_client,
                                                                      monkeypatch, capsys):
    doc = (ROOT / "docs" / "models.md").read_text()
    block = doc.split("<!-- worked-example -->\n```python\n", 1)[1].split("```", 1)[0]
    model_class = "class Classifier" + block.split("class Classifier", 1)[1].split("\n\n\n")[0]
    assert len([x for x in model_class.splitlines() if x.strip()]) <= 20  # "a 20-line LSTM"
    work = models.parent / "example"
    work.mkdir()
    monkeypatch.chdir(work)
    exec(compile(block, "docs/models.md", "exec"), {"__name__": "example"})
    assert folder_main(["import", "lstm.onnx", "--vocab", "words.json", "--out",
                        str(models / "kettle"), "--map",
                        "input_ids=tokens,lengths=lens,probability=prob,attention=weights"]) == 0
    assert "batch-invariance: ok" in capsys.readouterr().out
    c = make_client(models)
    good = c.post("/sentiment", json={"text": "A great kettle.", "model": "kettle"}).json()
    bad = c.post("/sentiment", json={"text": "An awful kettle.", "model": "kettle"}).json()
    assert good["label"] == "positive" and bad["label"] == "negative", (good, bad)
    r = c.post("/attention", json={"text": "A great kettle.", "model": "kettle"}).json()
    assert [t["text"] for t in r["tokens"]] == ["a", "great", "kettle"]


def test_a_malformed_vocabulary_or_state_is_named_in_words(models):
    vocab = models / "sentiment" / "vocab.json"
    vocab.write_text(json.dumps({"kind": "char", "chars": ["<unk>", "a"]}))
    with pytest.raises(ModelLoadError, match="vocab.json: not a word vocabulary of this project"):
        Registry.load(Settings(models_dir=models))
    shutil.rmtree(models / "sentiment")
    manifest = models / "chargen" / "manifest.json"
    m = json.loads(manifest.read_text())
    del m["state"]
    manifest.write_text(json.dumps(m))
    with pytest.raises(ModelLoadError) as e:
        Registry.load(Settings(models_dir=models))
    assert e.value.check == "contract" and '"state" must give' in str(e.value)
