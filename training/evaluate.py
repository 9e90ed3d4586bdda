"""Evaluate an exported model folder through ONNX Runtime; prints one JSON object.

    python -m training.evaluate sentiment --data ../shared/data/aclImdb_v1_labeled.tar.gz
    python -m training.evaluate chargen --data ../shared/data/nietzsche.txt
    python -m training.evaluate negation          # the hand-written negation set

Sentiment: accuracy on the full 25,000-review test split (and on the reviews longer
than the model reads). Chargen: held-out (last 5 %) loss in nats and bits per char,
stepping the exported graph one character at a time with its state carried, exactly
as the service generates. Negation: accuracy on tests/data/negation_set.jsonl (160
short reviews written for this check: negated praise and criticism, contrast, double
negation, hedges), overall and per kind.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from seqcore import runtime
from seqcore.modelfolder import ModelFolder, ModelFolderError
from seqcore.tokenizer import CharVocab, WordTokenizer
from training.data import DataError, Review, load_imdb, load_text


def ort_session(model: bytes | str, threads: int = 1):
    """A CPU ONNX Runtime session of a serialized graph or a model.onnx path."""
    return runtime.session(model, threads=threads)


def _steps(n: int, desc: str, progress: bool):
    """range(n), with a training-style progress report when ``progress``."""
    if not progress:
        return range(n)
    from training.scaffold import track

    return track(range(n), desc, total=n, unit="step")


def sentiment_probabilities_onnx(model: bytes | str, tok: WordTokenizer, texts: list[str],
                                 batch_size: int = 64, progress: bool = False
                                 ) -> tuple[np.ndarray, list]:
    """P(positive) of every text through ONNX Runtime (batched by length), and the
    encodings (``truncated``, ``n_tokens_total``)."""
    sess = ort_session(model)
    enc = [tok.encode(t, offsets=False) for t in texts]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i].ids))
    probs = np.zeros(len(enc), dtype=np.float32)
    n_batches = -(-len(order) // batch_size)
    for k_batch in _steps(n_batches, "evaluate", progress):
        i = k_batch * batch_size
        b = order[i : i + batch_size]
        ids, lens = runtime.pad_rows([enc[j].ids for j in b], tok.unk_id)
        probs[b] = sess.run(["probability"], {"input_ids": ids, "lengths": lens})[0]
    return probs, enc


def sentiment_accuracy_onnx(model: bytes | str, tok: WordTokenizer, reviews: list[Review],
                            batch_size: int = 64, progress: bool = False) -> dict:
    t0 = time.time()
    probs, enc = sentiment_probabilities_onnx(model, tok, [r.text for r in reviews], batch_size,
                                              progress)
    labels = np.array([r.label for r in reviews])
    correct = (probs > 0.5).astype(int) == labels
    long = np.array([e.truncated for e in enc])
    return {"test_accuracy": round(float(correct.mean()), 4), "test_reviews": len(reviews),
            "test_accuracy_truncated_reviews": round(float(correct[long].mean()), 4)
            if long.any() else None,
            "truncated_reviews": int(long.sum()),
            "evaluated_with": "onnxruntime", "eval_seconds": round(time.time() - t0, 1)}


NEGATION_SET = Path(__file__).resolve().parents[1] / "tests" / "data" / "negation_set.jsonl"
# hand-written validation items (not the check): they decide between trained candidates
NEGATION_VAL = Path(__file__).resolve().parent / "data" / "negation_val.jsonl"


def load_negation_set(path: Path = NEGATION_SET) -> list[dict]:
    """The hand-written check set of short negated, contrasting and hedged reviews
    (``text``, ``label`` positive/negative, ``kind``). A check, never training data."""
    items = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()
             if line.strip()]
    if not items:
        raise DataError(f"{path}: no items")
    return items


def negation_accuracy_onnx(model: bytes | str, tok: WordTokenizer, items: list[dict]) -> dict:
    """Accuracy on the negation set, overall and per kind (and per kind and label)."""
    probs, _ = sentiment_probabilities_onnx(model, tok, [i["text"] for i in items])
    correct = [(p > 0.5) == (i["label"] == "positive") for p, i in zip(probs, items, strict=True)]
    groups: dict[str, list[bool]] = {}
    for ok, item in zip(correct, items, strict=True):
        groups.setdefault(item["kind"], []).append(ok)
        groups.setdefault(f"{item['kind']} ({item['label']})", []).append(ok)
    return {"negation_accuracy": round(float(np.mean(correct)), 4), "negation_items": len(items),
            "by_kind": {k: {"accuracy": round(float(np.mean(v)), 4), "items": len(v)}
                        for k, v in sorted(groups.items())},
            "evaluated_with": "onnxruntime"}


def char_step_logits(sess, x: np.ndarray, layers: int, hidden: int, progress: bool = False,
                     desc: str = "evaluate held-out"):
    """Yield (t, logits [S, V]) after each column t of ``x`` [S, n]: the S rows stepped
    through a char graph one character per call, from a zero state with the state
    carried, exactly as the service generates."""
    S, n = x.shape
    h = c = np.zeros((layers, S, hidden), np.float32)
    for t in _steps(n, desc, progress):
        logits, h, c = char_step(sess, x[:, t : t + 1], h, c)
        yield t, logits


def char_step(sess, ids: np.ndarray, h: np.ndarray, c: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One call of a char graph: every row of ``ids`` [S, k] read from state ``h``/``c``
    -> (logits after the last column [S, V], hN, cN)."""
    S, k = ids.shape
    return tuple(sess.run(None, {"input_ids": np.ascontiguousarray(ids, np.int64),
                                 "lengths": np.full(S, k, np.int64), "h0": h, "c0": c}))


