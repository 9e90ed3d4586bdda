"""Next-character sampling: temperature, top-k, top-p, seeded; pure numpy.

Temperature follows the reference notes: p_i ∝ exp(log(p_i) / T), computed in float64
from the log-softmax of the logits; T = 0 is greedy (argmax, lowest id on ties).
top_k keeps the k likeliest characters, top_p the smallest set whose mass reaches p
(always at least one). Banned ids (the unknown character) are never returned.
Each stream owns a ``numpy.random.Generator`` seeded from its request's seed and
draws exactly one uniform number per character, so its text depends on its seed
and parameters only, never on other streams.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())


def next_distribution(logits: np.ndarray, p: SamplingParams, banned: tuple[int, ...] = ()
                      ) -> np.ndarray:
    """The distribution a character is drawn from (float64, sums to 1)."""
    lg = logits.astype(np.float64).copy()
    if banned:
        lg[list(banned)] = -np.inf
    logp = log_softmax(lg)
    if p.temperature == 0:
        out = np.zeros_like(logp)
        out[int(np.argmax(logp))] = 1.0
        return out
    z = logp / p.temperature  # log p_i / T
    keep = np.isfinite(z)
    if p.top_k is not None and p.top_k < int(keep.sum()):
        # ties at the k-th value: stable sort keeps the lowest ids
        order = np.argsort(-z, kind="stable")
        cut = np.zeros_like(keep)
        cut[order[: p.top_k]] = True
        keep &= cut
    z = np.where(keep, z, -np.inf)
    probs = np.exp(z - z[keep].max())
    probs /= probs.sum()
    if p.top_p is not None and p.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        csum = np.cumsum(probs[order])
        n_keep = int(np.searchsorted(csum, p.top_p, side="left")) + 1
        mask = np.zeros_like(keep)
        mask[order[:n_keep]] = True
        probs = np.where(mask, probs, 0.0)
        probs /= probs.sum()
    return probs


def sample(logits: np.ndarray, p: SamplingParams, rng: np.random.Generator,
           banned: tuple[int, ...] = ()) -> int:
    probs = next_distribution(logits, p, banned)
    u = rng.random()  # drawn even when greedy: one draw per character, always
    if p.temperature == 0:
        return int(np.argmax(probs))
    idx = int(np.searchsorted(np.cumsum(probs), u * probs.sum(), side="right"))
    # guard float round-off at the top end; never land on a zero-probability id
    idx = min(idx, len(probs) - 1)
    while probs[idx] == 0.0 and idx > 0:
        idx -= 1
    return idx
