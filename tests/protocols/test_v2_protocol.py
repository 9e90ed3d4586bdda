"""The Open Inference Protocol v2 (KServe V2 / Triton HTTP), through ``tritonclient``
unchanged, against a real server on loopback (tiny random models): health and
readiness, metadata, sentiment inference (binary tensor data, tritonclient's default,
and plain JSON) equal to /sentiment's to 1e-6, generation equal to /generate's for
the same seed, the same limits and status codes as the REST routes in the
protocol's ``{"error": ...}`` shape, and the KServe manifest (checked offline).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import yaml
from tritonclient.utils import InferenceServerException

from bench.server import ROOT, ServerProcess

KEY = "test-key-0123456789"
TEXTS = ["good great movie, the plot was good", "awful bad film", "it was a movie"]


@pytest.fixture(scope="module")
def server(tiny_models_dir: Path) -> Iterator[ServerProcess]:
    with ServerProcess(tiny_models_dir, max_texts=8, max_new_chars=300,
                       log_level="warning") as srv:
        yield srv


@pytest.fixture(scope="module")
def tc(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    yield client
    client.close()


def _text_input(texts: list[str], binary: bool = True) -> triton.InferInput:
    t = triton.InferInput("text", [len(texts)], "BYTES")
    t.set_data_from_numpy(np.array([s.encode() for s in texts], dtype=np.object_),
                          binary_data=binary)
    return t


def test_health_and_readiness(tc: triton.InferenceServerClient):
    assert tc.is_server_live() and tc.is_server_ready()
    assert tc.is_model_ready("sentiment") and tc.is_model_ready("chargen")
    assert not tc.is_model_ready("nope")
    version = tc.get_model_metadata("chargen")["versions"][0]
    assert tc.is_model_ready("chargen", model_version=version)
    assert not tc.is_model_ready("chargen", model_version="9.9")


def test_repository_index_in_the_v2_shape(tc: triton.InferenceServerClient,
                                          server: ServerProcess):
    index = tc.get_model_repository_index()  # tritonclient's own call: POST, empty body
    assert isinstance(index, list)
    by_name = {e["name"]: e for e in index}
    assert set(by_name) == {"sentiment", "chargen"}
    for name, e in by_name.items():
        assert e == {"name": name, "version": tc.get_model_metadata(name)["versions"][0],
                     "state": "READY", "reason": ""}
    ready = httpx.post(server.url + "/v2/repository/index", json={"ready": True})
    assert ready.status_code == 200 and {e["name"] for e in ready.json()} == set(by_name)
    bad = httpx.post(server.url + "/v2/repository/index", json={"ready": "yes"})
    assert bad.status_code == 422 and isinstance(bad.json()["error"], str)  # V2 shape
    bad = httpx.post(server.url + "/v2/repository/index", content=b"{",
                     headers={"content-type": "application/json"})
    assert bad.status_code == 400 and isinstance(bad.json()["error"], str)


def test_metadata_describes_the_tensors(tc: triton.InferenceServerClient):
    server = tc.get_server_metadata()
    assert server["name"] == "seqserve" and "binary_tensor_data" in server["extensions"]
    s = tc.get_model_metadata("sentiment")
    assert s["name"] == "sentiment" and s["platform"] == "onnxruntime_onnx"
    assert s["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert s["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
                            {"name": "label", "datatype": "BYTES", "shape": [-1]}]
    g = tc.get_model_metadata("chargen")
    assert g["inputs"] == [{"name": "prompt", "datatype": "BYTES", "shape": [1]}]
    assert g["outputs"] == [{"name": "text", "datatype": "BYTES", "shape": [1]}]
    params = {p["name"]: p for p in g["parameters"]}
    assert set(params) == {"max_new_chars", "temperature", "top_k", "top_p", "seed"}
    assert all(p["minimum"] is not None and p["maximum"] is not None for p in params.values())
    with pytest.raises(InferenceServerException, match="no model named 'nope'"):
        tc.get_model_metadata("nope")


@pytest.mark.parametrize("binary", [True, False])
def test_sentiment_infer_equals_rest_sentiment(tc: triton.InferenceServerClient,
                                               server: ServerProcess, binary: bool):
    outputs = [triton.InferRequestedOutput("probabilities", binary_data=binary),
               triton.InferRequestedOutput("label", binary_data=binary)]
    res = tc.infer("sentiment", [_text_input(TEXTS, binary)], outputs=outputs,
                   request_id="r-1")
    probs = res.as_numpy("probabilities")
    labels = [x.decode() if isinstance(x, bytes) else x for x in res.as_numpy("label")]
    assert probs.dtype == np.float32 and probs.shape == (3, 2)
    rest = httpx.post(server.url + "/sentiment", json={"texts": TEXTS}).json()["results"]
    for row, label, r in zip(probs, labels, rest, strict=True):
        assert abs(row[0] - r["probabilities"]["negative"]) <= 1e-6
        assert abs(row[1] - r["probabilities"]["positive"]) <= 1e-6
        assert label == r["label"]
    answer = res.get_response()
    assert answer["id"] == "r-1" and answer["model_name"] == "sentiment"


def test_default_outputs_and_one_text(tc: triton.InferenceServerClient):
    res = tc.infer("sentiment", [_text_input(["good"])])  # all outputs, binary (the default)
    assert res.as_numpy("probabilities").shape == (1, 2)
    assert res.as_numpy("label").shape == (1,)


def test_chargen_infer_equals_rest_generate(tc: triton.InferenceServerClient,
                                            server: ServerProcess):
    prompt = triton.InferInput("prompt", [1], "BYTES")
    prompt.set_data_from_numpy(np.array([b"the good "], dtype=np.object_))
    params = {"max_new_chars": 50, "temperature": 0.8, "top_k": 10, "top_p": 0.9, "seed": 11}
    res = tc.infer("chargen", [prompt], parameters=params)
    text = res.as_numpy("text")[0]
    text = text.decode() if isinstance(text, bytes) else text
    rest = httpx.post(server.url + "/generate", json={"prompt": "the good ", **params}).json()
    assert text == rest["text"] and len(text) == 50
    meta = res.get_response()["parameters"]
    assert meta == {"seed": 11, "finish_reason": "length", "generated_chars": 50}


def _infer(server: ServerProcess, model: str, body: dict, **kw) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/{model}/infer", json=body, **kw)


def _text(data: list) -> dict:
    return {"inputs": [{"name": "text", "shape": [len(data)], "datatype": "BYTES",
                        "data": data}]}


def test_json_infer_and_drawn_seed(server: ServerProcess):
    r = _infer(server, "sentiment", _text([["nested", "rows"]]) | {"inputs": [
        {"name": "text", "shape": [2], "datatype": "BYTES", "data": [["good"], ["bad"]]}]})
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert out["probabilities"]["shape"] == [2, 2] and len(out["probabilities"]["data"]) == 4
    assert "x-queue-time-ms" in r.headers
    g = _infer(server, "chargen", {"inputs": [{"name": "prompt", "shape": [1],
                                               "datatype": "BYTES", "data": ["it "]}],
                                   "parameters": {"max_new_chars": 5}})
    assert g.status_code == 200 and 0 <= g.json()["parameters"]["seed"] < 2**53


@pytest.mark.parametrize("model, body, status, needle", [
    ("nope", _text(["x"]), 404, "no model named"),
    ("sentiment", _text(["  "]), 422, "text.0: must contain"),
    ("sentiment", _text(["a\x00b"]), 422, "text.0: must not contain NUL"),
    ("sentiment", _text(["x"] * 9), 422, "at most 8 texts"),  # SEQSERVE_MAX_TEXTS
    ("sentiment", _text([1]), 422, "BYTES elements must be strings"),
    ("sentiment", {"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES",
                               "data": ["a"]}]}, 422, "holds 3 elements"),
    ("sentiment", {"inputs": [{"name": "txt", "shape": [1], "datatype": "BYTES",
                               "data": ["a"]}]}, 422, "unknown input 'txt'"),
    ("sentiment", {"inputs": [{"name": "text", "shape": [1], "datatype": "FP32",
                               "data": [1.0]}]}, 422, "must be BYTES"),
    ("sentiment", _text(["a"]) | {"outputs": [{"name": "logits"}]}, 422, "unknown output"),
    ("sentiment", _text(["a"]) | {"parameters": {"seed": 1}}, 422, "text-generation models"),
    ("sentiment", _text(["a"]) | {"nonsense": 1}, 422, "unknown field"),
    ("sentiment", {"inputs": []}, 422, "inputs"),
    ("chargen", {"inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES",
                             "data": ["x"]}], "parameters": {"max_new_chars": 301}},
     422, "parameters.max_new_chars: at most 300"),
    ("chargen", {"inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES",
                             "data": ["x"]}], "parameters": {"top_k": 0}}, 422, "top_k"),
    ("chargen", {"inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES",
                             "data": ["x"]}], "parameters": {"seed": 2**63}}, 422, "seed"),
    ("chargen", {"inputs": [{"name": "prompt", "shape": [2], "datatype": "BYTES",
                             "data": ["x", "y"]}]}, 422, "one prompt per request"),
])
def test_errors_same_rules_protocol_shape(server: ServerProcess, model: str, body: dict,
                                          status: int, needle: str):
    r = _infer(server, model, body)
    assert r.status_code == status, r.text
    err = r.json()
    assert set(err) == {"error"} and isinstance(err["error"], str)
    assert needle in err["error"], err


def test_transport_errors_in_protocol_shape(server: ServerProcess):
    u = f"{server.url}/v2/models/sentiment/infer"
    r = httpx.post(u, content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400 and isinstance(r.json()["error"], str)
    r = httpx.post(u, content=b"{}", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and isinstance(r.json()["error"], str)
    # the binary extension's sizes are checked
    head = (b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", '
            b'"parameters": {"binary_data_size": 99}}]}')
    r = httpx.post(u, content=head + b"\x05\x00\x00\x00short",
                   headers={"inference-header-content-length": str(len(head))})
    assert r.status_code == 400 and "past the end" in r.json()["error"]
    assert httpx.get(server.url + "/v2/models/nope/ready").status_code == 404


def test_infer_needs_the_key_health_and_metadata_do_not(tiny_models_dir: Path):
    with ServerProcess(tiny_models_dir, api_key=KEY, log_level="warning") as srv:
        url = srv.url.removeprefix("http://")
        tc = triton.InferenceServerClient(url)
        try:
            assert tc.is_server_ready() and tc.is_model_ready("sentiment")
            assert tc.get_model_metadata("sentiment")["name"] == "sentiment"
            with pytest.raises(InferenceServerException, match="API key"):
                tc.infer("sentiment", [_text_input(["good"])])
            res = tc.infer("sentiment", [_text_input(["good"])],
                           headers={"Authorization": f"Bearer {KEY}"})
            assert res.as_numpy("probabilities").shape == (1, 2)
        finally:
            tc.close()


def test_kserve_manifest_matches_the_deployment():
    """deploy/k8s/kserve-inferenceservice.yaml, checked offline: a KServe
    InferenceService running the same image, port, probes and settings as the
    Deployment, speaking the V2 protocol."""
    k8s = ROOT / "deploy" / "k8s"
    isvc = yaml.safe_load((k8s / "kserve-inferenceservice.yaml").read_text())
    dep = yaml.safe_load((k8s / "deployment.yaml").read_text())
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService" and isvc["metadata"]["name"]
    predictor = isvc["spec"]["predictor"]
    assert predictor["minReplicas"] >= 1 and predictor["maxReplicas"] >= predictor["minReplicas"]
    (c,) = predictor["containers"]
    (d,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["name"] == "kserve-container"  # the name KServe routes traffic to
    assert c["image"] == d["image"]
    assert c["ports"] == [{"containerPort": 8000, "protocol": "TCP"}]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert {e["name"]: e["value"] for e in d["env"]}.items() <= env.items()  # same settings
    assert env["SEQSERVE_HOST"] == "0.0.0.0" and env["SEQSERVE_PORT"] == "8000"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["resources"] == d["resources"]
    assert c["securityContext"] == d["securityContext"]
    annotations = isvc["metadata"].get("annotations", {})
    assert annotations.get("serving.kserve.io/enable-prometheus-scraping") == "true"
