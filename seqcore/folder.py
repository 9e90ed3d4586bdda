"""``python -m seqcore.folder``: make a model folder from an ONNX graph trained
elsewhere, and check a model folder as the server will.

    python -m seqcore.folder import model.onnx --vocab vocab.json --out models/mine \\
        [--name mine] [--labels negative,positive] \\
        [--map input_ids=tokens,lengths=lens,probability=prob,attention=weights]
    python -m seqcore.folder check models/mine

``import`` writes the folder (model.onnx, vocab.json and a manifest.json naming the
graph's tensors for the task's roles) beside ``--out``, runs the checks the server runs
before a model serves (``seqcore.tasks.CHECKS``: load, contract, batch invariance,
warm-up), and only when all pass moves it to ``--out``. ``check`` runs the checks on a
folder and prints one line per check. Both exit 0 when every check passes, 1 when one
fails, 2 for a usage mistake (a missing file, an unknown role).

Only the text-classification task can be imported: two labels (negative and
positive, in any order of the graph's columns) or three or more of any names
(``probability`` [B, labels], one column per label, in ``--labels`` order); the
tokenizer is this project's word
vocabulary (docs/models.md: its format, or a word list with ``<pad>`` and ``<unk>``
first). docs/models.md documents every manifest field, with a worked example.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from seqcore.modelfolder import DEFAULT_FILES, GRAPH, MANIFEST, VOCAB, ModelFolderError

TASK = "text-classification"


class UsageError(Exception):
    """A mistake in the command's arguments or files (exit 2)."""


def parse_map(given: list[str]) -> dict[str, str]:
    """``role=tensor`` pairs (comma lists, the flag repeated) -> role -> tensor name."""
    from seqcore.tasks.classification import ROLES

    out: dict[str, str] = {}
    for item in (p.strip() for g in given for p in g.split(",")):
        if not item:
            continue
        role, eq, name = (x.strip() for x in item.partition("="))
        if not eq or not role or not name:
            raise UsageError(f"--map {item!r}: expected role=tensor_name")
        if role not in ROLES:
            raise UsageError(f"--map {item!r}: unknown role {role!r} (roles of a {TASK} model: "
                             f"{', '.join(ROLES)})")
        out[role] = name
    return out


def read_vocab(path: Path, max_len: int, head_len: int) -> Any:
    """The word tokenizer in ``path``: this project's vocab.json (``"kind": "word"``),
    or a word list (a JSON list, or a text file with one token a line) whose first
    two entries are ``<pad>`` and ``<unk>`` (then ``max_len``/``head_len`` apply)."""
    from seqcore.tokenizer import WordTokenizer

    if not path.is_file():
        raise UsageError(f"--vocab {path}: file is missing")
    text = path.read_text(encoding="utf-8")
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError:
        data = [line.rstrip("\n") for line in text.splitlines() if line.strip()]
    try:
        if isinstance(data, dict):
            if data.get("kind") != "word":
                raise ValueError(f"\"kind\" is {data.get('kind')!r}, expected \"word\" (a "
                                 "text-classification model reads words)")
            return WordTokenizer.from_json(data)
        if isinstance(data, list) and all(isinstance(w, str) for w in data):
            return WordTokenizer(list(data), max_len=max_len, head_len=head_len)
        raise ValueError("neither a vocab.json object nor a list of words")
    except KeyError as e:
        raise UsageError(f"--vocab {path}: the word vocabulary lacks {e} (docs/models.md)"
                         ) from None
    except ValueError as e:
        raise UsageError(f"--vocab {path}: {e} (docs/models.md, \"vocab.json\")") from None


def _io(values: Any) -> list[dict[str, Any]]:
    dtypes = {"tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(float)": "float32",
              "tensor(double)": "float64", "tensor(float16)": "float16"}
    return [{"name": v.name, "dtype": dtypes.get(v.type, v.type),
             "shape": [d if isinstance(d, int | str) else None for d in v.shape]}
            for v in values]


def _opset(graph: Path) -> int | None:
    try:
        import onnx  # not a service dependency: the opset is shown when it is there
    except ImportError:
        return None
    try:
        m = onnx.load(str(graph), load_external_data=False)
        return next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
    except Exception:  # the load check says what is wrong with the file
        return None


