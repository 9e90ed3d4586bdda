"""Evaluate an exported model folder through ONNX Runtime; prints one JSON object.

    python -m training.evaluate sentiment --data ../shared/data/aclImdb_v1_labeled.tar.gz
    python -m training.evaluate chargen --data ../shared/data/nietzsche.txt

Sentiment: accuracy on the full 25,000-review test split (and on the reviews longer
than the model reads). Chargen: held-out (last 5 %) loss in nats and bits per char,
stepping the exported graph one character at a time with its state carried, exactly
as the service generates.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from app.tokenizer import CharVocab, WordTokenizer
from training.data import DataError, Review, load_imdb, load_text


def ort_session(model: bytes | str, threads: int = 1):
    """A CPU ONNX Runtime session of a serialized graph or a model.onnx path."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def sentiment_accuracy_onnx(model: bytes | str, tok: WordTokenizer, reviews: list[Review],
                            batch_size: int = 64) -> dict:
    sess = ort_session(model)
    enc = [tok.encode(r.text) for r in reviews]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i].ids))
    probs = np.zeros(len(enc), dtype=np.float32)
    t0 = time.time()
    for i in range(0, len(order), batch_size):
        b = order[i : i + batch_size]
        lens = np.array([max(1, len(enc[j].ids)) for j in b], dtype=np.int64)
        ids = np.zeros((len(b), lens.max()), dtype=np.int64)
        for k, j in enumerate(b):
            ids[k, : len(enc[j].ids)] = enc[j].ids
            if not enc[j].ids:
                ids[k, 0] = tok.unk_id
        probs[b] = sess.run(["probability"], {"input_ids": ids, "lengths": lens})[0]
    labels = np.array([r.label for r in reviews])
    correct = (probs > 0.5).astype(int) == labels
    long = np.array([e.truncated for e in enc])
    return {"test_accuracy": round(float(correct.mean()), 4), "test_reviews": len(reviews),
            "test_accuracy_truncated_reviews": round(float(correct[long].mean()), 4)
            if long.any() else None,
            "truncated_reviews": int(long.sum()),
            "evaluated_with": "onnxruntime", "eval_seconds": round(time.time() - t0, 1)}


def chargen_loss_onnx(model: bytes | str, vocab: CharVocab, text: str, streams: int = 16,
                      layers: int = 2, hidden: int = 256) -> dict:
    sess = ort_session(model)
    ids = np.array(vocab.encode(text)[0], dtype=np.int64)
    n = (len(ids) - 1) // streams
    x = ids[: n * streams].reshape(streams, n)
    y = ids[1 : n * streams + 1].reshape(streams, n)
    h = np.zeros((layers, streams, hidden), np.float32)
    c = np.zeros_like(h)
    lens = np.ones(streams, np.int64)
    nll = 0.0
    t0 = time.time()
    for t in range(n):
        feed = {"input_ids": x[:, t : t + 1], "lengths": lens, "h0": h, "c0": c}
        logits, h, c = sess.run(None, feed)
        m = logits.max(1, keepdims=True)
        logp = logits - m - np.log(np.exp(logits - m).sum(1, keepdims=True))
        nll -= float(logp[np.arange(streams), y[:, t]].sum())
    loss = nll / (n * streams)
    return {"heldout_loss_nats_per_char": round(loss, 4),
            "heldout_bits_per_char": round(loss / math.log(2), 4),
            "heldout_chars_scored": n * streams, "evaluated_with": "onnxruntime",
            "eval_seconds": round(time.time() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=["sentiment", "chargen"])
    p.add_argument("--data", required=True, help="dataset path or URL")
    p.add_argument("--model-dir", default=None, help="model folder (default models/<task>)")
    p.add_argument("--sha256", default=None)
    a = p.parse_args(argv)
    folder = Path(a.model_dir or f"models/{a.task}")
    try:
        if not (folder / "model.onnx").is_file():
            raise DataError(f"no model.onnx in {folder}; pass --model-dir")
        manifest = json.loads((folder / "manifest.json").read_text())
        if a.task == "sentiment":
            tok = WordTokenizer.load(folder / "vocab.json")
            test = load_imdb(a.data, a.sha256)["test"]
            out = sentiment_accuracy_onnx(str(folder / "model.onnx"), tok, test)
        else:
            vocab = CharVocab.load(folder / "vocab.json")
            text = load_text(a.data, a.sha256).lower()
            frac = manifest["training"]["heldout_fraction"]
            held = text[int(len(text) * (1 - frac)) :]
            st = manifest["state"]
            out = chargen_loss_onnx(str(folder / "model.onnx"), vocab, held,
                                    streams=manifest["training"].get("eval_streams", 16),
                                    layers=st["layers"], hidden=st["hidden"])
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"model": manifest["name"], "version": manifest["version"], **out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
