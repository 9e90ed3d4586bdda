"""The classification service: a request's texts through the batching loop.

``classify`` is the one way into a classifier's ``ClassificationBatcher`` for every
protocol (the native /sentiment and /attention, the Open Inference Protocol): encode
(tokenize), then the loop's stages (batch, run, unbatch). The batcher hears of the
rows before they are tokenized (``announce``), so it can wait for them rather than
start a call without them. Failures are the engine's domain errors.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from app.engine.batcher import ClassificationBatcher, RowResult
from app.engine.errors import DeadlineExceeded
from seqcore.tasks.classification import SentimentModel
from seqcore.tokenizer import Encoded

# a row is answered within its queue deadline plus this (a call's own longest run)
ANSWER_MARGIN_S = 30.0


def arrival(scope: dict[str, Any]) -> float:
    """When the request arrived (stamped by the request-context middleware in the
    ASGI scope's state; now when it was not)."""
    return scope.get("state", {}).get("arrived", time.perf_counter())


# Requests with more characters than this are tokenized in the tokenizer thread, not
# on the event loop: tokenizing costs up to ~0.6 µs a character, so a 1 MB request
# would hold every other route (/healthz included) for half a second. Below it (an
# ordinary review is ~1,300 characters) the thread hand-off would cost more than it
# saves. One thread, so large requests take turns instead of crowding the GIL.
INLINE_TOKENIZE_CHARS = 16_384
_tokenizer_pool: ThreadPoolExecutor | None = None


def _tokenizer_thread() -> ThreadPoolExecutor:
    global _tokenizer_pool
    if _tokenizer_pool is None:
        _tokenizer_pool = ThreadPoolExecutor(1, thread_name_prefix="tokenize")
    return _tokenizer_pool


async def encode_texts(model: SentimentModel, texts: list[str], offsets: bool) -> list[Encoded]:
    """The encode stage of every text, off the event loop when the request is large."""
    if sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS:
        return [model.encode(t, offsets=offsets) for t in texts]
    return await asyncio.get_running_loop().run_in_executor(
        _tokenizer_thread(), lambda: [model.encode(t, offsets=offsets) for t in texts])


async def classify(arrived: float, batcher: ClassificationBatcher, model: SentimentModel,
                   texts: list[str], *, offsets: bool, queue_timeout_s: float
                   ) -> tuple[list[Encoded], list[RowResult]]:
    """Encode ``texts`` and run them through ``batcher``: (the encodings, each row's
    result). The caller looks ``batcher`` up with no ``await`` after ``model_for``, so
    a reload's swap cannot fall between them."""
    batcher.announce(len(texts))
    futures: list[asyncio.Future] = []
    try:
        encoded = await encode_texts(model, texts, offsets)
        for e in encoded:
            futures.append(batcher.submit(e.ids, arrived))
    except BaseException:
        batcher.announce(-(len(texts) - len(futures)))  # rows that never reached submit
        for f in futures:
            f.cancel()
        raise
    return encoded, await gather_rows(futures, queue_timeout_s)


async def run_rows(arrived: float, batcher: ClassificationBatcher, rows: list[list[int]],
                   queue_timeout_s: float) -> list[RowResult]:
    """Rows already tokenized through ``batcher``, as one request's rows."""
    batcher.announce(len(rows))
    futures: list[asyncio.Future] = []
    try:
        for r in rows:
            futures.append(batcher.submit(r, arrived))
    except BaseException:
        batcher.announce(-(len(rows) - len(futures)))
        for f in futures:
            f.cancel()
        raise
    return await gather_rows(futures, queue_timeout_s)


async def gather_rows(futures: list[asyncio.Future], queue_timeout_s: float
                      ) -> list[RowResult]:
    """Every row's result, ``DeadlineExceeded`` past the queue deadline and the call's
    margin; rows of a failed or abandoned request do not run."""
    try:
        async with asyncio.timeout(queue_timeout_s + ANSWER_MARGIN_S):
            if len(futures) == 1:
                return [await futures[0]]
            return list(await asyncio.gather(*futures))
    except TimeoutError:
        raise DeadlineExceeded("the model did not answer in time") from None
    finally:
        for f in futures:
            if not f.done():
                f.cancel()