def chargen_loss_onnx(model: bytes | str, vocab: CharVocab, text: str, streams: int = 16,
                      layers: int = 2, hidden: int = 256, progress: bool = False) -> dict:
    sess = ort_session(model)
    ids = np.array(vocab.encode(text)[0], dtype=np.int64)
    n = (len(ids) - 1) // streams
    x = ids[: n * streams].reshape(streams, n)
    y = ids[1 : n * streams + 1].reshape(streams, n)
    nll = 0.0
    t0 = time.time()
    for t, logits in char_step_logits(sess, x, layers, hidden, progress):
        logp = runtime.log_softmax(logits)
        nll -= float(logp[np.arange(streams), y[:, t]].sum())
    loss = nll / (n * streams)
    return {"heldout_loss_nats_per_char": round(loss, 4),
            "heldout_bits_per_char": round(loss / math.log(2), 4),
            "heldout_chars_scored": n * streams, "evaluated_with": "onnxruntime",
            "eval_seconds": round(time.time() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=["sentiment", "chargen", "negation"],
                   help="negation: the sentiment model on the hand-written negation set")
    p.add_argument("--data", default=None, help="dataset path or URL (sentiment, chargen)")
    p.add_argument("--model-dir", default=None,
                   help="model folder (default models/<task>; negation: models/sentiment)")
    p.add_argument("--set", default=str(NEGATION_SET),
                   help="negation set (JSON lines; default: tests/data/negation_set.jsonl)")
    p.add_argument("--sha256", default=None,
                   help="expected sha256 of the dataset (checked when given)")
    a = p.parse_args(argv)
    path = Path(a.model_dir or f"models/{'sentiment' if a.task == 'negation' else a.task}")
    try:
        try:
            folder = ModelFolder.open(path)
            graph = str(folder.graph_path)
            if not folder.graph_path.is_file():
                raise ModelFolderError(f"{graph}: file is missing")
        except ModelFolderError as e:
            raise DataError(f"{e}; pass --model-dir") from None
        if a.task != "negation" and not a.data:
            raise DataError(f"{a.task} needs --data (the dataset's path or URL)")
        manifest = folder.manifest
        if a.task == "negation":
            tok = WordTokenizer.load(folder.vocab_path)
            out = negation_accuracy_onnx(graph, tok, load_negation_set(Path(a.set)))
        elif a.task == "sentiment":
            tok = WordTokenizer.load(folder.vocab_path)
            test = load_imdb(a.data, a.sha256)["test"]
            out = sentiment_accuracy_onnx(graph, tok, test)
        else:
            vocab = CharVocab.load(folder.vocab_path)
            text = load_text(a.data, a.sha256).lower()
            frac = manifest["training"]["heldout_fraction"]
            held = text[int(len(text) * (1 - frac)) :]
            st = manifest["state"]
            out = chargen_loss_onnx(graph, vocab, held,
                                    streams=manifest["training"].get("eval_streams", 16),
                                    layers=st["layers"], hidden=st["hidden"])
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"model": manifest["name"], "version": manifest["version"], **out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
