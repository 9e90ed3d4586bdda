"""Benchmark: this service against the LitServe peer at its best, this service with
batching off, and the raw ONNX Runtime limits, in one run, with the floors of issue 30
at the top of the report.

    make bench                       # or: python -m bench.run [--reps 3] [--quick]
    make bench BENCH_ARGS=--quick    # a smoke run of a few minutes (.cache/bench/)

1. Raw limits in process (bench.raw): /sentiment's ``session.run`` on the IMDB mix and
   on the short review (two callers side by side: the limit the floors divide by);
   prefill + step + the service's sampling at 1, 32 and 64 streams.
2. The LitServe peer's sweep (bench.peer; ``fast_queue=True``): workers x
   max_batch_size x batch_timeout for /sentiment with short wrk runs at c=32 on the
   mix, then characters per message for its continuous-batching loop at 32 streams.
3. Three servers up together: this service (default settings), this service with
   batching off (SEQSERVE_BATCHING=false, SEQSERVE_GEN_BATCHING=false: the engine-less
   path for /generate) and the peer with the sweep's best settings. Interleaved rounds:
   every cell on each server in turn (the others SIGSTOPped); /sentiment with wrk
   (bench.load) at c=1, 32, 128 on the mix and c=32 on the short review, streamed
   /generate at 1, 32 and 64 streams (aiohttp: wrk cannot read SSE). In two halves:
   every server is started afresh for the second, in the opposite order.
4. Optionally aiperf and guidellm against this service (bench.clients).

Each cell is the median of ``--reps`` rounds; the report (bench.report) goes to
docs/benchmarks.md (``--quick``: .cache/bench/benchmarks-quick.md). A benchmark, not a
test: nothing here asserts timings. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench import peer as peer_mod
from bench.inputs import (
    MODELS,
    PEER_PYTHON,
    ROOT,
    SHORT_PROMPT,
    SHORT_REVIEW,
    prompts,
    review_texts,
)
from bench.load import (
    SentimentLoad,
    load_generate_stream,
    median_cell,
    ttfc,
    wrk_path,
)
from bench.raw import raw_generation, raw_sentiment
from bench.report import SENT_COLS, STREAMS, kept_sections, render
from bench.server import ServerProcess

OFF = {"batching": False, "gen_batching": False}  # this service, batching off


@dataclass
class Plan:
    """Durations and sizes of one run (``--quick``: a smoke run of a few minutes)."""

    quick: bool
    reps: int
    wrk_seconds: float
    sweep_seconds: float
    new_chars: int
    n_texts: int
    grid: list[dict]
    chars_per_message: tuple[int, ...]

    @classmethod
    def make(cls, a: argparse.Namespace) -> Plan:
        if a.quick:
            grid = peer_mod.sentiment_grid((1, 2), (1, 8), (2.0,))
            return cls(True, a.reps or 1, 1, 1, 50, 200, grid, (8, 16))
        return cls(False, a.reps or 4, a.seconds, 3, 200, 1000, peer_mod.sentiment_grid(),
                   (4, 8, 16, 32))

    def per_stream(self, streams: int) -> int:
        """Requests per stream and round: a round of one stream lasts about as long as
        one of 32 (a round of 4 requests at one stream was 0.15 s, all noise)."""
        if self.quick:
            return 1 if streams >= 32 else 2
        return 3 if streams >= 32 else (16 if streams == 1 else 4)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=None,
                    help="rounds per cell (4: two in each half; --quick: 1)")
    ap.add_argument("--quick", action="store_true",
                    help="short durations, one round, a reduced sweep (a smoke run); "
                         "writes .cache/bench/benchmarks-quick.md unless --out")
    ap.add_argument("--seconds", type=float, default=5, help="wrk seconds per cell")
    ap.add_argument("--out", default=None, help="the report (default docs/benchmarks.md)")
    ap.add_argument("--peer-python", default=str(PEER_PYTHON),
                    help="python of the LitServe venv (`make bench` creates it)")
    ap.add_argument("--no-peer", action="store_true", help="leave the LitServe peer out")
    ap.add_argument("--no-sweep", action="store_true",
                    help="the peer with its defaults (fast_queue on), no sweep")
    ap.add_argument("--no-clients", action="store_true",
                    help="leave the benchmark clients (aiperf, guidellm) out")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                    help="SEQSERVE_DEVICE of the servers (bench/gpu_check.sh: cuda)")
    ap.add_argument("--p99-reference-ms", type=float, default=None,
                    help="the /sentiment p99 at c=32 (mix) of the run before, for its floor")
    return ap.parse_args(argv)


def measure_raw(mix: list[str], plist: list[str], plan: Plan) -> tuple[dict, dict]:
    print("raw limits (in process, no HTTP) ...", flush=True)
    n = min(len(mix), 300 if plan.quick else 1000)
    raw = {"mix": raw_sentiment(mix[:n]), "short": raw_sentiment([SHORT_REVIEW] * n)}
    raw_g = raw_generation(plist, plan.new_chars, streams=STREAMS)
    for k, v in raw.items():
        print(f"raw /sentiment {k}: two callers {v['two_callers_per_s']:.0f}/s", flush=True)
    print("raw generation:", raw_g["chars_per_s_by_streams"], flush=True)
    return raw, raw_g


def sweep_peer(python: Path, mix: SentimentLoad, plist: list[str], plan: Plan,
               meta: dict) -> dict:
    """The peer's best settings (sentiment, then chars per message with those)."""

    def measure(url: str) -> dict:
        mix.run(url, 8, 1)  # warm
        return mix.run(url, 32, plan.sweep_seconds)

    meta["sweep_concurrency"], meta["sweep_seconds"] = 32, plan.sweep_seconds
    meta["sweep_sentiment"] = trials = peer_mod.run_sweep(python, plan.grid, measure)
    try:
        best, res = peer_mod.choose_best(trials, "per_s")
    except ValueError as e:  # every setting failed: the peer's defaults, said so
        meta["sweep_stream"], meta["sweep_failed"] = [], str(e)
        print(f"peer sweep, /sentiment: {e}; the peer runs with its defaults", flush=True)
        return {}
    print(f"peer sweep, /sentiment: best {best} at {res['per_s']:.0f} req/s", flush=True)
    grid = [{**best, "chars_per_message": n} for n in plan.chars_per_message]
    meta["sweep_stream"] = stream_trials = peer_mod.run_sweep(
        python, grid, peer_mod.stream_measure(plist, 32, plan.new_chars))
    try:
        best_stream, res = peer_mod.choose_best(stream_trials, "chars_per_s")
    except ValueError as e:
        meta["sweep_failed"] = f"streams: {e}"
        print(f"peer sweep, streams: {e}; default chars per message", flush=True)
        return best
    print(f"peer sweep, streams: best {best_stream} at {res['chars_per_s']:.0f} chars/s",
          flush=True)
    return best_stream


