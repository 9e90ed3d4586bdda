"""``python -m app``: run the service under uvicorn with the SEQSERVE_ settings.

``python -m app --help`` lists the settings (name, default, meaning) and exits 0. A bad
setting, or a models folder that is not there, ends the process before uvicorn starts
with one line on stderr naming the variable and what it accepts, and exit code 2 (a
configuration mistake, not a crash: no traceback to scroll through). The models are
then loaded and checked (app/engine/registry.py) before uvicorn starts: a model folder that
fails a check ends the process the same way, one line naming the folder and the check,
exit code 3 (uvicorn's for a failed start-up). With one worker the app takes over the
models loaded here; with several, each worker loads them again.

With SEQSERVE_WORKERS > 1 the workers share one Prometheus multiprocess folder,
which must be in the environment before prometheus_client is first imported.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    import uvicorn

    from app.config import Settings

EXIT_CONFIG = 2  # the usual exit code of a command-line usage error
EXIT_MODELS = 3  # a model folder fails its checks (uvicorn's code for a failed start-up)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)


def _fail(message: str, code: int = EXIT_CONFIG) -> NoReturn:
    """One line on stderr (a JSON object when SEQSERVE_LOG_FORMAT=json, so that a log
    pipeline reading JSON sees it too), then exit ``code`` (2)."""
    from app.ops.logs import printable

    line = printable(message, 1000)
    if os.environ.get("SEQSERVE_LOG_FORMAT", "").strip().lower() == "json":
        line = json.dumps({"level": "CRITICAL", "logger": "seqserve.config", "message": line})
    print(line, file=sys.stderr, flush=True)
    raise SystemExit(code)


def load_settings() -> Settings:
    """The settings from the environment and ``.env``, or exit 2 with one line per bad
    variable: its name, the value given, and what it accepts."""
    from pydantic import ValidationError

    from app.config import Settings, allowed
    from app.ops.logs import printable

    try:
        return Settings()
    except ValidationError as e:
        lines = []
        for err in e.errors():
            name = str(err["loc"][0]) if err.get("loc") else "?"
            var = f"SEQSERVE_{name.upper()}"
            value = err.get("input")
            given = f"={printable(repr(value), 80)}" if isinstance(value, str | int | float) else ""
            # pydantic's own words repeat what ``allowed`` says, except for our validators'
            why = (" (" + str(err.get("msg", "")).removeprefix("Value error, ") + ")"
                   if err.get("type") == "value_error" else "")
            expected = allowed(name) if name in Settings.model_fields else "a valid value"
            lines.append(f"{var}{given} is not valid{why}: expected {expected}")
        _fail("; ".join(dict.fromkeys(lines)))


def check_models_dir(s: Settings) -> None:
    """The models folder exists and no model name is given by two of its folders (the
    rest, the files themselves, is checked as the models load)."""
    from seqcore.modelfolder import ModelFolderError, scan

    root = Path(s.models_dir)
    if not root.is_dir():
        where = "" if root.is_absolute() else f" (relative to the working directory {os.getcwd()})"
        _fail(f"SEQSERVE_MODELS_DIR: models folder {root.resolve()} does not exist{where}; "
              "set SEQSERVE_MODELS_DIR to the folder holding the model folders")
    try:
        scan(root)
    except ModelFolderError as e:
        _fail(f"SEQSERVE_MODELS_DIR: {e}")


def check_models(s: Settings) -> None:
    """Loads and checks every model folder (``Registry.load``: the checks a reload runs,
    the default models) with the service's logging, or one line and exit 3 (exit 2 for
    SEQSERVE_DEFAULT_MODELS naming a model that is not loaded). With one worker the
    app's start-up takes these models over instead of loading them again."""
    from app.engine.registry import DefaultModelError, Registry
    from app.ops.logs import configure_logging
    from seqcore.tasks import ModelLoadError

    configure_logging(s.log_level, s.log_format)
    try:
        registry = Registry.load(s)
    except DefaultModelError as e:
        _fail(str(e))
    except ModelLoadError as e:
        _fail(str(e), EXIT_MODELS)
    if s.workers == 1:
        Registry.preloaded = (Path(s.models_dir), registry)


def check_tracing(s: Settings) -> None:
    from app.ops import tracing

    if s.otel and not tracing.available():
        _fail(tracing.INSTALL_HINT)


