"""Safe to expose: optional API key, CORS off unless configured, X-Request-ID.

- SEQSERVE_API_KEY set: /sentiment, /attention and /generate need
  ``Authorization: Bearer <key>`` (401 in the error shape otherwise, counted as
  rejected/unauthorized); /healthz, /readyz, /v1/models, /metrics and the docs stay
  open; the key (right or wrong) never reaches the logs.
- CORS: no CORS headers unless SEQSERVE_CORS_ORIGINS lists origins, and then only for
  those origins.
- X-Request-ID: a sane one is accepted and echoed, otherwise one is generated; it is
  in every response, in error bodies and on the request's log lines.
"""

from __future__ import annotations

import re

import pytest

KEY = "k3y-Th4t-must-never-be-logged"
INFERENCE = [("/sentiment", {"text": "a fine film"}), ("/attention", {"text": "a fine film"}),
             ("/generate", {"prompt": "the ", "max_new_chars": 5})]
OPEN = ["/healthz", "/readyz", "/v1/models", "/metrics", "/openapi.json", "/docs"]


def _rejected_unauthorized(client) -> float:
    m = re.search(r'^seqserve_rejected_requests_total\{reason="unauthorized"\} (\S+)$',
                  client.get("/metrics").text, re.M)
    return float(m.group(1)) if m else 0.0


# --- API key ------------------------------------------------------------------------------


def test_api_key_guards_inference_and_leaves_operations_open(make_client, tiny_models_dir,
                                                            capture_log):
    c = make_client(tiny_models_dir, api_key=KEY)
    log = capture_log()
    before = _rejected_unauthorized(c)
    refused = 0
    for path, body in INFERENCE:
        for headers in ({}, {"Authorization": "Bearer wrong-key"},
                        {"Authorization": f"Basic {KEY}"}, {"Authorization": KEY},
                        {"Authorization": f"Bearer {KEY}x"}, {"Authorization": "Bearer "}):
            r = c.post(path, json=body, headers=headers)
            assert r.status_code == 401, (path, headers, r.text)
            err = r.json()["error"]
            assert err["code"] == "unauthorized" and "Bearer" in err["message"]
            assert r.headers["www-authenticate"] == "Bearer"
            refused += 1
        for scheme in ("Bearer", "bearer"):
            r = c.post(path, json=body, headers={"Authorization": f"{scheme} {KEY}"})
            assert r.status_code == 200, r.text
    for path in OPEN:
        assert c.get(path).status_code == 200, path
    assert _rejected_unauthorized(c) - before == refused
    text = "\n".join(log.lines)
    assert log.lines and KEY not in text and "wrong-key" not in text


def test_unauthenticated_callers_learn_nothing_about_validation(make_client, tiny_models_dir):
    c = make_client(tiny_models_dir, api_key=KEY)
    r = c.post("/generate", json={"prompt": "", "max_new_chars": -1, "bogus": 1})
    assert r.status_code == 401
    r = c.post("/sentiment", json={"text": "ok", "model": "secret-model"})
    assert r.status_code == 401  # not a 404 listing the loaded models


def test_without_an_api_key_setting_inference_is_open(make_client, tiny_models_dir):
    c = make_client(tiny_models_dir)
    for path, body in INFERENCE:
        assert c.post(path, json=body).status_code == 200


def test_api_key_is_not_shown_by_settings_repr_or_models_listing(make_client, tiny_models_dir):
    from app.config import Settings

    s = Settings(models_dir=tiny_models_dir, api_key=KEY)
    assert KEY not in repr(s) and KEY not in str(s.model_dump())
    c = make_client(tiny_models_dir, api_key=KEY)
    assert KEY not in c.get("/v1/models").text and KEY not in c.get("/metrics").text


# --- CORS -------------------------------------------------------------------------------------


def test_cors_is_off_by_default(make_client, tiny_models_dir):
    c = make_client(tiny_models_dir)
    r = c.post("/sentiment", json={"text": "ok"}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 200
    assert not any(h.startswith("access-control-") for h in r.headers)
    r = c.options("/sentiment", headers={"Origin": "https://evil.example",
                                         "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers


def test_cors_allows_only_the_configured_origins(make_client, tiny_models_dir):
    c = make_client(tiny_models_dir, cors_origins=["https://app.example"], api_key=KEY)
    pre = {"Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization, content-type"}
    r = c.options("/sentiment", headers={"Origin": "https://app.example", **pre})
    assert r.status_code == 200  # preflights need no API key
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    r = c.options("/sentiment", headers={"Origin": "https://evil.example", **pre})
    assert r.headers.get("access-control-allow-origin") != "https://evil.example"
    r = c.post("/sentiment", json={"text": "ok"}, headers={
        "Origin": "https://app.example", "Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
    r = c.post("/sentiment", json={"text": "ok"}, headers={
        "Origin": "https://evil.example", "Authorization": f"Bearer {KEY}"})
    assert "access-control-allow-origin" not in r.headers


def test_cors_origins_setting_reads_a_json_list_from_the_environment(monkeypatch):
    from app.config import Settings

    monkeypatch.setenv("SEQSERVE_CORS_ORIGINS", '["https://a.example", "https://b.example"]')
    assert Settings().cors_origins == ["https://a.example", "https://b.example"]


# --- X-Request-ID -----------------------------------------------------------------------------


def test_request_id_is_accepted_echoed_and_on_the_log_lines(make_client, tiny_models_dir,
                                                            capture_log):
    c = make_client(tiny_models_dir)
    log = capture_log()
    rid = "req-42.abc:DEF_9"
    r = c.post("/sentiment", json={"text": "ok"}, headers={"X-Request-ID": rid})
    assert r.status_code == 200 and r.headers["x-request-id"] == rid
    r = c.post("/sentiment", json={"text": ""}, headers={"X-Request-ID": rid + "-bad"})
    assert r.headers["x-request-id"] == rid + "-bad"
    assert r.json()["error"]["request_id"] == rid + "-bad"
    ids = [getattr(x, "request_id", None) for x in log.records]
    assert rid in ids and rid + "-bad" in ids, ids


@pytest.mark.parametrize("supplied", [None, "", "has space", "x" * 129, "naïve", "a\tb",
                                      "<script>", "../../etc"])
def test_missing_or_unsafe_request_id_is_replaced_by_a_generated_one(make_client,
                                                                     tiny_models_dir, supplied):
    c = make_client(tiny_models_dir)
    headers = {} if supplied is None else {"X-Request-ID": supplied.encode()}  # raw bytes
    r = c.get("/healthz", headers=headers)
    got = r.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", got), got
    r2 = c.get("/healthz", headers=headers)
    assert r2.headers["x-request-id"] != got  # a fresh one per request
