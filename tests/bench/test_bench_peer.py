"""The LitServe peer of the benchmark (only where its venv exists: ``make bench``
creates it) answers both endpoints with the committed models, with LitServe's fast
queue, and also at a batch size of 1 (where LitServe calls neither batch nor unbatch),
which the sweep tries."""

from __future__ import annotations

import json
import urllib.request

import pytest

from bench.inputs import PEER_PYTHON
from bench.peer import PeerProcess

needs_venv = pytest.mark.skipif(not PEER_PYTHON.exists(),
                                reason="no LitServe venv (make bench creates it)")


def _post(url: str, body: dict) -> bytes:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read()


@needs_venv
def test_litserve_peer_answers_both_endpoints() -> None:
    with PeerProcess(PEER_PYTHON, fast_queue=True, chars_per_message=8) as peer:
        assert peer.settings()["fast_queue"] is True
        ans = json.loads(_post(peer.url + "/sentiment", {"text": "a wonderful film"}))
        assert ans["label"] in ("positive", "negative") and 0.5 <= ans["score"] <= 1.0
        raw = _post(peer.url + "/generate", {"prompt": "the will to power ", "seed": 3,
                                             "max_new_chars": 20, "temperature": 0.8})
        events = [json.loads(line) for line in raw.splitlines() if line.strip()]
        assert len("".join(e["text"] for e in events)) == 20
        assert all(len(e["text"]) <= 8 for e in events)


@needs_venv
def test_litserve_peer_answers_at_a_batch_size_of_one() -> None:
    with PeerProcess(PEER_PYTHON, fast_queue=True, sentiment_workers=1, max_batch_size=1,
                     batch_timeout_ms=0) as peer:
        for text in ("a wonderful film", "dull, slow and far too long"):
            ans = json.loads(_post(peer.url + "/sentiment", {"text": text}))
            assert ans["label"] in ("positive", "negative") and 0.5 <= ans["score"] <= 1.0
