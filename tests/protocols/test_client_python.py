"""The Python client in clients/python: every call against a real server on loopback
(tiny random models), sync and async, typed results, streamed text equal to the
answer, the API key, errors; retries on 503 (Retry-After honoured and capped) and
timeouts with a scripted transport; and that it builds as a wheel depending on httpx
only.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.server import ROOT, ServerProcess

sys.path.insert(0, str(ROOT / "clients" / "python"))
from seqserve_client import (  # noqa: E402
    AsyncClient,
    Attention,
    Client,
    Generation,
    Sentiment,
    SeqserveConnectionError,
    SeqserveError,
    SeqserveTimeout,
)
from seqserve_client._client import retry_delay  # noqa: E402

KEY = "test-key-0123456789"


@pytest.fixture(scope="module")
def server(tiny_models_dir: Path) -> Iterator[ServerProcess]:
    with ServerProcess(tiny_models_dir, api_key=KEY, max_new_chars=300,
                       log_level="warning") as srv:
        yield srv


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url, api_key=KEY, timeout=30) as c:
        yield c


def test_sync_calls_give_typed_results(client: Client, server: ServerProcess):
    assert client.live() and client.ready()
    s = client.sentiment("good great movie")
    assert isinstance(s, Sentiment) and s.label in ("positive", "negative")
    assert abs(s.probabilities.positive + s.probabilities.negative - 1) < 1e-6
    rest = httpx.post(server.url + "/sentiment", json={"text": "good great movie"},
                      headers={"authorization": f"Bearer {KEY}"}).json()
    assert s.probabilities.positive == rest["probabilities"]["positive"]
    batch = client.sentiment_batch(["good", "awful bad"])
    assert [type(b) for b in batch] == [Sentiment, Sentiment]
    a = client.attention("the plot was good")
    assert isinstance(a, Attention) and [t.text for t in a.tokens] == ["the", "plot", "was", "good"]
    g = client.generate("the ", max_new_chars=30, seed=5, temperature=0.8)
    assert isinstance(g, Generation) and len(g.text) == 30 and g.seed == 5
    assert g.finish_reason == "length" and g.prompt_chars == 4
    models = {m.name: m for m in client.models()}
    assert set(models) == {"sentiment", "chargen"} and models["chargen"].task == "text-generation"


def test_stream_iterates_the_same_text(client: Client):
    whole = client.generate("a movie ", max_new_chars=80, seed=9, top_k=5)
    stream = client.generate_stream("a movie ", max_new_chars=80, seed=9, top_k=5)
    chunks = list(stream)
    assert "".join(chunks) == whole.text and len(chunks) >= 1
    assert stream.result == whole  # the finish: reason, seed, counts and the whole text
    with client.generate_stream("x", max_new_chars=200) as early:  # stopping early is fine
        next(iter(early))


def test_drawn_seed_replays(client: Client):
    g = client.generate("it was ", max_new_chars=20)
    assert 0 <= g.seed < 2**53
    assert client.generate("it was ", max_new_chars=20, seed=g.seed).text == g.text


def test_errors_raise_seqserve_error(client: Client, server: ServerProcess):
    with pytest.raises(SeqserveError) as e:
        client.generate("x", max_new_chars=301)
    assert e.value.status == 422 and e.value.code == "validation_error"
    assert "max_new_chars" in e.value.message and e.value.request_id
    with pytest.raises(SeqserveError) as e:
        client.sentiment("x", model="nope")
    assert e.value.status == 404
    with Client(server.url, api_key="wrong") as bad, pytest.raises(SeqserveError) as e:
        bad.sentiment("good")
    assert e.value.status == 401 and e.value.code == "unauthorized"


def test_async_client(server: ServerProcess):
    async def main() -> None:
        async with AsyncClient(server.url, api_key=KEY) as c:
            assert await c.ready()
            s, g = await asyncio.gather(c.sentiment("good"),
                                        c.generate("the ", max_new_chars=40, seed=2))
            assert isinstance(s, Sentiment) and len(g.text) == 40
            stream = await c.generate_stream("the ", max_new_chars=40, seed=2)
            chunks = [chunk async for chunk in stream]
            assert "".join(chunks) == g.text and stream.result == g
            assert {m.name for m in await c.models()} == {"sentiment", "chargen"}
            with pytest.raises(SeqserveError) as e:
                await c.generate("", max_new_chars=5)
            assert e.value.status == 422

    asyncio.run(main())


def _scripted(answers: list[httpx.Response]) -> tuple[httpx.MockTransport, list[str]]:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization", ""))
        return answers.pop(0)

    return httpx.MockTransport(handler), seen


OK = {"label": "positive", "score": 0.9, "probabilities": {"negative": 0.1, "positive": 0.9},
      "model": "sentiment", "model_version": "1", "tokens_read": 1, "truncated": False}
BUSY = {"error": {"code": "overloaded", "message": "queue full", "status": 503,
                  "request_id": "r"}}


def test_retries_503_honouring_retry_after_with_a_cap():
    transport, seen = _scripted([
        httpx.Response(503, json=BUSY, headers={"Retry-After": "2"}),
        httpx.Response(503, json=BUSY, headers={"Retry-After": "3600"}),  # capped
        httpx.Response(503, json=BUSY),  # no header: backoff
        httpx.Response(200, json=OK)])
    slept: list[float] = []
    with Client("http://x", api_key="k", transport=transport, max_retries=3,
                max_retry_wait=5, sleep=slept.append) as c:
        assert c.sentiment("good").score == 0.9
    assert slept == [2.0, 5.0, 2.0] and seen == ["Bearer k"] * 4

    transport, _ = _scripted([httpx.Response(503, json=BUSY, headers={"Retry-After": "1"})] * 3)
    slept = []
    with Client("http://x", transport=transport, max_retries=2, sleep=slept.append) as c:
        with pytest.raises(SeqserveError) as e:
            c.sentiment("good")
    assert e.value.status == 503 and e.value.retry_after == 1.0 and slept == [1.0, 1.0]

    transport, _ = _scripted([httpx.Response(422, json=BUSY)])  # other errors: no retry
    with Client("http://x", transport=transport, sleep=slept.append) as c:
        with pytest.raises(SeqserveError):
            c.sentiment("good")


def test_async_retries():
    answers = [httpx.Response(503, json=BUSY, headers={"Retry-After": "0.5"}),
               httpx.Response(200, json=OK)]
    slept: list[float] = []

    async def fake_sleep(s: float) -> None:
        slept.append(s)

    async def main() -> None:
        async with AsyncClient("http://x", transport=httpx.MockTransport(
                lambda r: answers.pop(0)), sleep=fake_sleep) as c:
            assert (await c.sentiment("good")).label == "positive"

    asyncio.run(main())
    assert slept == [0.5]


def test_retry_after_as_http_date_and_garbage():
    r = httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert retry_delay(r, 0, 10) == 0.0  # in the past
    assert retry_delay(httpx.Response(503, headers={"Retry-After": "soon"}), 2, 10) == 2.0


def test_timeout(server: ServerProcess):
    with Client(server.url, api_key=KEY, timeout=0.001, max_retries=0) as c:
        with pytest.raises(SeqserveTimeout) as e:
            c.generate("the ", max_new_chars=300)
    assert isinstance(e.value, SeqserveError) and e.value.status == 0
    assert e.value.code == "timeout" and isinstance(e.value.__cause__, httpx.TimeoutException)


def _refused_url() -> str:
    """A loopback port with nothing listening: connecting is refused at once."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_a_server_that_is_down_raises_the_clients_own_connection_error():
    url = _refused_url()
    with Client(url, max_retries=0) as c:
        for call in (lambda: c.sentiment("good"), lambda: c.models(),
                     lambda: list(c.generate_stream("the ", max_new_chars=5))):
            with pytest.raises(SeqserveConnectionError) as e:
                call()
            assert e.value.status == 0 and e.value.code == "connection_error"
            assert isinstance(e.value, SeqserveError)  # one except clause catches all
            assert isinstance(e.value.__cause__, httpx.ConnectError)
            assert url.removeprefix("http://") in e.value.message
        assert c.live() is False and c.ready() is False

    async def main() -> None:
        async with AsyncClient(url, max_retries=0) as c:
            with pytest.raises(SeqserveConnectionError):
                await c.generate("the ", max_new_chars=5)
            assert await c.live() is False

    asyncio.run(main())


