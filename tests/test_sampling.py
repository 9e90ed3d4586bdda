"""Sampling: the reference formula, top-k/top-p semantics, and row independence."""

from __future__ import annotations

import numpy as np

from app.sampling import (
    SamplingParams,
    next_distribution,
    params_arrays,
    sample,
    sample_rows,
)


def test_temperature_follows_the_reference_formula():
    logits = np.array([2.0, 1.0, 0.5, -1.0])
    p = np.exp(logits) / np.exp(logits).sum()
    for T in (0.3, 1.0, 2.5):
        ref = np.exp(np.log(p) / T)
        ref /= ref.sum()
        np.testing.assert_allclose(next_distribution(logits, SamplingParams(T)), ref, rtol=1e-9)


def test_greedy_top_k_and_top_p():
    logits = np.log(np.array([0.1, 0.5, 0.25, 0.15]))
    assert next_distribution(logits, SamplingParams(0.0)).tolist() == [0, 1, 0, 0]
    d = next_distribution(logits, SamplingParams(1.0, top_k=2))
    np.testing.assert_allclose(d, [0, 0.5 / 0.75, 0.25 / 0.75, 0])
    d = next_distribution(logits, SamplingParams(1.0, top_p=0.7))  # 0.5 + 0.25 reaches 0.7
    np.testing.assert_allclose(d, [0, 0.5 / 0.75, 0.25 / 0.75, 0])
    d = next_distribution(logits, SamplingParams(1.0, top_p=0.5))
    np.testing.assert_allclose(d, [0, 1, 0, 0])
    d = next_distribution(logits, SamplingParams(1.0), banned=(1,))
    assert d[1] == 0 and abs(d.sum() - 1) < 1e-12


def test_a_row_alone_samples_exactly_what_it_samples_in_a_batch():
    rng = np.random.default_rng(0)
    B, V = 64, 60
    logits = (rng.standard_normal((B, V)) * 3).astype(np.float32)
    params = [SamplingParams(float(rng.choice([0.0, 0.2, 0.7, 1.0, 1.5])),
                             int(rng.choice([0, 1, 5, 20])) or None,
                             float(rng.choice([1.0, 0.9, 0.5, 0.05])))
              for _ in range(B)]
    for trial in range(20):
        u = rng.random(B)
        together = sample_rows(logits, *params_arrays(params), u, banned=(0,))
        for b in range(B):
            alone = sample_rows(logits[b:b + 1], *params_arrays([params[b]]), u[b:b + 1], (0,))
            assert alone[0] == together[b]
        assert (together != 0).all()
        np.random.default_rng(trial).shuffle(logits)


def test_same_seed_same_draws():
    logits = np.zeros(10)
    a = [sample(logits, SamplingParams(1.0), np.random.default_rng(5)) for _ in range(3)]
    g = np.random.default_rng(5)
    b = [sample(logits, SamplingParams(1.0), g) for _ in range(3)]
    assert a == [b[0]] * 3 and len(set(b)) >= 1
