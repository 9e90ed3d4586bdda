"""The classifier's batch picker and its worker threads, without HTTP."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from app.engine.batcher import ClassificationBatcher, cpu_step_cost, gpu_step_cost, pick_batch


def call_cost(lengths: list[int], rows: list[int], step_cost) -> float:
    return step_cost(len(rows)) * max(lengths[i] for i in rows)


@settings(max_examples=300, deadline=None)
@given(lengths=st.lists(st.integers(1, 800), min_size=1, max_size=60),
       max_batch=st.integers(1, 32), gpu=st.booleans())
def test_a_pick_holds_the_oldest_row_fits_the_batch_and_beats_running_it_alone(
        lengths, max_batch, gpu):
    cost = gpu_step_cost if gpu else cpu_step_cost
    rows = pick_batch(lengths, max_batch, cost)
    assert rows[0] == 0  # the oldest row always goes: nobody starves
    assert rows == sorted(set(rows)) and 1 <= len(rows) <= max_batch
    assert all(0 <= i < len(lengths) for i in rows)
    real = sum(lengths[i] for i in rows)
    # sharing the call never costs more per real token than the oldest row alone
    assert call_cost(lengths, rows, cost) / real <= cost(1) * lengths[0] / lengths[0] + 1e-9
    # the batch is a run of neighbours in length: nothing left out lies strictly inside it
    lo, hi = min(lengths[i] for i in rows), max(lengths[i] for i in rows)
    assert not any(lo < lengths[i] < hi for i in range(len(lengths)) if i not in rows)


def test_cpu_picks_batch_similar_lengths_and_leave_far_ones_alone():
    # four rows of ~200 tokens share a call; an 800-token row would triple their padding
    assert pick_batch([200, 800, 210, 190, 205], 32) == [0, 2, 3, 4]
    # a lone long row does not drag a short one into a padded call
    assert pick_batch([40, 800], 32) == [0]
    # on a CPU batching stops paying at 4 rows: the rest is left for the other worker
    assert pick_batch([100] * 40, 32) == [0, 1, 2, 3]
    # on a GPU equal lengths fill the batch up to its limit
    assert pick_batch([100] * 40, 8, gpu_step_cost) == list(range(8))
    # on a GPU a step costs the same for any batch: the short row joins the long one
    assert pick_batch([40, 800], 32, gpu_step_cost) == [0, 1]


class _SlowModel:
    """Stands in for SentimentModel: each call sleeps, then answers from the ids."""

    def __init__(self, seconds: float):
        self.name = "fake-sentiment"
        self.tokenizer = SimpleNamespace(unk_id=1)
        self.seconds = seconds
        self.calls: list[tuple[float, float, int]] = []
        self._lock = threading.Lock()

    def run(self, ids: np.ndarray, lengths: np.ndarray):
        t0 = time.perf_counter()
        time.sleep(self.seconds)
        with self._lock:
            self.calls.append((t0, time.perf_counter(), len(ids)))
        p = (ids.sum(axis=1) % 97 / 97).astype(np.float32)
        a = np.ones(ids.shape, np.float32) / lengths[:, None]
        return p, a


async def _submit_all(batcher: ClassificationBatcher, rows: list[list[int]]) -> list:
    batcher.announce(len(rows))
    futs = [batcher.submit(r, time.perf_counter()) for r in rows]
    return await asyncio.gather(*futs)


def _run_batcher(workers: int, rows: list[list[int]], seconds: float = 0.2):
    model = _SlowModel(seconds)

    async def go():
        b = ClassificationBatcher(model, max_batch_size=32, max_wait_ms=0, max_queue=64,
                                  queue_timeout_s=10, threads=workers)
        b.start()
        try:
            return await _submit_all(b, rows)
        finally:
            await b.stop()

    return model, asyncio.run(go())


def test_two_workers_run_two_calls_side_by_side_and_each_row_gets_its_own_answer():
    short, long_ = [5] * 10, [7] * 800  # too far apart in length to share a call
    model, results = _run_batcher(2, [short, long_])
    assert len(model.calls) == 2
    (s0, e0, _), (s1, e1, _) = sorted(model.calls)
    assert s1 < e0  # the second call started before the first ended
    assert results[0].probability == np.float32(50 % 97 / 97)
    assert results[1].probability == np.float32(5600 % 97 / 97)
    assert len(results[0].attention) == 10 and len(results[1].attention) == 800


def test_one_worker_runs_its_calls_one_after_the_other():
    model, _ = _run_batcher(1, [[5] * 10, [7] * 800])
    (s0, e0, _), (s1, e1, _) = sorted(model.calls)
    assert s1 >= e0


def test_available_cpus_honours_a_container_cpu_quota(tmp_path):
    from app.engine.factory import available_cpus

    host = available_cpus(tmp_path / "no-cgroup")  # no cgroup files: the affinity mask
    assert host >= 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) == host
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU still gets one worker
    assert available_cpus(tmp_path) == 1
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(v1) == 1


def test_parallel_calls_setting_wins_over_the_cpu_count():
    from app.config import Settings
    from app.engine.factory import available_cpus, parallel_calls

    assert parallel_calls(Settings(parallel_calls=3)) == 3
    assert parallel_calls(Settings()) == max(1, min(8, available_cpus()))
    assert parallel_calls(Settings(intra_op_threads=64)) == 1
    # uvicorn worker processes share the CPUs
    assert parallel_calls(Settings(workers=64)) == 1


def _generate_all(model, parallel: int, bodies: list[dict], step_split_min_rows: int = 8
                  ) -> list[str]:
    from app.engine.generator import Stream
    from seqcore.sampling import SamplingParams
    from tests.engine.test_generation_engine import engine_texts

    return engine_texts(model, lambda loop: [
        Stream(model.vocab.encode(b["prompt"])[0], SamplingParams(b["t"], None, b["p"]),
               seed=b["seed"], max_new=b["n"], stop=b["stop"], arrived=time.perf_counter(),
               loop=loop, streaming=b["stream"]) for b in bodies],
        max_streams=64, max_queue=64, parallel=parallel, split_min_rows=2,
        step_split_min_rows=step_split_min_rows)


def test_a_prefill_cut_into_parts_run_side_by_side_changes_no_text(tiny_models_dir):
    from app.config import Settings
    from app.engine.registry import load_model

    model = load_model(tiny_models_dir / "chargen", Settings(models_dir=tiny_models_dir))
    bodies = [{"prompt": "the " * (1 + i % 7) + "x" * i, "seed": 7 + i, "n": 30 + 5 * i,
               "t": (0.0, 0.7, 1.3)[i % 3], "p": 0.9 if i % 2 else None,
               "stop": ["e"] if i % 5 == 0 else [], "stream": i % 2 == 0} for i in range(13)]
    calls: list[tuple[int, int]] = []  # (rows, time steps) of every ORT call
    run = model.run

    def counting(ids, *args, **kw):
        calls.append(ids.shape)
        return run(ids, *args, **kw)

    model.run = counting
    alone = _generate_all(model, 1, bodies)
    prefills = [rows for rows, steps in calls if steps > 1]  # every prompt is >= 4 chars
    assert prefills == [13]
    calls.clear()
    split = _generate_all(model, 3, bodies)  # prefills in up to 3 parts of >= 2 rows
    prefills = [rows for rows, steps in calls if steps > 1]
    assert sorted(prefills) == [4, 4, 5]
    assert max(rows for rows, steps in calls if steps == 1) == 13  # steps: not cut (< 8 rows a part)
    assert split == alone
    assert len(set(alone)) > 1
    calls.clear()  # steps cut too, into up to 3 parts of >= 3 rows, as streams finish
    steps_split = _generate_all(model, 3, bodies, step_split_min_rows=3)
    step_rows = [rows for rows, steps in calls if steps == 1]
    assert max(step_rows) <= 5 and 4 in step_rows
    assert steps_split == alone
