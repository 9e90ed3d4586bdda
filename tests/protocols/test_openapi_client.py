"""The OpenAPI document generates a working client: ``openapi-python-client`` builds
one from a live server's /openapi.json (with no warning), every generated module
imports, and its typed calls work against that server (a JSON classification, the
stream route as text, the bearer key); operation ids read well and are unique, the
stream events have their schema, and the security scheme is there only with a key.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.server import ServerProcess

KEY = "test-key-0123456789"
PACKAGE = "seqserve_generated"


@pytest.fixture(scope="module")
def server(tiny_models_dir: Path) -> Iterator[ServerProcess]:
    with ServerProcess(tiny_models_dir, api_key=KEY, log_level="warning") as srv:
        yield srv


@pytest.fixture(scope="module")
def spec(server: ServerProcess) -> dict:
    return server.get("/openapi.json").json()


def _operations(doc: dict) -> dict[tuple[str, str], dict]:
    return {(m.upper(), p): op for p, item in doc["paths"].items() for m, op in item.items()}


def test_operation_ids_read_well_and_are_unique(spec: dict):
    ops = _operations(spec)
    ids = [op["operationId"] for op in ops.values()]
    assert len(ids) == len(set(ids))
    expected = {("POST", "/sentiment"): "classify_sentiment",
                ("POST", "/attention"): "explain_attention",
                ("POST", "/generate"): "generate_text",
                ("POST", "/generate/stream"): "generate_text_stream",
                ("GET", "/v1/models"): "list_models", ("GET", "/v1/models/{model_id}"): "get_model",
                ("POST", "/v1/completions"): "create_completion",
                ("POST", "/v1/chat/completions"): "create_chat_completion",
                ("GET", "/healthz"): "check_liveness", ("GET", "/readyz"): "check_readiness",
                ("GET", "/health"): "check_health",
                ("GET", "/metrics"): "get_metrics",
                ("POST", "/v2/models/{model_name}/infer"): "v2_model_infer",
                ("GET", "/v2/health/ready"): "v2_server_ready"}
    assert {k: ops[k]["operationId"] for k in expected} == expected
    assert all("/" not in i and not i.endswith(("_post", "_get")) for i in ids), ids


def test_the_openai_extension_fields_are_documented(spec: dict):
    from app.protocols.openai.schemas import EXTENSION_FIELDS

    schemas = spec["components"]["schemas"]
    for name in ("CompletionRequest", "ChatCompletionRequest"):
        schema = schemas[name]
        assert schema["x-extensions"] == list(EXTENSION_FIELDS)
        for field in EXTENSION_FIELDS:
            if "." in field:  # stream_options.continuous_usage_stats
                head, _, tail = field.partition(".")
                props = schemas["StreamOptions"]["properties"]
                assert "extension" in props[tail]["description"], tail
                continue
            assert "extension" in schema["properties"][field]["description"], (name, field)
    assert "422" not in spec["paths"]["/v1/completions"]["post"]["responses"]  # 400 there
    assert "400" in spec["paths"]["/v1/chat/completions"]["post"]["responses"]


def test_streams_have_an_event_schema(spec: dict):
    schemas = spec["components"]["schemas"]
    for path, model in (("/generate/stream", "GenerateStreamEvent"),
                        ("/generate", "GenerateStreamEvent"), ("/v1/completions", "Completion")):
        media = spec["paths"][path]["post"]["responses"]["200"]["content"]["text/event-stream"]
        assert "type" not in media["schema"]  # the whole stream: a generated client's text
        data = media["itemSchema"]["properties"]["data"]  # one event, as FastAPI writes it
        assert data["contentMediaType"] == "application/json"
        assert data["contentSchema"] == {"$ref": f"#/components/schemas/{model}"}
        assert model in schemas
    assert set(spec["paths"]["/generate/stream"]["post"]["responses"]["200"]["content"]) == {
        "text/event-stream"}
    assert "InferRequest" in schemas  # the V2 infer body, parsed by the route itself


def test_bearer_scheme_only_with_a_key(spec: dict):
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": spec["components"][
            "securitySchemes"]["bearerAuth"]["description"]}
    ops = _operations(spec)
    assert ops[("POST", "/sentiment")]["security"] == [{"bearerAuth": []}]
    assert ops[("POST", "/v1/completions")]["security"] == [{"bearerAuth": []}]
    assert "security" not in ops[("GET", "/healthz")]
    from app.config import Settings
    from app.main import create_app

    keyless = create_app(Settings(models_dir=Path("unused"))).openapi()
    assert "securitySchemes" not in keyless.get("components", {})
    assert all("security" not in op for op in _operations(keyless).values())


def test_seed_ranges_are_documented(spec: dict):
    schemas = spec["components"]["schemas"]
    for name in ("GenerateRequest", "CompletionRequest"):
        seed = schemas[name]["properties"]["seed"]
        (num,) = [s for s in seed.get("anyOf", [seed]) if s.get("type") == "integer"]
        assert (num["minimum"], num["maximum"]) == (0, 2**63 - 1), name


@pytest.fixture(scope="module")
def generated(spec: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    root = tmp_path_factory.mktemp("openapi_client")
    (root / "openapi.json").write_text(json.dumps(spec))
    # no post hooks: the default runs ruff on the output, not needed to use it
    (root / "config.yaml").write_text(f"post_hooks: []\npackage_name_override: {PACKAGE}\n"
                                      "project_name_override: seqserve-generated\n")
    out = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path",
         str(root / "openapi.json"), "--config", str(root / "config.yaml"), "--meta", "none",
         "--output-path", str(root / PACKAGE), "--fail-on-warning"],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def test_every_generated_module_imports(generated: object):
    names = [m.name for m in pkgutil.walk_packages(generated.__path__,  # type: ignore[attr-defined]
                                                   PACKAGE + ".")]
    for name in names:
        importlib.import_module(name)
    assert f"{PACKAGE}.api.inference.classify_sentiment" in names


def test_generated_client_makes_json_calls(generated: object, server: ServerProcess):
    from seqserve_generated import AuthenticatedClient, Client  # type: ignore[import-not-found]
    from seqserve_generated.api.inference import (  # type: ignore[import-not-found]
        classify_sentiment,
        generate_text,
        generate_text_stream,
    )
    from seqserve_generated.api.operations import list_models  # type: ignore[import-not-found]
    from seqserve_generated.models import (  # type: ignore[import-not-found]
        ErrorResponse,
        GenerateRequest,
        GenerateResponse,
        SentimentRequest,
        SentimentResult,
    )

    with AuthenticatedClient(base_url=server.url, token=KEY) as c:
        r = classify_sentiment.sync(client=c, body=SentimentRequest(text="good great movie"))
        assert isinstance(r, SentimentResult)
        rest = httpx.post(server.url + "/sentiment", json={"text": "good great movie"},
                          headers={"authorization": f"Bearer {KEY}"}).json()
        assert r.probabilities.positive == rest["probabilities"]["positive"]
        assert r.label.value == rest["label"]

        g = generate_text.sync(client=c, body=GenerateRequest(prompt="the ", max_new_chars=20,
                                                              seed=4))
        assert isinstance(g, GenerateResponse) and len(g.text) == 20 and g.seed == 4
        events = generate_text_stream.sync(client=c, body=GenerateRequest(
            prompt="the ", max_new_chars=20, seed=4))
        assert isinstance(events, str)
        texts = [json.loads(line[6:])["text"] for line in events.splitlines()
                 if line.startswith("data: ")]
        assert "".join(texts) == g.text

        models = list_models.sync(client=c)
        assert {m.id for m in models.data} == {"sentiment", "chargen"}

    with Client(base_url=server.url) as anonymous:  # no key: the typed 401
        denied = classify_sentiment.sync(client=anonymous, body=SentimentRequest(text="good"))
        assert isinstance(denied, ErrorResponse) and denied.error.code == "unauthorized"
