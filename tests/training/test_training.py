"""Training side: tokenizer, data loading (each error path), export parity, batch
invariance, the zero-length guard, and tiny end-to-end training runs on synthetic data."""

from __future__ import annotations

import io
import json
import random
import shutil
import tarfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from seqcore.tokenizer import CharVocab, WordTokenizer, tokenize
from training import data as data_mod
from training.data import DataError, load_imdb, load_text, split_train_val
from training.export import (
    ExportCheckError,
    build_char_graph,
    build_sentiment_graph,
    check_char,
    check_sentiment,
)
from training.models import (
    CELLS,
    CharConfig,
    CharLSTM,
    SentimentConfig,
    SentimentLSTM,
    reverse_within_length,
)

# ---------------------------------------------------------------- tokenizer


def test_tokenizer_offsets_round_trip_to_the_original_text():
    text = "I <br /><br />LOVED it! Don't miss the director’s cut?? Ünïcode wörds, 2024."
    toks = tokenize(text)
    assert [t.text for t in toks] == ["i", "loved", "it", "!", "don't", "miss", "the",
                                      "director’s", "cut", "?", "?", "ünïcode", "wörds", "2024"]
    for t in toks:
        assert text[t.start:t.end].lower() == t.text


def test_html_line_breaks_are_dropped_not_tokenized():
    assert [t.text for t in tokenize("a<br/>b<BR />c< br >d")] == ["a", "b", "c", "d"]


def test_head_tail_truncation_keeps_start_and_end():
    tok = WordTokenizer(["<pad>", "<unk>"], max_len=5, head_len=2)
    e = tok.encode("w1 w2 w3 w4 w5 w6 w7 w8")
    assert [t.text for t in e.tokens] == ["w1", "w2", "w6", "w7", "w8"]
    assert e.truncated and e.n_tokens_total == 8 and e.ids == [1] * 5


def test_vocabulary_is_built_by_frequency_with_pad_and_unk():
    tok = WordTokenizer.build(["b a a", "c a b"], max_vocab=4, min_count=1)
    assert tok.itos == ["<pad>", "<unk>", "a", "b"]
    assert tok.encode("a c").ids == [2, 1]
    restored = WordTokenizer.from_json(json.loads(json.dumps(tok.to_json())))
    assert restored.itos == tok.itos and restored.max_len == tok.max_len


def test_char_vocab_maps_unknown_characters_to_unk_and_counts_them():
    v = CharVocab.build("abc ")
    ids, unknown = v.encode("Ab€c")
    assert unknown == 1 and ids[2] == v.unk_id and v.decode([ids[0]]) == "a"


# ---------------------------------------------------------------- data loading


def _imdb_tar(path: Path, layout_root: str = "aclImdb", n: int = 3) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            for lab in ("pos", "neg"):
                for i in range(n):
                    body = f"{lab} review {i} of {split}".encode()
                    info = tarfile.TarInfo(f"{layout_root}/{split}/{lab}/{i}_7.txt")
                    info.size = len(body)
                    tar.addfile(info, io.BytesIO(body))
        extra = tarfile.TarInfo(f"{layout_root}/train/unsup/0_0.txt")
        extra.size = 1
        tar.addfile(extra, io.BytesIO(b"x"))
    return path


def test_load_imdb_from_archive_and_from_extracted_folder(tmp_path):
    arc = _imdb_tar(tmp_path / "aclImdb_v1.tar.gz")
    d = load_imdb(arc)
    assert len(d["train"]) == 6 and len(d["test"]) == 6  # unsup is ignored
    assert {r.label for r in d["train"]} == {0, 1}
    with tarfile.open(arc) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    for folder in (tmp_path / "x", tmp_path / "x" / "aclImdb"):
        d2 = load_imdb(folder)
        assert sorted(r.text for r in d2["test"]) == sorted(r.text for r in d["test"])


