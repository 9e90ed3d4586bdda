"""A wide n-gram term inside the sentiment graph ("wide and deep"), added to a trained
recurrent model.

The recurrent encoder with attention reads word order and long-range context; a
linear model over word n-grams (Wang & Manning 2012) is hard to beat on IMDB at
remembering which exact phrases carry sentiment ("not bad", "waste of time"). The
served graph keeps the encoder and its attention, and adds to its logit

    ngram_logit = (1 / sqrt(n)) * sum_t  w[uni(t)] + w[bi(t)] + w[tri(t)]

over the n real tokens of the row, where uni/bi/tri(t) are hashed buckets of the
uni-, bi- and trigram of vocabulary ids ENDING at token t. The hashes are computed
inside the graph from ``input_ids`` (integer multiply, add, modulo), so the graph's
inputs, the tokenizer and the service are unchanged, and padding never reaches the
sum (masked by ``lengths``): the graph stays batch-invariant. The final logit is
``a * encoder_logit + ngram_logit + c``: ``w`` is fitted on the training split
(logistic regression, the encoder frozen), then ``a``, the n-gram scale and ``c``
on the validation split carved from train. The graph also returns
``ngram_contributions`` [B, T]: each token's share of ``ngram_logit`` (the n-grams
ending at it), in logit space, which is what /attention's weights do not cover.

Negation scope (``--negation-window``, 5 by default; 0 turns it off): the n-grams
ending at a word that follows a negator ("not", "never", "didn't", ...) within the
window hash into buckets of their own, so "not ... bad" gets its own weight instead
of sharing "bad"'s; ``--negation-parity`` counts the negators in the window and
cancels an even number; ``--negation-first-word`` takes each n-gram's scope from its
first word (the negators before the n-gram) instead of its last, so in "I couldn't
find a moment that didn't work" the bigram "didn't work" is read inside "couldn't"'s
scope, not as the usual complaint. The negator table is an initializer of the graph,
the scope a few shifts of its lookup; the manifest lists the negators and says which
word an n-gram's scope is taken from (``ngram.negation.scope_from``).
``--implicit-negators`` adds words that negate without a "not" ("failed to impress",
"lacks charm"). Contrast scope (``--contrast-window``, 0 by default): the n-grams
followed within the window by a contrast word ("but", "though", "yet", ...) hash into
buckets of their own too, so what comes before a turn ("slow at first, but ...") can
weigh less than what follows (manifest ``ngram.contrast``).

    python -m training.ngrams --base models/sentiment --data <imdb> --out runs/sentiment-ngrams
    python -m training.ngrams --recipe sentiment   # the shipped term (training/recipes/)
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from seqcore.modelfolder import ModelFolder, ModelFolderError
from seqcore.tokenizer import WordTokenizer
from training.augment import generate
from training.cad import CadOptions, CadSplits, pair_metrics, with_cad
from training.data import DataError, load_imdb, source_record, split_train_val
from training.evaluate import (
    NEGATION_VAL,
    expected_calibration_error,
    load_negation_set,
    negation_accuracy_onnx,
    ort_session,
    sentiment_accuracy_onnx,
    sentiment_probabilities_onnx,
)
from training.export import INVARIANCE_TOL, ExportCheckError, random_padded_batch
from training.manifest import run_folder, write_model_folder
from training.models import NEGATORS, negation_scope, negator_table  # noqa: F401 (re-exported)
from training.scaffold import command_line, option

PRIME = 1_000_003
SALTS = (0, 7_919, 104_729)  # uni-, bi-, trigram buckets apart
NEG_SALT = 15_485_863  # n-grams in a negator's scope: buckets of their own
CON_SALT = 49_979_687  # n-grams just before a contrast word: buckets of their own
# Words after which a review's verdict often turns ("slow at first, but ..."). The
# tokenizer drops punctuation, so the clause before one is a fixed window of words.
CONTRASTS = frozenset({"but", "though", "although", "however", "yet", "nevertheless",
                       "nonetheless", "whereas"})


def contrast_table(itos: list[str]) -> np.ndarray:
    """[vocab] int64: 1 for a contrast word's id, else 0."""
    return np.array([int(w in CONTRASTS) for w in itos], dtype=np.int64)


def contrast_scope(ids: torch.Tensor, table: torch.Tensor, window: int) -> torch.Tensor:
    """[B, T] int64: 1 where a contrast word is among the ``window`` words after (padding
    ids are never contrast words, so a row alone and in a padded batch agree)."""
    found = table[ids]
    scope = torch.zeros_like(ids)
    for _ in range(window):
        found = torch.cat([found[:, 1:], torch.zeros_like(ids[:, :1])], 1)
        scope = torch.maximum(scope, found)
    return scope
def _shift_right(x: torch.Tensor) -> torch.Tensor:
    """[B, T] -> [B, T]: each row one step later, 0 at the start."""
    return torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], 1)


