"""The training commands' shared scaffold (training/scaffold.py) and the stateful
char-generator training: --help shows every default (n-grams command too), boolean flags take --no-...,
--max-steps makes a small complete run (model folder, history, curves.png), progress
in a log is plain lines, and stateful training exports and passes the export checks
with every cell."""

from __future__ import annotations

import io
import json
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from tests.training.test_training import _synthetic_imdb, corpus
from training import scaffold
from training.models import CELLS


def _tiny_chargen(src: Path, out: Path, *extra: str) -> list[str]:
    return ["--data", str(src), "--out", str(out), "--hidden", "16", "--emb-dim", "8",
            "--chunk", "32", "--batch-size", "8", "--eval-streams", "4", *extra]


@pytest.mark.parametrize("command", ["train_sentiment", "train_chargen", "ngrams",
                                     "ensemble_chargen"])
def test_help_shows_every_option_with_its_default(command: str, capsys):
    import importlib

    module = importlib.import_module(f"training.{command}")
    config = {"ngrams": getattr(module, "NgramConfig", None),
              "ensemble_chargen": getattr(module, "EnsembleConfig", None)}.get(
        command, getattr(module, "TrainConfig", None))
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # help lines are wrapped
    for f in fields(config):
        flag = "--" + f.name.replace("_", "-")
        assert flag in text, flag
        assert f.metadata.get("help"), f"{flag} has no help text"
    assert text.count("(default:") == len(fields(config))
    assert "--replace-served, --no-replace-served" in text
    if command == "ngrams":
        assert "--negation-window NEGATION_WINDOW" in text and "(default: 5)" in text
        return
    if command == "ensemble_chargen":
        assert "--members MEMBER [MEMBER ...]" in text
        return
    assert "--max-steps MAX_STEPS" in text and "--max-minutes" in text
    if command == "train_chargen":
        assert "--stateful, --no-stateful" in text and "(default: True)" in text
        assert "(default: 0.15)" in text  # --dropout
    else:
        assert "--test, --no-test" in text and "(default: sentiment)" in text


def test_boolean_flags_parse_both_ways():
    from training.train_chargen import TrainConfig as CharTrain
    from training.train_sentiment import TrainConfig as SentTrain

    p = scaffold.build_parser(CharTrain, None)
    assert p.parse_args([]).stateful is True
    assert p.parse_args(["--no-stateful"]).stateful is False
    assert p.parse_args(["--stateful"]).stateful is True
    assert p.parse_args(["--replace-served"]).replace_served is True
    assert p.parse_args(["--max-steps", "7"]).max_steps == 7
    s = scaffold.build_parser(SentTrain, None)
    assert s.parse_args(["--no-test"]).test is False
    assert s.parse_args([]).sha256 is None


def test_chargen_max_steps_makes_a_complete_small_run(tmp_path: Path, capsys):
    from training.train_chargen import main

    out = tmp_path / "m"
    assert main(_tiny_chargen(corpus(tmp_path / "c.txt"), out, "--max-steps", "2")) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    hist = manifest["training"]["history"]
    assert manifest["training"]["steps"] == 2 and sum(h["steps"] for h in hist) == 2
    assert len(hist) == 1 and {"epoch", "train_loss", "heldout_loss", "lr", "seconds"} <= set(hist[0])
    assert "step budget" in manifest["training"]["stopped"]
    assert manifest["metrics"]["evaluated_with"] == "onnxruntime"
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {p.name for p in out.iterdir()} >= {"model.onnx", "vocab.json", "manifest.json"}
    log = capsys.readouterr().out
    assert "train: step 2/2 (100%)" in log and "\r" not in log  # plain lines, not a bar


