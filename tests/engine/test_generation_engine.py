"""The generation engine's phases (admit, step, retire), driven one by one without
its thread or HTTP, on the tiny character model."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from app.engine.generator import Finish, GenerationEngine, Stream
from seqcore.sampling import SamplingParams


class _Gauge:
    value = -1

    def set(self, v: float) -> None:
        self.value = v


@pytest.fixture(scope="module")
def chargen(tiny_models_dir):
    from app.config import Settings
    from app.engine.registry import load_model

    return load_model(tiny_models_dir / "chargen", Settings(models_dir=tiny_models_dir))


def _stream(model, prompt: str, loop, *, seed: int = 1, max_new: int = 50,
            stop: list[str] | None = None, streaming: bool = True, t: float = 1.0) -> Stream:
    return Stream(model.vocab.encode(prompt)[0], SamplingParams(t, None, None), seed=seed,
                  max_new=max_new, stop=stop or [], arrived=time.perf_counter(), loop=loop,
                  streaming=streaming)


def _counting(model, monkeypatch) -> list[tuple[int, int]]:
    shapes: list[tuple[int, int]] = []
    run = model.run

    def counting(ids, *args, **kw):
        shapes.append(ids.shape)
        return run(ids, *args, **kw)

    monkeypatch.setattr(model, "run", counting)
    return shapes


def _in_loop(fn):
    async def go():
        return fn(asyncio.get_running_loop())

    return asyncio.run(go())


def test_admit_takes_up_to_max_streams_prefills_them_at_once_in_arrival_order(
        chargen, monkeypatch):
    shapes = _counting(chargen, monkeypatch)

    def go(loop):
        e = GenerationEngine(chargen, max_streams=3, max_queue=10, queue_timeout_s=30)
        streams = [_stream(chargen, "the " * (5 - i), loop, seed=i) for i in range(5)]
        for s in streams:
            e.submit(s)
        out: list = []
        assert e._admit(out)
        (batch,) = e._batches
        assert [g.stream for g in batch.gens] == streams[:3]  # rows in arrival order
        assert e.pending.qsize() == 2
        assert shapes == [(3, 20)]  # one prefill call, padded to the longest prompt
        assert batch.h.shape[1] == batch.c.shape[1] == 3 and batch.ids.shape == (3, 1)
        assert all(g.matcher.n == 1 for g in batch.gens)  # the first character each
        assert [s for s, _ in out] == streams[:3]
        return True

    assert _in_loop(go)


def test_step_gives_every_active_stream_one_character_in_one_call(chargen, monkeypatch):
    shapes = _counting(chargen, monkeypatch)

    def go(loop):
        for batching, calls in ((True, [(4, 1)]), (False, [(1, 1)] * 4)):
            e = GenerationEngine(chargen, max_streams=8, max_queue=10, queue_timeout_s=30,
                                 batching=batching)
            for i in range(4):
                e.submit(_stream(chargen, "the ", loop, seed=i))
            e._admit([])
            shapes.clear()
            out: list = []
            e._step(out)
            assert shapes == calls
            gens = [g for b in e._batches for g in b.gens]
            assert [g.matcher.n for g in gens] == [2] * 4
            assert len(out) == 4 and all(len(text) == 1 for _, text in out)
        return True

    assert _in_loop(go)


def test_retire_finishes_ended_streams_and_drops_cancelled_ones_silently(chargen):
    def go(loop):
        e = GenerationEngine(chargen, max_streams=8, max_queue=10, queue_timeout_s=30)
        short = _stream(chargen, "the ", loop, max_new=2)
        quiet = _stream(chargen, "the ", loop, max_new=3, streaming=False)
        gone = _stream(chargen, "a ", loop)
        stays = _stream(chargen, "the man ", loop)
        for s in (short, quiet, gone, stays):
            e.submit(s)
        gauge, out = _Gauge(), []
        e._admit(out)
        e._retire(out, gauge)
        assert gauge.value == 4
        e._step(out)
        gone.cancel()
        e._retire(out, gauge)
        (batch,) = e._batches
        assert [g.stream for g in batch.gens] == [quiet, stays] and gauge.value == 2
        assert batch.h.shape[1] == 2 and batch.h.flags.c_contiguous
        finishes = [(s, item) for s, item in out if isinstance(item, Finish)]
        assert [s for s, _ in finishes] == [short]
        assert finishes[0][1].reason == "length" and finishes[0][1].generated_chars == 2
        assert not any(s is gone for s, item in out if isinstance(item, Finish))
        assert not any(s is quiet for s, _ in out)  # a plain request: no partial text
        out.clear()
        e._step(out)
        e._retire(out, gauge)
        text, fin = [item for s, item in out if s is quiet]  # the whole text, then Finish
        assert len(text) == 3 and fin.generated_chars == 3 and fin.reason == "length"
        return True

    assert _in_loop(go)


def test_per_step_counts_reach_the_counters_when_a_stream_leaves_and_every_1000_chars(chargen):
    """Characters are counted per step but reach ``seqserve_generated_chars_total`` in
    bulk: when a stream leaves (before its Finish goes out) and at least every
    ``TALLY_FLUSH_CHARS`` characters; in the end the total, and the per-step
    histograms, are exact."""
    from prometheus_client import REGISTRY

    from app.engine.step import TALLY_FLUSH_CHARS

    def counted() -> float:
        return REGISTRY.get_sample_value("seqserve_generated_chars_total",
                                         {"model": chargen.name}) or 0.0

    def go(loop):
        e = GenerationEngine(chargen, max_streams=4, max_queue=10, queue_timeout_s=30)
        before = counted()
        steps_before = REGISTRY.get_sample_value(
            "seqserve_batch_size_count", {"model": chargen.name, "kind": "step"}) or 0.0
        rows_before = REGISTRY.get_sample_value(
            "seqserve_batch_size_sum", {"model": chargen.name, "kind": "step"}) or 0.0
        long = _stream(chargen, "the ", loop, seed=1, max_new=2500)
        short = _stream(chargen, "a ", loop, seed=2, max_new=10)
        e.submit(long)
        e.submit(short)
        gauge, out = _Gauge(), []
        e._admit(out)
        e._retire(out, gauge)
        made, lags, leaves = 2, [], 0
        while e._batches:
            e._step(out)
            active = sum(len(b.gens) for b in e._batches)
            made += active
            e._retire(out, gauge)
            lags.append(made - (counted() - before))
            if sum(len(b.gens) for b in e._batches) < active:  # a stream left: all counted
                leaves += 1
                assert counted() - before == made
        assert leaves == 2 and made == 2510
        assert counted() - before == 2510 and gauge.value == 0
        steps = REGISTRY.get_sample_value("seqserve_batch_size_count",
                                          {"model": chargen.name, "kind": "step"})
        rows = REGISTRY.get_sample_value("seqserve_batch_size_sum",
                                         {"model": chargen.name, "kind": "step"})
        assert (steps - steps_before, rows - rows_before) == (2499, 2508)  # 9 steps of 2 rows
        assert 0 <= max(lags) < TALLY_FLUSH_CHARS + 2
        return True

    assert _in_loop(go)


def test_a_bulk_histogram_gives_what_observing_one_by_one_gives():
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from app.ops.metrics import FAST_BUCKETS, BulkHistogram

    values = [0.0, 1e-5, 2.5e-4, 0.001, 0.0015, 0.02, 0.3, 7.0, 1e9, *FAST_BUCKETS[:4]]
    one, bulk = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("h", "h", ["m"], buckets=FAST_BUCKETS, registry=one).labels("x")
    h2 = BulkHistogram(Histogram("h", "h", ["m"], buckets=FAST_BUCKETS, registry=bulk).labels("x"))
    assert h2.bulk  # this prometheus_client has the internals the bulk path uses
    for v in values:
        h1.observe(v)
        h2.observe(v)
    def samples(registry) -> list[str]:  # (the _created timestamps differ)
        return [line for line in generate_latest(registry).decode().splitlines()
                if "_created" not in line]

    assert samples(bulk) != samples(one)  # not handed over yet
    h2.flush()
    h2.flush()  # nothing twice
    assert samples(bulk) == samples(one)


def engine_chunks(model, make_streams, **engine) -> list[list[str]]:
    """Every stream's text chunks, as delivered, from one engine: ``make_streams(loop)``
    builds the streams, all submitted before the engine starts (so they are prefilled
    together)."""
    async def go() -> list[list[str]]:
        e = GenerationEngine(model, **{"max_queue": 100, "queue_timeout_s": 30, **engine})
        streams = make_streams(asyncio.get_running_loop())
        for s in streams:
            e.submit(s)
        e.start()
        chunks = []
        for s in streams:
            parts = []
            while not isinstance(item := await s.out.get(), Finish):
                if isinstance(item, BaseException):  # the stream failed: say so, do not wait
                    await e.stop()
                    raise item
                parts.append(item)
            chunks.append(parts)
        await e.stop()
        return chunks

    return asyncio.run(go())


def engine_texts(model, make_streams, **engine) -> list[str]:
    """Every stream's whole text from one engine (see ``engine_chunks``)."""
    return ["".join(parts) for parts in engine_chunks(model, make_streams, **engine)]


