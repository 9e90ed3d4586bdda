"""The two recurrent models, in PyTorch (training only; the service runs ONNX).

Each takes its recurrent cell from its config: ``lstm`` (the default), ``gru`` or a
vanilla ``rnn`` (tanh), so the three can be compared on the same task. The class names
keep "LSTM" for the default cell.

SentimentLSTM: Embedding -> bidirectional recurrent encoder -> dot-product (Luong)
attention -> dense -> probability:
    s   = final hidden state (forward and backward, concatenated)    [B, 2H]
    h_i = encoder hidden state at token i                             [B, T, 2H]
    e_i = s^T h_i;  a = softmax(e) over real tokens only;  c = sum_i a_i h_i
    s_hat = tanh(W_c [c; s] + b_c);  p = sigmoid(w^T s_hat + b)

CharLSTM: Embedding -> stacked recurrent layers -> logits over the character
vocabulary. Its state is always a pair (h, c): a GRU or a vanilla RNN has no cell
state, so its ``c`` is carried through unchanged, and the exported step graph keeps
one interface (h0, c0 -> hN, cN) whatever the cell.

Padding never reaches a result. Instead of pack_padded_sequence (about 6x slower on
CPU) the bidirectional LSTM runs as two dense unidirectional LSTMs: the forward one
over right-padded input (its outputs at real positions cannot see the padding that
follows), the backward one over each row reversed *within its length*. This is
exactly what the ONNX LSTM with ``sequence_lens`` computes, which export checks.

References: Luong, Pham & Manning 2015 (attention); Karpathy, char-rnn (2015).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MASK_VALUE = -1e9  # added to pad scores before the softmax (same constant in ONNX)
CELLS = ("lstm", "gru", "rnn")
# Words that negate what follows (the tokenizer keeps "didn't", "wasn't" ... whole, and
# every vocabulary word ending in "n't" counts too). Punctuation is not in the ids, so
# a negator's scope is a fixed window of the words after it.
NEGATORS = frozenset({"not", "no", "never", "nothing", "none", "nobody", "neither", "nor",
                      "nowhere", "hardly", "barely", "without", "cannot", "dont", "didnt",
                      "doesnt", "isnt", "wasnt", "arent", "werent", "cant", "wont", "couldnt",
                      "wouldnt", "shouldnt", "havent", "hasnt", "hadnt", "aint"})


# Words that negate what follows without a "not": "failed to impress", "lacks charm".
IMPLICIT_NEGATORS = frozenset({"fail", "fails", "failed", "failing", "lack", "lacks", "lacked",
                               "lacking", "impossible", "refuse", "refused"})


def negator_table(itos: list[str], implicit: bool = False) -> np.ndarray:
    """[vocab] int64: 1 for a negator's id (with ``implicit``, IMPLICIT_NEGATORS too),
    else 0 (padding and <unk> are 0)."""
    words = NEGATORS | IMPLICIT_NEGATORS if implicit else NEGATORS
    return np.array([int(w in words or w.endswith("n't")) for w in itos], dtype=np.int64)


def negation_scope(ids: torch.Tensor, table: torch.Tensor, window: int, parity: bool = False
                   ) -> torch.Tensor:
    """[B, T] int64: 1 where one of the ``window`` words before is a negator (with
    ``parity``: an odd number of them, so "wasn't ... didn't like" cancels)."""
    neg = table[ids]
    scope = torch.zeros_like(ids)
    shifted = neg
    for _ in range(window):
        shifted = torch.cat([torch.zeros_like(ids[:, :1]), shifted[:, :-1]], 1)
        scope = scope + shifted if parity else torch.maximum(scope, shifted)
    return scope % 2 if parity else scope


def recurrent_layer(cell: str, input_size: int, hidden: int, num_layers: int = 1,
                    dropout: float = 0.0) -> nn.RNNBase:
    """A batch-first recurrent layer of the named cell."""
    kinds = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
    if cell not in kinds:
        raise ValueError(f"cell must be one of {', '.join(CELLS)} (got {cell!r})")
    return kinds[cell](input_size, hidden, num_layers=num_layers, batch_first=True,
                       dropout=dropout if num_layers > 1 else 0.0)


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first ``lengths[b]`` steps, leave its padding in place.

    x: [B, T, ...]. The map is its own inverse.
    """
    B, T = x.shape[:2]
    t = torch.arange(T, device=x.device).unsqueeze(0).expand(B, T)
    L = lengths.unsqueeze(1)
    idx = torch.where(t < L, L - 1 - t, t)
    idx = idx.view(B, T, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, idx)


