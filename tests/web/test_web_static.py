"""The web page's server side, without a browser: static files (ETag, Cache-Control,
gzip, no path from the URL on disk), offline /docs and /redoc, /web/config, and the
/v1/stats summary. The page itself is tested in a real browser in test_web_browser.py.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from app.web import routes as web

STATIC = Path(web.__file__).resolve().parent / "static"
HOOKS = ["sentiment-input", "sentiment-submit", "sentiment-label", "sentiment-score",
         "attention-token", "batch-input", "batch-submit", "batch-row", "generate-prompt",
         "generate-temperature", "generate-seed", "generate-max", "generate-submit",
         "generate-stop", "generate-output", "generate-stats", "model-card", "error",
         "faithfulness", "faithfulness-on"]


def test_page_is_served_with_etag_cache_control_and_gzip(tiny_client):
    r = tiny_client.get("/", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["content-encoding"] == "gzip" and "Accept-Encoding" in r.headers["vary"]
    assert r.headers["cache-control"] == "no-cache"  # revalidated: a release shows at once
    assert r.text == (STATIC / "index.html").read_text()  # httpx decoded the gzip
    etag = r.headers["etag"]

    again = tiny_client.get("/", headers={"If-None-Match": etag, "Accept-Encoding": "gzip"})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag

    plain = tiny_client.get("/", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.content == (STATIC / "index.html").read_bytes()
    assert plain.headers["etag"] != etag  # each variant its own tag
    assert tiny_client.head("/").status_code == 200


def test_vendored_files_are_immutable_and_compressed(tiny_client):
    r = tiny_client.get("/static/" + web.SWAGGER + "/swagger-ui-bundle.js",
                        headers={"Accept-Encoding": "gzip, deflate"})
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    assert "immutable" in r.headers["cache-control"] and "max-age=604800" in r.headers["cache-control"]
    assert r.headers["content-type"].startswith("application/javascript")
    sent = web._assets[web.SWAGGER + "/swagger-ui-bundle.js"]
    assert sent.gzipped is not None and len(sent.gzipped) < len(sent.body) / 3
    assert gzip.decompress(sent.gzipped) == sent.body
    for licence in (web.SWAGGER + "/LICENSE", web.SWAGGER + "/NOTICE", web.REDOC + "/LICENSE"):
        assert (STATIC / licence).is_file(), licence


def test_no_path_from_the_url_reaches_the_disk(tiny_client):
    for path in ("/static/../routes.py", "/static/%2e%2e/main.py", "/static/nope.js",
                 "/static//etc/passwd", "/static/vendor"):
        r = tiny_client.get(path)
        assert r.status_code == 404, path
    assert set(web.static_files().values()) <= set(STATIC.rglob("*"))


def test_api_answers_are_not_compressed_or_cached(tiny_client):
    """The page adds no work to the API: no GZip middleware wraps its JSON or its SSE."""
    r = tiny_client.post("/sentiment", json={"text": "good"}, headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and "content-encoding" not in r.headers
    with tiny_client.stream("POST", "/generate", headers={"Accept-Encoding": "gzip"},
                            json={"prompt": "a", "max_new_chars": 5, "stream": True}) as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        assert "content-encoding" not in s.headers
        s.read()


def test_page_keeps_the_automation_hooks_and_loads_nothing_from_outside():
    html = (STATIC / "index.html").read_text()
    js = (STATIC / "app.js").read_text()
    for hook in HOOKS:
        assert f'data-testid="{hook}"' in html or f'testid: "{hook}"' in js, hook
    for name in ("index.html", "app.js", "app.css", "examples.js"):
        text = (STATIC / name).read_text()
        # the only absolute URL allowed is the SVG namespace, which is never fetched
        urls = set(re.findall(r"https?://[^\s\"'<>)]+", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, (name, urls)
    srcs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert srcs and all(s.startswith(("/", "#")) for s in srcs), srcs


@pytest.mark.parametrize("path, assets", [
    ("/docs", ["/static/" + web.SWAGGER + "/swagger-ui-bundle.js",
               "/static/" + web.SWAGGER + "/swagger-ui.css"]),
    ("/redoc", ["/static/" + web.REDOC + "/redoc.standalone.js"]),
])
def test_docs_load_their_assets_from_the_package(tiny_client, path, assets):
    r = tiny_client.get(path)
    assert r.status_code == 200
    for a in assets:
        assert a in r.text
        assert tiny_client.get(a).status_code == 200
    # nothing from a CDN or a font service
    assert not re.search(r"(src|href)=\"https?://", r.text), r.text
    assert "fonts.googleapis" not in r.text
    assert tiny_client.get("/openapi.json").status_code == 200
    paths = tiny_client.get("/openapi.json").json()["paths"]
    assert not {"/", "/docs", "/redoc", "/v1/stats", "/web/config"} & set(paths)


def test_redoc_bundle_fetches_nothing_remote():
    js = (STATIC / web.REDOC / "redoc.standalone.js").read_text(encoding="utf-8")
    assert "cdn.redoc.ly" not in js


def test_web_config_tells_whether_a_key_is_needed(make_client, tiny_models_dir):
    open_ = make_client(tiny_models_dir).get("/web/config").json()
    assert open_["api_key_required"] is False and open_["max_texts"] >= 1
    keyed = make_client(tiny_models_dir, api_key="k").get("/web/config").json()
    assert keyed["api_key_required"] is True
    assert "k" not in keyed.values()  # the key itself is never sent


def test_stats_gives_rate_and_latency_per_route(tiny_client, monkeypatch):
    # the window starts with the process (module import); in a long test session that
    # is minutes before this test, so start a fresh one, as a new process would
    monkeypatch.setattr(web, "_window", web.Window())
    for _ in range(3):
        assert tiny_client.post("/sentiment", json={"text": "a good film"}).status_code == 200
    s = tiny_client.get("/v1/stats")
    assert s.status_code == 200 and s.headers["cache-control"] == "no-store"
    body = s.json()
    assert 0 < body["window_s"] <= web.WINDOW_S + 5
    row = next(r for r in body["routes"] if r["route"] == "/sentiment" and r["method"] == "POST")
    assert row["requests"] >= 3 and row["rate_per_s"] > 0
    assert 0 < row["p50_ms"] <= row["p99_ms"]
    assert body["active_streams"] == 0 and body["in_flight"] >= 1


def test_quantile_interpolates_inside_buckets_like_prometheus():
    inf = float("inf")
    # 10 observations: 4 in (0, 0.01], 4 in (0.01, 0.1], 2 above 1
    buckets = {0.01: 4, 0.1: 8, 1.0: 8, inf: 10}
    assert web.quantile(0.2, buckets) == pytest.approx(0.005)  # rank 2 of 4 in the first
    assert web.quantile(0.5, buckets) == pytest.approx(0.01 + 0.09 * 0.25)
    assert web.quantile(0.99, buckets) == 1.0  # in +Inf: the largest finite bound
    assert web.quantile(0.5, {0.01: 0, inf: 0}) is None


def test_stats_window_uses_the_snapshot_about_a_minute_old(monkeypatch):
    now = [1000.0]
    counts = {"n": 0}
    monkeypatch.setattr(web.time, "monotonic", lambda: now[0])

    def fake_snapshot():
        n = counts["n"]
        return {("/x", "GET"): ({0.01: n, float("inf"): n}, n, 0)}

    monkeypatch.setattr(web, "take_snapshot", fake_snapshot)
    w = web.Window(window_s=60.0)
    for _ in range(120):  # 2 requests a second for two minutes
        now[0] += 1.0
        counts["n"] += 2
        out = w.summary()
    assert out["window_s"] == pytest.approx(60.0)
    (row,) = out["routes"]
    assert row["requests"] == 120 and row["rate_per_s"] == pytest.approx(2.0)
    assert len(w.snaps) <= 62  # old snapshots are dropped
