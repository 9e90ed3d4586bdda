"""A lone classifier call on two cores (seqcore/split.py, the batching loop): the graph
cut into an embedding part, its forward and reverse recurrent directions and a head
answers exactly as the whole graph does, for every cell and for the shipped graph
with its n-gram term; the cut is made in a child process, so the service never
imports onnx; the batching loop uses the cut only for a call with nothing else
running or waiting; and a graph that cannot be cut, or whose pieces disagree, keeps
serving whole."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from app.engine.batcher import ClassificationBatcher
from seqcore import runtime, split
from seqcore.tasks import load_model
from training.export import build_char_graph, build_sentiment_graph
from training.models import CELLS, CharConfig, CharLSTM, SentimentConfig, SentimentLSTM


def _session(graph: bytes):
    return runtime.session(graph, threads=1)


def _batch(rng: np.random.Generator, vocab: int, lengths: list[int]):
    rows = [rng.integers(2, vocab, size=n).tolist() for n in lengths]
    ids, lens = runtime.pad_rows(rows, 1)
    return {"input_ids": ids, "lengths": lens}


@pytest.mark.parametrize("cell", CELLS)
def test_the_cut_graph_answers_as_the_whole_graph_for_every_cell(cell: str):
    torch.manual_seed(1)
    sm = SentimentLSTM(SentimentConfig(vocab_size=80, emb_dim=16, hidden=8, cell=cell)).eval()
    graph = build_sentiment_graph(sm).SerializeToString()
    parts = split.cut_directions(graph)
    assert set(parts) == {"pre", "forward", "reverse", "head"}
    whole = _session(graph)
    cut = split.DirectionSplit(parts, _session)
    # each direction's graph holds one unidirectional node of the cell's operator
    for d in split.DIRECTIONS:
        import onnx

        nodes = onnx.load_model_from_string(parts[d]).graph.node
        rec = [n for n in nodes if n.op_type in split.RECURRENT_OPS]
        assert len(rec) == 1
        assert onnx.helper.get_attribute_value(
            next(a for a in rec[0].attribute if a.name == "direction")) == d.encode()
    names = [o.name for o in whole.get_outputs()]
    rng = np.random.default_rng(0)
    with ThreadPoolExecutor(1) as assist:
        for lengths in ([1], [9], [3, 17, 1, 8], [40, 2]):
            feed = _batch(rng, 80, lengths)
            want = whole.run(names, feed)
            for helper in (None, assist):
                got = cut.run(names, feed, helper)
                for a, b in zip(want, got, strict=True):
                    np.testing.assert_allclose(b, a, rtol=0, atol=split.SPLIT_TOL)


def test_the_shipped_classifier_with_its_ngram_term_is_cut_and_answers_the_same(models_dir):
    model = load_model(models_dir / "sentiment", device="cpu", split=True)
    assert model.split is not None
    e = model.encode("Not bad at all: the second half drags, but the cast is wonderful. " * 6)
    short = model.encode("Dull.")
    ids, lens = runtime.pad_rows([e.ids, short.ids], model.tokenizer.unk_id)
    whole = model.run(ids, lens)
    with ThreadPoolExecutor(1) as assist:
        cut = model.run(ids, lens, assist=assist)
    assert len(cut) == 3 and cut[2] is not None  # n-gram contributions come through too
    for a, b in zip(whole, cut, strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=split.SPLIT_TOL)


def test_a_graph_without_one_bidirectional_layer_is_not_cut(tmp_path: Path):
    torch.manual_seed(0)
    g = build_char_graph(CharLSTM(CharConfig(vocab_size=30, emb_dim=8, hidden=16, layers=2)))
    with pytest.raises(split.CannotCut, match="2 recurrent nodes"):
        split.cut_directions(g.SerializeToString())
    path = tmp_path / "char.onnx"
    path.write_bytes(g.SerializeToString())
    r = subprocess.run([sys.executable, "-m", "seqcore.split", str(path)], capture_output=True,
                       text=True)
    assert r.returncode == 3 and "2 recurrent nodes" in r.stderr and r.stdout == ""
    with pytest.raises(split.CannotCut, match="2 recurrent nodes"):
        split.cut_in_child(path)


def test_the_cut_happens_in_a_child_and_the_service_never_imports_onnx(tiny_models_dir):
    code = ("import sys; from pathlib import Path; from seqcore.tasks import load_model; "
            f"m = load_model(Path({str(tiny_models_dir / 'sentiment')!r}), device='cpu', "
            "split=True); print(m.split is not None, 'onnx' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "False"]


def test_without_the_onnx_package_nothing_is_cut(monkeypatch, tmp_path, tiny_models_dir):
    fake = tmp_path / "fake" / "onnx"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no onnx here')\n")
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))  # seen by the child process
    model = load_model(tiny_models_dir / "sentiment", device="cpu", split=True)
    assert model.split is None  # and it still serves
    ids, lens = runtime.pad_rows([[2, 3, 4]], 1)
    assert 0.0 <= float(model.run(ids, lens)[0][0]) <= 1.0


def test_pieces_that_disagree_with_the_whole_graph_are_given_up(monkeypatch, tiny_models_dir,
                                                               capture_log):
    original = split.DirectionSplit.run

    def off_by_a_little(self, outputs, feed, assist=None):
        out = original(self, outputs, feed, assist)
        return [out[0] + 1e-3, *out[1:]]

    monkeypatch.setattr(split.DirectionSplit, "run", off_by_a_little)
    records = capture_log()
    model = load_model(tiny_models_dir / "sentiment", device="cpu", split=True)
    assert model.split is None
    assert any("differs from the whole" in r.getMessage() and r.levelno == logging.WARNING
               for r in records.records)


def test_loading_without_split_asked_builds_no_cut(tiny_models_dir: Path):
    assert load_model(tiny_models_dir / "sentiment", device="cpu").split is None
    assert load_model(tiny_models_dir / "sentiment", device="cpu", split=True).split is not None


class _Recording:
    """Wraps a loaded classifier: records, per call, whether the cut was used and
    whether another call was running at the same time."""

    def __init__(self, model, seconds: float = 0.0):
        self.model, self.seconds = model, seconds
        self.name, self.tokenizer, self.split = model.name, model.tokenizer, model.split
        self.calls: list[tuple[float, float, bool]] = []
        self._lock = threading.Lock()

    def run(self, ids, lengths, assist=None):
        t0 = time.perf_counter()
        out = self.model.run(ids, lengths, assist=assist)
        time.sleep(self.seconds)
        with self._lock:
            self.calls.append((t0, time.perf_counter(), assist is not None))
        return out


def _serve(model, workers: int, batches: list[list[list[int]]], gap_s: float = 0.0,
           calls=None):
    async def go():
        b = ClassificationBatcher(model, max_batch_size=32, max_wait_ms=0, max_queue=64,
                                  queue_timeout_s=10, threads=workers, calls=calls)
        b.start()
        try:
            results = []
            for rows in batches:
                b.announce(len(rows))
                futs = [b.submit(r, time.perf_counter()) for r in rows]
                if gap_s:
                    results.append(await asyncio.gather(*futs))
                    await asyncio.sleep(gap_s)
                else:
                    results.append(futs)
            if not gap_s:
                results = [await asyncio.gather(*f) for f in results]
            return b, results
        finally:
            await b.stop()

    return asyncio.run(go())


def test_a_lone_call_runs_split_and_answers_as_the_whole_graph(tiny_models_dir: Path):
    base = load_model(tiny_models_dir / "sentiment", device="cpu", split=True)
    model = _Recording(base)
    rows = [[2, 3, 4, 5, 6, 7], [9, 8, 7]]
    batcher, results = _serve(model, 2, [[r] for r in rows], gap_s=0.02)
    assert [used for _, _, used in model.calls] == [True, True]
    assert batcher.split_calls == 2
    for (res,), r in zip(results, rows, strict=True):
        ids, lens = runtime.pad_rows([r], 1)
        p, a, _ = base.run(ids, lens)
        assert res.probability == float(p[0])
        np.testing.assert_array_equal(res.attention, a[0])


def test_calls_that_overlap_run_whole(tiny_models_dir: Path):
    base = load_model(tiny_models_dir / "sentiment", device="cpu", split=True)
    model = _Recording(base, seconds=0.15)
    # three rows of very different lengths (no two share a call) submitted at once:
    # the first two calls are taken while the others wait and run side by side, so
    # neither is split (the last may find the server idle again, and then it may be)
    rows = [[2] * 3, [3] * 35, [4] * 12]
    _, (results,) = _serve(model, 2, [rows])
    assert len(model.calls) == 3 and len(results) == 3
    (s0, e0, used0), (s1, e1, used1) = sorted(model.calls)[:2]
    assert s1 < e0  # they did overlap
    assert not used0 and not used1


def test_one_worker_never_splits(tiny_models_dir: Path):
    model = _Recording(load_model(tiny_models_dir / "sentiment", device="cpu", split=True))
    batcher, _ = _serve(model, 1, [[[2, 3, 4]], [[5, 6]]], gap_s=0.02)
    assert batcher.split_calls == 0 and not any(used for _, _, used in model.calls)


def test_v1_models_says_whether_lone_calls_are_split_and_the_setting_turns_it_off(
        make_client, tiny_models_dir):
    for setting, expected in ((True, True), (False, False)):
        client = make_client(tiny_models_dir, split_lone_calls=setting)
        cards = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        assert cards["sentiment"]["split_lone_calls"] is expected
        assert "split_lone_calls" not in cards["chargen"]
        r = client.post("/sentiment", json={"text": "a great film"})
        assert r.status_code == 200
        batcher = client.app.state.seqserve.batchers["sentiment"]
        assert (batcher.split_calls > 0) is (expected and batcher.threads >= 2)


def test_the_count_of_classifier_calls_follows_the_calls(tiny_models_dir: Path):
    """The generation engines read the app's ``ClassifierCalls`` (handed to every loop
    by the factory) to leave a core to a running classifier call: it is 1 while a
    call runs and back to 0 after."""
    from app.engine.cores import ClassifierCalls

    CLASSIFIER_CALLS = ClassifierCalls()

    base = load_model(tiny_models_dir / "sentiment", device="cpu", split=True)
    seen: list[int] = []

    class Watching(_Recording):
        def run(self, ids, lengths, assist=None):
            seen.append(CLASSIFIER_CALLS.n)
            return super().run(ids, lengths, assist)

    before = CLASSIFIER_CALLS.n
    _serve(Watching(base), 2, [[[2, 3, 4]], [[5, 6]]], gap_s=0.02, calls=CLASSIFIER_CALLS)
    assert seen == [before + 1, before + 1]
    assert CLASSIFIER_CALLS.n == before
