"""Bounded cost per request (the floors of points 1 and 2 of the reliability work):
prints one JSON object of figures, each with the floor it is held to.

    python -m bench.bounded                 # the bundled models
    python -m bench.bounded --models-dir DIR --prompt-chars 8000

Figures, against one server started here (``bench.server.ServerProcess``):

- **prefill memory**: for each generator, 16 concurrent ``/generate`` calls with distinct
  random prompts of ``--prompt-chars`` characters and ``max_new_chars: 1``; the server's
  RSS before, at its peak (sampled every 20 ms) and 10 s after the burst, for two
  bursts. Floor: the rise <= 300 MB at every point (and a second burst adds nothing);
- **four 16-prompt completions** at once (``/v1/completions``, ``max_tokens: 1``) while
  a streamed ``/generate`` runs: the peak RSS (floor: under the compose limit) and the
  longest wait of the running stream for an event (floor: <= 250 ms);
- **hostile body**: a ~1 MB JSON body of 100,000 unknown keys to ``/sentiment``: what
  it costs the server (its CPU time per body, over 15 of them) and the size of the
  answer (floors: <= 20 ms, <= 16 KB), the sender's latency, and a neighbour's
  ``/sentiment`` p50 with and without three clients looping on such bodies (floor:
  within 2x).

Quote these only from a quiet machine: nothing else heavy may run beside it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import statistics
import string
import threading
import time
from pathlib import Path

import httpx

from bench.server import ROOT, ServerProcess, cpu_seconds

MB = 1 << 20
# docker-compose.yml's memory limit of one replica
COMPOSE_LIMIT_BYTES = 2048 * MB


def _prompt(rng: random.Random, n: int) -> str:
    alphabet = string.ascii_lowercase + " .,;'"
    return "".join(rng.choice(alphabet) for _ in range(n))


class RssSampler:
    """The server's peak RSS while it runs (sampled every 20 ms on a thread)."""

    def __init__(self, server: ServerProcess):
        self.server, self.peak, self._stop = server, server.rss(), threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.server.rss())
            time.sleep(0.02)

    def __enter__(self) -> RssSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def _parallel(n: int, fn) -> list:
    out: list = [None] * n

    def run(k: int) -> None:
        try:
            out[k] = fn(k)
        except Exception as e:  # reported, not raised: the figures still print
            out[k] = e

    ts = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def prefill_memory(srv: ServerProcess, model: str, chars: int, rng: random.Random) -> dict:
    """Two bursts, 10 s apart: the rise at the peak and 10 s after each. The first one
    also pays for what the server sets up on first use (a thread pool, the arena's
    first regions): the second shows whether a burst leaves memory behind."""
    before = srv.rss()
    out: dict = {"model": model, "rss_before_mb": round(before / MB), "floor_rise_mb": 300}
    for burst in (1, 2):
        prompts = [_prompt(rng, chars) for _ in range(16)]
        t0 = time.perf_counter()
        with RssSampler(srv) as s, httpx.Client(timeout=120) as c:
            codes = _parallel(16, lambda k, p=prompts: c.post(srv.url + "/generate", json={
                "prompt": p[k], "max_new_chars": 1, "model": model}).status_code)
        burst_s = time.perf_counter() - t0
        time.sleep(10)
        after = srv.rss()
        out[f"burst{burst}"] = {
            "statuses": sorted({str(x) for x in codes}), "seconds": round(burst_s, 2),
            "peak_rise_mb": round((s.peak - before) / MB),
            "rise_after_10s_mb": round((after - before) / MB)}
    return out


def completions_with_stream(srv: ServerProcess, chars: int, rng: random.Random) -> dict:
    batches = [[_prompt(rng, chars) for _ in range(16)] for _ in range(4)]
    gaps: list[float] = []
    started = threading.Event()
    done = threading.Event()

    def stream() -> None:
        # streams one after another (each at most max_new_chars long) until the burst is
        # over; a new stream's wait for its first event counts as a wait too
        with httpx.Client(timeout=120) as c:
            k = 0
            while not done.is_set():
                k += 1
                last = time.perf_counter()
                with c.stream("POST", srv.url + "/generate", json={
                        "prompt": "the ", "max_new_chars": 2000, "stream": True,
                        "seed": k}) as r:
                    for _ in r.iter_raw():
                        now = time.perf_counter()
                        if not done.is_set():
                            gaps.append(now - last)
                        last = now
                        started.set()

    t = threading.Thread(target=stream, daemon=True)
    t.start()
    started.wait(30)
    time.sleep(0.3)
    before = srv.rss()
    gaps.clear()
    with RssSampler(srv) as s, httpx.Client(timeout=300) as c:
        t0 = time.perf_counter()
        codes = _parallel(4, lambda k: c.post(srv.url + "/v1/completions", json={
            "model": "chargen", "prompt": batches[k], "max_tokens": 1}).status_code)
        burst_s = time.perf_counter() - t0
    done.set()
    t.join(60)
    return {"statuses": sorted({str(x) for x in codes}), "burst_s": round(burst_s, 2),
            "peak_rss_mb": round(s.peak / MB), "rss_before_mb": round(before / MB),
            "compose_limit_mb": COMPOSE_LIMIT_BYTES // MB,
            "stream_events": len(gaps),
            "stream_longest_wait_ms": round(max(gaps) * 1000, 1) if gaps else None,
            "floor_wait_ms": 250}


