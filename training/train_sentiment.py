"""Train the IMDB sentiment classifier (biLSTM + dot-product attention), export to ONNX.

    python -m training.train_sentiment --data ../shared/data/aclImdb_v1_labeled.tar.gz \
        --out models/sentiment --replace-served

Recipe (defaults reproduce the committed model): the tokenizer of app/tokenizer.py,
a 20k-word vocabulary from the training split, reviews up to 800 tokens (98 % of
IMDB reviews fit; longer ones keep their first 200 and last 600 tokens), Embedding
128 -> biLSTM 128 -> attention -> dense. The embedding starts from the training
split itself: dimension 0 holds each word's naive-Bayes log-count ratio (Wang &
Manning 2012), the other 127 a skip-gram word2vec trained on the training reviews
(gensim, one worker, seeded). Word dropout 0.1, embedding dropout 0.3, output dropout
0.5, an exponential moving average of the weights (0.99) is what gets evaluated and
exported. Batches are grouped by length so padding costs little. Adam with cosine
decay, gradient clip 1, early stopping on the validation split (10 % of train, fixed
seed). The final accuracy on the 25,000-review test split is computed through ONNX
Runtime on the exported graph (README "Training" has the ablation).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from tqdm import tqdm

from seqcore.tokenizer import WordTokenizer, tokenize
from training.augment import generate
from training.data import DataError, load_imdb, source_record, split_train_val
from training.evaluate import load_negation_set, negation_accuracy_onnx, sentiment_accuracy_onnx
from training.export import (
    SentimentEnsemble,
    build_sentiment_ensemble_graph,
    build_sentiment_graph,
    check_sentiment,
    sentiment_from_graph,
)
from training.manifest import OutputError, run_folder, write_model_folder
from training.models import CELLS, SentimentConfig, SentimentLSTM


@dataclass
class TrainConfig:
    data: str = "../shared/data/aclImdb_v1_labeled.tar.gz"
    out: str = ""  # default: a new runs/sentiment-<time> folder, never the served models/
    replace_served: bool = False  # allow --out inside the served models/ folder
    name: str = "sentiment"  # the model's name in the manifest (requests' `model` field)
    cell: str = "lstm"  # recurrent cell: lstm | gru | rnn
    sha256: str | None = None
    init_from: str = ""  # a model folder: start from its vocabulary and weights (fine-tune)
    augment: int = 0  # negation-augmentation sentences added to the training split
    max_vocab: int = 20000
    min_count: int = 2
    max_len: int = 800
    head_len: int = 200
    emb_dim: int = 128
    hidden: int = 128
    emb_dropout: float = 0.3
    out_dropout: float = 0.5
    batch_size: int = 64
    lr: float = 1e-3
    lr_min: float = 5e-5
    weight_decay: float = 0.0
    word_dropout: float = 0.1  # fraction of training tokens replaced by <unk>
    ema: float = 0.99  # if > 0, evaluate/export an exponential moving average of the weights
    members: int = 1  # > 1: train that many seeds and export the mean of their outputs
    nb_init: float = 1.0  # > 0: embedding dim 0 starts as the words' NB log-count ratio
    w2v_epochs: int = 5  # > 0: other embedding dims start from word2vec on the train split
    clip: float = 1.0
    epochs: int = 6
    patience: int = 2
    val_fraction: float = 0.1
    seed: int = 1234
    threads: int = 1
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda
    max_minutes: float = 40.0
    test: bool = True  # report test accuracy (ONNX Runtime) at the end


def length_batches(lengths: list[int], batch_size: int, rng: random.Random,
                   pool: int = 50) -> list[list[int]]:
    """Shuffle, then sort within pools of ``pool`` batches by length: batches of
    similar lengths (little padding) in random order."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    batches = []
    span = batch_size * pool
    for i in range(0, len(idx), span):
        chunk = sorted(idx[i : i + span], key=lambda j: lengths[j])
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lens = [max(1, len(s)) for s in seqs]
    ids = torch.zeros(len(seqs), max(lens), dtype=torch.long)
    for b, s in enumerate(seqs):
        if s:
            ids[b, : len(s)] = torch.tensor(s)
        else:
            ids[b, 0] = 1  # an empty review reads as one unknown token
    return ids, torch.tensor(lens)


