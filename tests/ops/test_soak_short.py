"""A shortened soak (bench/soak.py): 2,000 mixed valid and invalid requests at concurrency
64 against a real server. Zero 5xx, zero dropped connections, every answer as expected,
RSS growth under 10 %, nothing logged at ERROR, clean exit on SIGTERM.
The full run (50,000 requests) is `python -m bench.soak`.
"""

from __future__ import annotations

from bench.soak import report, soak


def test_short_soak_passes_every_criterion(tiny_models_dir):
    v = soak(tiny_models_dir, n=2_000, concurrency=64, max_seconds=240)
    assert v.ok, report(v)
    r = v.result
    assert r.requests == 2_000 and sum(r.by_status.values()) == 2_000
    # the mix reached every endpoint and every kind of refusal
    for status in (200, 400, 401, 404, 413, 415, 422):
        assert r.by_status[status] > 0, report(v)
    kinds = {k.split()[0] for k in r.by_kind}
    assert {"sentiment", "sentiment_batch", "attention", "generate", "generate_stream",
            "ops_metrics", "too_large", "wrong_api_key"} <= kinds
