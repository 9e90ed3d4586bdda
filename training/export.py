"""Export the torch models as batch-invariant ONNX graphs built with ``onnx.helper``.

Both graphs use the ONNX operator of the model's cell (``LSTM``, ``GRU`` or ``RNN``)
with ``sequence_lens``, so a row's outputs do not depend on padding or on the other
rows of its batch (Y_h is each row's last *valid* state, for the reverse direction
too). A GRU or RNN char graph keeps the LSTM's interface: ``c0`` passes through to
``cN`` unchanged, so the service runs every cell with the same code. Building the graph by hand, rather
than tracing, keeps the names, dynamic axes and dtypes exactly as the service expects
(ORT wants int32 ``sequence_lens`` and rejects ``layout=1``).

Sentiment graph:
    input_ids int64 [B, T], lengths int64 [B]  ->  probability float [B], attention float [B, T]
    (a model of more than two labels: probability float [B, labels], a softmax)
Char step graph (prefill a prompt and step one character with the same graph):
    input_ids int64 [B, T], lengths int64 [B], h0, c0 float [L, B, H]
    ->  logits float [B, V] (at each row's last real position), hN, cN float [L, B, H]
A row with length 0 passes its state through unchanged (ORT alone would zero it).
An ensemble of char models (``build_char_ensemble_graph``) has the same interface: the
members' states side by side along H, the logits the log of their averaged softmax.

``check_*`` run the export checks and raise ``ExportCheckError`` if they fail:
parity with torch on a padded batch of mixed lengths (<= 1e-4) and batch invariance
in ONNX Runtime (row alone vs. row in the batch, <= 1e-5).
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from training.evaluate import ort_session
from training.models import (
    MASK_VALUE,
    CharConfig,
    CharEnsemble,
    CharLSTM,
    SentimentConfig,
    SentimentLSTM,
    head_probabilities,
)

OPSET = 17
PARITY_TOL = 1e-4
INVARIANCE_TOL = 1e-5


class ExportCheckError(RuntimeError):
    pass


# ONNX operator of each cell, and how torch's gate blocks map onto ONNX's order.
_OP = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
_GATES = {"lstm": (0, 3, 1, 2),  # torch i,f,g,o -> ONNX i,o,f,c
          "gru": (1, 0, 2),  # torch r,z,n -> ONNX z,r,h
          "rnn": (0,)}
# torch's GRU applies the reset gate after the recurrent matrix product
# (n = tanh(W_in x + b_in + r * (W_hn h + b_hn))): ONNX's linear_before_reset=1.
_OP_ATTRS = {"lstm": {}, "gru": {"linear_before_reset": 1}, "rnn": {}}


def _gates_torch_to_onnx(w: torch.Tensor, cell: str = "lstm") -> np.ndarray:
    order = _GATES[cell]
    blocks = w.detach().float().cpu().numpy().reshape(len(order), -1, *w.shape[1:])
    return np.concatenate([blocks[g] for g in order], axis=0)


def _rnn_weights(rnn: torch.nn.RNNBase, layer: int, cell: str
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W, R, B of one layer in ONNX's layout (one direction)."""
    W = _gates_torch_to_onnx(getattr(rnn, f"weight_ih_l{layer}"), cell)
    R = _gates_torch_to_onnx(getattr(rnn, f"weight_hh_l{layer}"), cell)
    B = np.concatenate([_gates_torch_to_onnx(getattr(rnn, f"bias_ih_l{layer}"), cell),
                        _gates_torch_to_onnx(getattr(rnn, f"bias_hh_l{layer}"), cell)])
    return W, R, B


