"""Request and response models of the OpenAI-compatible routes (/v1/completions,
/v1/chat/completions, /v1/models): the field names and shapes of OpenAI's API, so
that its client libraries work unchanged.

A "token" here is one character (the generator is character-level): ``max_tokens``
counts characters, ``usage`` counts characters, and a prompt given as token ids is a
list of indices into the model's character vocabulary (``vocab.json``'s ``chars``).
Like the rest of the API, unknown fields are rejected (a typo is caught) and types
are strict. OpenAI fields this server cannot honour (``logprobs``, ``echo``,
``suffix``, ``best_of`` > 1, frequency and presence penalties, ``logit_bias``) are
accepted only at their neutral values, so that a request that relies on them fails
loudly (400) instead of silently getting something else.

The extension fields of vLLM and TGI that benchmark and client tools send
(``EXTENSION_FIELDS``) are accepted with their meaning for a character model:
``min_tokens`` (no stop sequence ends the text before that many characters),
``repetition_penalty`` (seqcore/sampling.py), ``min_p``, ``top_k``,
``max_completion_tokens`` (the same as ``max_tokens``),
``stream_options.continuous_usage_stats`` (usage on every chunk), and ``ignore_eos``
and ``skip_special_tokens``, which have no effect: the generator has no end token and
no special tokens.

Every number has a lower and an upper bound that the engine can hold; limits that
depend on settings (prompt length, ``max_tokens`` vs SEQSERVE_MAX_NEW_CHARS, stop
sequences) are checked by app/protocols/native/limits.py after the schema.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.protocols.native.limits import MAX_NEW_CHARS_CAP, SEED_MAX, TOP_K_CAP

_STRICT = ConfigDict(extra="forbid", strict=True)

MAX_CHOICES = 16  # prompts x n per request: each choice is one stream in the engine
DEFAULT_MAX_TOKENS = 16  # OpenAI's default


MAX_TOKEN_ID = 1_000_000  # far above any vocabulary; the model's size is checked after
# the vLLM / TGI fields accepted beyond OpenAI's (README, "OpenAI-compatible API")
EXTENSION_FIELDS = ("top_k", "min_tokens", "repetition_penalty", "min_p", "ignore_eos",
                    "skip_special_tokens", "stream_options.continuous_usage_stats")


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool = Field(False, description="a last chunk with `usage` and no choices")
    continuous_usage_stats: bool = Field(
        False, description="extension (vLLM): `usage` on every chunk, counting the "
                           "characters generated so far")


class _Sampling(BaseModel):
    """The fields /v1/completions and /v1/chat/completions share."""

    model_config = _STRICT

    model: str = Field(..., min_length=1, max_length=256,
                       description="a loaded text-generation model (GET /v1/models)")
    max_tokens: int | None = Field(DEFAULT_MAX_TOKENS, ge=1, le=MAX_NEW_CHARS_CAP,
                                   description="characters to generate at most per choice "
                                               "(at most SEQSERVE_MAX_NEW_CHARS)")
    max_completion_tokens: int | None = Field(
        None, ge=1, le=MAX_NEW_CHARS_CAP,
        description="the same as `max_tokens` (OpenAI's newer name); if both are sent "
                    "they must be equal")
    temperature: float | None = Field(1.0, ge=0.0, le=10.0,
                                      description="p_i ~ exp(log p_i / T); 0 = greedy")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="nucleus sampling mass")
    top_k: int | None = Field(None, ge=1, le=TOP_K_CAP,
                              description="extension: sample among the k likeliest only")
    n: int | None = Field(1, ge=1, le=MAX_CHOICES, description="choices per prompt")
    stop: str | Annotated[list[str], Field(max_length=16)] | None = Field(
        None, description="stop sequence(s); the text ends before the first one")
    seed: int | None = Field(None, ge=0, le=SEED_MAX,
                             description="same seed and parameters, same text; choice i "
                                         "uses (seed + i) mod 2^63. Drawn below 2^53 if absent")
    stream: bool | None = Field(False, description="OpenAI SSE chunks, then `data: [DONE]`")
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256, description="accepted and ignored")
    # vLLM / TGI extensions (see the module docstring)
    min_tokens: int | None = Field(
        None, ge=0, le=MAX_NEW_CHARS_CAP,
        description="extension (vLLM): no stop sequence ends a choice before it has this "
                    "many characters (at most max_tokens)")
    repetition_penalty: float | None = Field(
        None, gt=0.0, le=10.0,
        description="extension (vLLM, TGI): > 1 makes characters already in the prompt or "
                    "the text less likely (a seen character's logit is divided by it when "
                    "positive, multiplied when negative); 1 or null: off")
    min_p: float | None = Field(
        None, ge=0.0, le=1.0,
        description="extension (vLLM): sample only among characters at least min_p times "
                    "as likely as the likeliest one (after temperature); 0 or null: off")
    ignore_eos: bool | None = Field(
        None, description="extension (vLLM): accepted, no effect: the generator has no "
                          "end-of-sequence token, a choice ends at max_tokens or a stop")
    skip_special_tokens: bool | None = Field(
        None, description="extension (vLLM): accepted, no effect: there are no special "
                          "tokens in the output")
    # OpenAI fields accepted at their neutral values only (see the module docstring)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0, description="0 or null only")
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0, description="0 or null only")
    logit_bias: Annotated[dict[str, Annotated[int, Field(ge=-100, le=100)]],
                          Field(max_length=300)] | None = Field(None, description="empty only")

    @field_validator("frequency_penalty", "presence_penalty")
    @classmethod
    def _zero_only(cls, v: float | None) -> float | None:
        if v:
            raise ValueError("penalties are not supported by this server (0 or null only)")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _empty_only(cls, v: dict | None) -> dict | None:
        if v:
            raise ValueError("not supported by this server (empty or null only)")
        return v

    @property
    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def continuous_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.continuous_usage_stats

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


TokenIds = Annotated[list[Annotated[int, Field(ge=0, le=MAX_TOKEN_ID)]],
                     Field(min_length=1, max_length=1_000_000)]


class CompletionRequest(_Sampling):
    model_config = ConfigDict(**_STRICT, json_schema_extra={
        "examples": [{"model": "chargen", "prompt": "the free spirit ", "max_tokens": 120,
                      "temperature": 0.7, "seed": 1, "stop": ["\n\n"]}],
        "x-extensions": list(EXTENSION_FIELDS)})

    prompt: (str | Annotated[list[str], Field(min_length=1, max_length=MAX_CHOICES)]
             | TokenIds | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_CHOICES)]
             ) = Field(
        ..., description="text to continue, or a list of texts (one choice each, times n); "
                         "or token ids: a list of ids, or a list of such lists, each id an "
                         "index into the model's characters (vocab.json `chars`)")
    logprobs: int | None = Field(None, ge=0, le=5, description="not supported: null only")
    echo: bool | None = Field(False, description="not supported: false only")
    suffix: str | None = Field(None, max_length=256, description="not supported: null only")
    best_of: int | None = Field(None, ge=1, le=MAX_CHOICES, description="1 or null only")

    @field_validator("logprobs", "suffix")
    @classmethod
    def _null_only(cls, v: Any) -> Any:
        if v is not None:
            raise ValueError("not supported by this server (send null or leave it out)")
        return v

    @field_validator("echo")
    @classmethod
    def _false_only(cls, v: bool | None) -> bool | None:
        if v:
            raise ValueError("not supported by this server")
        return v

    @field_validator("best_of")
    @classmethod
    def _one_only(cls, v: int | None) -> int | None:
        if v not in (None, 1):
            raise ValueError("only 1 is supported (use n for several choices)")
        return v

    @model_validator(mode="after")
    def _choices(self) -> CompletionRequest:
        prompts = len(self.prompt_list)
        if prompts * (self.n or 1) > MAX_CHOICES:
            raise ValueError(f"prompts x n: at most {MAX_CHOICES} choices per request "
                             f"(got {prompts} x {self.n})")
        return self

    @property
    def prompt_list(self) -> list[str] | list[list[int]]:
        """The prompts: texts, or lists of token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and isinstance(p[0], int):
            return [p]  # type: ignore[list-item]
        return list(p)  # type: ignore[arg-type]


