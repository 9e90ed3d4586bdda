"""Temperature sampling in plain numpy, for the benchmark's raw generation limit and
the LitServe peer (both may import only numpy and ``seqcore``, never ``app``).

``seqcore`` has no sampling function (the service's lives in ``app.sampling``), so this
is a local equivalent of what the service does per step for temperature-only requests:
log-softmax of the logits in float64, divided by T, the banned ids (``<unk>``) removed,
renormalised, and one id per row by inverse CDF with one uniform draw per row from
the row's own ``numpy.random.Generator``.
"""

from __future__ import annotations

import numpy as np


def sample_temperature(logits: np.ndarray, temperature: np.ndarray, u: np.ndarray,
                       banned: tuple[int, ...] = (0,)) -> np.ndarray:
    """One id per row of ``logits`` [B, V]; ``temperature`` [B] (> 0), ``u`` [B] in [0, 1)."""
    lg = np.array(logits, dtype=np.float64)
    if banned:
        lg[:, list(banned)] = -np.inf
    m = lg.max(axis=1, keepdims=True)
    logp = lg - m - np.log(np.exp(lg - m).sum(axis=1, keepdims=True))
    z = (logp - logp.max(axis=1, keepdims=True)) / temperature[:, None]
    probs = np.exp(z)
    probs /= probs.sum(axis=1, keepdims=True)
    csum = np.cumsum(probs, axis=1)
    idx = np.minimum((csum <= (u * csum[:, -1])[:, None]).sum(axis=1), probs.shape[1] - 1)
    bad = probs[np.arange(len(idx)), idx] == 0.0  # round-off at the top end: step back
    for r in np.flatnonzero(bad):
        idx[r] = int(np.flatnonzero(probs[r] > 0)[-1])
    return idx


def draws(rngs: list[np.random.Generator]) -> np.ndarray:
    """One uniform number per stream, each from the stream's own generator."""
    return np.array([g.random() for g in rngs])
