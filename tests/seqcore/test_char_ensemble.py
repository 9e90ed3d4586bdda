"""Char generators joined into one (``training/ensemble_chargen.py``): the step graph
averages the members' next-character distributions, keeps their states side by side,
passes the export checks whatever the members' widths and cells, scores no worse than
the members' mean, and is served by the same runtime as any generator."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from seqcore import runtime
from training.evaluate import ort_session
from training.export import (
    INVARIANCE_TOL,
    PARITY_TOL,
    build_char_ensemble_graph,
    build_char_graph,
    check_char,
)
from training.models import CharConfig, CharEnsemble, CharLSTM


def _member(hidden: int, cell: str, seed: int, vocab: int = 30, layers: int = 2) -> CharLSTM:
    torch.manual_seed(seed)
    return CharLSTM(CharConfig(vocab_size=vocab, emb_dim=8, hidden=hidden, layers=layers,
                               cell=cell)).eval()


def test_the_graph_averages_the_members_distributions_and_passes_the_checks():
    members = [_member(16, "lstm", 0), _member(12, "gru", 1), _member(8, "rnn", 2)]
    ens = CharEnsemble(members).eval()
    g = build_char_ensemble_graph(ens)
    assert [i.name for i in g.graph.input] == ["input_ids", "lengths", "h0", "c0"]
    assert [o.name for o in g.graph.output] == ["logits", "hN", "cN"]
    checks = check_char(ens, g)  # torch vs ORT, a row alone vs in a padded batch, length 0
    assert checks["torch_vs_onnx_max_abs_diff"] <= PARITY_TOL
    assert checks["row_alone_vs_batch_max_abs_diff"] <= INVARIANCE_TOL
    assert checks["zero_length_state_kept"]
    # the logits are log(mean of the members' softmax); each member reads its own slice
    sess = ort_session(g.SerializeToString())
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 30, (3, 7)).astype(np.int64)
    lens = np.array([7, 4, 1], np.int64)
    h0 = rng.standard_normal((2, 3, 36)).astype(np.float32)
    c0 = rng.standard_normal((2, 3, 36)).astype(np.float32)
    logits, hN, cN = sess.run(None, {"input_ids": ids, "lengths": lens, "h0": h0, "c0": c0})
    assert np.allclose(np.exp(logits).sum(-1), 1.0, atol=1e-5)
    probs, start = [], 0
    for m in members:
        w = m.cfg.hidden
        one = ort_session(build_char_graph(m).SerializeToString())
        lo, h1, c1 = one.run(None, {"input_ids": ids, "lengths": lens,
                                    "h0": h0[..., start:start + w].copy(),
                                    "c0": c0[..., start:start + w].copy()})
        probs.append(np.exp(runtime.log_softmax(lo)))
        assert np.allclose(hN[..., start:start + w], h1, atol=1e-6)
        assert np.allclose(cN[..., start:start + w], c1, atol=1e-6)
        start += w
    assert np.allclose(logits, np.log(np.mean(probs, 0)), atol=1e-5)


def test_members_must_share_layers_and_vocabulary():
    with pytest.raises(ValueError, match="same layers and vocabulary"):
        CharEnsemble([_member(8, "lstm", 0), _member(8, "lstm", 1, layers=1)])
    with pytest.raises(ValueError, match="same layers and vocabulary"):
        CharEnsemble([_member(8, "lstm", 0), _member(8, "lstm", 1, vocab=31)])
    with pytest.raises(ValueError, match="at least two"):
        CharEnsemble([_member(8, "lstm", 0)])


def _corpus(path: Path) -> Path:
    rng = random.Random(3)
    path.write_text(" ".join(rng.choice(["the will", "to power", "beyond good", "and evil"])
                             for _ in range(400)))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two tiny trained char models of different widths and cells, and their ensemble."""
    from training.ensemble_chargen import main as ensemble
    from training.train_chargen import main as train

    root = tmp_path_factory.mktemp("ens")
    src = _corpus(root / "c.txt")
    small = ["--data", str(src), "--chunk", "32", "--batch-size", "8", "--eval-streams", "4",
             "--emb-dim", "8", "--epochs", "2", "--lr", "0.01"]
    assert train([*small, "--out", str(root / "a"), "--hidden", "24"]) == 0
    assert train([*small, "--out", str(root / "b"), "--hidden", "16", "--cell", "gru",
                  "--seed", "5"]) == 0
    assert ensemble(["--members", str(root / "a"), str(root / "b"), "--data", str(src),
                     "--eval-streams", "4", "--out", str(root / "e"), "--name", "chargen-ens"]) == 0
    return {"root": root, "src": src}


