"""OpenAI-compatible routes: POST /v1/completions and POST /v1/chat/completions for the
character generator, and the model cards of GET /v1/models (served by
app/ops/health.py with the other open operations routes).

Completions go through the same generation engine, limits and timeouts as POST
/generate (``start_stream``, ``collect``, ``first_output`` and ``chunks`` of
app/engine/streams.py); only the request and answer shapes differ. One "token" is
one character. A list of prompts, and ``n``, give one choice each, numbered
``prompt_index * n + j``, each its own stream in the engine (generated side by side);
choice i uses the seed ``(seed + i) mod 2**63``, so a choice replays alone with
``seed + i``. Errors are in OpenAI's shape (app/protocols/openai/errors.py), with this API's
status codes.

Streaming is OpenAI's: ``data: <Completion chunk>`` events, a choice's last chunk
with its ``finish_reason``, then ``data: [DONE]``. An error after the stream started
arrives as ``data: {"error": {...}}``, which OpenAI's clients raise.

Chat completions are completions of a prompt built from the messages by a fixed
template (``chat_prompt``): the messages' contents joined by newlines, or, with
SEQSERVE_CHAT_ROLE_PREFIXES, one ``role: content`` line per message followed by
``assistant: ``. The generator is a character model that continues text; it has no
notion of turns, so the answer is the continuation of that text.

The vLLM / TGI extension fields (app/protocols/openai/schemas.py) reach the engine as sampling
parameters (``min_p``, ``repetition_penalty``: seqcore/sampling.py) and as the stream's
``min_new`` (``min_tokens``: app/engine/stopping.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from app.config import Settings
from app.deps import AppState, get_state, model_for
from app.engine.classify import arrival
from app.engine.errors import EngineError
from app.engine.generator import Finish, Stream
from app.engine.streams import (
    chunks,
    collect,
    draw_seed,
    first_output,
    start_stream,
)
from app.http.errors import ApiError, api_error, error_body, invalid
from app.http.openapi import sse_response
from app.ops.cards import endpoints
from app.protocols.native.generate import SSE_HEADERS
from app.protocols.native.limits import (
    SEED_MAX,
    check_generate,
    default_max_new,
    fields_renamed,
)
from app.protocols.openai.errors import openai_error
from app.protocols.openai.schemas import (
    DEFAULT_MAX_TOKENS,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Completion,
    CompletionRequest,
    OpenAIErrorResponse,
    _Sampling,
)
from seqcore.sampling import SamplingParams
from seqcore.tasks.generation import CharModel

router = APIRouter(tags=["openai"])


class _NoRoute(APIRoute):
    """A route that stands for "no route here": it matches a path as a wrong method
    would (``Match.PARTIAL``), so that every other route of the app, a 405 included,
    goes first, and it is handled only when nothing else matched (Starlette handles
    the first partial match when there is no full one)."""

    unmatched = True  # counted and logged as "unmatched" (app/http/policy.py)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        return (Match.PARTIAL if match is Match.FULL else match), child


# Any other path under /v1/ (``/v1/embeddings``) is no route, answered in OpenAI's shape,
# the only one its clients read: the last line of app.main.ROUTES.
unknown_router = APIRouter(route_class=_NoRoute, include_in_schema=False)


@unknown_router.api_route("/v1/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def no_such_route(path: str) -> None:
    raise StarletteHTTPException(404, "Not Found")
log = logging.getLogger("seqserve.openai")

OPENAI_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIErrorResponse, "description": d} for status, d in {
        400: "invalid parameter (`param` names it), a model that does not serve this "
             "route, or a body that is not JSON", 401: "API key missing or wrong",
        404: "no loaded model of that name",
        413: "body over SEQSERVE_MAX_BODY_BYTES", 415: "Content-Type is not application/json",
        503: "overloaded or shutting down (Retry-After)", 504: "no answer in time"}.items()}


def chat_prompt(messages: list[ChatMessage], role_prefixes: bool) -> str:
    """The chat template: the messages' contents joined by newlines; with
    ``role_prefixes``, ``role: content`` lines and then ``assistant: ``."""
    if role_prefixes:
        return "".join(f"{m.role}: {m.text}\n" for m in messages) + "assistant: "
    return "\n".join(m.text for m in messages)


def _generator(state: AppState, name: str, route: str) -> CharModel:
    """The text-generation model ``name``: 400 when it is loaded but is not one (a
    sentiment model), 404 when nothing of that name is loaded."""
    m = state.registry.models.get(name) if state.registry else None
    if m is not None and m.task != CharModel.task:
        message = (f"{name!r} is a {m.task} model: {route} serves text-generation models "
                   f"only; this model is served by {', '.join(endpoints(m))}")
        raise ApiError(400, "model_not_supported", "model: " + message,
                       details=[{"field": "model", "message": message}])
    return model_for(state, CharModel.task, name)  # type: ignore[return-value]


def _max_new(body: _Sampling, s: Settings) -> tuple[int, str]:
    """Characters to generate at most per choice, and the field that set them."""
    if body.max_completion_tokens is not None:
        if ("max_tokens" in body.model_fields_set and body.max_tokens is not None
                and body.max_tokens != body.max_completion_tokens):
            raise invalid("max_completion_tokens", "must equal max_tokens when both are sent "
                          f"(got {body.max_completion_tokens} and {body.max_tokens})")
        return body.max_completion_tokens, "max_completion_tokens"
    if body.max_tokens is None or "max_tokens" not in body.model_fields_set:
        return default_max_new(DEFAULT_MAX_TOKENS, s), "max_tokens"
    return body.max_tokens, "max_tokens"


def _prompt_texts(body: CompletionRequest, model: CharModel) -> list[str]:
    """The prompts as text: token ids are indices into the model's characters."""
    out = []
    prompts = body.prompt_list
    assert model.vocab is not None
    size = len(model.vocab.chars)
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            out.append(p)
            continue
        bad = next((t for t in p if t >= size), None)
        if bad is not None:
            field = "prompt" if len(prompts) == 1 and not isinstance(body.prompt[0], list) \
                else f"prompt.{i}"
            raise invalid(field, f"token id {bad} is not in the model's vocabulary (ids "
                          f"0..{size - 1}, one per character: vocab.json `chars`)")
        out.append(model.vocab.decode(p))
    return out


