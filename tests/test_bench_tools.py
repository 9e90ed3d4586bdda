"""bench/char_width.py: the width table runs on any char model folder and on
untrained widths (tiny models here; the real figures are docs/models.md's)."""

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
