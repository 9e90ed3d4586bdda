"""seqserve: an inference service for recurrent sequence models on ONNX Runtime."""

__version__ = "0.1.0"
