"""The benchmark code stays readable: no function in bench/ over 80 lines (the split of
the old 963-line bench/run.py into inputs, raw, load, peer, report and a thin run)."""

from __future__ import annotations

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_no_function_in_bench_is_over_80_lines():
    long = []
    for path in sorted(BENCH.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long


def test_the_benchmark_modules_are_there_and_run_imports_them():
    for name in ("inputs", "raw", "load", "peer", "report", "run", "profile"):
        assert (BENCH / f"{name}.py").exists(), name
    source = (BENCH / "run.py").read_text(encoding="utf-8")
    for name in ("inputs", "raw", "load", "peer", "report"):
        assert f"from bench.{name} import" in source or f"from bench import {name}" in source
