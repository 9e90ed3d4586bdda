"""Bad input gets a clear 4xx in the one error shape, naming the field; nothing else changes.

Malformed bodies (invalid JSON or UTF-8, wrong content type, wrong types, missing
fields, blank text, deep nesting, NUL characters, huge bodies, unknown fields) and
every out-of-range value of every bounded field. Odd but valid texts (emoji,
punctuation, HTML, SQL-looking, right-to-left, zero-width) are served normally. No
client mistake is logged at ERROR or with a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.http.body import BodyGuard
from app.http.layer import RequestLayer
from app.http.policy import PolicyMap
from app.main import create_app

# Small limits so that each one is easy to cross.
LIMITS = dict(max_text_chars=200, max_texts=4, max_prompt_chars=100, max_new_chars=50,
              max_stop=2, max_stop_chars=5, max_body_bytes=16_384)
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def client(tiny_models_dir) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(models_dir=tiny_models_dir, **LIMITS))) as c:
        yield c


@pytest.fixture
def server_log(client, capture_log) -> list[logging.LogRecord]:
    """Everything the service logs during the test (after ``client`` made the app)."""
    return capture_log().records


def assert_quiet(records: list[logging.LogRecord]) -> None:
    """A client mistake is logged at INFO at most, never with a traceback."""
    assert records, "the request was not logged at all"
    loud = [f"{r.levelname} {r.name}: {r.getMessage()}" for r in records
            if r.levelno >= logging.ERROR or r.exc_info or "Traceback" in r.getMessage()]
    assert not loud, loud


def assert_error(r, status: int, field: str) -> dict:
    """The one error shape, with a message that starts with the field it is about."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert err["status"] == status and isinstance(err["code"], str) and err["code"]
    assert err["request_id"] == r.headers["x-request-id"]
    assert err["message"].startswith(f"{field}: "), err["message"]
    assert len(err["message"]) > len(field) + 10  # says the rule, not just the name
    return err


def post_raw(client: TestClient, path: str, body: bytes, headers: dict | None = None):
    return client.post(path, content=body, headers=JSON if headers is None else headers)


def post_json(client: TestClient, path: str, body: object):
    """JSON with non-ASCII escaped, so lone surrogates travel as the \\ud800 escapes
    a client would send (httpx's own encoder cannot encode them)."""
    return post_raw(client, path, json.dumps(body).encode())


# --- malformed bodies ------------------------------------------------------------------

DEEP = 2_000  # past what the JSON parser nests (~1,000), within the body limit
MALFORMED = [
    # (case id, path, raw body, headers, status, field named in the message)
    ("trailing-comma", "/sentiment", b'{"text": "a",}', JSON, 400, "body"),
    ("truncated", "/generate", b'{"prompt": "a', JSON, 400, "body"),
    ("not-json-at-all", "/attention", b"text=hello", JSON, 400, "body"),
    ("invalid-utf8", "/sentiment", b'{"text": "caf\xe9 \xff\xfe"}', JSON, 400, "body"),
    ("invalid-utf8-prompt", "/generate", b'{"prompt": "\xc3\x28"}', JSON, 400, "body"),
    ("raw-nul-byte", "/sentiment", b'{"text": "a\x00b"}', JSON, 400, "body"),
    ("trailing-garbage", "/generate", b'{"prompt": "a"}\n garbage', JSON, 400, "body"),
    ("5000-digit-number", "/generate", b'{"prompt": "a", "seed": ' + b"9" * 5000 + b"}", JSON,
     400, "body"),
    ("deeply-nested-array", "/sentiment",
     b'{"text": ' + b"[" * DEEP + b"]" * DEEP + b"}", JSON, 400, "body"),
    ("deeply-nested-object", "/generate",
     b'{"prompt": "a", "model": ' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}", JSON, 400,
     "body"),
    ("nested-but-parseable", "/sentiment",
     b'{"text": "a", "model": ' + b"[" * 200 + b"]" * 200 + b"}", JSON, 422, "model"),
    ("empty-body", "/sentiment", b"", JSON, 422, "body"),
    ("json-array", "/sentiment", b'["a good film"]', JSON, 422, "body"),
    ("json-string", "/attention", b'"a good film"', JSON, 422, "body"),
    ("json-null", "/generate", b"null", JSON, 422, "body"),
    ("json-number", "/generate", b"42", JSON, 422, "body"),
    ("text-plain", "/sentiment", b'{"text": "a"}', {"content-type": "text/plain"}, 415, "body"),
    ("form", "/generate", b"prompt=a", {"content-type": "application/x-www-form-urlencoded"},
     415, "body"),
    ("no-content-type", "/attention", b'{"text": "a"}', {}, 415, "body"),
    ("multipart", "/sentiment", b"--x\r\n\r\na\r\n--x--",
     {"content-type": "multipart/form-data; boundary=x"}, 415, "body"),
    ("declared-too-large", "/sentiment", b'{"text": "a"}',
     {**JSON, "content-length": "50000000"}, 413, "body"),
    ("too-large", "/sentiment", json.dumps({"text": "a" * 20_000}).encode(), JSON, 413, "body"),
]


