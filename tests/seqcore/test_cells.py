"""The three recurrent cells (vanilla RNN, GRU, LSTM) for both tasks.

Each cell exports with its own ONNX operator and passes the same export checks (torch
vs ONNX Runtime, a row alone vs in a padded batch), the training commands take
``--cell`` and ``--name``, and the service runs every cell with the same code: models
of different cells are served side by side and chosen with the request's ``model``.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import onnx
import pytest
import torch

from seqcore.tokenizer import CharVocab, WordTokenizer
from training.export import (
    INVARIANCE_TOL,
    PARITY_TOL,
    build_char_graph,
    build_sentiment_graph,
    check_char,
    check_sentiment,
)
from training.manifest import write_model_folder
from training.models import CELLS, CharConfig, CharLSTM, SentimentConfig, SentimentLSTM

OPS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}


@pytest.mark.parametrize("cell", CELLS)
def test_each_cell_exports_with_its_operator_and_passes_the_export_checks(cell: str):
    torch.manual_seed(0)
    sm = SentimentLSTM(SentimentConfig(vocab_size=60, emb_dim=16, hidden=8, cell=cell)).eval()
    g = build_sentiment_graph(sm)
    assert {n.op_type for n in g.graph.node} & set(OPS.values()) == {OPS[cell]}
    checks = check_sentiment(sm, g)
    assert checks["torch_vs_onnx_max_abs_diff"] <= PARITY_TOL
    assert checks["row_alone_vs_batch_max_abs_diff"] <= INVARIANCE_TOL

    cm = CharLSTM(CharConfig(vocab_size=30, emb_dim=8, hidden=16, layers=2, cell=cell)).eval()
    g2 = build_char_graph(cm)
    assert {n.op_type for n in g2.graph.node} & set(OPS.values()) == {OPS[cell]}
    # one interface whatever the cell: the service never branches on it
    assert [i.name for i in g2.graph.input] == ["input_ids", "lengths", "h0", "c0"]
    assert [o.name for o in g2.graph.output] == ["logits", "hN", "cN"]
    checks = check_char(cm, g2)
    assert checks["torch_vs_onnx_max_abs_diff"] <= PARITY_TOL
    assert checks["row_alone_vs_batch_max_abs_diff"] <= INVARIANCE_TOL
    assert checks["zero_length_state_kept"]


def test_a_cell_outside_the_three_is_refused():
    with pytest.raises(ValueError, match="lstm, gru, rnn"):
        SentimentLSTM(SentimentConfig(vocab_size=10, cell="transformer"))


def _cell_models(out: Path) -> Path:
    """Tiny random models of every cell, named ``sentiment-<cell>`` and ``chargen-<cell>``
    (LSTM also under the default names), in one models folder."""
    rng = random.Random(0)
    words = ["good", "great", "bad", "awful", "movie", "film", "plot", "the", "it", "was"]
    texts = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(40)]
    tok = WordTokenizer.build(texts, max_vocab=50, min_count=1, max_len=40, head_len=10)
    vocab = CharVocab.build(string.ascii_lowercase + " .,;:!?'\n")
    for cell in CELLS:
        torch.manual_seed(1)
        sm = SentimentLSTM(SentimentConfig(vocab_size=tok.vocab_size, emb_dim=16, hidden=8,
                                           cell=cell)).eval()
        g = build_sentiment_graph(sm)
        write_model_folder(out / f"sentiment-{cell}", g, tok, {
            "name": "sentiment" if cell == "lstm" else f"sentiment-{cell}", "version": "0.0.test",
            "task": "text-classification", "cell": cell, "labels": ["negative", "positive"],
            "metrics": {}, "export_checks": check_sentiment(sm, g)})
        cm = CharLSTM(CharConfig(vocab_size=vocab.vocab_size, emb_dim=8, hidden=16, layers=2,
                                 cell=cell)).eval()
        g2 = build_char_graph(cm)
        write_model_folder(out / f"chargen-{cell}", g2, vocab, {
            "name": "chargen" if cell == "lstm" else f"chargen-{cell}", "version": "0.0.test",
            "task": "text-generation", "cell": cell, "metrics": {},
            "export_checks": check_char(cm, g2), "state": {"layers": 2, "hidden": 16}})
    return out


@pytest.fixture(scope="module")
def cell_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _cell_models(tmp_path_factory.mktemp("cells"))


@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_is_served_by_the_same_runtime(make_client, cell_models_dir: Path, cell: str):
    client = make_client(cell_models_dir)
    s_name = "sentiment" if cell == "lstm" else f"sentiment-{cell}"
    g_name = "chargen" if cell == "lstm" else f"chargen-{cell}"
    text, others = "the film was great", ["bad plot", "it was awful awful awful " * 5]
    alone = client.post("/sentiment", json={"text": text, "model": s_name})
    assert alone.status_code == 200 and alone.json()["model"] == s_name
    batch = client.post("/sentiment", json={"texts": [*others, text], "model": s_name})
    assert batch.status_code == 200
    assert abs(batch.json()["results"][-1]["probabilities"]["positive"]
               - alone.json()["probabilities"]["positive"]) <= 1e-5
    r = client.post("/attention", json={"text": text, "model": s_name})
    assert r.status_code == 200 and len(r.json()["tokens"]) == 4
    body = {"prompt": "the ", "max_new_chars": 30, "seed": 7, "model": g_name}
    a = client.post("/generate", json=body)
    b = client.post("/generate", json={**body, "stream": False})
    assert a.status_code == 200 and a.json()["model"] == g_name
    assert a.json()["text"] == b.json()["text"] and len(a.json()["text"]) == 30


def _synthetic_corpus(path: Path) -> Path:
    rng = random.Random(0)
    path.write_text(" ".join(rng.choice(["the will", "to power", "beyond good", "and evil"])
                             for _ in range(300)))
    return path


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_the_training_command_takes_cell_and_name(cell: str, tmp_path: Path, capsys):
    from training.train_chargen import main

    out = tmp_path / "m"
    assert main(["--data", str(_synthetic_corpus(tmp_path / "c.txt")), "--out", str(out),
                 "--cell", cell, "--name", f"chargen-{cell}", "--epochs", "2", "--hidden", "16",
                 "--emb-dim", "8", "--chunk", "32", "--batch-size", "16",
                 "--eval-streams", "2"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["name"] == f"chargen-{cell}" and manifest["cell"] == cell
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert OPS[cell] in ops and "LSTM" not in ops
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["--cell", "transformer"])
    assert "invalid choice" in capsys.readouterr().err