def _hostile_loop(url: str, data: bytes, stop, sent) -> None:
    with httpx.Client(timeout=60) as h:
        while not stop.is_set():
            h.post(url + "/sentiment", content=data, headers={"content-type": "application/json"})
            with sent.get_lock():
                sent.value += 1


def hostile_body(srv: ServerProcess) -> dict:
    body = "{" + '"text":"a",' + ",".join(f'"{k:x}":0' for k in range(100_000)) + "}"
    data = body.encode()
    hdr = {"content-type": "application/json"}
    times, sizes, codes = [], [], set()
    with httpx.Client(timeout=60) as c:
        cpu0 = cpu_seconds(srv.pid)
        for _ in range(15):
            t0 = time.perf_counter()
            r = c.post(srv.url + "/sentiment", content=data, headers=hdr)
            times.append(time.perf_counter() - t0)
            sizes.append(len(r.content))
            codes.add(r.status_code)
        cpu_per_body = (cpu_seconds(srv.pid) - cpu0) / 15

        def neighbour_p50(seconds: float) -> float:
            lat = []
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                c.post(srv.url + "/sentiment", json={"text": "A moving, beautifully acted film."})
                lat.append(time.perf_counter() - t0)
            return statistics.median(lat)

        quiet = neighbour_p50(3)
        # the hostile clients run in processes of their own: threads of this one would
        # hold its GIL and slow the neighbour's client, not the server
        ctx = multiprocessing.get_context("spawn")
        stop = ctx.Event()
        sent = ctx.Value("i", 0)
        procs = [ctx.Process(target=_hostile_loop, args=(srv.url, data, stop, sent), daemon=True)
                 for _ in range(3)]
        for p in procs:
            p.start()
        time.sleep(1.5)
        n0, t0 = sent.value, time.perf_counter()
        loud = neighbour_p50(3)
        hostile_per_s = (sent.value - n0) / (time.perf_counter() - t0)
        stop.set()
        for p in procs:
            p.join(60)
    return {"body_bytes": len(data), "statuses": sorted(codes),
            # what a body costs the server (its CPU time), and what its sender waits
            # (a client repeating such bodies within a second is answered later)
            "server_cpu_ms_per_body": round(cpu_per_body * 1000, 2), "floor_ms": 20,
            "latency_median_ms": round(statistics.median(times) * 1000, 1),
            "answer_bytes": max(sizes), "floor_answer_bytes": 16 * 1024,
            "neighbour_p50_ms_quiet": round(quiet * 1000, 2),
            "neighbour_p50_ms_with_3_hostile": round(loud * 1000, 2),
            "neighbour_ratio": round(loud / quiet, 2), "floor_ratio": 2.0,
            "hostile_bodies_per_s": round(hostile_per_s),
            "hostile_mb_per_s": round(hostile_per_s * len(data) / MB)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--prompt-chars", type=int, default=8000)
    ap.add_argument("--only", choices=["memory", "completions", "hostile"], action="append")
    args = ap.parse_args()
    only = set(args.only or ["memory", "completions", "hostile"])
    rng = random.Random(0)
    out: dict = {}
    with ServerProcess(args.models_dir, ready_timeout_s=180) as srv:
        models = [m["id"] for m in srv.get("/v1/models").json()["data"]]
        if "hostile" in only:
            out["hostile_body"] = hostile_body(srv)
        if "memory" in only:
            out["prefill_memory"] = [prefill_memory(srv, m, args.prompt_chars, rng)
                                     for m in models if m.startswith("chargen")]
        if "completions" in only:
            out["completions_with_stream"] = completions_with_stream(srv, args.prompt_chars, rng)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
