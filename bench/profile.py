"""Where a short /sentiment request's time goes: the server under wrk load (one fixed
~450-character review, c=32), sampled by py-spy, stacks mapped to stages, printed as
microseconds of CPU per request per stage.

    python -m bench.profile            # 20 s of samples at 250 Hz
    python -m bench.profile --quick    # 5 s
    python -m bench.profile --raw FILE --requests N --rate HZ   # a saved py-spy record

py-spy (in the venv; root or CAP_SYS_PTRACE) records ``--format raw`` (collapsed stacks)
without pausing the server (``--nonblocking``). Each sample goes to the stage of the
innermost frame that a rule of ``STAGES`` matches (by module path, then function
name): the ORT call inside a worker thread is "ORT call" although the thread's outer
frames are concurrent.futures; a frame no rule matches leaves the sample to an outer
frame's stage, and a stack with no match at all is "other (unattributed)", printed as
such. A sample whose innermost frame is a blocking wait (``Condition.wait``, an idle
executor worker) is a thread asleep that py-spy's idle detection missed: counted as
"waiting" and left out of the CPU shares.

py-spy counts a thread as busy while it is runnable but not running, so on a busy
machine the sampled thread-time exceeds the CPU the process used. The breakdown
therefore takes each stage's *share* of the CPU samples and scales it to the server's
measured CPU time per request (/proc: user + system), which the stages then sum to;
both figures are printed.
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

from bench.inputs import MODELS, SHORT_REVIEW, review_texts
from bench.load import SentimentLoad, wrk_path
from bench.server import ServerProcess, cpu_seconds

OTHER = "other (unattributed)"
WAITING = "waiting (blocked; not CPU)"
# innermost frames that are a thread asleep: a condition wait, an idle executor worker
_WAITS = re.compile(r"^((Condition|Event|Semaphore|Barrier)\.)?wait \((.*/)?threading\.py"
                    r"|^_worker \((.*/)?concurrent/futures/thread\.py"
                    r"|^(DefaultSelector|EpollSelector)?\.?select \((.*/)?selectors\.py")
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
    ("event loop (asyncio/uvloop, and the C code under it: sockets, callbacks)",
     r"asyncio/|uvloop|selectors\.py", r""),
)
# stages broken down by the frame that decided them (which layer, which function)
MIDDLEWARE_DETAIL = ("our ASGI middleware", "FastAPI/Starlette routing, dependencies", OTHER)
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


def stack_frame(stack: str) -> tuple[str, str]:
    """(stage, the frame that decided it) of a collapsed stack (root first,
    ``;``-separated): ``WAITING`` when its innermost frame is a blocking wait, else its
    innermost frame with a stage; ``OTHER`` (and the innermost frame) when none has one."""
    frames = [f.strip() for f in stack.split(";")]
    if _WAITS.match(frames[-1]):
        return WAITING, frames[-1]
    for frame in reversed(frames):
        stage = frame_stage(frame)
        if stage is not None:
            return stage, frame
    return OTHER, frames[-1]


def stack_stage(stack: str) -> str:
    return stack_frame(stack)[0]


def _function(frame: str) -> str:
    m = _FRAME.match(frame)
    return f"{m.group('func')} ({m.group('path')})" if m else frame


def parse_raw(text: str, detail: Counter[tuple[str, str]] | None = None) -> Counter[str]:
    """py-spy ``--format raw`` (``stack count`` per line) -> samples per stage;
    ``detail`` (if given) gets the samples per (stage, deciding function)."""
    out: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            stage, frame = stack_frame(stack)
            out[stage] += int(count)
            if detail is not None:
                detail[(stage, _function(frame))] += int(count)
    return out


def detail_table(detail: Counter[tuple[str, str]], samples: Counter[str], stage: str,
                 us_of_stage: float, top: int = 8) -> str:
    """The functions that a stage's samples ended in, with their part of its us."""
    n_stage = samples.get(stage, 0)
    rows = [(fn, n) for (st, fn), n in detail.most_common() if st == stage][:top]
    if not n_stage or not rows:
        return ""
    lines = [f"{stage}, by the frame that decided it:", "", "| frame | samples | us per request |",
             "|---|---:|---:|"]
    lines += [f"| {fn} | {n} | {n / n_stage * us_of_stage:.0f} |" for fn, n in rows]
    return "\n".join(lines)