def rss_mb(srv: ServerProcess) -> float:
    try:
        return srv.rss() / 2**20
    except (OSError, RuntimeError):  # the process is gone: its cells say why
        return float("nan")


@contextmanager
def service(device: str, meta: dict, who: str, **settings: object) -> Iterator[ServerProcess]:
    """This service on a free loopback port; its start-up time and memory go to meta."""
    srv = ServerProcess(MODELS, log_level="warning", max_queue=4096,
                        **{"device": device, **settings})
    t0 = time.perf_counter()
    with srv:
        meta.setdefault("servers", {})[who] = {
            "startup_s": time.perf_counter() - t0, "rss_start_mb": rss_mb(srv)}
        try:
            yield srv
        finally:
            meta["servers"][who]["rss_end_mb"] = rss_mb(srv)
            srv.terminate(20)


def one_cell(kind: tuple, url: str, loads: dict[str, SentimentLoad], plist: list[str],
             plan: Plan) -> dict:
    """One round of one cell; a load that fails outright is an invalid cell, not the end
    of the run."""
    try:
        if kind[0] == "sentiment":
            return loads[kind[1]].run(url, kind[2], plan.wrk_seconds)
        st = kind[1]
        return asyncio.run(load_generate_stream(url, plist, st, plan.per_stream(st),
                                                plan.new_chars))
    except (aiohttp.ClientError, TimeoutError, OSError, RuntimeError,
            subprocess.SubprocessError) as e:
        return {"valid": False, "errors": 1, "failed": f"{type(e).__name__}: {e}"[-300:]}


def rounds(urls: dict[str, str], procs: dict, loads: dict[str, SentimentLoad],
           plist: list[str], plan: Plan, reps: int, runs: dict) -> None:
    """Every cell on every server in turn, ``reps`` times, into ``runs``."""
    cells = [("sentiment", i, c) for i, c in SENT_COLS] + [("stream", s) for s in STREAMS]
    for r in range(reps):
        for kind in cells:
            order = list(urls.items()) if r % 2 == 0 else list(urls.items())[::-1]
            for who, url in order:
                time.sleep(0.5)  # the previous cell's last requests drain first
                with peer_mod.only(who, procs):
                    res = one_cell(kind, url, loads, plist, plan)
                runs.setdefault(who, {}).setdefault(kind, []).append(res)
                print(f"round {len(runs[who][kind])}/{plan.reps} {who} {kind}: "
                      + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                                  for k, v in res.items() if k != "latency_table_ms"),
                      flush=True)