def _choice(index: int, text: str, finish_reason: str | None) -> dict:
    return {"text": text, "index": index, "finish_reason": finish_reason, "logprobs": None}


@router.post("/v1/completions", operation_id="create_completion", response_model=Completion,
             responses={**OPENAI_ERROR_RESPONSES, 200: sse_response(
                 Completion, "the completion, or with stream=true OpenAI's SSE chunks "
                 "(each a Completion with the new text), then `data: [DONE]`")},
             summary="OpenAI-compatible text completion (one token = one character)")
async def create_completion(body: CompletionRequest, request: Request,
                            state: AppState = Depends(get_state)):
    model = _generator(state, body.model, "/v1/completions")
    prompts = _prompt_texts(body, model)
    single = isinstance(body.prompt, str) or (bool(body.prompt)
                                              and isinstance(body.prompt[0], int))
    names = ["prompt" if single else f"prompt.{i}" for i in range(len(prompts))]
    return await _complete(request, state, body, model, prompts, names, _TEXT)


@router.post("/v1/chat/completions", operation_id="create_chat_completion",
             response_model=ChatCompletion,
             responses={**OPENAI_ERROR_RESPONSES, 200: sse_response(
                 ChatCompletionChunk, "the chat completion, or with stream=true OpenAI's SSE "
                 "chunks (each a ChatCompletionChunk), then `data: [DONE]`")},
             summary="OpenAI-compatible chat completion: the messages through the chat "
                     "template (README), continued by the character generator")
async def create_chat_completion(body: ChatCompletionRequest, request: Request,
                                 state: AppState = Depends(get_state)):
    model = _generator(state, body.model, "/v1/chat/completions")
    prompt = chat_prompt(body.messages, state.settings.chat_role_prefixes)
    return await _complete(request, state, body, model, [prompt], ["messages"], _CHAT)


class _Shape:
    """What differs between a completion and a chat completion: ids, object names and
    the choice objects."""

    def __init__(self, chat: bool):
        self.chat = chat
        self.prefix = "chatcmpl-" if chat else "cmpl-"
        self.object = "chat.completion" if chat else "text_completion"
        self.chunk_object = "chat.completion.chunk" if chat else "text_completion"

    def choice(self, index: int, text: str, reason: str) -> dict:
        if self.chat:
            return {"index": index, "message": {"role": "assistant", "content": text},
                    "finish_reason": reason, "logprobs": None}
        return _choice(index, text, reason)

    def chunk_choice(self, index: int, text: str | None, reason: str | None) -> dict:
        if not self.chat:
            return _choice(index, text or "", reason)
        delta = {} if text is None else {"content": text}
        return {"index": index, "delta": delta, "finish_reason": reason, "logprobs": None}