def ngram_buckets(ids: torch.Tensor, lengths: torch.Tensor, buckets: int,
                  neg_table: torch.Tensor | None = None, window: int = 0, parity: bool = False,
                  first_word: bool = False, con_table: torch.Tensor | None = None,
                  con_window: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [B, T] -> (bucket ids [3, B, T], valid [3, B, T]) of the uni-, bi- and
    trigram ending at each position (int64 arithmetic, exactly as in the graph). With
    a negator table and a window, the n-grams in a negator's scope ("bad" in "not bad")
    take buckets of their own (+ NEG_SALT before the modulo), so "not bad" does not
    share its weights with "bad". An n-gram's scope is its last word's (the negators
    among the ``window`` words before it, the n-gram's own included), or with
    ``first_word`` its first word's (the negators before the n-gram: in "couldn't find
    a moment that didn't work" the bigram "didn't work" is in "couldn't"'s scope). With
    a contrast table and window, the n-grams whose last word has a contrast word
    ("but", "though", ...) among the ``con_window`` words after it take buckets of their
    own too (+ CON_SALT), so "boring" before a "but" learns its own, weaker weight."""
    prev1 = _shift_right(ids)
    prev2 = _shift_right(prev1)
    T = ids.shape[1]
    t = torch.arange(T).unsqueeze(0)
    real = t < lengths.unsqueeze(1)
    s0 = s1 = s2 = 0
    if neg_table is not None and window > 0:
        s0 = s1 = s2 = negation_scope(ids, neg_table, window, parity) * NEG_SALT
        if first_word:
            s1 = _shift_right(s0)
            s2 = _shift_right(s1)
    if con_table is not None and con_window > 0:
        c = contrast_scope(ids, con_table, con_window) * CON_SALT
        s0, s1, s2 = s0 + c, s1 + c, s2 + c
    uni = (ids + SALTS[0] + s0) % buckets
    bi = (prev1 * PRIME + ids + SALTS[1] + s1) % buckets
    tri = ((prev2 * PRIME + prev1) * PRIME + ids + SALTS[2] + s2) % buckets
    return torch.stack([uni, bi, tri]), torch.stack([real, real & (t >= 1), real & (t >= 2)])


def ngram_logit(w: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor,
                neg_table: torch.Tensor | None = None, window: int = 0, parity: bool = False,
                first_word: bool = False, con_table: torch.Tensor | None = None,
                con_window: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(logit [B], per-token contributions [B, T]) of the n-gram weights ``w``."""
    h, valid = ngram_buckets(ids, lengths, w.shape[0], neg_table, window, parity, first_word,
                             con_table, con_window)
    contrib = (w[h] * valid).sum(0) / lengths.float().sqrt().unsqueeze(1)
    return contrib.sum(1), contrib


@dataclass
class NgramConfig(CadOptions):
    base: str = option("models/sentiment", "the trained sentiment model folder whose encoder "
                                           "the n-gram term is added to (kept frozen)")
    data: str = option("../shared/data/aclImdb_v1_labeled.tar.gz",
                       "the IMDB archive or extracted folder: a path or URL")
    out: str = option("", "output model folder (empty: a new runs/sentiment-<time> folder, "
                          "never the served models/)")
    replace_served: bool = option(False, "allow --out inside the served models/ folder")
    name: str = option("", "the model's name in the manifest (empty: the base model's name)")
    sha256: str | None = option(None, "expected sha256 of the data archive (checked when "
                                      "given)")
    buckets: int = option(2**21, "hashed n-gram buckets (weights in the graph)", at_least=1)
    weights_dtype: str = option("float16", "dtype of the n-gram table in the graph")
    epochs: int = option(6, "epochs of the n-gram logistic regression (best on validation "
                            "kept)", at_least=1)
    batch_size: int = option(64, "reviews per batch", at_least=1)
    lr: float = option(0.005, "Adam learning rate", at_least=0)
    weight_decay: float = option(1e-6, "Adam weight decay", at_least=0)
    augment: int = option(0, "negation-augmentation sentences added to the training split", at_least=0)
    augment_more: bool = option(False, "draw the augmentation from more frames too "
                                       "(training.augment.MORE_TEMPLATES)")
    augment_grammar: bool = option(False, "build half of the augmentation compositionally "
                                          "(training.augment.compose: negations counted)")
    negation_window: int = option(5, "words after a negator whose n-grams get buckets of "
                                     "their own (0: no negation scope)", at_least=0)
    negation_parity: bool = option(False, "in scope only after an odd number of negators in "
                                          "the window")
    negation_first_word: bool = option(False, "an n-gram's scope is its first word's (the "
                                              "negators before the n-gram) instead of its "
                                              "last word's")
    implicit_negators: bool = option(False, "words such as 'failed', 'lacks', 'impossible' "
                                            "open a negation scope too")
    contrast_window: int = option(0, "n-grams followed by a contrast word ('but', 'though', "
                                     "...) within this many words get buckets of their own "
                                     "(0: off)", at_least=0)
    short_data: bool = option(False, "add the training split of the human-rated short "
                                     "snippets (training/short_data.py: VADER's Amazon, "
                                     "movie and tweet sentences) to the term's training rows; "
                                     "their held-out split is scored, and joins the "
                                     "calibration as a group of its own")
    short_repeat: int = option(1, "with --short-data: each training snippet this many "
                                  "times an epoch", at_least=1)
    short_lexicon: bool = option(False, "with --short-data: add VADER's human-rated words "
                                        "(training/data/vader_words.tsv, one-word rows) to "
                                        "the training snippets, as often")
    blend_on: str = option("imdb", "rows the blend (a, s, c) is fitted on: 'imdb' (IMDB "
                                   "validation), 'imdb+cad' (and the CAD dev pairs, the "
                                   "two groups weighted equally) or 'imdb+short' (and the "
                                   "held-out snippets of --short-data, likewise)")
    calibrate: bool = option(False, "fit a temperature and a bias on validation (IMDB "
                                    "validation, the CAD dev pairs with --cad, the "
                                    "validation negation items; groups weighted equally) "
                                    "and fold them into the blend's constants, so the graph "
                                    "returns calibrated probabilities; manifest "
                                    "'calibration'")
    calibration_bias: bool = option(True, "with --calibrate: fit a bias beside the "
                                          "temperature (--no-calibration-bias: the "
                                          "temperature alone, which changes no answer)")
    uncalibrated_out: str = option("", "with --calibrate: also write the same graph "
                                       "without the calibration to this folder")
    val_fraction: float = option(0.1, "fraction of train held out for validation: must be the "
                                      "base model's split (same seed), which its encoder "
                                      "never trained on", above=0, below=1)
    seed: int = option(1234, "random seed (and the validation split's)")
    threads: int = option(1, "torch CPU threads", at_least=1)
    test: bool = option(True, "report test accuracy and the negation set (ONNX Runtime) at "
                              "the end")


def _batches(x: list[list[int]], y: list[int], size: int, shuffle: bool, seed: int):
    order = sorted(range(len(x)), key=lambda i: len(x[i]))
    chunks = [order[i : i + size] for i in range(0, len(order), size)]
    if shuffle:
        random.Random(seed).shuffle(chunks)
    for b in chunks:
        lens = torch.tensor([max(1, len(x[i])) for i in b])
        ids = torch.zeros(len(b), int(lens.max()), dtype=torch.long)
        for k, i in enumerate(b):
            ids[k, : len(x[i])] = torch.tensor(x[i] or [1])
        yield ids, lens, torch.tensor([float(y[i]) for i in b])


# the NgramConfig fields that define a fitted n-gram term (not where its data or output is)
TERM_FIELDS = ("buckets", "epochs", "batch_size", "lr", "weight_decay", "negation_window",
               "negation_parity", "negation_first_word", "implicit_negators", "contrast_window")


def term_settings(folder: str) -> dict:
    """The TERM_FIELDS of the n-gram term of the model in ``folder`` (from its manifest),
    to fit more n-gram models like it."""
    try:
        manifest = ModelFolder.open(folder).manifest
    except ModelFolderError as e:
        raise DataError(str(e)) from None
    if "ngram" not in manifest:
        raise DataError(f"{folder}: the model has no n-gram term to copy the settings of")
    training = manifest.get("training") or {}
    return {k: training[k] for k in TERM_FIELDS if k in training}


def scope_tables(cfg: NgramConfig, itos: list[str]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The negator and contrast tables ``cfg`` asks for over the vocabulary ``itos``
    (None for a scope that is off)."""
    neg = negator_table(itos, cfg.implicit_negators) if cfg.negation_window > 0 else None
    con = contrast_table(itos) if cfg.contrast_window > 0 else None
    return neg, con


def scope_of(cfg: NgramConfig, neg_table: torch.Tensor | None,
             con_table: torch.Tensor | None = None) -> dict:
    """``ngram_logit``'s scope arguments for ``cfg`` and the negator / contrast tables."""
    return {"neg_table": neg_table, "window": cfg.negation_window,
            "parity": cfg.negation_parity, "first_word": cfg.negation_first_word,
            "con_table": con_table, "con_window": cfg.contrast_window}


def fit_ngrams(cfg: NgramConfig, tr_x, tr_y, va_x, va_y, neg_table: torch.Tensor | None = None,
               with_bias: bool = False, con_table: torch.Tensor | None = None) -> tuple:
    """Logistic regression on the hashed n-grams (weights and a bias), best epoch on val:
    (weights, val accuracy, history), and the bias last when ``with_bias``."""
    scope = scope_of(cfg, neg_table, con_table)
    torch.manual_seed(cfg.seed)
    w = torch.zeros(cfg.buckets, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=cfg.lr, weight_decay=cfg.weight_decay)
    best, best_w, best_b, history = -1.0, None, 0.0, []
    for epoch in range(cfg.epochs):
        for ids, lens, y in _batches(tr_x, tr_y, cfg.batch_size, True, cfg.seed + epoch):
            logit, _ = ngram_logit(w, ids, lens, **scope)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logit + b, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            correct = sum(int(((ngram_logit(w, i, n, **scope)[0] + b) > 0)
                              .eq(y.bool()).sum())
                          for i, n, y in _batches(va_x, va_y, 256, False, 0))
        acc = correct / len(va_x)
        history.append({"epoch": epoch + 1, "val_accuracy": round(acc, 4)})
        print(f"n-grams epoch {epoch + 1}: val {acc:.4f}", flush=True)
        if acc > best:
            best, best_w, best_b = acc, w.detach().clone(), float(b.detach())
    return (best_w, best, history, best_b) if with_bias else (best_w, best, history)


def _ngram_logits(w: torch.Tensor, bias: float, x: list[list[int]], *scope_args,
                  **scope) -> np.ndarray:
    """The n-gram model's logit (with its bias) for each row of ``x``, in x's order
    (the scope as ``ngram_logit`` takes it)."""
    with torch.no_grad():
        logits = np.concatenate([ngram_logit(w, i, n, *scope_args, **scope)[0].numpy()
                                 for i, n, _ in _batches(x, [0] * len(x), 256, False, 0)])
    out = np.empty(len(x))
    out[sorted(range(len(x)), key=lambda i: len(x[i]))] = logits  # _batches sorts by length
    return out + bias


def out_of_fold_logits(tr_x: list[list[int]], tr_y: list[int], va_x: list[list[int]],
                       va_y: list[int], folds: int, neg_table: torch.Tensor | None,
                       cfg: NgramConfig | None = None, say=print,
                       extra_x: list[list[int]] = (), extra_y: list[int] = (),
                       con_table: torch.Tensor | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Stacking offsets for training an encoder as a residual to the n-gram model: each
    training row's n-gram logit from a model fitted on the OTHER ``folds - 1`` folds
    (never on the row itself, so the offset is as good on a training row as on an
    unseen review), and the mean of the fold models' logits on the validation rows.
    ``extra_x``/``extra_y`` (the augmentation) join every fold model's fit and get no
    offset of their own."""
    cfg = cfg or NgramConfig()
    if folds < 2:
        raise DataError("stacking needs at least 2 folds")
    idx = list(range(len(tr_x)))
    random.Random(cfg.seed).shuffle(idx)
    tr_off, va_off = np.zeros(len(tr_x)), np.zeros(len(va_x))
    scope = scope_of(cfg, neg_table, con_table)
    for k in range(folds):
        held = sorted(idx[k::folds])
        held_set = set(held)
        fit = [i for i in range(len(tr_x)) if i not in held_set]
        w, acc, _, bias = fit_ngrams(cfg, [tr_x[i] for i in fit] + list(extra_x),
                                     [tr_y[i] for i in fit] + list(extra_y),
                                     va_x, va_y, neg_table, with_bias=True,
                                     con_table=con_table)
        tr_off[held] = _ngram_logits(w, bias, [tr_x[i] for i in held], **scope)
        va_off += _ngram_logits(w, bias, va_x, **scope) / folds
        held_acc = float(((tr_off[held] > 0) == np.array([tr_y[i] for i in held], bool)).mean())
        say(f"n-gram fold {k + 1}/{folds}: val {acc:.4f}, held-out rows {held_acc:.4f}")
    return tr_off, va_off


def fit_blend(enc_logit: np.ndarray, ng_logit: np.ndarray, y: np.ndarray,
              weight: np.ndarray | None = None) -> tuple[float, float, float]:
    """a, s, c of sigmoid(a * encoder + s * ngrams + c), fitted on the validation split
    (each row's log loss times ``weight``, when given; the weights sum to one)."""
    X = torch.tensor(np.stack([enc_logit, ng_logit], 1), dtype=torch.float64)
    t = torch.tensor(y, dtype=torch.float64)
    wt = torch.tensor(np.full(len(y), 1 / len(y)) if weight is None else weight,
                      dtype=torch.float64)
    p = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([p], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(
            X @ p[:2] + p[2], t, reduction="none") * wt).sum()
        loss = loss + 1e-4 * (p[:2] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    a, s, c = (float(v) for v in p.detach())
    return a, s, c


def group_weights(groups: list[int]) -> np.ndarray:
    """Per row, 1 / (number of groups * rows of its group): each group weighs the same
    and the weights sum to one."""
    g = np.asarray(groups)
    counts = {k: int((g == k).sum()) for k in set(groups)}
    return np.array([1.0 / (len(counts) * counts[k]) for k in groups])


def fit_calibration(logit: np.ndarray, y: np.ndarray, weight: np.ndarray,
                    fit_bias: bool = True) -> tuple[float, float]:
    """(temperature T, bias b) of sigmoid(logit / T + b), minimising the weighted log
    loss (Platt scaling with one slope, Guo et al. 2017's temperature plus a bias);
    without ``fit_bias``, b = 0 and only T is fitted (no answer changes)."""
    z = torch.tensor(logit, dtype=torch.float64)
    t = torch.tensor(y, dtype=torch.float64)
    wt = torch.tensor(weight, dtype=torch.float64)
    p = torch.tensor([0.0, 0.0], dtype=torch.float64, requires_grad=True)  # log(1/T), b
    opt = torch.optim.LBFGS([p], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(
            z * p[0].exp() + (p[1] if fit_bias else 0.0), t, reduction="none") * wt).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return float(1.0 / p[0].detach().exp()), float(p[1].detach()) if fit_bias else 0.0


def _logit_tensor(graph: onnx.GraphProto) -> str:
    """The tensor the base graph's ``probability`` is the sigmoid of."""
    for node in graph.node:
        if node.op_type == "Sigmoid" and list(node.output) == ["probability"]:
            return node.input[0]
    raise ExportCheckError("base graph: no Sigmoid producing 'probability'")


def add_ngram_term(base: onnx.ModelProto, w: np.ndarray, a: float, c: float,
                   neg_table: np.ndarray | None = None, window: int = 0,
                   parity: bool = False, first_word: bool = False,
                   con_table: np.ndarray | None = None, con_window: int = 0) -> onnx.ModelProto:
    """The base graph with ``a * logit + ngram_logit(w) + c`` as its logit, and the
    per-token contributions as a third output. ``w`` is stored in its own dtype
    (float16 halves the folder: 2^21 buckets in 4 MB) and gathered rows are cast to
    float32 before any arithmetic. With ``neg_table`` and ``window`` > 0 the n-grams
    in a negator's scope take their own buckets, as in ``ngram_buckets`` (with
    ``first_word``, the bi- and trigram's scope is that of their first word); with
    ``con_table`` and ``con_window`` > 0 those followed by a contrast word too."""
    m = onnx.ModelProto()
    m.CopyFrom(base)
    g = m.graph
    enc = _logit_tensor(g)
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, dtype=np.int64), name)  # noqa: E731
    f32 = lambda name, v: numpy_helper.from_array(np.array(v, dtype=np.float32), name)  # noqa: E731
    g.initializer.extend([
        numpy_helper.from_array(w, "ng_w"),
        i64("ng_prime", PRIME), i64("ng_buckets", len(w)), i64("ng_salt1", SALTS[1]),
        i64("ng_salt2", SALTS[2]), i64("ng_zero", 0), i64("ng_one", 1), i64("ng_two", 2),
        i64("ng_s0", [0]), i64("ng_s1", [1]), i64("ng_ax1", [1]), i64("ng_ax0", [0]),
        i64("ng_end_m1", [-1]), f32("ng_a", a), f32("ng_c", c), f32("ng_zero_f", 0.0),
    ])
    n = helper.make_node
    added = [
        # previous ids (0 before the start): [B,T]
        n("Slice", ["input_ids", "ng_s0", "ng_s1", "ng_ax1"], ["ng_first"]),
        n("Mul", ["ng_first", "ng_zero"], ["ng_zcol"]),
        n("Slice", ["input_ids", "ng_s0", "ng_end_m1", "ng_ax1"], ["ng_head1"]),
        n("Concat", ["ng_zcol", "ng_head1"], ["ng_prev1"], axis=1),
        n("Slice", ["ng_prev1", "ng_s0", "ng_end_m1", "ng_ax1"], ["ng_head2"]),
        n("Concat", ["ng_zcol", "ng_head2"], ["ng_prev2"], axis=1),
    ]
    added += [
        # each n-gram's hash before the modulo: uni = id, bi = ng_b1, tri = ng_q3
        n("Mul", ["ng_prev1", "ng_prime"], ["ng_p1"]),
        n("Add", ["ng_p1", "input_ids"], ["ng_b0"]),
        n("Add", ["ng_b0", "ng_salt1"], ["ng_b1"]),
        n("Mul", ["ng_prev2", "ng_prime"], ["ng_p2"]),
        n("Add", ["ng_p2", "ng_prev1"], ["ng_q0"]),
        n("Mul", ["ng_q0", "ng_prime"], ["ng_q1"]),
        n("Add", ["ng_q1", "input_ids"], ["ng_q2"]),
        n("Add", ["ng_q2", "ng_salt2"], ["ng_q3"]),
    ]
    pre = ["input_ids", "ng_b1", "ng_q3"]
    if neg_table is not None and window > 0:
        # scope: a negator among the `window` previous words (the table, shifted right);
        # in scope, every hash moves by NEG_SALT
        g.initializer.extend([numpy_helper.from_array(neg_table.astype(np.int64), "ng_negtab"),
                              i64("ng_negsalt", NEG_SALT)])
        added.append(n("Gather", ["ng_negtab", "input_ids"], ["ng_neg0"], axis=0))
        for d in range(1, window + 1):
            added += [n("Slice", [f"ng_neg{d - 1}", "ng_s0", "ng_end_m1", "ng_ax1"],
                        [f"ng_neghead{d}"]),
                      n("Concat", ["ng_zcol", f"ng_neghead{d}"], [f"ng_neg{d}"], axis=1)]
        shifted = [f"ng_neg{d}" for d in range(1, window + 1)]
        if parity:  # (ONNX Sum takes floats only: a chain of integer Adds)
            count = shifted[0]
            for d, x in enumerate(shifted[1:], 2):
                added.append(n("Add", [count, x], [f"ng_negcount{d}"]))
                count = f"ng_negcount{d}"
            added.append(n("Mod", [count, "ng_two"], ["ng_scope"]))
        else:
            added.append(n("Max", shifted, ["ng_scope"]))
        added.append(n("Mul", ["ng_scope", "ng_negsalt"], ["ng_shift"]))
        shifts = ["ng_shift"] * 3
        if first_word:  # the bigram's scope one word back, the trigram's two
            added += [n("Slice", ["ng_shift", "ng_s0", "ng_end_m1", "ng_ax1"], ["ng_shifthead1"]),
                      n("Concat", ["ng_zcol", "ng_shifthead1"], ["ng_shift1"], axis=1),
                      n("Slice", ["ng_shift1", "ng_s0", "ng_end_m1", "ng_ax1"], ["ng_shifthead2"]),
                      n("Concat", ["ng_zcol", "ng_shifthead2"], ["ng_shift2"], axis=1)]
            shifts = ["ng_shift", "ng_shift1", "ng_shift2"]
        added += [n("Add", [x, sh], [f"{x}_neg"]) for x, sh in zip(pre, shifts, strict=True)]
        pre = [f"{x}_neg" for x in pre]
    if con_table is not None and con_window > 0:
        # a contrast word among the `con_window` next words (the table, shifted left,
        # zeros coming in at the end); in scope, every hash moves by CON_SALT
        g.initializer.extend([numpy_helper.from_array(con_table.astype(np.int64), "ng_contab"),
                              i64("ng_consalt", CON_SALT), i64("ng_end_max", [2**62])])
        added.append(n("Gather", ["ng_contab", "input_ids"], ["ng_con0"], axis=0))
        for d in range(1, con_window + 1):
            added += [n("Slice", [f"ng_con{d - 1}", "ng_s1", "ng_end_max", "ng_ax1"],
                        [f"ng_contail{d}"]),
                      n("Concat", [f"ng_contail{d}", "ng_zcol"], [f"ng_con{d}"], axis=1)]
        added += [n("Max", [f"ng_con{d}" for d in range(1, con_window + 1)], ["ng_cscope"]),
                  n("Mul", ["ng_cscope", "ng_consalt"], ["ng_cshift"])]
        added += [n("Add", [x, "ng_cshift"], [f"{x}_con"]) for x in pre]
        pre = [f"{x}_con" for x in pre]
    added += [
        # buckets of the uni-, bi- and trigram ending at each position
        n("Mod", [pre[0], "ng_buckets"], ["ng_h1"]),
        n("Mod", [pre[1], "ng_buckets"], ["ng_h2"]),
        n("Mod", [pre[2], "ng_buckets"], ["ng_h3"]),
        # which positions count: real tokens; bigrams from the 2nd, trigrams from the 3rd
        n("Shape", ["input_ids"], ["ng_shape"]),
        n("Gather", ["ng_shape", "ng_one"], ["ng_T"], axis=0),
        n("Range", ["ng_zero", "ng_T", "ng_one"], ["ng_t"]),
        n("Unsqueeze", ["ng_t", "ng_ax0"], ["ng_t_row"]),
        n("Unsqueeze", ["lengths", "ng_ax1"], ["ng_len_col"]),
        n("Less", ["ng_t_row", "ng_len_col"], ["ng_real"]),
        n("GreaterOrEqual", ["ng_t_row", "ng_one"], ["ng_ge1"]),
        n("GreaterOrEqual", ["ng_t_row", "ng_two"], ["ng_ge2"]),
        n("And", ["ng_real", "ng_ge1"], ["ng_m2"]),
        n("And", ["ng_real", "ng_ge2"], ["ng_m3"]),
        n("Gather", ["ng_w", "ng_h1"], ["ng_g1"]),
        n("Gather", ["ng_w", "ng_h2"], ["ng_g2"]),
        n("Gather", ["ng_w", "ng_h3"], ["ng_g3"]),
        n("Cast", ["ng_g1"], ["ng_w1"], to=TensorProto.FLOAT),
        n("Cast", ["ng_g2"], ["ng_w2"], to=TensorProto.FLOAT),
        n("Cast", ["ng_g3"], ["ng_w3"], to=TensorProto.FLOAT),
        n("Where", ["ng_real", "ng_w1", "ng_zero_f"], ["ng_v1"]),
        n("Where", ["ng_m2", "ng_w2", "ng_zero_f"], ["ng_v2"]),
        n("Where", ["ng_m3", "ng_w3", "ng_zero_f"], ["ng_v3"]),
        n("Sum", ["ng_v1", "ng_v2", "ng_v3"], ["ng_raw"]),
        # / sqrt(n): long reviews do not outvote the encoder by length alone
        n("Cast", ["ng_len_col"], ["ng_len_f"], to=TensorProto.FLOAT),
        n("Sqrt", ["ng_len_f"], ["ng_sqrt"]),
        n("Div", ["ng_raw", "ng_sqrt"], ["ngram_contributions"]),
        n("ReduceSum", ["ngram_contributions", "ng_ax1"], ["ng_sum"], keepdims=0),
        n("Mul", [enc, "ng_a"], ["ng_enc_scaled"]),
        n("Add", ["ng_enc_scaled", "ng_sum"], ["ng_partial"]),
        n("Add", ["ng_partial", "ng_c"], ["ng_total_logit"]),
    ]
    nodes = []  # the new nodes go just before the final sigmoid (topological order)
    for node in g.node:
        if node.op_type == "Sigmoid" and list(node.output) == ["probability"]:
            nodes += added
            node.input[0] = "ng_total_logit"
        nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    g.output.append(helper.make_tensor_value_info("ngram_contributions", TensorProto.FLOAT,
                                                  ["batch", "time"]))
    g.name = g.name + "_with_ngrams"
    onnx.checker.check_model(m, full_check=True)
    return m


def _plant(ids: np.ndarray, lengths: list[int], table: np.ndarray | None, every: int,
           seed: int) -> None:
    """Make every ``every``-th real token of each row (from a random offset) one of the
    words ``table`` marks, in place."""
    words = np.flatnonzero(table) if table is not None else []
    if not len(words):
        return
    rng = np.random.default_rng(seed)
    for b, n_ in enumerate(lengths):
        at = np.arange(rng.integers(0, every), n_, every)
        ids[b, at] = rng.choice(words, len(at))


def check_ngram_graph(m: onnx.ModelProto, base: onnx.ModelProto, w: np.ndarray, a: float,
                      c: float, vocab: int, neg_table: np.ndarray | None = None,
                      window: int = 0, parity: bool = False, first_word: bool = False,
                      con_table: np.ndarray | None = None, con_window: int = 0) -> dict:
    """Parity with the torch formula on a padded batch, and batch invariance. With a
    negator table, every third real token of the batch is made a negator (with a
    contrast table, every fifth a contrast word), so the scopes (single, double, parity,
    contrast) are exercised, not left to chance."""
    sess, sess_base = ort_session(m.SerializeToString()), ort_session(base.SerializeToString())
    lengths = [7, 1, 23, 64, 3, 2, 40]
    ids, lens = random_padded_batch(lengths, vocab, 0)
    _plant(ids, lengths, neg_table, every=3, seed=1)
    _plant(ids, lengths, con_table, every=5, seed=2)
    p, att, contrib = sess.run(None, {"input_ids": ids, "lengths": lens})
    p0, att0 = sess_base.run(None, {"input_ids": ids, "lengths": lens})
    ng, ref_contrib = ngram_logit(torch.from_numpy(w.astype(np.float32)), torch.from_numpy(ids),
                                  torch.from_numpy(lens),
                                  None if neg_table is None else torch.from_numpy(neg_table),
                                  window, parity, first_word,
                                  None if con_table is None else torch.from_numpy(con_table),
                                  con_window)
    enc = np.log(p0) - np.log1p(-p0)
    ref = 1 / (1 + np.exp(-(a * enc + ng.numpy() + c)))
    diff = float(max(np.abs(ref - p).max(), np.abs(contrib - ref_contrib.numpy()).max(),
                     np.abs(att - att0).max()))
    invariance = 0.0
    for b, n_ in enumerate(lengths):
        p1, a1, c1 = sess.run(None, {"input_ids": ids[b : b + 1, :n_], "lengths": lens[b : b + 1]})
        invariance = max(invariance, float(abs(p1[0] - p[b])),
                         float(np.abs(c1[0] - contrib[b, :n_]).max()),
                         float(np.abs(contrib[b, n_:]).max(initial=0.0)))
    res = {"ngram_vs_torch_max_abs_diff": diff, "row_alone_vs_batch_max_abs_diff": invariance,
           "batch_lengths": lengths}
    if diff > 1e-4 or invariance > INVARIANCE_TOL:
        raise ExportCheckError(f"n-gram export check failed: {res}")
    return res


def _encoder_logits(base: bytes, tok: WordTokenizer, texts: list[str]) -> np.ndarray:
    p, _ = sentiment_probabilities_onnx(base, tok, texts)
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def load_base(cfg: NgramConfig) -> tuple[ModelFolder, onnx.ModelProto, WordTokenizer]:
    """The encoder-only model folder ``--base``: its folder, graph and vocabulary."""
    try:
        folder = ModelFolder.open(cfg.base)
        graph_bytes = folder.graph_bytes()
    except ModelFolderError as e:
        raise DataError(f"{e}; pass --base") from None
    if "ngram" in folder.manifest:
        raise DataError(f"{folder.path} already has an n-gram term; pass the encoder-only model")
    return folder, onnx.load_from_string(graph_bytes), WordTokenizer.load(folder.vocab_path)


def ngram_rows(cfg: NgramConfig, tok: WordTokenizer, split: CadSplits
               ) -> tuple[list, list[int], list, list[int], list[str]]:
    """(train ids, train labels, validation ids, validation labels, validation texts):
    training is the reviews, the augmentation, then the CAD train pairs; validation the
    IMDB reviews, then the CAD dev pairs."""
    val_set = split.validation + split.dev_pairs
    tr_x = [tok.encode(r.text, offsets=False).ids for r in split.train]
    va_x = [tok.encode(r.text, offsets=False).ids for r in val_set]
    tr_y, va_y = [r.label for r in split.train], [r.label for r in val_set]
    if cfg.augment > 0:  # training split only: validation and test stay pure IMDB
        extra = generate(cfg.augment, cfg.seed, more=cfg.augment_more,
                         grammar=cfg.augment_grammar)
        tr_x += [tok.encode(t, offsets=False).ids for t, _ in extra]
        tr_y += [y for _, y in extra]
    tr_x += [tok.encode(r.text, offsets=False).ids for r in split.train_pairs]
    tr_y += [r.label for r in split.train_pairs]
    if cfg.short_data:  # human-rated short snippets (training/short_data.py), train split
        from training.short_data import load as load_snippets

        snippets = load_snippets("train")
        if cfg.short_lexicon:
            from training.short_data import load_words

            snippets = snippets + load_words()
        tr_x += [tok.encode(t, offsets=False).ids for t, _ in snippets] * cfg.short_repeat
        tr_y += [y for _, y in snippets] * cfg.short_repeat
    return tr_x, tr_y, va_x, va_y, [r.text for r in val_set]


@dataclass
class Blend:
    """The fitted term and how it joins the encoder: ``a * encoder + s * ngrams(w) + c``
    (after a calibration, its temperature and bias folded in)."""

    w: torch.Tensor
    a: float
    s: float
    c: float
    logit: np.ndarray  # the blend's validation logits
    calibration: dict | None = None
    uncalibrated: onnx.ModelProto | None = None  # the graph before it (--uncalibrated-out)


def calibrate(cfg: NgramConfig, blend: Blend, base: onnx.ModelProto, tok: WordTokenizer,
              va_y: list[int], groups: list[int], scope: dict, graph_scope: dict,
              short: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> Blend:
    """``--calibrate``: a temperature (and with ``--calibration-bias`` a bias) fitted on
    validation and the validation negation items, each group weighted equally, folded
    into the blend's constants."""
    a, s, c, w = blend.a, blend.s, blend.c, blend.w
    n_imdb_val = groups.count(0)
    items = load_negation_set(NEGATION_VAL)
    texts = [i["text"] for i in items]
    neg_y = np.array([int(i["label"] == "positive") for i in items])
    neg_logit = (a * _encoder_logits(base.SerializeToString(), tok, texts)
                 + s * _ngram_logits(w, 0.0, [tok.encode(t, offsets=False).ids
                                              for t in texts], **scope) + c)
    z = np.concatenate([blend.logit, neg_logit])
    yy = np.concatenate([np.array(va_y), neg_y])
    cal_groups = groups + [2] * len(items)
    n_short = 0
    if short is not None:  # the held-out snippets: a fourth group
        enc_s, ng_s, y_s = short
        n_short = len(y_s)
        z = np.concatenate([z, a * enc_s + s * ng_s + c])
        yy = np.concatenate([yy, y_s])
        cal_groups += [3] * n_short
    T, b = fit_calibration(z, yy, group_weights(cal_groups), cfg.calibration_bias)
    ece = {}
    for name, zz in (("before", z), ("after", z / T + b)):
        pp = 1 / (1 + np.exp(-zz))
        ece[name] = {"imdb_validation": expected_calibration_error(
            pp[:n_imdb_val], yy[:n_imdb_val])}
        if len(groups) > n_imdb_val:
            rev = np.arange(n_imdb_val + 1, len(groups), 2)  # pair_rows: orig, rev
            ece[name]["cad_dev_revisions"] = expected_calibration_error(pp[rev], yy[rev])
        ece[name]["negation_validation_items"] = expected_calibration_error(
            pp[len(groups):len(groups) + len(items)], neg_y)
        if n_short:
            ece[name]["short_snippets_validation"] = expected_calibration_error(
                pp[len(groups) + len(items):], yy[len(groups) + len(items):])
    calibration = {"temperature": T, "bias": b,
                   "method": ("sigmoid(logit / T + b)" if cfg.calibration_bias else
                              "sigmoid(logit / T), the temperature alone")
                   + ", folded into the blend's constants (encoder_scale, ngram_scale, bias)",
                   "fitted_on": {"imdb_validation": n_imdb_val,
                                 "cad_dev_reviews": len(groups) - n_imdb_val,
                                 "negation_validation_items": len(items),
                                 **({"short_snippets_validation": n_short} if n_short else {}),
                                 "weights": "each group equally"},
                   "ece_15_bins_validation": ece,
                   "uncalibrated": {"encoder_scale": a, "ngram_scale": s, "bias": c}}
    print(f"calibration: T {T:.3f} b {b:.3f} {json.dumps(ece)}", flush=True)
    uncal = None
    if cfg.uncalibrated_out:
        w_unc = (w * s).numpy().astype(np.dtype(cfg.weights_dtype))
        uncal = add_ngram_term(base, w_unc, a, c, **graph_scope)
    return Blend(w, a / T, s / T, c / T + b, z[: len(groups)] / T + b, calibration, uncal)


def ngram_metrics(cfg: NgramConfig, graph: onnx.ModelProto, tok: WordTokenizer, blend: Blend,
                  enc_val: np.ndarray, ng_val: float, va_y: list[int], n_imdb_val: int,
                  split: CadSplits, test: list) -> dict:
    """Validation accuracy of the blend, the encoder and the n-grams alone, the CAD dev
    pairs' figures, and with ``--test`` the test split and the negation set."""
    truth = np.array(va_y, bool)
    imdb = slice(0, n_imdb_val)
    metrics: dict = {"val_accuracy": round(float(((blend.logit[imdb] > 0) == truth[imdb]).mean()), 4),
                     "val_accuracy_encoder_only": round(
                         float(((enc_val[imdb] > 0) == truth[imdb]).mean()), 4),
                     "val_accuracy_ngrams_only": round(ng_val, 4)}
    if split.dev_pairs:
        dev = split.pairs["dev"]
        pv = 1 / (1 + np.exp(-blend.logit[n_imdb_val:]))
        metrics["cad_dev"] = pair_metrics(pv[0::2], pv[1::2], dev)
        metrics["cad_dev"]["ece_revisions"] = expected_calibration_error(
            pv[1::2], np.array([p.revised.label for p in dev]))
        metrics["cad_dev_encoder_only"] = pair_metrics(
            enc_val[n_imdb_val::2] > 0, enc_val[n_imdb_val + 1::2] > 0, dev)
        metrics["val_accuracy_ngrams_only_note"] = ("the n-gram fit's epoch pick, on IMDB "
                                                    "validation + the CAD dev pairs")
    if cfg.test:
        metrics.update(sentiment_accuracy_onnx(graph.SerializeToString(), tok, test))
        neg = negation_accuracy_onnx(graph.SerializeToString(), tok, load_negation_set())
        metrics.update(negation_accuracy=neg["negation_accuracy"],
                       negation_by_kind={k: v["accuracy"] for k, v in neg["by_kind"].items()})
    return metrics


def ngram_record(cfg: NgramConfig, blend: Blend, itos: list[str], table: np.ndarray | None,
                 con: np.ndarray | None) -> dict:
    """The manifest's ``ngram``: how the service's graph computes the term."""
    def words(flags: np.ndarray) -> list[str]:
        return [w_ for w_, f in zip(itos, flags, strict=True) if f]

    return {"buckets": cfg.buckets, "prime": PRIME, "salts": list(SALTS),
            "negation": ({"window": cfg.negation_window, "parity": cfg.negation_parity,
                          "salt": NEG_SALT,
                          "scope_from": "first_word" if cfg.negation_first_word else "last_word",
                          "negators": words(table)} if table is not None else None),
            "contrast": ({"window": cfg.contrast_window, "salt": CON_SALT, "words": words(con)}
                         if con is not None else None),
            "encoder_scale": blend.a, "ngram_scale": blend.s, "bias": blend.c,
            "contributions_output": "ngram_contributions"}


def train(cfg: NgramConfig) -> dict:
    out = run_folder(cfg.out, "sentiment", cfg.replace_served)
    torch.set_num_threads(cfg.threads)
    t0 = time.time()
    folder, base, tok = load_base(cfg)
    data = load_imdb(cfg.data, cfg.sha256)
    split = with_cad(cfg, *split_train_val(data["train"], cfg.val_fraction, cfg.seed))
    tr_x, tr_y, va_x, va_y, va_texts = ngram_rows(cfg, tok, split)
    table, con = scope_tables(cfg, tok.itos)
    # the scope twice: torch tables for the fit, numpy ones for the graph
    scope = scope_of(cfg, *(None if t is None else torch.from_numpy(t) for t in (table, con)))
    graph_scope = {**scope, "neg_table": table, "con_table": con}
    w, ng_val, history = fit_ngrams(cfg, tr_x, tr_y, va_x, va_y, scope["neg_table"],
                                    con_table=scope["con_table"])
    enc_val = _encoder_logits(base.SerializeToString(), tok, va_texts)
    ng_val_ordered = _ngram_logits(w, 0.0, va_x, **scope)  # the blend fits its bias
    n_imdb_val = len(split.validation)
    groups = [0] * n_imdb_val + [1] * len(split.dev_pairs)
    short = None
    if cfg.short_data:  # the held-out snippets: scored, and a calibration group
        from training.short_data import load as load_snippets

        sv = load_snippets("val")
        short = (_encoder_logits(base.SerializeToString(), tok, [t for t, _ in sv]),
                 _ngram_logits(w, 0.0, [tok.encode(t, offsets=False).ids for t, _ in sv],
                               **scope),
                 np.array([y for _, y in sv]))
    if cfg.blend_on == "imdb+short":
        if short is None:
            raise DataError("--blend-on imdb+short needs --short-data")
        n_s = len(short[2])
        a, s, c = fit_blend(np.concatenate([enc_val[:n_imdb_val], short[0]]),
                            np.concatenate([ng_val_ordered[:n_imdb_val], short[1]]),
                            np.concatenate([np.array(va_y[:n_imdb_val]), short[2]]),
                            group_weights([0] * n_imdb_val + [3] * n_s))
    else:
        bw = (np.array([1.0 / n_imdb_val if g == 0 else 0.0 for g in groups])
              if cfg.blend_on == "imdb" else group_weights(groups))
        a, s, c = fit_blend(enc_val, ng_val_ordered, np.array(va_y), bw)
    blend = Blend(w, a, s, c, a * enc_val + s * ng_val_ordered + c)
    raw = (a, s, c)
    if cfg.calibrate:
        blend = calibrate(cfg, blend, base, tok, va_y, groups, scope, graph_scope, short)
    w_scaled = (w * blend.s).numpy().astype(np.dtype(cfg.weights_dtype))
    graph = add_ngram_term(base, w_scaled, blend.a, blend.c, **graph_scope)
    checks = check_ngram_graph(graph, base, w_scaled, blend.a, blend.c, tok.vocab_size,
                               **graph_scope)
    metrics = ngram_metrics(cfg, graph, tok, blend, enc_val, ng_val, va_y, n_imdb_val, split,
                            data["test"])
    if short is not None:
        enc_s, ng_s, y_s = short
        zs = blend.a * enc_s + blend.s * ng_s + blend.c
        metrics["short_snippets_validation"] = {
            "snippets": len(y_s),
            "accuracy": round(float(((zs > 0) == y_s.astype(bool)).mean()), 4),
            "accuracy_encoder_only": round(float(((enc_s > 0) == y_s.astype(bool)).mean()), 4),
            "accuracy_blend_before_calibration": round(float(
                ((raw[0] * enc_s + raw[1] * ng_s + raw[2] > 0) == y_s.astype(bool)).mean()), 4),
            "ece": expected_calibration_error(1 / (1 + np.exp(-zs)), y_s)}
    base_manifest = folder.manifest
    manifest = {
        **{k: base_manifest[k] for k in ("labels", "cell") if k in base_manifest},
        "name": cfg.name or base_manifest.get("name", "sentiment"),
        "version": base_manifest["version"].split("+")[0] + ".ngrams",
        "task": "text-classification",
        "architecture": f"{base_manifest.get('architecture', 'recurrent encoder')} "
                        f"+ hashed uni/bi/trigram linear term ({cfg.buckets} buckets)",
        "parameters": int(base_manifest.get("parameters") or 0) + cfg.buckets + 2,
        "ngram": ngram_record(cfg, blend, tok.itos, table, con),
        "data": {**source_record(cfg.data), "train": len(tr_x), "validation": len(va_x),
                 **({"cad": split.record} if split.record else {}),
                 "validation_split": f"{cfg.val_fraction:.0%} of train, seed {cfg.seed}",
                 "test": len(data["test"])},
        **({"calibration": blend.calibration} if blend.calibration else {}),
        "training": {**asdict(cfg), "base": base_manifest.get("version"), "history": history,
                     "base_training": base_manifest.get("training"),
                     "minutes": round((time.time() - t0) / 60, 1), "torch": torch.__version__},
        "metrics": metrics,
        "export_checks": {**base_manifest.get("export_checks", {}), "ngram": checks},
    }
    write_model_folder(out, graph, tok, manifest)
    if blend.uncalibrated is not None:
        unc = run_folder(cfg.uncalibrated_out, "sentiment", cfg.replace_served)
        u = blend.calibration["uncalibrated"]
        write_model_folder(unc, blend.uncalibrated, tok, {
            **{k: v for k, v in manifest.items() if k != "calibration"},
            "version": manifest["version"] + ".uncalibrated",
            "ngram": {**manifest["ngram"], "encoder_scale": u["encoder_scale"],
                      "ngram_scale": u["ngram_scale"], "bias": u["bias"]},
            "metrics": {}, "note": f"{out} without its calibration (for the before figures)"})
    print(json.dumps({"out": str(out), "metrics": metrics, "blend": [blend.a, blend.s, blend.c],
                      "export": checks}))
    return manifest


def main(argv: list[str] | None = None) -> int:
    return command_line(NgramConfig, train, __doc__, argv,
                        choices={"weights_dtype": ("float16", "float32"),
                                 "blend_on": ("imdb", "imdb+cad", "imdb+short")})


if __name__ == "__main__":
    raise SystemExit(main())
