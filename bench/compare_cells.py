"""Compare model folders trained with different recurrent cells (``--cell``) on one
budget: a markdown table and, for the classifiers, a picture of test accuracy by
review length (does a vanilla RNN forget the start of long reviews?).

    python -m bench.compare_cells --imdb <imdb> --sentiment runs/cells/sentiment-{lstm,gru,rnn} \
        --chargen runs/cells/chargen-{lstm,gru,rnn} --png docs/cells_accuracy_by_length.png

Everything runs through ONNX Runtime with one thread: ms per review is the median of
200 single test reviews; chars/s is one generation step (batch 1 and 32) per median
step time. Needs matplotlib for the picture (not a dependency of the project).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from seqcore.modelfolder import ModelFolder
from seqcore.tokenizer import WordTokenizer
from training.data import load_imdb
from training.evaluate import ort_session, sentiment_probabilities_onnx

BUCKETS = [(0, 100), (100, 200), (200, 400), (400, 800), (800, 10**9)]


def _manifest(folder: Path) -> dict:
    return ModelFolder.open(folder).manifest


def sentiment_row(folder: Path, test) -> tuple[dict, dict]:
    m = _manifest(folder)
    tok = WordTokenizer.load(ModelFolder.at(folder).vocab_path)
    onnx_path = str(ModelFolder.at(folder).graph_path)
    probs, enc = sentiment_probabilities_onnx(onnx_path, tok, [r.text for r in test])
    labels = np.array([r.label for r in test])
    correct = (probs > 0.5).astype(int) == labels
    lengths = np.array([e.n_tokens_total for e in enc])
    by_len = {}
    for lo, hi in BUCKETS:
        sel = (lengths >= lo) & (lengths < hi)
        if sel.any():
            by_len[f"{lo}-{hi if hi < 10**9 else ''}"] = (float(correct[sel].mean()), int(sel.sum()))
    sess = ort_session(onnx_path)
    times = []
    for e in enc[:200]:
        ids = e.ids or [tok.unk_id]
        feed = {"input_ids": np.array([ids], dtype=np.int64),
                "lengths": np.array([len(ids)], dtype=np.int64)}
        t0 = time.perf_counter()
        sess.run(["probability"], feed)
        times.append(time.perf_counter() - t0)
    t = m["training"]
    hist = t["history"] if "history" in t else t["members_trained"][0]["history"]  # older runs
    row = {"cell": m.get("cell", "lstm"), "test_accuracy": float(correct.mean()),
           "parameters": m["parameters"], "mb": ModelFolder.at(folder).graph_path.stat().st_size / 1e6,
           "ms_per_review": 1000 * float(np.median(times)), "epochs": len(hist),
           "minutes": m["training"]["minutes"]}
    return row, by_len


def chargen_row(folder: Path) -> dict:
    m = _manifest(folder)
    sess = ort_session(str(ModelFolder.at(folder).graph_path))
    L, H = m["state"]["layers"], m["state"]["hidden"]
    speed = {}
    for B in (1, 32):
        feed = {"input_ids": np.ones((B, 1), dtype=np.int64), "lengths": np.ones(B, np.int64),
                "h0": np.zeros((L, B, H), np.float32), "c0": np.zeros((L, B, H), np.float32)}
        for _ in range(20):
            sess.run(None, feed)
        times = []
        for _ in range(300):
            t0 = time.perf_counter()
            sess.run(None, feed)
            times.append(time.perf_counter() - t0)
        speed[B] = B / float(np.median(times))
    return {"cell": m.get("cell", "lstm"),
            "heldout_nats_per_char": m["metrics"]["heldout_loss_nats_per_char"],
            "parameters": m["parameters"], "mb": ModelFolder.at(folder).graph_path.stat().st_size / 1e6,
            "chars_per_s_1": speed[1], "chars_per_s_32": speed[32],
            "epochs": len(m["training"]["history"]), "minutes": m["training"]["minutes"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--imdb", required=True)
    p.add_argument("--sentiment", nargs="*", default=[])
    p.add_argument("--chargen", nargs="*", default=[])
    p.add_argument("--png", default=None, help="where to save the accuracy-by-length picture")
    a = p.parse_args(argv)
    out: dict = {"sentiment": [], "chargen": []}
    if a.sentiment:
        test = load_imdb(a.imdb)["test"]
        curves = {}
        print("| cell | IMDB test | parameters | MB | ms / review | epochs | minutes |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for f in a.sentiment:
            row, by_len = sentiment_row(Path(f), test)
            out["sentiment"].append({**row, "accuracy_by_length": by_len})
            curves[row["cell"]] = by_len
            print(f"| {row['cell']} | {row['test_accuracy']:.4f} | {row['parameters']:,} | "
                  f"{row['mb']:.1f} | {row['ms_per_review']:.2f} | {row['epochs']} | "
                  f"{row['minutes']} |", flush=True)
        print()
        buckets = list(next(iter(curves.values())))
        print("| tokens | " + " | ".join(curves) + " |")
        print("|---|" + "---:|" * len(curves))
        for b in buckets:
            n = next(iter(curves.values()))[b][1]
            print(f"| {b} ({n}) | " + " | ".join(f"{c[b][0]:.3f}" for c in curves.values()) + " |")
        if a.png:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(7, 4))
            for cell, c in curves.items():
                ax.plot(range(len(buckets)), [c[b][0] for b in buckets], marker="o", label=cell)
            ax.set_xticks(range(len(buckets)), [f"{b}\n({c[b][1]})" for b in buckets
                                                for c in [next(iter(curves.values()))]])
            ax.set_xlabel("review length in tokens (test reviews)")
            ax.set_ylabel("IMDB test accuracy")
            ax.set_title("Accuracy by review length, one training budget per cell")
            ax.grid(alpha=0.3)
            ax.legend()
            fig.tight_layout()
            fig.savefig(a.png, dpi=110)
    if a.chargen:
        print()
        print("| cell | held-out nats/char | parameters | MB | chars/s (1 stream) | "
              "chars/s (32) | epochs | minutes |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for f in a.chargen:
            row = chargen_row(Path(f))
            out["chargen"].append(row)
            print(f"| {row['cell']} | {row['heldout_nats_per_char']:.4f} | {row['parameters']:,} | "
                  f"{row['mb']:.1f} | {row['chars_per_s_1']:,.0f} | {row['chars_per_s_32']:,.0f} | "
                  f"{row['epochs']} | {row['minutes']} |", flush=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
