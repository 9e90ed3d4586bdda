"""A lone classifier call on two cores: the bidirectional recurrent layer cut into its
forward and reverse directions, run side by side, then the rest of the graph.

Under load the batching loop keeps every core busy with whole calls, one call per
core. A lone call (an idle server, one request) would leave the other core idle,
and the call is almost all recurrence: the two directions of the bidirectional layer
are independent until the attention reads them both. So, when the model is loaded,
the graph is cut into three graphs:

- ``forward``: the graph's inputs -> the forward direction's outputs;
- ``reverse``: the same for the reverse direction;
- ``head``: the graph's inputs and both directions' outputs -> the graph's outputs.

``DirectionSplit.run`` runs ``forward`` in a helper thread while the calling thread
runs ``reverse`` (ONNX Runtime releases the GIL), then ``head``. The pieces run the
same kernels on the same inputs as the whole graph, so the answers are the whole
graph's: ``load_split`` checks that on a padded batch and gives up the cut (None) if
any output differs by more than ``SPLIT_TOL``.

The cut needs the ``onnx`` package (to read and rewrite the graph) and exactly one
bidirectional ``LSTM``, ``GRU`` or ``RNN`` node whose weights are initializers; for
any other graph ``cut_directions`` returns None and the whole graph serves every call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

log = logging.getLogger("seqserve.split")  # under the service's logger when served

RECURRENT_OPS = ("LSTM", "GRU", "RNN")
DIRECTIONS = ("forward", "reverse")
SPLIT_TOL = 1e-6
# attributes that hold one value per direction in a bidirectional node
_PER_DIRECTION = ("activations", "activation_alpha", "activation_beta")


def cut_directions(graph: bytes | Path) -> dict[str, bytes] | None:
    """The serialized ``forward``, ``reverse`` and ``head`` graphs of ``graph``, or
    None when it cannot be cut (no onnx package, not exactly one bidirectional
    recurrent node, initial states or peepholes given, weights not initializers)."""
    try:
        import onnx
        from onnx import helper, numpy_helper, shape_inference, utils
    except ImportError:
        return None
    model = onnx.load_model_from_string(graph) if isinstance(graph, bytes) else onnx.load(
        str(graph))
    g = model.graph
    found = [k for k, n in enumerate(g.node) if n.op_type in RECURRENT_OPS]
    if len(found) != 1:
        return None
    k = found[0]
    node = g.node[k]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("direction") not in (b"bidirectional", "bidirectional"):
        return None
    inputs = list(node.input)
    if any(inputs[5:]):  # initial_h, initial_c, peepholes: not cut
        return None
    weights = {t.name: t for t in g.initializer}
    if any(name and name not in weights for name in inputs[1:4]):
        return None

    new_nodes, made = [], {d: [] for d in DIRECTIONS}
    for d, direction in enumerate(DIRECTIONS):
        names = []
        for name in inputs[1:4]:  # W, R, B (B optional): this direction's slice
            if not name:
                names.append("")
                continue
            arr = np.ascontiguousarray(numpy_helper.to_array(weights[name])[d : d + 1])
            names.append(f"{name}__{direction}")
            g.initializer.append(numpy_helper.from_array(arr, names[-1]))
        kw: dict[str, Any] = {}
        for key, value in attrs.items():
            if key == "direction":
                value = direction
            elif key in _PER_DIRECTION:
                half = len(value) // 2
                value = value[d * half : (d + 1) * half]
            kw[key] = value
        outs = [f"{o}__{direction}" if o else "" for o in node.output]
        made[direction] = [o for o in outs if o]
        new_nodes.append(helper.make_node(node.op_type, [inputs[0], *names, *inputs[4:5]],
                                          outs, name=f"{node.name or node.op_type}_{direction}",
                                          **kw))
    for j, out in enumerate(node.output):  # Y [T, 2, B, H]; Y_h, Y_c [2, B, H]
        if out:
            new_nodes.append(helper.make_node(
                "Concat", [f"{out}__{d}" for d in DIRECTIONS], [out], axis=1 if j == 0 else 0))
    nodes = list(g.node)
    nodes[k : k + 1] = new_nodes
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)

    model = shape_inference.infer_shapes(model)
    extractor = utils.Extractor(model)
    ins = [i.name for i in model.graph.input]
    outs = [o.name for o in model.graph.output]
    parts = {d: extractor.extract_model(ins, made[d]) for d in DIRECTIONS}
    parts["head"] = extractor.extract_model(ins + made["forward"] + made["reverse"], outs)
    return {name: p.SerializeToString() for name, p in parts.items()}


class DirectionSplit:
    """The three sessions of a cut graph, and how to run a call through them."""

    def __init__(self, parts: dict[str, bytes],
                 make_session: Callable[[bytes], ort.InferenceSession]):
        self.sessions = {name: make_session(parts[name]) for name in (*DIRECTIONS, "head")}
        self.inputs = {name: [i.name for i in s.get_inputs()] for name, s in self.sessions.items()}
        self.outputs = {d: [o.name for o in self.sessions[d].get_outputs()] for d in DIRECTIONS}

    def _part(self, name: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.sessions[name].run(self.outputs[name],
                                       {k: feed[k] for k in self.inputs[name]})

    def run(self, outputs: Sequence[str], feed: dict[str, np.ndarray],
            assist: Executor | None = None) -> list[np.ndarray]:
        """The whole graph's ``outputs`` for ``feed``: the forward direction in
        ``assist`` (one after the other when None), the reverse one here, then the head."""
        if assist is None:
            fwd = self._part("forward", feed)
            rev = self._part("reverse", feed)
        else:
            pending = assist.submit(self._part, "forward", feed)
            try:
                rev = self._part("reverse", feed)
            finally:
                fwd = pending.result()
        head_feed = {**feed, **dict(zip(self.outputs["forward"], fwd, strict=True)),
                     **dict(zip(self.outputs["reverse"], rev, strict=True))}
        return self.sessions["head"].run(list(outputs),
                                         {k: head_feed[k] for k in self.inputs["head"]})


def load_split(graph: bytes | Path, whole: ort.InferenceSession,
               make_session: Callable[[bytes], ort.InferenceSession],
               probe: dict[str, np.ndarray]) -> DirectionSplit | None:
    """A ``DirectionSplit`` of ``graph`` whose answers on ``probe`` equal ``whole``'s
    within ``SPLIT_TOL``, or None (the reason logged) when it cannot be had."""
    try:
        parts = cut_directions(graph)
        if parts is None:
            return None
        split = DirectionSplit(parts, make_session)
        names = [o.name for o in whole.get_outputs()]
        want = whole.run(names, probe)
        got = split.run(names, probe)
    except Exception as e:  # onnx / ORT raise many types; the whole graph still serves
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
