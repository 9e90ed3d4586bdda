"""This checkout against another one (e.g. the previous main), in one run: both
servers up side by side on the same models, the same load generator, rounds
interleaved (A, B, A, B, ...), medians. /sentiment by default; ``--load generate`` or
``--load stream`` compares /generate (non-streamed or SSE, 200-char prompts, 200 new
characters, T=0.8) with ``--concurrency`` streams.

    git worktree add /tmp/seqserve-base <ref>
    python -m bench.ab --baseline /tmp/seqserve-base [--concurrency 32] [--rounds 5]
    python -m bench.ab --baseline /tmp/seqserve-base --load stream --concurrency 64
    python -m bench.ab --baseline-models /tmp/fewer-models --load generate   # models A/B

Only the servers differ: each runs ``python -m app`` from its own checkout (by default
both this one) with this checkout's models (or ``--baseline-models`` for the baseline,
to compare the same code serving other model folders), the load comes from
``make bench``'s generators (bench.load: wrk for /sentiment, aiohttp for /generate) over
the same IMDB-length review texts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from pathlib import Path

from bench.inputs import MODELS, prompts, review_texts
from bench.load import SentimentLoad, load_generate, load_generate_stream, wrk_path
from bench.peer import only
from bench.server import ROOT, ServerProcess


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default=str(ROOT),
                    help="the other checkout's root folder (default: this one)")
    ap.add_argument("--baseline-models", default=str(MODELS),
                    help="the baseline server's models folder (default: this checkout's)")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5, help="per round (wrk)")
    ap.add_argument("--load", choices=["sentiment", "generate", "stream"], default="sentiment")
    ap.add_argument("--per-stream", type=int, default=3,
                    help="requests per stream and round (generate, stream)")
    a = ap.parse_args(argv)
    texts, plist = review_texts(1000), prompts(256)
    if a.load == "sentiment":
        wrk_path()  # or a clear error: how to install it
    load = SentimentLoad(texts)
    servers = {"this": ServerProcess(MODELS, log_level="warning", max_queue=4096),
               "baseline": ServerProcess(Path(a.baseline_models), log_level="warning",
                                         max_queue=4096, root=Path(a.baseline))}
    runs: dict[str, list[dict]] = {k: [] for k in servers}
    unit = "req/s" if a.load == "sentiment" else "chars/s"
    try:
        for s in servers.values():
            s.start().wait_ready()
        procs = {name: (s.pid, False) for name, s in servers.items()}
        for s in servers.values():  # warm both
            if a.load == "sentiment":
                load.run(s.url, 8, 1)
            else:
                asyncio.run(load_generate_stream(s.url, plist, 4, 1, 200))
        for r in range(a.rounds):
            for name, s in (servers.items() if r % 2 == 0 else reversed(servers.items())):
                with only(name, procs):  # the other server is stopped meanwhile
                    if a.load == "generate":
                        res = asyncio.run(load_generate(s.url, plist, a.concurrency,
                                                        a.per_stream, 200))
                    elif a.load == "stream":
                        res = asyncio.run(load_generate_stream(s.url, plist, a.concurrency,
                                                               a.per_stream, 200))
                    else:
                        res = load.run(s.url, a.concurrency, a.seconds)
                    if a.load != "sentiment":
                        res["per_s"] = res["chars_per_s"]
                runs[name].append(res)
                print(f"round {r + 1} {name}: {res['per_s']:.0f} {unit}, p99 "
                      f"{res['p99_ms']:.1f} ms, errors {res['errors']}"
                      + ("" if res.get("valid", True) else " (INVALID: errors)"), flush=True)
    finally:
        for s in servers.values():
            s.__exit__()
    med = {k: statistics.median(x["per_s"] for x in v) for k, v in runs.items()}
    invalid = sum(not x.get("valid", True) for v in runs.values() for x in v)
    if invalid:
        print(f"{invalid} round(s) had errors: the comparison below is not valid")
    what = {"sentiment": "/sentiment (wrk)",
            "generate": "/generate, non-streamed", "stream": "/generate, streamed"}[a.load]
    print(f"\n{what} at concurrency {a.concurrency}, median of {a.rounds} interleaved rounds: "
          f"this checkout ({ROOT}) {med['this']:.0f} {unit}, "
          f"baseline ({a.baseline}, models {a.baseline_models}) {med['baseline']:.0f} {unit}, ratio "
          f"{med['this'] / med['baseline']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
