"""Readiness before and after warm-up, and the provider choice."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.config import Device, Settings
from app.engine.registry import ModelLoadError, Registry
from app.main import create_app
from seqcore.runtime import CPU, ProviderError, choose_providers


def test_not_ready_before_models_are_loaded_then_ready(tiny_models_dir):
    app = create_app(Settings(models_dir=tiny_models_dir))
    c = TestClient(app)  # no lifespan yet: nothing loaded
    r = c.get("/readyz")
    assert r.status_code == 503 and "not loaded" in r.json()["reason"]
    assert c.get("/healthz").status_code == 200
    with TestClient(app) as live:
        assert live.get("/readyz").status_code == 200
        assert all(m["ready"] for m in live.get("/v1/models").json()["models"])


def test_registry_marks_models_warm_only_after_warmup(tiny_models_dir):
    reg = Registry.load(Settings(models_dir=tiny_models_dir, warmup=False))
    assert not reg.ready
    reg.warmup()
    assert reg.ready
    # with SEQSERVE_WARMUP on, the warm-up is one of the checks the load runs
    assert Registry.load(Settings(models_dir=tiny_models_dir)).ready


def test_cuda_required_but_missing_fails_with_a_clear_message(monkeypatch):
    import seqcore.runtime as runtime

    monkeypatch.setattr(runtime.ort, "get_available_providers", lambda: [CPU])
    with pytest.raises(ProviderError, match="SEQSERVE_DEVICE=cuda"):
        choose_providers(Device.cuda)
    assert choose_providers(Device.auto) == [CPU]


def test_missing_models_folder_names_the_path(tmp_path):
    with pytest.raises(ModelLoadError, match=str(tmp_path / "nope")):
        Registry.load(Settings(models_dir=tmp_path / "nope"))