def _load_rnn_weights(rnn: torch.nn.RNNBase, layer: int, cell: str, W: np.ndarray,
                      R: np.ndarray, B: np.ndarray) -> None:
    """Set one layer (one direction) of ``rnn`` from ONNX's W, R, B: the inverse of
    ``_rnn_weights``."""
    order = _GATES[cell]
    G, H = len(order), R.shape[1]

    def to_torch(a: np.ndarray) -> torch.Tensor:
        blocks = a.reshape(G, H, *a.shape[1:])
        out = np.empty_like(blocks)
        for j, g in enumerate(order):  # ONNX block j is torch block g
            out[g] = blocks[j]
        return torch.from_numpy(out.reshape(a.shape).copy())

    with torch.no_grad():
        getattr(rnn, f"weight_ih_l{layer}").copy_(to_torch(W))
        getattr(rnn, f"weight_hh_l{layer}").copy_(to_torch(R))
        getattr(rnn, f"bias_ih_l{layer}").copy_(to_torch(B[: G * H]))
        getattr(rnn, f"bias_hh_l{layer}").copy_(to_torch(B[G * H :]))


def _cell_of(m: onnx.ModelProto) -> str:
    ops = {n.op_type for n in m.graph.node} & set(_OP.values())
    if len(ops) != 1:
        raise ExportCheckError("not a graph of this project (one recurrent operator expected)")
    return {v: k for k, v in _OP.items()}[ops.pop()]


def char_from_graph(m: onnx.ModelProto, dropout: float = 0.15,
                    emb_dropout: float | None = 0.05) -> CharLSTM:
    """The torch model of an exported char step graph: the inverse of
    ``build_char_graph``, so a served generator can be trained further."""
    init = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    if not {"emb", "Wo_T", "bo", "W0", "R0", "B0"} <= set(init):
        raise ExportCheckError("not a char graph of this project")
    cell = _cell_of(m)
    layers = 0
    while f"W{layers}" in init:
        layers += 1
    emb = init["emb"]
    model = CharLSTM(CharConfig(vocab_size=emb.shape[0], emb_dim=emb.shape[1],
                                hidden=init["R0"].shape[2], layers=layers, dropout=dropout,
                                cell=cell, emb_dropout=emb_dropout))
    with torch.no_grad():
        model.embedding.weight.copy_(torch.tensor(emb))
        model.head.weight.copy_(torch.from_numpy(init["Wo_T"].T.copy()))
        model.head.bias.copy_(torch.tensor(init["bo"]))
    for layer in range(layers):
        _load_rnn_weights(model.rnn, layer, cell, init[f"W{layer}"][0], init[f"R{layer}"][0],
                          init[f"B{layer}"][0])
    return model.eval()


def char_members_from_graph(m: onnx.ModelProto, dropout: float = 0.0,
                            emb_dropout: float | None = 0.0) -> list[CharLSTM]:
    """The torch members of an ensemble step graph (``build_char_ensemble_graph``): each
    member's initializers carry the prefix ``m<i>_``, so stripping it gives a single
    model's graph back, read by ``char_from_graph``."""
    members = []
    while any(t.name.startswith(f"m{len(members)}_") for t in m.graph.initializer):
        p = f"m{len(members)}_"
        sub = onnx.ModelProto()
        for t in m.graph.initializer:
            if t.name.startswith(p):
                t2 = sub.graph.initializer.add()
                t2.CopyFrom(t)
                t2.name = t.name[len(p):]
        # the member's recurrent operator: its nodes read the member's W0
        sub.graph.node.extend(nd for nd in m.graph.node if f"{p}W0" in nd.input)
        members.append(char_from_graph(sub, dropout, emb_dropout))
    if len(members) < 2:
        raise ExportCheckError("not a char ensemble graph of this project")
    return members