def test_load_imdb_checks_the_sha256(tmp_path):
    arc = _imdb_tar(tmp_path / "a.tar.gz")
    with pytest.raises(DataError, match="checksum mismatch"):
        load_imdb(arc, sha256="0" * 64)
    assert load_imdb(arc, sha256=data_mod.sha256_file(arc))["train"]


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.tar.gz", "does not exist"),
    (lambda p: (p / "bad.tar.gz").write_bytes(b"not a tar") and p / "bad.tar.gz", "not a readable tar"),
    (lambda p: _imdb_tar(p / "wrong.tar.gz", layout_root="reviews"), "no train reviews"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no train reviews"),
])
def test_bad_imdb_sources_raise_a_clear_error(tmp_path, make, message):
    with pytest.raises(DataError, match=message):
        load_imdb(make(tmp_path))


def test_a_url_while_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQSERVE_CACHE", str(tmp_path))
    with pytest.raises(DataError, match="offline|cannot download"):
        load_imdb("http://127.0.0.1:9/aclImdb_v1.tar.gz")


def test_url_download_is_cached_and_checksummed(tmp_path, monkeypatch):
    arc = _imdb_tar(tmp_path / "src.tar.gz")
    calls = []

    def fake_urlopen(url, timeout=0):
        calls.append(url)
        f = open(arc, "rb")  # noqa: SIM115
        f.headers = {"Content-Length": str(arc.stat().st_size)}
        return f

    monkeypatch.setattr(data_mod.urllib.request, "urlopen", fake_urlopen)
    cache = tmp_path / "cache"
    monkeypatch.setenv("SEQSERVE_CACHE", str(cache))
    url = "https://example.invalid/aclImdb_v1.tar.gz"
    assert len(load_imdb(url)["train"]) == 6
    assert len(load_imdb(url)["train"]) == 6
    assert calls == [url]  # downloaded once
    (cache / "aclImdb_v1.tar.gz").write_bytes(b"tampered")
    with pytest.raises(DataError, match="checksum mismatch"):
        load_imdb(url)


def test_the_cli_prints_data_errors_without_a_traceback(tmp_path, capsys):
    from training.train_chargen import main

    assert main(["--data", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err


@pytest.mark.parametrize("command", ["train_sentiment", "train_chargen"])
def test_training_never_writes_into_the_served_models_folder_unless_told(command, tmp_path,
                                                                         capsys):
    """``--out`` inside the served models/ folder is refused (exit 2, before any work);
    the default output is a new runs/<task>-<time> folder."""
    import importlib

    from training.manifest import SERVED_MODELS, OutputError, run_folder

    main = importlib.import_module(f"training.{command}").main
    served = SERVED_MODELS / "sentiment"
    assert main(["--data", str(tmp_path / "nope"), "--out", str(served)]) == 2
    assert "--replace-served" in capsys.readouterr().err
    with pytest.raises(OutputError):
        run_folder(str(SERVED_MODELS), "chargen")
    assert run_folder(str(served), "sentiment", replace_served=True) == served
    default = run_folder("", "chargen")
    assert default.parts[0] == "runs" and default.name.startswith("chargen-")


def test_text_loader_rejects_folders_tiny_and_binary_files(tmp_path):
    with pytest.raises(DataError, match="is a folder"):
        load_text(tmp_path)
    (tmp_path / "t.txt").write_text("short")
    with pytest.raises(DataError, match="only 5 characters"):
        load_text(tmp_path / "t.txt")
    (tmp_path / "b.bin").write_bytes(b"\xff\xfe" * 1000)
    with pytest.raises(DataError, match="not UTF-8"):
        load_text(tmp_path / "b.bin")


def test_validation_split_is_carved_from_train_with_a_fixed_seed():
    items = list(range(100))
    a = split_train_val(items, 0.1, seed=7)  # type: ignore[arg-type]
    b = split_train_val(items, 0.1, seed=7)  # type: ignore[arg-type]
    assert a == b and len(a[1]) == 10 and not set(a[0]) & set(a[1])
    with pytest.raises(DataError):
        split_train_val(items[:1], 0.1, seed=7)  # type: ignore[arg-type]


# ---------------------------------------------------------------- models and export


def test_reverse_within_length_is_its_own_inverse_and_leaves_padding():
    x = torch.arange(12).view(2, 6)
    lens = torch.tensor([4, 6])
    r = reverse_within_length(x, lens)
    assert r.tolist() == [[3, 2, 1, 0, 4, 5], [11, 10, 9, 8, 7, 6]]
    assert torch.equal(reverse_within_length(r, lens), x)


def _sess(m):
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])


