"""Inference backends and the engine toolchain. Heavy runtimes (TensorRT, PyTorch, ONNX Runtime)
are imported lazily, so holoburn imports and runs with whichever of them is present."""
