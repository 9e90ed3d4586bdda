"""Reliability diagrams (and the expected calibration error, 15 bins) of sentiment model
folders on the IMDB test split and on the CAD test revisions, through ONNX Runtime:
one panel per data set, one line per model (accuracy against mean confidence per bin,
the diagonal is perfect calibration). Prints the figures as JSON.

    python -m training.reliability --data ../shared/data/aclImdb_v1_labeled.tar.gz \\
        --cad ../shared/data/cad --model before=runs/x-uncal --model after=models/sentiment \\
        --out docs/reliability.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from seqcore.modelfolder import ModelFolder
from seqcore.tokenizer import WordTokenizer
from training.cad import load_pairs
from training.data import DataError, load_imdb
from training.evaluate import expected_calibration_error, reliability, sentiment_probabilities_onnx


def plot(curves: dict[str, dict[str, list[dict]]], eces: dict[str, dict[str, float]],
         out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(next(iter(curves.values())))
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 4.6))
    for ax, name in zip(np.atleast_1d(axes), sets, strict=True):
        ax.plot([0.5, 1], [0.5, 1], color="grey", lw=1, ls="--", label="perfect")
        for model, per in curves.items():
            bins = per[name]
            (line,) = ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins],
                              "-", label=f"{model} (ECE {eces[model][name]:.3f})")
            total = sum(x["rows"] for x in bins)
            ax.scatter([b["confidence"] for b in bins], [b["accuracy"] for b in bins],
                       s=[12 + 300 * b["rows"] / total for b in bins], color=line.get_color(),
                       alpha=0.5)
        ax.set_xlim(0.45, 1.02)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("confidence (predicted label's probability), 15 bins")
        ax.set_ylabel("accuracy in the bin")
        ax.set_title(name)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("Reliability: dots sized by the rows in each bin")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the IMDB archive or folder")
    p.add_argument("--cad", required=True, help="the CAD folder")
    p.add_argument("--model", action="append", required=True,
                   help="NAME=FOLDER, once per model (in legend order)")
    p.add_argument("--out", required=True, help="the PNG to write")
    a = p.parse_args(argv)
    try:
        test = load_imdb(a.data)["test"]
        pairs = load_pairs(a.cad, "test")
        curves, eces = {}, {}
        for spec in a.model:
            name, _, folder = spec.partition("=")
            if not folder:
                raise DataError(f"--model {spec}: NAME=FOLDER")
            model = ModelFolder.at(folder)
            tok = WordTokenizer.load(model.vocab_path)
            graph = str(model.graph_path)
            p_imdb, _ = sentiment_probabilities_onnx(graph, tok, [r.text for r in test])
            p_rev, _ = sentiment_probabilities_onnx(graph, tok, [q.revised.text for q in pairs])
            y_imdb = np.array([r.label for r in test])
            y_rev = np.array([q.revised.label for q in pairs])
            sets = {"IMDB test (25,000)": (p_imdb, y_imdb),
                    f"CAD test revisions ({len(pairs)})": (p_rev, y_rev)}
            curves[name] = {k: reliability(pp, yy) for k, (pp, yy) in sets.items()}
            eces[name] = {k: expected_calibration_error(pp, yy) for k, (pp, yy) in sets.items()}
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    plot(curves, eces, Path(a.out))
    print(json.dumps({"ece": eces, "bins": curves, "out": a.out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
