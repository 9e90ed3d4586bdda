"""A lone classifier call on two cores: the bidirectional recurrent layer cut into its
forward and reverse directions, run side by side, then the rest of the graph.

Under load the batching loop keeps every core busy with whole calls, one call per
core. A lone call (an idle server, one request) would leave the other core idle,
and the call is almost all recurrence: the two directions of the bidirectional layer
are independent until the attention reads them both. So, when the model is loaded,
the graph is cut into four graphs:

- ``pre``: the graph's inputs -> the recurrent node's input sequence (and lengths):
  the embedding lookup, held once;
- ``forward`` and ``reverse``: that sequence -> one direction's outputs (one
  unidirectional node each, with its half of the weights);
- ``head``: the graph's inputs and both directions' outputs -> the graph's outputs
  (attention, classifier, n-gram term).

``DirectionSplit.run`` runs ``pre``, then ``forward`` in a helper thread while the
calling thread runs ``reverse`` (ONNX Runtime releases the GIL), then ``head``. The
pieces run the same kernels on the same inputs as the whole graph, so the answers are
the whole graph's: ``load_split`` checks that on a padded batch and gives the cut up
(None) if any output differs by more than ``SPLIT_TOL``.

Reading and rewriting a graph needs the ``onnx`` package, whose parse of a 16 MB graph
leaves ~100 MB with the allocator; the cut therefore runs in a child process
(``python -m seqcore.split GRAPH``) that writes the four graphs to its stdout, and the
service itself never imports onnx. A graph without exactly one bidirectional ``LSTM``,
``GRU`` or ``RNN`` node (or with initial states, peepholes or subgraphs) is not cut,
and the whole graph serves every call.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

log = logging.getLogger("seqserve.split")  # under the service's logger when served

RECURRENT_OPS = ("LSTM", "GRU", "RNN")
DIRECTIONS = ("forward", "reverse")
PARTS = ("pre", *DIRECTIONS, "head")
SPLIT_TOL = 1e-6
CUT_TIMEOUT_S = 120.0
# attributes that hold one value per direction in a bidirectional node
_PER_DIRECTION = ("activations", "activation_alpha", "activation_beta")


class CannotCut(ValueError):
    """The graph has no shape this module knows how to cut."""


def cut_directions(graph: bytes | Path) -> dict[str, bytes]:
    """The serialized ``pre``, ``forward``, ``reverse`` and ``head`` graphs of
    ``graph`` (needs the onnx package); ``CannotCut`` saying why when it has not
    exactly one bidirectional recurrent node with initializer weights and no
    initial state, peepholes or subgraphs."""
    import onnx
    from onnx import helper, numpy_helper

    model = (onnx.load_model_from_string(graph) if isinstance(graph, bytes)
             else onnx.load(str(graph)))
    g = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for n in g.node for a in n.attribute):
        raise CannotCut("the graph has subgraphs")
    found = [k for k, n in enumerate(g.node) if n.op_type in RECURRENT_OPS]
    if len(found) != 1:
        raise CannotCut(f"{len(found)} recurrent nodes (one bidirectional is cut)")
    node = g.node[found[0]]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("direction") != b"bidirectional":
        raise CannotCut("the recurrent node is not bidirectional")
    inputs = list(node.input) + [""] * (5 - len(node.input))
    if any(inputs[5:]):
        raise CannotCut("initial states or peepholes are given")
    weights = {t.name: t for t in g.initializer}
    if any(name and name not in weights for name in inputs[1:4]):
        raise CannotCut("the recurrent weights are not initializers")
    seq, seq_lens = inputs[0], inputs[4]
    dtype = weights[inputs[1]].data_type

    def tensor(name: str, elem: int) -> Any:
        return helper.make_tensor_value_info(name, elem, None)

    known = {v.name: v for v in [*g.input, *g.output]}
    known[seq] = tensor(seq, dtype)
    if seq_lens:
        known[seq_lens] = tensor(seq_lens, onnx.TensorProto.INT32)
    parts_out: dict[str, list[str]] = {}
    direction_nodes = {}
    for d, direction in enumerate(DIRECTIONS):
        inits = []
        names = []
        for name in inputs[1:4]:  # W, R, B (B optional): this direction's slice
            if not name:
                names.append("")
                continue
            arr = np.ascontiguousarray(numpy_helper.to_array(weights[name])[d : d + 1])
            names.append(f"{name}__{direction}")
            inits.append(numpy_helper.from_array(arr, names[-1]))
        kw: dict[str, Any] = {}
        for key, value in attrs.items():
            if key == "direction":
                value = direction
            elif key in _PER_DIRECTION:
                half = len(value) // 2
                value = value[d * half : (d + 1) * half]
            kw[key] = value
        outs = [f"{o}__{direction}" if o else "" for o in node.output]
        parts_out[direction] = [o for o in outs if o]
        for o in parts_out[direction]:
            known[o] = tensor(o, dtype)
        direction_nodes[direction] = (helper.make_node(
            node.op_type, [seq, *names, seq_lens], outs,
            name=f"{node.name or node.op_type}_{direction}", **kw), inits)

    # the whole graph with the bidirectional node replaced by the two directions and
    # a Concat per output (Y [T, 2, B, H] on axis 1; Y_h, Y_c [2, B, H] on axis 0):
    # every part below is cut from it
    nodes = list(g.node)
    joins = [helper.make_node("Concat", [f"{o}__{d}" for d in DIRECTIONS], [o],
                              axis=1 if j == 0 else 0)
             for j, o in enumerate(node.output) if o]
    nodes[found[0] : found[0] + 1] = [direction_nodes[d][0] for d in DIRECTIONS] + joins
    all_inits = list(g.initializer) + [t for d in DIRECTIONS for t in direction_nodes[d][1]]
    graph_inputs = [i.name for i in g.input]
    pre_out = [seq] + ([seq_lens] if seq_lens else [])
    plan = {
        "pre": (graph_inputs, pre_out),
        "forward": (pre_out, parts_out["forward"]),
        "reverse": (pre_out, parts_out["reverse"]),
        "head": (graph_inputs + parts_out["forward"] + parts_out["reverse"],
                 [o.name for o in g.output]),
    }
    out = {}
    for part, (ins, outs) in plan.items():
        sub = _extract(nodes, all_inits, ins, outs)
        used = {i for n in sub[0] for i in n.input} | set(outs)
        graph_proto = helper.make_graph(
            sub[0], f"{g.name or 'graph'}_{part}",
            [known[i] for i in ins if i in used], [known[o] for o in outs], sub[1])
        m = helper.make_model(graph_proto, opset_imports=list(model.opset_import),
                              ir_version=model.ir_version)
        out[part] = m.SerializeToString()
    return out


def _extract(nodes: list, inits: list, inputs: Sequence[str], outputs: Sequence[str]
             ) -> tuple[list, list]:
    """The nodes (in graph order) and initializers that compute ``outputs`` from
    ``inputs``; ``CannotCut`` if some value needs anything else."""
    producer = {o: k for k, n in enumerate(nodes) for o in n.output if o}
    by_name = {t.name: t for t in inits}
    have, take, keep, seen = set(inputs), set(), [], set()
    todo = list(outputs)
    while todo:
        name = todo.pop()
        if not name or name in have or name in seen:
            continue
        seen.add(name)
        if name in by_name:
            keep.append(by_name[name])
        elif name in producer:
            k = producer[name]
            if k not in take:
                take.add(k)
                todo.extend(nodes[k].input)
        else:
            raise CannotCut(f"{name!r} cannot be computed from {list(inputs)}")
    return [nodes[k] for k in sorted(take)], keep


class DirectionSplit:
    """The four sessions of a cut graph, and how to run a call through them."""

    def __init__(self, parts: dict[str, bytes],
                 make_session: Callable[[bytes], ort.InferenceSession]):
        self.sessions = {name: make_session(parts[name]) for name in PARTS}
        self.inputs = {n: [i.name for i in s.get_inputs()] for n, s in self.sessions.items()}
        self.outputs = {n: [o.name for o in s.get_outputs()] for n, s in self.sessions.items()}

    def _part(self, name: str, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.sessions[name].run(self.outputs[name],
                                      {k: values[k] for k in self.inputs[name]})
        return dict(zip(self.outputs[name], out, strict=True))

    def run(self, outputs: Sequence[str], feed: dict[str, np.ndarray],
            assist: Executor | None = None) -> list[np.ndarray]:
        """The whole graph's ``outputs`` for ``feed``: the forward direction in
        ``assist`` (one after the other when None), the reverse one here, then the head."""
        values = {**feed, **self._part("pre", feed)}
        if assist is None:
            fwd = self._part("forward", values)
            rev = self._part("reverse", values)
        else:
            pending = assist.submit(self._part, "forward", values)
            try:
                rev = self._part("reverse", values)
            finally:
                fwd = pending.result()
        values.update(fwd)
        values.update(rev)
        return self.sessions["head"].run(list(outputs),
                                         {k: values[k] for k in self.inputs["head"]})


def cut_in_child(graph: Path, timeout_s: float = CUT_TIMEOUT_S) -> dict[str, bytes]:
    """``cut_directions(graph)`` run by a child Python (``python -m seqcore.split``),
    so that onnx and its parse never stay in this process. ``CannotCut`` with the
    child's reason."""
    # the child finds this package wherever the service was started from
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (os.environ.get("PYTHONPATH", ""), root) if p)}
    r = subprocess.run([sys.executable, "-m", "seqcore.split", str(graph)], env=env,
                       capture_output=True, timeout=timeout_s, check=False)
    if r.returncode != 0:
        lines = r.stderr.decode("utf-8", "replace").strip().splitlines()
        raise CannotCut(lines[-1] if lines else f"exit status {r.returncode}")
    return _unframe(r.stdout)


