"""Train the IMDB sentiment classifier (biLSTM + dot-product attention), export to ONNX.

    python -m training.train_sentiment --data ../shared/data/aclImdb_v1_labeled.tar.gz \\
        --out models/sentiment --replace-served
    python -m training.train_sentiment --recipe sentiment-encoder   # the shipped encoder

Recipe (defaults reproduce the committed model): the tokenizer of seqcore/tokenizer.py,
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

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from seqcore.modelfolder import ModelFolder, ModelFolderError
from seqcore.runtime import pad_rows
from seqcore.tokenizer import WordTokenizer, tokenize
from training.augment import generate
from training.cad import CadOptions, CadSplits, with_cad
from training.data import DataError, source_record, split_train_val
from training.datasets import IMDB_LABELS, label_accuracy_onnx, load_dataset
from training.evaluate import (
    NEGATION_SET_NAME,
    evaluation_sets,
    load_negation_set,
    negation_accuracy_onnx,
    sentiment_accuracy_onnx,
    trained_on_imdb,
)
from training.export import (
    build_sentiment_graph,
    check_sentiment,
    sentiment_from_graph,
)
from training.manifest import run_folder, write_model_folder
from training.models import (
    CELLS,
    SentimentConfig,
    SentimentLSTM,
    head_loss,
    head_prediction,
    negator_table,
)
from training.ngrams import NgramConfig, out_of_fold_logits, scope_tables, term_settings
from training.prepcache import PrepCache
from training.scaffold import (
    Progress,
    RunOptions,
    Stopping,
    command_line,
    cosine_lr,
    option,
    pick_device,
    planned_steps,
    plot_history,
    set_lr,
    set_threads,
    track,
)


@dataclass
class TrainConfig(CadOptions, RunOptions):
    data: str = option("../shared/data/aclImdb_v1_labeled.tar.gz",
                       "the training data: the IMDB archive or extracted folder (a path or "
                       "URL), a CSV, TSV, JSONL or Parquet file, or a folder per label "
                       "(DIR/<label>/*.txt); training/datasets.py")
    text_column: str = option("", "the text column of a CSV/TSV/JSONL/Parquet file (empty: "
                                  "the first of text, review, sentence, content, ...)")
    label_column: str = option("", "the label column (empty: the first of label, "
                                   "sentiment, class, category, rating, ...); the labels "
                                   "are its distinct values")
    test_data: str = option("", "a test split of the same kind as --data (optional; the "
                                "IMDB archive brings its own)")
    val_data: str = option("", "a validation split of the same kind as --data (empty: "
                               "--val-fraction of the training data)")
    cache_dir: str = option("", "the prepared-data cache (the data as read, vocabulary, token "
                                "ids, word2vec; training/prepcache.py): empty: "
                                ".cache/prepared in the repository; 'off': none")
    out: str = option("", "output model folder (empty: a new runs/sentiment-<time> folder, "
                          "never the served models/)")
    name: str = option("sentiment", "the model's name in the manifest (requests' `model` "
                                    "field)")
    sha256: str | None = option(None, "expected sha256 of the data archive (checked when "
                                      "given)")
    init_from: str = option("", "a model folder: start from its vocabulary and weights "
                                "(fine-tune)")
    augment: int = option(0, "negation-augmentation sentences added to the training split", at_least=0)
    augment_more: bool = option(False, "draw the augmentation from more frames too "
                                       "(training.augment.MORE_TEMPLATES)")
    augment_grammar: bool = option(False, "build half of the augmentation compositionally "
                                          "(training.augment.compose: negations counted)")
    short_data: bool = option(False, "add the training split of the human-rated short "
                                     "snippets (training/short_data.py: VADER's Amazon, "
                                     "movie and tweet sentences) to the training rows, after "
                                     "the augmentation (with --stack-ngrams they get no "
                                     "offset of their own, like the augmentation)")
    short_repeat: int = option(1, "with --short-data: each training snippet this many "
                                  "times an epoch", at_least=1)
    encoder_negation_window: int = option(
        0, "> 0: the encoder also reads a negator's scope: a learned vector (starting at "
           "zero) added to the embedding of each word this many words or fewer after a "
           "negator; with --init-from a model without one, it is added to that model", at_least=0)
    max_vocab: int = option(20000, "vocabulary size (most frequent training words)", at_least=3)
    min_count: int = option(2, "a word needs this many training occurrences to get an id", at_least=1)
    max_len: int = option(800, "tokens read per review (longer: head + tail)", at_least=1)
    head_len: int = option(200, "of a longer review, the first this many tokens are kept "
                                "(the rest from its end)", at_least=0)
    emb_dim: int = option(128, "word embedding size", at_least=1)
    hidden: int = option(128, "hidden units per direction", at_least=1)
    emb_dropout: float = option(0.3, "dropout on the word embeddings", at_least=0, below=1)
    out_dropout: float = option(0.5, "dropout before the output layer", at_least=0, below=1)
    batch_size: int = option(64, "reviews per batch", at_least=1)
    lr: float = option(1e-3, "Adam learning rate at the start of the cosine schedule", at_least=0)
    lr_min: float = option(5e-5, "learning-rate floor at the end of the cosine schedule", at_least=0)
    weight_decay: float = option(0.0, "Adam weight decay", at_least=0)
    word_dropout: float = option(0.1, "fraction of training tokens replaced by <unk>", at_least=0, below=1)
    ema: float = option(0.99, "if > 0, evaluate/export an exponential moving average of the "
                              "weights with this decay", at_least=0, below=1)
    nb_init: float = option(1.0, "> 0: embedding dim 0 starts as the words' naive-Bayes "
                                 "log-count ratio (times this)", at_least=0)
    w2v_epochs: int = option(5, "> 0: the other embedding dims start from word2vec on the "
                                "train split, this many epochs", at_least=0)
    adv_eps: float = option(0.0, "> 0: adversarial training on the word embeddings, each "
                                 "element moved by about this many embedding standard "
                                 "deviations along the loss gradient (Miyato et al. 2016); "
                                 "the train loss shown is then clean + adversarial", at_least=0)
    stack_ngrams: int = option(
        0, ">= 2: train the encoder as a residual to the hashed n-gram model of "
           "training.ngrams (stacking; its default settings): n-gram models are fitted on "
           "this many folds of the training split, each training row's loss adds the logit "
           "of the model that did not see it, and the best epoch is picked on validation "
           "with the fold "
           "models' mean added; the exported graph is the encoder alone (add its n-gram "
           "term with training.ngrams --base)", at_least=0)
    stack_like: str = option(
        "", "with --stack-ngrams: a model folder whose n-gram term the fold models copy "
            "(its negation and contrast scopes, buckets, epochs; from its manifest) instead "
            "of training.ngrams' defaults")
    stack_augmentation: str = option(
        "folds", "with --stack-ngrams, the augmentation sentences: 'folds': split into the "
                 "folds like the reviews, each with the offset of the model that did not "
                 "see it (the shipped model); 'alone': in every fold model's fit, with no "
                 "offset (the encoder alone learns them)")
    epochs: int = option(6, "epochs planned (the cosine schedule spans them)", at_least=1)
    patience: int = option(2, "early stopping: epochs without a better validation accuracy", at_least=1)
    val_fraction: float = option(0.1, "fraction of the train split held out for validation "
                                      "(fixed seed)", above=0, below=1)
    max_minutes: float = option(40.0, "wall-clock budget for the whole run (checked after "
                                      "each epoch)", above=0)
    test: bool = option(True, "report test accuracy (ONNX Runtime) at the end")


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
    """A padded batch, as the service pads one (an empty review: one ``<unk>``)."""
    ids, lens = pad_rows(seqs, WordTokenizer.unk_id)
    return torch.from_numpy(ids), torch.from_numpy(lens)


def evaluate_torch(model: torch.nn.Module, seqs: list[list[int]], labels: list[int],
                   batch_size: int = 128, offset: np.ndarray | None = None
                   ) -> tuple[float, float]:
    """(accuracy, mean loss) of ``model``, with ``offset[i]`` added to row i's logit."""
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
            if offset is not None:
                logit = logit + torch.tensor(offset[b], dtype=logit.dtype, device=dev)
            loss += float(head_loss(logit, y, reduction="sum"))
            correct += int((head_prediction(logit) == y).sum())
    return correct / len(seqs), loss / len(seqs)


