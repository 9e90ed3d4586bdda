"""The OpenAI-compatible routes, through the official ``openai`` package, unchanged,
against a real server on loopback (tiny random models): the model list, completions
(seeded replay, several prompts and choices, stop sequences), streaming equal to
the answer, and bad parameters raising its 4xx exceptions with OpenAI's error shape.
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
def test_bad_parameters_raise_openai_4xx(oai: openai.OpenAI, kwargs: dict, param: str):
    args = {"model": "chargen", "prompt": "the ", "max_tokens": 5, **kwargs}
    with pytest.raises(openai.UnprocessableEntityError) as e:
        oai.completions.create(**args)
    assert e.value.status_code == 422
    body = e.value.body
    assert isinstance(body, dict) and body["param"] == param, body
    assert body["type"] == "invalid_request_error" and body["code"] == "validation_error"
    assert param.split(".")[0] in e.value.message


def test_unknown_model_and_wrong_task_are_404(oai: openai.OpenAI):
    for model in ("nope", "sentiment"):
        with pytest.raises(openai.NotFoundError) as e:
            oai.completions.create(model=model, prompt="x", max_tokens=2)
        assert e.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_error_shape_is_openais_for_every_layer(server: ServerProcess):
    u = server.url + "/v1/completions"
    cases = [
        httpx.post(u, content=b"{", headers={"content-type": "application/json"}),  # 400
        httpx.post(u, content=b"x", headers={"content-type": "text/plain"}),  # 415 (middleware)
        httpx.post(u, json={"model": "chargen"}),  # 422: prompt missing
        httpx.get(u),  # 405
    ]
    assert [r.status_code for r in cases] == [400, 415, 422, 405]
    for r in cases:
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}, err
        assert err["message"] and err["type"] == "invalid_request_error"
    assert cases[2].json()["error"]["param"] == "prompt"
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
