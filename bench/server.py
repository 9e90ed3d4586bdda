"""``python -m app`` as a subprocess on a free loopback port: the one launcher used by
the benchmark, the soak and the tests that need a real server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """The process's CPU time so far (user + system), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerProcess:
    """``python -m app`` on a free loopback port, its output in a log file.

    ``settings`` become SEQSERVE_* environment variables (``max_queue=4`` ->
    ``SEQSERVE_MAX_QUEUE=4``). Used as a context manager it waits for readiness and
    kills the process on exit if it is still running.
    """

    def __init__(self, models_dir: Path, *, ready_timeout_s: float = 60.0,
                 root: Path = ROOT, **settings: Any):
        self.root = Path(root)  # the checkout whose ``app`` runs (bench.ab: another one)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.models_dir = Path(models_dir)
        self.ready_timeout_s = ready_timeout_s
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("SEQSERVE_") and k != "PROMETHEUS_MULTIPROC_DIR"}
        env.update({"SEQSERVE_MODELS_DIR": str(self.models_dir), "SEQSERVE_HOST": "127.0.0.1",
                    "SEQSERVE_PORT": str(self.port), "SEQSERVE_LOG_LEVEL": "info"})
        for k, v in settings.items():
            env[f"SEQSERVE_{k.upper()}"] = (json.dumps(v) if isinstance(v, list | dict)
                                            else str(v).lower() if isinstance(v, bool) else str(v))
        self.env = env
        self._log = tempfile.NamedTemporaryFile(prefix="seqserve-", suffix=".log", delete=False)
        self.log_path = Path(self._log.name)
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServerProcess:
        self.proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=self.root, env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        return self

    def wait_ready(self) -> ServerProcess:
        assert self.proc is not None
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n"
                                   f"{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (OSError, urllib.error.HTTPError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not ready in {self.ready_timeout_s} s:\n{self.log()[-3000:]}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def get(self, path: str, timeout: float = 10.0):
        import httpx

        return httpx.get(self.url + path, timeout=timeout)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for the exit; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def __enter__(self) -> ServerProcess:
        try:
            return self.start().wait_ready()
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        self.log_path.unlink(missing_ok=True)