_TEXT, _CHAT = _Shape(chat=False), _Shape(chat=True)


async def _complete(request: Request, state: AppState, body: _Sampling, model: CharModel,
                    prompts: list[str], names: list[str], shape: _Shape):
    s = state.settings
    stops, n = body.stops, body.n or 1
    max_new, max_field = _max_new(body, s)
    with fields_renamed({"max_new_chars": max_field}):
        for p, name in zip(prompts, names, strict=True):
            with fields_renamed({"prompt": name}):
                check_generate(p, max_new, stops, s)
    min_new = body.min_tokens or 0
    if min_new > max_new:
        raise invalid("min_tokens", f"at most {max_field} ({max_new}); got {min_new}")
    seed = body.seed if body.seed is not None else draw_seed()
    params = SamplingParams(body.temperature if body.temperature is not None else 1.0,
                            body.top_k, body.top_p, body.min_p, body.repetition_penalty)
    streaming = bool(body.stream)
    streams: list[Stream] = []
    try:
        for p in prompts:
            for _ in range(n):
                stream, _unknown = start_stream(
                    state.loops, model, p, arrived=arrival(request.scope),
                    max_new=max_new, params=params,
                    seed=(seed + len(streams)) % (SEED_MAX + 1), stop=stops,
                    streaming=streaming, min_new=min_new)
                streams.append(stream)
    except BaseException:
        for st in streams:  # a full queue refuses the whole request, not some choices
            st.cancel()
        raise
    cid = shape.prefix + uuid.uuid4().hex
    created = int(time.time())
    prompt_chars = sum(len(p) for p in prompts)
    if streaming:
        return await _streaming(streams, cid, created, model, seed, prompt_chars, shape,
                                body.include_usage, body.continuous_usage, s.gen_timeout_s)
    results = await collect(request.receive, streams, s.gen_timeout_s)
    completion_chars = sum(f.generated_chars for _, f in results)
    return JSONResponse({
        "id": cid, "object": shape.object, "created": created, "model": model.name,
        "system_fingerprint": model.version,
        "choices": [shape.choice(i, text, f.reason) for i, (text, f) in enumerate(results)],
        "usage": _usage(prompt_chars, completion_chars), "seed": seed})


def _usage(prompt_chars: int, completion_chars: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_chars, "completion_tokens": completion_chars,
            "total_tokens": prompt_chars + completion_chars}


async def _streaming(streams: list[Stream], cid: str, created: int, model: CharModel,
                     seed: int, prompt_chars: int, shape: _Shape, include_usage: bool,
                     continuous_usage: bool, timeout_s: float) -> StreamingResponse:
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

    def event(choices: list[dict], so_far: int | None) -> bytes:
        usage = _usage(prompt_chars, so_far) if so_far is not None else None
        obj: dict[str, Any] = {"id": cid, "object": shape.chunk_object, "created": created,
                               "model": model.name, "system_fingerprint": model.version,
                               "choices": choices, "seed": seed}
        if usage is not None:
            obj["usage"] = usage
        return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"

    async def events() -> AsyncIterator[bytes]:
        tasks = [asyncio.create_task(pump(i)) for i in range(len(streams))]
        open_choices, completion_chars = len(streams), 0
        live = 0 if continuous_usage else None  # characters sent so far, on every chunk
        try:
            if shape.chat:  # OpenAI's first chunk of each choice: the role, no content
                for i in range(len(streams)):
                    yield event([{"index": i, "delta": {"role": "assistant", "content": ""},
                                  "finish_reason": None, "logprobs": None}], live)
            while open_choices:
                index, item = await merged.get()
                if isinstance(item, Finish):
                    open_choices -= 1
                    completion_chars += item.generated_chars
                    yield event([shape.chunk_choice(index, None, item.reason)], live)
                elif isinstance(item, str):
                    if live is not None:
                        live += len(item)
                    yield event([shape.chunk_choice(index, item, None)], live)
                else:
                    if isinstance(item, ApiError | EngineError):
                        e = api_error(item)
                        status, code, message = e.status, e.code, e.message
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
                yield event([], completion_chars)
            yield b"data: [DONE]\n\n"
        finally:
            for t in tasks:
                t.cancel()
            for st in streams:
                st.cancel()

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)