@pytest.mark.parametrize("path, body, headers, status, field",
                         [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_body_is_a_4xx_in_the_error_shape(client, server_log, path, body, headers,
                                                   status, field):
    if "content-length" in headers:  # a body that claims to be 50 MB: refused unread
        r = client.post(path, content=body, headers=headers)
    else:
        r = post_raw(client, path, body, headers)
    assert_error(r, status, field)
    assert_quiet(server_log)


# --- wrong types, missing and unknown fields, blank text, NUL characters ----------------

INVALID = [
    # wrong types where a string belongs
    ("/sentiment", {"text": 5}, "text"),
    ("/sentiment", {"text": 1.5}, "text"),
    ("/sentiment", {"text": True}, "text"),
    ("/sentiment", {"text": ["a good film"]}, "text"),
    ("/sentiment", {"text": {"a": "b"}}, "text"),
    ("/sentiment", {"texts": "a good film"}, "texts"),
    ("/sentiment", {"texts": ["ok", 1]}, "texts.1"),
    ("/sentiment", {"texts": [None]}, "texts.0"),
    ("/sentiment", {"text": "ok", "model": 7}, "model"),
    ("/attention", {"text": None}, "text"),
    ("/attention", {"text": 0}, "text"),
    ("/attention", {"text": ["a"]}, "text"),
    ("/generate", {"prompt": None}, "prompt"),
    ("/generate", {"prompt": 12}, "prompt"),
    ("/generate", {"prompt": {"text": "a"}}, "prompt"),
    # wrong types where a number, a boolean or a list belongs (no silent coercion)
    ("/generate", {"prompt": "a", "max_new_chars": "5"}, "max_new_chars"),
    ("/generate", {"prompt": "a", "max_new_chars": 5.5}, "max_new_chars"),
    ("/generate", {"prompt": "a", "max_new_chars": True}, "max_new_chars"),
    ("/generate", {"prompt": "a", "max_new_chars": None}, "max_new_chars"),
    ("/generate", {"prompt": "a", "temperature": "hot"}, "temperature"),
    ("/generate", {"prompt": "a", "temperature": None}, "temperature"),
    ("/generate", {"prompt": "a", "temperature": [1]}, "temperature"),
    ("/generate", {"prompt": "a", "top_k": "3"}, "top_k"),
    ("/generate", {"prompt": "a", "top_k": 2.5}, "top_k"),
    ("/generate", {"prompt": "a", "top_p": "0.9"}, "top_p"),
    ("/generate", {"prompt": "a", "seed": "42"}, "seed"),
    ("/generate", {"prompt": "a", "seed": 4.2}, "seed"),
    ("/generate", {"prompt": "a", "stop": "\n"}, "stop"),
    ("/generate", {"prompt": "a", "stop": [1]}, "stop.0"),
    ("/generate", {"prompt": "a", "stop": None}, "stop"),
    ("/generate", {"prompt": "a", "stream": "yes"}, "stream"),
    ("/generate", {"prompt": "a", "stream": 1}, "stream"),
    ("/generate", {"prompt": "a", "stream": None}, "stream"),
    # missing fields
    ("/attention", {}, "text"),
    ("/generate", {}, "prompt"),
    ("/generate", {"max_new_chars": 5}, "prompt"),
    # unknown fields are rejected (documented in app/protocols/native/schemas.py)
    ("/sentiment", {"text": "ok", "lang": "en"}, "lang"),
    ("/attention", {"text": "ok", "texts": ["b"]}, "texts"),
    ("/generate", {"prompt": "a", "max_new_char": 5}, "max_new_char"),
    ("/generate", {"prompt": "a", "temprature": 0.5}, "temprature"),
    # empty or whitespace-only text
    ("/sentiment", {"text": ""}, "text"),
    ("/sentiment", {"text": "   "}, "text"),
    ("/sentiment", {"text": "\n\t\r "}, "text"),
    ("/sentiment", {"text": "\u3000\u2003"}, "text"),  # ideographic and em spaces
    ("/sentiment", {"texts": ["fine", " "]}, "texts.1"),
    ("/attention", {"text": ""}, "text"),
    ("/attention", {"text": " \n"}, "text"),
    ("/generate", {"prompt": ""}, "prompt"),
    # NUL characters
    ("/sentiment", {"text": "a\x00b"}, "text"),
    ("/sentiment", {"texts": ["ok", "\x00"]}, "texts.1"),
    ("/attention", {"text": "good\x00"}, "text"),
    ("/generate", {"prompt": "\x00the"}, "prompt"),
]


@pytest.mark.parametrize("path, body, field", INVALID,
                         ids=[f"{p}-{json.dumps(b)[:40]}" for p, b, _ in INVALID])
def test_invalid_field_is_a_422_naming_it(client, server_log, path, body, field):
    err = assert_error(client.post(path, json=body), 422, field)
    assert err["code"] == "validation_error"
    assert_quiet(server_log)


def test_neither_or_both_of_text_and_texts_names_both(client, server_log):
    for body in ({}, {"text": None}, {"text": "a", "texts": ["b"]}, {"model": "sentiment"}):
        err = assert_error(client.post("/sentiment", json=body), 422, "body")
        assert "'text'" in err["message"] and "'texts'" in err["message"], err["message"]
    assert_quiet(server_log)


# --- out-of-range values of every bounded field ------------------------------------------

OUT_OF_RANGE = [
    ("/sentiment", {"text": "a" * 201}, "text"),
    ("/attention", {"text": "b " * 101}, "text"),
    ("/sentiment", {"texts": []}, "texts"),
    ("/sentiment", {"texts": ["a"] * 5}, "texts"),
    ("/sentiment", {"texts": ["a", "b", "c" * 201]}, "texts.2"),
    ("/generate", {"prompt": "p" * 101}, "prompt"),
    ("/generate", {"prompt": "a", "max_new_chars": 0}, "max_new_chars"),
    ("/generate", {"prompt": "a", "max_new_chars": -3}, "max_new_chars"),
    ("/generate", {"prompt": "a", "max_new_chars": 51}, "max_new_chars"),
    ("/generate", {"prompt": "a", "max_new_chars": 10**30}, "max_new_chars"),
    ("/generate", {"prompt": "a", "temperature": -0.001}, "temperature"),
    ("/generate", {"prompt": "a", "temperature": 10.001}, "temperature"),
    ("/generate", {"prompt": "a", "top_k": 0}, "top_k"),
    ("/generate", {"prompt": "a", "top_k": -1}, "top_k"),
    ("/generate", {"prompt": "a", "top_p": 0}, "top_p"),
    ("/generate", {"prompt": "a", "top_p": -0.5}, "top_p"),
    ("/generate", {"prompt": "a", "top_p": 1.0001}, "top_p"),
    ("/generate", {"prompt": "a", "seed": -1}, "seed"),
    ("/generate", {"prompt": "a", "seed": 2**63}, "seed"),
    ("/generate", {"prompt": "a", "stop": ["x", "y", "z"]}, "stop"),
    ("/generate", {"prompt": "a", "stop": ["ok", "toolong"]}, "stop.1"),
    ("/generate", {"prompt": "a", "stop": [""]}, "stop.0"),
]


@pytest.mark.parametrize("path, body, field", OUT_OF_RANGE,
                         ids=[f"{p}-{json.dumps(b)[:40]}" for p, b, _ in OUT_OF_RANGE])
def test_out_of_range_value_is_a_422_naming_the_field(client, server_log, path, body, field):
    err = assert_error(client.post(path, json=body), 422, field)
    assert err["code"] == "validation_error"
    assert_quiet(server_log)


def test_nan_and_infinity_literals_are_rejected(client, server_log):
    # Python's json accepts these non-standard literals; they must still be out of range.
    for lit in (b"NaN", b"Infinity", b"-Infinity"):
        r = post_raw(client, "/generate", b'{"prompt": "a", "temperature": ' + lit + b"}")
        assert_error(r, 422, "temperature")
    assert_quiet(server_log)


def test_values_on_the_limits_are_accepted(client, server_log):
    ok = [("/sentiment", {"text": "a" * 200}), ("/sentiment", {"texts": ["a"] * 4}),
          ("/generate", {"prompt": "p" * 100, "max_new_chars": 50, "temperature": 10,
                         "top_k": 1, "top_p": 1.0, "seed": 2**63 - 1, "stop": ["abcde", "x"]}),
          ("/generate", {"prompt": "a", "max_new_chars": 1, "temperature": 0, "seed": 0,
                         "top_p": 1e-9})]
    for path, body in ok:
        r = client.post(path, json=body)
        assert r.status_code == 200, (body, r.text)
    assert_quiet(server_log)


def test_unknown_model_is_a_404_naming_the_loaded_ones(client, server_log):
    for path, body in [("/sentiment", {"text": "ok", "model": "../models/chargen"}),
                       ("/attention", {"text": "ok", "model": "chargen"}),  # wrong task
                       ("/generate", {"prompt": "a", "model": "/etc/passwd"})]:
        err = assert_error(client.post(path, json=body), 404, "model")
        assert "loaded" in err["message"]
    assert_quiet(server_log)


def test_wrong_method_and_unknown_path_use_the_error_shape(client, server_log):
    r = client.get("/sentiment")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    r = client.post("/nope", json={})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert_quiet(server_log)


# --- odd but valid text ------------------------------------------------------------------

ODD_TEXTS = {
    "emoji-only": "😀😂🎬🍿👍🏽",
    "punctuation-only": "?!...,;:---!!!",
    "html": "<b>Great</b> film<br /><script>alert('x')</script>&amp;&lt;",
    "sql-looking": "'; DROP TABLE reviews; -- OR 1=1",
    "arabic-rtl": "هذا فيلم رائع جدا",
    "hebrew-rtl": "סרט נהדר, ממש אהבתי",
    "bidi-override": "\u202egood movie\u202c",
    "zero-width": "good\u200bmovie\u200c\u200d\ufeff",
    "combining-marks": "e\u0301\u0301\u0301 a\u0308",
    "format-strings": "%s %d {0} ${x} {{}}",
    "path-like": "../../etc/passwd C:\\Windows",
    "control-chars": "good\x01\x02\x1b[31mred\x7f",
    "mixed-scripts": "Ελληνικά Кириллица 中文 日本語 한국어",
}


@pytest.mark.parametrize("text", ODD_TEXTS.values(), ids=ODD_TEXTS.keys())
def test_odd_but_valid_text_is_classified_normally(client, server_log, text):
    r = post_json(client, "/sentiment", {"text": text})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["label"] in ("positive", "negative")
    assert abs(out["probabilities"]["positive"] + out["probabilities"]["negative"] - 1) < 1e-6
    r = post_json(client, "/attention", {"text": text})
    assert r.status_code == 200, r.text
    att = r.json()
    assert att["probabilities"] == out["probabilities"]
    for t in att["tokens"]:
        assert text[t["start"]:t["end"]].lower() == t["text"]
    if att["tokens"]:
        assert abs(sum(t["weight"] for t in att["tokens"]) - 1) < 1e-4
    r = post_json(client, "/generate", {"prompt": text, "max_new_chars": 5, "seed": 1})
    assert r.status_code == 200, r.text
    assert r.json()["generated_chars"] == 5
    assert_quiet(server_log)


def test_odd_texts_in_one_batch(client, server_log):
    texts = list(ODD_TEXTS.values())[:4]
    r = post_json(client, "/sentiment", {"texts": texts})
    assert r.status_code == 200, r.text
    singles = [post_json(client, "/sentiment", {"text": t}).json() for t in texts]
    got = r.json()["results"]
    for a, b in zip(got, singles, strict=True):
        assert abs(a["probabilities"]["positive"] - b["probabilities"]["positive"]) < 1e-5
    assert_quiet(server_log)


# --- the body limit is enforced while reading --------------------------------------------


def test_body_limit_stops_reading_a_50mb_stream_early():
    """A chunked 50 MB body: the request layer drains (and drops) at most DRAIN_FACTOR
    times the limit, so a client still sending can read its 413, then answers 413
    with ``Connection: close`` instead of reading on."""
    limit, chunk = 1_000_000, b"x" * 65_536
    pulled = 0
    sent: list[dict] = []
    reached_app = False

    async def app(scope, receive, send):  # pragma: no cover - must not be reached
        nonlocal reached_app
        reached_app = True

    async def receive():
        nonlocal pulled
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": pulled < 50_000_000}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/sentiment",
             "headers": [(b"content-type", b"application/json")]}
    layer = RequestLayer(app, Settings(max_body_bytes=limit), PolicyMap([], lambda r: None))
    asyncio.run(layer(scope, receive, send))
    assert not reached_app
    assert sent[0]["status"] == 413
    assert pulled <= limit * BodyGuard.DRAIN_FACTOR + len(chunk)
    assert (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["error"]["code"] == "payload_too_large"


def test_oversized_body_without_expect_continue_gets_413_not_a_reset(tiny_models_dir):
    """A 4 MB body sent whole by a client that does not wait for ``100 Continue``
    (urllib): the server drains it and the client reads the 413 (once a reset)."""
    import urllib.error
    import urllib.request

    from bench.server import ServerProcess

    with ServerProcess(tiny_models_dir) as srv:
        for body in (b"x" * 4_000_000, b"[" * 4_000_000):
            req = urllib.request.Request(srv.url + "/sentiment", data=body,
                                         headers={"Content-Type": "application/json"})
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=30)
            assert e.value.code == 413
            assert json.loads(e.value.read())["error"]["code"] == "payload_too_large"


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65_536)
        if not part:
            break
        data += part
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(rest) < length:
        part = sock.recv(65_536)
        if not part:
            break
        rest += part
    return head + b"\r\n\r\n" + rest


@pytest.fixture(scope="module")
def live_server(tiny_models_dir):
    from bench.server import ServerProcess

    with ServerProcess(tiny_models_dir) as srv:
        yield srv


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_live_server_answers_413_before_a_50mb_body_is_sent(live_server, framing):
    """Over real HTTP: the 413 arrives while 48+ MB of the body are still unsent."""
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=10) as sock:
        if framing == "content-length":
            sock.sendall(b"POST /sentiment HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n")
            sock.sendall(b'{"text": "' + b"a" * 100_000)
        else:
            sock.sendall(b"POST /sentiment HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            piece = b"a" * 65_536
            for _ in range(20):  # 1.3 MB: over the default 1 MB limit, far below 50 MB
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        response = _read_response(sock)
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    body = json.loads(response.partition(b"\r\n\r\n")[2])
    assert body["error"]["code"] == "payload_too_large"
    assert live_server.get("/healthz").status_code == 200  # and the server is fine
