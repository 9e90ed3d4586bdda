"""Send a bounded mix of real traffic to seqserve (through the load balancer) and check it.

Used by deploy_test.sh so that every panel of the dashboard and every alert signal has
data: classification (single, batched and concurrent, so batches of several rows
form), attention, generation (plain and streamed, so time-to-first-character and
per-character times are observed), callers' mistakes (422, 415, 413) and real overload:
one request with more texts than the replica's queue holds (the test runs the replicas
with SEQSERVE_MAX_QUEUE below SEQSERVE_MAX_TEXTS) is refused with 503 queue_full and
Retry-After. Every answer is checked (status, shape, values); any surprise fails.
Stdlib only; every request has a timeout and the whole run is a fixed number of requests.

    python traffic.py http://127.0.0.1:8200 [--rounds 4] [--pause 3] [--overload 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

TIMEOUT_S = 30.0
REVIEWS = [
    "A moving, beautifully acted film. I loved every minute of it.",
    "Dull, far too long, and the ending makes no sense at all.",
    "The plot was thin, but the acting was superb and the music wonderful.",
    "I want those two hours of my life back. Terrible script, wooden acting.",
    "An instant classic! " * 20,
    "ok",
]


class Failure(Exception):
    pass


def call(base: str, method: str, path: str, body: bytes | None = None,
         ctype: str = "application/json", headers: dict | None = None):
    req = urllib.request.Request(base + path, data=body, method=method,
                                 headers={"Content-Type": ctype, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def post(base: str, path: str, obj: dict, **kw):
    return call(base, "POST", path, json.dumps(obj).encode(), **kw)


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise Failure(what)


def check_error(status: int, raw: bytes, want_status: int, want_code: str) -> None:
    expect(status == want_status, f"expected {want_status}, got {status}: {raw[:200]!r}")
    err = json.loads(raw)["error"]
    expect(err["status"] == want_status and err["code"] == want_code,
           f"error body {err} is not {want_status}/{want_code}")


def sentiment_one(base: str, text: str) -> None:
    status, _, raw = post(base, "/sentiment", {"text": text})
    expect(status == 200, f"/sentiment: {status} {raw[:200]!r}")
    r = json.loads(raw)
    p = r["probabilities"]
    expect(r["label"] in ("positive", "negative"), f"/sentiment label {r['label']!r}")
    expect(abs(p["negative"] + p["positive"] - 1) < 1e-5, f"/sentiment probabilities {p}")


def sentiment_batch(base: str, texts: list[str]) -> None:
    status, _, raw = post(base, "/sentiment", {"texts": texts})
    expect(status == 200, f"/sentiment batch: {status} {raw[:200]!r}")
    expect(len(json.loads(raw)["results"]) == len(texts), "/sentiment batch: result count")


def attention(base: str, text: str) -> None:
    status, _, raw = post(base, "/attention", {"text": text})
    expect(status == 200, f"/attention: {status} {raw[:200]!r}")
    toks = json.loads(raw)["tokens"]
    expect(toks and abs(sum(t["weight"] for t in toks) - 1) < 1e-3, "/attention weights sum to 1")
    for t in toks:
        expect(text[t["start"]:t["end"]].lower() == t["text"].lower() or t["text"].startswith("<"),
               f"/attention offsets {t}")


def generate(base: str, seed: int) -> None:
    body = {"prompt": "the free spirit ", "max_new_chars": 60, "temperature": 0.8, "seed": seed}
    status, _, raw = post(base, "/generate", body)
    expect(status == 200, f"/generate: {status} {raw[:200]!r}")
    r = json.loads(raw)
    expect(r["generated_chars"] == len(r["text"]) <= 60 and r["seed"] == seed, f"/generate {r}")
    again = json.loads(post(base, "/generate", body)[2])  # same seed, same text (any replica)
    expect(again["text"] == r["text"], "/generate: same seed gave a different text")


def generate_stream(base: str, seed: int) -> None:
    body = {"prompt": "what is noble? ", "max_new_chars": 80, "seed": seed, "stream": True}
    status, headers, raw = post(base, "/generate", body)
    expect(status == 200, f"/generate stream: {status} {raw[:200]!r}")
    expect((headers.get("Content-Type") or "").startswith("text/event-stream"), "SSE content type")
    events = [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: ")]
    expect(events and events[-1]["finish_reason"] in ("length", "stop"), f"SSE last event {events[-1:]}")
    text = "".join(e["text"] for e in events)
    expect(len(text) == events[-1]["generated_chars"], "SSE text length = generated_chars")


def mistakes(base: str) -> None:
    status, _, raw = post(base, "/sentiment", {"text": "fine", "colour": "blue"})
    check_error(status, raw, 422, "validation_error")
    status, _, raw = post(base, "/generate", {"prompt": ""})
    check_error(status, raw, 422, "validation_error")
    status, _, raw = call(base, "POST", "/sentiment", b"text=hello", ctype="text/plain")
    check_error(status, raw, 415, "unsupported_media_type")
    status, _, raw = post(base, "/sentiment", {"text": "x" * 1_100_000})  # over 1 MB default
    check_error(status, raw, 413, "payload_too_large")


def overload(base: str, n_texts: int) -> None:
    status, headers, raw = post(base, "/sentiment", {"texts": ["a fine film"] * n_texts})
    check_error(status, raw, 503, "overloaded")
    expect("Retry-After" in headers, "503 without Retry-After")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base", help="e.g. http://127.0.0.1:8200 (the load balancer)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pause", type=float, default=0.0,
                    help="seconds between rounds; more than the scrape interval, so that "
                         "every counter rises between two scrapes and rate() sees it")
    ap.add_argument("--overload", type=int, default=8, help="overloading requests per round")
    ap.add_argument("--overload-texts", type=int, default=64,
                    help="texts per overloading request (must exceed SEQSERVE_MAX_QUEUE)")
    a = ap.parse_args()
    base = a.base.rstrip("/")
    done: Counter[str] = Counter()

    status, _, raw = call(base, "GET", "/v1/models")
    expect(status == 200, f"/v1/models: {status}")
    tasks = {m["task"] for m in json.loads(raw)["models"]}
    expect({"text-classification", "text-generation"} <= tasks, f"/v1/models tasks {tasks}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        for rnd in range(a.rounds):
            jobs = [pool.submit(sentiment_one, base, t) for t in REVIEWS * 4]
            jobs += [pool.submit(sentiment_batch, base, REVIEWS)]
            jobs += [pool.submit(attention, base, t) for t in REVIEWS[:4]]
            jobs += [pool.submit(generate, base, 1000 * rnd + i) for i in range(3)]
            jobs += [pool.submit(generate_stream, base, 2000 * rnd + i) for i in range(3)]
            for j in jobs:
                j.result()
            done["ok_requests"] += len(REVIEWS) * 4 + 1 + 4 + 3 * 2 + 3
            mistakes(base)
            done["mistakes"] += 4
            jobs = [pool.submit(overload, base, a.overload_texts) for _ in range(a.overload)]
            for j in jobs:
                j.result()
            done["overloaded_503"] += a.overload
            for t in REVIEWS:  # the service is fine again right after
                sentiment_one(base, t)
            done["ok_requests"] += len(REVIEWS)
            if rnd + 1 < a.rounds:
                time.sleep(a.pause)
    print("traffic:", dict(done))


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        print(f"traffic: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
