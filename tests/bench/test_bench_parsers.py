"""The benchmark's parsers and choices on canned inputs (no server, no timing): wrk's
output, the LitServe sweep's pick, the report's floors, and the profile's stages."""

from __future__ import annotations

from collections import Counter

import pytest

from bench import load, peer, profile, report

WRK_OUT = """Running 1s test @ http://127.0.0.1:50695
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    11.71ms    9.66ms  64.29ms   91.61%
    Req/Sec   757.80    246.63     1.14k    60.00%
  Latency Distribution
     50%    8.92ms
     75%   12.77ms
     90%   19.46ms
     99%    1.05s
  764 requests in 1.01s, 374.22KB read
Requests/sec:    754.68
Transfer/sec:    369.65KB
WRK_JSON {"requests": 764, "duration_us": 1012346, "bytes": 383199, "p50_us": 8924, \
"p90_us": 19457, "p99_us": 1053635, "max_us": 1064291, "errors": {"connect": 0, "read": 0, \
"write": 0, "timeout": 0, "status_4xx_5xx": 0, "status_other_non_2xx": 0}}
"""


def _wrk(**errors: int) -> str:
    base = {"connect": 0, "read": 0, "write": 0, "timeout": 0, "status_4xx_5xx": 0,
            "status_other_non_2xx": 0, **errors}
    errs = ", ".join(f'"{k}": {v}' for k, v in base.items())
    return WRK_OUT.replace(WRK_OUT[WRK_OUT.index('"errors"'):].split("}}")[0] + "}}",
                           '"errors": {' + errs + "}}")


def test_wrk_output_parses_to_rate_percentiles_and_a_valid_cell():
    r = load.parse_wrk(WRK_OUT)
    assert r["requests"] == 764
    assert r["per_s"] == pytest.approx(764 / 1.012346)
    assert (r["p50_ms"], r["p90_ms"], r["p99_ms"]) == (8.924, 19.457, 1053.635)
    assert r["latency_table_ms"] == {50.0: 8.92, 75.0: 12.77, 90.0: 19.46, 99.0: 1050.0}
    assert r["valid"] and r["errors"] == 0


@pytest.mark.parametrize("kind", ["connect", "read", "write", "timeout", "status_4xx_5xx",
                                  "status_other_non_2xx"])
def test_any_socket_error_or_non_2xx_makes_the_wrk_cell_invalid(kind: str):
    r = load.parse_wrk(_wrk(**{kind: 3}))
    assert not r["valid"] and r["errors"] == 3
    assert r["non_2xx" if kind.startswith("status") else "socket_errors"] == 3


def test_wrk_output_without_the_script_line_is_refused():
    with pytest.raises(ValueError, match="WRK_JSON"):
        load.parse_wrk(WRK_OUT.split("WRK_JSON")[0])


def test_median_cell_is_invalid_when_any_round_was():
    good = {"per_s": 100.0, "p99_ms": 10.0, "errors": 0, "valid": True}
    bad = {"per_s": 300.0, "p99_ms": 5.0, "errors": 2, "valid": False}
    m = load.median_cell([good, bad, good])
    assert m["per_s"] == 100.0 and m["errors"] == 2 and not m["valid"] and m["rounds"] == 3
    # a round whose load failed outright (no figures) still makes the cell invalid
    gone = {"valid": False, "errors": 1, "failed": "ServerDisconnectedError"}
    m = load.median_cell([good, gone])
    assert not m["valid"] and m["errors"] == 1 and m["failed"] == "ServerDisconnectedError"
    assert load.median_cell([good, good])["valid"]


def test_the_sweep_grid_tries_a_batch_of_one_once_per_worker_count():
    grid = peer.sentiment_grid((1, 2), (1, 4, 8, 16), (0.0, 2.0, 5.0))
    assert len(grid) == 2 * (1 + 3 * 3)
    ones = [g for g in grid if g["max_batch_size"] == 1]
    assert ones == [{"sentiment_workers": w, "max_batch_size": 1, "batch_timeout_ms": 0.0}
                    for w in (1, 2)]
    assert len({tuple(g.values()) for g in grid}) == len(grid)


def test_the_sweep_picks_the_fastest_valid_setting_never_one_with_errors():
    trials = [({"max_batch_size": 1}, {"per_s": 900.0, "valid": False, "errors": 400}),
              ({"max_batch_size": 4}, {"per_s": 410.0, "valid": True}),
              ({"max_batch_size": 8}, {"per_s": 450.0, "valid": True}),
              ({"max_batch_size": 16}, {"valid": False, "errors": 1, "failed": "no start"})]
    best, res = peer.choose_best(trials, "per_s")
    assert best == {"max_batch_size": 8} and res["per_s"] == 450.0
    with pytest.raises(ValueError, match="no valid trial"):
        peer.choose_best([trials[0], trials[3]], "per_s")


