"""The sync and async clients. Both build the same requests and parse the same
answers (``_Base``); only sending and sleeping differ. httpx's transport errors are
raised as this package's (``_transport_error``): ``SeqserveTimeout`` for a timeout,
``SeqserveConnectionError`` for the rest."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx

from seqserve_client._types import (
    Attention,
    Generation,
    ModelInfo,
    Sentiment,
    SeqserveConnectionError,
    SeqserveError,
    SeqserveTimeout,
)

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 60.0
USER_AGENT = "seqserve-client/0.1.0"


def retry_delay(response: httpx.Response, attempt: int, cap: float) -> float:
    """Seconds to wait before retrying a 503: its Retry-After (seconds or an HTTP date),
    else 0.5 s doubled per attempt; never more than ``cap``."""
    value = response.headers.get("retry-after", "").strip()
    delay: float | None = None
    if value:
        try:
            delay = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
                delay = (when - datetime.now(UTC)).total_seconds()
            except (TypeError, ValueError):
                delay = None
    if delay is None:
        delay = 0.5 * 2**attempt
    return max(0.0, min(delay, cap))


def _transport_error(exc: httpx.TransportError, what: str) -> SeqserveError:
    """httpx's transport error as this package's: a timeout or a connection error."""
    if isinstance(exc, httpx.TimeoutException):
        return SeqserveTimeout(f"{what}: no answer in time ({type(exc).__name__}: {exc})")
    return SeqserveConnectionError(f"{what}: {type(exc).__name__}: {exc}")


@contextmanager
def _transport(what: str) -> Iterator[None]:
    try:
        yield
    except httpx.TransportError as exc:
        raise _transport_error(exc, what) from exc


@asynccontextmanager
async def _atransport(what: str) -> AsyncIterator[None]:
    try:
        yield
    except httpx.TransportError as exc:
        raise _transport_error(exc, what) from exc


def _error(response: httpx.Response) -> SeqserveError:
    try:
        body = response.json()
    except ValueError:
        body = None
    ra = response.headers.get("retry-after")
    try:
        retry_after = float(ra) if ra else None
    except ValueError:
        retry_after = None
    return SeqserveError.from_body(response.status_code, body,
                                   response.headers.get("x-request-id"), retry_after)


class _SSE:
    """Server-Sent Events from lines: ``feed`` returns (event, data) at each blank line."""

    def __init__(self) -> None:
        self.event: str | None = None
        self.data: list[str] = []

    def feed(self, line: str) -> tuple[str | None, str] | None:
        if not line:
            if not self.data:
                self.event = None
                return None
            out = (self.event, "\n".join(self.data))
            self.event, self.data = None, []
            return out
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        return None


class _StreamState:
    """What a generation stream has said so far; ``on_event`` returns the next text."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.result: Generation | None = None

    def on_event(self, event: str | None, data: str) -> str | None:
        obj = json.loads(data)
        if event == "error":
            err = obj.get("error", {}) if isinstance(obj, dict) else {}
            raise SeqserveError.from_body(int(err.get("status", 500)), obj)
        if obj.get("finish_reason") is None:
            self.parts.append(obj["text"])
            return obj["text"]
        self.parts.append(obj.get("text", ""))
        self.result = Generation.from_json(obj, text="".join(self.parts))
        return None

    def incomplete(self) -> SeqserveError:
        return SeqserveError(502, "incomplete_stream", "the stream ended before its last event")


