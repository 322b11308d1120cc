"""INT8 explicit quantization (Q/DQ in the ONNX) calibrated on real frames, and the per-domain
strategies of configs/quantization.yaml.

The INT8 model is what TensorRT 11 and TensorRT-RTX build INT8 engines from (they dropped
calibrators), what TensorRT 10 builds with its INT8 flag, and what ONNX Runtime runs on the CPU so
that its accuracy can be measured without a GPU. Its form follows what TensorRT accepts:
symmetric INT8 (zero point 0) for activations and weights, per-channel weight scales, biases left
in float (TensorRT rejects an int32 DequantizeLinear), and the card's sensitive layers (plus the
stem, where the domain asks for it) left unquantized. The strategy's other options (asymmetric or
uint8 activations, 7-bit weights, Q/DQ only at convolution inputs) exist to measure recipes on the
CPU (bench/int8_recipes.py); TensorRT refuses a non-zero zero point.

Calibration frames are (H, W, 3) uint8 RGB (read from disk by frames.py), put through
`prepare_input`, the exact preprocessing of the pipeline.

Layering inside engines/: quantize imports only card.py (the card and its sensitive layers);
precision.py calls it to make the INT8 model, and gate.py never needs it.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import yaml

from holoburn.clinical.errors import BadInput
from holoburn.engines.card import ModelCard, resolve_layers
from holoburn.processing.preprocess import prepare_input

log = logging.getLogger("holoburn.engines.quantize")

CONFIG_PATH = Path(__file__).resolve().parent.parent / "configs" / "quantization.yaml"
CALIBRATION_METHODS = ("entropy", "percentile", "minmax")
#: activation integer types; TensorRT takes only int8 with zero point 0 (uint8 is for CPU-only models)
ACTIVATION_TYPES = ("int8", "uint8")


class CalibrationError(BadInput):
    """Calibration frames or a quantization strategy (configs/quantization.yaml) are missing or unusable."""


@dataclass(frozen=True)
class Strategy:
    """One clinical domain's precision settings (a `domains:` entry of configs/quantization.yaml)."""

    domain: str
    calibration_method: str = "percentile"
    percentile: float = 99.999
    calibration_frames: int = 64
    per_channel: bool = True
    symmetric_activations: bool = True
    keep_first_conv_fp32: bool = False
    # Q/DQ on the outputs of Conv/ConvTranspose as well as on their inputs (onnxruntime's default
    # placement); False: inputs only, TensorRT's recommended placement (a convolution's output stays
    # float into its ReLU and is quantized once, where the next convolution reads it)
    quantize_conv_outputs: bool = True
    activation_type: str = "int8"
    reduce_range: bool = False  # 7-bit weights (for CPUs whose int8 kernels saturate; not needed by TensorRT)
    fp16_keep_io_types: bool = True
    fp16_op_block_list: tuple[str, ...] = ()
    max_drop_points: float = 1.0
    require_all_classes: bool = True
    description: str = ""
    source: str = ""

    def with_overrides(self, **changes) -> "Strategy":
        values = {k: v for k, v in changes.items() if v is not None}
        if "calibration_method" in values and values["calibration_method"] not in CALIBRATION_METHODS:
            raise CalibrationError(
                f"unknown calibration method {values['calibration_method']!r}; choose one of {', '.join(CALIBRATION_METHODS)}"
            )
        if "activation_type" in values and values["activation_type"] not in ACTIVATION_TYPES:
            raise CalibrationError(f"unknown activation type {values['activation_type']!r}; choose one of {', '.join(ACTIVATION_TYPES)}")
        return Strategy(**{**self.__dict__, **values})

    def int8_recipe(self) -> dict:
        return {
            "domain": self.domain,
            "method": self.calibration_method,
            "percentile": self.percentile if self.calibration_method == "percentile" else None,
            "frames": self.calibration_frames,
            "per_channel": self.per_channel,
            "symmetric_activations": self.symmetric_activations,
            "keep_first_conv_fp32": self.keep_first_conv_fp32,
            # options added later are in the recipe (the cache key) only when changed, so models
            # cached before them keep their keys
            **{name: getattr(self, name) for name in ("quantize_conv_outputs", "activation_type", "reduce_range")
               if getattr(self, name) != Strategy.__dataclass_fields__[name].default},
        }

    def fp16_recipe(self) -> dict:
        return {"keep_io_types": self.fp16_keep_io_types, "op_block_list": list(self.fp16_op_block_list)}