def _results(real32: float, peer32: float, valid: bool = True) -> dict:
    def s(per_s: float, ok: bool = True) -> dict:
        return {"per_s": per_s, "p50_ms": 10.0, "p99_ms": 40.0, "errors": 0 if ok else 5,
                "valid": ok}

    def g(x: float) -> dict:
        return {"chars_per_s": x, "first_char_p50_ms": 5.0, "errors": 0, "valid": True}

    return {"real": {("sentiment", "mix", 32): s(real32, valid),
                     ("sentiment", "short", 32): s(2000.0),
                     ("stream", 1): g(3000.0), ("stream", 32): g(25000.0),
                     ("stream", 64): g(30000.0)},
            "peer": {("sentiment", "mix", 32): s(peer32), ("sentiment", "short", 32): s(900.0),
                     ("stream", 32): g(9000.0), ("stream", 64): g(13000.0)},
            "off": {("stream", 1): g(3100.0)}}


RAW = {"mix": {"two_callers_per_s": 1000.0}, "short": {"two_callers_per_s": 4000.0}}


def test_the_floors_of_issue_30_are_computed_from_the_cells():
    rows = {name: (got, met) for name, got, met in report.floors(
        RAW, _results(820.0, 400.0), {"p99_reference_ms": 50.0})}
    assert rows["/sentiment >= 2.0x the tuned LitServe at c=32, the IMDB mix"] == ("2.05x", True)
    assert rows["/sentiment >= 2.0x the tuned LitServe at c=32, the short review"] == (
        "2.22x", True)
    assert rows["/sentiment >= 70 % of the two-caller raw limit at c=32, the IMDB mix"] == (
        "82%", True)
    assert rows["/sentiment >= 50 % of the two-caller raw limit at c=32, the short review"] == (
        "50%", True)
    assert rows["streamed /generate at 1 stream >= the engine-less path"] == ("0.97x", False)
    assert rows["streamed /generate at 32 streams >= 2.5x LitServe's continuous batching"] == (
        "2.78x", True)
    assert rows["streamed /generate at 64 streams >= 2.5x LitServe's continuous batching"] == (
        "2.31x", False)
    assert rows["/sentiment p99 at c=32 no worse than before"] == (
        "40.0 ms (reference 50.0 ms)", True)


def test_an_invalid_cell_meets_no_floor_and_shows_as_invalid():
    res = _results(5000.0, 400.0, valid=False)
    rows = {name: met for name, _, met in report.floors(RAW, res, {})}
    assert rows["/sentiment >= 2.0x the tuned LitServe at c=32, the IMDB mix"] is None
    assert report.shown(res, "real", ("sentiment", "mix", 32), "per_s") == "invalid (5 errors)"
    table = "\n".join(report.sentiment_section(
        {k: {"two_callers_per_s": v["two_callers_per_s"]} for k, v in RAW.items()}, res))
    assert "invalid (5 errors)" in table and "5,000" not in table


@pytest.mark.parametrize("stack, stage", [
    ("<module> (app/__main__.py:3);run (uvicorn/server.py:60);_run_once "
     "(asyncio/base_events.py:1922);__call__ (app/http/middleware.py:88);loads "
     "(json/__init__.py:346);decode (json/decoder.py:337)", "JSON parse/encode"),
    ("_bootstrap (threading.py:995);run (concurrent/futures/thread.py:58);_call "
     "(app/engine/batcher.py:120);run (onnxruntime/capi/onnxruntime_inference_collection.py"
     ":266)", "ORT call"),
    ("_run_once (asyncio/base_events.py:1922);__call__ (app/http/middleware.py:88);"
     "encode (seqcore/tokenizer.py:77)", "tokenizer"),
    ("_run_once (asyncio/base_events.py:1922);__call__ (app/http/middleware.py:88);"
     "some_helper (weird/place.py:1)", "our ASGI middleware"),
    ("_run_once (asyncio/base_events.py:1922);call_soon_threadsafe "
     "(asyncio/base_events.py:800)", "event loop <-> worker thread hand-offs"),
    ("_iterate (app/engine/batcher.py:90);Condition.notify (threading.py:369)",
     "event loop <-> worker thread hand-offs"),
    ("Server.run (uvicorn/server.py:67);Runner.run (asyncio/runners.py:118)",
     "event loop (asyncio/uvloop, and the C code under it: sockets, callbacks)"),
    ("_iterate (app/engine/batcher.py:90);Condition.wait (threading.py:327)", profile.WAITING),
    ("_bootstrap (threading.py:995);_worker (concurrent/futures/thread.py:81)",
     profile.WAITING),
    ("validate_python (pydantic/type_adapter.py:1)", "pydantic validation/serialization"),
    ("main (somewhere.py:1);f (elsewhere.py:2)", profile.OTHER),
])
def test_profile_maps_a_stack_to_its_innermost_known_stage(stack: str, stage: str):
    assert profile.stack_stage(stack) == stage


