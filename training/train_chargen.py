"""Train the character-level LSTM generator and export it as an ONNX step graph.

    python -m training.train_chargen --data ../shared/data/nietzsche.txt --out models/chargen --replace-served
    python -m training.train_chargen --recipe chargen   # the shipped model's last run

Recipe: lowercased characters, 2-layer LSTM 256 with a 64-d embedding (dropout 0.05
on it, 0.15 between the layers and before the head), trained to predict EVERY next
character with truncated BPTT over 128-character chunks in batches of 32, Adam 2e-3
with cosine decay to 1e-4, gradient clip 1.

Stateful (the default, ``--stateful``): the training text is laid out as
``batch_size`` contiguous streams side by side; each epoch walks them in order, one
chunk at a time, and each chunk starts from the (detached) state the previous chunk
ended with, so the model learns to use context longer than a chunk, as it is used
when serving. The state is reset at the start of each epoch, and the streams start
at a fresh random offset each epoch so chunk borders move. ``--no-stateful`` is the
older recipe: chunks in random order, each from a zero state.

``--init-from FOLDER`` continues from a model folder's vocabulary and weights (the
exported graph read back into torch), e.g. with a lower learning rate; ``--ema D``
scores, keeps and exports an exponential moving average of the weights instead of the
last ones (weight averaging). From an ensemble folder, ``--init-member I`` picks the
member to continue (read back from the ensemble's graph).

``--distill-from A,B`` adds knowledge distillation: the teachers (model folders with the
same vocabulary, e.g. a wider model and the served one, or an ensemble folder, whose
graph runs through ONNX Runtime) are run once over the training text with their state
carried, their next-character distributions are mixed with equal
weights, and the loss becomes ``(1 - w) * cross-entropy + w * KL(teacher || model)``
with ``w = --distill-weight``. Only the training text is read for it; the held-out text
stays unseen until it is scored. ``--distill-synthetic N`` adds N characters of text
the teachers write themselves (sampled from their mixture at temperature 1, each stream
started from a random piece of the training text) with the mixture's rows as targets:
on the training text the teachers' rows are fitted to that text, on their own text they
are what the teachers predict on text they never saw. The written streams follow the
training text end to end, so the training streams cross a seam where the text jumps
once per written stream (64 in 570,000 characters by default). ``--distill-synthetic-from
C,D`` has other teachers write that text (and give its targets) than those read over the
training text: a teacher fitted to the training text teaches that text there, not on
its own text.

Held-out = the last 5 % of the text, scored with the state carried through it (the
way the service uses the model: prefill, then one step per character). Early stopping
keeps the best held-out epoch.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from seqcore.modelfolder import ModelFolder
from seqcore.tokenizer import CharVocab
from training.data import DataError, load_text, source_record
from training.evaluate import (
    char_step,
    char_step_logits,
    chargen_loss_onnx,
    evaluation_sets,
    ort_session,
)
from training.export import (
    ExportCheckError,
    build_char_graph,
    char_from_graph,
    char_members_from_graph,
    check_char,
)
from training.manifest import run_folder, write_model_folder
from training.models import CELLS, CharConfig, CharLSTM
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
)


@dataclass
class TrainConfig(RunOptions):
    data: str = option("../shared/data/nietzsche.txt", "the text: a path or URL")
    out: str = option("", "output model folder (empty: a new runs/chargen-<time> folder, "
                          "never the served models/)")
    name: str = option("chargen", "the model's name in the manifest (requests' `model` field)")
    sha256: str | None = option(None, "expected sha256 of the data file (checked when given)")
    init_from: str = option("", "a model folder: start from its vocabulary and weights "
                                "(train further; its shape options replace these)")
    init_member: int = option(-1, "with an ensemble folder as --init-from: start from this "
                                  "member (0 = the first)", at_least=-1)
    emb_dim: int = option(64, "character embedding size", at_least=1)
    hidden: int = option(256, "hidden units per recurrent layer", at_least=1)
    layers: int = option(2, "recurrent layers", at_least=1)
    stateful: bool = option(True, "carry the (detached) state from chunk to chunk through "
                                  "contiguous streams; --no-stateful: shuffled chunks, each "
                                  "from a zero state")
    dropout: float = option(0.15, "dropout between the recurrent layers and before the head",
                            at_least=0, below=1)
    emb_dropout: float = option(0.05, "dropout on the character embeddings", at_least=0, below=1)
    chunk: int = option(128, "characters per truncated-BPTT chunk", at_least=1)
    batch_size: int = option(32, "chunks per batch (stateful: the number of streams)", at_least=1)
    lr: float = option(2e-3, "Adam learning rate at the start of the cosine schedule", at_least=0)
    lr_min: float = option(1e-4, "learning-rate floor at the end of the cosine schedule", at_least=0)
    ema: float = option(0.0, "> 0: score, keep and export an exponential moving average of "
                             "the weights with this decay per step (weight averaging)", at_least=0, below=1)
    epochs: int = option(36, "epochs planned (the cosine schedule spans them)", at_least=1)
    patience: int = option(6, "early stopping: epochs without a better held-out loss", at_least=1)
    unk_noise: float = option(0.001, "fraction of input chars replaced by <unk>, so the id "
                                     "is learnt", at_least=0, below=1)
    heldout_fraction: float = option(0.05, "the last fraction of the text, held out", above=0, below=1)
    eval_streams: int = option(16, "held-out text cut into this many streams for scoring", at_least=1)
    distill_from: str = option("", "comma-separated teacher model folders (same vocabulary): "
                                   "distil their mixed next-char distributions")
    distill_weight: float = option(0.5, "weight of the KL-to-teachers term when "
                                        "--distill-from is given", at_least=0, at_most=1)
    distill_synthetic: int = option(0, "with --distill-from: this many characters of text "
                                       "sampled from the teachers, trained on beside the "
                                       "training text", at_least=0)
    distill_synthetic_from: str = option("", "comma-separated teacher model folders that write "
                                             "the --distill-synthetic text and give its targets "
                                             "(empty: the --distill-from teachers)")
    distill_streams: int = option(64, "the training text cut into this many streams to "
                                      "run the teachers over it", at_least=1)
    max_minutes: float = option(44.0, "wall-clock budget for training (checked after each "
                                      "epoch)", above=0)


def chunk_batches(ids: torch.Tensor, cfg: TrainConfig, gen: torch.Generator):
    """One epoch of (x, y) batches, each [batch, <=chunk], and whether the batch
    continues the previous one's streams (so its state should be carried)."""
    offset = int(torch.randint(0, cfg.chunk, (1,), generator=gen))
    if cfg.stateful:
        n = (len(ids) - 1 - offset) // cfg.batch_size  # chars per stream
        x = ids[offset : offset + n * cfg.batch_size].view(cfg.batch_size, n)
        y = ids[offset + 1 : offset + 1 + n * cfg.batch_size].view(cfg.batch_size, n)
        for t in range(0, n, cfg.chunk):
            yield x[:, t : t + cfg.chunk], y[:, t : t + cfg.chunk], t > 0
        return
    n_chunks = (len(ids) - 1 - cfg.chunk) // cfg.chunk
    starts = offset + torch.arange(n_chunks) * cfg.chunk
    starts = starts[torch.randperm(n_chunks, generator=gen)]
    for i in range(0, n_chunks, cfg.batch_size):
        idx = starts[i : i + cfg.batch_size].unsqueeze(1) + torch.arange(cfg.chunk + 1)
        seq = ids[idx]
        yield seq[:, :-1], seq[:, 1:], False