def test_the_command_builds_a_model_folder_that_scores_no_worse_than_the_members_mean(trained):
    root = trained["root"]
    loss = {k: json.loads((root / k / "manifest.json").read_text())["metrics"][
        "heldout_loss_nats_per_char"] for k in ("a", "b", "e")}
    # log of a mean >= mean of the logs: the mixture's NLL is at most the members' mean
    assert loss["e"] <= (loss["a"] + loss["b"]) / 2 + 1e-4
    m = json.loads((root / "e" / "manifest.json").read_text())
    assert m["name"] == "chargen-ens" and m["task"] == "text-generation"
    assert m["state"] == {"layers": 2, "hidden": 40} and m["cell"] == "gru+lstm"
    assert [x["hidden"] for x in m["training"]["ensemble_of"]] == [24, 16]
    assert (root / "e" / "vocab.json").read_text() == (root / "a" / "vocab.json").read_text()


def test_an_ensemble_folder_as_a_member_adds_its_members(trained, tmp_path: Path, capsys):
    """``--members e a``: the ensemble folder ``e`` (a + b) counts as its two members,
    read back from its graph, so the result is the three-member ensemble a + b + a."""
    import onnx

    from training.ensemble_chargen import main as ensemble
    from training.export import char_members_from_graph
    from training.train_chargen import load_char_folder

    root, src = trained["root"], str(trained["src"])
    back = char_members_from_graph(onnx.load(str(root / "e" / "model.onnx")))
    for model, name in zip(back, ("a", "b"), strict=True):
        _, alone = load_char_folder(root / name, "x")
        assert model.cfg == alone.cfg
        for k, v in alone.state_dict().items():
            assert torch.equal(model.state_dict()[k], v), (name, k)
    assert ensemble(["--members", str(root / "e"), str(root / "a"), "--data", src,
                     "--eval-streams", "4", "--out", str(tmp_path / "three")]) == 0
    m = json.loads((tmp_path / "three" / "manifest.json").read_text())
    assert [x["hidden"] for x in m["training"]["ensemble_of"]] == [24, 16, 24]
    versions = {k: json.loads((root / k / "manifest.json").read_text())["version"]
                for k in ("a", "b")}
    assert [x["version"] for x in m["training"]["ensemble_of"]] == [
        versions["a"], versions["b"], versions["a"]]
    # the same graph as one built from the three member folders' models directly
    direct = CharEnsemble([load_char_folder(root / k, "x")[1] for k in ("a", "b", "a")])
    rng = np.random.default_rng(1)
    feed = {"input_ids": rng.integers(1, direct.cfg.vocab_size, (2, 5)).astype(np.int64),
            "lengths": np.array([5, 3], np.int64),
            "h0": np.zeros((2, 2, 64), np.float32), "c0": np.zeros((2, 2, 64), np.float32)}
    got = ort_session(str(tmp_path / "three" / "model.onnx")).run(None, feed)[0]
    want = ort_session(build_char_ensemble_graph(direct).SerializeToString()).run(None, feed)[0]
    assert np.abs(got - want).max() <= 1e-6
    # an ensemble folder whose graph holds no members is a clear error
    broken = tmp_path / "broken"
    shutil.copytree(root / "e", broken)
    shutil.copy(root / "a" / "model.onnx", broken / "model.onnx")
    assert ensemble(["--members", str(broken), str(root / "a"), "--data", src,
                     "--out", str(tmp_path / "no")]) == 2
    assert "not a char ensemble graph" in capsys.readouterr().err


