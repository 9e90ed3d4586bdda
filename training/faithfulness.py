"""Faithfulness of the sentiment model's explanations (ERASER, DeYoung et al. 2020):
comprehensiveness and sufficiency (seqcore/faithfulness.py) of the attention weights,
of the n-gram contributions (toward the predicted class) and of random tokens, at
k = 5, 10 and 20 % of the tokens, on a seeded sample of IMDB test reviews, through ONNX
Runtime on the exported graph. Prints one JSON object.

    python -m training.faithfulness --data ../shared/data/aclImdb_v1_labeled.tar.gz \\
        --model-dir models/sentiment --reviews 2000
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

from seqcore import runtime
from seqcore.faithfulness import KS, reduced_rows, scores, toward_prediction
from seqcore.modelfolder import ModelFolder, ModelFolderError
from seqcore.tokenizer import WordTokenizer
from training.data import DataError, load_imdb
from training.evaluate import ort_session

NGRAMS = "ngram_contributions"


def run_rows(sess, rows: list[list[int]], unk_id: int, outputs: list[str],
             batch_size: int = 64) -> list[list[np.ndarray]]:
    """Each output for every row (cut to the row's length), batched by length."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    res: list = [None] * len(rows)
    for s in range(0, len(order), batch_size):
        b = order[s : s + batch_size]
        ids, lens = runtime.pad_rows([rows[j] for j in b], unk_id)
        out = sess.run(outputs, {"input_ids": ids, "lengths": lens})
        for r, j in enumerate(b):
            res[j] = [o[r] if o.ndim == 1 else o[r, : lens[r]] for o in out]
    return res


def faithfulness(model: bytes | str, tok: WordTokenizer, texts: list[str],
                 ks: tuple[float, ...] = KS, seed: int = 0) -> dict:
    """Mean comprehensiveness and sufficiency per explanation and k."""
    sess = ort_session(model)
    outputs = [o.name for o in sess.get_outputs()]
    names = ["probability", "attention"] + ([NGRAMS] if NGRAMS in outputs else [])
    rows = [tok.encode(t, offsets=False).ids or [tok.unk_id] for t in texts]
    full = run_rows(sess, rows, tok.unk_id, names)
    rng = random.Random(seed)
    methods: dict[str, list[np.ndarray]] = {"attention": [f[1] for f in full]}
    if NGRAMS in names:
        methods["ngrams"] = [toward_prediction(f[2], float(f[0])) for f in full]
    methods["random"] = [np.array([rng.random() for _ in r]) for r in rows]
    table: dict = {}
    for name, importance in methods.items():
        reduced = [reduced_rows(r, imp, ks, tok.unk_id) for r, imp in zip(rows, importance,
                                                                            strict=True)]
        flat = [x for rr in reduced for x in rr]
        p = run_rows(sess, flat, tok.unk_id, ["probability"])
        per = 2 * len(ks)
        got = [scores(float(f[0]), [float(q[0]) for q in p[i * per:(i + 1) * per]], ks)
               for i, f in enumerate(full)]
        table[name] = {f"{k:.0%}": {
            "comprehensiveness": round(float(np.mean([g[j]["comprehensiveness"] for g in got])), 4),
            "sufficiency": round(float(np.mean([g[j]["sufficiency"] for g in got])), 4)}
            for j, k in enumerate(ks)}
    return {"reviews": len(texts), "ks": list(ks), "explanations": table}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the IMDB archive or folder")
    p.add_argument("--model-dir", default="models/sentiment")
    p.add_argument("--reviews", type=int, default=2000, help="test reviews sampled (seeded)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    t0 = time.time()
    try:
        try:
            folder = ModelFolder.open(Path(a.model_dir))
        except ModelFolderError as e:
            raise DataError(f"{e}; pass --model-dir") from None
        test = load_imdb(a.data)["test"]
        pick = random.Random(a.seed).sample(range(len(test)), min(a.reviews, len(test)))
        tok = WordTokenizer.load(folder.vocab_path)
        out = faithfulness(str(folder.graph_path), tok, [test[i].text for i in pick],
                           seed=a.seed)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"model": folder.manifest["name"], "version": folder.manifest["version"],
                      **out, "evaluated_with": "onnxruntime",
                      "seconds": round(time.time() - t0, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