def batches_per_epoch(n_ids: int, cfg: TrainConfig) -> int:
    if cfg.stateful:  # the largest count over the random offsets
        return math.ceil(((n_ids - 1) // cfg.batch_size) / cfg.chunk)
    return math.ceil(((n_ids - 1 - cfg.chunk) // cfg.chunk) / cfg.batch_size)


def heldout_loss(model: CharLSTM, ids: torch.Tensor, streams: int) -> float:
    """Mean NLL (nats/char) of each held-out char given all the held-out text before it
    in its stream: the text is cut into ``streams`` contiguous pieces run side by side."""
    model.eval()
    n = (len(ids) - 1) // streams
    x = ids[: n * streams].view(streams, n)
    y = ids[1 : n * streams + 1].view(streams, n)
    with torch.no_grad():
        logits, _ = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
    return float(loss)


def load_init(cfg: TrainConfig) -> tuple[CharVocab, CharLSTM]:
    """The vocabulary and weights of the model folder ``cfg.init_from``; the shape
    options in ``cfg`` are set from it."""
    folder = Path(cfg.init_from)
    if is_graph_only(folder):  # an ensemble: one of its members
        vocab, members, _ = load_char_members(folder, "--init-from", cfg.dropout,
                                              cfg.emb_dropout)
        if not 0 <= cfg.init_member < len(members):
            raise DataError(f"--init-from {folder} is an ensemble of {len(members)} members: "
                            f"choose one with --init-member 0..{len(members) - 1}")
        model = members[cfg.init_member]
    elif cfg.init_member >= 0:
        raise DataError(f"--init-member: --init-from {folder} is not an ensemble folder")
    else:
        vocab, model = load_char_folder(folder, "--init-from", cfg.dropout, cfg.emb_dropout)
    cfg.emb_dim, cfg.hidden, cfg.layers = model.cfg.emb_dim, model.cfg.hidden, model.cfg.layers
    cfg.cell = model.cfg.cell
    return vocab, model


def load_char_folder(folder: Path, flag: str, dropout: float = 0.0,
                     emb_dropout: float | None = 0.0) -> tuple[CharVocab, CharLSTM]:
    """A char model folder's vocabulary and its graph read back into torch; what is
    wrong with the folder is a ``DataError`` naming ``flag``."""
    vocab = load_char_vocab(folder, flag)
    try:
        model = char_from_graph(onnx.load(str(ModelFolder.at(folder).graph_path)), dropout,
                                emb_dropout)
    except ExportCheckError as e:
        raise DataError(f"{flag} {folder}: {e}") from None
    return vocab, model


def load_char_members(folder: Path, flag: str, dropout: float = 0.0,
                      emb_dropout: float | None = 0.0
                      ) -> tuple[CharVocab, list[CharLSTM], list[str | None]]:
    """An ensemble folder's vocabulary, its members read back from its graph into torch,
    and their versions (from its manifest; None where it does not say); what is wrong
    with the folder is a ``DataError`` naming ``flag``."""
    vocab = load_char_vocab(folder, flag)
    try:
        members = char_members_from_graph(onnx.load(str(ModelFolder.at(folder).graph_path)),
                                          dropout, emb_dropout)
    except ExportCheckError as e:
        raise DataError(f"{flag} {folder}: {e}") from None
    versions = member_versions(folder)
    if len(versions) != len(members):
        versions = [None] * len(members)
    return vocab, members, versions


def member_versions(folder: Path) -> list[str | None]:
    """The member versions an ensemble folder's manifest lists (``training.ensemble_of``)."""
    try:
        their = ModelFolder.at(folder).manifest["training"]["ensemble_of"]
        return [None if i.get("version") is None else str(i["version"]) for i in their]
    except (KeyError, TypeError, AttributeError):
        return []


def load_char_vocab(folder: Path, flag: str) -> CharVocab:
    """A char model folder's vocabulary (the folder must hold a graph too)."""
    f = ModelFolder.at(folder)
    if not f.graph_path.is_file() or not f.vocab_path.is_file():
        raise DataError(f"{flag} {folder}: no {f.graph_path.name} and {f.vocab_path.name} there")
    return CharVocab.load(f.vocab_path)


def is_graph_only(folder: Path) -> bool:
    """Whether a char model folder's graph cannot be read back into torch and runs
    through ONNX Runtime instead: an ensemble graph (``training.ensemble_chargen``)."""
    try:
        return bool(ModelFolder.at(folder).manifest["training"].get("ensemble_of"))
    except (KeyError, TypeError, AttributeError):
        return False


def onnx_log_probs(sess, piece: torch.Tensor, layers: int, hidden: int) -> torch.Tensor:
    """A char graph's next-char log distributions after each position of ``piece``
    [S, n] (S streams side by side, the state carried), stepped through ONNX Runtime one
    character per call as the service and the evaluate CLI do; rows in
    ``piece.reshape(-1)``'s order, [S * n, V]."""
    x = piece.numpy().astype(np.int64)
    S, n = x.shape
    out = None
    for t, logits in char_step_logits(sess, x, layers, hidden):
        if out is None:
            out = np.empty((S, n, logits.shape[-1]), np.float32)
        out[:, t] = logits
    return F.log_softmax(torch.from_numpy(out), -1).reshape(S * n, -1)


def _graph_teacher(folder: Path, threads: int) -> tuple[CharVocab, object, int, int]:
    """An ensemble teacher: vocabulary, ONNX Runtime session, state layers and width
    (from its manifest)."""
    vocab = load_char_vocab(folder, "--distill-from")
    f = ModelFolder.at(folder)
    st = f.manifest.get("state") or {}
    if not {"layers", "hidden"} <= set(st):
        raise DataError(f"--distill-from {folder}: its manifest gives no state "
                        "shape (state.layers, state.hidden)")
    return (vocab, ort_session(str(f.graph_path), threads=threads),
            int(st["layers"]), int(st["hidden"]))


def _torch_teacher(folder: Path) -> tuple[CharVocab, CharLSTM]:
    # building a module draws initial weights: keep the run's random stream
    with torch.random.fork_rng():
        return load_char_folder(folder, "--distill-from")


def load_teacher(folder: Path, threads: int
                 ) -> tuple[CharVocab, Callable[[torch.Tensor], torch.Tensor]]:
    """A teacher folder's vocabulary and a function from a piece [S, n] of ids to its
    next-char log distributions [S * n, V] (the state carried along each row): in torch
    when the graph reads back into it, else (an ensemble) through ONNX Runtime on
    ``threads`` intra-op threads."""
    if is_graph_only(folder):
        vocab, sess, layers, hidden = _graph_teacher(folder, threads)
        return vocab, lambda piece: onnx_log_probs(sess, piece, layers, hidden)
    vocab, teacher = _torch_teacher(folder)
    return vocab, lambda piece: (F.log_softmax(teacher(piece)[0].float(), -1)
                                 .reshape(-1, vocab.vocab_size))


def teacher_folders(folders: str) -> list[Path]:
    """The folders of a comma-separated ``--distill-from``."""
    return [Path(f.strip()) for f in folders.split(",") if f.strip()]


def _same_vocab(folder: Path, vocab: CharVocab, t_vocab: CharVocab, fn: Callable) -> Callable:
    """``fn`` of a teacher whose vocabulary is the model's, else a clear error."""
    if t_vocab.chars != vocab.chars:
        raise DataError(f"--distill-from {folder}: its vocabulary differs from the model's")
    return fn


def load_stepper(folder: Path, threads: int) -> tuple[CharVocab, Callable]:
    """A teacher folder's vocabulary and a one-step function ``(ids [S, k], state) ->
    (log distributions after the last column [S, V], state)``; ``state`` None is the
    zero state."""
    if is_graph_only(folder):
        vocab, sess, layers, hidden = _graph_teacher(folder, threads)

        def step(x: torch.Tensor, state):
            h, c = state if state is not None else (
                np.zeros((layers, x.shape[0], hidden), np.float32),) * 2
            logits, h, c = char_step(sess, x.numpy(), h, c)
            return F.log_softmax(torch.from_numpy(logits), -1), (h, c)
        return vocab, step
    vocab, teacher = _torch_teacher(folder)

    def step(x: torch.Tensor, state):
        logits, state = teacher(x, state)
        return F.log_softmax(logits[:, -1].float(), -1), state
    return vocab, step


def teacher_samples(folders: str, vocab: CharVocab, train_ids: torch.Tensor, n: int,
                    streams: int, threads: int, gen: torch.Generator, prime: int = 64
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` characters of text written by the teachers (sampled from their equal-weight
    mixture at temperature 1) in ``streams`` streams, each primed with a random piece of
    ``prime`` training characters, and the mixture's log distributions, one row per
    character (row j: the distribution the character after j was drawn from), float16."""
    steppers = [_same_vocab(folder, vocab, *load_stepper(folder, threads))
                for folder in teacher_folders(folders)]
    per = math.ceil(n / streams)
    prime = max(1, min(prime, len(train_ids) - 1))
    starts = torch.randint(0, len(train_ids) - prime + 1, (streams,), generator=gen)
    x = train_ids[starts.unsqueeze(1) + torch.arange(prime)]  # [S, prime]
    ids = torch.empty((streams, per), dtype=torch.long)
    rows = torch.empty((streams, per, vocab.vocab_size), dtype=torch.float16)
    states = [None] * len(steppers)
    with torch.no_grad(), Progress(per, "teachers' text", unit="char") as prog:
        for j in range(per):
            ids[:, j] = x[:, -1]
            lps = []
            for i, step in enumerate(steppers):
                lp, states[i] = step(x, states[i])
                lps.append(lp)
            mix = torch.logsumexp(torch.stack(lps), 0) - math.log(len(lps))
            rows[:, j] = mix.to(torch.float16)
            x = torch.multinomial(mix.exp(), 1, generator=gen)  # [S, 1]
            prog.update()
    return ids.reshape(-1)[:n], rows.reshape(-1, vocab.vocab_size)[:n]


def teacher_targets(folders: str, vocab: CharVocab, ids: torch.Tensor, streams: int,
                    threads: int = 1) -> torch.Tensor:
    """Log of the equal-weight mixture of the teachers' next-char distributions, one row
    per position of ``ids`` (row j: the distribution of the char after ``ids[j]``), as
    float16 [len(ids), V]. Each teacher reads the text as ``streams`` contiguous pieces
    side by side with its state carried (the last few positions are read as one more
    short piece). A teacher whose graph reads back into torch runs there; an ensemble
    folder's graph runs through ONNX Runtime (``threads`` intra-op threads)."""
    paths = teacher_folders(folders)
    n = len(ids) // streams
    pieces = [ids[: n * streams].view(streams, n), ids[n * streams :].view(1, -1)]
    mix = None
    with Progress(len(paths), "teachers", unit="model") as prog:
        for folder in paths:
            log_probs = _same_vocab(folder, vocab, *load_teacher(folder, threads))
            with torch.no_grad():
                rows = [log_probs(piece) for piece in pieces if piece.numel()]
            lp = torch.cat(rows) - math.log(len(paths))
            mix = lp if mix is None else torch.logaddexp(mix, lp)
            prog.update()
    return mix.to(torch.float16)


def folder_version(folder: str) -> str | None:
    """The version in a model folder's manifest, if it has one."""
    version = ModelFolder.at(folder).manifest.get("version")
    return None if version is None else str(version)


def init_version(cfg: TrainConfig) -> str | None:
    """The version of the weights training starts from: the ``--init-from`` folder's,
    or its chosen member's when it is an ensemble."""
    if not cfg.init_from:
        return None
    if cfg.init_member < 0:
        return folder_version(cfg.init_from)
    versions = member_versions(Path(cfg.init_from))
    return versions[cfg.init_member] if cfg.init_member < len(versions) else None


def prior_epochs(version: str | None) -> int:
    """The epochs behind a model's weights (its version's middle number), or 0."""
    try:
        return int((version or "").split(".")[1])
    except (ValueError, IndexError):
        return 0


def check_options(cfg: TrainConfig) -> None:
    """The settings' combinations that cannot run (refused before any work)."""
    if cfg.distill_synthetic and not cfg.distill_from:
        raise DataError("--distill-synthetic: give the teachers with --distill-from")
    if cfg.distill_synthetic_from and not cfg.distill_synthetic:
        raise DataError("--distill-synthetic-from: set how much they write with "
                        "--distill-synthetic")


@dataclass
class Text:
    """A run's text as ids: training (then the teachers' text, if any) and held out."""

    vocab: CharVocab
    train_ids: torch.Tensor
    held_ids: torch.Tensor
    held_text: str
    real_chars: int  # the training text's (the teachers' text follows it)
    teacher: torch.Tensor | None = None  # the teachers' log distributions, a row per id


def encode_text(cfg: TrainConfig, text: str, vocab: CharVocab | None) -> Text:
    """``text`` with its last ``heldout_fraction`` held out, as ids of ``vocab`` (None:
    built from the training part)."""
    split = int(len(text) * (1 - cfg.heldout_fraction))
    train_text, held_text = text[:split], text[split:]
    with Progress(3, "data", unit="part") as prog:
        vocab = vocab or CharVocab.build(train_text)
        prog.update()
        train_ids = torch.tensor(vocab.encode(train_text)[0], dtype=torch.long)
        prog.update()
        held_ids = torch.tensor(vocab.encode(held_text)[0], dtype=torch.long)
        prog.update()
    return Text(vocab, train_ids, held_ids, held_text, len(train_ids))


def add_teachers(cfg: TrainConfig, text: Text) -> Text:
    """``--distill-from``: the teachers' rows over the training text, and with
    ``--distill-synthetic`` the text they write (after the training text) with theirs."""
    if not cfg.distill_from:
        return text
    text.teacher = teacher_targets(cfg.distill_from, text.vocab, text.train_ids,
                                   cfg.distill_streams, cfg.threads)
    if cfg.distill_synthetic:
        s_ids, s_rows = teacher_samples(cfg.distill_synthetic_from or cfg.distill_from,
                                        text.vocab, text.train_ids, cfg.distill_synthetic,
                                        cfg.distill_streams, cfg.threads,
                                        torch.Generator().manual_seed(cfg.seed))
        text.train_ids = torch.cat([text.train_ids, s_ids])
        text.teacher = torch.cat([text.teacher, s_rows])
    return text


def train_step(model: CharLSTM, opt: torch.optim.Optimizer, cfg: TrainConfig,
               x: torch.Tensor, y: torch.Tensor, state: tuple | None,
               t_lp: torch.Tensor | None) -> tuple[float, tuple]:
    """One optimizer step on a chunk batch from ``state``: cross-entropy, mixed with the
    KL to the teachers' rows ``t_lp`` when given. (the data's cross-entropy, the state
    the chunk ended in, detached)"""
    logits, state = model(x, state)
    flat = logits.reshape(-1, logits.size(-1))
    ce = F.cross_entropy(flat, y.reshape(-1))
    loss = ce
    if t_lp is not None:
        kl = F.kl_div(F.log_softmax(flat, -1), t_lp, log_target=True, reduction="batchmean")
        loss = (1 - cfg.distill_weight) * ce + cfg.distill_weight * kl
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
    opt.step()
    return ce.item(), (state[0].detach(), state[1].detach())


def train_model(cfg: TrainConfig, model: CharLSTM, text: Text, t_start: float
                ) -> tuple[Stopping, list[dict], int]:
    """Train ``model`` in place (the best held-out epoch's weights loaded at the end, on
    the CPU); the stopping record, the per-epoch history and the steps taken."""
    dev = pick_device(cfg.device)
    model.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    ema = (torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema))
        if cfg.ema > 0 else None)
    ids, teacher = text.train_ids, text.teacher
    total_steps = planned_steps(batches_per_epoch(len(ids), cfg), cfg.epochs, cfg.max_steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    stop = Stopping(cfg.patience, cfg.max_minutes, cfg.max_steps, higher_is_better=False,
                    start=t_start)
    best_state, history, step = None, [], 0
    prog = Progress(total_steps, "train")
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0, tot, n_batches, state = time.time(), 0.0, 0, None
        prog.set_postfix(f"epoch {epoch}/{cfg.epochs}")
        # batches of positions, so the teachers' rows for a batch are found by index
        for px, py, carry in chunk_batches(torch.arange(len(ids)), cfg, gen):
            x, y = ids[px], ids[py]
            if cfg.unk_noise > 0:
                x[torch.rand(x.shape, generator=gen) < cfg.unk_noise] = text.vocab.unk_id
            lr = cosine_lr(step, total_steps, cfg.lr, cfg.lr_min)
            set_lr(opt, lr)
            t_lp = None if teacher is None else teacher[px.reshape(-1)].to(dev).float()
            ce, state = train_step(model, opt, cfg, x.to(dev), y.to(dev),
                                   state if carry else None, t_lp)
            if ema is not None:
                ema.update_parameters(model)
            step, n_batches = step + 1, n_batches + 1
            tot += ce  # the data's cross-entropy, comparable with or without teachers
            prog.update()
            if stop.out_of_steps(step):
                break
        scored = ema.module if ema is not None else model
        val = heldout_loss(scored, text.held_ids.to(dev), cfg.eval_streams)
        history.append({"epoch": epoch, "train_loss": round(tot / n_batches, 4),
                        "heldout_loss": round(val, 4), "lr": lr, "steps": n_batches,
                        "seconds": round(time.time() - t0, 1)})
        prog.write(f"epoch {epoch:2d} train {tot / n_batches:.4f} held-out {val:.4f} nats/char "
                   f"({val / math.log(2):.4f} bits) lr {lr:.2e} {time.time() - t0:.0f}s")
        if stop.improved(epoch, val):
            best_state = {k: v.detach().clone() for k, v in scored.state_dict().items()}
        if stop.should_stop(epoch, step):
            prog.write(stop.reason)
            break
    prog.close()
    model.load_state_dict(best_state)
    model.cpu().eval()
    return stop, history, step


def chargen_manifest(cfg: TrainConfig, text: Text, graph: onnx.ModelProto, checks: dict,
                     n_params: int, stop: Stopping, history: list[dict], step: int,
                     t_start: float) -> dict:
    """The manifest of a trained generator: its training record, and the held-out loss
    scored through ONNX Runtime on the exported graph."""
    written = len(text.train_ids) - text.real_chars
    training = {**asdict(cfg), "best_epoch": stop.best_epoch, "steps": step,
                "init_from_version": init_version(cfg),
                "distill_from_versions": [folder_version(str(f)) for f in
                                          teacher_folders(cfg.distill_from)],
                "distill_synthetic_from_versions": [
                    folder_version(str(f)) for f in
                    teacher_folders(cfg.distill_synthetic_from or cfg.distill_from)
                    if cfg.distill_synthetic],
                "stopped": stop.reason or "all epochs", "history": history,
                "minutes": round((time.time() - t_start) / 60, 1), "torch": torch.__version__}
    source = source_record(cfg.data)
    metrics = chargen_loss_onnx(graph.SerializeToString(), text.vocab, text.held_text,
                                streams=cfg.eval_streams, layers=cfg.layers, hidden=cfg.hidden,
                                progress=True)
    return {
        "name": cfg.name,
        # 1.<epochs trained in all>.<seed>: a continued model counts its base's epochs
        "version": f"1.{prior_epochs(init_version(cfg)) + stop.best_epoch}.{cfg.seed}",
        "task": "text-generation",
        "cell": cfg.cell,
        "architecture": f"char {cfg.cell.upper()} {cfg.layers}x{cfg.hidden}, "
                        f"embedding {cfg.emb_dim}",
        "parameters": n_params,
        "data": {**source, "heldout": f"last {cfg.heldout_fraction:.0%} of text",
                 "train_chars": text.real_chars, "teacher_written_chars": written,
                 "heldout_chars": len(text.held_ids)},
        "training": training,
        "metrics": metrics,
        "export_checks": checks,
        "state": {"layers": cfg.layers, "hidden": cfg.hidden},
        "evaluation_sets": evaluation_sets(metrics, {"heldout_": (
            f"held out: the last {cfg.heldout_fraction:.0%} of {source['source']} "
            f"({len(text.held_ids)} characters)")}),
    }


def train(cfg: TrainConfig) -> dict:
    out = run_folder(cfg.out, "chargen", cfg.replace_served)  # refused before any work
    check_options(cfg)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    set_threads(cfg.threads)
    t_start = time.time()
    raw = load_text(cfg.data, cfg.sha256).lower()
    vocab, init = load_init(cfg) if cfg.init_from else (None, None)
    text = add_teachers(cfg, encode_text(cfg, raw, vocab))
    model = CharLSTM(CharConfig(vocab_size=text.vocab.vocab_size, emb_dim=cfg.emb_dim,
                                hidden=cfg.hidden, layers=cfg.layers, dropout=cfg.dropout,
                                cell=cfg.cell, emb_dropout=cfg.emb_dropout))
    if init is not None:
        model.load_state_dict(init.state_dict())
    n_params = sum(p.numel() for p in model.parameters())
    written = len(text.train_ids) - text.real_chars
    per_epoch = batches_per_epoch(len(text.train_ids), cfg)
    print(f"chargen: vocab {text.vocab.vocab_size}, train {text.real_chars:,} chars"
          + (f" + {written:,} written by the teachers" if written else "") + ", held-out "
          f"{len(text.held_ids):,}, {n_params:,} params, "
          f"{'stateful' if cfg.stateful else 'zero-state'} chunks, {per_epoch} steps/epoch, "
          f"{planned_steps(per_epoch, cfg.epochs, cfg.max_steps)} steps planned", flush=True)
    stop, history, step = train_model(cfg, model, text, t_start)
    graph = build_char_graph(model)
    checks = check_char(model, graph)
    manifest = chargen_manifest(cfg, text, graph, checks, n_params, stop, history, step, t_start)
    write_model_folder(out, graph, text.vocab, manifest)
    plot_history(history, Path(out) / "curves.png",
                 f"{cfg.name}: char {cfg.cell.upper()} {cfg.layers}x{cfg.hidden}")
    print(json.dumps({"out": str(out), "heldout_loss": stop.best, "best_epoch": stop.best_epoch,
                      "export": checks}))
    return manifest


def main(argv: list[str] | None = None) -> int:
    return command_line(TrainConfig, train, __doc__, argv, choices={"cell": CELLS})


if __name__ == "__main__":
    raise SystemExit(main())
