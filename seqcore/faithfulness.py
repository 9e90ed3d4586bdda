"""ERASER's faithfulness measures for a token-importance explanation (DeYoung et al.,
ACL 2020), shared by the offline table (training/faithfulness.py) and /attention's
``"faithfulness": true``.

For a text read as token ids ``x``, the predicted class ``y`` and its probability
``p(y | x)``, and the ``k`` fraction of tokens an explanation ranks highest (``r``: at
least one token, ``ceil(k * n)``):

- comprehensiveness = p(y | x) - p(y | x without r): how much the score drops when the
  explanation's tokens are removed (higher: the explanation found what the decision
  rests on);
- sufficiency = p(y | x) - p(y | r alone, in their order): how much of the score is lost
  when only those tokens are kept (lower: they suffice).

Both lie in [-1, 1]. Tokens are removed from the ids the model read (after its
truncation), so nothing is re-tokenized; a row left empty is read as one ``<unk>``, as
the service reads an empty text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

KS = (0.05, 0.10, 0.20)


def top_k(importance: Sequence[float], k: float) -> list[int]:
    """Positions of the ``ceil(k * n)`` (at least one) most important tokens, the
    earlier position first among equals."""
    n = len(importance)
    m = min(n, max(1, math.ceil(k * n - 1e-9)))
    order = sorted(range(n), key=lambda i: (-float(importance[i]), i))
    return sorted(order[:m])


def reduced_rows(ids: Sequence[int], importance: Sequence[float], ks: Sequence[float],
                 unk_id: int = 1) -> list[list[int]]:
    """For each k: the row without its top-k tokens, then the row of them alone
    (2 * len(ks) rows, in that order)."""
    rows = []
    for k in ks:
        keep = set(top_k(importance, k))
        rows.append([t for i, t in enumerate(ids) if i not in keep] or [unk_id])
        rows.append([t for i, t in enumerate(ids) if i in keep] or [unk_id])
    return rows


def toward_prediction(contributions: Sequence[float], p_positive: float) -> np.ndarray:
    """Signed contributions (log-odds of positive) turned into importance for the
    predicted class: positive ones count for a positive answer, negative ones for a
    negative answer."""
    c = np.asarray(contributions, dtype=np.float64)
    return c if p_positive >= 0.5 else -c


def scores(p_positive: float, reduced: Sequence[float], ks: Sequence[float]) -> list[dict]:
    """Comprehensiveness and sufficiency at each k from P(positive) of the full row and
    of ``reduced_rows``'s rows (same order)."""
    positive = p_positive >= 0.5

    def p_pred(p: float) -> float:
        return float(p) if positive else 1.0 - float(p)

    full = p_pred(p_positive)
    out = []
    for j, k in enumerate(ks):
        out.append({"k": k, "comprehensiveness": full - p_pred(reduced[2 * j]),
                    "sufficiency": full - p_pred(reduced[2 * j + 1])})
    return out
