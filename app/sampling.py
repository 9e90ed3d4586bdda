"""Next-character sampling: temperature, top-k, top-p, seeded; vectorised numpy.

Temperature follows the reference notes: p_i ∝ exp(log(p_i) / T), computed in float64
from the log-softmax of the logits; T = 0 is greedy (argmax, lowest id on ties).
top_k keeps the k likeliest characters (ties: lowest ids), top_p the smallest set
whose mass reaches p (always at least one). Banned ids (the unknown character) are
never returned.

``sample_rows`` draws one character for each row of a step's logits at once (the
generation engine calls it once per step for every active stream); every operation
is row-wise, so a row's result does not depend on the other rows (tested).
``sample`` is the same function for one row. Each stream owns a
``numpy.random.Generator`` seeded from its request and draws exactly one uniform
number per character, so its text depends on its seed and parameters only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None


def next_distributions(logits: np.ndarray, temperature: np.ndarray, top_k: np.ndarray,
                       top_p: np.ndarray, banned: tuple[int, ...] = ()) -> np.ndarray:
    """Row-wise distributions [B, V] (float64, each row sums to 1).

    temperature [B] (0 = greedy), top_k [B] (0 = off), top_p [B] (1.0 = off).
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
    # always renormalise, so a row computes the same whatever the other rows ask for
    probs /= probs.sum(axis=1, keepdims=True)
    return probs


def sample_rows(logits: np.ndarray, temperature: np.ndarray, top_k: np.ndarray,
                top_p: np.ndarray, u: np.ndarray, banned: tuple[int, ...] = ()) -> np.ndarray:
    """One id per row, by inverse CDF with the row's uniform draw ``u`` [B] in [0, 1)."""
    probs = next_distributions(logits, temperature, top_k, top_p, banned)
    csum = np.cumsum(probs, axis=1)
    target = u * csum[:, -1]
    idx = np.minimum((csum <= target[:, None]).sum(axis=1), probs.shape[1] - 1)
    # float round-off at the top end can land on a zero-probability id: step back
    for r in np.flatnonzero(probs[np.arange(len(idx)), idx] == 0.0):
        idx[r] = int(np.flatnonzero(probs[r] > 0)[-1])
    return idx


def params_arrays(params: list[SamplingParams]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.array([p.temperature for p in params], dtype=np.float64),
            np.array([p.top_k or 0 for p in params], dtype=np.int64),
            np.array([1.0 if p.top_p is None else p.top_p for p in params], dtype=np.float64))


def next_distribution(logits: np.ndarray, p: SamplingParams, banned: tuple[int, ...] = ()
                      ) -> np.ndarray:
    """The distribution one row's character is drawn from."""
    return next_distributions(logits[None], *params_arrays([p]), banned)[0]


def sample(logits: np.ndarray, p: SamplingParams, rng: np.random.Generator,
           banned: tuple[int, ...] = ()) -> int:
    """One row: draws exactly one uniform number from ``rng`` (also when greedy)."""
    u = np.array([rng.random()])
    return int(sample_rows(logits[None], *params_arrays([p]), u, banned)[0])