class TextStream:
    """Iterates over the text chunks of a streamed generation; ``result`` is the whole
    Generation once the stream has ended. Close it (or use ``with``) to stop early."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._state = _StreamState()
        self._chunks = self._iterate()

    @property
    def result(self) -> Generation | None:
        return self._state.result

    def _iterate(self) -> Iterator[str]:
        sse = _SSE()
        try:
            with _transport(f"reading the stream of {self._response.request.url}"):
                for line in self._response.iter_lines():
                    ev = sse.feed(line)
                    if ev is None:
                        continue
                    text = self._state.on_event(*ev)
                    if text:
                        yield text
                    if self._state.result is not None:
                        return
            raise self._state.incomplete()
        finally:
            self._response.close()

    def __iter__(self) -> Iterator[str]:
        return self._chunks

    def __next__(self) -> str:
        return next(self._chunks)

    def close(self) -> None:
        self._chunks.close()
        self._response.close()

    def __enter__(self) -> TextStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncTextStream:
    """``TextStream`` for ``async for``."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._state = _StreamState()
        self._chunks = self._iterate()

    @property
    def result(self) -> Generation | None:
        return self._state.result

    async def _iterate(self) -> AsyncIterator[str]:
        sse = _SSE()
        try:
            async with _atransport(f"reading the stream of {self._response.request.url}"):
                async for line in self._response.aiter_lines():
                    ev = sse.feed(line)
                    if ev is None:
                        continue
                    text = self._state.on_event(*ev)
                    if text:
                        yield text
                    if self._state.result is not None:
                        return
            raise self._state.incomplete()
        finally:
            await self._response.aclose()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._chunks

    async def __anext__(self) -> str:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        await self._chunks.aclose()
        await self._response.aclose()

    async def __aenter__(self) -> AsyncTextStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _Base:
    def __init__(self, api_key: str | None, max_retries: int, max_retry_wait: float) -> None:
        if max_retries < 0 or max_retry_wait < 0:
            raise ValueError("max_retries and max_retry_wait must be >= 0")
        self.max_retries, self.max_retry_wait = max_retries, max_retry_wait
        self.headers = {"user-agent": USER_AGENT}
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"

    @staticmethod
    def _generate_body(prompt: str, *, max_new_chars: int | None, temperature: float | None,
                       top_k: int | None, top_p: float | None, seed: int | None,
                       stop: list[str] | None, model: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"prompt": prompt}
        for k, v in (("max_new_chars", max_new_chars), ("temperature", temperature),
                     ("top_k", top_k), ("top_p", top_p), ("seed", seed), ("stop", stop),
                     ("model", model)):
            if v is not None:
                body[k] = v
        return body

    @staticmethod
    def _with_model(body: dict[str, Any], model: str | None) -> dict[str, Any]:
        return body if model is None else {**body, "model": model}


