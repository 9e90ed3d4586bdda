"""Request and response models: the contract other services code against.

Unknown fields are REJECTED (422), so a typo such as ``max_new_char`` fails loudly
instead of being silently ignored. Types are strict: a string where a number or a
boolean belongs (``"max_new_chars": "5"``, ``"stream": "yes"``) is a 422, not coerced;
an integer is accepted where a float belongs. Limits that depend on settings (text length,
batch size, max_new_chars, ...) are checked in ``app/protocols/native/limits.py`` with the same
error shape; the static bounds here are absolute caps.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# the static caps of every protocol (the settings' limits are checked after the schema)
from app.protocols.native.limits import (
    MAX_NEW_CHARS_CAP,
    MAX_STOP_CAP,
    MAX_TEXTS_CAP,
    SEED_MAX,
    TOP_K_CAP,
)

_STRICT = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=False)



class SentimentRequest(BaseModel):
    """Exactly one of ``text`` or ``texts``."""

    model_config = ConfigDict(**_STRICT, json_schema_extra={"examples": [
        {"text": "A moving, beautifully acted film. I loved it."},
        {"texts": ["Dull and far too long.", "An instant classic!"]},
    ]})
    text: str | None = Field(None, description="one text to classify")
    texts: list[str] | None = Field(None, max_length=MAX_TEXTS_CAP,
                                    description="several texts (1..SEQSERVE_MAX_TEXTS)")
    model: str | None = Field(None, description="model name (default: the loaded classifier)")

    @model_validator(mode="after")
    def _one_of(self) -> SentimentRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of 'text' or 'texts'")
        return self


class AttentionRequest(BaseModel):
    model_config = ConfigDict(**_STRICT, json_schema_extra={"examples": [
        {"text": "The plot was thin, but the acting was superb."}]})
    text: str = Field(..., description="the text to classify and explain")
    model: str | None = Field(None, description="model name (default: the loaded classifier)")
    faithfulness: bool = Field(
        False, description="also score how faithful the explanation is (ERASER's "
        "comprehensiveness and sufficiency at k = 5, 10 and 20 % of the tokens): the "
        "reduced texts run as extra rows of one more batch call inside this request")


class Probabilities(BaseModel):
    """Label -> probability. The two-label models: negative and positive; a model of
    other labels: one key per label of its own (additional properties)."""

    model_config = ConfigDict(extra="allow",
                              json_schema_extra={"additionalProperties": {"type": "number"}})
    negative: float = Field(None, description="P(negative): models with that label")
    positive: float = Field(None, description="P(positive): models with that label")


class SentimentResult(BaseModel):
    label: Literal["positive", "negative"] | str = Field(
        ..., description="the predicted label; a model trained on other labels (any number: "
        "its manifest's \"labels\") answers with its own label names")
    score: float = Field(..., description="probability of the predicted label")
    probabilities: Probabilities = Field(
        ..., description="label -> probability; a model of other labels has one key per "
        "label of its own (docs/models.md, manifest.json \"labels\")")
    model: str
    model_version: str
    tokens_read: int = Field(..., description="tokens the model read")
    truncated: bool = Field(..., description="the text was longer than the model reads")


class SentimentBatchResponse(BaseModel):
    results: list[SentimentResult]
    model: str
    model_version: str


class AttentionToken(BaseModel):
    text: str = Field(..., description="the token as the model read it (lowercased)")
    start: int = Field(..., description="offset of the token in the input text")
    end: int = Field(..., description="input_text[start:end] is the token as written")
    weight: float = Field(..., description="attention weight (all weights sum to 1)")


class NgramContribution(BaseModel):
    text: str = Field(..., description="the uni-, bi- and trigram ending at a token (the "
                      "trigram's text as written)")
    start: int
    end: int
    contribution: float = Field(..., description="their share of the logit (log-odds of "
                                "positive): > 0 pushes towards positive")
    negated: bool | None = Field(None, description="models whose n-gram term has a negation "
                                 "scope only: whether any of these n-grams was read as "
                                 "negated (a negator such as 'not' or 'didn't' among the few "
                                 "words before), which gives them weights of their own")
    negated_orders: list[bool] | None = Field(
        None, description="models whose n-gram term has a negation scope only: negated or "
        "not, for the uni-, bi- and trigram ending at this token (they differ when the "
        "model takes an n-gram's scope from its first word: manifest "
        "ngram.negation.scope_from)")
    before_contrast: bool | None = Field(
        None, description="models whose n-gram term has a contrast scope only: whether a "
        "contrast word ('but', 'though', ...) follows within a few words, which gives "
        "these n-grams weights of their own")


class FaithfulnessScore(BaseModel):
    explanation: Literal["attention", "ngrams"] = Field(
        ..., description="which ranking of the tokens: the attention weights, or the n-gram "
        "contributions toward the predicted label (models with an n-gram term)")
    k: float = Field(..., description="fraction of the tokens taken (at least one)")
    tokens: int = Field(..., description="tokens taken: ceil(k * tokens read)")
    comprehensiveness: float = Field(
        ..., description="score of the predicted label minus its score with those tokens "
        "removed, in [-1, 1]: higher, the explanation found what the answer rests on")
    sufficiency: float = Field(
        ..., description="score of the predicted label minus its score from those tokens "
        "alone, in [-1, 1]: lower, they suffice")


class AttentionResponse(SentimentResult):
    tokens: list[AttentionToken]
    ngram_logit: float | None = Field(
        None, description="models with a wide n-gram term only: its part of the logit, "
        "which the attention weights do not cover")
    ngrams: list[NgramContribution] | None = Field(
        None, description="models with a wide n-gram term only: each token's n-gram "
        "contribution, largest magnitude first")
    faithfulness: list[FaithfulnessScore] | None = Field(
        None, description='with "faithfulness": true only: ERASER\'s measures of the '
        "explanation, per ranking and k")


class GenerateRequest(BaseModel):
    model_config = ConfigDict(**_STRICT, json_schema_extra={"examples": [
        {"prompt": "the free spirit ", "max_new_chars": 200, "temperature": 0.7,
         "top_k": None, "top_p": 0.95, "seed": 42, "stop": ["\n\n"], "stream": False}]})
    prompt: str = Field(..., description="text to continue (lowercased by the model)")
    max_new_chars: int = Field(200, ge=1, le=MAX_NEW_CHARS_CAP,
                               description="characters to generate at most "
                               "(and at most SEQSERVE_MAX_NEW_CHARS)")
    temperature: float = Field(1.0, ge=0.0, le=10.0,
                               description="p_i ~ exp(log p_i / T); 0 = greedy")
    top_k: int | None = Field(None, ge=1, le=TOP_K_CAP,
                              description="sample among the k likeliest only")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="nucleus sampling mass")
    seed: int | None = Field(None, ge=0, le=SEED_MAX,
                             description="random seed (same seed, same text); drawn if absent")
    stop: list[str] = Field(default_factory=list, max_length=MAX_STOP_CAP,
                            description="stop sequences; the text ends before the first one")
    stream: bool = Field(False, description="Server-Sent Events, one event per chunk")
    model: str | None = Field(None, description="model name (default: the loaded generator)")


class GenerateResponse(BaseModel):
    text: str = Field(..., description="the continuation only")
    finish_reason: Literal["length", "stop"]
    generated_chars: int
    seed: int
    prompt_chars: int
    unknown_prompt_chars: int = Field(
        ..., description="prompt characters outside the model's vocabulary (read as <unk>)")
    model: str
    model_version: str


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    version: str
    task: str
    provider: str
    ready: bool
    metrics: dict


class ModelList(BaseModel):
    models: list[ModelInfo]


class ErrorBody(BaseModel):
    code: str
    message: str
    status: int
    request_id: str
    details: list[dict] | None = None
    error_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