def sentiment_from_graph(m: onnx.ModelProto, emb_dropout: float = 0.3,
                         out_dropout: float = 0.5) -> SentimentLSTM:
    """The torch model of an exported sentiment graph: the inverse of
    ``build_sentiment_graph``, so a served model can be trained further."""
    init = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    if not {"emb", "W", "R", "B", "Wc_T", "bc", "Wo_T", "bo"} <= set(init):
        raise ExportCheckError("not a sentiment graph of this project")
    cell = _cell_of(m)
    emb, W, R, B = init["emb"], init["W"], init["R"], init["B"]
    H = R.shape[2]

    outputs = {o for node in m.graph.node for o in node.output}
    window = 0
    while f"enc_neg{window + 1}" in outputs:
        window += 1
    n_out = init["Wo_T"].shape[1]
    model = SentimentLSTM(SentimentConfig(vocab_size=emb.shape[0], emb_dim=emb.shape[1],
                                          hidden=H, emb_dropout=emb_dropout,
                                          out_dropout=out_dropout, cell=cell,
                                          negation_window=window,
                                          labels=2 if n_out == 1 else n_out))
    with torch.no_grad():
        model.embedding.weight.copy_(torch.tensor(emb))
        if window:
            model.set_negators(init["enc_neg_table"])
            model.neg_embedding.weight.copy_(torch.tensor(init["neg_emb"]))
        for d, rnn in enumerate((model.rnn_fwd, model.rnn_bwd)):
            _load_rnn_weights(rnn, 0, cell, W[d], R[d], B[d])
        model.attn_combine.weight.copy_(torch.from_numpy(init["Wc_T"].T.copy()))
        model.attn_combine.bias.copy_(torch.tensor(init["bc"]))
        model.out.weight.copy_(torch.from_numpy(init["Wo_T"].T.copy()))
        model.out.bias.copy_(torch.tensor(init["bo"]))
    return model.eval()


def _finish(graph: onnx.GraphProto) -> onnx.ModelProto:
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                          producer_name="seqserve")
    m.ir_version = 9
    onnx.checker.check_model(m, full_check=True)
    return m


def _init(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(arr), name)


def _const_i64(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def build_sentiment_graph(model: SentimentLSTM) -> onnx.ModelProto:
    cfg = model.cfg
    H = cfg.hidden
    Wf, Rf, Bf = _rnn_weights(model.rnn_fwd, 0, cfg.cell)
    Wb, Rb, Bb = _rnn_weights(model.rnn_bwd, 0, cfg.cell)
    inits = [
        _init("emb", model.embedding.weight.detach().numpy()),
        _init("W", np.stack([Wf, Wb])), _init("R", np.stack([Rf, Rb])),
        _init("B", np.stack([Bf, Bb])),
        _init("Wc_T", model.attn_combine.weight.detach().numpy().T),
        _init("bc", model.attn_combine.bias.detach().numpy()),
        _init("Wo_T", model.out.weight.detach().numpy().T),
        _init("bo", model.out.bias.detach().numpy()),
        _const_i64("perm_shape", [0, 0, -1]), _const_i64("flat2", [0, -1]),
        _const_i64("axis0", [0]), _const_i64("axis1", [1]), _const_i64("axis2", [2]),
        _const_i64("axis_last", [-1]),
        numpy_helper.from_array(np.array(MASK_VALUE, dtype=np.float32), "mask_value"),
        numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array(1, dtype=np.int64), "one"),
    ]
    n = helper.make_node
    nodes = [
        n("Cast", ["lengths"], ["seq_lens"], to=TensorProto.INT32),
        *_embedding_nodes(model, inits, "x_bte"),  # [B,T,E]
        n("Transpose", ["x_bte"], ["x"], perm=[1, 0, 2]),  # [T,B,E]
        n(_OP[cfg.cell], ["x", "W", "R", "B", "seq_lens"], ["Y", "Y_h"],
          hidden_size=H, direction="bidirectional", **_OP_ATTRS[cfg.cell]),  # Y [T,2,B,H]
        # query s = [final forward; final backward]  [B,2H]
        n("Transpose", ["Y_h"], ["Y_h_b"], perm=[1, 0, 2]),
        n("Reshape", ["Y_h_b", "flat2"], ["s"]),  # [B,2H]
        # keys/values h [B,T,2H]; the ONNX op already zeroes Y past each row's length
        n("Transpose", ["Y"], ["Y_bt"], perm=[2, 0, 1, 3]),  # [B,T,2,H]
        n("Reshape", ["Y_bt", "perm_shape"], ["h"]),
        n("Unsqueeze", ["s", "axis2"], ["s_col"]),  # [B,2H,1]
        n("MatMul", ["h", "s_col"], ["e3"]),
        n("Squeeze", ["e3", "axis2"], ["e"]),  # [B,T]
        # mask: t < lengths[b]
        n("Shape", ["input_ids"], ["ids_shape"]),
        n("Gather", ["ids_shape", "one"], ["T"], axis=0),
        n("Range", ["zero", "T", "one"], ["t"]),
        n("Unsqueeze", ["t", "axis0"], ["t_row"]),  # [1,T]
        n("Unsqueeze", ["lengths", "axis1"], ["len_col"]),  # [B,1]
        n("Less", ["t_row", "len_col"], ["mask"]),  # [B,T]
        n("Where", ["mask", "e", "mask_value"], ["e_masked"]),
        n("Softmax", ["e_masked"], ["attention"], axis=-1),
        n("Unsqueeze", ["attention", "axis1"], ["a_row"]),  # [B,1,T]
        n("MatMul", ["a_row", "h"], ["c3"]),
        n("Squeeze", ["c3", "axis1"], ["c"]),  # [B,2H]
        n("Concat", ["c", "s"], ["cs"], axis=-1),
        n("MatMul", ["cs", "Wc_T"], ["cs_W"]),
        n("Add", ["cs_W", "bc"], ["cs_Wb"]),
        n("Tanh", ["cs_Wb"], ["s_hat"]),
        n("MatMul", ["s_hat", "Wo_T"], ["logit2"]),
        n("Add", ["logit2", "bo"], ["logit2b"]),
    ]
    if cfg.labels <= 2:  # one logit: P(second label)  [B]
        nodes += [n("Squeeze", ["logit2b", "axis_last"], ["logit"]),
                  n("Sigmoid", ["logit"], ["probability"])]
        p_shape = ["batch"]
    else:  # one probability per label  [B, labels]
        nodes += [n("Softmax", ["logit2b"], ["probability"], axis=-1)]
        p_shape = ["batch", "labels"]
    graph = helper.make_graph(
        nodes, f"sentiment_{cfg.cell}_attention",
        inputs=[helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "time"]),
                helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"])],
        outputs=[helper.make_tensor_value_info("probability", TensorProto.FLOAT, p_shape),
                 helper.make_tensor_value_info("attention", TensorProto.FLOAT,
                                               ["batch", "time"])],
        initializer=inits,
    )
    return _finish(graph)