class Client(_Base):
    """Synchronous client.

    ``timeout``: seconds (or an ``httpx.Timeout``) for connecting, and for each read
    (between two chunks of a stream). ``max_retries``: retries of a 503, each after
    its Retry-After, at most ``max_retry_wait`` seconds. ``transport``: an httpx
    transport (tests, proxies)."""

    def __init__(self, base_url: str = DEFAULT_URL, *, api_key: str | None = None,
                 timeout: float | httpx.Timeout = DEFAULT_TIMEOUT, max_retries: int = 3,
                 max_retry_wait: float = 10.0, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(api_key, max_retries, max_retry_wait)
        self._http = httpx.Client(base_url=base_url, timeout=timeout, headers=self.headers,
                                  transport=transport)
        self._sleep = sleep

    def _send(self, method: str, path: str, body: Any = None, *,
              stream: bool = False) -> httpx.Response:
        attempt = 0
        while True:
            request = self._http.build_request(method, path, json=body)
            with _transport(f"{method} {request.url}"):
                response = self._http.send(request, stream=stream)
                if response.status_code < 400:
                    return response
                response.read()
                response.close()
            if response.status_code == 503 and attempt < self.max_retries:
                self._sleep(retry_delay(response, attempt, self.max_retry_wait))
                attempt += 1
                continue
            raise _error(response)

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        response = self._send(method, path, body)
        with _transport(f"{method} {response.request.url}"):
            return response.json()

    def sentiment(self, text: str, *, model: str | None = None) -> Sentiment:
        return Sentiment.from_json(self._json("POST", "/sentiment",
                                              self._with_model({"text": text}, model)))

    def sentiment_batch(self, texts: list[str], *, model: str | None = None) -> list[Sentiment]:
        d = self._json("POST", "/sentiment", self._with_model({"texts": list(texts)}, model))
        return [Sentiment.from_json(r) for r in d["results"]]

    def attention(self, text: str, *, model: str | None = None) -> Attention:
        return Attention.from_json(self._json("POST", "/attention",
                                              self._with_model({"text": text}, model)))

    def generate(self, prompt: str, *, max_new_chars: int | None = None,
                 temperature: float | None = None, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None,
                 stop: list[str] | None = None, model: str | None = None) -> Generation:
        body = self._generate_body(prompt, max_new_chars=max_new_chars, temperature=temperature,
                                   top_k=top_k, top_p=top_p, seed=seed, stop=stop, model=model)
        return Generation.from_json(self._json("POST", "/generate", body))

    def generate_stream(self, prompt: str, *, max_new_chars: int | None = None,
                        temperature: float | None = None, top_k: int | None = None,
                        top_p: float | None = None, seed: int | None = None,
                        stop: list[str] | None = None, model: str | None = None) -> TextStream:
        body = self._generate_body(prompt, max_new_chars=max_new_chars, temperature=temperature,
                                   top_k=top_k, top_p=top_p, seed=seed, stop=stop, model=model)
        return TextStream(self._send("POST", "/generate/stream", body, stream=True))

    def models(self) -> list[ModelInfo]:
        d = self._json("GET", "/v1/models")
        return [ModelInfo.from_json(m) for m in d.get("data") or d.get("models") or []]

    def live(self) -> bool:
        """True when the server answers its liveness check; False when it answers
        otherwise or cannot be reached (a timeout still raises ``SeqserveTimeout``)."""
        return self._probe("/healthz")

    def ready(self) -> bool:
        """True when the server is ready (``live``'s rules)."""
        return self._probe("/readyz")

    def _probe(self, path: str) -> bool:
        try:
            with _transport(f"GET {path}"):
                return self._http.get(path).status_code == 200
        except SeqserveConnectionError:
            return False

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Base):
    """Asynchronous client: ``Client``'s methods as coroutines."""

    def __init__(self, base_url: str = DEFAULT_URL, *, api_key: str | None = None,
                 timeout: float | httpx.Timeout = DEFAULT_TIMEOUT, max_retries: int = 3,
                 max_retry_wait: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        super().__init__(api_key, max_retries, max_retry_wait)
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout,
                                       headers=self.headers, transport=transport)
        self._sleep = sleep

    async def _send(self, method: str, path: str, body: Any = None, *,
                    stream: bool = False) -> httpx.Response:
        attempt = 0
        while True:
            request = self._http.build_request(method, path, json=body)
            async with _atransport(f"{method} {request.url}"):
                response = await self._http.send(request, stream=stream)
                if response.status_code < 400:
                    return response
                await response.aread()
                await response.aclose()
            if response.status_code == 503 and attempt < self.max_retries:
                await self._sleep(retry_delay(response, attempt, self.max_retry_wait))
                attempt += 1
                continue
            raise _error(response)

    async def _json(self, method: str, path: str, body: Any = None) -> Any:
        return (await self._send(method, path, body)).json()  # (read in _send)

    async def sentiment(self, text: str, *, model: str | None = None) -> Sentiment:
        return Sentiment.from_json(await self._json("POST", "/sentiment",
                                                    self._with_model({"text": text}, model)))

    async def sentiment_batch(self, texts: list[str], *, model: str | None = None
                              ) -> list[Sentiment]:
        d = await self._json("POST", "/sentiment",
                             self._with_model({"texts": list(texts)}, model))
        return [Sentiment.from_json(r) for r in d["results"]]

    async def attention(self, text: str, *, model: str | None = None) -> Attention:
        return Attention.from_json(await self._json("POST", "/attention",
                                                    self._with_model({"text": text}, model)))

    async def generate(self, prompt: str, *, max_new_chars: int | None = None,
                       temperature: float | None = None, top_k: int | None = None,
                       top_p: float | None = None, seed: int | None = None,
                       stop: list[str] | None = None, model: str | None = None) -> Generation:
        body = self._generate_body(prompt, max_new_chars=max_new_chars, temperature=temperature,
                                   top_k=top_k, top_p=top_p, seed=seed, stop=stop, model=model)
        return Generation.from_json(await self._json("POST", "/generate", body))

    async def generate_stream(self, prompt: str, *, max_new_chars: int | None = None,
                              temperature: float | None = None, top_k: int | None = None,
                              top_p: float | None = None, seed: int | None = None,
                              stop: list[str] | None = None, model: str | None = None
                              ) -> AsyncTextStream:
        body = self._generate_body(prompt, max_new_chars=max_new_chars, temperature=temperature,
                                   top_k=top_k, top_p=top_p, seed=seed, stop=stop, model=model)
        return AsyncTextStream(await self._send("POST", "/generate/stream", body, stream=True))

    async def models(self) -> list[ModelInfo]:
        d = await self._json("GET", "/v1/models")
        return [ModelInfo.from_json(m) for m in d.get("data") or d.get("models") or []]

    async def live(self) -> bool:
        """``Client.live``."""
        return await self._probe("/healthz")

    async def ready(self) -> bool:
        """``Client.ready``."""
        return await self._probe("/readyz")

    async def _probe(self, path: str) -> bool:
        try:
            async with _atransport(f"GET {path}"):
                return (await self._http.get(path)).status_code == 200
        except SeqserveConnectionError:
            return False

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