def _texts(model, bodies: list[dict], **engine) -> list[str]:
    return engine_texts(model, lambda loop: [
        _stream(model, b["prompt"], loop, seed=b["seed"], max_new=b["n"], stop=b.get("stop"),
                t=0.9) for b in bodies], **engine)


def test_a_stream_gets_the_same_text_alone_and_while_others_join_and_leave(chargen):
    """Rows leave the batch arrays (finished at different lengths, or at a stop) and
    new ones join them while a long stream runs: its state stays its own."""
    long = {"prompt": "the man ", "seed": 42, "n": 120}
    others = [{"prompt": "x" * (1 + i) + " the ", "seed": i, "n": 3 + 7 * i,
               "stop": ["e"] if i % 3 == 0 else None} for i in range(12)]
    (alone,) = _texts(chargen, [long], max_streams=8)
    together = _texts(chargen, [long, *others], max_streams=4)  # the rest wait, then join
    assert together[0] == alone
    for b, text in zip(others, together[1:], strict=True):
        assert _texts(chargen, [b], max_streams=1) == [text]


def test_a_prompt_admitted_several_times_at_once_is_read_once(chargen, monkeypatch):
    """Streams with the same prompt, prefilled together, share one prefill row; each
    still gets its own state and text, the same as when it runs alone."""
    bodies = [{"prompt": p, "seed": i, "n": 40}
              for i, p in enumerate(["the man ", "the man ", "a dog ", "the man ", "a dog "])]
    alone = [_texts(chargen, [b], max_streams=1)[0] for b in bodies]
    shapes = _counting(chargen, monkeypatch)
    together = _texts(chargen, bodies, max_streams=8)
    assert shapes[0] == (2, 8)  # the prefill: two distinct prompts, the longest 8 chars
    assert all(shape[0] == 5 for shape in shapes[1:])  # every stream steps on its own row
    assert together == alone
    assert len(set(together)) == 5  # the copies did not share more than the prompt


