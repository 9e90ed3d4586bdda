"""POST /sentiment answers the same through the fast path (app/fastpath.py) as through
the FastAPI route: same status, same body (but the request id), same headers (but the
timings), for valid and invalid requests alike."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TIMING = {"x-queue-time-ms", "x-inference-time-ms", "server-timing", "x-request-id",
          "content-length"}


def _norm(r) -> tuple:
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") \
        else r.text
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body["error"].pop("request_id", None)
    headers = {k: v for k, v in r.headers.items() if k.lower() not in TIMING}
    return r.status_code, body, headers


def both(client, content: bytes, headers: dict | None = None) -> tuple[tuple, tuple]:
    """The answer with the fast path on, then with it off (the FastAPI route)."""
    h = {"content-type": "application/json", **(headers or {})}
    state = client.app.state.seqserve
    state.fast_path = True
    fast = client.post("/sentiment", content=content, headers=h)
    state.fast_path = False
    try:
        slow = client.post("/sentiment", content=content, headers=h)
    finally:
        state.fast_path = True
    return _norm(fast), _norm(slow)


BODIES = [
    {"text": "A moving, beautifully acted film. I loved it!"},
    {"texts": ["Dull and far too long.", "An instant classic!", "x"]},
    {"text": "fine", "model": "sentiment"},
    {"text": "fine", "model": "nope"},  # valid schema, unknown model: 404 after parsing
    {"text": ""}, {"text": "   "}, {"text": "a\x00b"}, {"texts": []}, {"texts": ["ok", ""]},
    {"texts": ["ok"] * 65},  # over SEQSERVE_MAX_TEXTS
    {"text": "x" * 50_001},  # over SEQSERVE_MAX_TEXT_CHARS
    {"text": "a", "texts": ["b"]}, {}, {"text": 5}, {"text": None}, {"texts": "abc"},
    {"text": "fine", "extra": 1}, {"text": ["a"]}, [1, 2], "text", None, 3.5,
]


@pytest.mark.parametrize("body", BODIES, ids=lambda b: json.dumps(b)[:40])
def test_fast_path_and_route_give_the_same_answer(client, body):
    fast, slow = both(client, json.dumps(body).encode())
    assert fast == slow


@pytest.mark.parametrize("raw", [b"", b"{", b'{"text": "a"', b"\xff\xfe", b'{"text": "\\ud800"}',
                                 b"[" * 5000 + b"]" * 5000, b'{"text": "a"} trailing',
                                 b'{"text": "dup", "text": "last wins"}', b"NaN"])
def test_malformed_bodies_are_answered_by_the_route(client, raw):
    fast, slow = both(client, raw)
    assert fast == slow
    assert fast[0] in (200, 400, 422)


def test_api_key_is_checked_on_the_fast_path(make_client, tiny_models_dir):
    c = make_client(tiny_models_dir, api_key="s3cret")
    body = json.dumps({"text": "good film"}).encode()
    for auth in (None, "Bearer wrong", "Basic s3cret", "Bearer s3cret", "bearer  s3cret"):
        fast, slow = both(c, body, {"authorization": auth} if auth else {})
        assert fast == slow
        assert fast[0] == (200 if auth and auth.lower().split()[-1] == "s3cret"
                           and auth.lower().startswith("bearer") else 401)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=12)
sentiment_like = st.fixed_dictionaries(
    {}, optional={"text": json_values | st.text(max_size=40),
                  "texts": json_values | st.lists(st.text(max_size=20), max_size=4),
                  "model": json_values | st.sampled_from(["sentiment", "chargen"])})


@given(body=st.one_of(sentiment_like, json_values))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_json_body_gets_the_same_answer_from_both_paths(tiny_client, body):
    fast, slow = both(tiny_client, json.dumps(body).encode())
    assert fast == slow
    assert fast[0] < 500


def test_valid_requests_take_the_fast_path_and_invalid_ones_the_route(client, monkeypatch):
    from app.fastpath import SentimentFastPath

    taken: list[bool] = []
    original = SentimentFastPath._parse

    def spy(self, scope, body):
        out = original(self, scope, body)
        taken.append(out is not None)
        return out

    monkeypatch.setattr(SentimentFastPath, "_parse", spy)
    assert client.post("/sentiment", json={"text": "good"}).status_code == 200
    assert client.post("/sentiment", json={"texts": ["good", "bad"]}).status_code == 200
    assert client.post("/sentiment", json={"text": 1}).status_code == 422
    assert client.post("/attention", json={"text": "good"}).status_code == 200  # not its path
    assert taken == [True, True, False]