def word2vec_init(texts: list[list[str]], tok: WordTokenizer, dim: int, epochs: int,
                  seed: int) -> torch.Tensor:
    """Skip-gram word2vec (gensim, one worker: deterministic) trained on the training
    split's own reviews, scaled to unit standard deviation like nn.Embedding's init.
    Words word2vec dropped keep a random vector."""
    import zlib

    from gensim.models import Word2Vec
    from gensim.models.callbacks import CallbackAny2Vec

    class _EpochProgress(CallbackAny2Vec):
        def __init__(self, prog: Progress):
            self.prog = prog

        def on_epoch_end(self, model) -> None:
            self.prog.update()

    with Progress(epochs, "word2vec", unit="epoch") as prog:
        w2v = Word2Vec(texts, vector_size=dim, window=5, min_count=1, sg=1, negative=5,
                       epochs=epochs, workers=1, seed=seed,
                       hashfxn=lambda s: zlib.crc32(s.encode()),
                       callbacks=[_EpochProgress(prog)])
    g = torch.Generator().manual_seed(seed)
    out = torch.randn(tok.vocab_size, dim, generator=g)
    known = [i for i, w in enumerate(tok.itos) if w in w2v.wv.key_to_index]
    vecs = torch.tensor(np.stack([w2v.wv[tok.itos[i]] for i in known]))
    out[known] = vecs / vecs.std()
    print(f"word2vec: {len(known)} of {tok.vocab_size} words, {epochs} epochs", flush=True)
    return out


