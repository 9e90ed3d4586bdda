"""gzip (app/http/encoding.py, Starlette's GZipMiddleware): responses over ~1 KB when the client
accepts it, /metrics included; small answers, Server-Sent Events and the precompressed static files pass
through untouched."""

from __future__ import annotations

import gzip

import pytest

from app.http.encoding import accepts_gzip

GZ = {"accept-encoding": "gzip"}
IDENTITY = {"accept-encoding": "identity"}


def raw(client, method: str, path: str, headers: dict, **kw) -> tuple[int, dict, bytes]:
    """Status, headers and the body exactly as sent (httpx would decode gzip)."""
    with client.stream(method, path, headers=headers, **kw) as r:
        return r.status_code, dict(r.headers), b"".join(r.iter_raw())


def test_metrics_are_gzipped_when_accepted_and_plain_otherwise(tiny_client):
    tiny_client.post("/sentiment", json={"text": "good"})
    status, h, body = raw(tiny_client, "GET", "/metrics", GZ)
    assert status == 200 and h["content-encoding"] == "gzip" and "accept-encoding" in h["vary"].lower()
    text = gzip.decompress(body)
    assert b"seqserve_requests_total" in text and int(h["content-length"]) == len(body)
    assert len(body) < len(text) / 3
    status, h, body = raw(tiny_client, "GET", "/metrics", IDENTITY)
    assert "content-encoding" not in h and b"seqserve_requests_total" in body
    status, h, body = raw(tiny_client, "GET", "/metrics", {"accept-encoding": "gzip;q=0"})
    assert "content-encoding" not in h


def test_a_long_attention_answer_is_gzipped_a_short_sentiment_answer_is_not(tiny_client):
    text = "a good film with a great plot and awful acting " * 40
    status, h, body = raw(tiny_client, "POST", "/attention", GZ, json={"text": text})
    assert status == 200 and h["content-encoding"] == "gzip"
    assert b'"tokens"' in gzip.decompress(body)
    status, h, body = raw(tiny_client, "POST", "/sentiment", GZ, json={"text": "good"})
    assert status == 200 and "content-encoding" not in h and len(body) < 1024
    assert int(h["content-length"]) == len(body) and body.startswith(b"{")


def test_server_sent_events_are_never_compressed(tiny_client):
    status, h, body = raw(tiny_client, "POST", "/generate", GZ,
                          json={"prompt": "the ", "max_new_chars": 1500, "stream": True})
    assert status == 200 and h["content-type"].startswith("text/event-stream")
    # 1,500 characters make a stream well over GZip's 1 KB minimum (600 sometimes made
    # exactly 1,024 bytes, which it would not compress anyway)
    assert "content-encoding" not in h and body.startswith(b"data: ") and len(body) > 1500


def test_static_files_are_compressed_once_by_their_own_route(tiny_client):
    status, h, body = raw(tiny_client, "GET", "/static/app.js", GZ)
    assert status == 200 and h["content-encoding"] == "gzip" and "etag" in h
    js = gzip.decompress(body)
    assert not js.startswith(b"\x1f\x8b") and b"function" in js  # not gzip inside gzip


def test_head_gets_no_compressed_empty_body(tiny_client):
    r = tiny_client.head("/healthz", headers=GZ)
    assert r.status_code == 200 and "content-encoding" not in r.headers


@pytest.mark.parametrize("header, ok", [
    ("gzip", True), ("deflate, gzip;q=0.5", True), ("*", True), ("br", False),
    ("gzip;q=0", False), ("gzip;q=zz", False), ("", False)])
def test_accept_encoding_parsing(header, ok):
    assert accepts_gzip({"headers": [(b"accept-encoding", header.encode())]}) is ok
