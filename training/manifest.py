"""Writes a model folder: model.onnx, the vocabulary file and manifest.json.

The layout of a model folder is known in two places only: here (writing) and
``app/registry.py`` (reading).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import onnx

# The folder the service serves from in this repository. Training never writes into it
# unless asked to in so many words (``--replace-served``): a trial run must not replace
# the model that is being served.
SERVED_MODELS = Path(__file__).resolve().parents[1] / "models"


class OutputError(ValueError):
    """The output folder chosen for a training run is not acceptable."""


def run_folder(out: str, task: str, replace_served: bool = False) -> Path:
    """Where a training run writes its model folder: ``out``, or by default a new
    ``runs/<task>-<UTC time>`` folder. A folder inside the served ``models/`` is refused
    unless ``replace_served`` is set."""
    path = Path(out) if out else Path("runs") / f"{task}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    served = SERVED_MODELS.resolve()
    resolved = path.resolve()
    if (resolved == served or served in resolved.parents) and not replace_served:
        raise OutputError(f"--out {path} is inside the served models folder {served}; "
                          "write to a run folder (the default) and copy it in, or pass "
                          "--replace-served to replace the served model on purpose")
    return path


def write_model_folder(out: Path, graph: onnx.ModelProto, vocab, manifest: dict) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = graph.SerializeToString()
    (out / "model.onnx").write_bytes(data)
    vocab.save(out / "vocab.json")
    sha = hashlib.sha256(data).hexdigest()
    full = {
        **manifest,
        # build metadata: the same recipe retrained gives a different version string
        "version": f"{manifest['version']}+{sha[:8]}",
        "files": {"model": "model.onnx", "vocab": "vocab.json"},
        "model_sha256": sha,
        "model_bytes": len(data),
        "opset": graph.opset_import[0].version,
        "inputs": [_io(v) for v in graph.graph.input],
        "outputs": [_io(v) for v in graph.graph.output],
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (out / "manifest.json").write_text(json.dumps(full, indent=2) + "\n")
    return out


def _io(v: onnx.ValueInfoProto) -> dict:
    t = v.type.tensor_type
    return {
        "name": v.name,
        "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
        "shape": [d.dim_param or d.dim_value for d in t.shape.dim],
    }
