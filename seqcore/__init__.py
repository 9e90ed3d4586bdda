"""seqserve's core: everything a model folder needs, without a web framework or torch.

The service (``app``), the training code (``training``) and the benchmarks (``bench``)
all import this package, and it imports none of them:

- ``seqcore.tokenizer``: the one tokenizer of each model (words, characters);
- ``seqcore.modelfolder``: the model-folder contract (manifest, vocabulary, graph):
  reading and writing it, in one place;
- ``seqcore.runtime``: ONNX Runtime sessions, padding rows into a batch, log-softmax;
- ``seqcore.tasks``: one module per task with named stages (load, encode, run,
  decode), each registering itself in ``seqcore.tasks.TASKS``.

Dependencies: numpy and onnxruntime (``onnx`` only to write a folder, in training).
"""
