"""OpenTelemetry tracing (app/ops/tracing.py): off by default; when on, ``traceparent`` is
honoured and ``traceresponse`` returned, with spans for the queue wait and the
inference, checked with the SDK's in-memory exporter. Without any OpenTelemetry
package the service imports and serves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def traced(monkeypatch, make_client, tiny_models_dir):
    """(client, exporter): an app with SEQSERVE_OTEL=true and an in-memory exporter."""
    pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from app.ops import tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "PROVIDER", provider)
    return make_client(tiny_models_dir, otel=True), exporter


def test_off_by_default_no_trace_header(tiny_client):
    r = tiny_client.post("/sentiment", json={"text": "good"}, headers={"traceparent": TRACEPARENT})
    assert r.status_code == 200 and "traceresponse" not in r.headers


def test_traceparent_is_honoured_and_returned_with_queue_and_inference_spans(traced):
    c, exporter = traced
    exporter.clear()
    r = c.post("/sentiment", json={"text": "a good film"}, headers={"traceparent": TRACEPARENT})
    assert r.status_code == 200
    version, trace_id, span_id, flags = r.headers["traceresponse"].split("-")
    assert version == "00" and trace_id == TRACE_ID and flags == "01"
    spans = {s.name: s for s in exporter.get_finished_spans()}
    server = spans["POST /sentiment"]
    assert f"{server.context.trace_id:032x}" == TRACE_ID
    assert f"{server.parent.span_id:016x}" == PARENT_ID  # a child of the caller's span
    assert f"{server.context.span_id:016x}" == span_id
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["http.route"] == "/sentiment"
    queue, inference = spans["queue"], spans["inference"]
    for s in (queue, inference):
        assert s.parent.span_id == server.context.span_id
        assert s.context.trace_id == server.context.trace_id
        assert server.start_time <= s.start_time <= s.end_time <= server.end_time
    assert queue.end_time <= inference.start_time + 1000  # queue, then the ORT call
    assert inference.attributes["batch_size"] >= 1


def test_generation_records_queue_and_generate_spans(traced):
    c, exporter = traced
    exporter.clear()
    r = c.post("/generate", json={"prompt": "the ", "max_new_chars": 20},
               headers={"traceparent": TRACEPARENT})
    assert r.status_code == 200
    names = [s.name for s in exporter.get_finished_spans()]
    assert {"queue", "generate", "POST /generate"} <= set(names)
    gen = next(s for s in exporter.get_finished_spans() if s.name == "generate")
    assert gen.attributes["chars"] == 20 and f"{gen.context.trace_id:032x}" == TRACE_ID


def test_without_a_traceparent_a_new_trace_starts_and_errors_are_marked(traced):
    c, exporter = traced
    exporter.clear()
    r = c.get("/v1/models/nothing")
    assert r.status_code == 404 and len(r.headers["traceresponse"].split("-")[1]) == 32
    (server,) = exporter.get_finished_spans()
    assert server.parent is None and server.attributes["http.response.status_code"] == 404


# What the otel extra adds: the SDK and the exporter. (opentelemetry-api itself may be
# there without it: recent FastAPI versions depend on it.)
BLOCK_OTEL = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.startswith(("opentelemetry.sdk", "opentelemetry.exporter")):
                raise ImportError("blocked: " + name)
    sys.meta_path.insert(0, Block())
""")


def test_the_service_imports_and_serves_without_opentelemetry(tiny_models_dir):
    code = BLOCK_OTEL + textwrap.dedent(f"""
        from fastapi.testclient import TestClient
        from app.config import Settings
        from app.main import create_app
        from app.ops import tracing
        assert not tracing.available()
        with TestClient(create_app(Settings(models_dir={str(tiny_models_dir)!r}))) as c:
            assert c.post("/sentiment", json={{"text": "good"}}).status_code == 200
        try:
            create_app(Settings(models_dir={str(tiny_models_dir)!r}, otel=True))
        except RuntimeError as e:
            assert "otel extra" in str(e)
        else:
            raise AssertionError("otel=True without the packages must fail clearly")
        print("OK")
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQSERVE_")}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]


def test_a_global_provider_gets_one_server_span_a_request(tiny_models_dir):
    """With the provider installed globally (``opentelemetry-instrument``, or the one the
    service installs itself), a request is traced once: the service's own server span and
    its children, not a second set from FastAPI's built-in telemetry (FastAPI >= 0.16x
    traces every request, its dependencies and serialization, once a provider is set).
    In a subprocess: the global provider can be set only once per process."""
    pytest.importorskip("opentelemetry.sdk.trace")
    code = textwrap.dedent(f"""
        import json
        from fastapi.testclient import TestClient
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter)
        from app.config import Settings
        from app.main import create_app
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        app = create_app(Settings(models_dir={str(tiny_models_dir)!r}, otel=True))
        with TestClient(app) as c:
            exporter.clear()
            assert c.post("/sentiment", json={{"text": "good"}}).status_code == 200
            assert c.post("/sentiment", json={{"text": 5}}).status_code == 422
        print(json.dumps(sorted(s.name for s in exporter.get_finished_spans())))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEQSERVE_", "OTEL_"))}
    env["OTEL_TRACES_EXPORTER"] = "none"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    names = json.loads(r.stdout.strip().splitlines()[-1])  # the sorted span names
    assert names == ["POST /sentiment", "POST /sentiment", "inference", "queue"], names
