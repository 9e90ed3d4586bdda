"""Evaluate an exported model folder through ONNX Runtime; prints one JSON object.

    python -m training.evaluate sentiment --data ../shared/data/aclImdb_v1_labeled.tar.gz
    python -m training.evaluate chargen --data ../shared/data/nietzsche.txt
    python -m training.evaluate negation          # the hand-written negation set
    python -m training.evaluate short             # the hand-written short-text set
    python -m training.evaluate cad --data ../shared/data/cad --split test
    python -m training.evaluate snippets --split val   # held-out VADER snippets

Sentiment: accuracy on the full 25,000-review test split (and on the reviews longer
than the model reads). Chargen: held-out (last 5 %) loss in nats and bits per char,
stepping the exported graph one character at a time with its state carried, exactly
as the service generates. Negation: accuracy on tests/data/negation_set.jsonl (160
short reviews written for this check: negated praise and criticism, contrast, double
negation, hedges), overall and per kind. Short: accuracy on tests/data/short_set.jsonl
(one-line reviews of films and other products, balanced, written by another method
than the negation set), overall and per kind. CAD: the counterfactually-augmented
pairs (training/cad.py): accuracy on the originals, on the revisions, consistency
(both of a pair right), and the expected calibration error (15 bins) of each side.
Sentiment and CAD also report the expected calibration error (``ece``, 15 bins).
Snippets: accuracy (and ECE) on the held-out split of the short texts of
training/short_data.py (VADER's human-rated Amazon, movie and tweet snippets), overall
and per source: validation, it decides between models.
``sentiment --split validation --cad DIR`` scores the validation reviews carved from
train (10 %, seed 1234) without any CAD review: the shipping rule's IMDB figure.
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
                                 batch_size: int = 64, progress: bool = False,
                                 encoded: list | None = None) -> tuple[np.ndarray, list]:
    """P(positive) of every text through ONNX Runtime (batched by length), and the
    encodings (``truncated``, ``n_tokens_total``); ``encoded``: the texts' encodings
    made before (``ids``, ``truncated``: the prepared-data cache's), not made again."""
    sess = ort_session(model)
    enc = encoded if encoded is not None else [tok.encode(t, offsets=False) for t in texts]
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
                            batch_size: int = 64, progress: bool = False,
                            encoded: list | None = None) -> dict:
    t0 = time.time()
    probs, enc = sentiment_probabilities_onnx(model, tok, [r.text for r in reviews], batch_size,
                                              progress, encoded)
    labels = np.array([r.label for r in reviews])
    correct = (probs > 0.5).astype(int) == labels
    long = np.array([e.truncated for e in enc])
    return {"test_accuracy": round(float(correct.mean()), 4), "test_reviews": len(reviews),
            "ece": expected_calibration_error(probs, labels),
            "test_accuracy_truncated_reviews": round(float(correct[long].mean()), 4)
            if long.any() else None,
            "truncated_reviews": int(long.sum()),
            "evaluated_with": "onnxruntime", "eval_seconds": round(time.time() - t0, 1)}


# The IMDB archives by sha256 (README, "Training"): the official one and the labelled-only
# copy in ../shared/data. Figures on the hand-written movie-review sets (negation, short)
# are computed only for models trained on these.
IMDB_ARCHIVES = {
    "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe": "aclImdb_v1.tar.gz",
    "05f4f1595fa1c5603c38c98c5640c0dae906825afcafcca45eedfde42e8bf01f":
        "aclImdb_v1_labeled.tar.gz",
}
IMDB_REVIEWS = (25_000, 25_000)  # labelled train and test reviews
NEGATION_SET_NAME = ("tests/data/negation_set.jsonl (hand-written movie-review sentences: "
                     "negation, contrast, hedges)")