def _embedding_nodes(model: SentimentLSTM, inits: list, out: str) -> list:
    """Nodes from ``input_ids`` to the encoder input ``out`` [B,T,E]: the word
    embedding; with a negation scope (``SentimentConfig.negation_window``), plus the
    scope vector where a negator is among the ``window`` previous ids, as
    ``SentimentLSTM.embed`` computes it: the negator table gathered at the ids, shifted
    right ``window`` times (``enc_neg1`` .. ``enc_negW``: ``sentiment_from_graph``
    counts them), the maximum of the shifts gathering a row of ``neg_emb``."""
    n = helper.make_node
    window = model.cfg.negation_window
    if window <= 0:
        return [n("Gather", ["emb", "input_ids"], [out])]
    words = "x_words"
    inits += [_init("enc_neg_table", model.neg_table.numpy().astype(np.int64)),
              _init("neg_emb", model.neg_embedding.weight.detach().numpy()),
              _const_i64("enc_neg_s0", [0]), _const_i64("enc_neg_s1", [1]),
              _const_i64("enc_neg_ax1", [1]), _const_i64("enc_neg_end", [-1]),
              numpy_helper.from_array(np.array(0, dtype=np.int64), "enc_neg_zero")]
    nodes = [
        n("Gather", ["emb", "input_ids"], [words]),
        n("Slice", ["input_ids", "enc_neg_s0", "enc_neg_s1", "enc_neg_ax1"], ["enc_neg_first"]),
        n("Mul", ["enc_neg_first", "enc_neg_zero"], ["enc_neg_zcol"]),  # [B,1] zeros
        n("Gather", ["enc_neg_table", "input_ids"], ["enc_neg0"], axis=0),
    ]
    for d in range(1, window + 1):
        nodes += [n("Slice", [f"enc_neg{d - 1}", "enc_neg_s0", "enc_neg_end", "enc_neg_ax1"],
                    [f"enc_neg_head{d}"]),
                  n("Concat", ["enc_neg_zcol", f"enc_neg_head{d}"], [f"enc_neg{d}"], axis=1)]
    nodes += [n("Max", [f"enc_neg{d}" for d in range(1, window + 1)], ["enc_neg_scope"]),
              n("Gather", ["neg_emb", "enc_neg_scope"], ["x_neg"], axis=0),
              n("Add", [words, "x_neg"], [out])]
    return nodes