def test_the_batch_arrays_are_passed_to_the_step_as_they_are(chargen, monkeypatch):
    """No per-step stacking of per-stream rows: the step call gets the batch's arrays."""
    seen: list = []
    run = chargen.run

    def spy(ids, lens, h, c, **kw):
        seen.append((ids, h, c))
        return run(ids, lens, h, c, **kw)

    monkeypatch.setattr(chargen, "run", spy)

    def go(loop):
        e = GenerationEngine(chargen, max_streams=8, max_queue=10, queue_timeout_s=30)
        for i in range(3):
            e.submit(_stream(chargen, "the ", loop, seed=i))
        e._admit([])
        (b,) = e._batches
        h, c, ids = b.h, b.c, b.ids
        seen.clear()
        e._step([])
        ((ids2, h2, c2),) = seen
        assert ids2 is ids and h2 is h and c2 is c
        assert b.ids.dtype == np.int64 and b.ids.shape == (3, 1)
        return True

    assert _in_loop(go)


def test_streamed_text_is_flushed_per_interval_and_the_first_character_at_once(chargen):
    """With a flush interval, a streaming stream gets its first character from the
    prefill at once, later text in chunks no more often than the interval, and the
    same text as with a flush every step."""

    def chunks_of(interval: float) -> list[str]:
        (parts,) = engine_chunks(chargen, lambda loop: [
            _stream(chargen, "the man ", loop, seed=3, max_new=60)],
            max_streams=4, flush_interval_s=interval)
        return parts

    every_step = chunks_of(0.0)
    held = chunks_of(60.0)  # longer than the whole generation
    assert len(every_step) == 60 and all(len(p) == 1 for p in every_step)
    assert len(held[0]) == 1  # the first character did not wait for the interval
    assert len(held) == 2 and "".join(held) == "".join(every_step)  # the rest, at the finish


