"""Load generators: wrk for /sentiment, a Python (aiohttp) client only where wrk cannot
do the job (/generate, whose answers are SSE streams or JSON lines to count).

wrk runs with one thread (``-t1``), so that it takes as little as it can of the two
cores the server needs, with ``bench/wrk_bodies.lua``: the bodies cycled from a file,
and a ``done()`` that prints the counts and latency percentiles as JSON. A cell with
any socket error or non-2xx answer is marked invalid (``valid: False``) and reported so.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

from bench.inputs import TEMPERATURE

WRK_LUA = Path(__file__).with_name("wrk_bodies.lua")
_UNIT_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}


class WrkMissing(RuntimeError):
    pass


def wrk_path() -> str:
    """The wrk executable, or a clear error (``make bench`` installs it with apt-get)."""
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissing("wrk is not installed: `apt-get install -y wrk` (make bench does it "
                         "where apt-get is there), or put a wrk 4.x on PATH")
    return path


def _duration_us(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNIT_US[m.group(2)]


def parse_wrk(stdout: str) -> dict:
    """wrk's output (``--latency`` and bench/wrk_bodies.lua's ``WRK_JSON`` line) ->
    req/s, p50/p90/p99 ms, error counts, and ``valid`` (no socket error and every
    answer 2xx). The ``--latency`` table's percentiles are kept beside the script's as
    ``latency_table_ms`` (the two come from the same histogram)."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if line is None:
        raise ValueError("no WRK_JSON line in wrk's output (was bench/wrk_bodies.lua used?):\n"
                         + stdout[-2000:])
    d = json.loads(line.removeprefix("WRK_JSON "))
    table = {}
    for m in re.finditer(r"^\s+(\d+(?:\.\d+)?)%\s+(\S+)\s*$", stdout, re.M):
        table[float(m.group(1))] = _duration_us(m.group(2)) / 1e3
    errors = d["errors"]
    socket_errors = sum(errors[k] for k in ("connect", "read", "write", "timeout"))
    non_2xx = errors["status_4xx_5xx"] + errors["status_other_non_2xx"]
    secs = d["duration_us"] / 1e6
    return {"per_s": d["requests"] / secs if secs else 0.0, "requests": d["requests"],
            "seconds": secs, "p50_ms": d["p50_us"] / 1e3, "p90_ms": d["p90_us"] / 1e3,
            "p99_ms": d["p99_us"] / 1e3, "max_ms": d["max_us"] / 1e3,
            "socket_errors": socket_errors, "non_2xx": non_2xx,
            "errors": socket_errors + non_2xx,
            "valid": socket_errors == 0 and non_2xx == 0 and d["requests"] > 0,
            "latency_table_ms": table}


def write_bodies(texts: list[str], path: Path) -> Path:
    """One JSON body per line, for bench/wrk_bodies.lua."""
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def wrk_sentiment(url: str, bodies: Path, concurrency: int, seconds: float,
                  timeout_s: float = 10.0) -> dict:
    """``wrk -t1`` POSTing the bodies of ``bodies`` (bench.load.write_bodies) to
    ``url``/sentiment at ``concurrency`` connections for ``seconds``."""
    cmd = [wrk_path(), "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s",
           "--timeout", f"{timeout_s:g}s", "--latency", "-s", str(WRK_LUA), url, "--",
           str(bodies)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk exited {out.returncode}: {out.stderr[-2000:]}")
    return {**parse_wrk(out.stdout), "concurrency": concurrency}


class SentimentLoad:
    """The /sentiment bodies of one input set, written once, for repeated wrk cells."""

    def __init__(self, texts: list[str]):
        self._dir = tempfile.TemporaryDirectory(prefix="seqserve-wrk-")
        self.path = write_bodies(texts, Path(self._dir.name) / "bodies.jsonl")

    def run(self, url: str, concurrency: int, seconds: float) -> dict:
        return wrk_sentiment(url, self.path, concurrency, seconds)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs), q)) if xs else float("nan")


def _body(prompt_list: list[str], w: int, k: int, per_stream: int, new_chars: int,
          stream: bool) -> dict:
    body = {"prompt": prompt_list[(w * per_stream + k) % len(prompt_list)],
            "max_new_chars": new_chars, "temperature": TEMPERATURE, "seed": w * 1000 + k}
    return {**body, "stream": True} if stream else body


