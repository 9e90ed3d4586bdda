"""The pinned uvicorn's internals that the service builds on (docs/design.md says why it
keeps its own code there): ``GuardedHttpToolsProtocol`` (app/http/connections.py)
subclasses ``HttpToolsProtocol``, and ``python -m app`` runs several workers under a
subclass of ``Multiprocess`` (app/__main__.py). An upgrade that renames or reshapes any
of what they rely on fails here, before it fails in production."""

from __future__ import annotations

import asyncio
import inspect

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState
from uvicorn.supervisors.multiprocess import Multiprocess

from app.http.connections import GuardedHttpToolsProtocol

# the methods GuardedHttpToolsProtocol overrides and calls through super(), with the
# parameters it passes
OVERRIDDEN = {
    "connection_made": ["transport"], "connection_lost": ["exc"], "data_received": ["data"],
    "on_message_begin": [], "on_headers_complete": [], "on_body": ["body"],
    "on_message_complete": [], "shutdown": [], "pause_writing": [], "resume_writing": [],
}


def test_the_overridden_methods_of_httptoolsprotocol_keep_their_parameters():
    for name, params in OVERRIDDEN.items():
        base = getattr(HttpToolsProtocol, name, None)
        assert callable(base), f"HttpToolsProtocol.{name} is gone"
        assert list(inspect.signature(base).parameters)[1:] == params, name
        assert name in GuardedHttpToolsProtocol.__dict__, name


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def get_extra_info(self, name, default=None):  # noqa: ANN001, ANN201
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default)

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def test_the_state_the_guarded_protocol_reads_is_where_it_reads_it():
    """``connections`` (the connection cap), ``loop`` (deadlines), ``flow.read_paused``
    and ``flow.write_paused`` (deadlines pause), ``client``, ``url`` and ``headers`` (the
    header size), and the request cycle's ``keep_alive``, ``response_started`` and
    ``response_complete`` (graceful shutdown, what to answer on a deadline)."""

    async def app(scope, receive, send):  # noqa: ANN001, ANN202
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def drive() -> None:
        config = Config(app=app, lifespan="off", log_config=None)
        proto = GuardedHttpToolsProtocol(config=config, server_state=ServerState(),
                                         app_state={})
        transport = _Transport()
        proto.connection_made(transport)
        assert proto in proto.connections and proto.loop is asyncio.get_running_loop()
        assert proto.flow.read_paused is False and proto.flow.write_paused is False
        assert proto.client == ("127.0.0.1", 5000)
        proto.data_received(b"GET /x HTTP/1.1\r\nHost: a\r\nX-Long: " + b"v" * 50 + b"\r\n\r\n")
        assert proto.url == b"/x" and (b"x-long", b"v" * 50) in proto.headers
        cycle = proto.cycle
        assert cycle is not None and cycle.keep_alive is True
        assert cycle.response_started is False and cycle.response_complete is False
        for _ in range(20):  # the app runs as a task: let it answer
            await asyncio.sleep(0)
        assert cycle.response_started and cycle.response_complete
        assert transport.written.startswith(b"HTTP/1.1 204")
        proto.connection_lost(None)

    asyncio.run(drive())


def test_the_supervisor_dispatches_sighup_to_handle_hup():
    """app/__main__.py replaces ``handle_hup`` (restart every worker) with passing the
    signal on to the workers; the supervisor must still call it by that name."""
    assert callable(Multiprocess.__dict__.get("handle_hup"))
    source = inspect.getsource(Multiprocess.handle_signals)
    assert 'f"handle_{sig_name.lower()}"' in source
    assert list(inspect.signature(Multiprocess.__init__).parameters) == [
        "self", "config", "sockets"]
