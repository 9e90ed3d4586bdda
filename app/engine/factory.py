"""The loops that serve the models: which loop a task gets, with what settings.

``LOOPS`` maps each task (``seqcore.tasks.TASKS``) to the function that builds its loop
from the settings: a new task adds its line here. ``start_loop`` builds and starts
one (at start-up, and at a reload's swap); every loop of one application shares its
``ClassifierCalls`` (app/engine/cores.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from app.config import Settings
from app.engine.batcher import ClassificationBatcher, cpu_step_cost, gpu_step_cost
from app.engine.cores import ClassifierCalls
from app.engine.generator import GenerationEngine
from seqcore.runtime import CUDA
from seqcore.tasks import LoadedModel
from seqcore.tasks.classification import SentimentModel
from seqcore.tasks.generation import CharModel


class Loop(Protocol):
    """The loop serving one model: ``start()``, ``alive``/``dead``, ``stop()`` (stop
    taking work, answer what waits, end its threads) and ``retire_when_done()`` (a
    reload replaced its model: finish what it holds, then stop)."""

    model: Any
    dead: str | None

    def start(self) -> None: ...

    @property
    def alive(self) -> bool: ...

    async def stop(self) -> None: ...

    async def retire_when_done(self) -> None: ...


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (a
    container with ``cpus: 2`` on a 16-core host gets 2, not 16)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    n = n or 1
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]  # cgroup v2
    except (OSError, ValueError):
        try:  # cgroup v1
            quota = (cgroup / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (cgroup / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return n
    try:
        if quota not in ("max", "-1") and int(period) > 0:
            n = min(n, max(1, int(quota) // int(period)))
    except ValueError:
        pass
    return n


def parallel_calls(s: Settings) -> int:
    """SEQSERVE_PARALLEL_CALLS, or one ORT call at a time per available CPU, shared
    among the uvicorn worker processes (each call uses ``intra_op_threads`` CPUs), at
    most 8."""
    if s.parallel_calls:
        return s.parallel_calls
    return max(1, min(8, available_cpus() // (s.intra_op_threads * s.workers)))


def classification_loop(s: Settings, m: SentimentModel, calls: ClassifierCalls
                        ) -> ClassificationBatcher:
    return ClassificationBatcher(m, max_batch_size=s.max_batch_size,
                                 max_wait_ms=s.max_wait_ms, max_queue=s.max_queue,
                                 queue_timeout_s=s.queue_timeout_s, batching=s.batching,
                                 threads=parallel_calls(s),
                                 step_cost=gpu_step_cost if m.provider == CUDA
                                 else cpu_step_cost, calls=calls)


def generation_loop(s: Settings, m: CharModel, calls: ClassifierCalls) -> GenerationEngine:
    return GenerationEngine(m, max_streams=s.gen_max_streams, max_queue=s.gen_max_queue,
                            queue_timeout_s=s.queue_timeout_s, batching=s.gen_batching,
                            parallel=1 if m.provider == CUDA else parallel_calls(s),
                            flush_interval_s=s.gen_stream_interval_ms / 1000,
                            events_per_s=s.gen_stream_events_per_s,
                            drain_timeout_s=s.gen_timeout_s + s.queue_timeout_s + 5.0,
                            prefill_chunk_chars=s.gen_prefill_chunk_chars,
                            prefill_slice_s=s.gen_prefill_slice_ms / 1000,
                            prefill_max_cells=s.gen_prefill_max_cells,
                            max_prompt_chars_in_flight=s.gen_max_prompt_chars_in_flight,
                            classifier_calls=calls)


# The loop that serves each task (seqcore.tasks.TASKS): a new task adds its line here.
LOOPS: dict[str, Callable[[Settings, Any, ClassifierCalls], Loop]] = {
    SentimentModel.task: classification_loop,
    CharModel.task: generation_loop,
}


def start_loop(settings: Settings, m: LoadedModel, calls: ClassifierCalls) -> Loop:
    """The started loop of ``m``'s task; the caller puts it in the app's loops (at
    start-up, or at a reload's swap)."""
    loop = LOOPS[m.task](settings, m, calls)
    loop.start()
    return loop