def _prefixed(graph: onnx.GraphProto, prefix: str, keep: set[str]) -> tuple[list, list]:
    def rn(name: str) -> str:
        return name if (name in keep or not name) else prefix + name

    nodes = []
    for node in graph.node:
        n2 = onnx.NodeProto()
        n2.CopyFrom(node)
        del n2.input[:]
        del n2.output[:]
        n2.input.extend(rn(i) for i in node.input)
        n2.output.extend(rn(o) for o in node.output)
        nodes.append(n2)
    inits = []
    for t in graph.initializer:
        t2 = onnx.TensorProto()
        t2.CopyFrom(t)
        t2.name = rn(t.name)
        inits.append(t2)
    return nodes, inits


def _char_step_model(nodes: list, inits: list, name: str) -> onnx.ModelProto:
    """The char step graph's interface, one for every char graph: input_ids [B, T],
    lengths [B], h0/c0 [L, B, H] -> logits [B, V], hN/cN [L, B, H]."""
    state = ["layers", "batch", "hidden"]
    graph = helper.make_graph(
        nodes, name,
        inputs=[helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "time"]),
                helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"]),
                helper.make_tensor_value_info("h0", TensorProto.FLOAT, state),
                helper.make_tensor_value_info("c0", TensorProto.FLOAT, state)],
        outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "vocab"]),
                 helper.make_tensor_value_info("hN", TensorProto.FLOAT, state),
                 helper.make_tensor_value_info("cN", TensorProto.FLOAT, state)],
        initializer=inits,
    )
    return _finish(graph)


def build_char_graph(model: CharLSTM) -> onnx.ModelProto:
    cfg = model.cfg
    H, L = cfg.hidden, cfg.layers
    n = helper.make_node
    inits = [
        _init("emb", model.embedding.weight.detach().numpy()),
        _init("Wo_T", model.head.weight.detach().numpy().T),
        _init("bo", model.head.bias.detach().numpy()),
        _const_i64("axis0", [0]), _const_i64("axis1", [1]),
        numpy_helper.from_array(np.array(0, dtype=np.int64), "zero_i64"),
    ]
    nodes = [
        n("Cast", ["lengths"], ["seq_lens"], to=TensorProto.INT32),
        n("Gather", ["emb", "input_ids"], ["x_bte"]),
        n("Transpose", ["x_bte"], ["x0"], perm=[1, 0, 2]),  # [T,B,E]
        # keep[1,B,1]: rows with length 0 pass their state through (ORT would zero it)
        n("Greater", ["lengths", "zero_i64"], ["has_len"]),
        n("Unsqueeze", ["has_len", "axis0"], ["has_len_1b"]),
        n("Unsqueeze", ["has_len_1b", "axis_2"], ["keep"]),
    ]
    inits.append(_const_i64("axis_2", [2]))
    hs, cs = [], []
    x = "x0"
    for layer in range(L):
        W, R, B = _rnn_weights(model.rnn, layer, cfg.cell)
        inits += [_init(f"W{layer}", W[None]), _init(f"R{layer}", R[None]),
                  _init(f"B{layer}", B[None]),
                  _const_i64(f"sl{layer}_start", [layer]),
                  _const_i64(f"sl{layer}_end", [layer + 1])]
        nodes += [
            n("Slice", ["h0", f"sl{layer}_start", f"sl{layer}_end", "axis0"], [f"h0_{layer}"]),
            n("Slice", ["c0", f"sl{layer}_start", f"sl{layer}_end", "axis0"], [f"c0_{layer}"]),
        ]
        if cfg.cell == "lstm":
            nodes += [
                n("LSTM", [x, f"W{layer}", f"R{layer}", f"B{layer}", "seq_lens",
                           f"h0_{layer}", f"c0_{layer}"],
                  [f"Y{layer}", f"Yh{layer}_raw", f"Yc{layer}_raw"], hidden_size=H),
                n("Where", ["keep", f"Yc{layer}_raw", f"c0_{layer}"], [f"Yc{layer}"])]
        else:  # no cell state: c passes through, so the graph's interface stays the same
            nodes += [
                n(_OP[cfg.cell], [x, f"W{layer}", f"R{layer}", f"B{layer}", "seq_lens",
                                  f"h0_{layer}"],
                  [f"Y{layer}", f"Yh{layer}_raw"], hidden_size=H, **_OP_ATTRS[cfg.cell]),
                n("Identity", [f"c0_{layer}"], [f"Yc{layer}"])]
        nodes += [
            n("Where", ["keep", f"Yh{layer}_raw", f"h0_{layer}"], [f"Yh{layer}"]),
            n("Squeeze", [f"Y{layer}", "axis1"], [f"x{layer + 1}"]),  # [T,B,H]
        ]
        hs.append(f"Yh{layer}")
        cs.append(f"Yc{layer}")
        x = f"x{layer + 1}"
    nodes += [
        n("Concat", hs, ["hN"], axis=0),
        n("Concat", cs, ["cN"], axis=0),
        n("Squeeze", [hs[-1], "axis0"], ["top"]),  # [B,H]
        n("MatMul", ["top", "Wo_T"], ["logits_nb"]),
        n("Add", ["logits_nb", "bo"], ["logits"]),
    ]
    return _char_step_model(nodes, inits, f"char_{cfg.cell}_step")


