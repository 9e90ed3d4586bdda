"""This checkout against another one (e.g. the commit before a change), in one run:
both servers up side by side on the same models, the same load generators, rounds
interleaved (A, B, B, A, ...), medians, and the spread of the paired rounds.

    git worktree add /tmp/seqserve-base <ref>          # or: make bench-ab BASE=<ref>
    python -m bench.ab --baseline /tmp/seqserve-base                 # every path below
    python -m bench.ab --baseline /tmp/seqserve-base --load stream:64 --rounds 21
    python -m bench.ab --baseline-models /tmp/fewer-models --load generate:32

The paths (``--load``, repeatable; default: all of them):

- ``sentiment:N``: /sentiment, the IMDB-length mix, wrk at N connections;
- ``short:N``: /sentiment, the fixed 450-character review, wrk at N connections;
- ``generate:N``: non-streamed /generate, N clients (200-char prompts, 200 new
  characters, T=0.8);
- ``stream:N``: the same streamed (SSE), N streams.

Only the servers differ: each runs ``python -m app`` from its own checkout (by default
both this one) with this checkout's models (or ``--baseline-models`` for the baseline,
to compare the same code serving other model folders). The server that is not measured
is SIGSTOPped for the round. Each path is measured in two halves, both servers started
afresh for each, the one started first swapped between them (on this VM the server
started first ran a lone stream 6-10 % slower than the same code started second); each
half is warmed on both servers first (the first rounds after start-up run a few per
cent slow), then measured in rounds whose order alternates A-B, B-A. The report gives, per path,
both medians, their ratio (this / baseline) and the middle half of the per-round
ratios (round k of this against round k of the baseline): a change is real only where
that range stays on one side of 1.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from collections.abc import Callable
from pathlib import Path

from bench.inputs import MODELS, SHORT_REVIEW, prompts, review_texts
from bench.load import SentimentLoad, load_generate, load_generate_stream, wrk_path
from bench.peer import only
from bench.server import ROOT, ServerProcess

DEFAULT_LOADS = ("sentiment:32", "short:32", "generate:32", "stream:1", "stream:32",
                 "stream:64")
KINDS = ("sentiment", "short", "generate", "stream")


def parse_load(spec: str) -> tuple[str, int]:
    kind, _, n = spec.partition(":")
    if kind not in KINDS or not n.isdigit() or int(n) < 1:
        raise argparse.ArgumentTypeError(
            f"{spec!r}: want KIND:N with KIND one of {', '.join(KINDS)} and N >= 1")
    return kind, int(n)


def quartiles(xs: list[float]) -> tuple[float, float]:
    """The 25th and 75th percentiles (inclusive method; one value: itself)."""
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def runner(kind: str, n: int, a: argparse.Namespace, mix: SentimentLoad,
           short: SentimentLoad, plist: list[str]) -> Callable[[str], dict]:
    """One round of ``kind`` at ``n`` against a server's url: a dict with ``per_s``."""
    def run(url: str) -> dict:
        if kind in ("sentiment", "short"):
            res = (mix if kind == "sentiment" else short).run(url, n, a.seconds)
        else:
            # a round of about the same length at every N: 1 stream gets more requests
            per = max(a.per_stream, 96 // n)
            load = load_generate if kind == "generate" else load_generate_stream
            res = asyncio.run(load(url, plist, n, per, 200))
            res["per_s"] = res["chars_per_s"]
        return res
    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default=str(ROOT),
                    help="the other checkout's root folder (default: this one)")
    ap.add_argument("--baseline-models", default=str(MODELS),
                    help="the baseline server's models folder (default: this checkout's)")
    ap.add_argument("--load", type=parse_load, action="append",
                    help=f"KIND:N, repeatable (default: {' '.join(DEFAULT_LOADS)})")
    ap.add_argument("--rounds", type=int, default=7, help="measured rounds per path")
    ap.add_argument("--warmup", type=int, default=2, help="unmeasured rounds per path")
    ap.add_argument("--seconds", type=int, default=3, help="per round (wrk)")
    ap.add_argument("--per-stream", type=int, default=3,
                    help="requests per client and round (generate, stream), at least")
    a = ap.parse_args(argv)
    loads = a.load or [parse_load(s) for s in DEFAULT_LOADS]
    if any(kind in ("sentiment", "short") for kind, _ in loads):
        wrk_path()  # or a clear error: how to install it
    mix, short, plist = SentimentLoad(review_texts(1000)), SentimentLoad([SHORT_REVIEW]), prompts(256)

    def servers() -> dict[str, ServerProcess]:
        return {"this": ServerProcess(MODELS, log_level="warning", max_queue=4096),
                "baseline": ServerProcess(Path(a.baseline_models), log_level="warning",
                                          max_queue=4096, root=Path(a.baseline))}

    rows = []
    for kind, n in loads:
        run = runner(kind, n, a, mix, short, plist)
        runs: dict[str, list[dict]] = {"this": [], "baseline": []}
        # Half the rounds with each server started first: on this VM the server started
        # first ran a lone stream 6-10 % slower than the same code started second
        # (docs/benchmarks.md), so each path restarts both, the other way round, halfway.
        for half, first in enumerate(("this", "baseline")):
            rounds = a.rounds // 2 + (a.rounds % 2 if half == 0 else 0)
            up = servers()
            try:
                for name in (first, *(k for k in up if k != first)):  # started in this order
                    up[name].start().wait_ready()
                procs = {name: (s.pid, False) for name, s in up.items()}
                for r in range(a.warmup + rounds):
                    order = list(up.items())
                    if r % 2:
                        order.reverse()
                    for name, s in order:
                        with only(name, procs):  # the other server is stopped meanwhile
                            res = run(s.url)
                        if r >= a.warmup:
                            runs[name].append(res)
                        print(f"{kind}:{n} {first} first, round {r + 1}"
                              f"{' (warm-up)' if r < a.warmup else ''} {name}: "
                              f"{res['per_s']:.0f}/s, p99 {res['p99_ms']:.1f} ms, "
                              f"errors {res['errors']}"
                              + ("" if res.get("valid", True) else " (INVALID: errors)"),
                              flush=True)
            finally:
                for s in up.values():
                    s.__exit__()
        rows.append((kind, n, runs))
    return report(rows, a)


