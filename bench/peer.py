"""The LitServe peer (bench/litserve_peer.py, in its own venv) as a process, the sweep
that finds its best settings, and ``only``: the one server measured runs while the
others are stopped.

The sweep: ``fast_queue=True`` always; /sentiment over workers x max_batch_size x
batch_timeout (``sentiment_grid``) with a short wrk run each at one concurrency on the
IMDB mix; streamed /generate (LitServe's continuous-batching loop) over characters per
message. ``choose_best`` keeps the fastest valid trial (a trial with any error is
never chosen); the chosen settings are printed beside the figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp

from bench.inputs import MODELS, ROOT
from bench.server import free_port


class PeerProcess:
    """bench/litserve_peer.py in its own venv (LitServe pinned) on a free loopback
    port, in a process group of its own (LitServe starts worker processes), stopped
    with the whole group. ``options`` become its flags (``max_batch_size=4`` ->
    ``--max-batch-size 4``; ``fast_queue=False`` -> ``--no-fast-queue``)."""

    def __init__(self, python: Path, **options: object):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.options = options
        self.args = [str(python), str(ROOT / "bench" / "litserve_peer.py"),
                     "--models", str(MODELS)]
        for k, v in options.items():
            flag = k.replace("_", "-")
            if isinstance(v, bool):
                self.args.append(f"--{flag}" if v else f"--no-{flag}")
            else:
                self.args += [f"--{flag}", str(v)]
        self.env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc: subprocess.Popen | None = None

    def settings(self) -> dict:
        out = subprocess.run([*self.args, "--print-settings"], env=self.env, cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out)

    def __enter__(self) -> PeerProcess:
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
        Path(self.log.name).unlink(missing_ok=True)
        self.proc = None


@contextmanager
def nothing() -> Iterator[None]:
    yield None


@contextmanager
def only(active: str, procs: dict[str, tuple[int, bool]]) -> Iterator[None]:
    """Every server in ``procs`` (name -> (pid, whole process group?)) but ``active`` is
    stopped with SIGSTOP for the duration, then continued: an idle LitServe peer
    busy-polls its queues (measured: ~1.3 cores of 2), which would halve whatever ran
    beside it."""
    stopped = [(pid, group) for name, (pid, group) in procs.items() if name != active and pid]
    for pid, group in stopped:
        (os.killpg if group else os.kill)(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid, group in stopped:
            (os.killpg if group else os.kill)(pid, signal.SIGCONT)


def sentiment_grid(workers: tuple[int, ...] = (1, 2),
                   batch_sizes: tuple[int, ...] = (1, 4, 8, 16),
                   timeouts_ms: tuple[float, ...] = (0.0, 2.0, 5.0)) -> list[dict]:
    """Peer settings to try for /sentiment; a batch of 1 never waits, so it is tried
    once per worker count (with a 0 ms timeout)."""
    grid = []
    for w in workers:
        for bs in batch_sizes:
            for t in (0.0,) if bs == 1 else timeouts_ms:
                grid.append({"sentiment_workers": w, "max_batch_size": bs,
                             "batch_timeout_ms": t})
    return grid


def choose_best(trials: list[tuple[dict, dict]], key: str) -> tuple[dict, dict]:
    """The (settings, result) with the highest ``result[key]`` among the valid trials
    (no error); ValueError when none is valid."""
    valid = [t for t in trials if t[1].get("valid") and t[1].get(key) is not None]
    if not valid:
        raise ValueError(f"no valid trial among {len(trials)}: every one had errors")
    return max(valid, key=lambda t: t[1][key])


def run_sweep(python: Path, grid: list[dict], measure: Callable[[str], dict],
              log: Callable[[str], None] = print) -> list[tuple[dict, dict]]:
    """Start the peer with each settings of ``grid`` (fast_queue on), ``measure(url)``
    it, stop it; a peer that fails to start is a trial with an error, not the end."""
    trials = []
    for settings in grid:
        try:
            with PeerProcess(python, fast_queue=True, **settings) as peer:
                result = measure(peer.url)
        except (RuntimeError, OSError, TimeoutError, subprocess.SubprocessError,
                aiohttp.ClientError) as e:
            result = {"valid": False, "errors": 1, "failed": str(e)[-300:]}
        trials.append((settings, result))
        log(f"peer sweep {settings}: {result}")
    return trials


def stream_measure(prompt_list: list[str], streams: int, new_chars: int) -> Callable:
    """A sweep's measure for streamed /generate: one request per stream."""
    from bench.load import load_generate_stream

    def measure(url: str) -> dict:
        asyncio.run(load_generate_stream(url, prompt_list, 4, 1, new_chars))  # warm
        return asyncio.run(load_generate_stream(url, prompt_list, streams, 1, new_chars))

    return measure