def test_many_streaming_streams_share_an_event_budget(chargen, monkeypatch):
    """With an event budget, the flush interval grows with the streaming streams (all
    together get at most ``events_per_s`` events a second), never past the cap, and
    the text is the same; non-streaming streams do not count."""
    from app.engine.rows import Batch as _Batch
    from app.engine.rows import Gen as _Gen
    from app.engine.step import MAX_FLUSH_INTERVAL_S

    loop = asyncio.new_event_loop()
    e = GenerationEngine(chargen, max_streams=64, max_queue=10, queue_timeout_s=30,
                         flush_interval_s=0.02, events_per_s=1000)

    def batch(n: int, streaming: bool) -> _Batch:
        gens = [_Gen(_stream(chargen, "a", loop, seed=i, streaming=streaming)) for i in range(n)]
        h = np.zeros((chargen.layers, n, chargen.hidden), np.float32)
        return _Batch(gens, h, h.copy())

    for streaming, plain, want in ((1, 0, 0.02), (20, 0, 0.02), (40, 0, 0.04), (64, 200, 0.064),
                                   (500, 0, MAX_FLUSH_INTERVAL_S)):
        e._batches = [batch(streaming, True), batch(plain, False)] if plain else [batch(streaming, True)]
        assert e._interval() == pytest.approx(want), streaming
    e.events_per_s = 0  # no budget: the plain interval whatever the streams
    assert e._interval() == 0.02
    e._batches = []
    loop.close()

    # through the engine: four slowed streams get far fewer chunks, and the same text
    run = chargen.run

    def slow(*args, **kw):
        time.sleep(0.004)
        return run(*args, **kw)

    monkeypatch.setattr(chargen, "run", slow)

    def chunks_of(events_per_s: float) -> tuple[list[list[str]], float]:
        t0 = time.perf_counter()
        out = engine_chunks(chargen, lambda loop: [
            _stream(chargen, "the man ", loop, seed=k, max_new=40) for k in range(4)],
            max_streams=4, flush_interval_s=0.0, events_per_s=events_per_s)
        return out, time.perf_counter() - t0

    every_step, _ = chunks_of(0.0)
    budget, took = chunks_of(4 / 0.05)  # 4 streams: one event each per 50 ms
    assert [len(p) for p in every_step] == [40] * 4
    for held, each in zip(budget, every_step, strict=True):
        assert "".join(held) == "".join(each)
        assert len(held[0]) == 1  # the first character at once
        assert len(held) <= 2 + took / 0.05, (len(held), took)


# -- a call too small to cut in parts runs on two intra-op threads -----------------------
@pytest.fixture(scope="module")
def wide_chargen(tiny_models_dir):
    from seqcore.tasks import load_model

    return load_model(tiny_models_dir / "chargen", device="cpu", split=True)


@pytest.mark.parametrize("which", ["tiny", "shipped"])
def test_the_two_thread_session_answers_exactly_as_the_one_thread_one(which, wide_chargen,
                                                                       models_dir):
    from seqcore.tasks import load_model

    m = (wide_chargen if which == "tiny"
         else load_model(models_dir / "chargen", device="cpu", split=True))
    assert m.wide is not None and m.describe()["wide_lone_calls"] is True
    rng = np.random.default_rng(5)
    for B, T in ((1, 1), (1, 37), (3, 1), (5, 12), (7, 1), (2, 200)):
        ids = rng.integers(2, m.vocab.vocab_size, (B, T)).astype(np.int64)
        lens = rng.integers(1, T + 1, B).astype(np.int64)
        h = rng.normal(0, 0.5, (m.layers, B, m.hidden)).astype(np.float32)
        c = rng.normal(0, 0.5, (m.layers, B, m.hidden)).astype(np.float32)
        for a, b in zip(m.run(ids, lens, h, c), m.run(ids, lens, h, c, wide=True), strict=True):
            np.testing.assert_array_equal(a, b)
    assert m.wide.get_session_options().intra_op_num_threads == 2