def nb_log_count_ratio(seqs: list[list[int]], labels: list[int], vocab: int) -> torch.Tensor:
    """r_w = log p(w | positive) - log p(w | negative), add-one smoothed, scaled to unit
    standard deviation (Wang & Manning 2012): a per-word polarity prior taken from the
    training split only."""
    counts = np.ones((2, vocab))
    for s_, y in zip(seqs, labels, strict=True):
        np.add.at(counts[y], np.unique(s_), 1.0)  # binarised per review
    r = np.log(counts[1] / counts[1].sum()) - np.log(counts[0] / counts[0].sum())
    return torch.tensor(r / r.std(), dtype=torch.float)


def adversarial_loss(model: SentimentLSTM, ids: torch.Tensor, lens: torch.Tensor,
                     y: torch.Tensor, eps: float, offset: torch.Tensor | float = 0.0
                     ) -> torch.Tensor:
    """The loss plus the loss under the worst small perturbation of the word embeddings
    (Miyato et al. 2016, first-order): each review's embeddings [T, E] are moved by
    ``eps * rms(embedding table) * sqrt(T * E)`` along the loss gradient (L2 over the
    review), i.e. every element by about ``eps`` table standard deviations. The
    perturbation is a constant: no gradient flows through it."""
    emb = model.embed(ids)
    logit, _ = model.from_embeddings(emb, lens)
    loss = head_loss(logit, y, offset)
    (g,) = torch.autograd.grad(loss, emb, retain_graph=True)
    mask = (ids != 0).unsqueeze(-1).to(g.dtype)  # padding is not perturbed
    g = g * mask
    norm = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    scale = eps * model.embedding.weight.detach().pow(2).mean().sqrt()
    size = (lens.to(g.dtype) * emb.shape[-1]).sqrt().view(-1, 1, 1)
    r = (scale * size * g / norm).detach()
    adv_logit, _ = model.from_embeddings(emb + r, lens)
    return loss + head_loss(adv_logit, y, offset)


