"""The HTTP contract, against the committed models in models/."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from app.engine.registry import Registry

POSITIVE = ("One of the best films I have seen in years. The acting is superb, the story "
            "moving and the music wonderful. A masterpiece, I loved every minute.")
NEGATIVE = ("A dull, boring mess. The plot makes no sense, the acting is wooden and the "
            "dialogue awful. I wanted my two hours back. Avoid this waste of time.")


def _check_result(r: dict) -> None:
    assert r["label"] in ("positive", "negative")
    p = r["probabilities"]
    assert abs(p["positive"] + p["negative"] - 1) < 1e-6
    assert r["score"] == pytest.approx(p[r["label"]]) and r["score"] >= 0.5
    assert r["model"] == "sentiment" and r["model_version"]


def test_sentiment_single_and_batch_contract(client):
    r = client.post("/sentiment", json={"text": POSITIVE})
    assert r.status_code == 200
    single = r.json()
    _check_result(single)
    assert single["label"] == "positive" and not single["truncated"]
    r = client.post("/sentiment", json={"texts": [POSITIVE, NEGATIVE]})
    assert r.status_code == 200
    body = r.json()
    assert [x["label"] for x in body["results"]] == ["positive", "negative"]
    for x in body["results"]:
        _check_result(x)
    # the same text gives the same answer alone and inside a batch request
    assert body["results"][0]["probabilities"]["positive"] == pytest.approx(
        single["probabilities"]["positive"], abs=1e-5)
    for h in ("x-queue-time-ms", "x-inference-time-ms", "server-timing", "x-request-id"):
        assert h in r.headers


def test_attention_matches_sentiment_and_offsets_round_trip(client):
    text = "The plot was thin,<br /><br />but the ACTING was superb! Don't miss it."
    att = client.post("/attention", json={"text": text}).json()
    sen = client.post("/sentiment", json={"text": text}).json()
    assert att["probabilities"]["positive"] == pytest.approx(
        sen["probabilities"]["positive"], abs=1e-6)
    toks = att["tokens"]
    assert [t["text"] for t in toks][:3] == ["the", "plot", "was"]
    for t in toks:
        assert text[t["start"]:t["end"]].lower() == t["text"]
    assert sum(t["weight"] for t in toks) == pytest.approx(1.0, abs=1e-5)
    assert all(t["weight"] >= 0 for t in toks)
    assert "br" not in [t["text"] for t in toks]


def test_attention_flags_truncated_long_texts(client, models_dir):
    max_len = json.loads((models_dir / "sentiment" / "vocab.json").read_text())["max_len"]
    text = " ".join(["good"] * (max_len + 50))
    att = client.post("/attention", json={"text": text}).json()
    assert att["truncated"] is True and len(att["tokens"]) == max_len
    assert att["tokens"][-1]["end"] == len(text)  # the tail is kept


def _gen(client, **kw):
    body = {"prompt": "the free spirit ", "max_new_chars": 60, "seed": 7, **kw}
    r = client.post("/generate", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_generation_contract_and_seeded_reproducibility(client):
    a = _gen(client, temperature=0.8, top_p=0.95)
    b = _gen(client, temperature=0.8, top_p=0.95)
    c = _gen(client, temperature=0.8, top_p=0.95, seed=8)
    assert a["text"] == b["text"] and a["text"] != c["text"]
    assert a["finish_reason"] == "length" and a["generated_chars"] == len(a["text"]) == 60
    assert a["seed"] == 7 and a["prompt_chars"] == 16 and a["unknown_prompt_chars"] == 0
    drawn = _gen(client, seed=None)
    assert isinstance(drawn["seed"], int)


def test_temperature_zero_is_greedy(client, models_dir):
    out = _gen(client, temperature=0.0, max_new_chars=30)
    reg = Registry.load(__import__("app.config", fromlist=["Settings"]).Settings(
        models_dir=models_dir))
    m = reg.models["chargen"]
    sess: ort.InferenceSession = m.session
    ids, _ = m.vocab.encode("the free spirit ")
    h, c = m.zero_state(1)
    x = np.array([ids], dtype=np.int64)
    text = ""
    lens = np.array([len(ids)], dtype=np.int64)
    for _ in range(30):
        logits, h, c = sess.run(None, {"input_ids": x, "lengths": lens, "h0": h, "c0": c})
        logits[0, m.vocab.unk_id] = -np.inf
        nxt = int(np.argmax(logits[0]))
        text += m.vocab.chars[nxt]
        x, lens = np.array([[nxt]], dtype=np.int64), np.array([1], dtype=np.int64)
    assert out["text"] == text


def test_stop_sequences_end_the_text_before_the_stop(client):
    full = _gen(client, temperature=0.0, max_new_chars=200)["text"]
    stop = full[20:23]
    first = full.find(stop)
    out = _gen(client, temperature=0.0, max_new_chars=200, stop=[stop, "\u2603"])
    assert out["finish_reason"] == "stop"
    assert out["text"] == full[:first] and stop not in out["text"]


def _sse_events(text: str) -> list[dict]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = block.split("\n")
        data = [ln[len("data: "):] for ln in lines if ln.startswith("data: ")]
        assert data, block
        events.append(json.loads("".join(data)))
    return events


def test_streaming_equals_the_non_streamed_text(client):
    kw = {"temperature": 0.9, "top_k": 20, "stop": ["\n\n"], "max_new_chars": 150, "seed": 11}
    plain = _gen(client, **kw)
    r = client.post("/generate", json={"prompt": "the free spirit ", **kw, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = _sse_events(r.text)
    assert all(e["finish_reason"] is None for e in events[:-1])
    assert events[-1]["finish_reason"] == plain["finish_reason"]
    assert "".join(e["text"] for e in events) == plain["text"]
    assert events[-1]["generated_chars"] == plain["generated_chars"]


def test_prompt_characters_outside_the_vocabulary_are_reported(client):
    out = _gen(client, prompt="the ☃ spirit ✓", temperature=0.0)
    assert out["unknown_prompt_chars"] == 2 and out["generated_chars"] == 60
    assert "\ufffd" not in out["text"]  # <unk> is never generated


@pytest.mark.parametrize("path, body, field", [
    ("/sentiment", {"texts": ["a"] * 65}, "texts"),
    ("/sentiment", {"texts": []}, "texts"),
    ("/sentiment", {"text": "x", "texts": ["y"]}, "body"),
    ("/sentiment", {"text": "   \n"}, "text"),
    ("/sentiment", {"text": 5}, "text"),
    ("/attention", {}, "text"),
    ("/generate", {"prompt": "a", "max_new_chars": 100_000}, "max_new_chars"),
    ("/generate", {"prompt": "a", "temperature": -1}, "temperature"),
    ("/generate", {"prompt": "a", "top_p": 1.5}, "top_p"),
    ("/generate", {"prompt": "a", "top_k": 0}, "top_k"),
    ("/generate", {"prompt": "a", "stop": ["x"] * 9}, "stop"),
    ("/generate", {"prompt": ""}, "prompt"),
    ("/generate", {"prompt": "a", "max_new_char": 5}, "max_new_char"),
])
def test_invalid_input_is_a_422_naming_the_field(client, path, body, field):
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "validation_error" and err["message"].startswith(field)
    assert err["request_id"] == r.headers["x-request-id"]


def test_unknown_model_is_a_404(client):
    r = client.post("/sentiment", json={"text": "ok", "model": "../../etc/passwd"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_models_listing_shows_versions_metrics_and_provider(client, models_dir):
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    served = {json.loads(f.read_text())["name"] for f in models_dir.glob("*/manifest.json")}
    assert set(models) == served and {"sentiment", "chargen"} <= served
    man = json.loads((models_dir / "sentiment" / "manifest.json").read_text())
    assert models["sentiment"]["version"] == man["version"]
    assert models["sentiment"]["metrics"]["test_accuracy"] == man["metrics"]["test_accuracy"]
    assert models["chargen"]["provider"] == "CPUExecutionProvider"
    assert all(m["ready"] for m in models.values())


def test_metrics_move_after_requests(client):
    def value(text: str, name: str, **labels: str) -> float:
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                if all(f'{k}="{v}"' in line for k, v in labels.items()):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    before = client.get("/metrics").text
    client.post("/sentiment", json={"text": "fine"})
    client.post("/generate", json={"prompt": "a", "max_new_chars": 10, "seed": 1})
    client.post("/sentiment", json={"text": ""})
    after = client.get("/metrics").text
    n = "seqserve_request_duration_seconds_count"
    assert value(after, n, route="/sentiment", status="200") == \
        value(before, n, route="/sentiment", status="200") + 1
    assert value(after, n, route="/sentiment", status="422") == \
        value(before, n, route="/sentiment", status="422") + 1
    assert value(after, "seqserve_generated_chars_total") == \
        value(before, "seqserve_generated_chars_total") + 10
    assert value(after, "seqserve_time_to_first_char_seconds_count") > \
        value(before, "seqserve_time_to_first_char_seconds_count")
    assert 'seqserve_model_info{model="chargen"' in after
    assert value(after, "seqserve_batch_size_count", model="sentiment") > 0
