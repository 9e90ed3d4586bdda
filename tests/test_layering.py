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


# --- inside the service: no circle, an engine that knows no HTTP, small units -------------


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def app_import_graph(package: str = "app") -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports, read from the AST: every
    ``import``, at any depth (inside functions and ``if TYPE_CHECKING:`` blocks too),
    relative imports resolved, ``from a import b`` counted as ``a.b`` when that is a
    module of the package and as ``a`` otherwise."""
    files = {_module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        here = name.split(".") if is_pkg else name.split(".")[:-1]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = here[: len(here) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in files:  # a name inside a module: the module
                    t = t.rpartition(".")[0]
                if t and t != name:
                    deps.add(t)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (its modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_cycle_among_the_app_modules():
    assert find_cycle(app_import_graph()) is None


def test_the_cycle_finder_sees_a_cycle_hidden_in_a_function(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import x\n")
    (pkg / "c.py").write_text("import os\n")
    graph = app_import_graph("pkg")
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.a"]
    (pkg / "sub" / "b.py").write_text("def f():\n    from pkg import c\n")
    assert find_cycle(app_import_graph("pkg")) is None


# The engine (app/engine/) knows nothing of HTTP. Its modules import no web framework or
# server, none of the HTTP, protocol or web layers, nor the app's wiring (app.main,
# app.deps, app.lifecycle) or its HTTP-facing operations routes; and none of those layers
# is reached through what they do import (ENGINE_NEVER_REACHES). The engine may use the
# settings (app.config: plain pydantic-settings), the metrics of app.ops.metrics (plain
# prometheus_client: the loops count as they run) and the spans of app.ops.tracing
# (``current``/``record``; that module also holds the request middleware, hence its
# starlette types, which the engine never uses).
WEB_LAYERS = ("app.http", "app.protocols", "app.web", "app.main", "app.deps", "app.lifecycle",
              "app.asgi", "app.ops.admin", "app.ops.health")
ENGINE_BANNED = ("fastapi", "starlette", "uvicorn", *WEB_LAYERS)
ENGINE_NEVER_REACHES = WEB_LAYERS


def _banned_in(names: set[str], banned: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == b or n.startswith(b + ".") for b in banned))


def test_the_engine_imports_nothing_of_http():
    offenders = {f: _banned_in(names, ENGINE_BANNED)
                 for f, names in imported_modules("app/engine").items()}
    assert {f: b for f, b in offenders.items() if b} == {}
    # nor through the modules it may import
    graph = app_import_graph()
    allowed = [m for m in graph if m.startswith("app.engine")]
    seen, todo = set(allowed), list(allowed)
    while todo:
        for dep in graph[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    assert _banned_in(seen, ENGINE_NEVER_REACHES) == []


def test_the_engine_raises_no_status_code():
    """No HTTP status number or ``status``/``status_code`` keyword in the engine's
    raises: what a caller sees is the HTTP edge's table (app.http.errors)."""
    found = []
    for path in sorted((ROOT / "app" / "engine").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                args = [*node.exc.args, *(k.value for k in node.exc.keywords)]
                if (any(isinstance(a, ast.Constant) and isinstance(a.value, int)
                        and 400 <= a.value < 600 for a in args)
                        or any(k.arg in ("status", "status_code") for k in node.exc.keywords)):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []


MAX_CLASS_LINES = 200
MAX_FUNCTION_LINES = 80


def oversized(package: str = "app") -> list[str]:
    """Classes over MAX_CLASS_LINES and functions over MAX_FUNCTION_LINES lines (from
    the ``def``/``class`` line, decorators excluded, to the last line of the body)."""
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                limit = MAX_CLASS_LINES
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                limit = MAX_FUNCTION_LINES
            else:
                continue
            lines = node.end_lineno - node.lineno + 1
            if lines > limit:
                out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines} lines")
    return out


def test_no_class_over_200_lines_and_no_function_over_80_in_app():
    assert oversized() == []


def test_the_size_check_measures_classes_and_functions(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "pkg").mkdir()
    body = "\n".join(f"        x{i} = {i}" for i in range(80))
    (tmp_path / "pkg" / "m.py").write_text(f"class Small:\n    def f(self):\n{body}\n")
    assert oversized("pkg") == ["pkg/m.py:2 f: 81 lines"]
