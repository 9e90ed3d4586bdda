"""Sampling: the reference formula, top-k/top-p semantics, and row independence."""

from __future__ import annotations

import numpy as np

from seqcore.sampling import (
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


def test_the_short_path_and_the_row_sampler_pick_what_the_general_path_picks():
    """Rows without top-k/top-p take a short path (and a generation batch precomputes it
    in a RowSampler); over many random rows, temperatures from greedy to 10, tiny and
    huge logits and a banned id, every id equals the general path's."""
    from seqcore.sampling import RowSampler, _sample_general

    rng = np.random.default_rng(7)
    V, banned, checked = 60, (1,), 0
    for trial in range(400):
        B = int(rng.integers(1, 40))
        lg = (rng.normal(size=(B, V)) * rng.choice([0.01, 1, 30])).astype(np.float32)
        T = rng.choice([0.0, 1e-35, 0.01, 0.3, 0.8, 1.0, 2.5, 10.0], size=B)
        k = np.where(rng.random(B) < 0.2, rng.integers(1, 10, B), 0)
        p = np.where(rng.random(B) < 0.2, rng.random(B), 1.0)
        if trial % 2:  # half the batches: temperature rows only (the RowSampler's own path)
            T, k, p = rng.choice([0.05, 0.8, 2.0], size=B), np.zeros(B, np.int64), np.ones(B)
        u = rng.random(B)
        want = _sample_general(lg, T, k, p, u, banned)
        assert (sample_rows(lg, T, k, p, u, banned) == want).all()
        assert (RowSampler(T, k, p, banned, V)(lg, u) == want).all()
        assert not np.isin(want, banned).any()
        checked += B
    assert checked > 4000


def test_a_draw_at_the_very_top_never_returns_a_banned_or_empty_id():
    from seqcore.sampling import RowSampler

    lg = np.zeros((1, 5), np.float32)
    lg[0, 3] = -1e4  # exp underflows to 0 at T=1: an id with no mass
    top = np.array([np.nextafter(1.0, 0.0)])
    one = (np.array([1.0]), np.array([0]), np.array([1.0]))
    assert sample_rows(lg, *one, top, (4,)) == 2
    assert RowSampler(*one, (4,), 5)(lg, top) == 2


def test_a_lone_row_takes_the_plain_python_path_and_picks_the_same_ids():
    """A RowSampler of one row (a lone stream) samples in Python floats instead of
    numpy; over thousands of rows, temperatures and a banned id it returns the general
    path's ids, and never a banned one."""
    from seqcore.sampling import RowSampler, _sample_general

    rng = np.random.default_rng(11)
    V, banned, mismatches = 60, (1,), 0
    for _ in range(5000):
        T = np.array([rng.choice([0.05, 0.3, 0.8, 1.0, 2.5, 10.0])])
        lg = (rng.normal(size=(1, V)) * rng.choice([0.01, 1, 30])).astype(np.float32)
        u = rng.random(1)
        s = RowSampler(T, np.zeros(1, np.int64), np.ones(1), banned, V)
        assert s._one_t is not None  # the path under test
        got = s(lg, u)
        assert got.shape == (1,) and got[0] != 1
        mismatches += int(got[0] != _sample_general(lg, T, np.zeros(1, np.int64), np.ones(1),
                                                    u, banned)[0])
    assert mismatches == 0


def test_uniforms_drawn_in_blocks_are_the_generators_own_sequence():
    """A stream's draws come from its seeded generator a block at a time; they are the
    numbers one ``random()`` call per draw would give, so a seed's text is unchanged."""
    from seqcore.sampling import Uniforms

    for seed, block in ((0, 64), (12345, 7), (2**40, 1)):
        one_by_one = np.random.default_rng(seed)
        u = Uniforms(seed, block=block)
        assert [u() for _ in range(300)] == [one_by_one.random() for _ in range(300)]


def test_min_p_keeps_what_is_at_least_min_p_times_the_likeliest():
    logits = np.log(np.array([0.1, 0.5, 0.25, 0.15]))
    d = next_distribution(logits, SamplingParams(1.0, min_p=0.4))  # threshold 0.2
    np.testing.assert_allclose(d, [0, 0.5 / 0.75, 0.25 / 0.75, 0])
    d = next_distribution(logits, SamplingParams(1.0, min_p=1.0))
    np.testing.assert_allclose(d, [0, 1, 0, 0])
    # after temperature: at T = 2 the ratios flatten, so more characters pass
    d = next_distribution(logits, SamplingParams(2.0, min_p=0.4))
    assert (d > 0).tolist() == [True, True, True, True]
    off = next_distribution(logits, SamplingParams(1.0, min_p=0.0))
    np.testing.assert_allclose(off, [0.1, 0.5, 0.25, 0.15])


def test_repetition_penalty_is_the_hugging_face_rule_on_seen_characters():
    from seqcore.sampling import RepetitionPenalty

    assert RepetitionPenalty.for_stream(SamplingParams(1.0), [1, 2], 4) is None
    assert RepetitionPenalty.for_stream(SamplingParams(1.0, repetition_penalty=1.0), [1], 4) is None
    pen = RepetitionPenalty.for_stream(SamplingParams(1.0, repetition_penalty=2.0), [0, 2], 4)
    assert pen is not None
    logits = np.array([4.0, 3.0, -1.0, -2.0])
    assert pen.apply(logits).tolist() == [2.0, 3.0, -2.0, -2.0]  # seen: 0 (÷2), 2 (×2)
    pen.observe(1)
    assert pen.apply(logits).tolist() == [2.0, 1.5, -2.0, -2.0]
    assert logits.tolist() == [4.0, 3.0, -1.0, -2.0]  # the caller's array is untouched


def test_row_sampler_with_penalties_and_min_p_leaves_other_rows_as_they_were():
    from seqcore.sampling import RepetitionPenalty, RowSampler, min_p_array

    rng = np.random.default_rng(3)
    B, V = 6, 12
    params = [SamplingParams(1.0), SamplingParams(0.0, repetition_penalty=5.0),
              SamplingParams(0.7, min_p=0.3), SamplingParams(1.2, top_k=4),
              SamplingParams(0.0), SamplingParams(1.0, repetition_penalty=1.5, min_p=0.1)]
    pens = [RepetitionPenalty.for_stream(p, [0, 1], V) for p in params]
    sampler = RowSampler(*params_arrays(params), (), V, min_p=min_p_array(params),
                         penalties=pens)
    plain = RowSampler(*params_arrays(params), (), V)
    for _ in range(30):
        logits = rng.standard_normal((B, V))
        u = rng.random(B)
        expected_greedy = int(np.argmax(pens[1].apply(logits[1])))  # seen so far
        ids = sampler(logits, u)
        ref = plain(logits, u)
        for b in (0, 3, 4):  # rows without the new rules: the same ids as before
            assert ids[b] == ref[b]
        # the greedy penalised row: the argmax of its penalised logits, then seen
        assert ids[1] == expected_greedy and pens[1].seen[ids[1]]
        # the min_p row: only characters at least 0.3 x the likeliest (T = 0.7)
        z = logits[2] / 0.7
        p = np.exp(z - z.max())
        assert p[ids[2]] >= 0.3 * p.max()