def write_folder(out: Path, graph: Path, tokenizer: Any, *, name: str, version: str,
                 labels: list[str], tensors: dict[str, str], cell: str | None) -> Path:
    """Writes the model folder ``out``: the graph's bytes, the vocabulary and the
    manifest (the graph's inputs and outputs as ONNX Runtime reads them)."""
    import onnxruntime as ort

    data = graph.read_bytes()
    try:
        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT's several exception types
        raise ModelFolderError(f"{graph}: ONNX Runtime cannot load the graph ({e})") from None
    out.mkdir(parents=True)
    (out / GRAPH).write_bytes(data)
    tokenizer.save(out / VOCAB)
    sha = hashlib.sha256(data).hexdigest()
    manifest = {
        "name": name, "task": TASK, "version": f"{version}+{sha[:8]}",
        "labels": labels, "tensors": tensors,
        "cell": cell, "architecture": f"imported ONNX graph ({graph.name})",
        "metrics": {}, "export_checks": {},
        "source": {"imported_from": graph.name, "by": "python -m seqcore.folder import"},
        "files": dict(DEFAULT_FILES), "model_sha256": sha, "model_bytes": len(data),
        "opset": _opset(graph), "inputs": _io(sess.get_inputs()),
        "outputs": _io(sess.get_outputs()),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def print_checks(folder: Path, lines: list[tuple[str, bool, str]]) -> bool:
    """One line per check of ``CHECKS`` (those after a failure: not run); all passed?"""
    from seqcore.tasks import CHECKS

    done = {c: (ok, what) for c, ok, what in lines}
    for check in CHECKS:
        if check in done:
            ok, what = done[check]
            print(f"{check}: {'ok' if ok else 'FAILED'}: {what}", flush=True)
        else:
            print(f"{check}: not run (an earlier check failed)", flush=True)
    return all(ok for _, ok, _ in lines) and len(lines) == len(CHECKS)


def cmd_check(args: argparse.Namespace) -> int:
    from seqcore.tasks import run_checks

    folder = Path(args.folder)
    if not (folder / MANIFEST).is_file():
        raise UsageError(f"{folder}: no {MANIFEST}: not a model folder (python -m "
                         "seqcore.folder import writes one)")
    _, lines = run_checks(folder, device=args.device)
    ok = print_checks(folder, lines)
    print(f"{folder}: {'serves' if ok else 'would be refused by the server'}", flush=True)
    return 0 if ok else 1


def cmd_import(args: argparse.Namespace) -> int:
    from seqcore.tasks import run_checks
    from seqcore.tasks.classification import LABELS
    if args.task != TASK:
        raise UsageError(f"--task {args.task}: only {TASK} graphs can be imported")
    graph, out = Path(args.graph), Path(args.out)
    if not graph.is_file():
        raise UsageError(f"{graph}: file is missing")
    if out.exists() and not args.force:
        raise UsageError(f"--out {out} exists (--force replaces it)")
    labels = [x.strip() for x in args.labels.split(",") if x.strip()]
    if len(labels) == 2 and sorted(labels) != sorted(LABELS):
        raise UsageError(f"--labels {args.labels}: a two-label model's labels are "
                         f"{', '.join(LABELS)} in the order of the probability output's "
                         "columns (a [B] or [B, 1] output is the second label's); three or "
                         "more labels may have any names")
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise UsageError(f"--labels {args.labels}: two or more distinct labels, in the order "
                         "of the probability output's columns")
    tensors = parse_map(args.map or [])
    tok = read_vocab(Path(args.vocab), args.max_len, args.head_len)
    name = args.name or out.name
    # written beside --out under a dot name (the server leaves those alone), moved to
    # --out once every check passed
    work = out.parent / f".{out.name}.importing"
    shutil.rmtree(work, ignore_errors=True)
    try:
        write_folder(work, graph, tok, name=name, version=args.version, labels=labels,
                     tensors=tensors, cell=args.cell)
        model, lines = run_checks(work, device=args.device)
        ok = print_checks(work, lines)
        if not ok:
            print(f"{graph}: not imported (the server would refuse it); nothing written to "
                  f"{out}", flush=True)
            return 1
        assert model is not None
        manifest = json.loads((work / MANIFEST).read_text())
        manifest["import_checks"] = {c: what for c, _, what in lines}
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{out}: model {name!r} written; it serves from a models folder holding it "
          f"(SEQSERVE_MODELS_DIR={out.parent})", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m seqcore.folder", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="make a model folder from an ONNX graph, and check it")
    imp.add_argument("graph", help="the ONNX graph (.onnx)")
    imp.add_argument("--vocab", required=True, help="the word vocabulary: a vocab.json of this "
                     "project, or a word list (<pad>, <unk> first) as JSON or one a line")
    imp.add_argument("--out", required=True, help="the model folder to write")
    imp.add_argument("--name", help="the model's name (default: the folder's name)")
    imp.add_argument("--task", default=TASK, help=f"the task (only {TASK})")
    imp.add_argument("--labels", default="negative,positive",
                     help="the labels in the order of the probability output's columns")
    imp.add_argument("--map", action="append", metavar="ROLE=TENSOR",
                     help="the graph's tensor for a role (input_ids, lengths, probability, "
                     "attention, ngram_contributions); comma lists or repeated; an "
                     "unmapped role is the tensor of its own name; attention is optional")
    imp.add_argument("--version", default="1", help="version (the graph's sha256 prefix is "
                     "appended)")
    imp.add_argument("--cell", default=None, help="the recurrent cell, shown in /v1/models")
    imp.add_argument("--max-len", type=int, default=800, help="tokens read (word lists)")
    imp.add_argument("--head-len", type=int, default=200,
                     help="of those, from the text's start (word lists)")
    imp.add_argument("--force", action="store_true", help="replace --out if it exists")
    imp.add_argument("--device", default="cpu", help="where the checks run: cpu, cuda, auto")
    chk = sub.add_parser("check", help="run the server's checks on a model folder")
    chk.add_argument("folder")
    chk.add_argument("--device", default="cpu", help="where the checks run: cpu, cuda, auto")
    args = ap.parse_args(argv)
    try:
        return cmd_import(args) if args.command == "import" else cmd_check(args)
    except (UsageError, ModelFolderError) as e:
        print(f"python -m seqcore.folder {args.command}: {e}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
