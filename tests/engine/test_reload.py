"""Hot reload (app/engine/reload.py): SIGHUP and POST /v1/models/{name}/reload load a changed
folder beside the serving version, check it, and swap it in; requests and streams
already under way finish on the old version; a version that fails leaves the old one
serving and says why (log, /v1/models, metric); nothing is lost under load."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from bench.server import ServerProcess
from tests.conftest import build_tiny_models

KEY = "reload-test-key"


@pytest.fixture(scope="module")
def second_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both tiny models again, other weights (so other graph hashes and versions)."""
    return build_tiny_models(tmp_path_factory.mktemp("tiny_models_v2"), seed=1)


@pytest.fixture
def models(tiny_models_dir: Path, tmp_path: Path) -> Path:
    """A models folder of the test's own, to change under the server."""
    out = tmp_path / "models"
    shutil.copytree(tiny_models_dir, out)
    return out


def replace(models: Path, source: Path, name: str) -> None:
    """The folder ``name`` gets ``source``'s files (a new version)."""
    for f in (source / name).iterdir():
        shutil.copy2(f, models / name / f.name)


def version_of(client, name: str) -> dict:
    return client.get(f"/v1/models/{name}").json()


def test_unchanged_folder_is_not_reloaded_and_unknown_name_is_404(make_client, models):
    c = make_client(models)
    r = c.post("/v1/models/sentiment/reload")
    assert r.status_code == 200 and r.json()["result"] == "unchanged", r.text
    assert r.json()["reload_error"] is None
    assert c.post("/v1/models/nothing/reload").status_code == 404


def test_changed_folder_is_a_new_version_swapped_in(make_client, models, second_version):
    c = make_client(models)
    before = version_of(c, "sentiment")
    old_batcher = c.app.state.seqserve.batchers["sentiment"]
    replace(models, second_version, "sentiment")
    r = c.post("/v1/models/sentiment/reload")
    assert r.status_code == 200 and r.json()["result"] == "reloaded", r.text
    after = version_of(c, "sentiment")
    assert after["version"] != before["version"] and after["fingerprint"] != before["fingerprint"]
    assert r.json()["previous_version"] == before["version"]
    assert r.json()["version"] == after["version"]
    assert c.post("/sentiment", json={"text": "good"}).json()["model_version"] == after["version"]
    assert c.app.state.seqserve.batchers["sentiment"] is not old_batcher
    deadline = time.monotonic() + 5
    while old_batcher._threads[0].is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.is_alive() for t in old_batcher._threads)  # retired once drained
    # the generator, untouched, is unchanged
    assert c.post("/v1/models/chargen/reload").json()["result"] == "unchanged"
    assert c.get("/readyz").status_code == 200


def test_a_failed_reload_leaves_the_old_version_serving_and_says_why(make_client, models,
                                                                      capture_log):
    c = make_client(models)
    log = capture_log()
    before = version_of(c, "sentiment")
    graph = models / "sentiment" / "model.onnx"
    original = graph.read_bytes()
    graph.write_bytes(b"not an onnx graph")
    r = c.post("/v1/models/sentiment/reload")
    assert r.status_code == 422 and r.json()["error"]["code"] == "reload_failed"
    assert "model.onnx" in r.json()["error"]["message"]
    card = version_of(c, "sentiment")
    assert card["version"] == before["version"] and "model.onnx" in card["reload_error"]
    assert c.post("/sentiment", json={"text": "good"}).json()["model_version"] == before["version"]
    metrics = c.get("/metrics").text
    assert 'seqserve_model_reload_failed{model="sentiment"} 1.0' in metrics
    assert 'seqserve_model_reloads_total{model="sentiment",result="failed"}' in metrics
    errors = [x for x in log.records if x.levelno >= logging.ERROR]
    assert len(errors) == 1 and "model.onnx" in errors[0].getMessage()
    # the files put back: the serving version again, the error cleared
    graph.write_bytes(original)
    assert c.post("/v1/models/sentiment/reload").json()["result"] == "unchanged"
    assert version_of(c, "sentiment")["reload_error"] is None
    assert 'seqserve_model_reload_failed{model="sentiment"} 0.0' in c.get("/metrics").text


def test_a_task_change_and_a_duplicate_name_are_refused(make_client, models):
    c = make_client(models)
    before = version_of(c, "chargen")["version"]
    manifest = json.loads((models / "sentiment" / "manifest.json").read_text())
    shutil.copytree(models / "sentiment", models / "chargen-copy")
    (models / "chargen-copy" / "manifest.json").write_text(json.dumps({**manifest, "name": "chargen"}))
    r = c.post("/v1/models/chargen/reload")
    assert r.status_code == 422
    msg = r.json()["error"]["message"]
    assert str(models / "chargen") in msg and str(models / "chargen-copy") in msg
    shutil.rmtree(models / "chargen")  # now the only folder named chargen holds a classifier
    r = c.post("/v1/models/chargen/reload")
    assert r.status_code == 422 and "task" in r.json()["error"]["message"]
    assert version_of(c, "chargen")["version"] == before
    assert c.post("/generate", json={"prompt": "a", "max_new_chars": 5}).status_code == 200


