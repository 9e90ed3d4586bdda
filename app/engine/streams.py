"""The one way into the generation engine, for every protocol: start a stream, collect
it, or iterate its chunks.

The native /generate, the OpenAI-compatible completions and the Open Inference
Protocol routes all go through these, so every protocol gets the same queueing,
limits, timeouts and disconnect handling. Failures are the engine's domain errors
(app/engine/errors.py); the HTTP edge turns them into status codes. A client that
disconnects (an ASGI ``http.disconnect`` on ``receive``) cancels its streams, which
frees their slots at the next step.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from app.engine.errors import ClientGone, DeadlineExceeded, EngineError
from app.engine.generator import Finish, GenerationEngine, Stream
from seqcore.sampling import SamplingParams
from seqcore.tasks.generation import CharModel

# Seeds drawn by the server stay below 2**53: JSON numbers are doubles in JavaScript,
# and a larger seed would come back rounded, so "replay with the returned seed" would
# give another text in a browser. Seeds a caller sends may use the whole int64 range.
DRAWN_SEED_BITS = 53

# an ASGI ``receive``: the disconnect watcher reads the client's messages through it
Receive = Callable[[], Awaitable[dict[str, Any]]]


def draw_seed() -> int:
    return secrets.randbits(DRAWN_SEED_BITS)


async def _next(stream: Stream) -> str | Finish:
    item = await stream.out.get()
    if isinstance(item, EngineError):
        raise item
    return item  # type: ignore[return-value]


async def _watch_disconnect(receive: Receive, streams: list[Stream]) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            for stream in streams:
                stream.cancel()
                # The engine drops a cancelled stream without a word: wake the handler,
                # or it would wait until gen_timeout_s (and hold up a graceful shutdown).
                stream.out.put_nowait(ClientGone())
            return


def start_stream(loops: Mapping[str, Any], model: CharModel, prompt: str, *, arrived: float,
                 max_new: int, params: SamplingParams, seed: int, stop: list[str],
                 streaming: bool, min_new: int = 0) -> tuple[Stream, int]:
    """Queue one generation in the model's engine (``loops[model.name]``; raises
    ``Overloaded`` when its queue is full); returns the stream and the number of
    prompt characters read as <unk>. The prompt and limits must have passed the
    protocol's checks; ``min_new``: no stop sequence ends the text before that many
    characters."""
    assert model.vocab is not None
    prompt_ids, n_unknown = model.vocab.encode(prompt)
    stream = Stream(prompt_ids=prompt_ids, params=params, seed=seed, max_new=max_new,
                    stop=list(stop), arrived=arrived, loop=asyncio.get_running_loop(),
                    streaming=streaming, min_new=min_new)
    engine: GenerationEngine = loops[model.name]
    engine.submit(stream)
    return stream, n_unknown


async def collect(receive: Receive, streams: list[Stream], timeout_s: float
                  ) -> list[tuple[str, Finish]]:
    """The whole text and the finish of each stream (run side by side),
    ``DeadlineExceeded`` after ``timeout_s``; a client that disconnects cancels them
    all."""

    async def one(stream: Stream) -> tuple[str, Finish]:
        chunks: list[str] = []
        while True:
            item = await _next(stream)
            if isinstance(item, Finish):
                return "".join(chunks), item
            chunks.append(item)

    watcher = asyncio.create_task(_watch_disconnect(receive, streams))
    # one stream (every /generate) is awaited directly: no task to create per request
    tasks = [asyncio.create_task(one(s)) for s in streams] if len(streams) > 1 else []
    try:
        async with asyncio.timeout(timeout_s):
            if not tasks:
                return [await one(streams[0])]
            return list(await asyncio.gather(*tasks))
    except TimeoutError:
        raise DeadlineExceeded("generation did not finish in time") from None
    finally:
        watcher.cancel()
        for task in tasks:  # the others, when one failed: nobody would read them
            task.cancel()
        for stream in streams:
            stream.cancel()  # no-op when finished; frees the slot otherwise


async def first_output(stream: Stream, timeout_s: float) -> str | Finish:
    """The stream's first output. A streaming answer waits for it before sending its
    headers, so a request refused in the queue still gets a proper status code."""
    try:
        async with asyncio.timeout(timeout_s):  # (wait_for would make a task per call)
            return await _next(stream)
    except TimeoutError:
        stream.cancel()
        raise DeadlineExceeded("generation did not start in time") from None
    except BaseException:
        stream.cancel()
        raise


async def chunks(stream: Stream, first: str | Finish, deadline: float
                 ) -> AsyncIterator[str | Finish]:
    """Text chunks from ``first`` on (what is already waiting is joined into one
    chunk), then the Finish. Raises the engine's error, or TimeoutError at
    ``deadline`` (a ``time.perf_counter()`` value); the caller cancels the stream."""
    item: str | Finish = first
    while True:
        if isinstance(item, Finish):
            yield item
            return
        parts: list[str] = [item]
        nxt: object = None
        while not stream.out.empty():
            nxt = stream.out.get_nowait()
            if not isinstance(nxt, str):
                break  # a Finish or an error ends the chunk
            parts.append(nxt)
            nxt = None
        yield "".join(parts)
        if isinstance(nxt, EngineError):
            raise nxt
        if isinstance(nxt, Finish):
            item = nxt
            continue
        async with asyncio.timeout(max(deadline - time.perf_counter(), 0.001)):
            item = await _next(stream)
