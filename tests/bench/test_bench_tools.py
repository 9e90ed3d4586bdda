"""bench/char_width.py: the width table runs on any char model folder and on
untrained widths (tiny models here; the real figures are docs/models.md's);
bench/step_graph.py: its MatMul step graph is the served step (tiny graphs)."""

from __future__ import annotations

import json
from pathlib import Path


def test_char_width_measures_a_trained_folder_and_an_untrained_width(tiny_models_dir: Path,
                                                                     capsys):
    from bench import char_width

    assert char_width.main(["--models", str(tiny_models_dir / "chargen"), "--widths", "24",
                            "--new-chars", "5"]) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["hidden"] for r in rows] == [16, 24]
    assert all(r["chars_per_s_1"] > 0 and r["chars_per_s_32"] > 0 for r in rows)
    assert rows[1]["heldout_nats_per_char"] is None and rows[1]["parameters"] > 0
    assert "| 2 x 16 |" in out and "| 2 x 24 | untrained |" in out


def _char_graph(layers: int, cell: str = "lstm"):
    import torch

    from training.export import build_char_graph
    from training.models import CharConfig, CharLSTM

    torch.manual_seed(layers)
    model = CharLSTM(CharConfig(vocab_size=30, emb_dim=8, hidden=12, layers=layers,
                                cell=cell)).eval()
    return build_char_graph(model)


def test_the_matmul_step_graph_equals_the_lstm_operator_step(tiny_models_dir: Path, capsys):
    """bench/step_graph.py: the plain-MatMul cell gives the served graph's step (1, 2 and
    3 layers) with a row alone exactly equal to its place in a batch; other cells are
    refused; the CLI prints both graphs' timings."""
    import numpy as np
    import onnx
    import pytest

    from bench import step_graph as sg

    for layers in (1, 2, 3):
        graph = _char_graph(layers)
        step = sg.matmul_step_graph(graph, layers, 12).SerializeToString()
        served = sg.session(graph.SerializeToString(), 1)
        got = sg.checks(served, sg.session(step, 1), layers, 12, 30)
        assert got["max_abs_diff_vs_served"] < 1e-5
        assert got["row_alone_vs_batch_max_abs_diff"] == 0.0
        # the check can fail: the step with its layer-0 recurrent weights shifted is far off
        other = sg.matmul_step_graph(graph, layers, 12)
        w = [i for i in other.graph.initializer if i.name == "R0T"][0]
        arr = onnx.numpy_helper.to_array(w) + 0.1
        w.CopyFrom(onnx.numpy_helper.from_array(arr.astype(np.float32), "R0T"))
        bad = sg.checks(served, sg.session(other.SerializeToString(), 1), layers, 12, 30)
        assert bad["max_abs_diff_vs_served"] > 1e-3
    with pytest.raises(ValueError, match="LSTM cell only"):
        sg.matmul_step_graph(_char_graph(2, "gru"), 2, 12)
    assert sg.main(["--model", str(tiny_models_dir / "chargen"), "--calls", "3",
                    "--rounds", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["max_abs_diff_vs_served"] < 1e-5
    assert [(r["threads"], r["rows"]) for r in out["ms_per_step"]] == [(1, 1), (1, 32),
                                                                      (2, 1), (2, 32)]
    assert all(r["lstm_op"] > 0 and r["matmul"] > 0 for r in out["ms_per_step"])
