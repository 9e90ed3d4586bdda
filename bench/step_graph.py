"""A char LSTM's one-character step as plain MatMul + gate ops instead of ONNX's LSTM
operator: is it faster? A measurement for a possible serving change, not served.

    python -m bench.step_graph --model models/chargen

The served step graph runs each layer through ONNX Runtime's LSTM kernel with a
sequence of one. The same step can be written as the cell's arithmetic: layer 0's
input projection folded into a [V, 4H] table (embedding @ W0ᵀ + both biases, one
Gather), ``h @ Rᵀ`` for its recurrence, one MatMul of ``[x; h]`` with ``[W; R]ᵀ`` for
each later layer, then the gates (ONNX order i, o, f, c). This script builds that
graph from a model folder's LSTM graph, checks it against the served graph (max abs
difference on random states) and for batch invariance (a row alone vs in a batch,
which must be exactly equal, as the service's contract), then times both graphs'
bare step calls, interleaved rounds, at 1 and 32 rows on one and two intra-op threads.
Run it on a quiet machine; it prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, numpy_helper
from onnx import helper as oh

from seqcore import runtime
from seqcore.modelfolder import ModelFolder


def matmul_step_graph(graph: onnx.ModelProto, layers: int, hidden: int) -> onnx.ModelProto:
    """The step graph (input_ids [B, 1], lengths [B] (read for the interface only: every
    row steps), h0/c0 [layers, B, H] -> logits, hN, cN) of this project's char LSTM
    export (``training.export.build_char_graph``, cell lstm)."""
    if not any(n.op_type == "LSTM" for n in graph.graph.node):
        raise ValueError("not an LSTM char graph: the step graph is built for the LSTM cell only")
    w = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    H = hidden
    inits: list[onnx.TensorProto] = []

    def init(name: str, arr: np.ndarray) -> None:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))

    def bias(layer: int) -> np.ndarray:
        b = w[f"B{layer}"][0]
        return (b[: 4 * H] + b[4 * H :]).astype(np.float32)

    init("tab0", (w["emb"] @ w["W0"][0].T + bias(0)).astype(np.float32))
    init("R0T", w["R0"][0].T)
    for layer in range(1, layers):
        init(f"WR{layer}", np.concatenate([w[f"W{layer}"][0].T, w[f"R{layer}"][0].T], 0))
        init(f"b{layer}", bias(layer))
    init("WoT", w["Wo_T"])
    init("bo", w["bo"])
    for k, v in {"ax0": [0], "ax1": [1], "split4": [H] * 4}.items():
        init(k, np.array(v, np.int64))
    for layer in range(layers + 1):
        init(f"s{layer}", np.array([layer], np.int64))

    nodes = [oh.make_node("Squeeze", ["input_ids", "ax1"], ["ids"]),
             oh.make_node("Gather", ["tab0", "ids"], ["xw0"])]
    for layer in range(layers):
        nodes += [oh.make_node("Slice", [s, f"s{layer}", f"s{layer + 1}", "ax0"], [f"{s}_{layer}"])
                  for s in ("h0", "c0")]
        nodes += [oh.make_node("Squeeze", [f"{s}0_{layer}", "ax0"], [f"{s}p{layer}"])
                  for s in ("h", "c")]
    for layer in range(layers):
        L = str(layer)
        if layer == 0:
            nodes += [oh.make_node("MatMul", ["hp0", "R0T"], ["rh0"]),
                      oh.make_node("Add", ["xw0", "rh0"], ["pre0"])]
        else:
            nodes += [oh.make_node("Concat", [f"hn{layer - 1}", f"hp{L}"], [f"xh{L}"], axis=1),
                      oh.make_node("MatMul", [f"xh{L}", f"WR{L}"], [f"mm{L}"]),
                      oh.make_node("Add", [f"mm{L}", f"b{L}"], [f"pre{L}"])]
        nodes += [oh.make_node("Split", [f"pre{L}", "split4"],
                               [f"i{L}", f"o{L}", f"f{L}", f"g{L}"], axis=1)]
        nodes += [oh.make_node("Sigmoid", [f"{g}{L}"], [f"{g}s{L}"]) for g in "iof"]
        nodes += [oh.make_node("Tanh", [f"g{L}"], [f"gt{L}"]),
                  oh.make_node("Mul", [f"fs{L}", f"cp{L}"], [f"fc{L}"]),
                  oh.make_node("Mul", [f"is{L}", f"gt{L}"], [f"ig{L}"]),
                  oh.make_node("Add", [f"fc{L}", f"ig{L}"], [f"cn{L}"]),
                  oh.make_node("Tanh", [f"cn{L}"], [f"ct{L}"]),
                  oh.make_node("Mul", [f"os{L}", f"ct{L}"], [f"hn{L}"])]
    top = f"hn{layers - 1}"
    nodes += [oh.make_node("MatMul", [top, "WoT"], ["lo"]),
              oh.make_node("Add", ["lo", "bo"], ["logits"])]
    for s in ("h", "c"):
        nodes += [oh.make_node("Unsqueeze", [f"{s}n{layer}", "ax0"], [f"{s}u{layer}"])
                  for layer in range(layers)]
        nodes.append(oh.make_node("Concat", [f"{s}u{layer}" for layer in range(layers)],
                                  [f"{s}N"], axis=0))
    V = w["bo"].shape[0]
    state = ["layers", "batch", H]
    g = oh.make_graph(
        nodes, "char_step_matmul",
        [oh.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", 1]),
         oh.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"]),
         oh.make_tensor_value_info("h0", TensorProto.FLOAT, state),
         oh.make_tensor_value_info("c0", TensorProto.FLOAT, state)],
        [oh.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", V]),
         oh.make_tensor_value_info("hN", TensorProto.FLOAT, state),
         oh.make_tensor_value_info("cN", TensorProto.FLOAT, state)], inits)
    model = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def session(model: bytes, threads: int) -> ort.InferenceSession:
    """A CPU session set up as the service's (``seqcore.runtime.session``)."""
    return runtime.session(model, threads=threads)