def evaluate_torch(model: torch.nn.Module, seqs: list[list[int]], labels: list[int],
                   batch_size: int = 128) -> tuple[float, float]:
    model.eval()
    dev = next(model.parameters()).device
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    correct, loss = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(order), batch_size):
            b = order[i : i + batch_size]
            ids, lens = collate([seqs[j] for j in b])
            y = torch.tensor([labels[j] for j in b], dtype=torch.float, device=dev)
            logit, _ = model(ids.to(dev), lens.to(dev))
            loss += float(F.binary_cross_entropy_with_logits(logit, y, reduction="sum"))
            correct += int(((logit > 0).float() == y).sum())
    return correct / len(seqs), loss / len(seqs)


def word2vec_init(texts: list[list[str]], tok: WordTokenizer, dim: int, epochs: int,
                  seed: int) -> torch.Tensor:
    """Skip-gram word2vec (gensim, one worker: deterministic) trained on the training
    split's own reviews, scaled to unit standard deviation like nn.Embedding's init.
    Words word2vec dropped keep a random vector."""
    import zlib

    from gensim.models import Word2Vec

    w2v = Word2Vec(texts, vector_size=dim, window=5, min_count=1, sg=1, negative=5,
                   epochs=epochs, workers=1, seed=seed,
                   hashfxn=lambda s: zlib.crc32(s.encode()))
    g = torch.Generator().manual_seed(seed)
    out = torch.randn(tok.vocab_size, dim, generator=g)
    known = [i for i, w in enumerate(tok.itos) if w in w2v.wv.key_to_index]
    vecs = torch.tensor(np.stack([w2v.wv[tok.itos[i]] for i in known]))
    out[known] = vecs / vecs.std()
    print(f"word2vec: {len(known)} of {tok.vocab_size} words, {epochs} epochs", flush=True)
    return out


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def nb_log_count_ratio(seqs: list[list[int]], labels: list[int], vocab: int) -> torch.Tensor:
    """r_w = log p(w | positive) - log p(w | negative), add-one smoothed, scaled to unit
    standard deviation (Wang & Manning 2012): a per-word polarity prior taken from the
    training split only."""
    counts = np.ones((2, vocab))
    for s_, y in zip(seqs, labels, strict=True):
        np.add.at(counts[y], np.unique(s_), 1.0)  # binarised per review
    r = np.log(counts[1] / counts[1].sum()) - np.log(counts[0] / counts[0].sum())
    return torch.tensor(r / r.std(), dtype=torch.float)


