"""Which ONNX file carries a card's model at a given precision, and how the FP16 and INT8 ones are made.

- fp32: the card's own ONNX, used in place (its directory may be read-only).
- fp16: converted with onnxconverter-common's float16 converter; graph inputs and outputs stay
  float32 (`keep_io_types`), and the nodes named in the card's `sensitive_layers` stay float32.
- int8: explicit Q/DQ quantization calibrated on frames (see quantize.py).

Converted models live in the engine cache (cache.py), never beside the model, and only after they
pass the accuracy gate (gate.py) against FP32 on a held-out set. `model_for_precision` only looks
them up; `build_precision_model` converts, gates and stores.

The card's `sensitive_layers` (resolved by card.resolve_layers) stay float32 in both.

Layering inside engines/: precision is the top of the conversion chain. It imports card.py,
backend.py (PRECISIONS), cache.py, quantize.py (strategy, INT8) and gate.py (the verdict); none
of those imports it back. Backends (onnxruntime_backend, tensorrt_backend) and toolchain.py import it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from holoburn.clinical.errors import BadConfig, BadInput, HoloburnError
from holoburn.engines.backend import PRECISIONS
from holoburn.engines.card import ModelCard, resolve_layers

log = logging.getLogger("holoburn.engines.precision")


class PrecisionModelMissing(BadInput):
    """No accepted (gated) model at this precision in the cache: the user must build it with
    `holoburn engine build` (the message gives the command)."""


class GateRefused(HoloburnError):
    """A converted model lost more accuracy than the gate allows; nothing was cached.

    `report` is the gate.GateReport (its table says which burn class failed).
    """

    exit_code = 3  # `holoburn engine build` exits 3 on a refusal (toolchain.EXIT_REFUSED)

    def __init__(self, message: str, report):
        super().__init__(message)
        self.report = report


def _fix_fp16_outputs(model, original_output_types: dict) -> None:
    """Make graph outputs float32 again where the converter left them float16.

    onnxconverter-common 1.16 with keep_io_types still casts to float16 after a *blocked* node
    that produces a graph output (e.g. a head kept in float32): turn that cast back to float32,
    or add one.
    """
    from onnx import TensorProto, helper

    for output in model.graph.output:
        wanted = original_output_types.get(output.name)
        if wanted != TensorProto.FLOAT or output.type.tensor_type.elem_type == TensorProto.FLOAT:
            continue
        producer = next((n for n in model.graph.node if output.name in n.output), None)
        if producer is not None and producer.op_type == "Cast":
            for attr in producer.attribute:
                if attr.name == "to":
                    attr.i = TensorProto.FLOAT
        else:
            inner = output.name + "_fp16"
            for node in model.graph.node:
                node.output[:] = [inner if o == output.name else o for o in node.output]
            model.graph.node.append(helper.make_node("Cast", [inner], [output.name], name=output.name + "_to_fp32", to=TensorProto.FLOAT))
        output.type.tensor_type.elem_type = TensorProto.FLOAT


def convert_fp16(fp32_model: str | Path, out_path: str | Path, card: ModelCard, keep_io_types: bool = True, op_block_list: Iterable[str] = ()) -> dict:
    """Write an FP16 copy of `fp32_model` to `out_path`; returns provenance (nodes kept in float32)."""
    import onnx

    try:
        import onnxconverter_common
        from onnxconverter_common import float16
    except ImportError as exc:
        raise PrecisionModelMissing(f"FP16 conversion needs onnxconverter-common ({exc}): pip install onnxconverter-common==1.16.0") from None

    model = onnx.load(str(fp32_model))
    keep = resolve_layers(model, card.sensitive_layers, card)
    output_types = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
    blocked_ops = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(op_block_list))
    with warnings.catch_warnings(record=True) as caught:
        # the converter warns once per weight it clamps to float16's range; count them instead
        warnings.simplefilter("always", UserWarning)
        converted = float16.convert_float_to_float16(
            model, keep_io_types=keep_io_types, node_block_list=keep or None, op_block_list=blocked_ops
        )
    clamped = sum("truncated" in str(w.message) for w in caught)
    if clamped:
        log.info("fp16: %d weights were outside float16's range and were clamped (the gate measures the effect)", clamped)
    if keep_io_types:
        _fix_fp16_outputs(converted, output_types)
    onnx.checker.check_model(converted)
    onnx.save(converted, str(out_path))
    return {
        "tool": f"onnxconverter-common {onnxconverter_common.__version__} float16",
        "keep_io_types": keep_io_types,
        "kept_in_float": keep,
        "extra_op_block_list": sorted(op_block_list),
        "weights_clamped_to_fp16_range": clamped,
    }


def converter_version(precision: str) -> str:
    if precision == "fp16":
        import onnxconverter_common

        return f"onnxconverter-common {onnxconverter_common.__version__}"
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"


def converted_key(card: ModelCard, precision: str, strategy=None):
    """Cache key of the converted ONNX: device-independent, recipe from the domain strategy."""
    from holoburn.engines.cache import EngineKey
    from holoburn.engines.quantize import load_strategy

    strategy = strategy or load_strategy()
    recipe = {
        "sensitive_layers": list(card.float_layers(precision)),  # the layers kept in float: a new list, a new model
        **(strategy.fp16_recipe() if precision == "fp16" else strategy.int8_recipe()),
    }
    return EngineKey(
        model_sha256=card.model_sha256(),
        backend=f"onnx-{precision}",
        backend_version=converter_version(precision),
        gpu_name="any",
        compute_capability="any",
        sm_count=0,
        precision=precision,
        profile="dynamic",
        recipe=hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16],
    )


def model_for_precision(card: ModelCard, precision: str, cache=None, strategy=None) -> Path:
    """The ONNX file for `card` at `precision`: the card's own for fp32, else an accepted one from the cache."""
    if precision not in PRECISIONS:
        raise BadConfig(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return card.onnx_path
    from holoburn.engines.cache import EngineCache

    cache = cache if isinstance(cache, EngineCache) else EngineCache(cache)
    try:
        key = converted_key(card, precision, strategy)
    except ImportError as exc:
        raise PrecisionModelMissing(f"{precision} needs a converter that is not installed ({exc}); pip install onnxconverter-common") from None
    entry = cache.lookup(key)
    if entry is None:
        raise PrecisionModelMissing(
            f"no accepted {precision} model of {card.model_id} in the engine cache {cache.root}; build it "
            f"(conversion + accuracy gate) with: holoburn engine build --model {card.path} --precision {precision} "
            f"--holdout DIR" + (" --calib DIR" if precision == "int8" else "")
        )
    return entry.payload_path


@dataclass
class PrecisionBuild:
    """Outcome of `build_precision_model`: the accepted model (None when refused) and the gate report."""

    path: Path | None
    report: object | None
    cache_hit: bool
    seconds: float
    key: object


def build_precision_model(
    card: ModelCard,
    precision: str,
    holdout,
    *,
    calibration_frames=None,
    strategy=None,
    cache=None,
    threads: int | None = None,
    force: bool = False,
) -> PrecisionBuild:
    """Convert `card`'s model to `precision`, gate it against FP32 on `holdout`, cache it if accepted.

    holdout: a sequence of (frame (H, W, 3) uint8 RGB, truth mask (H, W) uint8) pairs.
    calibration_frames: (H, W, 3) uint8 RGB frames (int8 only; must not be the held-out frames).
    Raises GateRefused (with the report) when the gate refuses; the report is written beside the
    cache entry either way (`<stem>.gate.md` / `.gate.json`).
    """
    from holoburn.engines.cache import EngineCache
    from holoburn.engines.gate import run_gate
    from holoburn.engines.quantize import CalibrationError, load_strategy, quantize_int8

    if precision == "fp32":
        return PrecisionBuild(card.onnx_path, None, True, 0.0, None)
    if precision not in PRECISIONS:
        raise BadConfig(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    strategy = strategy or load_strategy()
    cache = cache if isinstance(cache, EngineCache) else EngineCache(cache)
    key = converted_key(card, precision, strategy)
    if not force:
        entry = cache.lookup(key)
        if entry is not None:
            return PrecisionBuild(entry.payload_path, None, True, 0.0, key)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="holoburn-precision-") as tmp:
        candidate = Path(tmp) / f"{card.model_id}-{precision}.onnx"
        if precision == "fp16":
            provenance = convert_fp16(card.onnx_path, candidate, card, strategy.fp16_keep_io_types, strategy.fp16_op_block_list)
        else:
            if calibration_frames is None:
                raise CalibrationError(f"INT8 needs calibration frames: pass --calib DIR (PNG/JPEG frames or a video) for {card.model_id}")
            frames = list(calibration_frames)[: strategy.calibration_frames]
            provenance = quantize_int8(card.onnx_path, candidate, card, frames, strategy)
        log.info("%s model of %s converted in %.1f s; gating against fp32", precision, card.model_id, time.perf_counter() - started)
        report = run_gate(card, {"fp32": card.onnx_path, precision: candidate}, holdout, strategy=strategy, threads=threads)
        report.meta.update({"model_id": card.model_id, "card": str(card.path), "conversion": provenance, "domain": strategy.domain})
        base = cache.report_base(key, card.model_id)
        report.write(base)
        if not report.passed:
            raise GateRefused(
                f"{precision} model of {card.model_id} refused by the accuracy gate "
                f"(limit {report.max_drop_points:.1f} points); nothing cached. Table: {base}.gate.md\n\n{report.to_markdown()}",
                report,
            )
        meta = {"card_model_sha256": card.model_sha256(), "strategy": strategy.domain, "conversion": provenance, "gate": report.summary()}
        entry = cache.store(key, candidate, model_id=card.model_id, suffix=".onnx", meta=meta)
    return PrecisionBuild(entry.payload_path, report, False, time.perf_counter() - started, key)
