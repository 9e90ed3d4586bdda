"""The model-folder contract, in one place: what a model folder holds and how it is
read and written.

A model folder is ``<models_dir>/<name>/`` with

- ``manifest.json``: the model's name, task, version, cell, metrics, export checks,
  the graph's inputs and outputs, and ``files`` naming the two files below;
- ``model.onnx``: the graph ONNX Runtime runs;
- ``vocab.json``: the tokenizer (``seqcore.tokenizer``) the model was trained with.

Training writes folders (``write_model_folder``); the service, evaluation and the
benchmarks read them (``ModelFolder.open``). A missing or malformed file raises
``ModelFolderError`` naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
GRAPH = "model.onnx"
VOCAB = "vocab.json"
DEFAULT_FILES = {"model": GRAPH, "vocab": VOCAB}


class ModelFolderError(RuntimeError):
    """A model folder (or its parent) is missing, incomplete or malformed."""


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; ``ModelFolderError`` naming the file otherwise."""
    try:
        if not path.is_file():
            raise ModelFolderError(f"{path}: file is missing")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFolderError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:  # permissions, an I/O error
        raise ModelFolderError(f"{path}: cannot be read ({e.strerror or e})") from None
    if not isinstance(data, dict):
        raise ModelFolderError(f"{path}: expected a JSON object")
    return data


def _files(folder: Path, manifest: dict[str, Any]) -> tuple[Path, Path]:
    files = manifest.get("files", DEFAULT_FILES)
    if not isinstance(files, dict):
        files = {}
    return (folder / str(files.get("model", GRAPH)), folder / str(files.get("vocab", VOCAB)))


@dataclass(frozen=True)
class ModelFolder:
    """An opened model folder: its manifest, and where its graph and vocabulary are."""

    path: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: Path | str) -> ModelFolder:
        path = Path(path)
        return cls(path, read_json(path / MANIFEST))

    @classmethod
    def at(cls, path: Path | str) -> ModelFolder:
        """The folder with its manifest, or with an empty one where it has none or it
        cannot be read (the default file names then): for the training commands, which
        also start from a bare graph and vocabulary; the service uses ``open``."""
        try:
            return cls.open(path)
        except ModelFolderError:
            return cls(Path(path), {})

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.path.name))

    @property
    def task(self) -> str:
        return str(self.manifest.get("task"))

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", "0"))

    @property
    def cell(self) -> str:
        return str(self.manifest.get("cell", "lstm"))  # folders from before --cell: LSTMs

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def graph_path(self) -> Path:
        return _files(self.path, self.manifest)[0]

    @property
    def vocab_path(self) -> Path:
        return _files(self.path, self.manifest)[1]

    def files(self) -> list[Path]:
        """The files the model is made of: its manifest, graph and vocabulary."""
        return [self.path / MANIFEST, *_files(self.path, self.manifest)]

    def vocab_json(self) -> dict[str, Any]:
        return read_json(self.vocab_path)

    def graph_bytes(self) -> bytes:
        if not self.graph_path.is_file():
            raise ModelFolderError(f"{self.graph_path}: file is missing")
        return self.graph_path.read_bytes()


def is_model_folder(path: Path) -> bool:
    """``path`` holds a manifest (a folder that cannot be read does not:
    ``not_model_folders`` reports it)."""
    try:
        return (path / MANIFEST).exists()
    except OSError:
        return False


# file -> (its stat key, the sha256 of its bytes): a file whose size, mtime, ctime and
# inode are unchanged is not read again (a reload request on an unchanged 16 MB graph
# hashed it every time)
_DIGESTS: dict[str, tuple[tuple[int, ...], bytes]] = {}
_DIGESTS_LOCK = threading.Lock()


def _file_digest(path: Path) -> bytes:
    """The sha256 of a file's bytes, from the cache while its stat key is unchanged.
    The key holds the ctime, which no copy tool can set back: a file copied in with an
    old mtime still counts as a change."""
    st = path.stat()
    key = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
    with _DIGESTS_LOCK:
        hit = _DIGESTS.get(str(path))
    if hit is not None and hit[0] == key:
        return hit[1]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    digest = h.digest()
    with _DIGESTS_LOCK:
        if len(_DIGESTS) > 4096:  # a bound, not a policy: folders come and go
            _DIGESTS.clear()
        _DIGESTS[str(path)] = (key, digest)
    return digest