def breakdown(samples: Counter[str], requests: int, cpu_s: float) -> list[tuple[str, int, float, float]]:
    """(stage, samples, share of the CPU samples, microseconds per request) per stage,
    largest first, ``OTHER`` always listed: each stage's share of the samples that are
    not ``WAITING``, times ``cpu_s`` (the CPU time to divide) per request."""
    busy = {k: v for k, v in samples.items() if k != WAITING}
    busy.setdefault(OTHER, 0)
    total = sum(busy.values())
    return [(stage, n, n / total if total else 0.0,
             (n / total if total else 0.0) * cpu_s / requests * 1e6)
            for stage, n in sorted(busy.items(), key=lambda kv: -kv[1])]


def table(rows: list[tuple[str, int, float, float]], samples: Counter[str], rate_hz: float,
          requests: int, cpu_s: float | None) -> str:
    sampled = sum(n for _, n, _, _ in rows) / rate_hz
    lines = ["| stage | samples | share | us per request |", "|---|---:|---:|---:|"]
    lines += [f"| {s} | {n} | {share:.0%} | {us:.0f} |" for s, n, share, us in rows]
    lines.append(f"| all stages | {sum(n for _, n, _, _ in rows)} | 100% | "
                 f"{sum(us for *_, us in rows):.0f} |")
    lines += ["", f"Samples asleep in a blocking wait, left out: {samples.get(WAITING, 0)}. "
              f"Sampled busy thread-time: {sampled / requests * 1e6:.0f} us per request"
              + (f"; measured CPU: {cpu_s / requests * 1e6:.0f} us per request "
                 "(the us column is each share of the measured CPU)." if cpu_s is not None
                 else "; no measured CPU (--raw): the us column is the sampled time.")]
    return "\n".join(lines)


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: `make profile` installs it in the venv "
                         "(or pip install py-spy==0.4.3)")
    return found


def record(seconds: float, rate: int, concurrency: int, raw_out: Path,
           texts: list[str]) -> tuple[int, float, float]:
    """Server + wrk (POSTing ``texts`` in turn) + py-spy: -> (requests during the
    recording, its seconds, the server's CPU seconds meanwhile). The samples go to
    ``raw_out``."""
    load = SentimentLoad(texts)
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
    ap.add_argument("--mix", action="store_true",
                    help="the IMDB length mix of make bench instead of the short review")
    a = ap.parse_args(argv)
    if a.raw is not None:
        if not a.requests:
            ap.error("--raw needs --requests")
        samples = parse_raw(a.raw.read_text())
        busy_s = sum(n for k, n in samples.items() if k != WAITING) / a.rate
        print(table(breakdown(samples, a.requests, busy_s), samples, a.rate, a.requests, None))
        return 0
    seconds = a.seconds or (5.0 if a.quick else 20.0)
    detail: Counter[tuple[str, str]] = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        raw_out = a.save_raw or Path(tmp) / "py-spy.txt"
        texts = review_texts(1000) if a.mix else [SHORT_REVIEW]
        requests, wall, cpu = record(seconds, a.rate, a.concurrency, raw_out, texts)
        samples = parse_raw(raw_out.read_text(), detail)
    what = "the IMDB length mix" if a.mix else f"one {len(SHORT_REVIEW)}-character review"
    print(f"/sentiment, {what}, wrk -t1 -c{a.concurrency}: "
          f"{requests} requests in {wall:.1f} s ({requests / wall:.0f} req/s); py-spy at "
          f"{a.rate} Hz; server CPU {cpu:.2f} s ({cpu / requests * 1e6:.0f} us per request)\n")
    rows = breakdown(samples, requests, cpu)
    print(table(rows, samples, a.rate, requests, cpu))
    us = {stage: x for stage, _, _, x in rows}
    for stage in MIDDLEWARE_DETAIL:
        text = detail_table(detail, samples, stage, us.get(stage, 0.0))
        if text:
            print("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
