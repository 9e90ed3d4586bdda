"""OpenAI-compatible routes: POST /v1/completions for the character generator, and the
model cards of GET /v1/models (served by app/routes/health.py with the other open
operations routes).

Completions go through the same generation engine, limits and timeouts as POST
/generate (``start_stream``, ``collect``, ``first_output`` and ``chunks`` of
app/routes/generate.py); only the request and answer shapes differ. One "token" is
one character. A list of prompts, and ``n``, give one choice each, numbered
``prompt_index * n + j``, each its own stream in the engine (generated side by side);
choice i uses the seed ``(seed + i) mod 2**63``, so a choice replays alone with
``seed + i``. Errors are in OpenAI's shape (app/protocol_errors.py), with this API's
status codes.

Streaming is OpenAI's: ``data: <Completion chunk>`` events, a choice's last chunk
with its ``finish_reason``, then ``data: [DONE]``. An error after the stream started
arrives as ``data: {"error": {...}}``, which OpenAI's clients raise.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from app.errors import ApiError, error_body
from app.generation import Finish, Stream
from app.openapi import sse_response
from app.protocol_errors import fields_renamed, openai_error
from app.routes.generate import (
    MAX_SEED,
    SSE_HEADERS,
    chunks,
    collect,
    draw_seed,
    first_output,
    start_stream,
)
from app.schemas_openai import (
    DEFAULT_MAX_TOKENS,
    Completion,
    CompletionRequest,
    OpenAIErrorResponse,
)
from app.state import AppState, get_state, model_for
from app.validation import check_generate
from seqcore.sampling import SamplingParams
from seqcore.tasks import LoadedModel
from seqcore.tasks.generation import CharModel

router = APIRouter(tags=["openai"])
log = logging.getLogger("seqserve.openai")

OWNER = "seqserve"
OPENAI_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIErrorResponse, "description": d} for status, d in {
        400: "body is not JSON", 401: "API key missing or wrong",
        404: "no loaded text-generation model of that name",
        413: "body over SEQSERVE_MAX_BODY_BYTES", 415: "Content-Type is not application/json",
        422: "invalid parameter (`param` names it)",
        503: "overloaded or shutting down (Retry-After)", 504: "no answer in time"}.items()}


def model_card(m: LoadedModel) -> dict[str, Any]:
    """A model as OpenAI lists models, with everything /v1/models always showed."""
    d = m.describe()
    try:
        created = int(datetime.fromisoformat(str(d.get("created_at"))).timestamp())
    except ValueError:
        created = 0
    return {"id": m.name, "object": "model", "created": created, "owned_by": OWNER, **d}


def _chunk(cid: str, created: int, model: CharModel, seed: int, choices: list[dict],
           usage: dict | None = None) -> bytes:
    obj = {"id": cid, "object": "text_completion", "created": created, "model": model.name,
           "system_fingerprint": model.version, "choices": choices, "seed": seed}
    if usage is not None:
        obj["usage"] = usage
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


def _choice(index: int, text: str, finish_reason: str | None) -> dict:
    return {"text": text, "index": index, "finish_reason": finish_reason, "logprobs": None}


@router.post("/v1/completions", operation_id="create_completion", response_model=Completion,
             responses={**OPENAI_ERROR_RESPONSES, 200: sse_response(
                 Completion, "the completion, or with stream=true OpenAI's SSE chunks "
                 "(each a Completion with the new text), then `data: [DONE]`")},
             summary="OpenAI-compatible text completion (one token = one character)")
async def create_completion(body: CompletionRequest, request: Request,
                            state: AppState = Depends(get_state)):
    s = state.settings
    prompts, stops, n = body.prompts, body.stops, body.n or 1
    max_new = body.max_tokens if body.max_tokens is not None else DEFAULT_MAX_TOKENS
    if body.max_tokens is None or "max_tokens" not in body.model_fields_set:
        max_new = min(max_new, s.max_new_chars)  # a default must not trip a lower limit
    with fields_renamed({"max_new_chars": "max_tokens"}):
        for i, p in enumerate(prompts):
            with fields_renamed({"prompt": "prompt" if isinstance(body.prompt, str)
                                 else f"prompt.{i}"}):
                check_generate(p, max_new, stops, s)
    model: CharModel = model_for(state, "text-generation", body.model)  # type: ignore[assignment]
    seed = body.seed if body.seed is not None else draw_seed()
    params = SamplingParams(body.temperature if body.temperature is not None else 1.0,
                            body.top_k, body.top_p)
    streaming = bool(body.stream)
    streams: list[Stream] = []
    try:
        for p in prompts:
            for _ in range(n):
                stream, _unknown = start_stream(
                    state, request, model, p, max_new=max_new, params=params,
                    seed=(seed + len(streams)) % (MAX_SEED + 1), stop=stops,
                    streaming=streaming)
                streams.append(stream)
    except BaseException:
        for st in streams:  # a full queue refuses the whole request, not some choices
            st.cancel()
        raise
    cid = "cmpl-" + uuid.uuid4().hex
    created = int(time.time())
    prompt_chars = sum(len(p) for p in prompts)
    if streaming:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return await _streaming(streams, cid, created, model, seed, prompt_chars,
                                include_usage, s.gen_timeout_s)
    results = await collect(request, streams, s.gen_timeout_s)
    completion_chars = sum(f.generated_chars for _, f in results)
    return JSONResponse({
        "id": cid, "object": "text_completion", "created": created, "model": model.name,
        "system_fingerprint": model.version,
        "choices": [_choice(i, text, f.reason) for i, (text, f) in enumerate(results)],
        "usage": {"prompt_tokens": prompt_chars, "completion_tokens": completion_chars,
                  "total_tokens": prompt_chars + completion_chars},
        "seed": seed})


async def _streaming(streams: list[Stream], cid: str, created: int, model: CharModel,
                     seed: int, prompt_chars: int, include_usage: bool, timeout_s: float
                     ) -> StreamingResponse:
    # Every choice's first output before the headers: a refusal in the queue is a status.
    waits = [asyncio.create_task(first_output(st, timeout_s)) for st in streams]
    try:
        firsts = await asyncio.gather(*waits)
    except BaseException:
        for w in waits:
            w.cancel()
        for st in streams:
            st.cancel()
        raise
    deadline = time.perf_counter() + timeout_s
    merged: asyncio.Queue[tuple[int, str | Finish | Exception]] = asyncio.Queue()

    async def pump(index: int) -> None:
        try:
            async for item in chunks(streams[index], firsts[index], deadline):
                merged.put_nowait((index, item))
        except Exception as exc:  # any failure ends the stream, in the stream
            merged.put_nowait((index, exc))

    async def events() -> AsyncIterator[bytes]:
        tasks = [asyncio.create_task(pump(i)) for i in range(len(streams))]
        open_choices, completion_chars = len(streams), 0
        try:
            while open_choices:
                index, item = await merged.get()
                if isinstance(item, Finish):
                    open_choices -= 1
                    completion_chars += item.generated_chars
                    yield _chunk(cid, created, model, seed, [_choice(index, "", item.reason)])
                elif isinstance(item, str):
                    yield _chunk(cid, created, model, seed, [_choice(index, item, None)])
                else:
                    if isinstance(item, ApiError):
                        status, code, message = item.status, item.code, item.message
                    elif isinstance(item, TimeoutError):
                        status, code, message = 504, "timeout", "generation did not finish in time"
                    else:  # a bug: logged with its traceback, answered with an id
                        error_id = uuid.uuid4().hex[:12]
                        log.error("unhandled error %s in a completion stream", error_id,
                                  exc_info=item)
                        status, code = 500, "internal_error"
                        message = f"internal error; quote error_id {error_id}"
                    err = openai_error(status, error_body(status, code, message)["error"])
                    yield b"data: " + json.dumps(err).encode() + b"\n\n"
                    return
            if include_usage:
                yield _chunk(cid, created, model, seed, [], usage={
                    "prompt_tokens": prompt_chars, "completion_tokens": completion_chars,
                    "total_tokens": prompt_chars + completion_chars})
            yield b"data: [DONE]\n\n"
        finally:
            for t in tasks:
                t.cancel()
            for st in streams:
                st.cancel()

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)