def warm(urls: dict[str, str], procs: dict, loads: dict[str, SentimentLoad],
         plist: list[str], plan: Plan) -> None:
    for who, url in urls.items():
        with peer_mod.only(who, procs):
            loads["mix"].run(url, 8, 1)
            asyncio.run(load_generate_stream(url, plist, 4, 1, plan.new_chars))


def measure_servers(a: argparse.Namespace, peer_settings: dict | None,
                    loads: dict[str, SentimentLoad], plist: list[str], plan: Plan,
                    meta: dict) -> dict:
    """The servers' rounds in two halves, every server started afresh for each and in
    the opposite order (on this VM the server started first ran a lone stream 6-10 %
    slower than the same code started after it: bench.ab's null run); medians per cell
    over both halves."""
    runs: dict = {}
    first = (plan.reps + 1) // 2
    for half, reps in enumerate((first, plan.reps - first)):
        if reps:
            one_half(a, peer_settings, loads, plist, plan, meta, runs, reps,
                     reverse=half == 1)
    return {who: {k: median_cell(v) for k, v in cells_.items()} for who, cells_ in runs.items()}


def one_half(a: argparse.Namespace, peer_settings: dict | None,
             loads: dict[str, SentimentLoad], plist: list[str], plan: Plan, meta: dict,
             runs: dict, reps: int, reverse: bool) -> None:
    """The servers started (``reverse``: the peer first, this service last), warmed,
    then ``reps`` rounds into ``runs``; the first half also measures the time to the
    first character and runs the benchmark clients."""
    starts = [("real", {}), ("off", OFF)] + ([("peer", None)] if peer_settings is not None
                                             else [])
    with ExitStack() as stack:
        urls, procs = {}, {}
        for who, settings in (starts[::-1] if reverse else starts):
            if who == "peer":
                pp = peer_mod.PeerProcess(Path(a.peer_python), fast_queue=True,
                                          **peer_settings)  # type: ignore[arg-type]
                meta["peer_settings"] = pp.settings()
                stack.enter_context(pp)
                urls[who], procs[who] = pp.url, (pp.proc.pid, True)
            else:
                srv = stack.enter_context(service(a.device, meta, who, **settings))
                urls[who], procs[who] = srv.url, (srv.pid, False)
        urls = {who: urls[who] for who, _ in starts}  # the report's order
        warm(urls, procs, loads, plist, plan)
        if not reverse:
            with peer_mod.only("real", procs):
                n = 5 if plan.quick else 20
                meta["ttfc_ms"] = {k: asyncio.run(ttfc(urls["real"], plist[0][:k], n)) * 1e3
                                   for k in (200, SHORT_PROMPT)}
        rounds(urls, procs, loads, plist, plan, reps, runs)
        if not a.no_clients and not reverse:
            from bench.clients import bench_clients

            with peer_mod.only("real", procs):
                meta["clients"] = bench_clients(
                    urls["real"], MODELS / "chargen", concurrency=32,
                    requests=64 if plan.quick else 256, input_tokens=200,
                    output_tokens=plan.new_chars)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    wrk_path()  # fail now, with the way to install it, rather than after the raw limits
    plan = Plan.make(a)
    out_path = Path(a.out or (ROOT / ".cache" / "bench" / "benchmarks-quick.md" if a.quick
                              else ROOT / "docs" / "benchmarks.md"))
    t_start = time.perf_counter()
    mix = review_texts(plan.n_texts)
    plist = prompts(256)
    loads = {"mix": SentimentLoad(mix), "short": SentimentLoad([SHORT_REVIEW])}
    meta: dict = {"quick": plan.quick, "reps": plan.reps, "wrk_seconds": plan.wrk_seconds,
                  "new_chars": plan.new_chars, "short_chars": len(SHORT_REVIEW),
                  "p99_reference_ms": a.p99_reference_ms}
    raw, raw_g = measure_raw(mix, plist, plan)
    peer_python = Path(a.peer_python)
    peer_settings = None
    if not a.no_peer and not peer_python.exists():
        print(f"no LitServe venv at {peer_python} (`make bench` creates it): peer left out",
              flush=True)
    elif not a.no_peer:
        peer_settings = ({} if a.no_sweep
                         else sweep_peer(peer_python, loads["mix"], plist, plan, meta))
    results = measure_servers(a, peer_settings, loads, plist, plan, meta)
    meta["minutes"] = (time.perf_counter() - t_start) / 60
    report = render(raw, raw_g, results, meta)
    print(report)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(report + kept_sections(out_path))
    print(f"written to {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
