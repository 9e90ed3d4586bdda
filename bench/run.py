"""Benchmark: the raw ONNX Runtime limits vs a naive server vs the real server vs a
LitServe peer, in one run, with the floors of issue #14 at the top of the report.

    make bench                       # or: python -m bench.run [--reps 3] [--quick]
    make bench BENCH_ARGS=--quick    # a smoke run (tiny durations, one round)

On the same inputs (IMDB-length review texts from the IMDB test split when
../shared/data is there, else synthetic reviews of the same length distribution;
generation prompts of ~200 characters, 200 new characters at T=0.8):

1. raw limits, in-process, no HTTP: /sentiment's ``session.run`` at the best batch
   size (one caller with 1 or 2 ORT threads, and two callers side by side);
   generation's prefill + step graph + temperature sampling (``seqcore.sampling``, the
   service's sampling for a temperature-only request in numpy: seqcore has none and
   bench imports nothing from app) at 1, 8, 32, 64 streams, one caller or two callers
   with half the streams each (the better counts), the bare greedy step at 1 and 32
   streams, and the share of a step that sampling takes;
2. naive server: the same app with batching off and one classifier worker
   (SEQSERVE_BATCHING=false, SEQSERVE_PARALLEL_CALLS=1, SEQSERVE_GEN_BATCHING=false);
   and, for /sentiment only, "naive 2w": batching off but two workers;
3. real server (default settings) with the LitServe peer (bench/litserve_peer.py,
   LitServe 0.2.19 in .cache/bench/litserve-venv, the same graphs, tokenizers and
   sampling) running alongside; their rounds are interleaved cell by cell:
   /sentiment at concurrency 1, 8, 32, 128 (peer: 1, 32, 128); /generate
   non-streamed at 1, 8, 32, 64 streams; streamed (SSE; the peer: JSON lines,
   LitServe's continuous-batching loop) at 1, 32, 64 (peer: 32, 64); time to first
   character with no other load.

4. the benchmark clients that users run, unchanged (bench/clients.py: aiperf and
   guidellm from their own venvs, `make bench-tools`), against the same real server:
   one streamed run each at 32 concurrent requests, with the character tokenizer built
   from the model; their TTFT and inter-token / inter-chunk figures are reported beside
   ours (``--no-clients`` leaves them out).

Each cell is the median of ``--reps`` rounds. Prints the report and writes it to
docs/benchmarks.md (``--quick``: .cache/bench/benchmarks-quick.md) with the machine
described and the floors (value, met yes/no) first. A benchmark, not a test: nothing
here asserts timings. Servers and load generators run on loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import numpy as np
import onnxruntime as ort

from bench.server import ServerProcess, free_port, rss_bytes
from seqcore import runtime
from seqcore.modelfolder import ModelFolder
from seqcore.sampling import RowSampler, Uniforms
from seqcore.tokenizer import CharVocab, WordTokenizer

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
IMDB = ROOT.parent / "shared" / "data" / "aclImdb_v1_labeled.tar.gz"
NIETZSCHE = ROOT.parent / "shared" / "data" / "nietzsche.txt"
PEER_PYTHON = ROOT / ".cache" / "bench" / "litserve-venv" / "bin" / "python"
TEMPERATURE = 0.8
SHORT_PROMPT = 20  # characters: the second time-to-first-character figure's prompt


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


def raw_generation(prompt_list: list[str], new_chars: int,
                   streams: tuple[int, ...] = (1, 8, 32, 64),
                   folder_path: Path | None = None) -> dict:
    """Chars/s of a bare prefill + step loop over B streams WITH the service's own
    sampling (``seqcore.sampling.RowSampler``, as the engine runs it: temperature 0.8,
    one uniform draw per stream from its own generator): one caller on a one-thread
    session, one caller on a two-thread session (as the engine runs a call too small to
    cut in parts), and (B >= 32) two callers side by side with B/2 streams each, as the
    engine cuts a large step in two. The limit per B is the best of these layouts, and
    a prefill's the faster session's.

    Also the bare step (greedy argmax, one caller) at 1 and 32 streams, and how long
    the sampling takes next to the graph step it follows (timed inside the sampled
    one-caller loop). ``folder_path``: another char model folder than the shipped one."""
    import threading

    folder = ModelFolder.open(folder_path or MODELS / "chargen")
    man = folder.manifest
    L, H = man["state"]["layers"], man["state"]["hidden"]
    vocab = CharVocab.load(folder.vocab_path)
    banned = (vocab.unk_id,)
    sess = _session(folder.graph_path)
    wide = _session(folder.graph_path, threads=2)

    def generate(B: int, sample: bool = True, timing: list[float] | None = None,
                 sess: ort.InferenceSession = sess) -> None:
        rngs = [Uniforms(k) for k in range(B)]
        sampler = RowSampler(np.full(B, TEMPERATURE), np.zeros(B, np.int64), np.ones(B), banned,
                             vocab.vocab_size)
        h = np.zeros((L, B, H), np.float32)
        c = np.zeros_like(h)
        ids = np.array([vocab.encode(p)[0] for p in (prompt_list * B)[:B]], dtype=np.int64)
        logits, h, c = sess.run(None, {"input_ids": ids, "lengths": np.full(B, ids.shape[1]),
                                       "h0": h, "c0": c})
        ones = np.ones(B, np.int64)
        t_sample = t_step = 0.0
        for k in range(new_chars):
            t0 = time.perf_counter()
            if sample:
                nxt = sampler(logits, [draw() for draw in rngs])
            else:
                nxt = logits.argmax(1)
            t1 = time.perf_counter()
            if k == new_chars - 1:
                break
            logits, h, c = sess.run(None, {"input_ids": nxt[:, None].astype(np.int64),
                                           "lengths": ones, "h0": h, "c0": c})
            t_sample += t1 - t0
            t_step += time.perf_counter() - t1
        if timing is not None:
            timing[:] = [t_sample, t_step]

    def timed(fn, *args) -> float:
        t0 = time.perf_counter()
        fn(*args)
        return time.perf_counter() - t0

    def two_callers(B: int) -> float:
        halves = [threading.Thread(target=generate, args=(B // 2,)) for _ in range(2)]
        t0 = time.perf_counter()
        for t in halves:
            t.start()
        for t in halves:
            t.join()
        return time.perf_counter() - t0

    generate(1)  # warm
    generate(1, sess=wide)
    prefill = {}
    for n in (SHORT_PROMPT, 200):  # one stream's prefill alone, the floor under its TTFC
        ids = np.array([vocab.encode(prompt_list[0][:n])[0]], dtype=np.int64)
        z = np.zeros((L, 1, H), np.float32)
        feed = {"input_ids": ids, "lengths": np.array([ids.shape[1]]), "h0": z, "c0": z}
        best_ms = []
        for s_ in (sess, wide):
            times = []
            for _ in range(30):
                t0 = time.perf_counter()
                s_.run(None, feed)
                times.append(time.perf_counter() - t0)
            best_ms.append(statistics.median(times) * 1e3)
        prefill[n] = min(best_ms)
    out, out_wide, split, greedy, share = {}, {}, {}, {}, {}
    for B in streams:
        timing = [0.0, 0.0]
        out[B] = B * new_chars / timed(generate, B, True, timing)
        out_wide[B] = B * new_chars / timed(generate, B, True, None, wide)
        if B in (1, 32):
            share[B] = timing[0] / timing[1]
            greedy[B] = B * new_chars / timed(generate, B, False)
        if B >= 32:
            split[B] = B * new_chars / two_callers(B)
    layouts = {"one caller": out, "one caller, 2 threads": out_wide, "two callers": split}
    best = {B: max(v.get(B, 0.0) for v in layouts.values()) for B in out}
    layout = {B: max(layouts, key=lambda k: layouts[k].get(B, 0.0)) for B in out}
    return {"one_caller": out, "one_caller_two_threads": out_wide, "two_callers": split,
            "chars_per_s_by_streams": best, "layout": layout, "greedy_one_caller": greedy,
            "sampling_share": share, "prefill_ms": prefill}


# ------------------------------------------------------------------ servers

DEVICE = "auto"  # --device


@contextmanager
def server(**settings: object):
    """The app on a free loopback port -> (url, pid, seconds from process start to
    ready); SIGTERM at the end."""
    srv = ServerProcess(MODELS, log_level="warning", max_queue=4096,
                        **{"device": DEVICE, **settings})
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
                        "max_new_chars": new_chars, "temperature": TEMPERATURE, "seed": w * 1000 + k}
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


async def load_generate_stream(url: str, prompt_list: list[str], streams: int,
                               per_stream: int, new_chars: int) -> dict:
    """Streamed /generate: this service's SSE (``data: {"text", "finish_reason"}``
    events) or the peer's JSON lines (the same objects); characters are counted from
    the events' text. Also the time to each request's first character."""
    lat: list[float] = []
    first: list[float] = []
    chars = 0
    errors = 0
    conn = aiohttp.TCPConnector(limit=streams)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(url, connector=conn, timeout=timeout) as s:
        async def worker(w: int) -> None:
            nonlocal chars, errors
            for k in range(per_stream):
                body = {"prompt": prompt_list[(w * per_stream + k) % len(prompt_list)],
                        "max_new_chars": new_chars, "temperature": TEMPERATURE,
                        "seed": w * 1000 + k, "stream": True}
                t0 = time.perf_counter()
                got, failed = 0, False
                async with s.post("/generate", json=body) as r:
                    if r.status != 200:
                        errors += 1
                        await r.read()
                        continue
                    async for raw in r.content:
                        line = raw.strip()
                        if line.startswith(b"event:"):
                            failed = failed or line.endswith(b"error")
                            continue
                        if line.startswith(b"data:"):
                            line = line[5:].strip()
                        if not line.startswith(b"{"):
                            continue
                        n = len(json.loads(line).get("text") or "")
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
            "errors": errors}


async def ttfc(url: str, prompt: str, reps: int = 20) -> float:
    """Median time from sending a streamed request to the first event with text, one
    request at a time (no other load)."""
    out = []
    async with aiohttp.ClientSession(url) as s:
        for i in range(reps):
            t0 = time.perf_counter()
            async with s.post("/generate", json={"prompt": prompt, "max_new_chars": 50,
                                                 "temperature": TEMPERATURE,
                                                 "stream": True, "seed": i}) as r:
                async for raw in r.content:
                    line = raw.strip().removeprefix(b"data:").strip()
                    if line.startswith(b"{") and json.loads(line).get("text"):
                        out.append(time.perf_counter() - t0)
                        break
                await r.read()
    return statistics.median(out) if out else float("nan")


class PeerProcess:
    """bench/litserve_peer.py in its own venv (LitServe pinned) on a free loopback
    port, in a process group of its own (LitServe starts worker processes), stopped
    with the whole group."""

    def __init__(self, python: Path, **options: object):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [str(python), str(ROOT / "bench" / "litserve_peer.py"),
                     "--models", str(MODELS)]
        for k, v in options.items():
            self.args += [f"--{k.replace('_', '-')}", str(v)]
        self.env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc: subprocess.Popen | None = None

    def settings(self) -> dict:
        out = subprocess.run([*self.args, "--print-settings"], env=self.env, cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out)

    def __enter__(self) -> PeerProcess:
        import tempfile
        import urllib.request

        self.log = tempfile.NamedTemporaryFile(prefix="litserve-peer-", suffix=".log",
                                               delete=False)
        self.proc = subprocess.Popen([*self.args, "--port", str(self.port)], env=self.env,
                                     cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.__exit__()
                raise RuntimeError(f"LitServe peer exited: see {self.log.name}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"LitServe peer not ready in 180 s: see {self.log.name}")

    def __exit__(self, *exc: object) -> None:
        import signal

        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the group is the peer's own
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(pgid, sig)  # the workers too, even when the main one is gone
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                pass
        self.log.close()


def median_of(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


# ------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=None, help="rounds per cell (3; --quick: 1)")
    ap.add_argument("--quick", action="store_true",
                    help="tiny durations, one round (a smoke run: no figures to quote); "
                         "writes .cache/bench/benchmarks-quick.md unless --out")
    ap.add_argument("--out", default=None, help="the report (default docs/benchmarks.md)")
    ap.add_argument("--no-wrk", action="store_true",
                    help="drive /sentiment from Python (aiohttp) even when wrk is installed")
    ap.add_argument("--peer-python", default=str(PEER_PYTHON),
                    help="python of the LitServe venv (`make bench` creates it)")
    ap.add_argument("--no-peer", action="store_true", help="leave the LitServe peer out")
    ap.add_argument("--no-clients", action="store_true",
                    help="leave the benchmark clients (aiperf, guidellm) out")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                    help="SEQSERVE_DEVICE of the servers (bench/gpu_check.sh: cuda)")
    ap.add_argument("--peer-batch-timeout-ms", type=float, default=3.0)
    a = ap.parse_args(argv)
    global DEVICE
    DEVICE = a.device
    reps = a.reps or (1 if a.quick else 3)
    out_path = Path(a.out or (ROOT / ".cache" / "bench" / "benchmarks-quick.md" if a.quick
                              else ROOT / "docs" / "benchmarks.md"))
    n_req = 100 if a.quick else 1000
    wrk_s = 1 if a.quick else 5
    use_wrk = shutil.which("wrk") is not None and not a.no_wrk
    new_chars = 50 if a.quick else 200
    texts = review_texts(200 if a.quick else 1000)
    plist = prompts(256)
    peer_python = Path(a.peer_python)
    use_peer = not a.no_peer and peer_python.exists()
    if not a.no_peer and not use_peer:
        print(f"no LitServe venv at {peer_python} (`make bench` creates it): peer left out",
              flush=True)
    t_start = time.perf_counter()
    print("raw limits (in-process, no HTTP) ...", flush=True)
    raw_s = raw_sentiment(texts[:n_req])
    raw_g = raw_generation(plist, new_chars)
    print(raw_s, raw_g, flush=True)
    sent_conc = (1, 8, 32, 128)
    gen_streams = (1, 8, 32, 64)
    stream_streams = (1, 32, 64)
    peer_sent, peer_stream = (1, 32, 128), (32, 64)
    results: dict = {"naive": {}, "naive2": {}, "real": {}, "peer": {}}
    meta: dict = {"quick": a.quick}

    def sentiment_cell(url: str, c: int) -> dict:
        if use_wrk:
            return load_sentiment_wrk(url, texts, c, wrk_s)
        return asyncio.run(load_sentiment(url, texts, c, max(n_req // (4 if c == 1 else 1),
                                                             c * 2)))

    def per_stream(st: int) -> int:
        return 1 if st >= 32 else (2 if st >= 8 else 4)

    # naive servers, one after the other (rounds back to back per cell)
    modes = (("naive", {"batching": False, "gen_batching": False, "parallel_calls": 1}),
             ("naive2", {"batching": False, "parallel_calls": 2}))
    for mode, settings in modes:
        with server(**settings) as (url, pid, startup):
            meta[mode] = {"startup_s": startup, "rss_start_mb": rss_mb(pid)}
            asyncio.run(load_sentiment(url, texts, 8, 50 if a.quick else 100))  # warm
            for c in sent_conc:
                results[mode][("sentiment", c)] = median_of(
                    [sentiment_cell(url, c) for _ in range(reps)])
                print(mode, "sentiment", c, results[mode][("sentiment", c)], flush=True)
            for st in gen_streams if mode != "naive2" else ():
                results[mode][("generate", st)] = median_of(
                    [asyncio.run(load_generate(url, plist, st, per_stream(st), new_chars))
                     for _ in range(reps)])
                print(mode, "generate", st, results[mode][("generate", st)], flush=True)

    # the real server with the LitServe peer alongside: rounds interleaved, each cell
    # measured on ours then on the peer before the next cell
    peer = (PeerProcess(peer_python, batch_timeout_ms=a.peer_batch_timeout_ms)
            if use_peer else None)
    meta["peer_settings"] = peer.settings() if peer else None
    with server() as (url, pid, startup), (peer or _nothing()) as pp:
        # Only the server being measured runs: the other one is stopped (SIGSTOP) for
        # the duration, because an idle LitServe peer busy-polls its queues (measured:
        # ~1.3 cores of 2 while idle), which would halve whatever ran beside it.
        procs = {"real": (pid, False), "peer": (pp.proc.pid, True) if pp else (0, True)}
        meta["real"] = {"startup_s": startup, "rss_start_mb": rss_mb(pid)}
        for who, target in [("real", url)] + ([("peer", pp.url)] if pp else []):
            with only(who, procs):  # warm the HTTP paths
                asyncio.run(load_sentiment(target, texts, 8, 50 if a.quick else 100))
                asyncio.run(load_generate_stream(target, plist, 4, 1, new_chars))
        with only("real", procs):
            meta["real"]["ttfc_ms"] = asyncio.run(ttfc(url, plist[0], 5 if a.quick else 20)) * 1e3
            meta["real"]["ttfc_short_ms"] = asyncio.run(
                ttfc(url, plist[0][:SHORT_PROMPT], 5 if a.quick else 20)) * 1e3
        if pp:
            with only("peer", procs):
                meta["peer_ttfc_ms"] = asyncio.run(
                    ttfc(pp.url, plist[0], 5 if a.quick else 20)) * 1e3
        cells: list[tuple[str, int]] = ([("sentiment", c) for c in sent_conc]
                                        + [("generate", st) for st in gen_streams]
                                        + [("stream", st) for st in stream_streams])
        runs: dict = {}
        for r in range(reps):
            for kind, n in cells:
                for who, target in (("real", url), ("peer", pp.url if pp else None)):
                    if who == "peer" and (target is None or (kind, n) not in (
                            [("sentiment", c) for c in peer_sent]
                            + [("stream", st) for st in peer_stream])):
                        continue
                    time.sleep(1.0)  # the previous cell's last requests drain first
                    with only(who, procs):
                        if kind == "sentiment":
                            res = sentiment_cell(target, n)
                        elif kind == "generate":
                            res = asyncio.run(load_generate(target, plist, n, per_stream(n),
                                                            new_chars))
                        else:
                            res = asyncio.run(load_generate_stream(target, plist, n,
                                                                   per_stream(n), new_chars))
                    runs.setdefault((who, kind, n), []).append(res)
                    print(f"round {r + 1}/{reps}", who, kind, n, res, flush=True)
        for (who, kind, n), rr in runs.items():
            results[who][(kind, n)] = median_of(rr)
        if not a.no_clients:
            from bench.clients import bench_clients

            with only("real", procs):
                meta["clients"] = bench_clients(
                    url, MODELS / "chargen", concurrency=32, requests=64 if a.quick else 256,
                    input_tokens=200, output_tokens=new_chars)
            print("benchmark clients", meta["clients"], flush=True)
        meta["real"]["rss_end_mb"] = rss_mb(pid)
    meta["loadgen"] = "wrk (1 thread, C)" if use_wrk else "aiohttp (Python)"
    meta["new_chars"] = new_chars
    meta["minutes"] = (time.perf_counter() - t_start) / 60
    report = render(raw_s, raw_g, results, meta, sent_conc, gen_streams, reps, n_req)
    print(report)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(report + kept_sections(out_path))
    print(f"written to {out_path}")
    return 0


@contextmanager
def _nothing():
    yield None


@contextmanager
def only(active: str, procs: dict[str, tuple[int, bool]]):
    """Every server in ``procs`` (name -> (pid, whole process group?)) but ``active`` is
    stopped with SIGSTOP for the duration, then continued."""
    stopped = [(pid, group) for name, (pid, group) in procs.items() if name != active and pid]
    for pid, group in stopped:
        (os.killpg if group else os.kill)(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid, group in stopped:
            (os.killpg if group else os.kill)(pid, signal.SIGCONT)


def floors(raw_s: dict, raw_g: dict, results: dict, meta: dict) -> list[tuple]:
    """(floor, measured, met) rows: met None where the floor was not measured."""
    real, peer = results["real"], results["peer"]
    raw = raw_g["chars_per_s_by_streams"]
    two_callers = max(x for k, x in raw_s["by_batch"].items() if k[0] == 2)
    rows: list[tuple] = []

    def ratio(name: str, num: float | None, den: float | None, floor: float,
              fmt: str = "pct") -> None:
        if num is None or den is None or not den:
            rows.append((name, "not measured", None))
            return
        x = num / den
        shown = f"{x:.0%}" if fmt == "pct" else f"{x:.2f}x"
        rows.append((name, shown, x >= floor))

    def get(d: dict, key: tuple, field: str) -> float | None:
        return d[key][field] if key in d else None

    for st in (1, 32):
        ratio(f"non-streamed /generate >= 80 % of raw (step + sampling) at {st} "
              f"stream{'s' if st > 1 else ''}",
              get(real, ("generate", st), "chars_per_s"), raw.get(st), 0.8)
    for st in (32, 64):
        ratio(f"streamed /generate >= 60 % of raw at {st} streams",
              get(real, ("stream", st), "chars_per_s"), raw.get(st), 0.6)
    ratio("streamed at 32 >= 80 % of non-streamed at 32",
          get(real, ("stream", 32), "chars_per_s"), get(real, ("generate", 32), "chars_per_s"),
          0.8)
    for st in (1, 32):
        x = raw_g["sampling_share"].get(st)
        rows.append((f"sampling <= 15 % of a step at {st} stream{'s' if st > 1 else ''}",
                     f"{x:.0%}" if x is not None else "not measured",
                     None if x is None else x <= 0.15))
    t, ts = meta["real"].get("ttfc_ms"), meta["real"].get("ttfc_short_ms")
    pre = raw_g.get("prefill_ms", {})
    rows.append((f"time to first character <= 5 ms unloaded (SSE, median), "
                 f"{SHORT_PROMPT}-char prompt", f"{ts:.1f} ms", ts <= 5.0))
    rows.append(("time to first character <= 5 ms unloaded (SSE, median), 200-char prompt",
                 f"{t:.1f} ms (its prefill alone, in process: {pre.get(200, float('nan')):.1f} ms)",
                 t <= 5.0))
    ratio("/sentiment at c=32 >= 70 % of the two-caller raw limit",
          get(real, ("sentiment", 32), "per_s"), two_callers, 0.7)
    for st in (32, 64):
        ratio(f">= 2x LitServe on streamed /generate at {st} streams",
              get(real, ("stream", st), "chars_per_s"), get(peer, ("stream", st), "chars_per_s"),
              2.0, "x")
    for c in (1, 32, 128):
        ratio(f">= 2x LitServe on /sentiment at c={c}", get(real, ("sentiment", c), "per_s"),
              get(peer, ("sentiment", c), "per_s"), 2.0, "x")
    return rows


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
        f"Each cell: median of {reps} rounds (the real server and the LitServe peer are both "
        "up, their rounds interleaved cell by cell; the one not measured is stopped with "
        "SIGSTOP, as an idle LitServe busy-polls). Shared, noisy machine: "
        "compare ratios within this run only."
        + (" **A `--quick` smoke run: tiny durations, no figures to quote.**"
           if meta.get("quick") else ""),
        f"Whole run: {meta['minutes']:.1f} minutes.",
        "",
        "## Floors (issue #14)",
        "",
        "| floor | measured | met |",
        "|---|---:|:---:|",
        *(f"| {name} | {shown} | {'—' if met is None else 'yes' if met else 'no'} |"
          for name, shown, met in floors(raw_s, raw_g, results, meta)),
        "",
        "Raw generation limit: in-process prefill + step graph + the service's own sampling "
        "(`seqcore.sampling.RowSampler` at T=0.8, as the generation engine runs it: `<unk>` "
        "banned, inverse CDF with one uniform draw per stream from its own generator), best "
        "layout of callers (one caller on a one- or two-thread session, or two callers with "
        "half the streams each); a prefill alone: the faster of the two sessions. "
        "Sampling share: time in sampling / time in the graph step, per step, one caller.",
        "",
        *streaming_section(raw_s, raw_g, results, meta),
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
        f"## /generate, non-streamed (prompts of 200 characters, {meta['new_chars']} new "
        "characters, T=0.8)",
        "",
        "Raw limit (in-process prefill + step loop with temperature sampling, no HTTP), "
        "one caller: "
        + ", ".join(f"{b} streams: {v:.0f} chars/s" for b, v in raw_g["one_caller"].items())
        + "; one caller on a two-thread session: "
        + ", ".join(f"{b} streams: {v:.0f} chars/s"
                    for b, v in raw_g["one_caller_two_threads"].items())
        + "; two callers side by side, half the streams each: "
        + ", ".join(f"{b} streams: {v:.0f} chars/s" for b, v in raw_g["two_callers"].items())
        + ". The raw-limit column uses the best of the three.",
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
        f"- Time to first character, no other load (SSE, median): {r['ttfc_ms']:.1f} ms "
        f"(200-char prompt), {r['ttfc_short_ms']:.1f} ms ({SHORT_PROMPT}-char prompt).",
        f"- Resident memory of the serving process: {r['rss_start_mb']:.0f} MB after start-up, "
        f"{r['rss_end_mb']:.0f} MB after the run.",
        f"- Errors (non-200) across all runs: "
        f"{sum(v['errors'] for m in results.values() for v in m.values())}.",
        "",
    ]
    return "\n".join(lines)


def streaming_section(raw_s, raw_g, results, meta) -> list[str]:
    real, peer = results["real"], results["peer"]
    raw = raw_g["chars_per_s_by_streams"]
    lines = [
        f"## Generation: raw limit, non-streamed, streamed ({meta['new_chars']} new "
        "characters, T=0.8), chars/s",
        "",
        "| streams | raw (step + sampling) | raw layout | bare step (greedy) "
        "| sampling / step | non-streamed | / raw | streamed SSE | / raw "
        "| streamed / non-streamed | first char p50 ms (streamed) | LitServe streamed "
        "| ours / LitServe |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def f(d: dict, key: tuple, field: str, fmt: str = "{:.0f}") -> str:
        return fmt.format(d[key][field]) if key in d else "—"

    def r(num: float | None, den: float | None, fmt: str = "{:.0%}") -> str:
        return fmt.format(num / den) if num is not None and den else "—"

    def v(d: dict, key: tuple, field: str) -> float | None:
        return d[key][field] if key in d else None

    for st in sorted(set(raw) | {k[1] for k in real if k[0] in ("generate", "stream")}):
        ns, sm = v(real, ("generate", st), "chars_per_s"), v(real, ("stream", st), "chars_per_s")
        pe = v(peer, ("stream", st), "chars_per_s")
        greedy = raw_g["greedy_one_caller"].get(st)
        share = raw_g["sampling_share"].get(st)
        lines.append(
            f"| {st} | {raw[st]:.0f} | {raw_g['layout'][st]} | "
            f"{'—' if greedy is None else f'{greedy:.0f}'} | "
            f"{'—' if share is None else f'{share:.0%}'} | "
            f"{f(real, ('generate', st), 'chars_per_s')} | {r(ns, raw.get(st))} | "
            f"{f(real, ('stream', st), 'chars_per_s')} | {r(sm, raw.get(st))} | {r(sm, ns)} | "
            f"{f(real, ('stream', st), 'first_char_p50_ms', '{:.1f}')} | "
            f"{f(peer, ('stream', st), 'chars_per_s')} | {r(sm, pe, '{:.2f}x')} |")
    two_callers = max(x for k, x in raw_s["by_batch"].items() if k[0] == 2)
    lines += [
        "",
        f"Time to first character, no other load (SSE, median): ours "
        f"{meta['real']['ttfc_ms']:.1f} ms with a 200-char prompt, "
        f"{meta['real']['ttfc_short_ms']:.1f} ms with a {SHORT_PROMPT}-char one; the prefill "
        f"alone, in process, one stream: "
        + ", ".join(f"{v:.1f} ms ({n} chars)" for n, v in raw_g.get("prefill_ms", {}).items())
        + "; LitServe peer (200-char prompt)"
        + (f" {meta['peer_ttfc_ms']:.1f} ms." if "peer_ttfc_ms" in meta else ": not run."),
        "",
        "## /sentiment: ours vs the LitServe peer, req/s",
        "",
        "| concurrency | ours | ours p50 / p99 ms | LitServe | LitServe p50 / p99 ms "
        "| ours / LitServe | ours / two-caller raw |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in sorted({k[1] for k in real if k[0] == "sentiment"}):
        o, p = real[("sentiment", c)], peer.get(("sentiment", c))
        lines.append(
            f"| {c} | {o['per_s']:.0f} | {o['p50_ms']:.1f} / {o['p99_ms']:.1f} | "
            + (f"{p['per_s']:.0f} | {p['p50_ms']:.1f} / {p['p99_ms']:.1f} | "
               f"{o['per_s'] / p['per_s']:.2f}x | " if p else "— | — | — | ")
            + f"{o['per_s'] / two_callers:.0%} |")
    ps = meta.get("peer_settings")
    lines += ["", "LitServe peer (`bench/litserve_peer.py`, its own venv, the same ONNX "
              "models, seqcore's tokenizers and the same sampling): "
              + (f"`{json.dumps(ps)}`." if ps else "not run (no LitServe venv)."), ""]
    return lines + clients_section(results, meta)


def clients_section(results: dict, meta: dict) -> list[str]:
    """The benchmark clients' own figures (bench/clients.py) beside ours."""
    clients = meta.get("clients")
    if not clients:
        return []
    ours = results["real"].get(("stream", 32), {})

    def ms(x: float | None) -> str:
        return "—" if x is None else f"{x:.1f}"

    lines = [f"## Benchmark clients: aiperf and guidellm, 32 concurrent streamed requests "
             f"(200-character prompts, {meta['new_chars']} new characters)", "",
             "Their own measurements, the tools run unchanged from their venvs with the "
             "character tokenizer of the model (one token = one character); ours is the "
             "streamed /generate cell at 32 streams above.", "",
             "| client | endpoint | requests | errors | TTFT p50 / p99 ms "
             "| inter-token p50 / p99 ms | inter-chunk p50 / p99 ms |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for c in clients:
        if "skipped" in c or "failed" in c:
            lines.append(f"| {c['tool']} | {c.get('skipped') or 'failed: ' + c['failed']} "
                         "| | | | | |")
            continue
        lines.append(
            f"| {c['tool']} | {c.get('endpoint', 'default')} | {c['requests']} | {c['errors']} "
            f"| {ms(c['ttft_ms_p50'])} / {ms(c['ttft_ms_p99'])} "
            f"| {ms(c['itl_ms_p50'])} / {ms(c['itl_ms_p99'])} "
            f"| {ms(c.get('icl_ms_p50'))} / {ms(c.get('icl_ms_p99'))} |")
    lines.append(f"| ours (bench.run) | /generate SSE | | {ours.get('errors', '—')} "
                 f"| {ms(ours.get('first_char_p50_ms'))} / — | — | — |")
    lines += ["", "Inter-token latency is a tool's (latency - TTFT) / (tokens - 1); "
              "inter-chunk, the time between two SSE events, which the service paces at "
              "SEQSERVE_GEN_STREAM_INTERVAL_MS (20 ms; longer with many streams, "
              "SEQSERVE_GEN_STREAM_EVENTS_PER_S).", ""]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