def test_without_the_setting_or_when_it_disagrees_there_is_no_two_thread_session(
        tiny_models_dir, monkeypatch, caplog):
    from seqcore.tasks import generation, load_model

    assert load_model(tiny_models_dir / "chargen", device="cpu").wide is None
    real = generation.CharModel.prepare_split

    def skewed(self, graph, make_session):
        def make(g, threads=1):
            sess = make_session(g, threads)

            class Off:  # answers a little off, as a kernel with another summation order
                def run(self, names, feed):
                    return [o + np.float32(1e-6) for o in sess.run(names, feed)]
            return Off()
        return real(self, graph, make)

    monkeypatch.setattr(generation.CharModel, "prepare_split", skewed)
    with caplog.at_level("WARNING", logger="seqserve.generation"):
        m = load_model(tiny_models_dir / "chargen", device="cpu", split=True)
    assert m.wide is None and "differs from the one-thread one" in caplog.text
    h, c = m.zero_state(1)
    assert m.run(np.ones((1, 1), np.int64), np.ones(1, np.int64), h, c, wide=True)[0].shape[0] == 1


def test_the_engine_runs_uncut_calls_wide_only_when_it_has_a_second_core(wide_chargen,
                                                                          monkeypatch):
    """With a second core (``parallel=2``) and no classifier call running, an uncut call
    runs on the two-thread session while that measures faster (``Widen``: each kind
    of call tried each way in turn first, then the faster); never with one core, while
    a classifier call holds the other, or for a lone stream's step; the text is the
    same every way."""
    from app.engine import step as stepping
    from app.engine.cores import ClassifierCalls

    calls: list[tuple[int, bool]] = []
    run = wide_chargen.run

    def spy(ids, lens, h, c, wide=False, **kw):
        calls.append((len(ids), wide))
        return run(ids, lens, h, c, wide=wide, **kw)

    def measured(wide_faster: bool):
        def observe(self, kind, rows, wide, seconds, cells):  # the costs, as measured
            self.samples.setdefault((kind, rows.bit_length(), wide), []).append(
                1.0 if wide == wide_faster else 2.0)
        return observe

    measuring = [False] + [False, True] * 3  # the prefill, then the first steps each way
    monkeypatch.setattr(wide_chargen, "run", spy)
    # two streams of the same length: one prefill call, then steps of two rows
    bodies = [{"prompt": "the man ", "seed": 3, "n": 30}, {"prompt": "a woman ", "seed": 4, "n": 30}]
    one_core = _texts(wide_chargen, bodies, max_streams=8, parallel=1)
    assert calls and not any(w for _, w in calls)
    calls.clear()
    monkeypatch.setattr(stepping.Widen, "observe", measured(wide_faster=True))
    two_cores = _texts(wide_chargen, bodies, max_streams=8, parallel=2)
    assert len(calls) > 10 and all(b == 2 for b, _ in calls)  # every call uncut
    assert [w for _, w in calls] == measuring + [True] * (len(calls) - len(measuring))
    assert two_cores == one_core  # the same text either way
    calls.clear()
    monkeypatch.setattr(stepping.Widen, "observe", measured(wide_faster=False))
    assert _texts(wide_chargen, bodies, max_streams=8, parallel=2) == one_core
    assert [w for _, w in calls] == measuring + [False] * (len(calls) - len(measuring))
    calls.clear()
    monkeypatch.setattr(stepping.Widen, "observe", measured(wide_faster=True))
    held = ClassifierCalls()
    held.add(1)  # a classifier call holds a core
    assert _texts(wide_chargen, bodies, max_streams=8, parallel=2,
                  classifier_calls=held) == one_core
    assert calls and not any(w for _, w in calls)
    held.add(-1)
    calls.clear()
    assert _texts(wide_chargen, bodies, max_streams=8, parallel=2,
                  classifier_calls=held) == one_core
    # free again
    assert [w for _, w in calls] == measuring + [True] * (len(calls) - len(measuring))
    calls.clear()
    # a lone stream: its prefill may run wide, its steps never do
    lone = _texts(wide_chargen, bodies[:1], max_streams=8, parallel=2)
    steps = calls[1:]  # (the first call: the prefill)
    assert len(steps) == 29 and not any(w for _, w in steps)
    assert lone == _texts(wide_chargen, bodies[:1], max_streams=8, parallel=1)
    calls.clear()
    many = [{"prompt": "x" * (1 + i) + " the ", "seed": i, "n": 12} for i in range(16)]
    texts = _texts(wide_chargen, many, max_streams=16, parallel=2, step_split_min_rows=8,
                   split_min_rows=8)
    cut = [(b, w) for b, w in calls if b < 16]  # parts of cut calls (8 rows each)
    assert cut and not any(w for _, w in cut)  # cut calls' parts run on one thread each
    assert texts == _texts(wide_chargen, many, max_streams=16, parallel=1)


