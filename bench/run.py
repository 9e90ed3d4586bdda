"""Benchmark: the raw ONNX Runtime limit vs a naive server vs the real server, one run.

    make bench                       # or: python -m bench.run [--reps 3] [--quick]

On the same inputs (IMDB-length review texts from the IMDB test split when
../shared/data is there, else synthetic reviews of the same length distribution;
generation prompts of ~200 characters, 200 new characters):

1. raw limit: in-process ``session.run`` at the best batch size, no HTTP: one
   caller (1 or 2 ORT threads) as the issue defines it, and two callers side by
   side (the machine's limit); plus the server's own batching loop without HTTP;
2. naive server: the same app with batching off and one classifier worker
   (SEQSERVE_BATCHING=false, SEQSERVE_PARALLEL_CALLS=1, SEQSERVE_GEN_BATCHING=false:
   one ORT call at a time, one row per call; one sequential generation per stream
   and step); and, for /sentiment only, "naive 2w": batching off but two workers
   (two single-row calls side by side, i.e. what parallelism alone buys);
3. real server: default settings.

/sentiment at concurrency 1, 8, 32, 128; /generate at 1, 8, 32, 64 concurrent
streams. Each cell is the median of ``--reps`` repetitions. Prints the table and
writes it to docs/benchmarks.md with the machine described. A benchmark, not a test:
nothing here asserts timings. Servers and the load generator run on loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import numpy as np
import onnxruntime as ort

from bench.server import ServerProcess, rss_bytes
from seqcore import runtime
from seqcore.modelfolder import ModelFolder
from seqcore.tokenizer import CharVocab, WordTokenizer

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
IMDB = ROOT.parent / "shared" / "data" / "aclImdb_v1_labeled.tar.gz"
NIETZSCHE = ROOT.parent / "shared" / "data" / "nietzsche.txt"


# ------------------------------------------------------------------ inputs

def review_texts(n: int, seed: int = 0) -> list[str]:
    if IMDB.exists():
        from training.data import load_imdb

        test = load_imdb(IMDB)["test"]
        rng = random.Random(seed)
        return [r.text for r in rng.sample(test, n)]
    # synthetic: word counts drawn like IMDB's (median ~175, long tail)
    rng = random.Random(seed)
    tok = WordTokenizer.load(ModelFolder.open(MODELS / "sentiment").vocab_path)
    words = tok.itos[2:5000]
    return [" ".join(rng.choice(words) for _ in range(int(rng.lognormvariate(5.2, 0.6))))
            for _ in range(n)]


def prompts(n: int, length: int = 200, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    if NIETZSCHE.exists():
        text = NIETZSCHE.read_text(encoding="utf-8")
        starts = [rng.randrange(0, len(text) - length) for _ in range(n)]
        return [text[s : s + length] for s in starts]
    vocab = CharVocab.load(ModelFolder.open(MODELS / "chargen").vocab_path)
    return ["".join(rng.choice(vocab.chars[1:]) for _ in range(length)) for _ in range(n)]


# ------------------------------------------------------------------ raw limit

def _session(path: Path, threads: int = 1) -> ort.InferenceSession:
    return runtime.session(path, threads=threads)


def _batches(ids: list[list[int]], bs: int) -> list[tuple[np.ndarray, np.ndarray]]:
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    return [runtime.pad_rows([ids[j] for j in order[i : i + bs]], 1)
            for i in range(0, len(order), bs)]


def raw_sentiment(texts: list[str]) -> dict:
    """Rows/s of bare session.run over length-sorted batches (built beforehand): one
    caller with 1 or 2 ORT threads, and two callers side by side (1 thread each,
    alternate batches, as the server's two classifier workers run). The limit is the
    best of all (callers, threads, batch size)."""
    import threading

    tok = WordTokenizer.load(ModelFolder.open(MODELS / "sentiment").vocab_path)
    ids = [tok.encode(t).ids for t in texts]
    out: dict = {}

    def run_all(sess: ort.InferenceSession, batches: list) -> None:
        for arr, lens in batches:
            sess.run(["probability"], {"input_ids": arr, "lengths": lens})

    for callers, threads in ((1, 1), (1, 2), (2, 1)):
        sess = _session(ModelFolder.open(MODELS / "sentiment").graph_path, threads)
        for bs in (1, 4, 8, 16, 32):
            batches = _batches(ids, bs)
            run_all(sess, batches[:2])  # warm
            t0 = time.perf_counter()
            workers = [threading.Thread(target=run_all, args=(sess, batches[k::callers]))
                       for k in range(callers)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            out[(callers, threads, bs)] = len(ids) / (time.perf_counter() - t0)
    one = {k: v for k, v in out.items() if k[0] == 1}
    best, best1 = max(out, key=out.get), max(one, key=one.get)  # type: ignore[arg-type]
    return {"by_batch": out, "best_batch": best, "best_per_s": out[best],
            "best_one_caller": best1, "best_one_caller_per_s": out[best1]}


def raw_generation(prompt_list: list[str], new_chars: int) -> dict:
    """Chars/s of a bare prefill + greedy step loop over B streams: one caller, and
    (B >= 32) two callers side by side with B/2 streams each, as the engine cuts a
    large step in two. The limit per B is the better of the two."""
    import threading

    folder = ModelFolder.open(MODELS / "chargen")
    man = folder.manifest
    L, H = man["state"]["layers"], man["state"]["hidden"]
    vocab = CharVocab.load(ModelFolder.open(MODELS / "chargen").vocab_path)
    sess = _session(folder.graph_path)

    def generate(B: int) -> None:
        h = np.zeros((L, B, H), np.float32)
        c = np.zeros_like(h)
        ids = np.array([vocab.encode(p)[0] for p in (prompt_list * B)[:B]], dtype=np.int64)
        logits, h, c = sess.run(None, {"input_ids": ids, "lengths": np.full(B, ids.shape[1]),
                                       "h0": h, "c0": c})
        ones = np.ones(B, np.int64)
        for _ in range(new_chars - 1):
            nxt = logits.argmax(1)[:, None].astype(np.int64)
            logits, h, c = sess.run(None, {"input_ids": nxt, "lengths": ones, "h0": h, "c0": c})

    out, split = {}, {}
    for B in (1, 8, 32, 64):
        t0 = time.perf_counter()
        generate(B)
        out[B] = B * new_chars / (time.perf_counter() - t0)
        if B >= 32:
            halves = [threading.Thread(target=generate, args=(B // 2,)) for _ in range(2)]
            t0 = time.perf_counter()
            for t in halves:
                t.start()
            for t in halves:
                t.join()
            split[B] = B * new_chars / (time.perf_counter() - t0)
    best = {B: max(out[B], split.get(B, 0.0)) for B in out}
    return {"one_caller": out, "two_callers": split, "chars_per_s_by_streams": best}


# ------------------------------------------------------------------ servers

@contextmanager
def server(**settings: object):
    """The app on a free loopback port -> (url, pid, seconds from process start to
    ready); SIGTERM at the end."""
    srv = ServerProcess(MODELS, log_level="warning", max_queue=4096, **settings)
    t0 = time.perf_counter()
    with srv:
        startup = time.perf_counter() - t0
        try:
            yield srv.url, srv.pid, startup
        finally:
            srv.terminate(20)


def rss_mb(pid: int) -> float:
    return rss_bytes(pid) / 2**20


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs), q)) if xs else float("nan")


async def load_sentiment(url: str, texts: list[str], concurrency: int, n: int) -> dict:
    lat: list[float] = []
    errors = 0
    it = iter(range(n))
    # bodies encoded once: the load generator shares the 2 cores with the server
    bodies = [json.dumps({"text": t}).encode() for t in texts]
    headers = {"Content-Type": "application/json"}
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, connector=conn) as s:
        async def worker() -> None:
            nonlocal errors
            for i in it:
                t0 = time.perf_counter()
                async with s.post("/sentiment", data=bodies[i % len(bodies)],
                                  headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                lat.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"per_s": n / wall, "p50_ms": pct(lat, 50) * 1e3, "p95_ms": pct(lat, 95) * 1e3,
            "p99_ms": pct(lat, 99) * 1e3, "errors": errors}


WRK_LUA = """
local bodies = {%s}
local i = 0
request = function()
  i = i %% #bodies + 1
  return wrk.format("POST", "/sentiment", {["Content-Type"] = "application/json"}, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%f %%f %%f %%d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    e.status + e.connect + e.read + e.write + e.timeout))