def help_text() -> str:
    from app.config import Settings

    rows = []
    for name, f in Settings.model_fields.items():
        default = f.default if f.default_factory is None else f.default_factory()  # type: ignore[call-arg]
        default = getattr(default, "value", default)
        rows.append((f"SEQSERVE_{name.upper()}", str(default), f.description or ""))
    width = max(len(r[0]) for r in rows)
    dwidth = max(len(r[1]) for r in rows)
    out = ["usage: python -m app [--help]", "",
           "Serves the models under SEQSERVE_MODELS_DIR over HTTP (uvicorn). Settings come",
           "from the environment or a .env file in the working directory:", "",
           f"{'variable'.ljust(width)}  {'default'.ljust(dwidth)}  meaning"]
    out += [f"{n.ljust(width)}  {d.ljust(dwidth)}  {m}" for n, d, m in rows]
    return "\n".join(out)


def _serve_workers(config: uvicorn.Config) -> None:
    """Several workers under uvicorn's supervisor, which on SIGHUP would replace every
    worker; this one passes the signal on instead, so each worker reloads its models in
    place (app/engine/reload.py) and reports a refused version like a single process
    does. A subclass of uvicorn's public ``Multiprocess`` whose ``handle_hup`` (the
    supervisor dispatches each signal to ``handle_<name>``) is replaced;
    tests/http/test_uvicorn_pins.py fails if the pinned uvicorn stops doing so."""
    import logging

    from uvicorn.supervisors.multiprocess import Multiprocess

    log = logging.getLogger("uvicorn.error")

    class ReloadingSupervisor(Multiprocess):
        def handle_hup(self) -> None:
            log.info("Received SIGHUP, passing it on to the workers (model reload).")
            for process in self.processes:
                if process.pid is not None and process.process.is_alive():
                    os.kill(process.pid, signal.SIGHUP)

    ReloadingSupervisor(config, sockets=[config.bind_socket()]).run()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        try:
            print(help_text(), flush=True)
        except BrokenPipeError:  # `python -m app --help | head`
            sys.stderr.close()
        return
    if args:
        _fail(f"python -m app takes no arguments (got {' '.join(args)}); settings are "
              "SEQSERVE_* environment variables, see python -m app --help")
    s = load_settings()
    check_models_dir(s)
    check_tracing(s)
    if s.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        d = tempfile.mkdtemp(prefix="seqserve-prom-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = d
    elif os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        d = os.environ["PROMETHEUS_MULTIPROC_DIR"]
        shutil.rmtree(d, ignore_errors=True)  # stale samples of a previous run
        os.makedirs(d, exist_ok=True)
    check_models(s)  # after PROMETHEUS_MULTIPROC_DIR: the app's modules may import the client
    import uvicorn

    from app.ops.logs import uvicorn_log_config

    # uvicorn handles SIGTERM itself (stop accepting, finish in-flight requests within
    # the grace period, run the lifespan shutdown) and then raises the signal again for
    # the handler that was installed before it. With the default handler the process
    # would end "killed by SIGTERM" (exit 143) after a clean shutdown; this one makes a
    # completed graceful shutdown exit 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    # SIGHUP (reload the models) is handled by the app's lifespan, in the process that
    # serves (app/main.py). Until the lifespan installs it, and in uvicorn's supervisor
    # with several workers (which restarts its workers on SIGHUP), it must not be the
    # default action, which ends the process.
    if s.workers == 1:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # uvicorn's HTTP protocol with deadlines, a header-size limit and a connection cap
    # (app/http/connections.py); the cap is derived from the open-files limit, raised first.
    from app.http.connections import raise_open_files_limit

    raise_open_files_limit()
    options = dict(host=s.host, port=s.port, workers=s.workers, log_level=s.log_level,
                   timeout_graceful_shutdown=s.shutdown_grace_s, access_log=False,
                   lifespan="on", log_config=uvicorn_log_config(s),
                   http="app.http.connections:GuardedHttpToolsProtocol")
    if s.workers == 1:
        uvicorn.run("app.asgi:app", **options)
    else:
        _serve_workers(uvicorn.Config("app.asgi:app", **options))


if __name__ == "__main__":
    main()
