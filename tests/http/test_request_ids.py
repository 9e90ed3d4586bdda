"""Request ids the layer makes up (app/http/layer.py ``RequestIds``): 32 hex digits from
the OS's random source, drawn in batches so the event loop rarely gives up the GIL."""

from __future__ import annotations

import re

import pytest

from app.http import layer
from app.http.layer import RequestIds


def test_generated_ids_are_32_hex_digits_and_unique():
    ids = RequestIds(batch=16)
    got = [ids.next() for _ in range(1000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in got)
    assert len(set(got)) == len(got)


def test_os_random_source_is_read_once_per_batch(monkeypatch: pytest.MonkeyPatch):
    calls: list[int] = []
    real = layer.os.urandom

    def counted(n: int) -> bytes:
        calls.append(n)
        return real(n)

    monkeypatch.setattr(layer.os, "urandom", counted)
    ids = RequestIds(batch=8)
    for _ in range(8):
        ids.next()
    assert calls == [16 * 8]
    ids.next()  # the ninth id starts a new draw
    assert calls == [16 * 8, 16 * 8]


def test_a_request_without_an_id_gets_a_fresh_one_each_time(client):
    seen = {client.get("/healthz").headers["x-request-id"] for _ in range(5)}
    assert len(seen) == 5
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in seen)
