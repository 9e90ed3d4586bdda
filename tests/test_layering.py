"""The packages import in one direction: ``seqcore`` (the web-free core) imports no web
framework, no torch and none of the other packages; ``training`` and ``bench`` import
nothing from the web package ``app``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(package: str) -> dict[str, set[str]]:
    """Every module each file of ``package`` imports (absolute names, any depth)."""
    out: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        out[str(path.relative_to(ROOT))] = names
    return out


def _offenders(package: str, banned: tuple[str, ...]) -> list[str]:
    return [f"{file}: {name}" for file, names in imported_modules(package).items()
            for name in sorted(names) if name.split(".")[0] in banned]


@pytest.mark.parametrize(("package", "banned"), [
    ("seqcore", ("app", "training", "bench", "fastapi", "starlette", "uvicorn", "pydantic",
                 "torch", "prometheus_client")),
    ("training", ("app",)),
    ("bench", ("app",)),
])
def test_a_package_imports_only_what_lies_below_it(package, banned):
    assert _offenders(package, banned) == []


def test_the_core_imports_without_a_web_framework_or_torch():
    code = ("import sys; import seqcore.tasks; seqcore.tasks.load_model; "
            "import seqcore.tasks.classification, seqcore.tasks.generation, seqcore.modelfolder; "
            "bad = [m for m in ('fastapi', 'starlette', 'torch', 'app', 'onnx') if m in sys.modules]; "
            "print(bad); raise SystemExit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_checker_sees_a_banned_import(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text("import os\nfrom app.state import AppState\n")
    assert _offenders("pkg", ("app",)) == ["pkg/m.py: app.state"]