def new_model(cfg: TrainConfig, tok: WordTokenizer, tr_x: list[list[int]], tr_y: list[int],
              w2v: torch.Tensor | None, init: SentimentLSTM | None, n_labels: int
              ) -> SentimentLSTM:
    """A model to train: ``init``'s weights when given, else a fresh one whose embedding
    starts from word2vec (``w2v``) and, in dimension 0, the naive-Bayes ratios."""
    mcfg = SentimentConfig(vocab_size=tok.vocab_size, emb_dim=cfg.emb_dim, hidden=cfg.hidden,
                           emb_dropout=cfg.emb_dropout, out_dropout=cfg.out_dropout,
                           cell=cfg.cell, negation_window=cfg.encoder_negation_window,
                           labels=n_labels)
    model = SentimentLSTM(mcfg)
    if mcfg.negation_window > 0:
        model.set_negators(negator_table(tok.itos))
    if init is not None:
        # a model without a negation scope starts one at zero: its answers unchanged
        missing, unexpected = model.load_state_dict(init.state_dict(), strict=False)
        if unexpected or set(missing) - {"neg_embedding.weight", "neg_table"}:
            raise DataError(f"--init-from: weights do not fit ({missing}, {unexpected})")
    elif w2v is not None:
        with torch.no_grad():
            model.embedding.weight[:, -w2v.shape[1]:] = w2v
    if cfg.nb_init > 0 and init is None and n_labels == 2:
        with torch.no_grad():
            model.embedding.weight[:, 0] = nb_log_count_ratio(tr_x, tr_y, tok.vocab_size) * cfg.nb_init
            model.embedding.weight[tok.pad_id] = 0.0
    return model


def train_step(model: SentimentLSTM, opt: torch.optim.Optimizer, cfg: TrainConfig,
               ids: torch.Tensor, lens: torch.Tensor, y: torch.Tensor,
               offset: torch.Tensor | float) -> float:
    """One optimizer step on a batch (adversarial with ``--adv-eps``); the batch's loss."""
    if cfg.adv_eps > 0:
        loss = adversarial_loss(model, ids, lens, y, cfg.adv_eps, offset)
    else:
        logit, _ = model(ids, lens)
        loss = head_loss(logit, y, offset)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
    opt.step()
    return loss.item()


