"""deploy/test/sizes_check.py: the model sizes the README and docs/deploy.md state are
the measured ones (the image's are checked by `make deploy-test`, which builds it)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy" / "test"))

import sizes_check  # noqa: E402


def test_the_docs_state_the_measured_model_sizes():
    problems, measured = sizes_check.check(ROOT)
    assert problems == [], problems
    assert measured["models (all)"] > 0


def test_a_remembered_size_is_refused(tmp_path: Path):
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    shutil.copy(ROOT / "docs" / "deploy.md", root / "docs" / "deploy.md")
    (root / "models" / "chargen").mkdir(parents=True)
    (root / "models" / "chargen" / "manifest.json").write_text("{}")
    (root / "models" / "chargen" / "model.onnx").write_bytes(b"x" * 3_500_000)
    (root / "README.md").write_text("### Char generator (`models/chargen`, 9.5 MB)\n")
    problems, measured = sizes_check.check(root)
    assert any("models/chargen is 3.5 MB, not 9.5 MB" in p for p in problems), problems
    assert any("bundled models" in p for p in problems)  # docs: 31 MB, here 3.5
    # the image: stated "**A MB, of which B MB over the C MB base**"
    text = (root / "docs" / "deploy.md").read_text()
    problems, _ = sizes_check.check(root, image_bytes=10**9, base_bytes=175 * 10**6)
    assert any("the image is 1000 MB" in p for p in problems), problems
    assert "of which" in text


def test_agreement_allows_rounding_not_drift():
    assert sizes_check.agrees("3.5", 3.55) and sizes_check.agrees("16", 16.57)
    assert sizes_check.agrees("377", 390) and not sizes_check.agrees("377", 420)
    assert not sizes_check.agrees("15", 31.2)