def load_strategy(domain: str | None = None, config_path: str | Path | None = None) -> Strategy:
    """The strategy for `domain` (the config's default_domain when None) from configs/quantization.yaml."""
    path = Path(config_path) if config_path else CONFIG_PATH
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CalibrationError(f"quantization config {path} cannot be read ({exc}); fix the file or pass another one") from None
    domains = raw.get("domains") or {}
    domain = domain or raw.get("default_domain") or "dermatology"
    if domain not in domains:
        raise CalibrationError(f"quantization config {path} has no domain {domain!r}; it has {', '.join(domains) or 'none'}")
    entry = domains[domain] or {}
    int8, fp16, gate = entry.get("int8") or {}, entry.get("fp16") or {}, entry.get("gate") or {}
    method = str(int8.get("calibration_method", "percentile")).lower()
    if method not in CALIBRATION_METHODS:
        raise CalibrationError(
            f"quantization config {path}, domain {domain}: calibration_method {method!r} is not one of {', '.join(CALIBRATION_METHODS)}"
        )
    activation_type = str(int8.get("activation_type", "int8")).lower()
    if activation_type not in ACTIVATION_TYPES:
        raise CalibrationError(
            f"quantization config {path}, domain {domain}: activation_type {activation_type!r} is not one of {', '.join(ACTIVATION_TYPES)}"
        )
    return Strategy(
        domain=domain,
        calibration_method=method,
        percentile=float(int8.get("percentile", 99.999)),
        calibration_frames=int(int8.get("calibration_frames", 64)),
        per_channel=bool(int8.get("per_channel", True)),
        symmetric_activations=bool(int8.get("symmetric_activations", True)),
        keep_first_conv_fp32=bool(int8.get("keep_first_conv_fp32", False)),
        quantize_conv_outputs=bool(int8.get("quantize_conv_outputs", True)),
        activation_type=activation_type,
        reduce_range=bool(int8.get("reduce_range", False)),
        fp16_keep_io_types=bool(fp16.get("keep_io_types", True)),
        fp16_op_block_list=tuple(fp16.get("op_block_list") or ()),
        max_drop_points=float(gate.get("max_drop_points", 1.0)),
        require_all_classes=bool(gate.get("require_all_classes", True)),
        description=str(entry.get("description", "")),
        source=str(path),
    )


# -- calibration -------------------------------------------------------------------------------
def calibration_batches(frames: Iterable[np.ndarray], card: ModelCard, input_name: str | None = None) -> list[dict]:
    """Frames -> ONNX Runtime feeds {input: (1, 3, S, S) float32}, through the pipeline's preprocessing."""
    name = input_name or card.input_name
    feeds = []
    for frame in frames:
        model_input, _ = prepare_input(np.asarray(frame), card.input_size, card.mean, card.std)
        feeds.append({name: model_input})
    if not feeds:
        raise CalibrationError("no calibration frames: give INT8 a frame set (--calib DIR of PNG/JPEG frames or a video)")
    return feeds


# -- INT8 --------------------------------------------------------------------------------------
def first_conv(model) -> str | None:
    for node in model.graph.node:
        if node.op_type == "Conv":
            return node.name
    return None


