"""Next-character sampling: temperature, top-k, top-p, seeded; vectorised numpy.

Temperature follows the reference notes: p_i ∝ exp(log(p_i) / T), computed in float64
from the log-softmax of the logits; T = 0 is greedy (argmax, lowest id on ties).
top_k keeps the k likeliest characters (ties: lowest ids), top_p the smallest set
whose mass reaches p (always at least one), min_p the characters at least min_p times
as likely as the likeliest one (vLLM's min_p, on the tempered distribution). Banned
ids (the unknown character) are never returned.

``repetition_penalty`` is the CTRL / Hugging Face / vLLM / TGI rule, applied to the
raw logits before everything else: the logit of every character already seen (in the
prompt or the text generated so far) is divided by the penalty when positive and
multiplied by it when negative. It needs per-stream state (which characters were
seen): a ``RepetitionPenalty`` per stream, which ``RowSampler`` applies and updates.

``sample_rows`` draws one character for each row of a step's logits at once (the
generation engine calls it once per step for every active stream); every operation
is row-wise, so a row's result does not depend on the other rows (tested).
``sample`` is the same function for one row. Each stream owns a
``numpy.random.Generator`` seeded from its request and draws exactly one uniform
number per character, so its text depends on its seed and parameters only.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None  # None or 0: off
    repetition_penalty: float | None = None  # None or 1: off


class RepetitionPenalty:
    """One stream's repetition penalty: the characters seen so far (the prompt's, then
    each sampled one) and the rule of the module docstring."""

    __slots__ = ("penalty", "seen")

    def __init__(self, penalty: float, prompt_ids: list[int], vocab: int):
        self.penalty = float(penalty)
        self.seen = np.zeros(vocab, dtype=bool)
        ids = [i for i in prompt_ids if 0 <= i < vocab]
        self.seen[ids] = True

    @classmethod
    def for_stream(cls, params: SamplingParams, prompt_ids: list[int], vocab: int
                   ) -> RepetitionPenalty | None:
        p = params.repetition_penalty
        return None if p is None or p == 1.0 else cls(p, prompt_ids, vocab)

    def apply(self, row: np.ndarray) -> np.ndarray:
        """The row's logits (float64, a new array) with the seen characters penalised."""
        z = np.asarray(row, dtype=np.float64).copy()
        s = self.seen[: len(z)]
        z[s] = np.where(z[s] > 0, z[s] / self.penalty, z[s] * self.penalty)
        return z

    def observe(self, idx: int) -> None:
        self.seen[idx] = True