def test_a_server_that_does_not_answer_raises_the_clients_own_timeout():
    import socket

    with socket.socket() as listener:  # accepts connections (backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with Client(url, timeout=0.3, max_retries=0) as c, \
                pytest.raises(SeqserveTimeout) as e:
            c.sentiment("good")
        assert isinstance(e.value.__cause__, httpx.ReadTimeout)

        async def main() -> None:
            async with AsyncClient(url, timeout=0.3, max_retries=0) as c:
                with pytest.raises(SeqserveTimeout):
                    await c.sentiment("good")

        asyncio.run(main())


def test_a_stream_cut_mid_way_raises_a_connection_error():
    body = (b'data: {"text": "ab", "finish_reason": null}\n\n')

    def handler(request: httpx.Request) -> httpx.Response:
        def chunks():
            yield body
            raise httpx.RemoteProtocolError("peer closed connection", request=request)
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              content=chunks())

    with Client("http://seqserve.test", transport=httpx.MockTransport(handler)) as c:
        stream = c.generate_stream("x")
        assert next(iter(stream)) == "ab"
        with pytest.raises(SeqserveConnectionError) as e:
            next(iter(stream))
        assert isinstance(e.value.__cause__, httpx.RemoteProtocolError)


def test_error_shapes_of_every_protocol_become_seqserve_errors():
    for body, code, message in [
            ({"error": {"code": "validation_error", "message": "m", "status": 422}},
             "validation_error", "m"),
            ({"error": {"message": "bad", "type": "invalid_request_error", "param": "x",
                        "code": "validation_error"}}, "validation_error", "bad"),  # OpenAI
            ({"error": "no such model"}, "error", "no such model"),  # V2
            ("<html>bad gateway</html>", "http_error", "HTTP 502")]:
        def handler(request: httpx.Request, body=body) -> httpx.Response:
            if isinstance(body, str):
                return httpx.Response(502, text=body)
            return httpx.Response(400, json=body)

        with Client("http://seqserve.test", transport=httpx.MockTransport(handler)) as c, \
                pytest.raises(SeqserveError) as e:
            c.sentiment("x")
        assert (e.value.code, e.value.message) == (code, message)


def test_builds_as_a_wheel_depending_on_httpx_only(tmp_path: Path):
    pytest.importorskip("setuptools")  # offline build: the venv's own setuptools
    # built from a copy: setuptools leaves build/ and *.egg-info beside the sources
    src = tmp_path / "src"
    shutil.copytree(ROOT / "clients" / "python", src,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(src)], check=True, timeout=120)
    (wheel,) = tmp_path.glob("seqserve_client-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "seqserve_client/py.typed" in names and "seqserve_client/_client.py" in names
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist")]
    assert requires == ["Requires-Dist: httpx>=0.27"]
