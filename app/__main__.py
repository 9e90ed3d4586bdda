"""``python -m app``: run the service under uvicorn with the SEQSERVE_ settings.

With SEQSERVE_WORKERS > 1 the workers share one Prometheus multiprocess folder,
which must be in the environment before prometheus_client is first imported.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from types import FrameType


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)


def main() -> None:
    from app.config import Settings

    s = Settings()
    if s.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        d = tempfile.mkdtemp(prefix="seqserve-prom-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = d
    elif os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        d = os.environ["PROMETHEUS_MULTIPROC_DIR"]
        shutil.rmtree(d, ignore_errors=True)  # stale samples of a previous run
        os.makedirs(d, exist_ok=True)
    import uvicorn

    # uvicorn handles SIGTERM itself (stop accepting, finish in-flight requests within
    # the grace period, run the lifespan shutdown) and then raises the signal again for
    # the handler that was installed before it. With the default handler the process
    # would end "killed by SIGTERM" (exit 143) after a clean shutdown; this one makes a
    # completed graceful shutdown exit 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    # uvicorn's HTTP protocol with deadlines, a header-size limit and a connection cap
    # (app/connections.py); the cap is derived from the open-files limit, raised first.
    from app.connections import raise_open_files_limit

    raise_open_files_limit()
    uvicorn.run("app.asgi:app", host=s.host, port=s.port, workers=s.workers,
                log_level=s.log_level.lower(), timeout_graceful_shutdown=s.shutdown_grace_s,
                access_log=False, lifespan="on",
                http="app.connections:GuardedHttpToolsProtocol")


if __name__ == "__main__":
    main()