end
"""


def load_sentiment_wrk(url: str, texts: list[str], concurrency: int, seconds: float) -> dict:
    """The same /sentiment load from wrk (C, one thread): a Python load generator
    would take a good part of the 2 cores the server needs."""
    import tempfile

    bodies = ",".join("[==[" + json.dumps({"text": t}) + "]==]" for t in texts
                      if "]==]" not in json.dumps({"text": t}))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_LUA % bodies)
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s",
                          "-s", f.name, url], capture_output=True, text=True, check=True).stdout
    os.unlink(f.name)
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT"))
    n, dur_us, p50, p95, p99, errors = line.split()[1:]
    return {"per_s": int(n) / (int(dur_us) / 1e6), "p50_ms": float(p50) / 1e3,
            "p95_ms": float(p95) / 1e3, "p99_ms": float(p99) / 1e3, "errors": int(errors)}


async def load_generate(url: str, prompt_list: list[str], streams: int, per_stream: int,
                        new_chars: int) -> dict:
    lat: list[float] = []
    chars = 0
    errors = 0
    conn = aiohttp.TCPConnector(limit=streams)
    async with aiohttp.ClientSession(url, connector=conn) as s:
        async def worker(w: int) -> None:
            nonlocal chars, errors
            for k in range(per_stream):
                body = {"prompt": prompt_list[(w * per_stream + k) % len(prompt_list)],
                        "max_new_chars": new_chars, "temperature": 0.8, "seed": w * 1000 + k}
                t0 = time.perf_counter()
                async with s.post("/generate", json=body) as r:
                    data = await r.json()
                    if r.status != 200:
                        errors += 1
                        continue
                lat.append(time.perf_counter() - t0)
                chars += data["generated_chars"]
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(streams)))
        wall = time.perf_counter() - t0
    return {"chars_per_s": chars / wall, "p50_ms": pct(lat, 50) * 1e3,
            "p99_ms": pct(lat, 99) * 1e3, "errors": errors}


async def ttfc(url: str, prompt: str, reps: int = 20) -> float:
    out = []
    async with aiohttp.ClientSession(url) as s:
        for i in range(reps):
            t0 = time.perf_counter()
            async with s.post("/generate", json={"prompt": prompt, "max_new_chars": 50,
                                                 "stream": True, "seed": i}) as r:
                async for _line in r.content:
                    out.append(time.perf_counter() - t0)
                    break
                await r.read()
    return statistics.median(out)


def median_of(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


# ------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    ap.add_argument("--no-wrk", action="store_true",
                    help="drive /sentiment from Python (aiohttp) even when wrk is installed")
    a = ap.parse_args(argv)
    n_req = 300 if a.quick else 1000
    use_wrk = shutil.which("wrk") is not None and not a.no_wrk
    new_chars = 200
    texts = review_texts(1000)
    plist = prompts(256)
    print("raw limits (in-process, no HTTP) ...", flush=True)
    raw_s = raw_sentiment(texts[:n_req])
    raw_g = raw_generation(plist, new_chars)
    print(raw_s, raw_g, flush=True)
    sent_conc = (1, 8, 32, 128)
    gen_streams = (1, 8, 32, 64)
    results: dict = {"naive": {}, "naive2": {}, "real": {}}
    meta: dict = {}
    modes = (("naive", {"batching": False, "gen_batching": False, "parallel_calls": 1}),
             ("naive2", {"batching": False, "parallel_calls": 2}),
             ("real", {}))
    for mode, settings in modes:
        with server(**settings) as (url, pid, startup):
            meta[mode] = {"startup_s": startup, "rss_start_mb": rss_mb(pid)}
            asyncio.run(load_sentiment(url, texts, 8, 100))  # warm the HTTP path
            for c in sent_conc:
                n = max(n_req // (4 if c == 1 else 1), c * 2)
                if use_wrk:
                    runs = [load_sentiment_wrk(url, texts, c, 2 if a.quick else 5)
                            for _ in range(a.reps)]
                else:
                    runs = [asyncio.run(load_sentiment(url, texts, c, n)) for _ in range(a.reps)]
                results[mode][("sentiment", c)] = median_of(runs)
                print(mode, "sentiment", c, results[mode][("sentiment", c)], flush=True)
            for st in gen_streams if mode != "naive2" else ():
                per = 1 if st >= 32 else (2 if st >= 8 else 4)
                runs = [asyncio.run(load_generate(url, plist, st, per, new_chars))
                        for _ in range(a.reps)]
                results[mode][("generate", st)] = median_of(runs)
                print(mode, "generate", st, results[mode][("generate", st)], flush=True)
            meta[mode]["ttfc_ms"] = asyncio.run(ttfc(url, plist[0])) * 1e3
            meta[mode]["rss_end_mb"] = rss_mb(pid)
    meta["loadgen"] = "wrk (1 thread, C)" if use_wrk else "aiohttp (Python)"
    report = render(raw_s, raw_g, results, meta, sent_conc, gen_streams, a.reps, n_req)
    print(report)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(report + kept_sections(Path(a.out)))
    return 0


# The hand-written part of docs/benchmarks.md starts at this heading: a run keeps it.
KEPT_HEADING = "## Generation engine: decisions"


def kept_sections(path: Path) -> str:
    """The report's hand-written sections (from ``KEPT_HEADING`` on), to keep when the
    generated part is rewritten; "" when there are none."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    at = text.find("\n" + KEPT_HEADING)
    return text[at:] if at >= 0 else ""


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            f"onnxruntime {ort.__version__}, {platform.system()} {platform.release()}")


