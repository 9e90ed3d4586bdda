"""bench.run measures the servers in two halves, each server started afresh for each
and in the opposite order (the server started first ran a lone stream 6-10 % slow on
this VM), and takes each cell's median over the rounds of both halves."""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from types import SimpleNamespace

from bench import run as bench_run


def test_the_servers_are_measured_in_two_halves_started_in_opposite_orders(monkeypatch):
    started: list[str] = []

    @contextmanager
    def service(device, meta, who, **settings):
        started.append(who)
        yield SimpleNamespace(url=f"http://{who}", pid=0)

    class Peer:
        def __init__(self, python, fast_queue, **settings):
            self.url, self.proc = "http://peer", SimpleNamespace(pid=0)

        def settings(self):
            return {"workers": 2}

        def __enter__(self):
            started.append("peer")
            return self

        def __exit__(self, *exc):
            return False

    def one_cell(kind, url, loads, plist, plan):
        # a value that tells the halves apart: the median must see both
        return {"valid": True, "chars_per_s": 100.0 * (1 + len(started) // 3)}

    monkeypatch.setattr(bench_run, "service", service)
    monkeypatch.setattr(bench_run.peer_mod, "PeerProcess", Peer)
    monkeypatch.setattr(bench_run.peer_mod, "only", lambda who, procs: contextmanager(
        lambda: (yield))())
    monkeypatch.setattr(bench_run, "warm", lambda *a: None)
    monkeypatch.setattr(bench_run, "one_cell", one_cell)
    monkeypatch.setattr(bench_run.time, "sleep", lambda s: None)

    async def ttfc(url, prompt, reps):
        return 0.001

    monkeypatch.setattr(bench_run, "ttfc", ttfc)
    a = argparse.Namespace(device="cpu", peer_python="/nonexistent", no_clients=True)
    plan = bench_run.Plan(False, 4, 1, 1, 200, 10, [], (32,))
    meta: dict = {}
    results = bench_run.measure_servers(a, {"workers": 2}, {}, ["p"], plan, meta)
    assert started == ["real", "off", "peer", "peer", "off", "real"]
    assert set(results) == {"real", "off", "peer"}
    cells = len(bench_run.SENT_COLS) + len(bench_run.STREAMS)
    for cells_ in results.values():
        assert len(cells_) == cells
        assert all(c["rounds"] == 4 for c in cells_.values())  # 2 rounds in each half
        # first half 200 chars/s, second 300: the median of 2 + 2 rounds
        assert all(c["chars_per_s"] == 250.0 for c in cells_.values())
    assert set(meta["ttfc_ms"]) == {200, bench_run.SHORT_PROMPT}


def test_a_round_of_one_stream_lasts_about_as_long_as_one_of_32():
    plan = bench_run.Plan(False, 4, 5, 3, 200, 1000, [], (32,))
    assert plan.per_stream(1) == 16 and plan.per_stream(32) == plan.per_stream(64) == 3
