"""onnx-compat: which runtime runs which ONNX LLM export form correctly, and where it breaks."""

__version__ = "0.1.0"