def test_sentiment_max_steps_makes_a_complete_small_run(tmp_path: Path, capsys):
    from training.train_sentiment import main

    arc = _synthetic_imdb(tmp_path / "imdb.tar.gz", n=30)
    out = tmp_path / "s"
    assert main(["--data", str(arc), "--out", str(out), "--emb-dim", "16", "--hidden", "8",
                 "--batch-size", "16", "--max-len", "24", "--head-len", "8", "--w2v-epochs",
                 "1", "--max-steps", "3"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    hist = manifest["training"]["history"]
    assert manifest["training"]["steps"] == 3 and len(hist) == 1  # 2 batches an epoch
    assert {"train_loss", "val_accuracy", "val_loss", "lr", "seconds"} <= set(hist[0])
    assert "test_accuracy" in manifest["metrics"]
    assert (out / "curves.png").is_file()
    log = capsys.readouterr().out
    for phase in ("encode train", "word2vec: epoch 1/1", "train: step 3/3", "evaluate: step"):
        assert phase in log, phase


def test_without_matplotlib_the_curves_are_skipped_with_a_warning(tmp_path, monkeypatch,
                                                                  capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    hist = [{"epoch": 1, "train_loss": 1.0, "heldout_loss": 1.1, "lr": 1e-3}]
    assert scaffold.plot_history(hist, tmp_path / "curves.png") is None
    assert not (tmp_path / "curves.png").exists()
    assert capsys.readouterr().err.count("\n") == 1


def test_progress_in_a_log_prints_plain_lines_with_eta():
    buf = io.StringIO()
    prog = scaffold.Progress(100, "train", stream=buf, tty=False, min_gap=0.0)
    for _ in range(100):
        prog.update()
    prog.close()
    lines = buf.getvalue().splitlines()
    assert 9 <= len(lines) <= 11 and "\r" not in buf.getvalue()
    assert lines[0].startswith("train: step 10/100 (10%)") and "ETA" in lines[0]
    assert lines[-1].startswith("train: step 100/100 (100%)") and "elapsed" in lines[-1]


def test_cosine_schedule_and_stopping_rules():
    assert scaffold.cosine_lr(0, 10, 1e-2, 1e-4) == pytest.approx(1e-2)
    assert scaffold.cosine_lr(10, 10, 1e-2, 1e-4) == pytest.approx(1e-4)
    assert scaffold.cosine_lr(50, 10, 1e-2, 1e-4) == pytest.approx(1e-4)  # floor
    assert scaffold.planned_steps(10, 3) == 30 and scaffold.planned_steps(10, 3, 7) == 7
    stop = scaffold.Stopping(patience=2, max_minutes=60, higher_is_better=False)
    assert stop.improved(1, 2.0) and not stop.should_stop(1, 10)
    assert not stop.improved(2, 2.5) and not stop.should_stop(2, 20)
    assert not stop.improved(3, 2.1) and stop.should_stop(3, 30)
    assert "no improvement" in stop.reason and stop.best == 2.0 and stop.best_epoch == 1
    assert scaffold.Stopping(9, 60, max_steps=5).out_of_steps(5)


def test_stateful_batches_continue_each_stream_and_reset_each_epoch():
    from training.train_chargen import TrainConfig, batches_per_epoch, chunk_batches

    ids = torch.arange(1000)
    cfg = TrainConfig(batch_size=4, chunk=16)
    gen = torch.Generator().manual_seed(0)
    batches = list(chunk_batches(ids, cfg, gen))
    assert len(batches) <= batches_per_epoch(len(ids), cfg)
    assert [carry for _, _, carry in batches] == [False] + [True] * (len(batches) - 1)
    for (x0, y0, _), (x1, _, _) in zip(batches, batches[1:], strict=False):
        assert torch.equal(x1[:, 0], y0[:, -1] + 0) and torch.equal(x1[:, 0], x0[:, -1] + 1)
    for x, y, _ in batches:
        assert torch.equal(y, x + 1)  # next-char targets
    zero = list(chunk_batches(ids, TrainConfig(batch_size=4, chunk=16, stateful=False), gen))
    assert not any(carry for _, _, carry in zero)


@pytest.mark.parametrize("cell", CELLS)
def test_stateful_training_exports_and_passes_the_checks_with_every_cell(cell: str,
                                                                         tmp_path: Path):
    from training.train_chargen import main

    out = tmp_path / cell
    assert main(_tiny_chargen(corpus(tmp_path / "c.txt", 300), out, "--cell", cell,
                              "--epochs", "2", "--stateful")) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["stateful"] is True and manifest["cell"] == cell
    checks = manifest["export_checks"]
    assert checks["torch_vs_onnx_max_abs_diff"] <= 1e-4
    assert checks["row_alone_vs_batch_max_abs_diff"] <= 1e-5
    assert checks["zero_length_state_kept"] is True
    assert [i["name"] for i in manifest["inputs"]] == ["input_ids", "lengths", "h0", "c0"]
    assert [o["name"] for o in manifest["outputs"]] == ["logits", "hN", "cN"]


@pytest.mark.parametrize(("command", "args", "message"), [
    ("train_chargen", ["--ema", "1.5"], "--ema 1.5: must be < 1"),
    ("train_chargen", ["--distill-weight", "1.01"], "--distill-weight 1.01: must be <= 1"),
    ("train_chargen", ["--dropout", "nan"], "--dropout nan: must be a number"),
    ("train_chargen", ["--heldout-fraction", "0"], "--heldout-fraction 0.0: must be > 0"),
    ("train_chargen", ["--threads", "0"], "--threads 0: must be >= 1"),
    ("train_sentiment", ["--epochs", "0"], "--epochs 0: must be >= 1"),
    ("train_sentiment", ["--encoder-negation-window", "-1"],
     "--encoder-negation-window -1: must be >= 0"),
    ("train_sentiment", ["--lr", "-0.1"], "--lr -0.1: must be >= 0"),
    ("ngrams", ["--buckets", "0"], "--buckets 0: must be >= 1"),
])
def test_an_option_out_of_its_range_is_a_usage_error_before_any_work(command: str, args, message,
                                                                      tmp_path: Path, capsys):
    import importlib

    module = importlib.import_module(f"training.{command}")
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as e:
        module.main(["--data", str(tmp_path / "missing"), "--out", str(out), *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("command", ["train_sentiment", "train_chargen", "ngrams"])
def test_every_numeric_option_declares_its_range(command: str):
    import importlib

    config = next(v for k, v in vars(importlib.import_module(f"training.{command}")).items()
                  if k in ("TrainConfig", "NgramConfig"))
    unbounded = [f.name for f in fields(config)
                 if isinstance(f.default, int | float) and not isinstance(f.default, bool)
                 and f.name != "seed"
                 and all(v is None for v in (f.metadata.get("bounds") or {}).values())]
    assert unbounded == []