def trained_on_imdb(source: dict, n_train: int, n_test: int) -> bool:
    """Whether data read by ``load_imdb`` is the IMDB dataset: one of its archives by
    sha256, or (an extracted folder, not hashed) its 25,000 + 25,000 labelled reviews.
    An archive of other reviews in the same layout is not."""
    sha = source.get("sha256")
    if sha:
        return sha in IMDB_ARCHIVES
    return (n_train, n_test) == IMDB_REVIEWS


def evaluation_sets(metrics: dict, sets: dict[str, str]) -> dict[str, str]:
    """Each figure of ``metrics`` -> the set it was computed on: ``sets`` maps a figure
    name's prefix (``test_``, ``val_``, ``negation_``, ``ece``, ...) to the set; the
    longest matching prefix wins. Bookkeeping entries (``evaluated_with``,
    ``eval_seconds``) name no set."""
    out = {}
    for key in metrics:
        if key in ("evaluated_with", "eval_seconds"):
            continue
        prefix = max((p for p in sets if key.startswith(p)), key=len, default=None)
        if prefix is not None:
            out[key] = sets[prefix]
    return out


def expected_calibration_error(probs, labels, bins: int = 15) -> float:
    """Expected calibration error (Guo et al. 2017) of a binary classifier: the
    predicted class's probability (confidence) put in ``bins`` equal-width bins of [0, 1];
    the mean over rows of |accuracy - mean confidence| of each row's bin."""
    stats = reliability(probs, labels, bins)
    n = sum(b["rows"] for b in stats)
    return round(sum(b["rows"] * abs(b["accuracy"] - b["confidence"]) for b in stats) / n, 4)