def train_model(cfg: TrainConfig, seed: int, tok: WordTokenizer, tr_x: list[list[int]],
                 tr_y: list[int], va_x: list[list[int]], va_y: list[int], t_start: float,
                 minutes: float, w2v: torch.Tensor | None = None,
                 init: SentimentLSTM | None = None, max_steps: int = 0,
                 prog: Progress | None = None,
                 offsets: tuple[np.ndarray, np.ndarray] | None = None, n_labels: int = 2
                 ) -> tuple[SentimentLSTM, float, int, list[dict]]:
    """Train one model with ``seed`` (from ``init``'s weights when given) for at most
    ``minutes`` and ``max_steps`` steps (0: no limit); returns the best-validation
    weights. ``offsets`` (train, validation): fixed logits added to each row's (the
    stacked n-gram model's), in the loss and in the validation accuracy."""
    tr_off, va_off = offsets if offsets is not None else (None, None)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    dev = pick_device(cfg.device)
    model = new_model(cfg, tok, tr_x, tr_y, w2v, init, n_labels).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = planned_steps(math.ceil(len(tr_x) / cfg.batch_size), cfg.epochs, max_steps)
    ema = (torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema))
        if cfg.ema > 0 else None)
    lengths = [len(s) for s in tr_x]
    m_start = time.time()
    say = prog.write if prog is not None else (lambda m: print(m, flush=True))
    # the whole run's budget (max_minutes, from the run's start)
    stop = Stopping(cfg.patience, cfg.max_minutes, max_steps, higher_is_better=True,
                    start=t_start)
    best_state, history, step = None, [], 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0, tot, n_batches = time.time(), 0.0, 0
        if prog is not None:
            prog.set_postfix(f"seed {seed} epoch {epoch}/{cfg.epochs}")
        for b in length_batches(lengths, cfg.batch_size, rng):
            ids, lens = collate([tr_x[j] for j in b])
            if cfg.word_dropout > 0:
                drop = (torch.rand(ids.shape) < cfg.word_dropout) & (ids != tok.pad_id)
                ids = ids.masked_fill(drop, tok.unk_id)
            y = torch.tensor([tr_y[j] for j in b], dtype=torch.float, device=dev)
            lr = cosine_lr(step, total, cfg.lr, cfg.lr_min)
            set_lr(opt, lr)
            off = 0.0 if tr_off is None else torch.tensor(tr_off[b], dtype=torch.float, device=dev)
            tot += train_step(model, opt, cfg, ids.to(dev), lens.to(dev), y, off)
            if ema is not None:
                ema.update_parameters(model)
            step, n_batches = step + 1, n_batches + 1
            if prog is not None:
                prog.update()
            if stop.out_of_steps(step):
                break
        eval_model = ema.module if ema is not None else model
        acc, vloss = evaluate_torch(eval_model, va_x, va_y, offset=va_off)
        history.append({"epoch": epoch, "train_loss": round(tot / n_batches, 4),
                        "val_accuracy": round(acc, 4), "val_loss": round(vloss, 4),
                        "lr": lr, "steps": n_batches, "seconds": round(time.time() - t0, 1)})
        say(f"[seed {seed}] epoch {epoch} train loss {tot / n_batches:.4f} val acc "
            f"{acc:.4f} val loss {vloss:.4f} lr {lr:.1e} {time.time() - t0:.0f}s")
        if stop.improved(epoch, acc):
            best_state = {k: v.detach().clone() for k, v in eval_model.state_dict().items()}
        if stop.should_stop(epoch, step):
            say(stop.reason)
            break
        if (time.time() - m_start) / 60 > minutes:
            say("time budget reached")
            break
    model.load_state_dict(best_state)
    model.cpu().eval()  # export and checks run on the CPU
    return model, stop.best, stop.best_epoch, history


def load_init(cfg: TrainConfig) -> tuple[WordTokenizer, SentimentLSTM]:
    """The vocabulary and weights of the model folder ``cfg.init_from``; the model's
    shape settings in ``cfg`` are set from it."""
    try:
        folder = ModelFolder.open(cfg.init_from)
    except ModelFolderError:  # a graph and vocabulary without a manifest still start a run
        folder = ModelFolder(Path(cfg.init_from), {})
    if "ngram" in folder.manifest:
        print(f"--init-from: {folder.path} has an n-gram term; its encoder is trained, the "
              "n-gram term is left out (add one again with training.ngrams --base)", flush=True)
    if not folder.graph_path.is_file():
        raise DataError(f"--init-from {folder.path}: no {folder.graph_path.name} there")
    model = sentiment_from_graph(onnx.load(str(folder.graph_path)), cfg.emb_dropout,
                                 cfg.out_dropout)
    tok = WordTokenizer.load(folder.vocab_path)
    cfg.emb_dim, cfg.hidden, cfg.cell = model.cfg.emb_dim, model.cfg.hidden, model.cfg.cell
    if model.cfg.negation_window and cfg.encoder_negation_window != model.cfg.negation_window:
        print(f"--init-from: the model reads a negation window of {model.cfg.negation_window}; "
              "kept", flush=True)
        cfg.encoder_negation_window = model.cfg.negation_window
    cfg.max_len, cfg.head_len = tok.max_len, tok.head_len
    return tok, model


@dataclass
class Rows:
    """A run's encoded rows. Training: the reviews, then the augmentation sentences and the
    short snippets, then the CAD train pairs; validation: the reviews, then the CAD dev pairs."""

    tok: WordTokenizer
    train_x: list[list[int]]
    train_y: list[int]
    val_x: list[list[int]]
    val_y: list[int]
    n_reviews: int  # training rows that are reviews
    n_cad: int  # training rows that are CAD pairs (the last ones)
    enc_key: str | None  # the prepared-data cache's key of the encoded reviews