class ContentPart(BaseModel):
    model_config = _STRICT
    type: Literal["text"] = Field(..., description="text parts only")
    text: str = Field(..., max_length=1_000_000)


class ChatMessage(BaseModel):
    model_config = _STRICT
    role: Literal["system", "developer", "user", "assistant"]
    content: str | Annotated[list[ContentPart], Field(max_length=64)] = Field(
        ..., description="text, or a list of text parts (joined)")
    name: str | None = Field(None, max_length=256, description="accepted and ignored")

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatCompletionRequest(_Sampling):
    model_config = ConfigDict(**_STRICT, json_schema_extra={
        "examples": [{"model": "chargen", "max_tokens": 120, "temperature": 0.7, "seed": 1,
                      "messages": [{"role": "user", "content": "the free spirit "}]}],
        "x-extensions": list(EXTENSION_FIELDS)})

    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=256)] = Field(
        ..., description="the conversation; the prompt is built from it by the chat template "
                         "(README: the contents joined by newlines, or with "
                         "SEQSERVE_CHAT_ROLE_PREFIXES `role: content` lines then "
                         "`assistant: `)")
    logprobs: bool | None = Field(False, description="not supported: false only")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="not supported: null only")

    @field_validator("logprobs")
    @classmethod
    def _false_only(cls, v: bool | None) -> bool | None:
        if v:
            raise ValueError("not supported by this server")
        return v

    @field_validator("top_logprobs")
    @classmethod
    def _null_only(cls, v: Any) -> Any:
        if v is not None:
            raise ValueError("not supported by this server (send null or leave it out)")
        return v