def fingerprint(folder: Path) -> str:
    """A digest of the folder's manifest, graph and vocabulary (their bytes: see
    ``_file_digest`` for when a file is read again). A missing or unreadable file gives
    a digest of its own: the load that follows says what is wrong."""
    h = hashlib.sha256()
    try:
        manifest = json.loads((folder / MANIFEST).read_bytes())
    except (OSError, ValueError):
        manifest = {}
    files = [folder / MANIFEST, *_files(folder, manifest if isinstance(manifest, dict) else {})]
    for path in files:
        h.update(str(path.name).encode() + b"\0")
        try:
            h.update(_file_digest(path))
        except OSError as e:
            h.update(f"unreadable: {e}".encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def model_folders(root: Path) -> Iterator[Path]:
    """The model folders directly under ``root``, sorted by path."""
    yield from sorted(p for p in root.iterdir() if is_model_folder(p))


def not_model_folders(root: Path) -> dict[Path, str]:
    """The folders directly under ``root`` that are not model folders, and why (no
    manifest.json, and the files it holds; or it cannot be read), sorted by path: the
    service logs them instead of skipping them in silence. Folders whose name starts
    with a dot are left out."""
    out: dict[Path, str] = {}
    for p in sorted(root.iterdir()):
        if p.name.startswith(".") or not p.is_dir():
            continue
        try:
            if is_model_folder(p):
                continue
            held = sorted(c.name for c in p.iterdir())
        except OSError as e:
            out[p] = f"cannot be read ({e.strerror or e})"
            continue
        if MANIFEST in held:  # listed, but not to be opened (permissions)
            out[p] = f"cannot be read (its {MANIFEST} cannot be opened)"
            continue
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        out[p] = (f"no {MANIFEST} (it holds {shown or 'nothing'}); `python -m seqcore.folder "
                  "import` writes a model folder from an ONNX graph (docs/models.md)")
    return out


def scan(root: Path, strict: bool = True
         ) -> tuple[dict[str, Path], dict[Path, str], dict[str, str]]:
    """The model folders under ``root``: by the model name their manifest gives, the
    folders whose manifest could not be read (folder -> why), and the names that two
    folders give (name -> an error naming both). ``strict`` (start-up) raises
    ``ModelFolderError`` for the first name given twice instead."""
    if not root.is_dir():
        raise ModelFolderError(f"{root}: models folder is missing (SEQSERVE_MODELS_DIR)")
    names: dict[str, Path] = {}
    problems: dict[Path, str] = {}
    conflicts: dict[str, str] = {}
    for folder in model_folders(root):
        try:
            name = ModelFolder.open(folder).name
        except ModelFolderError as e:
            problems[folder] = str(e)
            continue
        if name in names or name in conflicts:
            first = names.pop(name, None)
            conflicts[name] = conflicts.get(name) or (
                f"model name {name!r} is given by two folders, {first} and {folder}: rename "
                "one (its manifest's \"name\") or move it out of the models folder")
            if strict:
                raise ModelFolderError(conflicts[name])
            continue
        names[name] = folder
    return names, problems, conflicts


def write_model_folder(out: Path, graph: Any, vocab: Any, manifest: dict) -> Path:
    """Writes ``graph`` (an ``onnx.ModelProto``), ``vocab`` (a tokenizer with ``save``)
    and the manifest, completed with the build metadata: the version gets the graph's
    sha256 prefix (the same recipe retrained gives a different version string), the
    file names, the graph's size, opset, inputs and outputs, and the time."""
    import onnx  # training only: the service reads folders and never needs onnx

    def io(v: onnx.ValueInfoProto) -> dict:
        t = v.type.tensor_type
        return {"name": v.name,
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
                "shape": [d.dim_param or d.dim_value for d in t.shape.dim]}

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = graph.SerializeToString()
    (out / GRAPH).write_bytes(data)
    vocab.save(out / VOCAB)
    sha = hashlib.sha256(data).hexdigest()
    full = {
        **manifest,
        "version": f"{manifest['version']}+{sha[:8]}",
        "files": dict(DEFAULT_FILES),
        "model_sha256": sha,
        "model_bytes": len(data),
        "opset": graph.opset_import[0].version,
        "inputs": [io(v) for v in graph.graph.input],
        "outputs": [io(v) for v in graph.graph.output],
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (out / MANIFEST).write_text(json.dumps(full, indent=2) + "\n")
    return out