def check_options(cfg: TrainConfig) -> NgramConfig:
    """The settings' combinations that cannot run (refused before any work), and the
    n-gram settings of ``--stack-ngrams``' fold models."""
    if cfg.stack_ngrams == 1:
        raise DataError("--stack-ngrams needs at least 2 folds (0: off)")
    if cfg.head_len > cfg.max_len and not cfg.init_from:
        raise DataError(f"--head-len {cfg.head_len} is longer than --max-len {cfg.max_len}")
    return NgramConfig(seed=cfg.seed, threads=cfg.threads, test=False,
                       **(term_settings(cfg.stack_like) if cfg.stack_like else {}))


def load_data(cfg: TrainConfig, cache: PrepCache) -> tuple[dict, str | None]:
    """The dataset (through the prepared-data cache) and its cache key."""
    data_key = cache.dataset_key(cfg.data, cfg.text_column, cfg.label_column, cfg.test_data,
                                 cfg.val_data) if not cfg.sha256 else None
    data = cache.dataset(data_key, lambda: load_dataset(
        cfg.data, cfg.sha256, text_column=cfg.text_column or None,
        label_column=cfg.label_column or None, test_data=cfg.test_data or None,
        val_data=cfg.val_data or None))
    if data["labels"] != IMDB_LABELS and (cfg.augment or cfg.cad or cfg.stack_ngrams
                                          or cfg.init_from):
        raise DataError(f"--augment, --cad, --stack-ngrams and --init-from need the labels "
                        f"negative, positive (this data's: {', '.join(data['labels'])})")
    return data, data_key


def encode_rows(cfg: TrainConfig, cache: PrepCache, data_key: str | None, split: CadSplits,
                init: SentimentLSTM | None, tok: WordTokenizer | None) -> Rows:
    """The training and validation rows as token ids (the reviews' from the cache when
    it has them), with the augmentation and the CAD pairs; ``tok``: the ``--init-from``
    model's vocabulary (else built from the training reviews)."""
    enc_key = cache.encoded_key(data_key, cfg)
    enc = cache.encoded(enc_key)
    if tok is None:
        tok = enc[0] if enc is not None else WordTokenizer.build(
            (r.text for r in track(split.train, "vocabulary", unit="review")),
            cfg.max_vocab, cfg.min_count, cfg.max_len, cfg.head_len)
    tr_x = enc[1] if enc is not None else [
        tok.encode(r.text).ids for r in track(split.train, "encode train", unit="review")]
    train_ids = list(tr_x)  # before the augmentation (what the cache keeps)
    tr_y = [r.label for r in split.train]
    if cfg.augment > 0:  # training split only: validation and test stay pure IMDB
        extra = generate(cfg.augment, cfg.seed, more=cfg.augment_more,
                         grammar=cfg.augment_grammar)
        tr_x += [tok.encode(t).ids for t, _ in extra]
        tr_y += [y for _, y in extra]
        print(f"negation augmentation: {len(extra)} sentences", flush=True)
    if cfg.short_data:  # human-rated short snippets (training/short_data.py), train split
        from training.short_data import load as load_snippets

        snippets = load_snippets("train")
        tr_x += [tok.encode(t).ids for t, _ in snippets] * cfg.short_repeat
        tr_y += [y for _, y in snippets] * cfg.short_repeat
        print(f"short snippets: {len(snippets)} x {cfg.short_repeat}", flush=True)
    # after the augmentation: extra rows, no stacking offset of their own
    tr_x += [tok.encode(r.text).ids for r in split.train_pairs]
    tr_y += [r.label for r in split.train_pairs]
    val_set = split.validation + split.dev_pairs
    va_x = enc[2] if enc is not None else [
        tok.encode(r.text).ids for r in track(val_set, "encode validation", unit="review")]
    if enc is None:
        cache.save_encoded(enc_key, tok, train_ids, va_x)
    print(f"sentiment: vocab {tok.vocab_size}, train {len(tr_x)}, val {len(va_x)}", flush=True)
    return Rows(tok, tr_x, tr_y, va_x, [r.label for r in val_set], len(split.train),
                len(split.train_pairs), enc_key)


