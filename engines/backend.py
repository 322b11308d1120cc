"""One small interface for every inference backend (after Polygraphy's runners).

A backend is opened for one model card, one precision and one device, checks at once that the
model matches its card (so a mismatch fails at start-up, not at the first frame), and then runs
batches: `infer(batch)` takes (N, 3, H, W) float32 and returns (N, C, H, W) float32 logits.
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass

from holoburn.clinical.errors import BackendFailure, BadConfig
from holoburn.engines.card import ModelCard, ModelCardError

log = logging.getLogger("holoburn.engines")

PRECISIONS = ("fp32", "fp16", "int8")
#: backend name -> module under holoburn.engines that defines `open(card, precision, device, **options)`
BACKEND_MODULES = {
    "onnxruntime": "onnxruntime_backend",
    "torch": "torch_backend",
    "tensorrt": "tensorrt_backend",
    "tensorrt-rtx": "tensorrt_backend",
}
#: what `auto` tries, best first, on a CUDA device and on the CPU
AUTO_ORDER = {"cuda": ("tensorrt", "tensorrt-rtx", "torch", "onnxruntime"), "cpu": ("onnxruntime",)}


class BackendUnavailable(BackendFailure):
    """The backend's runtime is not installed or cannot use this device."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple  # ints, or strings for dynamic axes
    dtype: str


class Backend:
    """Base of every backend: subclasses set the attributes and implement `infer`."""

    name: str = ""
    precision: str = "fp32"
    device: str = "cpu"
    version: str = ""
    inputs: tuple[TensorInfo, ...] = ()
    outputs: tuple[TensorInfo, ...] = ()

    def infer(self, batch, stream=None):  # pragma: no cover - interface
        raise NotImplementedError

    def reserve(self, batch: int, height: int, width: int) -> None:
        """Allocate (or capture) what one input shape needs now, at start-up, not at the first frame.

        Backends without per-shape state (ONNX Runtime) need nothing here.
        """

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "backend_version": self.version,
            "precision": self.precision,
            "device": self.device,
        }

    def close(self) -> None:
        pass

    def check_against(self, card: ModelCard) -> None:
        """Raise ModelCardError unless the model's I/O names and class count match the card."""
        names_in = [t.name for t in self.inputs]
        names_out = [t.name for t in self.outputs]
        if card.input_name not in names_in or card.output_name not in names_out:
            raise ModelCardError(
                f"model {card.onnx_path} has inputs {names_in} and outputs {names_out}, but card "
                f"{card.path} names input {card.input_name!r} and output {card.output_name!r}"
            )
        out = next(t for t in self.outputs if t.name == card.output_name)
        inp = next(t for t in self.inputs if t.name == card.input_name)
        if len(inp.shape) != 4 or (isinstance(inp.shape[1], int) and inp.shape[1] != 3):
            raise ModelCardError(f"model {card.onnx_path} input {inp.name} is {inp.shape}, expected (N, 3, H, W)")
        if len(out.shape) != 4 or (isinstance(out.shape[1], int) and out.shape[1] != card.num_classes):
            raise ModelCardError(
                f"model {card.onnx_path} output {out.name} is {out.shape}, but card {card.path} "
                f"lists {card.num_classes} classes"
            )


def cuda_available() -> bool:
    """True when a CUDA device can be used from Python (CuPy present and a device visible)."""
    try:
        import cupy
    except (ImportError, OSError):  # no CuPy, or a CuPy wheel whose CUDA libraries cannot be loaded
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except (cupy.cuda.runtime.CUDARuntimeError, ImportError, OSError):
        # CUDARuntimeError: no driver (cudaErrorInsufficientDriver) or no device (cudaErrorNoDevice);
        # ImportError/OSError: CuPy loads the CUDA runtime library at the first call, and it can be missing
        return False


def _onnxruntime_has_cuda() -> bool:
    try:
        import onnxruntime

        return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    except ImportError:
        return False


def open_backend(card: ModelCard, name: str = "auto", precision: str = "fp32", device: str | None = None, **options) -> Backend:
    """Open `name` (or the best present for the device when `auto`) for `card` at `precision`."""
    if precision not in PRECISIONS:
        raise BadConfig(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if device is None:
        device = "cuda" if cuda_available() and (name != "onnxruntime" or _onnxruntime_has_cuda()) else "cpu"
    if name == "auto":
        reasons = []
        for candidate in AUTO_ORDER["cuda" if device.startswith("cuda") else "cpu"]:
            try:
                # ONNX Runtime without its CUDA provider still serves, on the CPU
                where = None if candidate == "onnxruntime" else device
                backend = open_backend(card, candidate, precision, where, **options)
            except BackendUnavailable as exc:
                reasons.append(f"{candidate}: {exc}")
                continue
            log.info("backend auto -> %s on %s (%s)", backend.name, backend.device, "; ".join(reasons) or "first choice")
            return backend
        raise BackendUnavailable("no backend could run this model: " + "; ".join(reasons))
    if name not in BACKEND_MODULES:
        raise BadConfig(f"unknown backend {name!r}; choose auto or one of {', '.join(BACKEND_MODULES)}")
    try:
        module = importlib.import_module(f"{__package__}.{BACKEND_MODULES[name]}")
    except ModuleNotFoundError as exc:
        raise BackendUnavailable(f"backend {name} is not part of this build ({exc})") from None
    backend = module.open(card, precision=precision, device=device, flavour=name, **options)
    backend.check_against(card)
    return backend