def test_training_continues_from_an_ensemble_member(trained, tmp_path: Path, capsys):
    """``--init-from ENSEMBLE --init-member I`` starts from member I's weights (and counts
    its epochs in the version); without a member, or with one out of range, or with a
    member of a plain folder, a clear error."""
    from training.train_chargen import main as train

    root, src = trained["root"], str(trained["src"])
    small = ["--data", src, "--chunk", "32", "--batch-size", "8", "--eval-streams", "4",
             "--epochs", "1", "--lr", "0", "--lr-min", "0"]  # the weights stay the member's
    assert train([*small, "--out", str(tmp_path / "m1"), "--init-from", str(root / "e"),
                  "--init-member", "1"]) == 0
    m = json.loads((tmp_path / "m1" / "manifest.json").read_text())
    b = json.loads((root / "b" / "manifest.json").read_text())
    assert m["training"]["init_from_version"] == b["version"]
    assert m["version"].split(".")[1] == str(int(b["version"].split(".")[1]) + 1)
    assert (m["cell"], m["state"]) == ("gru", {"layers": 2, "hidden": 16})
    assert abs(m["metrics"]["heldout_loss_nats_per_char"]
               - b["metrics"]["heldout_loss_nats_per_char"]) < 1e-3
    for extra, message in ((["--init-from", str(root / "e")], "--init-member 0..1"),
                           (["--init-from", str(root / "e"), "--init-member", "2"], "0..1"),
                           (["--init-from", str(root / "a"), "--init-member", "0"],
                            "not an ensemble folder")):
        assert train([*small, "--out", str(tmp_path / "x"), *extra]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_the_command_refuses_members_that_do_not_fit(trained, tmp_path: Path, capsys):
    from training.ensemble_chargen import main as ensemble

    root, src = trained["root"], str(trained["src"])
    assert ensemble(["--members", str(root / "a"), "--data", src,
                     "--out", str(tmp_path / "x")]) == 2
    assert "two or more" in capsys.readouterr().err
    other = tmp_path / "other"
    shutil.copytree(root / "b", other)
    v = json.loads((other / "vocab.json").read_text())
    v["chars"][1], v["chars"][2] = v["chars"][2], v["chars"][1]
    (other / "vocab.json").write_text(json.dumps(v))
    assert ensemble(["--members", str(root / "a"), str(other), "--data", src,
                     "--out", str(tmp_path / "y")]) == 2
    assert "vocabulary differs" in capsys.readouterr().err
    assert ensemble(["--members", str(root / "a"), str(tmp_path / "nothing"), "--data", src,
                     "--out", str(tmp_path / "z")]) == 2
    assert "no model.onnx" in capsys.readouterr().err


def test_an_ensemble_is_served_beside_the_default_generator(make_client, trained,
                                                           tmp_path: Path):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copytree(trained["root"] / "a", models / "chargen")
    shutil.copytree(trained["root"] / "e", models / "chargen-ens")
    client = make_client(models)
    body = {"prompt": "the will ", "max_new_chars": 40, "seed": 3}
    plain = client.post("/generate", json=body)
    assert plain.status_code == 200 and plain.json()["model"] == "chargen"  # the default
    ens = client.post("/generate", json={**body, "model": "chargen-ens"})
    assert ens.status_code == 200 and ens.json()["model"] == "chargen-ens"
    assert len(ens.json()["text"]) == 40
    again = client.post("/generate", json={**body, "model": "chargen-ens", "stream": True})
    assert again.status_code == 200
    events = [json.loads(line[len("data: "):]) for line in again.text.splitlines()
              if line.startswith("data: ")]
    text = "".join(e["text"] for e in events)
    assert text == ens.json()["text"]  # seeded: the same text streamed or not


def test_an_ensemble_folder_teaches_a_student_through_onnx_runtime(trained, tmp_path: Path):
    """``train_chargen --distill-from`` an ensemble folder: its graph cannot be read
    back into torch, so it is stepped through ONNX Runtime; its rows are the members'
    mixture (what the two member folders give as teachers in torch), and a student
    trained on them alone moves towards the ensemble."""
    import torch

    from seqcore.tokenizer import CharVocab
    from training.data import DataError
    from training.train_chargen import is_graph_only, teacher_targets
    from training.train_chargen import main as train

    root, src = trained["root"], trained["src"]
    assert is_graph_only(root / "e") and not is_graph_only(root / "a")
    vocab = CharVocab.load(root / "a" / "vocab.json")
    ids = torch.tensor(vocab.encode(src.read_text().lower())[0][:400])
    via_ort = teacher_targets(str(root / "e"), vocab, ids, streams=3).float()
    via_torch = teacher_targets(f"{root / 'a'},{root / 'b'}", vocab, ids, streams=3).float()
    assert via_ort.shape == (400, vocab.vocab_size)
    assert torch.allclose(via_ort.exp().sum(-1), torch.ones(400), atol=0.01)
    assert float((via_ort - via_torch).abs().max()) < 0.02  # float16 rows, two runtimes
    # a real difference would show: a member alone is far from the mixture
    alone = teacher_targets(str(root / "a"), vocab, ids, streams=3).float()
    assert float((alone - via_torch).abs().max()) > 0.1
    stateless = tmp_path / "stateless"  # an ensemble folder whose manifest lost its state
    shutil.copytree(root / "e", stateless)
    m = json.loads((stateless / "manifest.json").read_text())
    del m["state"]
    (stateless / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match="no state shape"):
        teacher_targets(str(stateless), vocab, ids, streams=3)

    small = ["--data", str(src), "--chunk", "32", "--batch-size", "8", "--eval-streams", "4"]
    student = tmp_path / "s"
    assert train([*small, "--out", str(student), "--init-from", str(root / "b"), "--epochs", "2",
                  "--lr", "0.005", "--distill-from", str(root / "e"),
                  "--distill-weight", "1"]) == 0
    m = json.loads((student / "manifest.json").read_text())
    assert m["training"]["distill_from_versions"] == [
        json.loads((root / "e" / "manifest.json").read_text())["version"]]

    def kl_to_ensemble(folder: Path) -> float:
        rows = teacher_targets(str(folder), vocab, ids, streams=1).float()
        teacher = teacher_targets(str(root / "e"), vocab, ids, streams=1).float()
        return float((teacher.exp() * (teacher - rows)).sum(-1).mean())

    assert kl_to_ensemble(student) < 0.7 * kl_to_ensemble(root / "b")


@pytest.mark.parametrize("teacher", ["a", "e"])  # in torch, and an ensemble through ORT
def test_teachers_write_text_with_the_rows_it_was_drawn_from(trained, teacher, tmp_path: Path):
    """``teacher_samples``: each stream starts after its prime; row j is the teacher's
    distribution after character j of its own text (what teacher-forcing that text gives),
    and the next character is drawn from it (its mean NLL matches the rows' entropy; an
    argmax or a uniform draw would not)."""
    from seqcore.tokenizer import CharVocab
    from training.train_chargen import load_teacher, teacher_samples

    root = trained["root"]
    vocab = CharVocab.load(root / "a" / "vocab.json")
    e_id = vocab.encode("e")[0][0]
    prime = torch.full((100,), e_id)  # any prime is "eeee…"
    ids, rows = teacher_samples(str(root / teacher), vocab, prime, n=60, streams=2,
                                threads=1, gen=torch.Generator().manual_seed(0), prime=8)
    assert ids.shape == (60,) and rows.shape == (60, vocab.vocab_size)
    assert int(ids[0]) == int(ids[30]) == e_id
    _, log_probs = load_teacher(root / teacher, 1)
    for s in (0, 30):
        with torch.no_grad():
            forced = log_probs(torch.cat([prime[:7], ids[s:s + 30]])[None])
        assert float((forced[7:] - rows[s:s + 30].float()).abs().max()) < 0.01
    ids, rows = teacher_samples(str(root / teacher), vocab, prime, n=4000, streams=8,
                                threads=1, gen=torch.Generator().manual_seed(1), prime=8)
    lp = rows.float()
    nll = float(-lp[:-1].gather(1, ids[1:, None]).mean())  # 7 stream borders: noise
    entropy = float(-(lp.exp() * lp).sum(-1).mean())
    assert abs(nll - entropy) < 0.1, (nll, entropy)
    assert entropy > 0.5  # a tiny model is unsure, so an argmax draw would differ by more


def test_a_student_trains_on_text_its_teachers_wrote(trained, tmp_path: Path, capsys):
    """``--distill-synthetic N``: the epoch runs over the training text and the N
    characters the teachers wrote (or other teachers, ``--distill-synthetic-from``), the
    manifest says so, and either option without what it needs is a clear error."""
    from training.train_chargen import main as train

    root, src = trained["root"], str(trained["src"])
    small = ["--data", src, "--chunk", "32", "--batch-size", "8", "--eval-streams", "4",
             "--epochs", "1", "--hidden", "8"]
    assert train([*small, "--out", str(tmp_path / "s"), "--distill-from", str(root / "e"),
                  "--distill-synthetic", "2000", "--distill-streams", "4"]) == 0
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["data"]["teacher_written_chars"] == 2000
    real = m["data"]["train_chars"]
    # the epoch covered the real text and the teachers' text
    assert m["training"]["history"][0]["steps"] * 8 * 32 >= real + 2000 - 8 * 32
    assert m["training"]["distill_synthetic_from_versions"] == m["training"][
        "distill_from_versions"]
    # another teacher writes the text: recorded as such
    assert train([*small, "--out", str(tmp_path / "s2"), "--distill-from", str(root / "e"),
                  "--distill-synthetic", "500", "--distill-synthetic-from", str(root / "a"),
                  "--distill-streams", "4"]) == 0
    m2 = json.loads((tmp_path / "s2" / "manifest.json").read_text())
    assert m2["training"]["distill_synthetic_from_versions"] == [
        json.loads((root / "a" / "manifest.json").read_text())["version"]]
    assert m2["training"]["distill_from_versions"] == m["training"]["distill_from_versions"]
    for extra, message in ((["--distill-synthetic", "100"], "--distill-from"),
                           (["--distill-from", str(root / "e"), "--distill-synthetic-from",
                             str(root / "a")], "--distill-synthetic")):
        assert train([*small, "--out", str(tmp_path / "x"), *extra]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "x").exists()
