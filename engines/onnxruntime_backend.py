"""ONNX Runtime: the CPU reference and fallback (CUDA provider where onnxruntime-gpu is present)."""
from __future__ import annotations

import numpy as np

from holoburn.engines.backend import Backend, BackendUnavailable, TensorInfo
from holoburn.engines.card import ModelCard


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, model_path, precision: str, device: str, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable(f"onnxruntime is not installed ({exc})") from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting between runs: in the pipeline the other stages need those cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailable("this onnxruntime has no CUDA provider (install onnxruntime-gpu)")
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(model_path), options, providers=providers)
        self.precision = precision
        self.device = device
        self.version = ort.__version__
        self.inputs = tuple(TensorInfo(i.name, tuple(i.shape), i.type) for i in self.session.get_inputs())
        self.outputs = tuple(TensorInfo(o.name, tuple(o.shape), o.type) for o in self.session.get_outputs())
        self._input_name = self.inputs[0].name
        self._output_name = self.outputs[0].name

    def infer(self, batch, stream=None):
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run([self._output_name], {self._input_name: batch})[0]


def open(card: ModelCard, precision: str = "fp32", device: str = "cpu", flavour: str = "onnxruntime", threads: int | None = None,
         cache_dir=None, **_):
    from holoburn.engines.precision import model_for_precision

    return OnnxRuntimeBackend(model_for_precision(card, precision, cache_dir), precision, device, threads)