def reliability(probs, labels, bins: int = 15) -> list[dict]:
    """Per non-empty bin of confidence (the predicted class's probability, ``bins``
    equal-width bins of [0, 1]): its range, rows, accuracy and mean confidence (the
    reliability diagram's bars)."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if len(p) == 0:
        raise ValueError("no rows")
    conf = np.maximum(p, 1 - p)
    right = (p > 0.5) == y
    k = np.minimum((conf * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        m = k == b
        if m.any():
            out.append({"low": b / bins, "high": (b + 1) / bins, "rows": int(m.sum()),
                        "accuracy": float(right[m].mean()), "confidence": float(conf[m].mean())})
    return out


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


SHORT_SET = Path(__file__).resolve().parents[1] / "tests" / "data" / "short_set.jsonl"


def cad_pairs_onnx(model: bytes | str, tok: WordTokenizer, pairs: list) -> dict:
    """Pair metrics (training.cad.pair_metrics) and the calibration error of each side."""
    from training.cad import pair_metrics

    p, _ = sentiment_probabilities_onnx(model, tok, [r.text for q in pairs
                                                     for r in (q.original, q.revised)])
    po, pr = p[0::2], p[1::2]
    return {**pair_metrics(po, pr, pairs),
            "ece_originals": expected_calibration_error(po, [q.original.label for q in pairs]),
            "ece_revisions": expected_calibration_error(pr, [q.revised.label for q in pairs]),
            "wrong_at_0.9_or_more_revisions": round(float(np.mean(
                (np.maximum(pr, 1 - pr) >= 0.9)
                & ((pr > 0.5) != np.array([q.revised.label for q in pairs], bool)))), 4),
            "evaluated_with": "onnxruntime"}


def snippets_accuracy_onnx(model: bytes | str, tok: WordTokenizer, split: str = "val") -> dict:
    """Accuracy and ECE on the short labelled snippets of ``split`` (training.short_data),
    overall and per source."""
    from training.short_data import SOURCES, load

    out: dict = {"split": split}
    texts, labels, srcs = [], [], []
    for source in SOURCES:
        rows = load(split, sources=(source,))
        texts += [t for t, _ in rows]
        labels += [y for _, y in rows]
        srcs += [source] * len(rows)
    probs, _ = sentiment_probabilities_onnx(model, tok, texts)
    y = np.array(labels, bool)
    ok = (np.asarray(probs) > 0.5) == y
    out["snippets_accuracy"] = round(float(ok.mean()), 4)
    out["snippets"] = len(texts)
    out["ece"] = expected_calibration_error(probs, labels)
    src = np.array(srcs)
    out["by_source"] = {s: {"accuracy": round(float(ok[src == s].mean()), 4),
                            "items": int((src == s).sum())} for s in SOURCES if (src == s).any()}
    out["evaluated_with"] = "onnxruntime"
    return out


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
    p.add_argument("task", choices=["sentiment", "chargen", "negation", "short", "cad",
                            "snippets"],
                   help="negation / short: the sentiment model on the hand-written negation "
                        "/ short-text set; cad: on the counterfactual pairs (--data: their "
                        "folder)")
    p.add_argument("--split", default="test",
                   help="sentiment: test or validation (10 %% of train, seed 1234); cad: "
                        "train, dev or test")
    p.add_argument("--cad", default=None,
                   help="sentiment: leave every review of this CAD folder out of the split "
                        "scored (the shipping rule's IMDB validation)")
    p.add_argument("--data", default=None, help="dataset path or URL (sentiment, chargen)")
    p.add_argument("--model-dir", default=None,
                   help="model folder (default models/<task>; negation: models/sentiment)")
    p.add_argument("--set", default=str(NEGATION_SET),
                   help="negation set (JSON lines; default: tests/data/negation_set.jsonl)")
    p.add_argument("--sha256", default=None,
                   help="expected sha256 of the dataset (checked when given)")
    a = p.parse_args(argv)
    path = Path(a.model_dir or f"models/{'chargen' if a.task == 'chargen' else 'sentiment'}")
    try:
        try:
            folder = ModelFolder.open(path)
            graph = str(folder.graph_path)
            if not folder.graph_path.is_file():
                raise ModelFolderError(f"{graph}: file is missing")
        except ModelFolderError as e:
            raise DataError(f"{e}; pass --model-dir") from None
        if a.task not in ("negation", "short", "snippets") and not a.data:
            raise DataError(f"{a.task} needs --data (the dataset's path or URL)")
        manifest = folder.manifest
        if a.task == "negation":
            tok = WordTokenizer.load(folder.vocab_path)
            out = negation_accuracy_onnx(graph, tok, load_negation_set(Path(a.set)))
        elif a.task == "short":
            tok = WordTokenizer.load(folder.vocab_path)
            res = negation_accuracy_onnx(graph, tok, load_negation_set(
                Path(a.set) if a.set != str(NEGATION_SET) else SHORT_SET))
            out = {"short_accuracy": res["negation_accuracy"],
                   "short_items": res["negation_items"], "by_kind": res["by_kind"],
                   "evaluated_with": res["evaluated_with"]}
        elif a.task == "snippets":
            tok = WordTokenizer.load(folder.vocab_path)
            out = snippets_accuracy_onnx(graph, tok, "val" if a.split == "test" else a.split)
        elif a.task == "cad":
            from training.cad import load_pairs

            tok = WordTokenizer.load(folder.vocab_path)
            out = {"split": a.split, **cad_pairs_onnx(graph, tok, load_pairs(a.data, a.split))}
        elif a.task == "sentiment":
            tok = WordTokenizer.load(folder.vocab_path)
            data = load_imdb(a.data, a.sha256)
            if a.split == "test":
                reviews = data["test"]
            elif a.split == "validation":
                from training.data import split_train_val

                reviews = split_train_val(data["train"], 0.1, 1234)[1]
            else:
                raise DataError(f"sentiment --split {a.split}: test or validation")
            removed = None
            if a.cad:
                from training.cad import exclude_cad, load_cad

                reviews, removed = exclude_cad(reviews, load_cad(a.cad))
            out = {"split": a.split, **sentiment_accuracy_onnx(graph, tok, reviews)}
            if removed is not None:
                out["cad_reviews_left_out"] = removed
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