def render(raw_s, raw_g, results, meta, sent_conc, gen_streams, reps, n_req) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `make bench` on: {machine()}.",
        f"Load generators: /sentiment {meta['loadgen']}, /generate aiohttp; they share the "
        "machine with the server, loopback only. "
        f"Each cell: median of {reps} repetitions. Shared, noisy machine: compare ratios "
        "within this run only.",
        "",
        "## /sentiment (IMDB test reviews)",
        "",
        "Raw limits (in-process, no HTTP, length-sorted batches built beforehand), reviews/s:",
        "",
        "| batch size | " + " | ".join(str(b) for b in sorted({k[2] for k in raw_s["by_batch"]}))
        + " |",
        "|---|" + "---:|" * len({k[2] for k in raw_s["by_batch"]}),
    ]
    for cfg in sorted({k[:2] for k in raw_s["by_batch"]}):
        label = (f"{cfg[0]} caller{'s' if cfg[0] > 1 else ''}, "
                 f"{cfg[1]} ORT thread{'s' if cfg[1] > 1 else ''}{' each' if cfg[0] > 1 else ''}")
        lines.append(f"| {label} | " + " | ".join(
            f"{v:.0f}" for k, v in sorted(raw_s["by_batch"].items()) if k[:2] == cfg) + " |")
    b1, ball = raw_s["best_one_caller"], raw_s["best_batch"]
    lines += [
        "",
        f"- **Raw limit, one caller** (the issue's definition: `session.run` at the best batch "
        f"size and thread count): **{raw_s['best_one_caller_per_s']:.0f}/s** "
        f"({b1[1]} threads, B={b1[2]}).",
        f"- **Raw limit, best of all** (two callers side by side, as the server's two "
        f"classifier threads run): **{raw_s['best_per_s']:.0f}/s** ({ball[0]} callers, "
        f"{ball[1]} thread each, B={ball[2]}).",
        "",
        "Naive: batching off, one classifier worker (one single-row ORT call at a time). "
        "Naive 2w: batching off, two workers (single-row calls two at a time).",
        "",
        "| concurrency | naive req/s | naive p50 / p99 ms | naive 2w req/s | real req/s "
        "| real p50 / p95 / p99 ms | real / naive | real / naive 2w | real / raw one caller "
        "| real / raw best |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in sent_conc:
        nv, n2 = results["naive"][("sentiment", c)], results["naive2"][("sentiment", c)]
        rl = results["real"][("sentiment", c)]
        lines.append(
            f"| {c} | {nv['per_s']:.0f} | {nv['p50_ms']:.1f} / {nv['p99_ms']:.1f} | "
            f"{n2['per_s']:.0f} | {rl['per_s']:.0f} | "
            f"{rl['p50_ms']:.1f} / {rl['p95_ms']:.1f} / {rl['p99_ms']:.1f} | "
            f"{rl['per_s'] / nv['per_s']:.2f}x | {rl['per_s'] / n2['per_s']:.2f}x | "
            f"{rl['per_s'] / raw_s['best_one_caller_per_s']:.0%} | "
            f"{rl['per_s'] / raw_s['best_per_s']:.0%} |")
    g1 = results["real"][("generate", 1)]["chars_per_s"]
    lines += [
        "",
        "## /generate (prompts of 200 characters, 200 new characters, T=0.8)",
        "",
        "Raw limit (in-process prefill + step loop, greedy, no HTTP), one caller: "
        + ", ".join(f"{b} streams: {v:.0f} chars/s" for b, v in raw_g["one_caller"].items())
        + "; two callers side by side, half the streams each: "
        + ", ".join(f"{b} streams: {v:.0f} chars/s" for b, v in raw_g["two_callers"].items())
        + ". The raw-limit column uses the better of the two.",
        "",
        "| streams | naive chars/s | real chars/s | real p50 / p99 ms per request "
        "| real / naive | real / 1 stream | real / raw limit |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for st in gen_streams:
        nv, rl = results["naive"][("generate", st)], results["real"][("generate", st)]
        raw = raw_g["chars_per_s_by_streams"][st]
        lines.append(
            f"| {st} | {nv['chars_per_s']:.0f} | {rl['chars_per_s']:.0f} | "
            f"{rl['p50_ms']:.0f} / {rl['p99_ms']:.0f} | {rl['chars_per_s'] / nv['chars_per_s']:.2f}x | "
            f"{rl['chars_per_s'] / g1:.1f}x | {rl['chars_per_s'] / raw:.0%} |")
    r = meta["real"]
    lines += [
        "",
        "## Service",
        "",
        f"- Start-up to ready (process start to /readyz 200): real {r['startup_s']:.2f} s, "
        f"naive {meta['naive']['startup_s']:.2f} s.",
        f"- Time to first character, 200-char prompt, no other load (SSE, median of 20): "
        f"{r['ttfc_ms']:.1f} ms.",
        f"- Resident memory of the serving process: {r['rss_start_mb']:.0f} MB after start-up, "
        f"{r['rss_end_mb']:.0f} MB after the run.",
        f"- Errors (non-200) across all runs: "
        f"{sum(v['errors'] for m in results.values() for v in m.values())}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
