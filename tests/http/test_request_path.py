"""POST /sentiment and /attention have one request path: the body is decoded and
validated in one pydantic-core call (``model_validate_json``), and every answer, valid
or not, comes in the one error shape, never a 500."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# body -> the status it must get (the service's defaults: 64 texts, 50,000 characters)
BODIES = [
    ({"text": "A moving, beautifully acted film. I loved it!"}, 200),
    ({"texts": ["Dull and far too long.", "An instant classic!", "x"]}, 200),
    ({"text": "fine", "model": "sentiment"}, 200),
    ({"text": "fine", "model": "nope"}, 404),  # valid schema, unknown model
    ({"text": "fine", "model": "chargen"}, 404),  # a model of another task
    ({"text": ""}, 422), ({"text": "   "}, 422), ({"text": "a\x00b"}, 422), ({"texts": []}, 422),
    ({"texts": ["ok", ""]}, 422),
    ({"texts": ["ok"] * 65}, 422),  # over SEQSERVE_MAX_TEXTS
    ({"text": "x" * 50_001}, 422),  # over SEQSERVE_MAX_TEXT_CHARS
    ({"text": "a", "texts": ["b"]}, 422), ({}, 422), ({"text": 5}, 422), ({"text": None}, 422),
    ({"texts": "abc"}, 422), ({"text": "fine", "extra": 1}, 422), ({"text": ["a"]}, 422),
    ([1, 2], 422), ("text", 422), (None, 422), (3.5, 422),
]


def _error(r) -> dict:
    err = r.json()["error"]
    assert set(err) >= {"code", "message", "status", "request_id"}
    assert err["status"] == r.status_code and err["request_id"] == r.headers["x-request-id"]
    return err


@pytest.mark.parametrize(("body", "status"), BODIES, ids=lambda b: json.dumps(b)[:40])
def test_each_body_gets_its_status_in_the_one_shape(client, body, status):
    r = client.post("/sentiment", content=json.dumps(body).encode(),
                    headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    if status == 200:
        data = r.json()
        results = data["results"] if "texts" in body else [data]
        assert len(results) == len(body.get("texts", [None]))
        assert all(x["label"] in ("positive", "negative") for x in results)
    else:
        err = _error(r)
        assert err["code"] == {404: "model_not_found", 422: "validation_error"}[status]


def test_a_validation_error_names_the_field_and_why(client):
    err = _error(client.post("/sentiment", json={"text": "fine", "extra": 1}))
    assert err["details"][0]["field"] == "extra" and "unknown field" in err["message"]
    err = _error(client.post("/sentiment", json={"texts": ["ok", 5]}))
    assert err["details"][0]["field"] == "texts.1"
    err = _error(client.post("/attention", json={}))
    assert err["details"][0]["field"] == "text" and err["details"][0]["message"] == "field required"


@pytest.mark.parametrize("raw", [b"{", b'{"text": "a"', b"\xff\xfe",
                                 b"[" * 5000 + b"]" * 5000, b'{"text": "a"} trailing'])
@pytest.mark.parametrize("path", ["/sentiment", "/attention"])
def test_a_body_that_is_not_json_is_a_400(client, raw, path):
    r = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert _error(r)["code"] == "invalid_json"
    assert client.post(path, json={"text": "still fine"}).status_code == 200


def test_nan_is_json_but_not_an_object(client):
    r = client.post("/sentiment", content=b"NaN", headers={"content-type": "application/json"})
    assert r.status_code == 422 and _error(r)["code"] == "validation_error"


def test_a_repeated_key_keeps_the_last_value(client):
    r = client.post("/sentiment", content=b'{"text": "", "text": "good film"}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 200 and r.json()["tokens_read"] == 2


def test_api_key_is_checked_before_the_body_is_read(make_client, tiny_models_dir):
    c = make_client(tiny_models_dir, api_key="s3cret")
    for path in ("/sentiment", "/attention"):
        for body in (b'{"text": "good film"}', b"{not json"):
            for auth in (None, "Bearer wrong", "Basic s3cret"):
                r = c.post(path, content=body, headers={"content-type": "application/json",
                                                        **({"authorization": auth} if auth else {})})
                assert r.status_code == 401 and _error(r)["code"] == "unauthorized"
        for auth in ("Bearer s3cret", "bearer  s3cret"):
            r = c.post(path, json={"text": "good film"}, headers={"authorization": auth})
            assert r.status_code == 200


def test_the_schema_still_documents_both_bodies(client):
    doc = client.get("/openapi.json").json()
    for path, model in (("/sentiment", "SentimentRequest"), ("/attention", "AttentionRequest")):
        body = doc["paths"][path]["post"]["requestBody"]
        assert body["required"] is True
        assert body["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{model}"}
        assert "text" in doc["components"]["schemas"][model]["properties"]


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
def test_any_json_body_is_answered_without_a_server_error(tiny_client, body):
    for path in ("/sentiment", "/attention"):
        r = tiny_client.post(path, content=json.dumps(body).encode(),
                             headers={"content-type": "application/json"})
        assert r.status_code in (200, 404, 422), r.text
        if r.status_code != 200:
            _error(r)
