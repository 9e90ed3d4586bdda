"""Join trained char generators into one generator: an ensemble step graph.

    python -m training.ensemble_chargen --members models/chargen runs/chargen-384 \\
        --name chargen-ensemble --out runs/chargen-ensemble
    python -m training.ensemble_chargen --recipe chargen-ensemble   # the shipped ensemble

The members (model folders with the same vocabulary and number of layers; any widths
and cells; an ensemble folder counts as its members, so a member can be added to an
ensemble) are read back into torch, and one step graph is built around them: each
member reads the same characters from its own slice of the state (the members' states
side by side along the hidden axis), and the graph's logits are the log of the average
of the members' next-character distributions (equal weights, fixed before any
scoring). The graph has a single model's inputs and outputs, so the service serves it
like any generator (chosen with the request's ``model`` field), and it passes the same
export checks (torch vs ONNX Runtime, a row alone vs in a padded batch). Nothing is
trained; the held-out loss is scored through ONNX Runtime as for any char model. Each
step costs the sum of the members' steps.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from seqcore.tokenizer import CharVocab
from training.data import DataError, load_text, source_record
from training.evaluate import chargen_loss_onnx
from training.export import build_char_ensemble_graph, check_char
from training.manifest import run_folder, write_model_folder
from training.models import CharEnsemble
from training.scaffold import command_line, option
from training.train_chargen import (
    folder_version,
    is_graph_only,
    load_char_folder,
    load_char_members,
)


@dataclass
class EnsembleConfig:
    members: list[str] = field(default_factory=list, metadata={
        "help": "the member model folders (two or more; same vocabulary and layers)"})
    data: str = option("../shared/data/nietzsche.txt", "the text the members were trained "
                                                       "on: its held-out part is scored")
    sha256: str | None = option(None, "expected sha256 of the data file (checked when given)")
    heldout_fraction: float = option(0.05, "the last fraction of the text, held out (as the "
                                           "members were trained)", above=0, below=1)
    eval_streams: int = option(16, "held-out text cut into this many streams for scoring",
                               at_least=1)
    out: str = option("", "output model folder (empty: a new runs/chargen-<time> folder, never "
                          "the served models/)")
    replace_served: bool = option(False, "allow --out inside the served models/ folder")
    name: str = option("chargen-ensemble", "the model's name in the manifest (requests' "
                                           "`model` field)")


def load_members(folders: list[str]) -> tuple[CharVocab, CharEnsemble, list[dict]]:
    if not folders:
        raise DataError("--members: give two or more model folders")
    vocab, models, infos = None, [], []
    for f in folders:
        folder = Path(f)
        if is_graph_only(folder):  # an ensemble folder: its members join one by one
            v, members, versions = load_char_members(folder, "--members")
            found = [(model, f"{folder} (member {i})", versions[i])
                     for i, model in enumerate(members)]
        else:
            v, model = load_char_folder(folder, "--members")
            found = [(model, str(folder), folder_version(str(folder)))]
        if vocab is not None and v.chars != vocab.chars:
            raise DataError(f"--members {folder}: its vocabulary differs from {folders[0]}'s")
        vocab = v
        for model, name, version in found:
            models.append(model)
            m = model.cfg
            infos.append({"folder": name, "version": version,
                          "cell": m.cell, "layers": m.layers, "hidden": m.hidden})
    if len(models) < 2:
        raise DataError("--members: give two or more model folders (an ensemble folder "
                        "counts as its members)")
    try:
        ensemble = CharEnsemble(models).eval()
    except ValueError as e:
        raise DataError(f"--members: {e}") from None
    return vocab, ensemble, infos


def build(cfg: EnsembleConfig) -> dict:
    out = run_folder(cfg.out, "chargen", cfg.replace_served)  # refused before any work
    t0 = time.time()
    vocab, ensemble, infos = load_members(cfg.members)
    text = load_text(cfg.data, cfg.sha256).lower()
    held_text = text[int(len(text) * (1 - cfg.heldout_fraction)):]
    graph = build_char_ensemble_graph(ensemble)
    checks = check_char(ensemble, graph)
    c = ensemble.cfg
    manifest = {
        "name": cfg.name,
        # 1.0.<hash of the members' versions>: a new member or member version, a new version
        "version": "1.0." + hashlib.sha256(json.dumps(
            [i["version"] for i in infos]).encode()).hexdigest()[:8],
        "task": "text-generation",
        "cell": c.cell,
        "architecture": "ensemble of char " + " + ".join(
            f"{i['cell'].upper()} {i['layers']}x{i['hidden']}" for i in infos)
            + " (averaged next-char distributions)",
        "parameters": sum(p.numel() for p in ensemble.parameters()),
        "data": {**source_record(cfg.data), "heldout": f"last {cfg.heldout_fraction:.0%} of text",
                 "heldout_chars": len(held_text)},
        "training": {**asdict(cfg), "ensemble_of": infos, "torch": torch.__version__,
                     "minutes": 0.0},
        "metrics": chargen_loss_onnx(graph.SerializeToString(), vocab, held_text,
                                     streams=cfg.eval_streams, layers=c.layers,
                                     hidden=c.hidden, progress=True),
        "export_checks": checks,
        "state": {"layers": c.layers, "hidden": c.hidden},
    }
    manifest["training"]["minutes"] = round((time.time() - t0) / 60, 1)
    write_model_folder(out, graph, vocab, manifest)
    print(json.dumps({"out": str(out), "heldout_loss": manifest["metrics"][
        "heldout_loss_nats_per_char"], "export": checks}))
    return manifest


def main(argv: list[str] | None = None) -> int:
    return command_line(EnsembleConfig, build, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