def word2vec_of(cfg: TrainConfig, cache: PrepCache, rows: Rows, reviews: list
                ) -> torch.Tensor | None:
    """The word2vec start of the embedding (None: off, or an ``--init-from`` run)."""
    if cfg.w2v_epochs <= 0 or cfg.init_from:
        return None
    dim = cfg.emb_dim - (1 if cfg.nb_init > 0 else 0)
    return cache.word2vec(
        cache.word2vec_key(rows.enc_key, dim, cfg.w2v_epochs, cfg.seed),
        lambda: word2vec_init([[t.text for t in tokenize(r.text)]
                               for r in track(reviews, "word2vec input", unit="review")],
                              rows.tok, dim, cfg.w2v_epochs, cfg.seed))


def stacking_offsets(cfg: TrainConfig, ng_cfg: NgramConfig, rows: Rows
                     ) -> tuple[np.ndarray, np.ndarray] | None:
    """With ``--stack-ngrams``: each training row's logit from the fold n-gram model that
    did not see it, and the fold models' mean on validation (else None)."""
    if cfg.stack_ngrams < 2:
        return None
    # 'alone': folds of the reviews; the augmentation joins every fold model's fit but
    # its rows get no offset, so the encoder alone is taught negation by them (n-gram
    # models fit template sentences easily and would leave it little gradient)
    n = rows.n_reviews if cfg.stack_augmentation == "alone" else len(rows.train_x) - rows.n_cad
    table, con = scope_tables(ng_cfg, rows.tok.itos)
    tr_off, va_off = out_of_fold_logits(
        rows.train_x[:n], rows.train_y[:n], rows.val_x, rows.val_y, cfg.stack_ngrams,
        None if table is None else torch.from_numpy(table), ng_cfg,
        extra_x=rows.train_x[n:], extra_y=rows.train_y[n:],
        con_table=None if con is None else torch.from_numpy(con))
    return np.concatenate([tr_off, np.zeros(len(rows.train_x) - n)]), va_off


def score(cfg: TrainConfig, model: SentimentLSTM, graph: onnx.ModelProto, rows: Rows,
          data: dict, cache: PrepCache, offsets: tuple | None) -> tuple[dict, dict, dict]:
    """The trained model's metrics (validation through torch; test and the negation set
    through ONNX Runtime on the exported graph), what each was measured on, and the
    data's source record."""
    tok, va_x, va_y = rows.tok, rows.val_x, rows.val_y
    val_acc, _ = evaluate_torch(model, va_x, va_y)
    metrics: dict = {"val_accuracy": round(val_acc, 4)}
    if offsets is not None:
        stacked, _ = evaluate_torch(model, va_x, va_y, offset=offsets[1])
        metrics["val_accuracy_with_fold_ngrams"] = round(stacked, 4)
    source = source_record(cfg.data)
    imdb = trained_on_imdb(source, len(data["train"]), len(data["test"]))
    name = "IMDB" if imdb else source["source"]
    sets = {"val_": f"validation: {cfg.val_fraction:.0%} of the {name} train split, seed "
                    f"{cfg.seed} ({len(va_x)} reviews)"}
    if data["validation"]:
        sets["val_"] = f"validation: {cfg.val_data} ({len(va_x)} rows)"
    if cfg.test and not data["test"]:
        print("test: no test split (pass --test-data FILE to score one)", flush=True)
    if not cfg.test or not data["test"]:
        return metrics, sets, source
    test_enc = cache.test_encoded(cache.test_key(rows.enc_key), lambda: [
        tok.encode(r.text, offsets=False)
        for r in track(data["test"], "encode test", unit="review")])
    graph_bytes = graph.SerializeToString()
    metrics.update(sentiment_accuracy_onnx(graph_bytes, tok, data["test"], progress=True,
                                           encoded=test_enc)
                   if len(data["labels"]) == 2 else
                   label_accuracy_onnx(graph_bytes, tok, data["test"], encoded=test_enc))
    sets["test_"] = sets["truncated_"] = sets["ece"] = (
        f"the {name} test split ({len(data['test'])} reviews)")
    if imdb:  # movie-review sentences: a figure for models of movie reviews only
        neg = negation_accuracy_onnx(graph_bytes, tok, load_negation_set())
        metrics.update(negation_accuracy=neg["negation_accuracy"],
                       negation_by_kind={k: v["accuracy"] for k, v in neg["by_kind"].items()})
        sets["negation_"] = NEGATION_SET_NAME
    else:
        print(f"negation set: not scored ({source['source']} is not the IMDB dataset)",
              flush=True)
    return metrics, sets, source


