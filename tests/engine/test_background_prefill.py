"""Prompts that arrive while streams run are read on the engine's helper thread
(app/engine/admission.py ``read``, ``Runner.submit``): the running streams go on
stepping meanwhile, the texts are the same, and a cancel or a failure during the call
touches only the streams it read."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from app.engine.errors import ModelFailure
from app.engine.generator import Finish, GenerationEngine
from tests.engine.test_generation_engine import _Gauge, _stream, _texts


@pytest.fixture(scope="module")
def chargen(tiny_models_dir):
    from app.config import Settings
    from app.engine.registry import load_model

    return load_model(tiny_models_dir / "chargen", Settings(models_dir=tiny_models_dir))


def _spy(model, monkeypatch, *, slow_s: float = 0.0, fail: bool = False) -> list[tuple]:
    """Records (rows, characters, thread name, wide) of every call; a prompt call
    (more than one character) on a helper thread sleeps ``slow_s`` first, or raises."""
    calls: list[tuple] = []
    run = model.run

    def spy(ids, lens, h, c, wide=False, **kw):
        name = threading.current_thread().name
        calls.append((ids.shape[0], ids.shape[1], name, wide))
        if ids.shape[1] > 1 and "part" in name:
            if fail:
                raise RuntimeError("injected prefill failure")
            time.sleep(slow_s)
        return run(ids, lens, h, c, wide=wide, **kw)

    monkeypatch.setattr(model, "run", spy)
    return calls


def test_prompts_that_arrive_while_streams_run_are_read_on_the_helper_thread(
        chargen, monkeypatch):
    long = {"prompt": "the man ", "seed": 42, "n": 150}
    others = [{"prompt": "x" * (3 + i) + " the ", "seed": i, "n": 5 + 3 * i} for i in range(10)]
    one_core = _texts(chargen, [long, *others], max_streams=4, parallel=1)
    calls = _spy(chargen, monkeypatch)
    two = _texts(chargen, [long, *others], max_streams=4, parallel=2, background_min_rows=1)
    assert two == one_core  # the same text on either path
    helper = [c for c in calls if c[1] > 1 and "part" in c[2]]
    assert helper  # prompts read on the helper thread...
    assert all(not wide for *_, wide in helper)  # ... on its one-thread session
    (first, *_) = calls
    assert first[1] > 1 and "part" not in first[2]  # nothing ran yet: read at once, here


def _engine(chargen) -> GenerationEngine:
    e = GenerationEngine(chargen, max_streams=8, max_queue=10, queue_timeout_s=30,
                         parallel=2, background_min_rows=1)
    e.runner.start()
    return e


def _wait(e: GenerationEngine) -> None:
    call = e.admission.call
    assert call is not None
    call[1].exception(timeout=10)  # ended (either way)


def test_running_streams_step_while_a_prompt_is_read_and_it_joins_after(chargen, monkeypatch):
    calls = _spy(chargen, monkeypatch, slow_s=0.3)

    def go(loop):
        e = _engine(chargen)
        gauge = _Gauge()
        first = _stream(chargen, "the man ", loop, seed=1, max_new=100)
        e.submit(first)
        out: list = []
        assert e._admit(out)  # nothing runs: read here, at once
        e.submit(second := _stream(chargen, "a dog walked by ", loop, seed=2, max_new=20))
        assert e._admit(out) and e.admission.call is not None  # on the helper thread
        t0 = time.perf_counter()
        for _ in range(5):  # the running stream steps meanwhile, on one-thread calls
            e._step(out)
            e._retire(out, gauge)
        assert time.perf_counter() - t0 < 0.25  # not waiting for the 0.3 s prompt call
        steps = [c for c in calls if c[1] == 1]
        assert len(steps) == 5 and all(c[0] == 1 and not c[3] for c in steps)
        assert [g.stream for g in e.active.gens()] == [first]
        _wait(e)
        out.clear()
        assert e._admit(out)  # the call ended: its stream joins, first character out
        assert [g.stream for g in e.active.gens()] == [first, second]
        assert [s for s, _ in out] == [second]
        assert e.admission.call is None and not e.prefill.jobs
        e.runner.close()
        return True

    assert asyncio.run(_loop(go))


async def _loop(fn):
    return fn(asyncio.get_running_loop())


def test_a_stream_cancelled_while_its_prompt_is_read_never_joins(chargen, monkeypatch):
    _spy(chargen, monkeypatch, slow_s=0.2)

    def go(loop):
        e = _engine(chargen)
        first = _stream(chargen, "the man ", loop, seed=1, max_new=100)
        e.submit(first)
        out: list = []
        e._admit(out)
        e.submit(second := _stream(chargen, "a dog walked by ", loop, seed=2, max_new=20))
        e._admit(out)
        second.cancel()
        e._admit(out)  # the cancelled stream leaves while the call runs
        assert e.prompt_chars_in_flight == 0  # its prompt's budget is back
        _wait(e)
        out.clear()
        e._admit(out)
        assert [g.stream for g in e.active.gens()] == [first] and out == []
        assert e.admission.call is None and not e.prefill.jobs
        e.runner.close()
        return True

    assert asyncio.run(_loop(go))


def test_a_failed_prompt_call_fails_its_streams_only_and_the_engine_goes_on(chargen,
                                                                          monkeypatch):
    _spy(chargen, monkeypatch, fail=True)

    async def go():
        loop = asyncio.get_running_loop()
        e = GenerationEngine(chargen, max_streams=8, max_queue=10, queue_timeout_s=30,
                             parallel=2, background_min_rows=1)
        first = _stream(chargen, "the man ", loop, seed=1, max_new=300)
        e.submit(first)
        e.start()
        assert isinstance(await first.out.get(), str)  # running
        e.submit(second := _stream(chargen, "a dog walked by ", loop, seed=2, max_new=20))
        got = await asyncio.wait_for(second.out.get(), 10)
        assert isinstance(got, ModelFailure)
        while not isinstance(item := await asyncio.wait_for(first.out.get(), 10), Finish):
            assert isinstance(item, str)
        assert item.generated_chars == 300  # the running stream was not touched
        assert e.alive and not e.prefill.jobs and e.admission.call is None
        await e.stop()
        return True

    assert asyncio.run(go())


def test_with_nothing_left_running_the_engine_waits_for_the_call(chargen, monkeypatch):
    """The running stream ends while a prompt is read on the helper thread: the next
    iteration waits for the call (no busy loop) and the stream joins."""
    _spy(chargen, monkeypatch, slow_s=0.2)

    def go(loop):
        e = _engine(chargen)
        gauge = _Gauge()
        first = _stream(chargen, "the man ", loop, seed=1, max_new=2)
        e.submit(first)
        out: list = []
        e._admit(out)
        e.submit(second := _stream(chargen, "a dog walked by ", loop, seed=2, max_new=20))
        e._admit(out)
        e._step(out)
        e._retire(out, gauge)  # the first stream has its 2 characters: it leaves
        assert not e.active.batches and e.admission.call is not None
        t0 = time.perf_counter()
        assert e._admit(out)
        assert time.perf_counter() - t0 > 0.05  # it waited for the call...
        assert [g.stream for g in e.active.gens()] == [second]  # ... and the stream joined
        e.runner.close()
        return True

    assert asyncio.run(_loop(go))


def test_with_fewer_running_streams_than_the_threshold_prompts_are_read_here(chargen,
                                                                               monkeypatch):
    """A step of a few rows costs more per row than a prompt cell: below
    ``background_min_rows`` running streams the engine thread reads the prompt itself."""
    calls = _spy(chargen, monkeypatch)

    def go(loop):
        e = GenerationEngine(chargen, max_streams=8, max_queue=10, queue_timeout_s=30,
                             parallel=2, background_min_rows=2)
        e.runner.start()
        out: list = []
        e.submit(first := _stream(chargen, "the man ", loop, seed=1, max_new=100))
        e._admit(out)
        e.submit(second := _stream(chargen, "a dog walked by ", loop, seed=2, max_new=100))
        e._admit(out)  # one stream runs: read here, and it joins at once
        assert e.admission.call is None
        assert [g.stream for g in e.active.gens()] == [first, second]
        e.submit(_stream(chargen, "a cat sat down ", loop, seed=3, max_new=100))
        e._admit(out)  # two run: on the helper thread
        assert e.admission.call is not None
        _wait(e)
        e.runner.close()
        return [c[2] for c in calls if c[1] > 1]

    names = asyncio.run(_loop(go))
    assert len(names) == 3 and not any("part" in n for n in names[:2]) and "part" in names[2]
