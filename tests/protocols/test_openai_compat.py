"""The OpenAI-compatible routes, through the official ``openai`` package, unchanged,
against a real server on loopback (tiny random models): the model list, completions
(seeded replay, several prompts and choices, stop sequences), chat completions
(streamed and not), streaming equal to the answer, the vLLM / TGI extension fields
(each one's effect), and bad parameters raising its 4xx exceptions with OpenAI's
error shape (400 for validation, as OpenAI answers it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from bench.server import ServerProcess

KEY = "test-key-0123456789"


@pytest.fixture(scope="module")
def server(tiny_models_dir: Path) -> Iterator[ServerProcess]:
    with ServerProcess(tiny_models_dir, max_new_chars=300, log_level="warning") as srv:
        yield srv


@pytest.fixture(scope="module")
def oai(server: ServerProcess) -> openai.OpenAI:
    # max_retries=0: a 5xx must show, not be retried into a pass
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_models_list_in_openai_shape_with_the_detail_fields(oai: openai.OpenAI,
                                                           server: ServerProcess):
    page = oai.models.list()
    cards = {m.id: m for m in page.data}
    assert set(cards) == {"sentiment", "chargen"}
    gen = cards["chargen"]
    assert gen.object == "model" and gen.owned_by == "seqserve" and gen.created > 0
    extra = gen.model_dump()
    assert extra["task"] == "text-generation" and extra["version"].startswith("0.0.test")
    assert {"provider", "ready", "metrics", "export_checks", "name"} <= set(extra)
    raw = server.get("/v1/models").json()
    assert raw["object"] == "list" and raw["models"] == raw["data"]  # earlier clients' key

    assert oai.models.retrieve("sentiment").id == "sentiment"
    with pytest.raises(openai.NotFoundError) as e:
        oai.models.retrieve("nope")
    assert e.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_same_seed_same_text_and_usage_in_characters(oai: openai.OpenAI):
    a = oai.completions.create(model="chargen", prompt="the good ", max_tokens=40, seed=7,
                               temperature=0.9)
    b = oai.completions.create(model="chargen", prompt="the good ", max_tokens=40, seed=7,
                               temperature=0.9)
    assert a.object == "text_completion" and a.model == "chargen"
    assert a.choices[0].text == b.choices[0].text
    choice = a.choices[0]
    assert choice.index == 0 and choice.logprobs is None and choice.finish_reason == "length"
    assert len(choice.text) == 40
    assert a.usage is not None
    assert (a.usage.prompt_tokens, a.usage.completion_tokens) == (9, 40)
    assert a.usage.total_tokens == 49
    c = oai.completions.create(model="chargen", prompt="the good ", max_tokens=40, seed=8,
                               temperature=0.9)
    assert c.choices[0].text != a.choices[0].text


def test_drawn_seed_is_returned_below_2_53_and_replays(oai: openai.OpenAI):
    a = oai.completions.create(model="chargen", prompt="it was ", max_tokens=30)
    seed = a.model_dump()["seed"]
    assert 0 <= seed < 2**53
    b = oai.completions.create(model="chargen", prompt="it was ", max_tokens=30, seed=seed)
    assert b.choices[0].text == a.choices[0].text


def test_stream_equals_the_answer(oai: openai.OpenAI):
    args = dict(model="chargen", prompt="a plot ", max_tokens=60, seed=3, temperature=0.8,
                top_p=0.95)
    whole = oai.completions.create(**args).choices[0].text  # type: ignore[call-overload]
    chunks = list(oai.completions.create(**args, stream=True,  # type: ignore[call-overload]
                                         stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole and len(chunks) >= 2
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and all(f is None for f in finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 60


def test_stream_ends_with_done(server: ServerProcess):
    with httpx.stream("POST", server.url + "/v1/completions", timeout=30, json={
            "model": "chargen", "prompt": "x", "max_tokens": 5, "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)


def test_prompt_list_and_n_give_one_choice_each_replayable_alone(oai: openai.OpenAI):
    r = oai.completions.create(model="chargen", prompt=["the ", "a "], n=2, max_tokens=25,
                               seed=100)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert r.usage is not None and r.usage.prompt_tokens == len("the ") + len("a ")
    assert r.usage.completion_tokens == 100
    # choice i used seed + i: each replays alone
    for i, prompt in enumerate(["the ", "the ", "a ", "a "]):
        alone = oai.completions.create(model="chargen", prompt=prompt, max_tokens=25,
                                       seed=100 + i)
        assert alone.choices[0].text == r.choices[i].text

    streamed: dict[int, str] = {}
    for chunk in oai.completions.create(model="chargen", prompt=["the ", "a "], n=2,
                                        max_tokens=25, seed=100, stream=True):
        for c in chunk.choices:
            streamed[c.index] = streamed.get(c.index, "") + c.text
    assert streamed == {c.index: c.text for c in r.choices}


def test_stop_sequence_ends_the_text(oai: openai.OpenAI):
    r = oai.completions.create(model="chargen", prompt="the ", max_tokens=200, seed=1,
                               temperature=0)
    full = r.choices[0].text
    stop = full[5:7]
    s = oai.completions.create(model="chargen", prompt="the ", max_tokens=200, seed=1,
                               temperature=0, stop=stop)
    assert s.choices[0].finish_reason == "stop"
    assert s.choices[0].text == full[:full.index(stop)]


@pytest.mark.parametrize("kwargs, param", [
    ({"extra_body": {"min_tokens": 6}}, "min_tokens"),  # more than max_tokens (5)
    ({"extra_body": {"min_tokens": -1}}, "min_tokens"),
    ({"extra_body": {"repetition_penalty": 0}}, "repetition_penalty"),
    ({"extra_body": {"repetition_penalty": 11}}, "repetition_penalty"),
    ({"extra_body": {"min_p": 1.5}}, "min_p"),
    ({"extra_body": {"max_completion_tokens": 4}}, "max_completion_tokens"),  # != max_tokens
    ({"extra_body": {"ignore_eos": "yes"}}, "ignore_eos"),
    ({"stream_options": {"include_usage": True, "continuous_usage": True}},
     "stream_options.continuous_usage"),  # a typo is still caught
    ({"prompt": [1, 2, 10_000]}, "prompt"),  # a token id past the vocabulary
    ({"prompt": [[3], [4, 100_000]]}, "prompt.1"),
    ({"temperature": -1}, "temperature"),
    ({"temperature": 11}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"n": 0}, "n"),
    ({"n": 17}, "n"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 301}, "max_tokens"),  # over the server's SEQSERVE_MAX_NEW_CHARS
    ({"seed": -1}, "seed"),
    ({"seed": 2**63}, "seed"),
    ({"echo": True}, "echo"),
    ({"logprobs": 2}, "logprobs"),
    ({"extra_body": {"top_k": 0}}, "top_k"),
    ({"extra_body": {"top_k": 1_000_001}}, "top_k"),
    ({"extra_body": {"nonsense": 1}}, "nonsense"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": ["ok", "a\x00b"]}, "prompt.1"),
    ({"stop": [""]}, "stop.0"),
])
def test_bad_parameters_raise_openai_400(oai: openai.OpenAI, kwargs: dict, param: str):
    args = {"model": "chargen", "prompt": "the ", "max_tokens": 5, **kwargs}
    with pytest.raises(openai.BadRequestError) as e:
        oai.completions.create(**args)
    assert e.value.status_code == 400
    body = e.value.body
    assert isinstance(body, dict) and body["param"] == param, body
    assert body["type"] == "invalid_request_error" and body["code"] == "validation_error"
    assert param.split(".")[0] in e.value.message


def test_unknown_model_is_404_and_a_sentiment_model_a_clear_400(oai: openai.OpenAI):
    with pytest.raises(openai.NotFoundError) as e:
        oai.completions.create(model="nope", prompt="x", max_tokens=2)
    assert e.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    for call in (lambda: oai.completions.create(model="sentiment", prompt="x", max_tokens=2),
                 lambda: oai.chat.completions.create(
                     model="sentiment", messages=[{"role": "user", "content": "x"}])):
        with pytest.raises(openai.BadRequestError) as e:
            call()
        body = e.value.body
        assert body["code"] == "model_not_supported" and body["param"] == "model"  # type: ignore[index]
        assert "sentiment" in e.value.message and "/sentiment" in e.value.message


def test_error_shape_is_openais_for_every_layer(server: ServerProcess):
    u = server.url + "/v1/completions"
    chat = server.url + "/v1/chat/completions"
    cases = [
        httpx.post(u, content=b"{", headers={"content-type": "application/json"}),  # 400
        httpx.post(u, content=b"x", headers={"content-type": "text/plain"}),  # 415 (middleware)
        httpx.post(u, json={"model": "chargen"}),  # validation (prompt missing): 400
        httpx.get(u),  # 405
        httpx.post(chat, json={"model": "chargen", "messages": []}),  # validation: 400
        httpx.get(server.url + "/v1/nothing"),  # no such route: 404, OpenAI's shape too
        httpx.post(server.url + "/v1/embeddings", json={"model": "chargen", "input": "x"}),
    ]
    assert [r.status_code for r in cases] == [400, 415, 400, 405, 400, 404, 404]
    for r in cases:
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}, err
        assert err["message"] and err["type"] == "invalid_request_error"
    assert cases[2].json()["error"]["param"] == "prompt"
    assert cases[2].json()["error"]["code"] == "validation_error"
    assert cases[4].json()["error"]["param"] == "messages"
    # the rest of the API keeps its own shape
    assert "status" in httpx.post(server.url + "/generate", json={}).json()["error"]


def test_api_key(tiny_models_dir: Path):
    with ServerProcess(tiny_models_dir, api_key=KEY, log_level="warning") as srv:
        bad = openai.OpenAI(base_url=srv.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as e:
            bad.completions.create(model="chargen", prompt="x", max_tokens=2)
        assert e.value.body["type"] == "authentication_error"  # type: ignore[index]
        good = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0)
        assert len(good.completions.create(model="chargen", prompt="x", max_tokens=3)
                   .choices[0].text) == 3
        assert {m.id for m in bad.models.list()} == {"sentiment", "chargen"}  # open route


def test_health_is_liveness_as_vllm_and_tgi_serve_it(server: ServerProcess):
    r = httpx.get(server.url + "/health")
    assert r.status_code == 200 and r.json() == httpx.get(server.url + "/healthz").json()
    assert httpx.head(server.url + "/health").status_code == 200


def test_models_list_the_endpoints_that_serve_each_model(oai: openai.OpenAI):
    cards = {m.id: m.model_dump() for m in oai.models.list().data}
    assert {"/v1/completions", "/v1/chat/completions"} <= set(cards["chargen"]["endpoints"])
    assert "/v1/chat/completions" not in cards["sentiment"]["endpoints"]
    assert "/sentiment" in cards["sentiment"]["endpoints"]


# -- the vLLM / TGI extension fields, each by its effect ---------------------------------

def _greedy(oai: openai.OpenAI, prompt: str, n: int, **extra) -> openai.types.Completion:
    return oai.completions.create(model="chargen", prompt=prompt, max_tokens=n, seed=1,
                                  temperature=0, extra_body=extra or None)


def test_min_tokens_keeps_a_stop_sequence_from_ending_the_text_early(oai: openai.OpenAI):
    full = _greedy(oai, "the ", 200).choices[0].text
    # a one-character stop that occurs early and again after the minimum
    stop = next(c for c in full[:10] if c in full[60:])
    early = _greedy(oai, "the ", 200, stop=stop).choices[0]
    assert early.finish_reason == "stop" and early.text == full[:full.index(stop)]
    assert len(early.text) < 10
    late = _greedy(oai, "the ", 200, stop=stop, min_tokens=60).choices[0]
    assert late.finish_reason == "stop"
    # the first stop that completes at the 60th character or later ends it
    assert late.text == full[:full.index(stop, 59)]
    assert len(late.text) >= 59 and stop in late.text  # earlier stops were passed over
    # streamed: the same text
    streamed = "".join(c.choices[0].text for c in oai.completions.create(
        model="chargen", prompt="the ", max_tokens=200, seed=1, temperature=0, stop=stop,
        stream=True, extra_body={"min_tokens": 60}) if c.choices)
    assert streamed == late.text
    # no stop sequence: min_tokens changes nothing (the length ends the text)
    assert _greedy(oai, "the ", 50, min_tokens=50).choices[0].text == full[:50]


@pytest.fixture(scope="module")
def reference_model(tiny_models_dir: Path):
    from app.config import Settings
    from app.engine.registry import load_model

    return load_model(tiny_models_dir / "chargen", Settings(models_dir=tiny_models_dir))


def _greedy_with_penalty(model, prompt: str, n: int, penalty: float) -> str:
    """Greedy decoding with the Hugging Face / vLLM repetition penalty, written out
    step by step on the ONNX model: the reference the server must match."""
    import numpy as np

    ids = model.vocab.encode(prompt)[0]
    h, c = model.zero_state(1)
    logits, h, c = model.run(np.array([ids], dtype=np.int64),
                             np.array([len(ids)], dtype=np.int64), h, c)
    seen, out = set(ids), []
    for _ in range(n):
        z = logits[0].astype(np.float64)
        for i in seen:
            z[i] = z[i] / penalty if z[i] > 0 else z[i] * penalty
        z[model.vocab.unk_id] = -np.inf
        idx = int(np.argmax(z))
        out.append(model.vocab.chars[idx])
        seen.add(idx)
        logits, h, c = model.run(np.array([[idx]], dtype=np.int64),
                                 np.array([1], dtype=np.int64), h, c)
    return "".join(out)


def test_repetition_penalty_matches_the_reference_rule(oai: openai.OpenAI, reference_model):
    plain = _greedy(oai, "the good ", 80).choices[0].text
    assert _greedy_with_penalty(reference_model, "the good ", 80, 1.0) == plain
    assert _greedy(oai, "the good ", 80, repetition_penalty=1.0).choices[0].text == plain
    penalised = _greedy(oai, "the good ", 80, repetition_penalty=3.0).choices[0].text
    assert penalised != plain
    assert penalised == _greedy_with_penalty(reference_model, "the good ", 80, 3.0)


def test_min_p_one_keeps_only_the_likeliest_character(oai: openai.OpenAI):
    greedy = _greedy(oai, "a plot ", 60).choices[0].text
    # at temperature 1 only characters as likely as the likeliest survive min_p = 1
    sampled = oai.completions.create(model="chargen", prompt="a plot ", max_tokens=60, seed=5,
                                     temperature=1.0, extra_body={"min_p": 1.0})
    assert sampled.choices[0].text == greedy
    free = oai.completions.create(model="chargen", prompt="a plot ", max_tokens=60, seed=5,
                                  temperature=1.0)
    assert free.choices[0].text != greedy  # without it, the same seed samples elsewhere
    same = oai.completions.create(model="chargen", prompt="a plot ", max_tokens=60, seed=5,
                                  temperature=1.0, extra_body={"min_p": 0.0})
    assert same.choices[0].text == free.choices[0].text  # 0: off


def test_max_completion_tokens_is_max_tokens(oai: openai.OpenAI):
    r = oai.completions.create(model="chargen", prompt="the ", seed=2,
                               extra_body={"max_completion_tokens": 33})
    assert len(r.choices[0].text) == 33 and r.choices[0].finish_reason == "length"
    both = oai.completions.create(model="chargen", prompt="the ", seed=2, max_tokens=33,
                                  extra_body={"max_completion_tokens": 33})
    assert both.choices[0].text == r.choices[0].text
    with pytest.raises(openai.BadRequestError) as e:  # over SEQSERVE_MAX_NEW_CHARS
        oai.completions.create(model="chargen", prompt="the ",
                               extra_body={"max_completion_tokens": 301})
    assert e.value.body["param"] == "max_completion_tokens"  # type: ignore[index]


def test_continuous_usage_stats_put_usage_on_every_chunk(oai: openai.OpenAI):
    chunks = list(oai.completions.create(
        model="chargen", prompt="it was ", max_tokens=50, seed=4, stream=True,
        stream_options={"include_usage": True, "continuous_usage_stats": True}))  # type: ignore[typeddict-unknown-key]
    assert all(c.usage is not None for c in chunks)
    so_far = 0
    for c in chunks[:-1]:
        so_far += sum(len(ch.text) for ch in c.choices)
        assert c.usage.prompt_tokens == 7 and c.usage.completion_tokens == so_far  # type: ignore[union-attr]
        assert c.usage.total_tokens == 7 + so_far  # type: ignore[union-attr]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 50  # type: ignore[union-attr]
    # without it, only the last chunk has usage
    plain = list(oai.completions.create(model="chargen", prompt="it was ", max_tokens=50,
                                        seed=4, stream=True,
                                        stream_options={"include_usage": True}))
    assert [c.usage is not None for c in plain] == [False] * (len(plain) - 1) + [True]


def test_ignore_eos_and_skip_special_tokens_are_accepted_and_change_nothing(
        oai: openai.OpenAI):
    a = oai.completions.create(model="chargen", prompt="the ", max_tokens=40, seed=9)
    b = oai.completions.create(model="chargen", prompt="the ", max_tokens=40, seed=9,
                               extra_body={"ignore_eos": True, "skip_special_tokens": False})
    assert a.choices[0].text == b.choices[0].text and len(b.choices[0].text) == 40


def test_token_id_prompts_are_characters_of_the_vocabulary(oai: openai.OpenAI,
                                                           reference_model):
    vocab = reference_model.vocab
    ids = vocab.encode("the good ")[0]
    text = oai.completions.create(model="chargen", prompt="the good ", max_tokens=30, seed=3)
    by_ids = oai.completions.create(model="chargen", prompt=ids, max_tokens=30, seed=3)
    assert by_ids.choices[0].text == text.choices[0].text
    assert by_ids.usage is not None and by_ids.usage.prompt_tokens == len(ids)
    two = oai.completions.create(model="chargen", prompt=[ids, vocab.encode("a ")[0]],
                                 max_tokens=30, seed=3)
    assert two.choices[0].text == text.choices[0].text and len(two.choices) == 2


# -- chat completions -----------------------------------------------------------------

MESSAGES = [{"role": "system", "content": "a film review."},
            {"role": "user", "content": [{"type": "text", "text": "the plot "},
                                         {"type": "text", "text": "was"}]}]


def test_chat_completion_is_the_completion_of_the_template(oai: openai.OpenAI):
    r = oai.chat.completions.create(model="chargen", messages=MESSAGES, max_tokens=40, seed=6,
                                    temperature=0.8)  # type: ignore[arg-type]
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    (choice,) = r.choices
    assert choice.message.role == "assistant" and choice.finish_reason == "length"
    prompt = "a film review.\nthe plot was"  # the contents joined by newlines
    same = oai.completions.create(model="chargen", prompt=prompt, max_tokens=40, seed=6,
                                  temperature=0.8)
    assert choice.message.content == same.choices[0].text
    assert r.usage is not None and r.usage.prompt_tokens == len(prompt)
    assert r.usage.completion_tokens == 40


def test_chat_completion_streamed_equals_the_answer(oai: openai.OpenAI):
    args = dict(model="chargen", messages=MESSAGES, max_completion_tokens=50, seed=8, n=2,
                stop=["zz"], extra_body={"min_tokens": 3})
    whole = oai.chat.completions.create(**args)  # type: ignore[call-overload]
    chunks = list(oai.chat.completions.create(**args, stream=True,  # type: ignore[call-overload]
                                              stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    texts: dict[int, str] = {}
    roles: dict[int, str] = {}
    finishes: dict[int, str] = {}
    for c in chunks:
        for ch in c.choices:
            if ch.delta.role:
                roles[ch.index] = ch.delta.role
            texts[ch.index] = texts.get(ch.index, "") + (ch.delta.content or "")
            if ch.finish_reason:
                finishes[ch.index] = ch.finish_reason
    assert roles == {0: "assistant", 1: "assistant"}
    assert texts == {c.index: c.message.content for c in whole.choices}
    assert finishes == {c.index: c.finish_reason for c in whole.choices}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert whole.usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_chat_template_with_role_prefixes(tiny_models_dir: Path):
    with ServerProcess(tiny_models_dir, chat_role_prefixes=True, log_level="warning") as srv:
        oai = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
        r = oai.chat.completions.create(model="chargen", messages=MESSAGES, max_tokens=20,
                                        seed=6)  # type: ignore[arg-type]
        prompt = "system: a film review.\nuser: the plot was\nassistant: "
        same = oai.completions.create(model="chargen", prompt=prompt, max_tokens=20, seed=6)
        assert r.choices[0].message.content == same.choices[0].text
        assert r.usage is not None and r.usage.prompt_tokens == len(prompt)