class CompletionChoice(BaseModel):
    text: str
    index: int = Field(..., description="prompt number x n + choice number")
    finish_reason: Literal["stop", "length"] | None = Field(
        ..., description="null in stream chunks before a choice's last")
    logprobs: None = None


class CompletionUsage(BaseModel):
    prompt_tokens: int = Field(..., description="prompt characters (each prompt once)")
    completion_tokens: int = Field(..., description="generated characters, all choices")
    total_tokens: int


class Completion(BaseModel):
    """The answer of /v1/completions, and (with ``finish_reason`` null until a choice
    ends) each chunk of its stream."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(..., description="Unix time, seconds")
    model: str
    system_fingerprint: str | None = Field(None, description="the model's version")
    choices: list[CompletionChoice]
    usage: CompletionUsage | None = Field(
        None, description="in the answer; in a stream with include_usage (a last chunk "
                          "without choices), or with continuous_usage_stats on every chunk")
    seed: int = Field(..., description="extension: the seed of choice 0 (replay with it)")


class ChatCompletionMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatCompletionChoice(BaseModel):
    index: int = Field(..., description="choice number (n)")
    message: ChatCompletionMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    """The answer of /v1/chat/completions without ``stream``."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(..., description="Unix time, seconds")
    model: str
    system_fingerprint: str | None = Field(None, description="the model's version")
    choices: list[ChatCompletionChoice]
    usage: CompletionUsage
    seed: int = Field(..., description="extension: the seed of choice 0 (replay with it)")


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = Field(None, description="in each choice's first chunk")
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    finish_reason: Literal["stop", "length"] | None = Field(
        ..., description="null before a choice's last chunk")
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    """One event of a streamed /v1/chat/completions."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChunkChoice]
    usage: CompletionUsage | None = Field(
        None, description="with include_usage in a last chunk without choices; with "
                          "continuous_usage_stats on every chunk")
    seed: int


class OpenAIErrorBody(BaseModel):
    message: str
    type: str = Field(..., description="invalid_request_error | authentication_error | "
                                       "server_error | ...")
    param: str | None = Field(None, description="the request field at fault, if one is")
    code: str | None = Field(None, description="this API's error code, e.g. validation_error")


class OpenAIErrorResponse(BaseModel):
    error: OpenAIErrorBody


class ModelCard(BaseModel):
    """One model, as OpenAI lists models, with this service's details."""

    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["model"] = "model"
    created: int = Field(..., description="Unix time of the export (0 if unknown)")
    owned_by: str
    name: str
    version: str
    task: str
    provider: str
    ready: bool
    architecture: str | None = None
    parameters: int | None = None
    metrics: dict
    export_checks: dict
    endpoints: list[str] = Field(..., description="the routes that serve this model, e.g. "
                                 "/v1/completions and /v1/chat/completions for a generator")


class ModelCardList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
    models: list[ModelCard] = Field(..., description="the same entries as `data` (the "
                                                     "shape of earlier versions)")
