"""End to end: `python -m app` as a subprocess on a free loopback port, real HTTP.

Also: answers do not depend on batching under real concurrency, concurrent seeded
streams are reproducible, and metrics aggregate across several uvicorn workers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from bench.server import ServerProcess


@contextmanager
def server(models: Path, **settings: object) -> Iterator[str]:
    with ServerProcess(models, log_level="warning", **settings) as srv:
        try:
            yield srv.url
        finally:
            srv.terminate(30)


@pytest.fixture(scope="module")
def live(models_dir) -> Iterator[str]:
    with server(models_dir) as url:
        yield url


def test_real_http_round_trip(live):
    with httpx.Client(base_url=live, timeout=30) as c:
        r = c.post("/sentiment", json={"text": "A wonderful, moving film."},
                   headers={"X-Request-ID": "abc-123"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "abc-123"
        assert r.json()["label"] in ("positive", "negative")
        r = c.post("/generate", json={"prompt": "man is ", "max_new_chars": 40, "seed": 3})
        assert r.status_code == 200 and len(r.json()["text"]) == 40
        assert "seqserve_request_duration_seconds_bucket" in c.get("/metrics").text
        assert c.get("/docs").status_code == 200
        schema = c.get("/openapi.json").json()
        for path in ("/sentiment", "/attention", "/generate"):
            body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]
            ref = body["schema"]["$ref"].rsplit("/", 1)[1]
            assert schema["components"]["schemas"][ref].get("examples"), path


REVIEWS = [
    "Terrible.", "I loved it, what a film!", "The plot drags " * 40,
    "An uneven but ultimately rewarding experience with a great cast. " * 8,
    "worst movie ever made, avoid", "Not bad at all, quite good actually.",
    "Meh. " * 200, "Brilliant performances, a stunning score and a script that sings.",
]


async def _classify_concurrently(url: str, texts: list[str], concurrency: int) -> list[float]:
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60,
                                 limits=httpx.Limits(max_connections=concurrency)) as c:
        async def one(t: str) -> float:
            async with sem:
                r = await c.post("/sentiment", json={"text": t})
                assert r.status_code == 200, r.text
                return r.json()["probabilities"]["positive"]
        return await asyncio.gather(*(one(t) for t in texts))


def test_answer_is_the_same_alone_in_a_batch_request_and_under_concurrency(live):
    alone = []
    with httpx.Client(base_url=live, timeout=30) as c:
        for t in REVIEWS:
            alone.append(c.post("/sentiment", json={"text": t}).json()["probabilities"]["positive"])
        batch = c.post("/sentiment", json={"texts": REVIEWS}).json()["results"]
        buckets_before = c.get("/metrics").text
    for a, b in zip(alone, batch, strict=True):
        assert abs(a - b["probabilities"]["positive"]) <= 1e-5
    mixed = REVIEWS * 12
    conc = asyncio.run(_classify_concurrently(live, mixed, 32))
    for i, p in enumerate(conc):
        assert abs(p - alone[i % len(REVIEWS)]) <= 1e-5
    # and the concurrent requests really were batched together
    with httpx.Client(base_url=live, timeout=30) as c:
        after = c.get("/metrics").text

    def multi_row_calls(text: str) -> float:
        total = count_le1 = 0.0
        for line in text.splitlines():
            if line.startswith('seqserve_batch_size_bucket{kind="classify"'):
                if 'le="1.0"' in line:
                    count_le1 = float(line.rsplit(" ", 1)[1])
            if line.startswith('seqserve_batch_size_count{kind="classify"'):
                total = float(line.rsplit(" ", 1)[1])
        return total - count_le1

    assert multi_row_calls(after) > multi_row_calls(buckets_before)


async def _generate_concurrently(url: str, bodies: list[dict]) -> list[str]:
    async with httpx.AsyncClient(base_url=url, timeout=120,
                                 limits=httpx.Limits(max_connections=len(bodies))) as c:
        async def one(b: dict) -> str:
            r = await c.post("/generate", json=b)
            assert r.status_code == 200, r.text
            return r.json()["text"]
        return await asyncio.gather(*(one(b) for b in bodies))


def test_seeded_streams_are_reproducible_whatever_else_runs(live):
    bodies = [{"prompt": p, "max_new_chars": 80 + 10 * i, "seed": 100 + i, "temperature": 0.8,
               "top_p": 0.9 if i % 2 else None}
              for i, p in enumerate(["the will to power ", "morality ", "what is noble? ",
                                     "x", "the philosopher " * 5, "god is dead. "])]
    with httpx.Client(base_url=live, timeout=60) as c:
        alone = [c.post("/generate", json=b).json()["text"] for b in bodies]
    together = asyncio.run(_generate_concurrently(live, bodies * 3))
    assert together == alone * 3


def test_metrics_aggregate_across_several_workers(models_dir):
    with server(models_dir, workers=2) as url:
        with httpx.Client(base_url=url, timeout=30) as c:
            n = 24
            for _ in range(n):
                # new connections so that both workers get some of them
                assert httpx.post(url + "/sentiment", json={"text": "good"}).status_code == 200
            text = c.get("/metrics").text
    count = 0.0
    pids = set()
    for line in text.splitlines():
        if line.startswith("seqserve_requests_total{") and 'route="/sentiment"' in line \
                and 'status="200"' in line:
            count += float(line.rsplit(" ", 1)[1])
        if line.startswith("seqserve_model_info{"):
            pids.add(line)
    assert count == n  # every worker's requests, counted once
    assert pids


def test_the_batcher_forgets_announced_rows_that_never_arrive(tiny_client):
    """Rows refused by a full queue or by validation must not leave the batcher
    waiting for them (it waits for company only while rows are on their way)."""
    app = tiny_client.app
    batcher = next(iter(app.state.seqserve.batchers.values()))
    assert tiny_client.post("/sentiment", json={"texts": ["good film"] * 3}).status_code == 200
    assert tiny_client.post("/sentiment", json={"text": ""}).status_code == 422
    assert tiny_client.post("/attention", json={"text": "bad"}).status_code == 200
    assert batcher.incoming == 0