def test_sentiment_row_alone_equals_row_in_padded_batch():
    torch.manual_seed(0)
    model = SentimentLSTM(SentimentConfig(vocab_size=50, emb_dim=8, hidden=6)).eval()
    g = build_sentiment_graph(model)
    res = check_sentiment(model, g)
    assert res["torch_vs_onnx_max_abs_diff"] <= 1e-4
    assert res["row_alone_vs_batch_max_abs_diff"] <= 1e-5
    # and explicitly, with garbage in the padding: it must not leak
    sess = _sess(g)
    ids = np.array([[5, 6, 7, 0, 0], [8, 9, 10, 11, 12]], dtype=np.int64)
    noisy = ids.copy()
    noisy[0, 3:] = [40, 41]
    lens = np.array([3, 5], dtype=np.int64)
    p1, a1 = sess.run(None, {"input_ids": ids, "lengths": lens})
    p2, a2 = sess.run(None, {"input_ids": noisy, "lengths": lens})
    np.testing.assert_allclose(p1, p2, atol=1e-6)
    np.testing.assert_allclose(a1, a2, atol=1e-6)
    assert np.allclose(a1.sum(1), 1.0, atol=1e-5) and (a1[0, 3:] == 0).all()


def test_char_row_alone_equals_row_in_padded_batch_and_zero_length_keeps_state():
    torch.manual_seed(0)
    model = CharLSTM(CharConfig(vocab_size=20, emb_dim=4, hidden=8, layers=2)).eval()
    g = build_char_graph(model)
    res = check_char(model, g, lengths=(3, 0, 9, 1))
    assert res["zero_length_state_kept"] is True
    assert res["row_alone_vs_batch_max_abs_diff"] <= 1e-5
    sess = _sess(g)
    h0 = np.random.default_rng(0).standard_normal((2, 1, 8)).astype(np.float32)
    c0 = np.random.default_rng(1).standard_normal((2, 1, 8)).astype(np.float32)
    _, h, c = sess.run(None, {"input_ids": np.ones((1, 1), np.int64),
                              "lengths": np.zeros(1, np.int64), "h0": h0, "c0": c0})
    np.testing.assert_array_equal(h, h0)
    np.testing.assert_array_equal(c, c0)


def test_char_prefill_then_steps_equals_one_long_run():
    torch.manual_seed(1)
    model = CharLSTM(CharConfig(vocab_size=20, emb_dim=4, hidden=8, layers=2)).eval()
    sess = _sess(build_char_graph(model))
    seq = np.array([[3, 4, 5, 6, 7, 8]], dtype=np.int64)
    z = np.zeros((2, 1, 8), np.float32)
    full, hf, _ = sess.run(None, {"input_ids": seq, "lengths": np.array([6]), "h0": z, "c0": z})
    _, h, c = sess.run(None, {"input_ids": seq[:, :4], "lengths": np.array([4]), "h0": z, "c0": z})
    for t in (4, 5):
        lo, h, c = sess.run(None, {"input_ids": seq[:, t:t + 1], "lengths": np.array([1]),
                                   "h0": h, "c0": c})
    np.testing.assert_allclose(lo, full, atol=1e-5)
    np.testing.assert_allclose(h, hf, atol=1e-5)


def test_export_check_fails_loudly_when_the_graph_disagrees():
    torch.manual_seed(0)
    model = SentimentLSTM(SentimentConfig(vocab_size=30, emb_dim=4, hidden=4)).eval()
    g = build_sentiment_graph(model)
    with torch.no_grad():
        model.out.bias += 1.0  # the torch model no longer matches the exported graph
    with pytest.raises(ExportCheckError):
        check_sentiment(model, g)


# ---------------------------------------------------------------- tiny end-to-end runs


def corpus(path: Path, words: int = 600, seed: int = 0) -> Path:
    """A tiny Nietzsche-like text for the char model's training runs."""
    rng = random.Random(seed)
    path.write_text(" ".join(rng.choice(["the will", "to power", "beyond good", "and evil"])
                             for _ in range(words)))
    return path