@dataclass
class SentimentConfig:
    vocab_size: int = 20000
    emb_dim: int = 128
    hidden: int = 128
    emb_dropout: float = 0.3
    out_dropout: float = 0.5
    cell: str = "lstm"
    negation_window: int = 0  # > 0: the encoder sees a negator's scope (below)
    labels: int = 2  # 2: one logit (P(second label)); more: one logit per label (softmax)


class SentimentLSTM(nn.Module):
    def __init__(self, cfg: SentimentConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.emb_dim, padding_idx=0)
        self.rnn_fwd = recurrent_layer(cfg.cell, cfg.emb_dim, cfg.hidden)
        self.rnn_bwd = recurrent_layer(cfg.cell, cfg.emb_dim, cfg.hidden)
        self.attn_combine = nn.Linear(4 * cfg.hidden, 2 * cfg.hidden)  # W_c, b_c
        self.out = nn.Linear(2 * cfg.hidden, 1 if cfg.labels <= 2 else cfg.labels)
        if cfg.negation_window > 0:
            # A word within ``negation_window`` words after a negator gets a learned
            # vector added to its embedding ("bad" in "not bad"), so the encoder reads
            # the scope instead of inferring it; it starts at zero (the model without it).
            self.neg_embedding = nn.Embedding(2, cfg.emb_dim)
            nn.init.zeros_(self.neg_embedding.weight)
            self.register_buffer("neg_table", torch.zeros(cfg.vocab_size, dtype=torch.long))

    def set_negators(self, table: np.ndarray) -> None:
        """The [vocab] 0/1 negator table (``negator_table(itos)``)."""
        self.neg_table.copy_(torch.from_numpy(np.array(table, dtype=np.int64)))

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, T] -> the encoder's input [B, T, E]: word embeddings, plus the
        negation-scope vector where the model has one."""
        emb = self.embedding(ids)
        if self.cfg.negation_window > 0:
            scope = negation_scope(ids, self.neg_table, self.cfg.negation_window)
            emb = emb + self.neg_embedding(scope)
        return emb

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [B, T] (right-padded), lengths [B] >= 1 -> (logit [B], attention [B, T]);
        a model of more than two labels: logits [B, labels]."""
        return self.from_embeddings(self.embed(ids), lengths)

    def from_embeddings(self, emb: torch.Tensor, lengths: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """The rest of ``forward`` from ``embed``'s output [B, T, E] (adversarial
        training perturbs it here)."""
        B, T = emb.shape[:2]
        x = F.dropout(emb, self.cfg.emb_dropout, self.training)  # [B,T,E]
        h_f, _ = self.rnn_fwd(x)  # [B,T,H]
        h_b_rev, _ = self.rnn_bwd(reverse_within_length(x, lengths))
        h_b = reverse_within_length(h_b_rev, lengths)
        last = (lengths - 1).view(B, 1, 1).expand(B, 1, self.cfg.hidden)
        s = torch.cat([h_f.gather(1, last), h_b_rev.gather(1, last)], -1).squeeze(1)  # [B,2H]
        mask = torch.arange(T, device=emb.device).unsqueeze(0) < lengths.unsqueeze(1)  # [B,T]
        h = torch.cat([h_f, h_b], -1) * mask.unsqueeze(-1)  # [B,T,2H], pads zeroed
        e = torch.bmm(h, s.unsqueeze(2)).squeeze(2)  # [B,T]
        a = torch.softmax(e.masked_fill(~mask, MASK_VALUE), dim=1)
        c = torch.bmm(a.unsqueeze(1), h).squeeze(1)  # [B,2H]
        s_hat = torch.tanh(self.attn_combine(torch.cat([c, s], -1)))
        logit = self.out(F.dropout(s_hat, self.cfg.out_dropout, self.training))
        return (logit.squeeze(-1) if self.cfg.labels <= 2 else logit), a


def head_loss(logit: torch.Tensor, y: torch.Tensor, offset: torch.Tensor | float = 0.0,
              reduction: str = "mean") -> torch.Tensor:
    """The classifier's loss: binary cross-entropy of one logit a row ([B], two labels;
    ``offset`` added to it), or cross-entropy of one logit a label ([B, labels])."""
    if logit.dim() == 1:
        return F.binary_cross_entropy_with_logits(logit + offset, y.float(),
                                                  reduction=reduction)
    return F.cross_entropy(logit, y.long(), reduction=reduction)


def head_prediction(logit: torch.Tensor) -> torch.Tensor:
    """The predicted label index of each row (float, as the targets are)."""
    return (logit > 0).float() if logit.dim() == 1 else logit.argmax(-1).float()


def head_probabilities(logit: torch.Tensor) -> torch.Tensor:
    """What the exported graph's ``probability`` output holds: sigmoid (two labels) or
    softmax over the labels."""
    return torch.sigmoid(logit) if logit.dim() == 1 else torch.softmax(logit, -1)


@dataclass
class CharConfig:
    vocab_size: int = 60
    emb_dim: int = 64
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.1  # between the recurrent layers and before the head
    cell: str = "lstm"
    emb_dropout: float | None = None  # on the embeddings; None: the same as ``dropout``


class CharLSTM(nn.Module):
    def __init__(self, cfg: CharConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.rnn = recurrent_layer(cfg.cell, cfg.emb_dim, cfg.hidden, cfg.layers, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)
        self.emb_drop = nn.Dropout(cfg.dropout if cfg.emb_dropout is None else cfg.emb_dropout)
        self.head = nn.Linear(cfg.hidden, cfg.vocab_size)

    def run_rnn(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x [B, T, E] -> (outputs [B, T, H], (h, c)); c passes through a GRU or RNN."""
        if self.cfg.cell == "lstm":
            return self.rnn(x, state)
        h0, c0 = state if state is not None else (None, None)
        y, h = self.rnn(x, h0)
        return y, (h, c0 if c0 is not None else torch.zeros_like(h))

    def forward(self, ids: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """ids [B, T] -> (logits [B, T, V], (h, c) each [layers, B, H])."""
        y, state = self.run_rnn(self.emb_drop(self.embedding(ids)), state)
        return self.head(self.drop(y)), state

    def last_step(self, ids: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
                  ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """What the step graph returns for one row: ids [1, n] from ``state`` (each
        [layers, 1, H]) -> (logits [V] after the last char, state). n = 0 keeps the state
        and reads the logits from its top layer."""
        if ids.shape[1] == 0:
            return self.head(state[0][-1])[0], state
        y, state = self.run_rnn(self.embedding(ids), state)
        return self.head(y[0, -1]), state


class CharEnsemble(nn.Module):
    """Several char models as one generator: the next-char distribution is the
    equal-weight average of the members' (its log is returned as the logits), and the
    state is the members' states side by side along the hidden axis."""

    def __init__(self, members: list[CharLSTM]):
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        first = members[0].cfg
        for m in members[1:]:
            if (m.cfg.layers, m.cfg.vocab_size) != (first.layers, first.vocab_size):
                raise ValueError("ensemble members need the same layers and vocabulary: "
                                 f"{[(x.cfg.layers, x.cfg.vocab_size) for x in members]}")
        self.members = nn.ModuleList(members)
        cells = sorted({m.cfg.cell for m in members})
        self.cfg = CharConfig(vocab_size=first.vocab_size, emb_dim=first.emb_dim,
                              hidden=sum(m.cfg.hidden for m in members), layers=first.layers,
                              cell="+".join(cells))
        self.widths = [m.cfg.hidden for m in members]

    def _split(self, state):
        return zip(torch.split(state[0], self.widths, dim=-1),
                   torch.split(state[1], self.widths, dim=-1), strict=True)

    def _mix(self, logits: list[torch.Tensor]) -> torch.Tensor:
        lp = torch.stack([torch.log_softmax(x, -1) for x in logits])
        return torch.logsumexp(lp, 0) - math.log(len(logits))

    def forward(self, ids: torch.Tensor, state=None):
        """ids [B, T] -> (log of the averaged distribution [B, T, V], packed state)."""
        parts = self._split(state) if state is not None else [None] * len(self.members)
        outs = [m(ids, st) for m, st in zip(self.members, parts, strict=True)]
        return self._mix([o[0] for o in outs]), (
            torch.cat([o[1][0] for o in outs], -1), torch.cat([o[1][1] for o in outs], -1))

    def last_step(self, ids: torch.Tensor, state):
        outs = [m.last_step(ids, st) for m, st in zip(self.members, self._split(state),
                                                       strict=True)]
        return self._mix([o[0] for o in outs]), (
            torch.cat([o[1][0] for o in outs], -1), torch.cat([o[1][1] for o in outs], -1))
