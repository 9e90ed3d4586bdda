"""The text classifier (IMDB sentiment with attention): its stages.

- load: the graph takes ``input_ids`` [B, T] and ``lengths`` [B] (int64) and returns
  ``probability`` [B] (or [B, 1]: the probability of the manifest's second label; or
  [B, 2]: one column per label, in the manifest's ``labels`` order; a model of more
  than two labels: [B, labels], one column per label, summing to 1) and, optionally,
  ``attention`` [B, T] (without it /attention answers 400); a graph with a wide n-gram
  term (training/ngrams.py) also returns ``ngram_contributions`` [B, T], each token's
  share of the n-gram part of the logit. These are roles: the manifest's ``tensors``
  maps a role to the graph's own tensor name (an imported graph's, ``python -m
  seqcore.folder import``); a role it does not map is the tensor of the role's name;
- encode: ``WordTokenizer.encode`` (head+tail truncation, offsets for /attention);
- run: one padded batch (``seqcore.runtime.pad_rows``);
- decode: ``result`` (label, score, probabilities) and ``explanation`` (the tokens
  with their attention weights, and the n-gram term when the graph has one).

Calls may come from several threads at once (ONNX Runtime sessions may be run
concurrently); each call uses the session's intra-op threads.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnxruntime as ort

from seqcore.modelfolder import ModelFolder
from seqcore.split import DirectionSplit, load_split
from seqcore.tasks import LoadedModel, ModelLoadError, probe_batch, register
from seqcore.tokenizer import Encoded, WordTokenizer

INPUTS = {"input_ids", "lengths"}
OUTPUTS = ["probability", "attention"]
NGRAM_OUTPUT = "ngram_contributions"
# the task's roles (manifest "tensors": role -> the graph's tensor name)
ROLES = ("input_ids", "lengths", "probability", "attention", NGRAM_OUTPUT)
OPTIONAL_ROLES = ("attention", NGRAM_OUTPUT)
LABELS = ("negative", "positive")  # the labels this service answers with


def tensor_roles(folder: ModelFolder) -> dict[str, str]:
    """Role -> the graph's tensor name, from the manifest's ``tensors`` (a role it does
    not name is the tensor of the role's own name)."""
    given = folder.manifest.get("tensors") or {}
    where = folder.manifest_path
    if not isinstance(given, dict) or not all(isinstance(v, str) and v for v in given.values()):
        raise ModelLoadError(f"{where}: \"tensors\" must map roles to tensor names "
                             f"(roles: {', '.join(ROLES)})", "contract")
    unknown = sorted(set(given) - set(ROLES))
    if unknown:
        raise ModelLoadError(f"{where}: \"tensors\" names unknown roles {unknown} (roles of "
                             f"a text-classification model: {', '.join(ROLES)})", "contract")
    return {role: given.get(role, role) for role in ROLES}


def check_roles(folder: ModelFolder, sess: ort.InferenceSession, names: dict[str, str]
                ) -> set[str]:
    """The optional roles the graph has; ``ModelLoadError`` (the contract check) saying
    what the graph has when its inputs are not exactly ids and lengths (int64), it has
    no probability output, or an output the manifest maps explicitly is missing."""
    ins = {i.name: i.type for i in sess.get_inputs()}
    outs = {o.name: o.shape for o in sess.get_outputs()}
    want_in = {names["input_ids"], names["lengths"]}
    mapped = set(folder.manifest.get("tensors") or {})
    missing_out = [r for r in ("probability", *OPTIONAL_ROLES)
                   if names[r] not in outs and (r == "probability" or r in mapped)]
    if set(ins) != want_in or missing_out:
        roles = ", ".join(f"{r}={names[r]}" for r in ROLES)
        raise ModelLoadError(
            f"{folder.graph_path}: the graph has inputs {sorted(ins)} and outputs "
            f"{sorted(outs)}; a text-classification model needs inputs input_ids and "
            f"lengths and a probability output, attention optional (roles now: {roles}; "
            "map them to the graph's names with the manifest's \"tensors\", e.g. python -m "
            "seqcore.folder import --map input_ids=tokens,probability=prob)", "contract")
    wrong = [f"{n} is {t}" for n, t in ins.items() if t != "tensor(int64)"]
    if wrong:
        raise ModelLoadError(f"{folder.graph_path}: {', '.join(wrong)}; the service feeds "
                             "tensor(int64) token ids and lengths", "contract")
    return {r for r in OPTIONAL_ROLES if names[r] in outs}


def label_order(folder: ModelFolder) -> tuple[str, ...]:
    """The manifest's ``labels`` (default negative, positive), in the order of the
    probability output's columns: two or more distinct non-empty names."""
    labels = folder.manifest.get("labels", list(LABELS))
    if (not isinstance(labels, list) or len(labels) < 2
            or not all(isinstance(x, str) and x for x in labels)
            or len(set(labels)) != len(labels)):
        raise ModelLoadError(f"{folder.manifest_path}: \"labels\" is {labels!r}; "
                             "expected two or more distinct label names in the order of the "
                             f"probability output's columns (e.g. {list(LABELS)})", "contract")
    return tuple(labels)


@dataclass
class ClassifiedRow:
    """One row's outputs, cut to the row's own length."""

    probability: float | np.ndarray  # P(second label); [labels]: a model of more labels
    attention: np.ndarray  # [len(ids)]
    ngrams: np.ndarray | None = None  # [len(ids)]: n-gram logit share per token, if any


class NegationScope(NamedTuple):
    """Where the n-gram term reads a negator's scope (manifest ``ngram.negation``)."""

    negators: frozenset[int]  # token ids
    window: int  # words before a position that are searched for negators
    parity: bool = False  # in scope after an odd number of them only
    first_word: bool = False  # an n-gram's scope is its first word's, not its last's

    def at(self, ids: list[int]) -> list[bool]:
        """Per position: a negator among the ``window`` words before it (with parity:
        an odd number of them), exactly as the graph decides."""
        out = []
        for k in range(len(ids)):
            count = sum(i in self.negators for i in ids[max(0, k - self.window):k])
            out.append(count % 2 == 1 if self.parity else count > 0)
        return out


class ContrastScope(NamedTuple):
    """The n-grams followed by a contrast word (manifest ``ngram.contrast``)."""

    words: frozenset[int]  # token ids of "but", "though", ...
    window: int  # words after a position that are searched for one

    def at(self, ids: list[int]) -> list[bool]:
        """Per position: a contrast word among the ``window`` words after it."""
        return [any(i in self.words for i in ids[k + 1:k + 1 + self.window])
                for k in range(len(ids))]


@register
@dataclass
class SentimentModel(LoadedModel):
    task = "text-classification"
    tokenizer: WordTokenizer | None = None
    has_ngrams: bool = False  # the graph also returns NGRAM_OUTPUT
    # the n-gram term's negation scope (manifest "ngram.negation")
    negation: NegationScope | None = None
    contrast: ContrastScope | None = None  # manifest "ngram.contrast"
    # the graph cut into its two recurrent directions, for lone calls (seqcore/split.py)
    split: DirectionSplit | None = None
    names: dict[str, str] | None = None  # role -> the graph's tensor name
    has_attention: bool = True  # the graph returns attention weights (/attention)
    # the probability output's last column is P(positive) (else P(negative))
    second_is_positive: bool = True
    # the labels answered with: negative, positive (whatever the graph's column order)
    # for the two-label models of IMDB; else the manifest's, in the graph's order
    labels: tuple[str, ...] = LABELS

    @property
    def multi(self) -> bool:
        """More than two labels: ``probability`` holds one column per label."""
        return len(self.labels) > 2

    # -- load ----------------------------------------------------------------------
    @classmethod
    def from_folder(cls, folder: ModelFolder, common: dict[str, Any]) -> SentimentModel:
        names = tensor_roles(folder)
        optional = check_roles(folder, common["session"], names)
        labels = label_order(folder)
        outputs = {r for r in ROLES if r in optional or r not in OPTIONAL_ROLES}
        try:
            tok = WordTokenizer.from_json(folder.vocab_json())
        except (KeyError, ValueError, TypeError) as e:
            raise ModelLoadError(f"{folder.vocab_path}: not a word vocabulary of this project "
                                 f"({type(e).__name__}: {e}); the format is in docs/models.md "
                                 "(vocab.json), and python -m seqcore.folder import writes it "
                                 "from a word list") from None
        ngram = folder.manifest.get("ngram") or {}
        neg, con = ngram.get("negation") or None, ngram.get("contrast") or None
        negation = contrast = None
        if neg and NGRAM_OUTPUT in outputs:
            ids = frozenset(tok.stoi[w] for w in neg.get("negators", []) if w in tok.stoi)
            negation = NegationScope(ids, int(neg.get("window", 0)),
                                     bool(neg.get("parity", False)),
                                     neg.get("scope_from", "last_word") == "first_word")
        if con and NGRAM_OUTPUT in outputs:
            ids = frozenset(tok.stoi[w] for w in con.get("words", []) if w in tok.stoi)
            contrast = ContrastScope(ids, int(con.get("window", 0)))
        return cls(**common, tokenizer=tok, has_ngrams=NGRAM_OUTPUT in outputs,
                   negation=negation, contrast=contrast, names=names,
                   has_attention="attention" in outputs,
                   # other labels: the last column is P(labels[-1]) as it stands
                   second_is_positive=labels[1] == "positive" or set(labels) != set(LABELS),
                   labels=LABELS if set(labels) == set(LABELS) else labels)

    @property
    def plain(self) -> bool:
        """The graph's tensors have the roles' names and it has attention (the graphs
        training exports): its recurrent directions may be split."""
        return self.has_attention and all(self.names is None or self.names[r] == r
                                           for r in ROLES)

    # -- encode --------------------------------------------------------------------
    def encode(self, text: str, offsets: bool = True) -> Encoded:
        assert self.tokenizer is not None
        return self.tokenizer.encode(text, offsets=offsets)

    def prepare_split(self, graph: Path,
                      make_session: Callable[..., ort.InferenceSession]) -> None:
        """Cut the graph into its recurrent directions for lone calls, if it can be
        and the pieces answer as the whole graph does (seqcore/split.py)."""
        if not self.plain:
            return
        ids, lens = probe_batch(self.probe_vocab)
        self.split = load_split(graph, self.session, make_session,
                                {"input_ids": ids, "lengths": lens})

    def describe(self) -> dict[str, Any]:
        # whether a lone call runs its two recurrent directions side by side; whether
        # /attention can explain its answers
        return {**super().describe(), "split_lone_calls": self.split is not None,
                "attention": self.has_attention}

    # -- run -----------------------------------------------------------------------
    def run(self, ids: np.ndarray, lengths: np.ndarray, assist: Executor | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(probability [B], attention [B, T], n-gram contributions [B, T] or None).
        With ``assist`` (a helper thread, given when the other core is idle) and a
        split graph, the two recurrent directions run side by side; the answer is the
        same."""
        if self.plain:
            feed = {"input_ids": ids, "lengths": lengths}
            names = [*OUTPUTS, NGRAM_OUTPUT] if self.has_ngrams else OUTPUTS
            if assist is not None and self.split is not None:
                out = self.split.run(names, feed, assist)
            else:
                out = self.session.run(names, feed)
            return out[0], out[1], out[2] if self.has_ngrams else None
        # a graph with other tensor names or without attention (an imported one)
        n = self.names or {r: r for r in ROLES}
        roles = ["probability", *(r for r, has in (("attention", self.has_attention),
                                                   (NGRAM_OUTPUT, self.has_ngrams)) if has)]
        got = dict(zip(roles, self.session.run([n[r] for r in roles],
                                               {n["input_ids"]: ids, n["lengths"]: lengths}),
                       strict=True))
        p = np.asarray(got["probability"], dtype=np.float32).reshape(len(ids), -1)
        if self.multi:
            if p.shape[1] != len(self.labels):
                raise ValueError(f"the probability output has {p.shape[1]} columns, the "
                                 f"manifest {len(self.labels)} labels")
        else:
            p = p[:, -1]
        if not self.multi and not self.second_is_positive:
            p = 1.0 - p
        attention = got.get("attention")
        if attention is None:  # no weights: /attention refuses this model
            attention = np.zeros(ids.shape, dtype=np.float32)
        return p, attention, got.get(NGRAM_OUTPUT)

    def warmup(self) -> None:
        tok = self.tokenizer
        assert tok is not None
        for B, T in ((1, 8), (1, tok.max_len), (4, tok.max_len)):
            ids = np.full((B, T), tok.unk_id, dtype=np.int64)
            lens = np.full(B, T, dtype=np.int64)
            self.run(ids, lens)
            if self.split is not None and B == 1:  # lone calls are mostly one row
                self.split.run(OUTPUTS, {"input_ids": ids, "lengths": lens})

    def probe(self, ids: np.ndarray, lens: np.ndarray) -> np.ndarray:
        return self.run(ids, lens)[0]

    @property
    def probe_vocab(self) -> int:
        return self.tokenizer.vocab_size if self.tokenizer else 2

    def probe_problem(self, out: np.ndarray) -> str | None:
        lo, hi = float(np.min(out)), float(np.max(out))
        if lo < 0.0 or hi > 1.0:
            return (f"the probability output lies in [{lo:.3g}, {hi:.3g}], not in [0, 1]: a "
                    "logit? end the graph with a sigmoid (one column) or a softmax (two)")
        return None

    # -- decode --------------------------------------------------------------------
    def probabilities(self, p: float | np.ndarray) -> dict[str, float]:
        """Label -> probability, in the model's label order, of one row's output."""
        if self.multi:
            return {name: float(x) for name, x in zip(self.labels, p, strict=True)}
        return {self.labels[0]: 1.0 - p, self.labels[1]: p}  # type: ignore[operator]

    def label_of(self, p: float | np.ndarray) -> str:
        """The predicted label: the likeliest (the first among equals); of two labels,
        the second at p >= 0.5."""
        if self.multi:
            return self.labels[int(np.argmax(p))]
        return self.labels[1] if p >= 0.5 else self.labels[0]  # type: ignore[operator]

    def result(self, p: float | np.ndarray, e: Encoded) -> dict[str, Any]:
        """A SentimentResult as a plain dict (the schema classes document it; building
        it directly skips a re-validation of every answer). ``p``: P(second label) of a
        two-label model, one probability per label of a model of more."""
        if self.multi or self.labels != LABELS:
            probs = self.probabilities(p)
            label = self.label_of(p)
            return {"label": label, "score": probs[label], "probabilities": probs,
                    "model": self.name, "model_version": self.version,
                    "tokens_read": len(e.ids), "truncated": e.truncated}
        label = "positive" if p >= 0.5 else "negative"
        return {"label": label, "score": p if label == "positive" else 1.0 - p,
                "probabilities": {"negative": 1.0 - p, "positive": p},
                "model": self.name, "model_version": self.version,
                "tokens_read": len(e.ids), "truncated": e.truncated}

    def explanation(self, text: str, e: Encoded, row: ClassifiedRow) -> dict[str, Any]:
        """The answer of /attention: the result, every token read with its attention
        weight, and the n-gram term when the graph has one. A text without a single
        token was read as one <unk>; it has no token to show."""
        tokens = [{"text": t.text, "start": t.start, "end": t.end, "weight": w}
                  for t, w in zip(e.tokens, row.attention.tolist(), strict=False)]
        answer = {**self.result(row.probability, e), "tokens": tokens}
        if row.ngrams is not None:
            answer.update(ngram_answer(text, e, row.ngrams.tolist(), self.negation,
                                       self.contrast))
        return answer


def ngram_answer(text: str, e: Encoded, contributions: list[float],
                 negation: NegationScope | None = None,
                 contrast: ContrastScope | None = None) -> dict[str, Any]:
    """The n-gram term's part of the answer (models that have one): its logit, and per
    token the contribution of the n-grams ending there, with the trigram's text, and
    (models with a negation scope) which of them
    were read as negated: ``negated_orders`` for the uni-, bi- and trigram ending at
    the token (each in its last word's scope, or with ``first_word`` its first
    word's), ``negated`` whether any was; (models with a contrast scope) whether a
    contrast word follows within its window (``before_contrast``)."""
    grams = []
    scope = negation.at(e.ids) if negation is not None else []
    before = contrast.at(e.ids) if contrast is not None else []
    for k, (t, v) in enumerate(zip(e.tokens, contributions, strict=False)):
        first = e.tokens[max(0, k - 2)]
        start = first.start if first.start <= t.start else t.start  # head/tail junction
        gram: dict[str, Any] = {"text": text[start:t.end], "start": start, "end": t.end,
                                "contribution": v}
        if negation is not None:
            # the uni-, bi- and trigram ending at k start at k, k - 1, k - 2 (if >= 0)
            orders = [k - n >= 0 and scope[k - n if negation.first_word else k]
                      for n in range(3)]
            gram["negated"] = any(orders)
            gram["negated_orders"] = orders
        if contrast is not None:
            gram["before_contrast"] = before[k]
        grams.append(gram)
    grams.sort(key=lambda g: -abs(g["contribution"]))
    return {"ngram_logit": float(sum(contributions)), "ngrams": grams}