def feed(rng: np.random.Generator, rows: int, layers: int, hidden: int, vocab: int) -> dict:
    return {"input_ids": rng.integers(1, vocab, (rows, 1)).astype(np.int64),
            "lengths": np.ones(rows, np.int64),
            "h0": rng.normal(0, 0.5, (layers, rows, hidden)).astype(np.float32),
            "c0": rng.normal(0, 0.5, (layers, rows, hidden)).astype(np.float32)}


def checks(served: ort.InferenceSession, step: ort.InferenceSession, layers: int,
           hidden: int, vocab: int) -> dict:
    """Max abs difference from the served graph, and a row alone vs in a batch of 32."""
    rng = np.random.default_rng(0)
    f = feed(rng, 32, layers, hidden, vocab)
    a, b = served.run(None, f), step.run(None, f)
    diff = max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))
    alone = 0.0
    for r in (0, 13, 31):
        one = {"input_ids": f["input_ids"][r : r + 1], "lengths": f["lengths"][:1],
               "h0": np.ascontiguousarray(f["h0"][:, r : r + 1]),
               "c0": np.ascontiguousarray(f["c0"][:, r : r + 1])}
        o = step.run(None, one)
        alone = max(alone, float(np.abs(o[0][0] - b[0][r]).max()),
                    float(np.abs(o[1][:, 0] - b[1][:, r]).max()),
                    float(np.abs(o[2][:, 0] - b[2][:, r]).max()))
    return {"max_abs_diff_vs_served": diff, "row_alone_vs_batch_max_abs_diff": alone}


def time_steps(sessions: dict[str, ort.InferenceSession], f: dict, calls: int,
               rounds: int) -> dict[str, float]:
    """Median over ``rounds`` (graphs interleaved) of the mean ms per step call."""
    per: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for name, s in sessions.items():
            s.run(None, f)
            t0 = time.perf_counter()
            for _ in range(calls):
                s.run(None, f)
            per[name].append((time.perf_counter() - t0) / calls * 1e3)
    return {k: round(float(np.median(v)), 4) for k, v in per.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/chargen", help="a char LSTM model folder")
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--calls", type=int, default=300, help="step calls per timed round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    folder = ModelFolder.open(Path(args.model))
    layers, hidden = folder.manifest["state"]["layers"], folder.manifest["state"]["hidden"]
    graph = onnx.load(str(ModelFolder.at(args.model).graph_path))
    step = matmul_step_graph(graph, layers, hidden).SerializeToString()
    served = graph.SerializeToString()
    vocab = int(numpy_helper.to_array(
        next(i for i in graph.graph.initializer if i.name == "bo")).shape[0])
    out: dict = {"model": args.model, "layers": layers, "hidden": hidden,
                 **checks(session(served, 1), session(step, 1), layers, hidden, vocab),
                 "ms_per_step": []}
    rng = np.random.default_rng(1)
    for threads in args.threads:
        sessions = {"lstm_op": session(served, threads), "matmul": session(step, threads)}
        for rows in args.rows:
            t = time_steps(sessions, feed(rng, rows, layers, hidden, vocab), args.calls,
                           args.rounds)
            out["ms_per_step"].append({"threads": threads, "rows": rows, **t,
                                       "speedup": round(t["lstm_op"] / t["matmul"], 3)})
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
