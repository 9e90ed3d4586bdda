"""Where a short /sentiment request's time goes: the server under wrk load (one fixed
~450-character review, c=32), sampled by py-spy, stacks mapped to stages, printed as
microseconds of CPU per request per stage.

    python -m bench.profile            # 20 s of samples at 250 Hz
    python -m bench.profile --quick    # 5 s
    python -m bench.profile --raw FILE --requests N --rate HZ   # a saved py-spy record

py-spy (in the venv; root or CAP_SYS_PTRACE) records ``--format raw`` (collapsed stacks)
without pausing the server (``--nonblocking``) and without idle threads, so a sample is
a thread on the CPU or about to be. Each sample goes to the stage of the innermost
frame that a rule of ``STAGES`` matches (by module path, then function name): the ORT
call inside a worker thread is "ORT call" although the thread's outer frames are
concurrent.futures; a frame no rule matches leaves the sample to an outer frame's
stage, and a stack with no match at all is "other (unattributed)", printed as such.
py-spy sees Python threads only: ORT's own intra-op threads (if any) and C threads are
not sampled, so the sampled total is set beside the process's measured CPU time, and
the difference is printed as unseen.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.inputs import MODELS, SHORT_REVIEW
from bench.load import SentimentLoad, wrk_path
from bench.server import ServerProcess, cpu_seconds

OTHER = "other (unattributed)"
# (stage, path pattern, function pattern): the first rule matching a frame names its
# stage. Paths as py-spy prints them (site-packages/..., or the file's path).
STAGES: tuple[tuple[str, str, str], ...] = (
    ("ORT call", r"onnxruntime/", r""),
    ("tokenizer", r"seqcore/tokenizer", r""),
    ("JSON parse/encode", r"(^|/)json/|orjson", r""),
    ("JSON parse/encode", r"", r"^(loads|dumps|render|json|body|_json_or_items)$"),
    ("pydantic validation/serialization", r"pydantic|fastapi/_compat|fastapi/encoders", r""),
    ("padding, numpy (seqcore.runtime)", r"seqcore/|numpy/", r""),
    ("metrics, tracing, logs", r"prometheus_client/|opentelemetry/|(^|/)logging/|app/ops/",
     r""),
    ("event loop <-> worker thread hand-offs",
     r"concurrent/futures/|(^|/)threading\.py|anyio/|asyncio/(futures|threads)\.py",
     r"^(call_soon_threadsafe|run_in_executor|_chain_future|_copy_future_state|"
     r"_set_state|_call_set_state|to_thread|run_sync)$"),
    ("engine (batcher, queues)", r"app/engine/", r""),
    ("routes (protocols)", r"app/protocols/", r""),
    ("our ASGI middleware", r"app/http/|app/main\.py|app/asgi\.py|app/deps\.py", r""),
    ("FastAPI/Starlette routing, dependencies", r"fastapi/|starlette/", r""),
    ("HTTP server (uvicorn, httptools)", r"uvicorn/|httptools|h11/", r""),
    ("event loop (asyncio scheduling)", r"asyncio/|uvloop|selectors\.py", r""),
)
_RULES = [(name, re.compile(p) if p else None, re.compile(f) if f else None)
          for name, p, f in STAGES]
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<path>[^()]*?)(?::\d+)?\)$")


def frame_stage(frame: str) -> str | None:
    """The stage of one py-spy frame (``func (path:line)``), or None."""
    m = _FRAME.match(frame.strip())
    func, path = (m.group("func"), m.group("path")) if m else (frame.strip(), "")
    for name, p, f in _RULES:
        if (p is not None and p.search(path)) or (f is not None and f.search(func)):
            return name
    return None


def stack_stage(stack: str) -> str:
    """The stage of a collapsed stack (root first, ``;``-separated): its innermost
    frame with a stage; ``OTHER`` when none has one."""
    for frame in reversed(stack.split(";")):
        stage = frame_stage(frame)
        if stage is not None:
            return stage
    return OTHER


def parse_raw(text: str) -> Counter[str]:
    """py-spy ``--format raw`` (``stack count`` per line) -> samples per stage."""
    out: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            out[stack_stage(stack)] += int(count)
    return out


def breakdown(samples: Counter[str], rate_hz: float, requests: int,
              process_cpu_s: float | None = None) -> list[tuple[str, float, float]]:
    """(stage, microseconds of CPU per request, share) for each stage, largest first;
    with ``process_cpu_s``, an "unseen by py-spy" row for the measured CPU time the
    samples do not cover (native threads; negative: sampling noise)."""
    total = sum(samples.values())
    rows = [(stage, n / rate_hz / requests * 1e6, n / total if total else 0.0)
            for stage, n in samples.most_common()]
    if process_cpu_s is not None:
        unseen = process_cpu_s - total / rate_hz
        rows.append(("unseen by py-spy (measured CPU - sampled)", unseen / requests * 1e6,
                     unseen / process_cpu_s if process_cpu_s else 0.0))
    return rows


def table(rows: list[tuple[str, float, float]], requests: int, seconds: float) -> str:
    lines = [f"{requests} requests in {seconds:.1f} s ({requests / seconds:.0f} req/s)", "",
             "| stage | us per request | share of samples |", "|---|---:|---:|"]
    lines += [f"| {s} | {us:.0f} | {share:.0%} |" for s, us, share in rows]
    sampled = sum(us for s, us, _ in rows if not s.startswith("unseen"))
    lines.append(f"| all sampled stages | {sampled:.0f} | |")
    return "\n".join(lines)


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed (pip install py-spy; it is in the dev extra)")
    return found


def record(seconds: float, rate: int, concurrency: int, raw_out: Path) -> tuple[int, float, float]:
    """Server + wrk + py-spy: -> (requests during the recording, its seconds, the
    server's CPU seconds meanwhile). The samples go to ``raw_out``."""
    load = SentimentLoad([SHORT_REVIEW])
    with ServerProcess(MODELS, log_level="warning", max_queue=4096) as srv:
        load.run(srv.url, 8, 2)  # warm
        wrk = subprocess.Popen(
            [wrk_path(), "-t1", f"-c{concurrency}", f"-d{round(seconds) + 3}s", "--latency",
             "-s", str(Path(__file__).with_name("wrk_bodies.lua")), srv.url, "--",
             str(load.path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)  # wrk's connections up
        cpu0, t0 = cpu_seconds(srv.pid), time.perf_counter()
        spy = subprocess.run([py_spy(), "record", "--format", "raw", "--nonblocking",
                              "-r", str(rate), "-d", str(round(seconds)), "-p", str(srv.pid),
                              "-o", str(raw_out)], capture_output=True, text=True)
        wall, cpu = time.perf_counter() - t0, cpu_seconds(srv.pid) - cpu0
        out, err = wrk.communicate(timeout=seconds + 60)
    if spy.returncode != 0 or not raw_out.exists():
        raise SystemExit(f"py-spy failed ({spy.returncode}): {spy.stderr[-1500:]}")
    from bench.load import parse_wrk

    res = parse_wrk(out)
    if not res["valid"]:
        raise SystemExit(f"the load had errors, no profile to trust: {res}")
    return round(res["per_s"] * wall), wall, cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 s of samples (default 20)")
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--rate", type=int, default=250, help="samples per second per thread")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--raw", type=Path, default=None,
                    help="analyse this saved py-spy raw record instead (with --requests)")
    ap.add_argument("--requests", type=int, default=None, help="requests in --raw's window")
    ap.add_argument("--save-raw", type=Path, default=None, help="keep the py-spy record here")
    a = ap.parse_args(argv)
    if a.raw is not None:
        if not a.requests:
            ap.error("--raw needs --requests")
        samples = parse_raw(a.raw.read_text())
        print(table(breakdown(samples, a.rate, a.requests), a.requests,
                    sum(samples.values()) / a.rate))
        return 0
    seconds = a.seconds or (5.0 if a.quick else 20.0)
    with tempfile.TemporaryDirectory() as tmp:
        raw_out = a.save_raw or Path(tmp) / "py-spy.txt"
        requests, wall, cpu = record(seconds, a.rate, a.concurrency, raw_out)
        samples = parse_raw(raw_out.read_text())
    print(f"/sentiment, one {len(SHORT_REVIEW)}-character review, wrk -t1 -c{a.concurrency}; "
          f"py-spy at {a.rate} Hz; server CPU {cpu:.2f} s in {wall:.1f} s "
          f"({cpu / requests * 1e6:.0f} us per request)")
    print(table(breakdown(samples, a.rate, requests, cpu), requests, wall))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