def build_char_ensemble_graph(model: CharEnsemble) -> onnx.ModelProto:
    """One step graph for an ensemble: each member's graph (``build_char_graph``) with
    its names prefixed, fed its slice of the packed state; the logits are the log of the
    members' averaged distributions and the states are concatenated back. Same inputs
    and outputs as a single model's graph, so the service runs it unchanged."""
    n = helper.make_node
    M = len(model.members)
    nodes, inits, lps, hs, cs = [], [_const_i64("axis0", [0]), _const_i64("axis2", [2]),
                                     _init("log_m", np.array(np.log(M), np.float32))], [], [], []
    start = 0
    for i, member in enumerate(model.members):
        p = f"m{i}_"
        sub_nodes, sub_inits = _prefixed(build_char_graph(member).graph, p,
                                         {"input_ids", "lengths"})
        width = member.cfg.hidden
        inits += [*sub_inits, _const_i64(f"{p}from", [start]), _const_i64(f"{p}to", [start + width])]
        nodes += [n("Slice", ["h0", f"{p}from", f"{p}to", "axis2"], [f"{p}h0"]),
                  n("Slice", ["c0", f"{p}from", f"{p}to", "axis2"], [f"{p}c0"]),
                  *sub_nodes,
                  n("LogSoftmax", [f"{p}logits"], [f"{p}lp"], axis=-1),
                  n("Unsqueeze", [f"{p}lp", "axis0"], [f"{p}lp1"])]
        lps.append(f"{p}lp1")
        hs.append(f"{p}hN")
        cs.append(f"{p}cN")
        start += width
    nodes += [n("Concat", lps, ["lp_all"], axis=0),
              n("ReduceLogSumExp", ["lp_all"], ["lse"], axes=[0], keepdims=0),
              n("Sub", ["lse", "log_m"], ["logits"]),
              n("Concat", hs, ["hN"], axis=2),
              n("Concat", cs, ["cN"], axis=2)]
    return _char_step_model(nodes, inits, "char_ensemble_step")


def _session(m: onnx.ModelProto):
    return ort_session(m.SerializeToString())