def report(rows: list, a: argparse.Namespace) -> int:
    """The table: per path both medians, their ratio, the per-round spread, p99."""
    print(f"\nthis checkout ({ROOT}) against the baseline ({a.baseline}, models "
          f"{a.baseline_models}): {a.rounds} interleaved rounds per path, half of them with "
          f"each server started first, each half after {a.warmup} warm-up rounds, "
          f"medians\n")
    print("| path | load | this | baseline | ratio | per-round ratios, middle half | p99 this / baseline |")
    print("|---|---|---:|---:|---:|---|---|")
    invalid = 0
    for kind, n, runs in rows:
        invalid += sum(not x.get("valid", True) for v in runs.values() for x in v)
        this = [x["per_s"] for x in runs["this"]]
        base = [x["per_s"] for x in runs["baseline"]]
        lo, hi = quartiles([t / b for t, b in zip(this, base, strict=True)])
        unit = "req/s" if kind in ("sentiment", "short") else "chars/s"
        path = {"sentiment": "/sentiment, IMDB mix", "short": "/sentiment, short review",
                "generate": "/generate", "stream": "streamed /generate"}[kind]
        what = (f"wrk, c={n}" if kind in ("sentiment", "short")
                else f"{n} stream{'s' if n > 1 else ''}")
        p99 = "{:.1f} / {:.1f} ms".format(*(statistics.median(x["p99_ms"] for x in runs[k])
                                           for k in ("this", "baseline")))
        print(f"| {path} | {what} | {statistics.median(this):,.0f} {unit} | "
              f"{statistics.median(base):,.0f} {unit} | "
              f"{statistics.median(this) / statistics.median(base):.3f} | "
              f"{lo:.3f}–{hi:.3f} | {p99} |")
    if invalid:
        print(f"\n{invalid} round(s) had errors: the comparison above is not valid")
    return 1 if invalid else 0


if __name__ == "__main__":
    raise SystemExit(main())