def _frame(parts: dict[str, bytes]) -> bytes:
    return b"".join(f"{k} {len(v)}\n".encode() + v for k, v in parts.items())


def _unframe(data: bytes) -> dict[str, bytes]:
    parts, at = {}, 0
    while at < len(data):
        end = data.index(b"\n", at)
        name, size = data[at:end].decode().split()
        parts[name] = data[end + 1 : end + 1 + int(size)]
        at = end + 1 + int(size)
    if set(parts) != set(PARTS) or any(not v for v in parts.values()):
        raise CannotCut(f"the child process returned {sorted(parts)}")
    return parts


def load_split(graph: Path, whole: ort.InferenceSession,
               make_session: Callable[[bytes], ort.InferenceSession],
               probe: dict[str, np.ndarray],
               cut: Callable[[Path], dict[str, bytes]] = cut_in_child
               ) -> DirectionSplit | None:
    """A ``DirectionSplit`` of ``graph`` whose answers on ``probe`` equal ``whole``'s
    within ``SPLIT_TOL``, or None (the reason logged) when it cannot be had."""
    try:
        split = DirectionSplit(cut(graph), make_session)
        names = [o.name for o in whole.get_outputs()]
        want = whole.run(names, probe)
        got = split.run(names, probe)
    except CannotCut as e:
        log.info("lone calls run the whole graph: it is not cut (%s)", e)
        return None
    except Exception as e:  # onnx / ORT / the child raise many types; the whole graph serves
        log.warning("the graph's recurrent directions could not be split (%s: %s); "
                    "lone calls run the whole graph", type(e).__name__, e)
        return None
    worst = max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
                for a, b in zip(want, got, strict=True))
    if worst > SPLIT_TOL:
        log.warning("the split graph differs from the whole by %.3g; lone calls run the "
                    "whole graph", worst)
        return None
    return split


def main(argv: list[str] | None = None) -> int:
    """``python -m seqcore.split GRAPH``: the four graphs, framed, on stdout; exit 3
    with the reason on stderr when the graph is not cut."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m seqcore.split GRAPH.onnx", file=sys.stderr)
        return 2
    try:
        parts = cut_directions(Path(args[0]))
    except CannotCut as e:
        print(e, file=sys.stderr)
        return 3
    except ImportError as e:
        print(f"the onnx package is not installed ({e})", file=sys.stderr)
        return 3
    sys.stdout.buffer.write(_frame(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