def train_member(cfg: TrainConfig, seed: int, tok: WordTokenizer, tr_x: list[list[int]],
                 tr_y: list[int], va_x: list[list[int]], va_y: list[int], t_start: float,
                 minutes: float, w2v: torch.Tensor | None = None,
                 init: SentimentLSTM | None = None
                 ) -> tuple[SentimentLSTM, float, int, list[dict]]:
    """Train one model with ``seed`` (from ``init``'s weights when given); returns the
    best-validation weights."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    mcfg = SentimentConfig(vocab_size=tok.vocab_size, emb_dim=cfg.emb_dim, hidden=cfg.hidden,
                           emb_dropout=cfg.emb_dropout, out_dropout=cfg.out_dropout,
                           cell=cfg.cell)
    model = SentimentLSTM(mcfg)
    dev = pick_device(cfg.device)
    if init is not None:
        model.load_state_dict(init.state_dict())
    elif w2v is not None:
        with torch.no_grad():
            model.embedding.weight[:, -w2v.shape[1]:] = w2v
    if cfg.nb_init > 0 and init is None:
        with torch.no_grad():
            model.embedding.weight[:, 0] = nb_log_count_ratio(tr_x, tr_y, tok.vocab_size) * cfg.nb_init
            model.embedding.weight[tok.pad_id] = 0.0
    model.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(tr_x) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    best, best_state, best_epoch, history, step = -1.0, None, 0, [], 0
    ema = (torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema))
        if cfg.ema > 0 else None)
    lengths = [len(s) for s in tr_x]
    m_start = time.time()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0, tot = time.time(), 0.0
        batches = length_batches(lengths, cfg.batch_size, rng)
        for b in tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=not sys.stderr.isatty()):
            ids, lens = collate([tr_x[j] for j in b])
            if cfg.word_dropout > 0:
                drop = (torch.rand(ids.shape) < cfg.word_dropout) & (ids != tok.pad_id)
                ids = ids.masked_fill(drop, tok.unk_id)
            y = torch.tensor([tr_y[j] for j in b], dtype=torch.float, device=dev)
            ids, lens = ids.to(dev), lens.to(dev)
            lr = cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * step / total))
            for g in opt.param_groups:
                g["lr"] = lr
            logit, _ = model(ids, lens)
            loss = F.binary_cross_entropy_with_logits(logit, y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
            tot += loss.item()
            step += 1
        eval_model = ema.module if ema is not None else model
        acc, vloss = evaluate_torch(eval_model, va_x, va_y)
        history.append({"epoch": epoch, "train_loss": round(tot / len(batches), 4),
                        "val_accuracy": round(acc, 4), "val_loss": round(vloss, 4),
                        "seconds": round(time.time() - t0, 1)})
        print(f"[seed {seed}] epoch {epoch} train loss {tot / len(batches):.4f} val acc "
              f"{acc:.4f} val loss {vloss:.4f} lr {lr:.1e} {time.time() - t0:.0f}s", flush=True)
        if acc > best:
            best, best_epoch = acc, epoch
            best_state = {k: v.detach().clone() for k, v in eval_model.state_dict().items()}
        elif epoch - best_epoch >= cfg.patience:
            print(f"early stop: no improvement for {cfg.patience} epochs", flush=True)
            break
        if (time.time() - m_start) / 60 > minutes or (time.time() - t_start) / 60 > cfg.max_minutes:
            print("time budget reached", flush=True)
            break
    model.load_state_dict(best_state)
    model.cpu().eval()  # export and checks run on the CPU
    return model, best, best_epoch, history


def load_init(cfg: TrainConfig) -> tuple[WordTokenizer, SentimentLSTM]:
    """The vocabulary and weights of the model folder ``cfg.init_from``; the model's
    shape settings in ``cfg`` are set from it."""
    folder = Path(cfg.init_from)
    manifest = json.loads((folder / "manifest.json").read_text()) if (
        folder / "manifest.json").is_file() else {}
    if "ngram" in manifest:
        raise DataError(f"{folder} has an n-gram term; start from its encoder-only model")
    if not (folder / "model.onnx").is_file():
        raise DataError(f"--init-from {folder}: no model.onnx there")
    model = sentiment_from_graph(onnx.load(str(folder / "model.onnx")), cfg.emb_dropout,
                                 cfg.out_dropout)
    tok = WordTokenizer.load(folder / "vocab.json")
    cfg.emb_dim, cfg.hidden, cfg.cell = model.cfg.emb_dim, model.cfg.hidden, model.cfg.cell
    cfg.max_len, cfg.head_len = tok.max_len, tok.head_len
    return tok, model


def train(cfg: TrainConfig) -> dict:
    out = run_folder(cfg.out, "sentiment", cfg.replace_served)  # refused before any work
    np.random.seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    t_start = time.time()
    data = load_imdb(cfg.data, cfg.sha256)
    train_set, val_set = split_train_val(data["train"], cfg.val_fraction, cfg.seed)
    init = None
    if cfg.init_from:
        tok, init = load_init(cfg)
    else:
        tok = WordTokenizer.build((r.text for r in train_set), cfg.max_vocab, cfg.min_count,
                                  cfg.max_len, cfg.head_len)
    tr_x = [tok.encode(r.text).ids for r in train_set]
    tr_y = [r.label for r in train_set]
    if cfg.augment > 0:  # training split only: validation and test stay pure IMDB
        extra = generate(cfg.augment, cfg.seed)
        tr_x += [tok.encode(t).ids for t, _ in extra]
        tr_y += [y for _, y in extra]
        print(f"negation augmentation: {len(extra)} sentences", flush=True)
    va_x = [tok.encode(r.text).ids for r in val_set]
    va_y = [r.label for r in val_set]
    print(f"sentiment: vocab {tok.vocab_size}, train {len(tr_x)}, val {len(va_x)}, "
          f"{cfg.members} member(s)", flush=True)
    w2v = None
    if cfg.w2v_epochs > 0 and init is None:
        dim = cfg.emb_dim - (1 if cfg.nb_init > 0 else 0)
        w2v = word2vec_init([[t.text for t in tokenize(r.text)] for r in train_set], tok, dim,
                            cfg.w2v_epochs, cfg.seed)
    members, member_info = [], []
    for i in range(cfg.members):
        minutes = (cfg.max_minutes - (time.time() - t_start) / 60) / (cfg.members - i)
        model, best, best_epoch, history = train_member(
            cfg, cfg.seed + i, tok, tr_x, tr_y, va_x, va_y, t_start, minutes, w2v, init)
        members.append(model)
        member_info.append({"seed": cfg.seed + i, "val_accuracy": round(best, 4),
                            "best_epoch": best_epoch, "history": history})
    if len(members) == 1:
        model = members[0]
        graph = build_sentiment_graph(model)
    else:
        model = SentimentEnsemble(members).eval()
        graph = build_sentiment_ensemble_graph(model)
    checks = check_sentiment(model, graph)
    val_acc, _ = evaluate_torch(model, va_x, va_y)
    n_params = sum(p.numel() for p in model.parameters())
    metrics: dict = {"val_accuracy": round(val_acc, 4)}
    if cfg.test:
        metrics.update(sentiment_accuracy_onnx(graph.SerializeToString(), tok, data["test"]))
        neg = negation_accuracy_onnx(graph.SerializeToString(), tok, load_negation_set())
        metrics.update(negation_accuracy=neg["negation_accuracy"],
                       negation_by_kind={k: v["accuracy"] for k, v in neg["by_kind"].items()})
    arch = f"bi{cfg.cell.upper()} {cfg.hidden} + dot-product attention, embedding {cfg.emb_dim}"
    if cfg.members > 1:
        arch = f"mean of {cfg.members} x ({arch}), one vocabulary"
    manifest = {
        "name": cfg.name,
        "version": f"1.{cfg.members}.{cfg.seed}",
        "task": "text-classification",
        "cell": cfg.cell,
        "labels": ["negative", "positive"],
        "architecture": arch,
        "parameters": n_params,
        "data": {**source_record(cfg.data), "train": len(tr_x), "validation": len(va_x),
                 "validation_split": f"{cfg.val_fraction:.0%} of train, seed {cfg.seed}",
                 "test": len(data["test"])},
        "training": {**asdict(cfg), "members_trained": member_info,
                     "minutes": round((time.time() - t_start) / 60, 1), "torch": torch.__version__},
        "metrics": metrics,
        "export_checks": checks,
    }
    write_model_folder(out, graph, tok, manifest)
    print(json.dumps({"out": str(out), "metrics": metrics, "members": member_info and
                      [{k: m[k] for k in ("seed", "val_accuracy", "best_epoch")}
                       for m in member_info], "export": checks}))
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for k, v in asdict(TrainConfig()).items():
        if isinstance(v, bool):
            p.add_argument("--" + k.replace("_", "-"), dest=k, default=v,
                           action=argparse.BooleanOptionalAction)
        else:
            p.add_argument("--" + k.replace("_", "-"), dest=k, default=v,
                           type=type(v) if v is not None else str,
                           choices=CELLS if k == "cell" else None)
    cfg = TrainConfig(**vars(p.parse_args(argv)))
    try:
        train(cfg)
    except (DataError, OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
