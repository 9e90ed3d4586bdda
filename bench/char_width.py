"""Width of the char generator vs held-out loss vs speed: the table behind the choice
of the shipped width (docs/models.md).

    python -m bench.char_width --models models/chargen runs/chargen-384 --widths 512

For each model folder (trained: its held-out nats/char from the manifest) and each
extra width (an untrained graph of that width, same layers and embedding as the
shipped model: speed does not depend on the weights), the raw in-process generation
limit that ``make bench`` uses (``bench.raw.raw_generation``: prefill + step graph +
the service's sampling, one ORT thread per caller) at 1 and 32 streams, and one
200-character prompt's prefill. Run it on a quiet machine: the figures are compared
with each other, in one run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench.inputs import prompts
from bench.raw import raw_generation
from seqcore.modelfolder import ModelFolder


def untrained_folder(width: int, like: Path, out: Path) -> Path:
    """A char model folder with random weights: ``like``'s vocabulary, layers and
    embedding size, ``width`` hidden units."""
    import torch

    from seqcore.tokenizer import CharVocab
    from training.export import build_char_graph
    from training.manifest import write_model_folder
    from training.models import CharConfig, CharLSTM

    ref = ModelFolder.open(like)
    vocab = CharVocab.load(ref.vocab_path)
    layers = ref.manifest["state"]["layers"]
    emb = ref.manifest.get("training", {}).get("emb_dim", 64)
    torch.manual_seed(0)
    model = CharLSTM(CharConfig(vocab_size=vocab.vocab_size, emb_dim=emb, hidden=width,
                                layers=layers)).eval()
    folder = out / f"chargen-{width}"
    write_model_folder(folder, build_char_graph(model), vocab, {
        "name": f"chargen-{width}", "version": "0.0.untrained", "task": "text-generation",
        "metrics": {}, "state": {"layers": layers, "hidden": width},
        "parameters": sum(p.numel() for p in model.parameters())})
    return folder


def row(folder: Path, new_chars: int) -> dict:
    m = ModelFolder.open(folder).manifest
    raw = raw_generation(prompts(64), new_chars, streams=(1, 32), folder_path=folder)
    members = m.get("training", {}).get("ensemble_of")  # an ensemble: its members' shapes
    shape = (" + ".join(f"{x['layers']} x {x['hidden']}" for x in members) if members
             else f"{m['state']['layers']} x {m['state']['hidden']}")
    return {"folder": str(folder), "shape": shape,
            "hidden": m["state"]["hidden"], "layers": m["state"]["layers"],
            "parameters": m.get("parameters"),
            "mb": round(ModelFolder.at(folder).graph_path.stat().st_size / 1e6, 1),
            "heldout_nats_per_char": m.get("metrics", {}).get("heldout_loss_nats_per_char"),
            "chars_per_s_1": round(raw["chars_per_s_by_streams"][1]),
            "chars_per_s_32": round(raw["chars_per_s_by_streams"][32]),
            "prefill_200_ms": round(raw["prefill_ms"][200], 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=[Path("models/chargen")], type=Path,
                    help="trained char model folders")
    ap.add_argument("--widths", nargs="*", default=[], type=int,
                    help="extra widths, measured with untrained weights")
    ap.add_argument("--new-chars", type=int, default=200)
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folders = list(args.models) + [untrained_folder(w, args.models[0], Path(tmp))
                                       for w in args.widths]
        for f in folders:
            rows.append(row(f, args.new_chars))
            print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["chars_per_s_1"]
    print("\n| layers x width | held-out nats/char | parameters | MB | raw chars/s, 1 stream "
          "| vs first | raw chars/s, 32 streams | 200-char prefill ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        nats = (f"{r['heldout_nats_per_char']:.4f}" if r["heldout_nats_per_char"] is not None
                else "untrained")
        params = f"{r['parameters']:,}" if r["parameters"] else "—"
        print(f"| {r['shape']} | {nats} | {params} | {r['mb']} | "
              f"{r['chars_per_s_1']:,} | {r['chars_per_s_1'] / base:.2f} | "
              f"{r['chars_per_s_32']:,} | {r['prefill_200_ms']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
