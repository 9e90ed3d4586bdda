"""The benchmark's pieces that need no timing: the numpy sampling the raw generation
limit and the LitServe peer use is the service's sampling for temperature-only
requests, and the peer (only where its venv exists: ``make bench`` creates it)
answers both endpoints with the committed models."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest

from bench.npsample import draws, sample_temperature
from bench.run import PEER_PYTHON, PeerProcess


@pytest.mark.parametrize("temperature", [0.8, 1.0, 0.05, 3.0])
def test_npsample_matches_the_service_sampling(temperature: float) -> None:
    from app.sampling import SamplingParams, params_arrays, sample_rows

    rng = np.random.default_rng(0)
    B, V = 64, 40
    logits = (rng.standard_normal((B, V)) * 4).astype(np.float32)
    u = rng.random(B)
    temp, top_k, top_p = params_arrays([SamplingParams(temperature=temperature)] * B)
    want = sample_rows(logits, temp, top_k, top_p, u, banned=(0,))
    got = sample_temperature(logits, np.full(B, temperature), u, banned=(0,))
    assert got.tolist() == want.tolist()
    assert 0 not in got.tolist()


def test_draws_one_number_per_stream_generator() -> None:
    gens = [np.random.default_rng(s) for s in (1, 2)]
    first = draws(gens)
    assert first.tolist() == [np.random.default_rng(1).random(), np.random.default_rng(2).random()]


def _post(url: str, body: dict) -> bytes:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read()


@pytest.mark.skipif(not PEER_PYTHON.exists(), reason="no LitServe venv (make bench creates it)")
def test_litserve_peer_answers_both_endpoints() -> None:
    with PeerProcess(PEER_PYTHON) as peer:
        ans = json.loads(_post(peer.url + "/sentiment", {"text": "a wonderful film"}))
        assert ans["label"] in ("positive", "negative") and 0.5 <= ans["score"] <= 1.0
        raw = _post(peer.url + "/generate", {"prompt": "the will to power ", "seed": 3,
                                             "max_new_chars": 20, "temperature": 0.8})
        events = [json.loads(line) for line in raw.splitlines() if line.strip()]
        assert len("".join(e["text"] for e in events)) == 20
        assert all(len(e["text"]) <= 8 for e in events)
