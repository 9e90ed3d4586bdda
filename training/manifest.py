"""Where a training run writes its model folder (the folder's contents, and writing
them, are ``seqcore.modelfolder``'s)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from seqcore.modelfolder import write_model_folder

__all__ = ["SERVED_MODELS", "OutputError", "run_folder", "write_model_folder"]

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