def next_distributions(logits: np.ndarray, temperature: np.ndarray, top_k: np.ndarray,
                       top_p: np.ndarray, banned: tuple[int, ...] = (),
                       min_p: np.ndarray | None = None) -> np.ndarray:
    """Row-wise distributions [B, V] (float64, each row sums to 1).

    temperature [B] (0 = greedy), top_k [B] (0 = off), top_p [B] (1.0 = off),
    min_p [B] (0 = off; None: off for every row).
    """
    lg = np.array(logits, dtype=np.float64)  # copy
    B, V = lg.shape
    if banned:
        lg[:, list(banned)] = -np.inf
    m = lg.max(axis=1, keepdims=True)
    logp = lg - m - np.log(np.exp(lg - m).sum(axis=1, keepdims=True))
    greedy = temperature == 0
    # log p_i / T, shifted so each row's largest entry is exactly 0 first (the same
    # distribution): with a tiny T such as 1e-310 the division would otherwise turn
    # every entry into -inf and the whole row into NaN (then a banned id came out).
    with np.errstate(over="ignore"):
        z = (logp - logp.max(axis=1, keepdims=True)) / np.where(greedy, 1.0, temperature)[:, None]
    use_k, use_p = bool((top_k > 0).any()), bool((top_p < 1.0).any())
    keep = np.isfinite(z)
    if use_k or use_p:  # the sort is only needed for top-k / top-p rows
        order = np.argsort(-z, axis=1, kind="stable")  # likeliest first, ties by lowest id
        rank = order.argsort(axis=1)  # inverse permutation: rank[b, id]
    if use_k:
        keep &= (top_k[:, None] <= 0) | (rank < top_k[:, None])
    if greedy.any():  # greedy rows keep only their argmax (lowest id on ties)
        keep &= ~greedy[:, None] | (np.arange(V)[None, :] == np.argmax(z, axis=1)[:, None])
    z = np.where(keep, z, -np.inf)
    probs = np.exp(z - z.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    if use_p:
        # nucleus: in order of likelihood, keep entries until the mass reaches top_p
        csum = np.cumsum(np.take_along_axis(probs, order, axis=1), axis=1)
        n_keep = (csum < top_p[:, None]).sum(axis=1) + 1
        in_nucleus = (rank < n_keep[:, None]) | (top_p[:, None] >= 1.0)
        probs = np.where(in_nucleus, probs, 0.0)
    if min_p is not None and bool((min_p > 0).any()):
        # min_p: keep what is at least min_p times as likely as the likeliest character
        probs = np.where(probs >= min_p[:, None] * probs.max(axis=1, keepdims=True), probs, 0.0)
    # always renormalise, so a row computes the same whatever the other rows ask for
    probs /= probs.sum(axis=1, keepdims=True)
    return probs


def sample_rows(logits: np.ndarray, temperature: np.ndarray, top_k: np.ndarray,
                top_p: np.ndarray, u: np.ndarray, banned: tuple[int, ...] = (),
                min_p: np.ndarray | None = None) -> np.ndarray:
    """One id per row, by inverse CDF with the row's uniform draw ``u`` [B] in [0, 1).

    Rows with neither top-k nor top-p (the usual request) take a short path: greedy is
    an argmax, and temperature is one exp and one cumsum over the row, unnormalised
    (the inverse CDF scales the draw by the row's total instead), which is a sixth of
    the general path's numpy calls: sampling would otherwise cost as much as the model
    step at one stream. The short path computes the same distribution as
    ``next_distributions`` (z = (logit - max) / T, p ∝ exp z). Which path a row takes
    depends on its own parameters only, so a row samples the same alone or batched."""
    simple = (top_k <= 0) & (top_p >= 1.0) & ((temperature == 0) | (temperature > TINY_T))
    if min_p is not None:
        simple &= (min_p <= 0) | (temperature == 0)
    if simple.all():
        return _sample_simple(logits, temperature, u, banned)
    idx = np.empty(len(u), dtype=np.int64)
    rows = np.flatnonzero(simple)
    if len(rows):
        idx[rows] = _sample_simple(logits[rows], temperature[rows], u[rows], banned)
    rows = np.flatnonzero(~simple)
    idx[rows] = _sample_general(logits[rows], temperature[rows], top_k[rows], top_p[rows],
                                u[rows], banned, None if min_p is None else min_p[rows])
    return idx


# Below this temperature the short path's division could overflow; such rows take the
# general path, which shifts before it divides.
TINY_T = 1e-30


def _sample_simple(logits: np.ndarray, temperature: np.ndarray, u: np.ndarray,
                   banned: tuple[int, ...]) -> np.ndarray:
    z = logits.astype(np.float64)  # a copy
    if banned:
        z[:, list(banned)] = -np.inf
    greedy = temperature == 0
    some_greedy = bool(greedy.any())
    if some_greedy:
        top = z.argmax(axis=1)  # the lowest id on ties
        if greedy.all():
            return top
    t_col = (np.where(greedy, 1.0, temperature) if some_greedy else temperature)[:, None]
    idx = _draw_at_temperature(z, t_col, u)
    if some_greedy:
        idx = np.where(greedy, top, idx)
    return idx


def _draw_at_temperature(z: np.ndarray, t_col: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The short path's inverse CDF: ``z`` [B, V] float64 logits with banned ids at
    -inf (overwritten), ``t_col`` [B, 1] temperatures > TINY_T, ``u`` [B] draws."""
    z -= z.max(axis=1, keepdims=True)
    z /= t_col
    np.exp(z, out=z)
    csum = np.cumsum(z, axis=1, out=z)
    # the first id whose cumulative mass passes the draw: its own mass is > 0
    idx = (csum <= (u * csum[:, -1])[:, None]).sum(axis=1)
    if len(idx) and idx.max() >= csum.shape[1]:  # a draw at the very top (round-off)
        for r in np.flatnonzero(idx >= csum.shape[1]):
            idx[r] = int(np.flatnonzero(np.diff(csum[r], prepend=0.0) > 0)[-1])
    return idx


def _draw_one(row: list[float], t: float, u: float, banned: tuple[int, ...]) -> int:
    """``_draw_at_temperature`` for one row, in Python floats: the same float64 steps
    in the same order (shift by the max, divide, exp, running sum, count the sums <= the
    scaled draw). ``math.exp`` and numpy's exp may differ in the last bit, which can
    change an id only for a draw within ~1e-16 of a boundary."""
    for b in banned:
        row[b] = -math.inf
    m = max(row)
    exp = math.exp
    csum = list(accumulate([exp((x - m) / t) for x in row]))
    idx = bisect_right(csum, u * csum[-1])
    if idx >= len(csum):  # a draw at the very top (round-off): the last id with mass
        idx = max(i for i, x in enumerate(row) if x > -math.inf and exp((x - m) / t) > 0)
    return idx


def _sample_general(logits: np.ndarray, temperature: np.ndarray, top_k: np.ndarray,
                    top_p: np.ndarray, u: np.ndarray, banned: tuple[int, ...],
                    min_p: np.ndarray | None = None) -> np.ndarray:
    probs = next_distributions(logits, temperature, top_k, top_p, banned, min_p)
    csum = np.cumsum(probs, axis=1)
    target = u * csum[:, -1]
    idx = np.minimum((csum <= target[:, None]).sum(axis=1), probs.shape[1] - 1)
    # float round-off at the top end can land on a zero-probability id: step back
    for r in np.flatnonzero(probs[np.arange(len(idx)), idx] == 0.0):
        idx[r] = int(np.flatnonzero(probs[r] > 0)[-1])
    return idx


class RowSampler:
    """``sample_rows`` for a fixed set of rows (the active streams of a generation
    batch): what depends on the rows' parameters only is worked out once, when the
    rows change, instead of at every step. Same ids as ``sample_rows``."""

    __slots__ = ("temperature", "top_k", "top_p", "banned", "_all_simple", "_ban_row",
                 "_t_col", "_all_greedy", "_one_t", "min_p", "_penalties")

    def __init__(self, temperature: np.ndarray, top_k: np.ndarray, top_p: np.ndarray,
                 banned: tuple[int, ...] = (), vocab: int | None = None, *,
                 min_p: np.ndarray | None = None,
                 penalties: list[RepetitionPenalty | None] | None = None):
        """``min_p`` [B] (0 = off) and ``penalties`` (one per row, None = off) are the
        rows' other sampling rules; rows without them take the same paths as before."""
        self.temperature, self.top_k, self.top_p, self.banned = temperature, top_k, top_p, banned
        self.min_p = min_p if min_p is not None and bool((min_p > 0).any()) else None
        # (row, its penalty): applied to the logits before sampling, told the id after
        self._penalties = [(k, p) for k, p in enumerate(penalties or ()) if p is not None]
        simple = (top_k <= 0) & (top_p >= 1.0) & (temperature > TINY_T)
        if self.min_p is not None:
            simple &= self.min_p <= 0
        self._all_simple = bool(len(temperature)) and bool(simple.all()) and vocab is not None
        self._all_greedy = bool(len(temperature)) and bool((temperature == 0).all())
        self._t_col = temperature[:, None]
        # one row (a lone stream, the latency case): the same arithmetic in plain Python
        # floats, as ten numpy calls on a 60-wide row cost more than the math itself
        self._one_t = float(temperature[0]) if self._all_simple and len(temperature) == 1 else None
        self._ban_row = None
        if vocab is not None:
            self._ban_row = np.zeros(vocab, dtype=np.float64)
            self._ban_row[list(banned)] = -np.inf

    def __call__(self, logits: np.ndarray, u: np.ndarray | list[float]) -> np.ndarray:
        """One id per row; ``u``: one uniform draw per row (an array or a list)."""
        if not self._penalties:
            return self._draw(logits, u)
        logits = np.array(logits, dtype=np.float64)  # a copy: the caller's stays as it was
        for k, pen in self._penalties:
            logits[k] = pen.apply(logits[k])
        ids = self._draw(logits, u)
        for k, pen in self._penalties:
            pen.observe(int(ids[k]))
        return ids

    def _draw(self, logits: np.ndarray, u: np.ndarray | list[float]) -> np.ndarray:
        if self._one_t is not None and logits.shape[1] == len(self._ban_row):  # type: ignore[arg-type]
            return np.array([_draw_one(logits[0].tolist(), self._one_t, float(u[0]),
                                       self.banned)])
        u = np.asarray(u, dtype=np.float64)
        if not self._all_simple or logits.shape[1] != len(self._ban_row):  # type: ignore[arg-type]
            if self._all_greedy:
                return _sample_simple(logits, self.temperature, u, self.banned)
            return sample_rows(logits, self.temperature, self.top_k, self.top_p, u, self.banned,
                               self.min_p)
        # every row samples at a temperature: the short path of ``_sample_simple``,
        # with the banned ids masked by one addition (-inf) and no per-step checks
        return _draw_at_temperature(np.add(logits, self._ban_row, dtype=np.float64),
                                    self._t_col, u)


class Uniforms:
    """One stream's uniform draws in [0, 1), one per call: the same numbers in the same
    order as calling ``np.random.default_rng(seed).random()`` once per draw (tested),
    drawn from the generator ``block`` at a time. A call into a numpy Generator costs
    microseconds with cold caches, which at one stream is a measurable share of a step."""

    __slots__ = ("_rng", "_buf", "_i", "_block")

    def __init__(self, seed: int | None, block: int = 64):
        self._rng = np.random.default_rng(seed)
        self._buf: list[float] = []
        self._i = 0
        self._block = block

    def __call__(self) -> float:
        i = self._i
        if i == len(self._buf):
            self._buf, i = self._rng.random(self._block).tolist(), 0
        self._i = i + 1
        return self._buf[i]


def params_arrays(params: list[SamplingParams]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.array([p.temperature for p in params], dtype=np.float64),
            np.array([p.top_k or 0 for p in params], dtype=np.int64),
            np.array([1.0 if p.top_p is None else p.top_p for p in params], dtype=np.float64))


def min_p_array(params: list[SamplingParams]) -> np.ndarray:
    return np.array([p.min_p or 0.0 for p in params], dtype=np.float64)


def next_distribution(logits: np.ndarray, p: SamplingParams, banned: tuple[int, ...] = ()
                      ) -> np.ndarray:
    """The distribution one row's character is drawn from (without the repetition
    penalty, which depends on the text so far: ``RepetitionPenalty.apply`` first)."""
    return next_distributions(logits[None], *params_arrays([p]), banned, min_p_array([p]))[0]


def sample(logits: np.ndarray, p: SamplingParams, rng: np.random.Generator,
           banned: tuple[int, ...] = ()) -> int:
    """One row: draws exactly one uniform number from ``rng`` (also when greedy)."""
    u = np.array([rng.random()])
    return int(sample_rows(logits[None], *params_arrays([p]), u, banned, min_p_array([p]))[0])