def train(cfg: TrainConfig) -> dict:
    ng_cfg = check_options(cfg)
    out = run_folder(cfg.out, "sentiment", cfg.replace_served)  # refused before any work
    np.random.seed(cfg.seed)
    set_threads(cfg.threads)
    t_start = time.time()
    cache = PrepCache.from_option(cfg.cache_dir)
    data, data_key = load_data(cfg, cache)
    if data["validation"]:
        train_set, val_set = data["train"], data["validation"]
    else:
        train_set, val_set = split_train_val(data["train"], cfg.val_fraction, cfg.seed)
    split = with_cad(cfg, train_set, val_set)  # the seed's split first, then CAD out
    tok, init = load_init(cfg) if cfg.init_from else (None, None)
    rows = encode_rows(cfg, cache, data_key, split, init, tok)
    w2v = word2vec_of(cfg, cache, rows, split.train)
    offsets = stacking_offsets(cfg, ng_cfg, rows)
    prog = Progress(planned_steps(math.ceil(len(rows.train_x) / cfg.batch_size), cfg.epochs,
                                  cfg.max_steps), "train")
    model, best, best_epoch, history = train_model(
        cfg, cfg.seed, rows.tok, rows.train_x, rows.train_y, rows.val_x, rows.val_y, t_start,
        cfg.max_minutes - (time.time() - t_start) / 60, w2v, init, cfg.max_steps, prog,
        offsets, n_labels=len(data["labels"]))
    prog.close()
    graph = build_sentiment_graph(model)
    checks = check_sentiment(model, graph)
    metrics, sets, source = score(cfg, model, graph, rows, data, cache, offsets)
    arch = f"bi{cfg.cell.upper()} {cfg.hidden} + dot-product attention, embedding {cfg.emb_dim}"
    if cfg.encoder_negation_window > 0:
        arch += f", negation scope {cfg.encoder_negation_window} words"
    manifest = {
        "name": cfg.name, "version": f"1.1.{cfg.seed}", "task": "text-classification",
        "cell": cfg.cell, "labels": data["labels"], "architecture": arch,
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": {**source, "train": len(rows.train_x), "validation": len(rows.val_x),
                 **({"cad": split.record} if split.record else {}),
                 "validation_split": (cfg.val_data if data["validation"] else
                                      f"{cfg.val_fraction:.0%} of train, seed {cfg.seed}"),
                 "test": len(data["test"])},
        "training": {**asdict(cfg), "best_epoch": best_epoch,
                     "best_val_accuracy": round(best, 4), "history": history,
                     "steps": sum(h["steps"] for h in history),
                     "minutes": round((time.time() - t_start) / 60, 1), "torch": torch.__version__},
        "metrics": metrics,
        "evaluation_sets": evaluation_sets(metrics, sets),
        "export_checks": checks,
    }
    write_model_folder(out, graph, rows.tok, manifest)
    plot_history(history, Path(out) / "curves.png", f"{cfg.name}: {arch}")
    print(json.dumps({"out": str(out), "metrics": metrics, "best_epoch": best_epoch,
                      "export": checks}))
    return manifest


def main(argv: list[str] | None = None) -> int:
    return command_line(TrainConfig, train, __doc__, argv,
                        choices={"cell": CELLS, "stack_augmentation": ("folds", "alone")})


if __name__ == "__main__":
    raise SystemExit(main())