async def load_generate(url: str, prompt_list: list[str], streams: int, per_stream: int,
                        new_chars: int) -> dict:
    """Non-streamed /generate: ``streams`` clients, ``per_stream`` requests each."""
    lat: list[float] = []
    chars = errors = 0
    async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=streams)) as s:
        async def worker(w: int) -> None:
            nonlocal chars, errors
            for k in range(per_stream):
                t0 = time.perf_counter()
                async with s.post("/generate", json=_body(prompt_list, w, k, per_stream,
                                                          new_chars, False)) as r:
                    data = await r.json(content_type=None)
                    if r.status != 200:
                        errors += 1
                        continue
                lat.append(time.perf_counter() - t0)
                chars += data["generated_chars"]
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(streams)))
        wall = time.perf_counter() - t0
    return {"chars_per_s": chars / wall, "p50_ms": pct(lat, 50) * 1e3,
            "p99_ms": pct(lat, 99) * 1e3, "errors": errors, "valid": errors == 0}


def chars_in_line(raw: bytes) -> tuple[int, bool]:
    """(characters of text, is an error event) in one line of this service's SSE
    (``event:``/``data: {"text", "finish_reason"}``) or the peer's JSON lines."""
    line = raw.strip()
    if line.startswith(b"event:"):
        return 0, line.endswith(b"error")
    if line.startswith(b"data:"):
        line = line[5:].strip()
    if not line.startswith(b"{"):
        return 0, False
    return len(json.loads(line).get("text") or ""), False


async def load_generate_stream(url: str, prompt_list: list[str], streams: int,
                               per_stream: int, new_chars: int) -> dict:
    """Streamed /generate: characters counted from the events' text; a stream that
    fails, ends early or sends an error event counts as an error. Also the time to
    each request's first character."""
    lat: list[float] = []
    first: list[float] = []
    chars = errors = 0
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=streams),
                                     timeout=timeout) as s:
        async def worker(w: int) -> None:
            nonlocal chars, errors
            for k in range(per_stream):
                t0 = time.perf_counter()
                got, failed = 0, False
                async with s.post("/generate", json=_body(prompt_list, w, k, per_stream,
                                                          new_chars, True)) as r:
                    if r.status != 200:
                        errors += 1
                        await r.read()
                        continue
                    async for raw in r.content:
                        n, bad = chars_in_line(raw)
                        failed = failed or bad
                        if n and not got:
                            first.append(time.perf_counter() - t0)
                        got += n
                errors += failed or got != new_chars
                chars += got
                lat.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(streams)))
        wall = time.perf_counter() - t0
    return {"chars_per_s": chars / wall, "p50_ms": pct(lat, 50) * 1e3,
            "p99_ms": pct(lat, 99) * 1e3, "first_char_p50_ms": pct(first, 50) * 1e3,
            "errors": errors, "valid": errors == 0}


async def ttfc(url: str, prompt: str, reps: int = 20) -> float:
    """Median seconds from sending a streamed request to the first event with text, one
    request at a time (no other load)."""
    out = []
    async with aiohttp.ClientSession(url) as s:
        for i in range(reps):
            t0 = time.perf_counter()
            async with s.post("/generate", json={"prompt": prompt, "max_new_chars": 50,
                                                 "temperature": TEMPERATURE,
                                                 "stream": True, "seed": i}) as r:
                async for raw in r.content:
                    if chars_in_line(raw)[0]:
                        out.append(time.perf_counter() - t0)
                        break
                await r.read()
    return statistics.median(out) if out else float("nan")


def median_cell(runs: list[dict]) -> dict:
    """The median of each numeric field over rounds; a cell is valid only when every
    round was, and its errors are the sum."""
    out: dict = {"valid": all(r.get("valid", False) for r in runs)}
    for k in dict.fromkeys(k for r in runs for k in r):
        vals = [r[k] for r in runs if isinstance(r.get(k), int | float)
                and not isinstance(r.get(k), bool)]
        if k == "valid" or not vals:
            continue
        out[k] = sum(vals) if k in ("errors", "socket_errors", "non_2xx", "requests") \
            else statistics.median(vals)
    failed = [r["failed"] for r in runs if "failed" in r]
    if failed:
        out["failed"] = failed[0]
    out["rounds"] = len(runs)
    return out
