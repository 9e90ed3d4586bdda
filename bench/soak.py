"""Soak test: many valid and invalid requests against a real server, then a verdict.

    python -m bench.soak                      # 50,000 requests at concurrency 64
    python -m bench.soak --requests 2000 --models-dir /path/to/models

Starts ``python -m app`` on a free loopback port (API key on, small body limit so the
413 path is cheap to reach), then sends ``--requests`` requests from ``--concurrency``
concurrent clients over keep-alive connections: a fixed-seed mix of valid requests to
every endpoint (/sentiment single and batch, /attention, /generate plain and streamed,
health, readiness, models, metrics) and invalid ones (bad JSON, bad UTF-8, wrong
content type, wrong types, unknown fields, out-of-range values, blank and NUL text,
over-size bodies, unknown models and paths, missing or wrong API key). Every answer is
checked: the expected status, a complete body (a 200 parses and has its fields; a
stream ends with its final event; an error is the one error shape).

Passes (exit 0) when: every request was answered (zero dropped connections), zero 5xx,
zero unexpected answers, the server's resident memory (RSS, sampled all along) grew
less than 10 % from the first 10 % of the requests to the last 10 % (median of each
window), nothing was logged at ERROR, the API key never appeared in the log, and the
server then shut down cleanly on SIGTERM (exit 0). Bounded in count and in time
(``--max-seconds``; hitting it is a failure). Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.server import ROOT, ServerProcess

API_KEY = "soak-test-key-3f9a1c"
MAX_BODY = 65_536


# ------------------------------------------------------------------ the request mix

REVIEWS = [
    "A moving, beautifully acted film. I loved every minute of it!",
    "Dull, far too long, and the plot made no sense at all.",
    "The acting was superb but the script was thin; still, worth a watch?",
    "I don't think I've ever been this bored in a cinema. Awful.",
    "One of the director's best: funny, warm and honest.<br /><br />Go and see it.",
    "😀😂🎬 loved it", "?!...", "<b>bold</b> <script>alert(1)</script>",
    "'; DROP TABLE reviews; --", "هذا فيلم رائع", "good\u200bmovie", "Ελληνικά 中文 한국어",
]
PROMPTS = ["the free spirit ", "what is good? ", "man is ", "Zarathustra said: ",
           "in the beginning", "ÄÖÜ unknown ☃ chars "]


@dataclass
class Req:
    kind: str
    method: str
    path: str
    expect: int
    json: Any = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    auth: bool = True


def _gen_body(rng: random.Random) -> dict:
    body: dict[str, Any] = {"prompt": rng.choice(PROMPTS), "max_new_chars": rng.randint(5, 40),
                            "temperature": rng.choice([0, 0.5, 1.0, 1.5]), "seed": rng.randrange(2**32)}
    if rng.random() < 0.3:
        body["top_k"] = rng.randint(1, 20)
    if rng.random() < 0.3:
        body["top_p"] = rng.choice([0.5, 0.9, 1.0])
    if rng.random() < 0.2:
        body["stop"] = [rng.choice([" ", "e", "\n", "the"])]
    return body


def _out_of_range(rng: random.Random) -> dict:
    return rng.choice([
        {"prompt": "a", "max_new_chars": 0}, {"prompt": "a", "max_new_chars": 10**9},
        {"prompt": "a", "temperature": -1}, {"prompt": "a", "temperature": 11},
        {"prompt": "a", "top_k": 0}, {"prompt": "a", "top_p": 0}, {"prompt": "a", "top_p": 2},
        {"prompt": "a", "seed": -5}, {"prompt": "a", "stop": ["a", "b", "c", "d", "e"]},
        {"prompt": "a", "stop": ["x" * 100]}, {"prompt": "a", "stop": [""]}])


def make_request(rng: random.Random) -> Req:
    """One request of the mix: ~65 % valid, ~35 % invalid."""
    x = rng.random()
    review = rng.choice(REVIEWS)
    # valid
    if x < 0.20:
        return Req("sentiment", "POST", "/sentiment", 200, {"text": review})
    if x < 0.28:
        return Req("sentiment_batch", "POST", "/sentiment", 200,
                   {"texts": rng.sample(REVIEWS, rng.randint(2, 6))})
    if x < 0.40:
        return Req("attention", "POST", "/attention", 200, {"text": review})
    if x < 0.50:
        return Req("generate", "POST", "/generate", 200, _gen_body(rng))
    if x < 0.57:
        return Req("generate_stream", "POST", "/generate", 200, {**_gen_body(rng), "stream": True})
    if x < 0.65:
        path = rng.choice(["/healthz", "/readyz", "/v1/models", "/metrics"])
        return Req("ops" + path.replace("/", "_"), "GET", path, 200, auth=False)
    # invalid
    if x < 0.68:
        return Req("bad_json", "POST", rng.choice(["/sentiment", "/generate"]), 400,
                   raw=b'{"text": "unterminated')
    if x < 0.70:
        return Req("bad_utf8", "POST", "/attention", 400, raw=b'{"text": "\xff\xfe\xfd"}')
    if x < 0.72:
        return Req("wrong_content_type", "POST", "/sentiment", 415, raw=b'{"text": "a"}',
                   headers={"Content-Type": "text/plain"})
    if x < 0.75:
        return Req("wrong_type", "POST", rng.choice(["/sentiment", "/attention"]), 422,
                   {"text": rng.choice([5, None, ["a"], {"a": 1}, True])})
    if x < 0.77:
        return Req("unknown_field", "POST", "/generate", 422, {"prompt": "a", "max_new_char": 5})
    if x < 0.82:
        return Req("out_of_range", "POST", "/generate", 422, _out_of_range(rng))
    if x < 0.84:
        return Req("blank_text", "POST", "/sentiment", 422, {"text": rng.choice(["", "  \n"])})
    if x < 0.86:
        return Req("nul_text", "POST", "/attention", 422, {"text": "a\x00b"})
    if x < 0.88:
        return Req("too_many_texts", "POST", "/sentiment", 422, {"texts": ["a"] * 65})
    if x < 0.90:
        return Req("too_large", "POST", "/sentiment", 413,
                   raw=json.dumps({"text": "a " * (MAX_BODY // 2 + 10)}).encode())
    if x < 0.92:
        return Req("unknown_model", "POST", "/sentiment", 404, {"text": "a", "model": "nope"})
    if x < 0.94:
        return Req("unknown_path", "GET", "/v2/nothing", 404, auth=False)
    if x < 0.97:
        return Req("no_api_key", "POST", "/sentiment", 401, {"text": review}, auth=False)
    return Req("wrong_api_key", "POST", "/generate", 401, _gen_body(rng), auth=False,
               headers={"Authorization": "Bearer not-the-key"})


def _check_body(req: Req, status: int, body: bytes, ctype: str) -> str | None:
    """None when the answer is complete and well-formed, else what is wrong."""
    try:
        if status >= 400:
            err = json.loads(body)["error"]
            if err["status"] != status or not err["message"] or not err["code"]:
                return f"bad error body {body[:200]!r}"
            return None
        if req.kind == "generate_stream":
            events = [json.loads(line[6:]) for line in body.decode().split("\n")
                      if line.startswith("data: ")]
            if "event: error" in body.decode() or not events:
                return f"stream error or empty: {body[-200:]!r}"
            final = events[-1]
            text = "".join(e["text"] for e in events)
            if final.get("finish_reason") not in ("length", "stop"):
                return f"stream without a final event: {body[-200:]!r}"
            if len(text) != final["generated_chars"]:
                return "stream text length differs from generated_chars"
            return None
        if req.path == "/metrics":
            return None if b"seqserve_requests_total" in body else "metrics incomplete"
        data = json.loads(body)
        if req.kind == "sentiment":
            ok = data["label"] in ("positive", "negative") and 0 <= data["score"] <= 1
        elif req.kind == "sentiment_batch":
            ok = len(data["results"]) == len(req.json["texts"])
        elif req.kind == "attention":
            ok = all(req.json["text"][t["start"]:t["end"]].lower() == t["text"]
                     for t in data["tokens"])
        elif req.kind == "generate":
            ok = (data["finish_reason"] in ("length", "stop")
                  and len(data["text"]) == data["generated_chars"] <= req.json["max_new_chars"])
        else:
            ok = isinstance(data, dict)
        return None if ok else f"incomplete answer {body[:200]!r}"
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        return f"unparseable answer ({e!r}): {body[:200]!r}"


# ------------------------------------------------------------------ the run

@dataclass
class SoakResult:
    requests: int = 0
    seconds: float = 0.0
    by_status: Counter = field(default_factory=Counter)
    by_kind: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    unexpected: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    rss_samples: list[tuple[int, int]] = field(default_factory=list)  # (done, bytes)
    cut_by_time: bool = False

    @property
    def server_errors(self) -> int:
        return sum(n for s, n in self.by_status.items() if s >= 500)

    def rss_window(self, lo: float, hi: float) -> float:
        xs = [b for done, b in self.rss_samples if lo * self.requests <= done <= hi * self.requests]
        return statistics.median(xs) if xs else float("nan")

    @property
    def rss_growth(self) -> float:
        first, last = self.rss_window(0.0, 0.1), self.rss_window(0.9, 1.0)
        return (last - first) / first


async def run_load(url: str, n: int, concurrency: int, max_seconds: float,
                   rss: Callable[[], int], seed: int = 0) -> SoakResult:
    import aiohttp

    res = SoakResult()
    counter = iter(range(n))
    t0 = time.perf_counter()
    deadline = t0 + max_seconds
    done = 0

    async def sample_rss() -> None:
        while True:
            res.rss_samples.append((done, rss()))
            await asyncio.sleep(0.05)

    async def worker(w: int, session: aiohttp.ClientSession) -> None:
        nonlocal done
        rng = random.Random(seed * 1_000_003 + w)
        for i in counter:
            if time.perf_counter() > deadline:
                res.cut_by_time = True
                return
            req = make_request(rng)
            headers = {"X-Request-ID": f"soak-{i}", **req.headers}
            if req.auth:
                headers["Authorization"] = f"Bearer {API_KEY}"
            kwargs: dict[str, Any] = {"headers": headers}
            if req.raw is not None:
                kwargs["data"] = req.raw
                headers.setdefault("Content-Type", "application/json")
            elif req.json is not None:
                kwargs["json"] = req.json
            try:
                async with session.request(req.method, req.path, **kwargs) as r:
                    body = await r.read()
                    status, ctype = r.status, r.headers.get("content-type", "")
                    rid = r.headers.get("x-request-id")
            except (TimeoutError, aiohttp.ClientError) as e:
                res.dropped[f"{req.kind}: {type(e).__name__}"] += 1
                if len(res.examples) < 20:
                    res.examples.append(f"{req.kind} dropped: {e!r}")
                continue
            finally:
                done += 1
            res.by_status[status] += 1
            res.by_kind[f"{req.kind} {status}"] += 1
            problem = None if status == req.expect else f"status {status}, expected {req.expect}"
            problem = problem or _check_body(req, status, body, ctype)
            if rid != headers["X-Request-ID"]:
                problem = problem or f"request id not echoed ({rid!r})"
            if problem:
                res.unexpected[req.kind] += 1
                if len(res.examples) < 20:
                    res.examples.append(f"{req.kind} {req.method} {req.path}: {problem}: "
                                        f"{body[:300]!r}")

    timeout = aiohttp.ClientTimeout(total=120)
    conn = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    sampler = asyncio.create_task(sample_rss())
    try:
        async with aiohttp.ClientSession(url, connector=conn, timeout=timeout) as session:
            await asyncio.gather(*(worker(w, session) for w in range(concurrency)))
    finally:
        sampler.cancel()
    res.rss_samples.append((done, rss()))
    res.requests = done
    res.seconds = time.perf_counter() - t0
    return res


@dataclass
class Verdict:
    result: SoakResult
    failures: list[str]
    exit_status: int | None
    error_lines: list[str]

    @property
    def ok(self) -> bool:
        return not self.failures


def soak(models_dir: Path, n: int = 50_000, concurrency: int = 64, max_seconds: float = 1800,
         max_rss_growth: float = 0.10, seed: int = 0, **settings: Any) -> Verdict:
    """Start a server, run the load, judge it; the server is stopped with SIGTERM."""
    with ServerProcess(models_dir, api_key=API_KEY, max_body_bytes=MAX_BODY, **settings) as srv:
        res = asyncio.run(run_load(srv.url, n, concurrency, max_seconds, srv.rss, seed))
        exit_status = srv.terminate(timeout=60)
        log = srv.log()
    error_lines = [ln for ln in log.splitlines()
                   if " ERROR " in ln or ln.startswith("ERROR") or "Traceback" in ln]
    failures = []
    if res.cut_by_time or res.requests < n:
        failures.append(f"only {res.requests} of {n} requests in {max_seconds:.0f} s")
    if res.dropped:
        failures.append(f"{sum(res.dropped.values())} dropped connections: {dict(res.dropped)}")
    if res.server_errors:
        failures.append(f"{res.server_errors} answers were 5xx")
    if res.unexpected:
        failures.append(f"{sum(res.unexpected.values())} unexpected answers: "
                        f"{dict(res.unexpected)}")
    if not res.rss_growth < max_rss_growth:
        failures.append(f"RSS grew {res.rss_growth:.1%} (limit {max_rss_growth:.0%})")
    if error_lines:
        failures.append(f"{len(error_lines)} ERROR lines in the server log")
    if API_KEY in log:
        failures.append("the API key appears in the server log")
    if exit_status != 0:
        failures.append(f"server exited with {exit_status} after SIGTERM")
    return Verdict(res, failures, exit_status, error_lines[:10])


def report(v: Verdict) -> str:
    r = v.result
    mb = 1024 * 1024
    lines = [
        f"requests: {r.requests} in {r.seconds:.1f} s ({r.requests / max(r.seconds, 1e-9):.0f}/s)",
        "by status: " + ", ".join(f"{s}: {n}" for s, n in sorted(r.by_status.items())),
        f"5xx: {r.server_errors}   dropped connections: {sum(r.dropped.values())}   "
        f"unexpected answers: {sum(r.unexpected.values())}",
        f"server RSS: first 10 % {r.rss_window(0, 0.1) / mb:.1f} MiB, last 10 % "
        f"{r.rss_window(0.9, 1.0) / mb:.1f} MiB (growth {r.rss_growth:+.2%}), "
        f"max {max(b for _, b in r.rss_samples) / mb:.1f} MiB over {len(r.rss_samples)} samples",
        f"server exit status after SIGTERM: {v.exit_status}",
        "by kind and status:",
        *(f"  {k}: {n}" for k, n in sorted(r.by_kind.items())),
    ]
    if r.examples:
        lines += ["examples of problems:", *("  " + e for e in r.examples)]
    if v.error_lines:
        lines += ["ERROR lines in the server log:", *("  " + e for e in v.error_lines)]
    lines.append("PASS" if v.ok else "FAIL: " + "; ".join(v.failures))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--max-seconds", type=float, default=1800)
    ap.add_argument("--max-rss-growth", type=float, default=0.10)
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args(argv)
    v = soak(a.models_dir, a.requests, a.concurrency, a.max_seconds, a.max_rss_growth, a.seed)
    print(report(v))
    if a.json:
        r = v.result
        a.json.write_text(json.dumps({
            "requests": r.requests, "seconds": r.seconds, "concurrency": a.concurrency,
            "by_status": {str(k): n for k, n in sorted(r.by_status.items())},
            "server_errors": r.server_errors, "dropped": dict(r.dropped),
            "unexpected": dict(r.unexpected), "rss_first_10pct_bytes": r.rss_window(0, 0.1),
            "rss_last_10pct_bytes": r.rss_window(0.9, 1.0), "rss_growth": r.rss_growth,
            "exit_status": v.exit_status, "failures": v.failures}, indent=2))
    return 0 if v.ok else 1


if __name__ == "__main__":
    sys.exit(main())