def quantized_nodes(model) -> list[str]:
    """Names of the nodes of a Q/DQ model (onnx.ModelProto) that read a dequantized tensor: the
    layers quantize_int8 quantized (convolutions and the ops between them), in graph order."""
    dequantized = {out for node in model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return [node.name for node in model.graph.node
            if node.op_type not in ("QuantizeLinear", "DequantizeLinear") and dequantized.intersection(node.input)]


#: histogram bins for entropy calibration: the KL search needs many more bins than the 128
#: quantized levels (onnxruntime's quantize_static uses 128 and 128, which leaves a single
#: candidate threshold, the full range: entropy would silently be min-max).
ENTROPY_BINS, ENTROPY_QUANTIZED_BINS = 2048, 128


def _calibrate(model: Path, reader, method, strategy: Strategy, workdir: Path) -> Path | None:
    """Collect activation ranges with our own calibrator settings; returns a calibration cache
    file for quantize_static, or None where this onnxruntime cannot take one (then quantize_static
    calibrates by itself with its defaults)."""
    import inspect

    from onnxruntime.quantization import CalibrationMethod, quantize_static
    from onnxruntime.quantization.calibrate import create_calibrator

    try:
        from onnxruntime.quantization.calibrate import save_tensors_data
    except ImportError:
        save_tensors_data = None
    if save_tensors_data is None or "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        if method == CalibrationMethod.Entropy:
            log.warning("this onnxruntime cannot take calibration ranges; its entropy calibration uses 128 bins (same as min-max)")
        return None
    options = {"symmetric": strategy.symmetric_activations}
    if method == CalibrationMethod.Entropy:
        options.update(num_bins=ENTROPY_BINS, num_quantized_bins=ENTROPY_QUANTIZED_BINS)
    elif method == CalibrationMethod.Percentile:
        options.update(percentile=strategy.percentile, num_bins=ENTROPY_BINS)
    calibrator = create_calibrator(
        model, None, augmented_model_path=str(workdir / "augmented.onnx"), calibrate_method=method,
        providers=["CPUExecutionProvider"], extra_options=options,
    )
    calibrator.collect_data(reader)
    ranges = workdir / "ranges.json"
    save_tensors_data(calibrator.compute_data(), ranges)
    return ranges


def quantize_int8(fp32_model: str | Path, out_path: str | Path, card: ModelCard, frames: Iterable[np.ndarray], strategy: Strategy) -> dict:
    """Write a Q/DQ INT8 copy of `fp32_model` to `out_path`, calibrated on `frames`.

    frames: (H, W, 3) uint8 RGB. Returns provenance (method, frames used, nodes kept in float).
    """
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile, "minmax": CalibrationMethod.MinMax}
    feeds = calibration_batches(frames, card)

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._feeds = iter(feeds)

        def get_next(self):
            return next(self._feeds, None)

    original = onnx.load(str(fp32_model))
    keep = resolve_layers(original, card.float_layers("int8"), card)
    if strategy.keep_first_conv_fp32 and first_conv(original):
        keep = sorted(set(keep) | {first_conv(original)})
    with tempfile.TemporaryDirectory(prefix="holoburn-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Symbolic shape inference fails on models with dynamic H and W; ONNX shape inference and
        # the graph optimisation are enough for the quantizer (seen in the GPU lab notes).
        quant_pre_process(str(fp32_model), str(prepared), skip_symbolic_shape=True)
        names_after = {n.name for n in onnx.load(str(prepared)).graph.node}
        lost = [n for n in keep if n not in names_after]
        if lost:
            log.warning("layers %s were renamed or fused by pre-processing and cannot be kept in float", lost)
        extra = {
            "ActivationSymmetric": strategy.symmetric_activations,
            "WeightSymmetric": True,
            "QuantizeBias": False,  # TensorRT only dequantizes int8/fp8 tensors, not an int32 bias
        }
        if not strategy.quantize_conv_outputs:
            extra["OpTypesToExcludeOutputQuantization"] = ["Conv", "ConvTranspose"]
        if strategy.calibration_method == "percentile":
            extra["CalibPercentile"] = strategy.percentile
        # onnxruntime's calibrators print progress to stdout: keep stdout for results (--json)
        with contextlib.redirect_stdout(sys.stderr):
            ranges = _calibrate(prepared, _Reader(), methods[strategy.calibration_method], strategy, Path(tmp))
        quantize_static(
            str(prepared),
            str(out_path),
            _Reader() if ranges is None else None,
            quant_format=QuantFormat.QDQ,
            per_channel=strategy.per_channel,
            activation_type={"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[strategy.activation_type],
            weight_type=QuantType.QInt8,
            reduce_range=strategy.reduce_range,
            calibrate_method=methods[strategy.calibration_method],
            nodes_to_exclude=[n for n in keep if n in names_after],
            calibration_providers=["CPUExecutionProvider"],
            extra_options=extra,
            **({} if ranges is None else {"calibration_cache_path": str(ranges)}),
        )
    return {
        "tool": f"onnxruntime.quantization {onnxruntime.__version__}",
        "calibration_method": strategy.calibration_method,
        "calibration_frames": len(feeds),
        "kept_in_float": keep,
        "quantize_conv_outputs": strategy.quantize_conv_outputs,
        "activation_type": strategy.activation_type,
        **({"percentile": strategy.percentile} if strategy.calibration_method == "percentile" else {}),
    }