def _synthetic_imdb(path: Path, n: int = 80) -> Path:
    rng = random.Random(0)
    pos = ["great", "wonderful", "loved", "superb", "best"]
    neg = ["awful", "boring", "hated", "worst", "dull"]
    filler = ["the", "movie", "film", "plot", "was", "and", "it", "acting"]
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            for lab, words in (("pos", pos), ("neg", neg)):
                for i in range(n):
                    toks = [rng.choice(filler) for _ in range(rng.randint(5, 30))]
                    for _ in range(3):
                        toks.insert(rng.randrange(len(toks)), rng.choice(words))
                    body = " ".join(toks).encode()
                    info = tarfile.TarInfo(f"aclImdb/{split}/{lab}/{i}_1.txt")
                    info.size = len(body)
                    tar.addfile(info, io.BytesIO(body))
    return path


# the size and schedule of the tiny sentiment runs (on _synthetic_imdb)
TINY_SENTIMENT = ["--emb-dim", "16", "--hidden", "16", "--batch-size", "16", "--lr", "0.01",
                  "--max-len", "24", "--head-len", "8"]


def test_tiny_sentiment_training_learns_exports_and_evaluates(tmp_path, capsys):
    from training.evaluate import main as evaluate_main
    from training.train_sentiment import main

    arc = _synthetic_imdb(tmp_path / "imdb.tar.gz")
    out = tmp_path / "sentiment"
    assert main(["--data", str(arc), "--out", str(out), *TINY_SENTIMENT, "--epochs", "12",
                 "--patience", "12", "--emb-dropout", "0.0", "--out-dropout", "0.0"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["test_accuracy"] >= 0.9
    assert manifest["export_checks"]["row_alone_vs_batch_max_abs_diff"] <= 1e-5
    for key in ("name", "version", "task", "inputs", "outputs", "opset", "training", "data",
                "metrics", "created_at", "model_sha256"):
        assert key in manifest
    capsys.readouterr()
    assert evaluate_main(["sentiment", "--data", str(arc), "--model-dir", str(out)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["test_accuracy"] == manifest["metrics"]["test_accuracy"]
    assert report["evaluated_with"] == "onnxruntime"


def test_tiny_chargen_training_lowers_heldout_loss_and_evaluates(tmp_path, capsys):
    from training.evaluate import main as evaluate_main
    from training.train_chargen import main

    src = corpus(tmp_path / "corpus.txt", words=600)
    out = tmp_path / "chargen"
    assert main(["--data", str(src), "--out", str(out), "--epochs", "15", "--hidden", "32",
                 "--emb-dim", "8", "--chunk", "32", "--batch-size", "16", "--lr", "0.01",
                 "--eval-streams", "4"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    hist = [h["heldout_loss"] for h in manifest["training"]["history"]]
    assert hist[-1] < hist[0] and min(hist) < 1.5  # a uniform guess would be ln(14) ~ 2.6
    capsys.readouterr()
    assert evaluate_main(["chargen", "--data", str(src), "--model-dir", str(out)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # the ONNX step-by-step score equals the torch full-sequence score of the best epoch
    assert abs(report["heldout_loss_nats_per_char"] -
               manifest["metrics"]["heldout_loss_nats_per_char"]) < 1e-3


def test_fast_id_path_gives_the_same_ids_as_the_offset_path():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    tok = WordTokenizer.build(["good bad don't it's film !", "ΟΔΟΣ İstanbul café"], 50, 1)

    @settings(max_examples=300, deadline=None)
    @given(st.text(alphabet=st.sampled_from(list("abcAB '’!?<>/br ΣσİÉé\n\t1_-")), max_size=80))
    def check(text):
        assert tok.encode(text).ids == tok.encode(text, offsets=False).ids

    check()


def test_adversarial_loss_perturbs_real_tokens_by_the_stated_size(monkeypatch):
    import torch.nn.functional as F

    from training import train_sentiment as ts
    from training.models import SentimentConfig, SentimentLSTM

    torch.manual_seed(0)
    model = SentimentLSTM(SentimentConfig(vocab_size=50, emb_dim=8, hidden=8, emb_dropout=0.0,
                                          out_dropout=0.0))
    ids = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]])
    lens = torch.tensor([4, 2])
    y = torch.tensor([1.0, 0.0])
    seen: list[torch.Tensor] = []
    original = model.from_embeddings

    def spy(emb, lengths):
        seen.append(emb.detach().clone())
        return original(emb, lengths)

    monkeypatch.setattr(model, "from_embeddings", spy)
    eps = 0.05
    loss = ts.adversarial_loss(model, ids, lens, y, eps)
    clean, perturbed = seen
    r = perturbed - clean
    assert torch.all(r[1, 2:] == 0)  # padding untouched
    rms_table = model.embedding.weight.detach().pow(2).mean().sqrt()
    for b, n in enumerate(lens.tolist()):  # each review moved by eps table-RMS per element
        rms = r[b, :n].pow(2).mean().sqrt()
        assert torch.isclose(rms, eps * rms_table, rtol=1e-4)
    # the perturbation goes up the loss, and the total is clean + adversarial loss
    logit, _ = original(clean, lens)
    adv_logit, _ = original(perturbed, lens)
    clean_loss = F.binary_cross_entropy_with_logits(logit, y)
    adv_loss = F.binary_cross_entropy_with_logits(adv_logit, y)
    assert adv_loss > clean_loss
    assert torch.isclose(loss, clean_loss + adv_loss, rtol=1e-5)
    loss.backward()  # gradients reach the weights through both terms
    assert model.embedding.weight.grad is not None


def test_tiny_sentiment_training_with_adversarial_loss_learns(tmp_path):
    from training.train_sentiment import main

    arc = _synthetic_imdb(tmp_path / "imdb.tar.gz")
    out = tmp_path / "sentiment-adv"
    assert main(["--data", str(arc), "--out", str(out), *TINY_SENTIMENT, "--epochs", "12",
                 "--patience", "12", "--emb-dropout", "0.0", "--out-dropout", "0.0",
                 "--adv-eps", "0.05", "--w2v-epochs", "0"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["test_accuracy"] >= 0.9
    assert manifest["training"]["adv_eps"] == 0.05


@pytest.mark.parametrize("cell", CELLS)
def test_a_served_char_graph_turns_back_into_the_same_torch_model(cell: str):
    from training.export import build_char_graph, char_from_graph

    torch.manual_seed(0)
    model = CharLSTM(CharConfig(vocab_size=20, emb_dim=6, hidden=10, layers=2, cell=cell)).eval()
    back = char_from_graph(build_char_graph(model))
    assert (back.cfg.cell, back.cfg.layers, back.cfg.hidden) == (cell, 2, 10)
    ids = torch.randint(0, 20, (3, 9))
    with torch.no_grad():
        (l1, (h1, c1)), (l2, (h2, c2)) = model(ids), back(ids)
    assert torch.equal(l1, l2) and torch.equal(h1, h2) and torch.equal(c1, c2)


def test_chargen_continues_from_a_model_folder_with_weight_averaging(tmp_path):
    """``--init-from`` starts from the folder's vocabulary and weights (with a zero
    learning rate the held-out score is the folder's own), and ``--ema`` trains on and
    keeps the averaged weights."""
    from training.train_chargen import main

    src = corpus(tmp_path / "corpus.txt", words=400, seed=1)
    base = tmp_path / "base"
    small = ["--data", str(src), "--chunk", "32", "--batch-size", "8", "--eval-streams", "4"]
    assert main([*small, "--out", str(base), "--epochs", "3", "--hidden", "24", "--emb-dim", "8",
                 "--lr", "0.01"]) == 0
    base_loss = json.loads((base / "manifest.json").read_text())["metrics"][
        "heldout_loss_nats_per_char"]
    frozen = tmp_path / "frozen"
    assert main([*small, "--out", str(frozen), "--init-from", str(base), "--epochs", "1",
                 "--lr", "0", "--lr-min", "0"]) == 0
    m = json.loads((frozen / "manifest.json").read_text())
    assert m["training"]["hidden"] == 24 and m["training"]["emb_dim"] == 8  # from the folder
    assert (frozen / "vocab.json").read_text() == (base / "vocab.json").read_text()
    assert m["metrics"]["heldout_loss_nats_per_char"] == pytest.approx(base_loss, abs=1e-6)
    more = tmp_path / "more"
    assert main([*small, "--out", str(more), "--init-from", str(base), "--epochs", "3",
                 "--lr", "0.005", "--lr-min", "0.001", "--ema", "0.9"]) == 0
    m = json.loads((more / "manifest.json").read_text())
    assert m["training"]["ema"] == 0.9
    assert m["version"].startswith(f"1.{3 + m['training']['best_epoch']}.")  # base's 3 epochs + these
    assert m["training"]["init_from_version"] == json.loads(
        (base / "manifest.json").read_text())["version"]
    assert m["metrics"]["heldout_loss_nats_per_char"] < base_loss
    assert main([*small, "--out", str(tmp_path / "x"), "--init-from", str(tmp_path)]) == 2


def test_chargen_distils_the_mixture_of_its_teachers(tmp_path, capsys):
    """``--distill-from``: the teachers' rows are each position's next-char log
    distribution (two teachers: the log of their average), and training with the KL term
    moves the model towards them; the history still reports the data's cross-entropy."""
    import onnx
    import torch.nn.functional as F

    from seqcore.tokenizer import CharVocab
    from training.export import char_from_graph
    from training.train_chargen import main, teacher_targets

    src = corpus(tmp_path / "corpus.txt", words=400, seed=2)
    small = ["--data", str(src), "--chunk", "32", "--batch-size", "8", "--eval-streams", "4",
             "--hidden", "24", "--emb-dim", "8"]
    t1, t2 = tmp_path / "t1", tmp_path / "t2"
    assert main([*small, "--out", str(t1), "--epochs", "3", "--lr", "0.01"]) == 0
    assert main([*small, "--out", str(t2), "--epochs", "1", "--lr", "0.01", "--seed", "7"]) == 0
    vocab = CharVocab.load(t1 / "vocab.json")
    ids = torch.tensor(vocab.encode(src.read_text().lower())[0][:500])

    def alone(folder: Path) -> torch.Tensor:
        teacher = char_from_graph(onnx.load(str(folder / "model.onnx")), 0.0, 0.0)
        with torch.no_grad():
            return F.log_softmax(teacher(ids[None])[0][0], -1)

    one = teacher_targets(str(t1), vocab, ids, streams=1).float()
    assert one.shape == (500, vocab.vocab_size)
    assert torch.allclose(one, alone(t1), atol=0.01)  # float16 rows
    both = teacher_targets(f"{t1},{t2}", vocab, ids, streams=1).float()
    mix = torch.log((alone(t1).exp() + alone(t2).exp()) / 2)
    assert torch.allclose(both, mix, atol=0.01)
    cut = teacher_targets(str(t1), vocab, ids, streams=3).float()  # 3 pieces + the rest
    assert torch.allclose(cut.exp().sum(-1), torch.ones(500), atol=0.01)
    assert torch.allclose(cut[:166], alone(t1)[:166], atol=0.01)  # the first piece

    def kl_to_t1(folder: Path) -> float:
        return float(F.kl_div(alone(folder), alone(t1), log_target=True, reduction="batchmean"))

    student = tmp_path / "student"
    assert main([*small, "--out", str(student), "--init-from", str(t2), "--epochs", "3",
                 "--lr", "0.005", "--distill-from", str(t1), "--distill-weight", "1"]) == 0
    m = json.loads((student / "manifest.json").read_text())
    assert m["training"]["distill_from_versions"] == [
        json.loads((t1 / "manifest.json").read_text())["version"]]
    assert kl_to_t1(student) < 0.5 * kl_to_t1(t2)
    # with a zero learning rate the run is the plain one: same reported train loss
    frozen = [*small, "--init-from", str(t2), "--epochs", "1", "--lr", "0", "--lr-min", "0"]
    assert main([*frozen, "--out", str(tmp_path / "f1")]) == 0
    assert main([*frozen, "--out", str(tmp_path / "f2"), "--distill-from", str(t1)]) == 0
    hist = [json.loads((tmp_path / f / "manifest.json").read_text())["training"]["history"][0]
            for f in ("f1", "f2")]
    assert hist[0]["train_loss"] == hist[1]["train_loss"]
    other = tmp_path / "other"  # the same graph under another vocabulary
    shutil.copytree(t1, other)
    v = json.loads((other / "vocab.json").read_text())
    v["chars"][1], v["chars"][2] = v["chars"][2], v["chars"][1]
    (other / "vocab.json").write_text(json.dumps(v))
    capsys.readouterr()
    assert main([*small, "--out", str(tmp_path / "x"), "--distill-from",
                 str(other)]) == 2
    assert "vocabulary differs" in capsys.readouterr().err
