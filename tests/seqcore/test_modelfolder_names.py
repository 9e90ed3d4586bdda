"""One owner of the model folder's file names: seqcore.modelfolder. No other module of
app/, training/, seqcore/, deploy/ or bench/ spells "model.onnx", "manifest.json" or "vocab.json" as
a string of its own (prose in docstrings and help texts may name them), and no shell
script of deploy/ globs them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from seqcore import modelfolder

ROOT = Path(__file__).resolve().parents[2]
NAMES = {modelfolder.GRAPH, modelfolder.MANIFEST, modelfolder.VOCAB}
OWNER = ROOT / "seqcore" / "modelfolder.py"


def name_literals(source: str) -> list[int]:
    """The lines of ``source`` where a string constant is one of the names, or a path
    ending in one ("models/x/model.onnx")."""
    hits = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            v = node.value
            if v in NAMES or any(v.endswith("/" + n) for n in NAMES):
                hits.append(node.lineno)
    return hits


def test_the_check_finds_a_name_spelled_out():
    assert name_literals('p = folder / "model.onnx"\n') == [1]
    assert name_literals("x = f\"{folder / 'manifest.json'}: bad\"\n") == [1]
    assert name_literals('p = Path("models/sentiment/vocab.json")\n') == [1]
    assert name_literals('"""Reads vocab.json and model.onnx."""\nx = GRAPH\n') == []


def test_only_seqcore_modelfolder_spells_the_model_folders_file_names():
    found = []
    for top in ("app", "training", "seqcore", "deploy", "bench"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if path == OWNER:
                continue
            found += [f"{path.relative_to(ROOT)}:{line}"
                      for line in name_literals(path.read_text(encoding="utf-8"))]
    assert found == []


def test_no_deploy_script_globs_a_model_folders_files():
    names = "|".join(re.escape(n) for n in NAMES)
    pattern = re.compile(r"[\w*}\]]/(?:" + names + r")\b")
    found = [f"{p.relative_to(ROOT)}:{i}"
             for p in sorted((ROOT / "deploy").rglob("*.sh"))
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if not line.lstrip().startswith("#") and pattern.search(line)]
    assert found == []
