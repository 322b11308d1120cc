"""Inference backends and the engine toolchain. Heavy runtimes (TensorRT, PyTorch, ONNX Runtime)
are imported lazily, so holoburn imports and runs with whichever of them is present.

Imports inside engines/ point one way (tests/test_engines_layering.py checks it, lazy imports too):
card, frames and unet import nothing of engines/; cache and backend import card; quantize (INT8)
and gate (accuracy) sit above them; precision (convert, gate, cache) above both; the backends
(onnxruntime, tensorrt, torch) and toolchain on top.
"""
