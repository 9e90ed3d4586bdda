"""``python -m app``: run the service under uvicorn with the SEQSERVE_ settings.

With SEQSERVE_WORKERS > 1 the workers share one Prometheus multiprocess folder,
which must be in the environment before prometheus_client is first imported.
"""

from __future__ import annotations

import os
import shutil
import tempfile


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

    uvicorn.run("app.asgi:app", host=s.host, port=s.port, workers=s.workers,
                log_level=s.log_level.lower(), timeout_graceful_shutdown=s.shutdown_grace_s,
                access_log=False, lifespan="on")


if __name__ == "__main__":
    main()