def test_a_new_folder_is_loaded_by_name(make_client, models):
    c = make_client(models)
    manifest = json.loads((models / "sentiment" / "manifest.json").read_text())
    shutil.copytree(models / "sentiment", models / "sentiment-b")
    (models / "sentiment-b" / "manifest.json").write_text(json.dumps({**manifest, "name": "sentiment-b"}))
    r = c.post("/v1/models/sentiment-b/reload")
    assert r.status_code == 200 and r.json()["result"] == "loaded"
    r = c.post("/sentiment", json={"text": "good", "model": "sentiment-b"})
    assert r.status_code == 200 and r.json()["model"] == "sentiment-b"


def test_a_stream_under_way_finishes_on_the_old_version(make_client, models, second_version):
    c = make_client(models)
    old = c.app.state.seqserve.registry.models["chargen"]
    old_version = old.version
    run = old.run

    def slow_run(*args, **kw):  # ~2 ms a character: the stream outlives the swap
        time.sleep(0.002)
        return run(*args, **kw)

    old.run = slow_run
    events: list[dict] = []
    started = threading.Event()

    def stream() -> None:
        with c.stream("POST", "/generate", json={"prompt": "the ", "max_new_chars": 600,
                                                 "stream": True, "seed": 3}) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                    started.set()

    t = threading.Thread(target=stream)
    t.start()
    assert started.wait(10)
    replace(models, second_version, "chargen")
    r = c.post("/v1/models/chargen/reload")
    assert r.json()["result"] == "reloaded"
    r = c.post("/generate", json={"prompt": "a", "max_new_chars": 5})
    assert r.json()["model_version"] == version_of(c, "chargen")["version"] != old_version
    t.join(30)
    last = events[-1]
    assert last["finish_reason"] == "length" and last["generated_chars"] == 600
    assert last["model_version"] == old_version
    assert "".join(e["text"] for e in events).__len__() == 600


def test_under_load_sighup_and_post_swap_versions_and_lose_no_request(models, second_version):
    """32 clients call /sentiment and /generate without pause while the classifier is
    swapped by POST and the generator by SIGHUP; every request gets its 200, and both
    versions answer. SIGHUP leaves the server running."""
    with ServerProcess(models, api_key=KEY) as srv:
        stop = threading.Event()
        results: Counter[tuple[str, int]] = Counter()
        versions: dict[str, set[str]] = {"/sentiment": set(), "/generate": set()}
        failures: list[str] = []
        lock = threading.Lock()

        def client(i: int) -> None:
            path = "/generate" if i % 4 == 0 else "/sentiment"
            body = ({"prompt": "the ", "max_new_chars": 30, "seed": i} if path == "/generate"
                    else {"text": f"a good film number {i}"})
            while not stop.is_set():
                req = urllib.request.Request(srv.url + path, data=json.dumps(body).encode(),
                                             headers={"content-type": "application/json",
                                                      "authorization": f"Bearer {KEY}"})
                try:
                    with urllib.request.urlopen(req, timeout=30) as r:
                        data = json.loads(r.read())
                        status = r.status
                except urllib.error.HTTPError as e:
                    status, data = e.code, {}
                    failures.append(f"{path} {e.code} {e.read()[:200]!r}")
                except OSError as e:
                    status, data = -1, {}
                    failures.append(f"{path} {e!r}")
                with lock:
                    results[(path, status)] += 1
                    if "model_version" in data:
                        versions[path].add(data["model_version"])

        threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        replace(models, second_version, "sentiment")
        req = urllib.request.Request(srv.url + "/v1/models/sentiment/reload", data=b"",
                                     method="POST", headers={"authorization": f"Bearer {KEY}"})
        with urllib.request.urlopen(req, timeout=60) as r:
            assert json.loads(r.read())["result"] == "reloaded"
        replace(models, second_version, "chargen")
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while len(versions["/generate"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(60)
        print(dict(results), versions)
        assert srv.proc.poll() is None, srv.log()[-3000:]
        assert not failures, (failures[:5], results)
        assert len(versions["/sentiment"]) == 2 and len(versions["/generate"]) == 2, versions
        assert sum(results.values()) > 100, results
        # the admin route needs the key like every POST
        req = urllib.request.Request(srv.url + "/v1/models/sentiment/reload", data=b"",
                                     method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 401
        assert "SIGHUP reload done" in srv.log()
        assert srv.terminate() == 0


def test_sighup_with_several_workers_reloads_in_each_worker(models, second_version):
    with ServerProcess(models, workers=2) as srv:
        deadline = time.monotonic() + 60
        while srv.log().count("ready: models") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # both workers serving (/readyz answered from one)
        replace(models, second_version, "sentiment")
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while srv.log().count("SIGHUP reload done") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert srv.log().count("SIGHUP reload done") == 2, srv.log()[-3000:]
        assert srv.log().count("reloaded model sentiment") == 2
        assert srv.proc.poll() is None and srv.get("/readyz").status_code == 200
        assert srv.terminate() == 0