def random_padded_batch(lengths: list[int], vocab: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    T = max(lengths)
    ids = np.zeros((len(lengths), T), dtype=np.int64)
    for b, n_ in enumerate(lengths):
        ids[b, :n_] = rng.integers(1, vocab, n_)
    return ids, np.array(lengths, dtype=np.int64)


def check_sentiment(model: SentimentLSTM, m: onnx.ModelProto,
                    lengths: tuple[int, ...] = (7, 1, 23, 64, 3, 40)) -> dict:
    model.eval()
    sess = _session(m)
    ids, lens = random_padded_batch(list(lengths), model.cfg.vocab_size, 0)
    with torch.no_grad():
        logit, attn = model(torch.from_numpy(ids), torch.from_numpy(lens))
    p_t, a_t = head_probabilities(logit).numpy(), attn.numpy()
    p_o, a_o = sess.run(None, {"input_ids": ids, "lengths": lens})
    parity = float(max(np.abs(p_t - p_o).max(), np.abs(a_t - a_o).max()))
    invariance = 0.0
    for b, n_ in enumerate(lens):
        p1, a1 = sess.run(None, {"input_ids": ids[b:b + 1, :n_], "lengths": lens[b:b + 1]})
        invariance = max(invariance, float(np.abs(p1[0] - p_o[b]).max()),
                         float(np.abs(a1[0] - a_o[b, :n_]).max()),
                         float(np.abs(a_o[b, n_:]).max(initial=0.0)))
    res = {"torch_vs_onnx_max_abs_diff": parity, "row_alone_vs_batch_max_abs_diff": invariance,
           "batch_lengths": list(lengths)}
    if parity > PARITY_TOL or invariance > INVARIANCE_TOL:
        raise ExportCheckError(f"sentiment export check failed: {res}")
    return res


def check_char(model: CharLSTM | CharEnsemble, m: onnx.ModelProto,
               lengths: tuple[int, ...] = (5, 1, 17, 0, 40, 9)) -> dict:
    model.eval()
    cfg = model.cfg
    sess = _session(m)
    ids, lens = random_padded_batch(list(lengths), cfg.vocab_size, 1)
    rng = np.random.default_rng(2)
    B = len(lengths)
    h0 = rng.standard_normal((cfg.layers, B, cfg.hidden)).astype(np.float32) * 0.5
    c0 = rng.standard_normal((cfg.layers, B, cfg.hidden)).astype(np.float32) * 0.5
    lo, ho, co = sess.run(None, {"input_ids": ids, "lengths": lens, "h0": h0, "c0": c0})
    parity = 0.0
    with torch.no_grad():
        for b, n_ in enumerate(lens):
            hb = torch.from_numpy(h0[:, b:b + 1].copy())
            cb = torch.from_numpy(c0[:, b:b + 1].copy())
            # a zero-length row keeps its state, logits from h0's top layer
            ref_l, (ref_h, ref_c) = model.last_step(torch.from_numpy(ids[b:b + 1, :n_]),
                                                    (hb, cb))
            parity = max(parity, float((ref_l - torch.from_numpy(lo[b])).abs().max()),
                         float((ref_h[:, 0] - torch.from_numpy(ho[:, b])).abs().max()),
                         float((ref_c[:, 0] - torch.from_numpy(co[:, b])).abs().max()))
    invariance = 0.0
    for b, n_ in enumerate(lens):
        l1, h1, c1 = sess.run(None, {"input_ids": ids[b:b + 1, :max(n_, 1)],
                                     "lengths": lens[b:b + 1],
                                     "h0": h0[:, b:b + 1], "c0": c0[:, b:b + 1]})
        invariance = max(invariance, float(np.abs(l1[0] - lo[b]).max()),
                         float(np.abs(h1[:, 0] - ho[:, b]).max()),
                         float(np.abs(c1[:, 0] - co[:, b]).max()))
    zero_len_state_kept = bool(np.array_equal(ho[:, list(lens).index(0)],
                                              h0[:, list(lens).index(0)])) if 0 in lens else None
    res = {"torch_vs_onnx_max_abs_diff": parity, "row_alone_vs_batch_max_abs_diff": invariance,
           "batch_lengths": list(lengths), "zero_length_state_kept": zero_len_state_kept}
    if parity > PARITY_TOL or invariance > INVARIANCE_TOL or zero_len_state_kept is False:
        raise ExportCheckError(f"char export check failed: {res}")
    return res