# -- chunked prefill (app.prefill) -----------------------------------------------------
def test_a_prompt_read_in_chunks_ends_in_the_state_of_one_whole_call(chargen):
    """Chunks carry the state: logits and state after the last chunk equal one call
    over the whole prompt (to float rounding), for any chunk length."""
    from app.engine.prefill import Prefill

    ids = chargen.vocab.encode("the free spirit, who laughs at every chain. " * 3)[0]
    h, c = chargen.zero_state(1)
    whole = chargen.run(np.array([ids], dtype=np.int64), np.array([len(ids)]), h, c)
    for chunk_chars in (1, 7, 64, 1000):
        p = Prefill(chargen.zero_state, chunk_chars=chunk_chars, max_cells=chunk_chars)
        p.add(["g"], lambda g: ids)
        calls, done = 0, []
        while p.jobs:
            ch = p.step(chargen.run, protect=False)
            calls += 1
            assert ch.cells <= max(chunk_chars, 1) and ch.rows == 1
            done += ch.done
        assert calls == -(-len(ids) // chunk_chars)
        (d,) = done
        np.testing.assert_allclose(d.logits, whole[0][0], atol=1e-5)
        np.testing.assert_allclose(d.h, whole[1], atol=1e-5)
        np.testing.assert_allclose(d.c, whole[2], atol=1e-5)


def test_a_prefill_call_never_holds_more_than_max_cells_and_the_oldest_go_first(chargen):
    from app.engine.prefill import Prefill

    p = Prefill(chargen.zero_state, chunk_chars=16, max_cells=40)
    prompts = {f"s{i}": [1 + k % 30 for k in range(10 * (i + 1))] for i in range(5)}  # 10..50
    p.add(list(prompts), lambda g: prompts[g])
    first = p.plan(protect=False)
    assert [j.gens[0] for j, _ in first] == ["s0", "s1"]  # 2 rows x 16 <= 40 < 3 x 16
    seen = []
    while p.jobs:
        ch = p.step(chargen.run, protect=False)
        assert ch.cells <= 40
        seen += [d.job.gens[0] for d in ch.done]
    assert seen == list(prompts)  # each read to its end, oldest first


def test_while_streams_run_a_prefill_call_is_sized_to_the_time_slice(chargen):
    from app.engine.prefill import Prefill

    p = Prefill(chargen.zero_state, chunk_chars=64, slice_s=0.01, max_cells=4096)
    p.cell_s = 1e-4  # measured cost of a cell: 100 cells fit a 10 ms slice
    assert p.budget(protect=True) == 100 and p.budget(protect=False) == 4096
    p.add([1, 2, 3], lambda g: [g] + [1 + k % 30 for k in range(199)])  # distinct prompts
    assert len(p.plan(protect=True)) == 1  # 2 rows x 64 > 100: one row only
    assert len(p.plan(protect=False)) == 3


def test_running_streams_step_between_the_chunks_of_a_long_prompt(chargen, monkeypatch):
    """A long prompt arriving while a stream runs is read a chunk per iteration: the
    running stream gets a character every iteration, and the new stream's text is the
    one it gets alone (chunk boundaries depend only on its prompt)."""
    long_prompt = "beyond good and evil " * 12  # 252 characters: 16 chunks of 16
    (alone,) = _texts(chargen, [{"prompt": long_prompt, "seed": 5, "n": 30}],
                      prefill_chunk_chars=16, max_streams=4)
    shapes = _counting(chargen, monkeypatch)

    def go(loop):
        e = GenerationEngine(chargen, max_streams=4, max_queue=10, queue_timeout_s=30,
                             prefill_chunk_chars=16, prefill_max_cells=64)
        runner = _stream(chargen, "the ", loop, seed=1, max_new=500)
        e.submit(runner)
        gauge = _Gauge()
        e._iteration(gauge)
        (g_run,) = e._batches[0].gens
        newcomer = _stream(chargen, long_prompt, loop, seed=5, max_new=30, t=0.9)
        e.submit(newcomer)
        shapes.clear()
        n0 = g_run.matcher.n
        iterations = 0
        while e.prefill.jobs or iterations == 0:
            e._iteration(gauge)
            iterations += 1
            assert g_run.matcher.n == n0 + iterations  # a character every iteration
        prefills = [s for s in shapes if s[1] > 1]
        assert [s[1] for s in prefills] == [16] * 15 + [12]  # 252 = 15 x 16 + 12
        assert all(s[0] == 1 for s in prefills)
        for _ in range(100):  # its 30 characters, then it retires
            if not any(g.stream is newcomer for b in e._batches for g in b.gens):
                break
            e._iteration(gauge)
        assert not any(g.stream is newcomer for b in e._batches for g in b.gens)
        return newcomer

    newcomer = _in_loop(go)
    parts = []
    while not newcomer.out.empty():
        item = newcomer.out.get_nowait()
        if isinstance(item, str):
            parts.append(item)
    assert "".join(parts) == alone


def test_prompt_characters_in_flight_are_capped_and_given_back(chargen):
    from app.engine.errors import Overloaded
    from app.http.errors import api_error

    def go(loop):
        e = GenerationEngine(chargen, max_streams=8, max_queue=10, queue_timeout_s=30,
                             max_prompt_chars_in_flight=100)
        a = _stream(chargen, "a" * 60, loop)
        e.submit(a)
        with pytest.raises(Overloaded) as refused:
            e.submit(_stream(chargen, "b" * 60, loop))
        assert api_error(refused.value).status == 503 and refused.value.reason == "prefill_full"
        assert e.prompt_chars_in_flight == 60
        a.cancel()  # a cancelled stream gives its share back at once, and only once
        a.cancel()
        assert e.prompt_chars_in_flight == 0
        b = _stream(chargen, "b" * 60, loop)
        e.submit(b)
        # a prompt alone always gets in, even over the cap
        assert e.prompt_chars_in_flight == 60
        e._iteration(_Gauge())  # read (one call: nothing else runs) -> given back
        assert e.prompt_chars_in_flight == 0
        huge = _stream(chargen, "c" * 150, loop)
        e.submit(huge)
        assert e.prompt_chars_in_flight == 150
        e.close()  # (stop, from a thread that is not the event loop's)
        assert e.prompt_chars_in_flight == 0
        return True

    assert _in_loop(go)


def test_widen_serves_the_faster_session_and_keeps_measuring_the_other():
    from app.engine.step import Widen

    w = Widen(explore=4, max_explore=16, window=3, first=2)

    def run(n: int, wide_s: float, narrow_s: float = 2e-4) -> list[bool]:
        picks = []
        for _ in range(n):
            wide = w.choose("step", 1)
            picks.append(wide)
            w.observe("step", 1, wide, wide_s if wide else narrow_s, 1)
        return picks

    # each way measured twice first, in turn; then one thread, faster, serves, with a
    # try of two after 4, then 8, then 16 calls
    picks = run(48, 3e-4)
    assert picks[:4] == [False, True, False, True]
    assert [i + 4 for i, p in enumerate(picks[4:]) if p] == [7, 15, 31, 47]
    # another kind, or another batch size, is measured on its own
    assert w.choose("prefill", 1) is False and w.choose("step", 5) is False
    # one descheduled call (a hundred times slower) does not change the choice
    assert run(1, 3e-4, narrow_s=2e-2) == [False] and run(5, 3e-4) == [False] * 5
    # the machine changes: two threads get cheaper. The next try (16 calls after the
    # last) sees it, but one sample does not move the median; the one after does, and
    # two threads serve, with a try of one thread 4 calls later (still slower: then 8)
    picks = run(30, 0.5e-4)
    assert [i for i, p in enumerate(picks) if p] == [9, 25, 26, 27, 28]
    assert run(5, 0.5e-4) == [True] * 5
    assert w.cost("step", 1, True) < w.cost("step", 1, False)
    w.observe("prefill", 2, True, 4e-3, 400)  # seconds per cell
    assert w.cost("prefill", 2, True) == 1e-5
    # calls of 4 to 7 rows share their measurements (rows to the nearest power of two)
    for rows in (4, 5, 6, 7, 6, 5):
        wide = w.choose("step", rows)
        w.observe("step", rows, wide, 1e-4 if wide else 3e-4, rows)
    assert w.cost("step", 7, True) == w.cost("step", 4, True) < w.cost("step", 5, False)
    # two threads, faster, serve; the 4th call after the first measurements is a try
    # of one thread (``explore=4``)
    picks = []
    for rows in (4, 5, 6, 7):
        picks.append(wide := w.choose("step", rows))
        w.observe("step", rows, wide, 1e-4 if wide else 3e-4, rows)
    assert picks == [True, False, True, True]
