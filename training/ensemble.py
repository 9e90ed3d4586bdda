"""Average exported sentiment models that share one vocabulary into one model folder.

    python -m training.ensemble runs/sentiment_b runs/sentiment_c --out runs/ens \
        --data ../shared/data/aclImdb_v1_labeled.tar.gz

The merged graph runs every member on the same inputs and outputs the mean
probability and the mean attention distribution. It is checked for batch invariance
in ONNX Runtime (row alone vs in a padded batch <= 1e-5) and for parity with the mean
of the members' own graphs (<= 1e-5); the test accuracy is computed through ONNX
Runtime. ``train_sentiment --members N`` builds the same kind of graph from N seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx

from seqcore.tokenizer import WordTokenizer
from training.data import DataError, load_imdb
from training.evaluate import ort_session, sentiment_accuracy_onnx
from training.export import (
    INVARIANCE_TOL,
    ExportCheckError,
    merge_sentiment_graphs,
    random_padded_batch,
)
from training.manifest import write_model_folder


def check_merged(members: list[onnx.ModelProto], merged: onnx.ModelProto, vocab: int) -> dict:
    lengths = [7, 1, 23, 64, 3, 40]
    ids, lens = random_padded_batch(lengths, vocab, 0)

    def run(sess, ids: np.ndarray, lens: np.ndarray) -> list[np.ndarray]:
        return sess.run(None, {"input_ids": ids, "lengths": lens})

    merged_sess = ort_session(merged.SerializeToString())
    p, a = run(merged_sess, ids, lens)
    outs = [run(ort_session(m.SerializeToString()), ids, lens) for m in members]
    parity = max(float(np.abs(p - np.mean([o[0] for o in outs], 0)).max()),
                 float(np.abs(a - np.mean([o[1] for o in outs], 0)).max()))
    inv = 0.0
    for b, n in enumerate(lengths):
        p1, a1 = run(merged_sess, ids[b:b + 1, :n], lens[b:b + 1])
        inv = max(inv, float(abs(p1[0] - p[b])), float(np.abs(a1[0] - a[b, :n]).max()))
    res = {"merged_vs_member_mean_max_abs_diff": parity, "row_alone_vs_batch_max_abs_diff": inv,
           "batch_lengths": lengths}
    if parity > INVARIANCE_TOL or inv > INVARIANCE_TOL:
        raise ExportCheckError(f"ensemble check failed: {res}")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("members", nargs="+", help="exported sentiment model folders")
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default=None, help="IMDB source, to report test accuracy")
    a = ap.parse_args(argv)
    folders = [Path(f) for f in a.members]
    vocabs = [json.loads((f / "vocab.json").read_text()) for f in folders]
    if any(v != vocabs[0] for v in vocabs[1:]):
        print("error: members do not share one vocabulary", file=sys.stderr)
        return 2
    graphs = [onnx.load(str(f / "model.onnx")) for f in folders]
    merged = merge_sentiment_graphs(graphs)
    tok = WordTokenizer.from_json(vocabs[0])
    checks = check_merged(graphs, merged, tok.vocab_size)
    manifests = [json.loads((f / "manifest.json").read_text()) for f in folders]
    metrics: dict = {}
    try:
        if a.data:
            metrics = sentiment_accuracy_onnx(merged.SerializeToString(), tok,
                                              load_imdb(a.data)["test"])
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    metrics["members_val_accuracy"] = [m["metrics"].get("val_accuracy") for m in manifests]
    manifest = {
        "name": "sentiment",
        "version": "1.e" + str(len(folders)) + "." + "-".join(m["version"] for m in manifests),
        "task": "text-classification",
        "labels": ["negative", "positive"],
        "architecture": "mean of " + " + ".join(m["architecture"] for m in manifests),
        "parameters": sum(m["parameters"] for m in manifests),
        "data": manifests[0]["data"],
        "training": {"ensemble_of": [{"architecture": m["architecture"],
                                      "training": m["training"], "metrics": m["metrics"],
                                      "export_checks": m["export_checks"]}
                                     for m in manifests]},
        "metrics": metrics,
        "export_checks": checks,
    }
    write_model_folder(Path(a.out), merged, tok, manifest)
    print(json.dumps({"metrics": metrics, "export": checks}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