def test_profile_breakdown_scales_the_cpu_shares_to_the_measured_cpu_per_request():
    raw = ("a (onnxruntime/x.py:1) 300\n"
           "b (seqcore/tokenizer.py:2) 100\n"
           "c (nowhere.py:3) 100\n"
           "d (x.py:1);Condition.wait (threading.py:327) 500\n"
           "process 12:\"python -m app\" garbage-without-count\n")
    samples = profile.parse_raw(raw)
    assert samples == Counter({"ORT call": 300, "tokenizer": 100, profile.OTHER: 100,
                               profile.WAITING: 500})
    # the waits are left out: shares of 500 busy samples, times 2 s of CPU / 1000 requests
    rows = profile.breakdown(samples, requests=1000, cpu_s=2.0)
    got = {s: (n, round(share, 3), round(us)) for s, n, share, us in rows}
    assert got == {"ORT call": (300, 0.6, 1200), "tokenizer": (100, 0.2, 400),
                   profile.OTHER: (100, 0.2, 400)}
    text = profile.table(rows, samples, 100.0, 1000, 2.0)
    assert "| all stages | 500 | 100% | 2000 |" in text
    assert "left out: 500" in text and "measured CPU: 2000 us per request" in text


def test_profile_lists_the_unattributed_stage_even_when_empty():
    rows = profile.breakdown(Counter({"ORT call": 10}), requests=10, cpu_s=0.01)
    assert [r[0] for r in rows] == ["ORT call", profile.OTHER] and rows[1][1] == 0


def test_the_report_renders_from_canned_cells_with_the_floors_first():
    res = _results(820.0, 400.0)
    res["real"].update({("sentiment", "mix", 1): {"per_s": 200.0, "p50_ms": 4.0, "p99_ms": 9.0,
                                                  "errors": 0, "valid": True}})
    raw = {k: {"two_callers_per_s": v["two_callers_per_s"],
               "by_batch": {(2, 1, 8): v["two_callers_per_s"]}} for k, v in RAW.items()}
    raw_g = {"chars_per_s_by_streams": {1: 3500.0, 32: 40000.0, 64: 50000.0},
             "prefill_ms": {20: 1.0, 200: 9.0}}
    meta = {"quick": True, "reps": 1, "wrk_seconds": 1, "new_chars": 50, "short_chars": 458,
            "minutes": 3.0, "peer_settings": {"fast_queue": True},
            "ttfc_ms": {200: 11.0, 20: 3.0}, "servers": {}}
    text = report.render(raw, raw_g, res, meta)
    assert text.index("## Floors (issue 30)") < text.index("## /sentiment, req/s")
    assert '`{"fast_queue": true}`' in text and "Not run (`--no-sweep`" in text
    assert "| this service / LitServe | — | 2.05x | — | 2.22x |" in text
    assert "| raw ORT limit, in process (two callers) | 1,000 | 1,000 | 1,000 | 4,000 |" in text


def test_profile_breaks_the_middleware_stage_down_by_the_deciding_frame():
    raw = ("run (uvicorn/server.py:1);A.__call__ (app/http/middleware.py:10);uuid4 "
           "(uuid.py:700) 30\n"
           "run (uvicorn/server.py:1);B.__call__ (app/http/protocol_errors.py:5) 10\n"
           "run (uvicorn/server.py:1);A.__call__ (app/http/middleware.py:10);"
           "handle (fastapi/routing.py:9) 60\n")
    detail: Counter[tuple[str, str]] = Counter()
    samples = profile.parse_raw(raw, detail)
    mw = "our ASGI middleware"
    assert samples[mw] == 40 and samples["FastAPI/Starlette routing, dependencies"] == 60
    text = profile.detail_table(detail, samples, mw, us_of_stage=80.0)
    assert "| A.__call__ (app/http/middleware.py) | 30 | 60 |" in text
    assert "| B.__call__ (app/http/protocol_errors.py) | 10 | 20 |" in text


def test_a_peer_setting_that_cannot_start_is_an_invalid_trial_not_the_end(tmp_path):
    calls = []
    trials = peer.run_sweep(tmp_path / "no-such-python", [{"max_batch_size": 4}],
                            measure=calls.append, log=lambda _: None)
    assert calls == []  # never measured
    (settings, result), = trials
    assert settings == {"max_batch_size": 4} and not result["valid"] and result["errors"] == 1


def test_ab_load_specs_and_round_spread():
    from bench import ab
    assert ab.parse_load("stream:64") == ("stream", 64)
    assert [ab.parse_load(s) for s in ab.DEFAULT_LOADS][0] == ("sentiment", 32)
    for bad in ("stream", "stream:0", "stream:x", "walk:3", ":3"):
        with pytest.raises(Exception, match="KIND:N"):
            ab.parse_load(bad)
    assert ab.quartiles([1.0]) == (1.0, 1.0)
    assert ab.quartiles([0.9, 1.0, 1.1, 1.2, 1.3]) == pytest.approx((1.0, 1.2))
