"""TensorRT (10 and 11) and TensorRT-RTX: one module, two Python packages of the same API family.

`flavour` picks the package: "tensorrt" imports `tensorrt` (TensorRT 10 on JetPack 6 and x86,
TensorRT 11 on x86), "tensorrt-rtx" imports `tensorrt_rtx_bindings` (PyPI wheels
`tensorrt-rtx-cu13-libs` + `tensorrt-rtx-cu13-bindings`). Both are imported lazily: holoburn
imports and runs without either. The code paths differ only where the API generations differ:

- TensorRT 10 keeps weak typing and the FP16/INT8 builder flags: fp16 builds the FP32 ONNX with
  BuilderFlag.FP16 and pins the card's sensitive layers to FP32 (OBEY_PRECISION_CONSTRAINTS);
  int8 builds the Q/DQ ONNX (quantize.py) with the INT8 and FP16 flags.
- TensorRT 11 removed BuilderFlag.FP16/INT8 and the calibrators, and TensorRT-RTX never had
  them: networks are strongly typed and precision comes from the ONNX itself, i.e. the gated
  FP16 or Q/DQ INT8 model from precision.py.
- The timing cache (TensorRT 10/11) is kept in the engine cache's `timing/` folder; TensorRT-RTX
  ignores timing caches and instead compiles kernels at run time, so it gets a runtime cache
  file there.

Engines are built from ONNX with one optimization profile: batch 1..max_batch, each side
224..1024 (min/opt/max; opt from the card's input size), and stored in the engine cache under a
key of model hash, backend and version, GPU name, compute capability, SM count, precision and
profile (cache.py). A machine without a GPU builds TensorRT-RTX engines (portable, or for a named
compute capability): CI proves the build path there.

Execution (`TensorRTBackend.infer`): `set_input_shape` + `set_tensor_address` for every I/O
tensor, then `execute_async_v3` on the caller's CUDA stream (never the default stream), with
the output written into preallocated CuPy buffers (one per shape, made by `reserve()` at start-up
or on the first frame of a new shape) and the engine's scratch memory given by the caller
(`scratch_allocator`) or allocated once at open (ExecutionContextAllocationStrategy.USER_MANAGED).

WHAT WAS NEVER EXECUTED where this was written (no GPU; TensorRT itself cannot be installed there):
- anything in `TensorRTBackend` (deserialization, execution contexts, user-managed scratch,
  set_tensor_address / execute_async_v3, the RTX runtime cache), for either flavour. The GPU lab's
  H100 (sm_90) cannot run TensorRT-RTX engines either ("compute capability 9.0 not supported").
- the TensorRT 10 and TensorRT 11 builder specifics: BuilderFlag.FP16/INT8,
  OBEY_PRECISION_CONSTRAINTS with per-layer precision, the STRONGLY_TYPED network flag of
  TensorRT 11, and the timing cache load/save.
What did run (tests/test_engines_tensorrt.py, CPU only): the shared build path with
TensorRT-RTX 1.7 (ONNX parse, dynamic profile, progress monitor, FP32/FP16/Q-DQ INT8 ONNX,
serialization) and the cache around it (key, atomic write, corrupt-engine detection, rebuild, hit).
"""
from __future__ import annotations

import importlib
import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from holoburn.clinical.errors import BackendFailure, BadConfig
from holoburn.engines.backend import Backend, BackendUnavailable, TensorInfo, cuda_available
from holoburn.engines.card import ModelCard, file_sha256, resolve_layers

log = logging.getLogger("holoburn.engines.tensorrt")

FLAVOURS = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx_bindings"}
INSTALL_HINT = {
    "tensorrt": "install TensorRT 10 or 11 for your CUDA (JetPack 6 ships TensorRT 10)",
    "tensorrt-rtx": "pip install tensorrt-rtx-cu13-libs tensorrt-rtx-cu13-bindings",
}
MIN_SIDE, MAX_SIDE = 224, 1024


def import_trt(flavour: str):
    """The TensorRT module of `flavour`, or BackendUnavailable saying how to install it."""
    if flavour not in FLAVOURS:
        raise BadConfig(f"unknown TensorRT flavour {flavour!r}; choose {' or '.join(FLAVOURS)}")
    try:
        return importlib.import_module(FLAVOURS[flavour])
    except (ImportError, OSError) as exc:  # OSError: the wheel is there but its libraries are not loadable
        raise BackendUnavailable(f"{flavour} is not installed ({exc}); {INSTALL_HINT[flavour]}") from None


def generation(trt) -> str:
    """'rtx', '10' (weak typing, FP16/INT8 flags) or '11' (strongly typed only)."""
    if trt.__name__.startswith("tensorrt_rtx"):
        return "rtx"
    return "10" if hasattr(trt.BuilderFlag, "FP16") else "11"


_LOGGERS: dict = {}


def trt_logger(trt):
    """One logger per TensorRT module (TensorRT keeps the first one it sees for the whole process),
    routing its messages into Python logging."""
    if trt.__name__ in _LOGGERS:
        return _LOGGERS[trt.__name__]
    levels = {
        trt.ILogger.Severity.INTERNAL_ERROR: logging.CRITICAL,
        trt.ILogger.Severity.ERROR: logging.ERROR,
        trt.ILogger.Severity.WARNING: logging.WARNING,
        trt.ILogger.Severity.INFO: logging.DEBUG,
        trt.ILogger.Severity.VERBOSE: logging.DEBUG,
    }
    trt_log = logging.getLogger(f"holoburn.engines.{trt.__name__}")

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            level = levels.get(severity, logging.INFO)
            # Without a GPU every runtime probe reports "CUDA driver version is insufficient":
            # expected on a build-only machine, so keep it out of the user's face.
            if "cudaError 35" in msg or "Error reading CUDA GPU properties" in msg:
                level = logging.DEBUG
            elif level >= logging.ERROR:
                self.errors.append(msg)
            trt_log.log(level, "%s", msg)

    _LOGGERS[trt.__name__] = _Logger()
    return _LOGGERS[trt.__name__]


@dataclass(frozen=True)
class Profile:
    """One optimization profile: square-or-not inputs with each side in [min_side, max_side]."""

    min_side: int = MIN_SIDE
    opt_side: int = 512
    max_side: int = MAX_SIDE
    max_batch: int = 1
    opt_batch: int = 1

    def __post_init__(self):
        if not (0 < self.min_side <= self.opt_side <= self.max_side):
            raise BadConfig(f"--profile {self.min_side}:{self.opt_side}:{self.max_side}: needs 0 < MIN <= OPT <= MAX pixels per side, e.g. 224:512:1024")
        if not (1 <= self.opt_batch <= self.max_batch):
            raise BadConfig(f"profile batch {self.opt_batch}..{self.max_batch}: needs 1 <= opt batch <= --max-batch")

    @classmethod
    def parse(cls, text: str | None, card: ModelCard | None = None, max_batch: int = 1) -> "Profile":
        """`MIN:OPT:MAX` per side (e.g. "224:512:1024"); None -> 224:<card input size>:1024."""
        opt = card.input_size if card is not None else 512
        if not text:
            return cls(min(MIN_SIDE, opt), opt, max(MAX_SIDE, opt), max_batch, 1)
        match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*:\s*(\d+)\s*", text)
        if not match:
            raise BadConfig(f"--profile {text!r}: expected MIN:OPT:MAX pixels per side, e.g. 224:512:1024")
        return cls(*(int(v) for v in match.groups()), max_batch, 1)

    @property
    def label(self) -> str:
        return f"b{self.opt_batch}-{self.max_batch}:{self.min_side}-{self.opt_side}-{self.max_side}"

    def shapes(self, channels: int = 3) -> tuple[tuple, tuple, tuple]:
        return (
            (1, channels, self.min_side, self.min_side),
            (self.opt_batch, channels, self.opt_side, self.opt_side),
            (self.max_batch, channels, self.max_side, self.max_side),
        )


def device_identity(target: str | None = None) -> tuple[str, str, int]:
    """(GPU name, compute capability, SM count) of CUDA device 0, or of the build target without a GPU.

    target: "sm86"-style compute capability to build for on a machine without a GPU (TensorRT-RTX).
    """
    if cuda_available():
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        return name, f"{props['major']}.{props['minor']}", int(props["multiProcessorCount"])
    return "none", (target or "portable"), 0


def _progress_monitor(trt, label: str):
    """An IProgressMonitor that reports build phases (top level at INFO, the rest at DEBUG)."""
    if not hasattr(trt, "IProgressMonitor"):
        return None
    started = time.perf_counter()
    interactive = sys.stderr.isatty()

    class _Progress(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.depth: dict[str, int] = {}
            self.steps: dict[str, int] = {}
            self.phases: list[str] = []

        def phase_start(self, phase_name, parent_phase, num_steps):
            self.depth[phase_name] = 0 if parent_phase is None else self.depth.get(parent_phase, 0) + 1
            self.steps[phase_name] = num_steps
            self.phases.append(phase_name)
            level = logging.INFO if self.depth[phase_name] <= 1 else logging.DEBUG
            log.log(level, "[%s %6.1f s] %s%s (%d steps)", label, time.perf_counter() - started, "  " * self.depth[phase_name], phase_name, num_steps)

        def step_complete(self, phase_name, step):
            if interactive and self.depth.get(phase_name, 0) <= 1:
                print(f"\r[{label}] {phase_name}: {step + 1}/{self.steps.get(phase_name, '?')}", end="", file=sys.stderr, flush=True)
            return True  # never cancel

        def phase_finish(self, phase_name):
            if interactive and self.depth.get(phase_name, 0) == 0:
                print(file=sys.stderr)

    return _Progress()


def _matches(layer_name: str, nodes: list[str]) -> bool:
    # TensorRT names a parsed layer after its ONNX node, sometimes with a suffix for helper layers.
    return any(layer_name == n or layer_name.startswith(n + "_") or layer_name.startswith(n + " ") for n in nodes)


def build_serialized(
    onnx_path: str | Path,
    flavour: str,
    precision: str,
    profile: Profile,
    input_name: str,
    *,
    fp32_layers: list[str] = (),
    timing_cache: Path | None = None,
    target: str | None = None,
    progress: bool = True,
) -> bytes:
    """Build and serialize an engine from `onnx_path` (returns the plan bytes).

    precision: what the ONNX carries for TensorRT 11 / RTX; for TensorRT 10 "fp16" and "int8" also
    set the builder flags. fp32_layers: node names pinned to FP32 (TensorRT 10 only; elsewhere the
    FP16/Q-DQ ONNX already keeps them in float32). target: "sm86"-style compute capability
    (TensorRT-RTX on a machine without a GPU; default: the current GPU, or portable).
    """
    from holoburn.processing.files import atomic_write

    trt = import_trt(flavour)
    gen = generation(trt)
    logger = trt_logger(trt)
    logger.errors.clear()
    builder = trt.Builder(logger)
    flags = 0
    if gen == "11" and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)).splitlines()[0] for i in range(parser.num_errors))
        raise BackendFailure(f"{flavour} could not parse {onnx_path}: {errors}; re-export the model without that layer, or run it with --backend onnxruntime")
    config = builder.create_builder_config()
    if gen == "10":
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: scales come from the Q/DQ nodes
        if fp32_layers and precision != "fp32":
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            pinned = 0
            for i in range(network.num_layers):
                layer = network.get_layer(i)
                if _matches(layer.name, list(fp32_layers)):
                    layer.precision = trt.float32
                    for j in range(layer.num_outputs):
                        layer.set_output_type(j, trt.float32)
                    pinned += 1
            log.info("pinned %d layers to fp32 (%s)", pinned, ", ".join(fp32_layers))
    if gen == "rtx":
        if target:
            capability = getattr(trt.ComputeCapability, target.upper(), None)
            if capability is None:
                known = [n for n in dir(trt.ComputeCapability) if n.startswith("SM")]
                raise BadConfig(f"--target {target!r}: unknown compute capability for TensorRT-RTX; choose one of {', '.join(known)}")
            config.num_compute_capabilities = 1
            config.set_compute_capability(capability, 0)
        elif cuda_available():
            config.num_compute_capabilities = 1
            config.set_compute_capability(trt.ComputeCapability.CURRENT, 0)
    trt_profile = builder.create_optimization_profile()
    trt_profile.set_shape(input_name, *profile.shapes())
    config.add_optimization_profile(trt_profile)
    timing = None
    if timing_cache is not None and gen != "rtx":
        blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
        timing = config.create_timing_cache(blob)
        config.set_timing_cache(timing, ignore_mismatch=False)
    if progress:
        monitor = _progress_monitor(trt, f"{flavour} {precision}")
        if monitor is not None:
            config.progress_monitor = monitor
    started = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        detail = "; ".join(logger.errors[-3:]) or "see the log above"
        raise BackendFailure(f"{flavour} {trt.__version__} failed to build an engine from {onnx_path}: {detail}")
    log.info("%s %s engine built in %.2f s (%d bytes, profile %s)", flavour, precision, time.perf_counter() - started, plan.nbytes, profile.label)
    if timing is not None:
        atomic_write(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(plan)


def engine_key(onnx_path: Path, flavour: str, precision: str, profile: Profile, target: str | None = None, fp32_layers=()):
    """The cache key of an engine of `onnx_path` for this machine's GPU (or `target` without one)."""
    import hashlib

    from holoburn.engines.cache import EngineKey

    trt = import_trt(flavour)
    gpu, capability, sms = device_identity(target)
    recipe = hashlib.sha256(",".join(fp32_layers).encode()).hexdigest()[:16] if generation(trt) == "10" and fp32_layers else ""
    return EngineKey(
        model_sha256=file_sha256(onnx_path),
        backend=flavour,
        backend_version=str(trt.__version__),
        gpu_name=gpu,
        compute_capability=capability,
        sm_count=sms,
        precision=precision,
        profile=profile.label,
        recipe=recipe,
    )


def onnx_for_engine(card: ModelCard, flavour: str, precision: str, cache=None, strategy=None) -> tuple[Path, list[str]]:
    """(ONNX to build from, layers to pin to FP32) for this TensorRT generation and precision."""
    from holoburn.engines.precision import model_for_precision

    trt = import_trt(flavour)
    # Only a precision whose converted ONNX passed the accuracy gate may be built (raises
    # PrecisionModelMissing otherwise), also where TensorRT 10 builds from the FP32 ONNX.
    accepted = model_for_precision(card, precision, cache, strategy)
    if generation(trt) != "10" or precision == "fp32":
        return accepted, []
    import onnx

    # TensorRT 10 with the FP16 flag may run any layer in FP16: pin the ones the gated model keeps
    # in float (the card's sensitive layers; for int8 its int8_float_layers where it names them) to FP32.
    source = card.onnx_path if precision == "fp16" else accepted
    model = onnx.load(str(source), load_external_data=False)
    names = {n.name for n in model.graph.node}
    original = onnx.load(str(card.onnx_path), load_external_data=False)
    pinned = [n for n in resolve_layers(original, card.float_layers(precision), card) if n in names]
    return source, pinned


@dataclass
class EngineBuild:
    path: Path
    key: object
    cache_hit: bool
    seconds: float
    onnx: Path


def ensure_engine(
    card: ModelCard,
    flavour: str,
    precision: str,
    profile: Profile | None = None,
    *,
    cache=None,
    strategy=None,
    target: str | None = None,
    progress: bool = True,
    force: bool = False,
) -> EngineBuild:
    """The engine for (card, flavour, precision, profile, this GPU) from the cache, built on a miss.

    For fp16/int8 the gated FP16 / Q-DQ ONNX must already be in the cache (precision.py); a corrupt
    cached engine is discarded and rebuilt.
    """
    from holoburn.engines.cache import EngineCache

    cache = cache if isinstance(cache, EngineCache) else EngineCache(cache)
    profile = profile or Profile.parse(None, card)
    onnx_path, fp32_layers = onnx_for_engine(card, flavour, precision, cache, strategy)
    key = engine_key(onnx_path, flavour, precision, profile, target, fp32_layers)
    started = time.perf_counter()
    if force:
        entry = None
    else:
        entry = cache.lookup(key)
    if entry is not None:
        return EngineBuild(entry.payload_path, key, True, time.perf_counter() - started, onnx_path)
    timing = cache.timing_dir() / f"{flavour}-{key.backend_version}-{key.gpu_name.replace(' ', '_')}-{key.compute_capability}.timing"
    plan = build_serialized(
        onnx_path, flavour, precision, profile, card.input_name,
        fp32_layers=fp32_layers, timing_cache=timing, target=target, progress=progress,
    )
    meta = {"card": str(card.path), "card_model_sha256": card.model_sha256(), "onnx": str(onnx_path), "build_seconds": round(time.perf_counter() - started, 3)}
    entry = cache.store(key, plan, model_id=card.model_id, suffix=".engine", meta=meta)
    return EngineBuild(entry.payload_path, key, False, time.perf_counter() - started, onnx_path)


def engine_validity(flavour: str, plan: bytes) -> tuple[bool, str]:
    """Ask the runtime whether a plan can run here (where the API has that question); (ok, why)."""
    trt = import_trt(flavour)
    runtime = trt.Runtime(trt_logger(trt))
    if not hasattr(runtime, "get_engine_validity") or not cuda_available():
        return True, "not checked (no runtime validity query or no GPU)"
    validity, diagnostics = runtime.get_engine_validity(plan)
    return validity != trt.EngineValidity.INVALID, f"{validity.name} (diagnostics {diagnostics})"


def _stream_handle(stream) -> int:
    """A raw cudaStream_t from a CuPy stream, a torch stream, an int handle, or None."""
    if stream is None:
        return 0
    if isinstance(stream, int):
        return stream
    for attr in ("ptr", "cuda_stream", "handle"):
        value = getattr(stream, attr, None)
        if isinstance(value, int):
            return value
    raise TypeError(f"cannot get a CUDA stream handle from {type(stream).__name__}")


class TensorRTBackend(Backend):
    """An engine on CUDA device 0. infer(): (N,3,H,W) float32 -> (N,C,H,W) float32 logits.

    A CuPy input returns a CuPy view of the preallocated output buffer (valid until the next
    infer() of that shape; work stays on `stream`); a NumPy input is copied in and the result
    copied back (synchronising the stream).
    """

    def __init__(self, plan: bytes, flavour: str, card: ModelCard, precision: str, device: str, *, scratch_allocator=None, runtime_cache: Path | None = None, stream=None):
        import cupy

        trt = import_trt(flavour)
        self._trt, self._cupy = trt, cupy
        self.name, self.precision, self.device = flavour, precision, device
        self.version = str(trt.__version__)
        self._runtime = trt.Runtime(trt_logger(trt))
        self.engine = self._runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise EngineCorrupt(f"{flavour} {self.version} could not deserialize the engine (corrupt, or built by another version)")
        inputs, outputs = [], []
        for i in range(self.engine.num_io_tensors):
            tname = self.engine.get_tensor_name(i)
            shape = tuple(d if d >= 0 else "dynamic" for d in self.engine.get_tensor_shape(tname))
            info = TensorInfo(tname, shape, np.dtype(trt.nptype(self.engine.get_tensor_dtype(tname))).name)
            (inputs if self.engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT else outputs).append(info)
        self.inputs, self.outputs = tuple(inputs), tuple(outputs)
        self._runtime_cache_path = runtime_cache
        self._runtime_cache = None
        strategy = trt.ExecutionContextAllocationStrategy.USER_MANAGED
        if hasattr(self.engine, "create_runtime_config"):
            config = self.engine.create_runtime_config()
            config.set_execution_context_allocation_strategy(strategy)
            if runtime_cache is not None and hasattr(config, "create_runtime_cache"):
                self._runtime_cache = config.create_runtime_cache()
                if runtime_cache.is_file() and not self._runtime_cache.deserialize(runtime_cache.read_bytes()):
                    log.info("runtime cache %s does not fit this GPU/driver; starting a new one", runtime_cache)
                config.set_runtime_cache(self._runtime_cache)
            self.context = self.engine.create_execution_context(config)
        else:
            self.context = self.engine.create_execution_context(strategy)
        if self.context is None:
            raise BackendFailure(f"{flavour} could not create an execution context (out of GPU memory?); free GPU memory or run fewer lanes")
        size = getattr(self.engine, "device_memory_size_v2", None) or self.engine.device_memory_size
        # Scratch for the largest shape of the profile, allocated once here (or by the caller's pool).
        self._scratch = scratch_allocator(size) if scratch_allocator else cupy.cuda.alloc(max(size, 256))
        self.context.set_device_memory(int(self._scratch.ptr), size)
        self._stream = stream if stream is not None else cupy.cuda.Stream(non_blocking=True)
        self._input_name = inputs[0].name
        self._output_name = outputs[0].name
        self._buffers: dict[tuple, tuple] = {}  # input shape -> (input buffer, output buffer)

    def reserve(self, batch: int, height: int, width: int):
        """Allocate the I/O buffers of one input shape now (start-up), not at the first frame."""
        return self._buffers_for((batch, 3, height, width))

    def _buffers_for(self, shape: tuple):
        if shape not in self._buffers:
            cupy, trt = self._cupy, self._trt
            if not self.context.set_input_shape(self._input_name, shape):
                raise BackendFailure(f"{self.name} engine: input shape {shape} is outside its optimization profile; rebuild it with a --profile that covers it")
            out_shape = tuple(self.context.get_tensor_shape(self._output_name))
            out_dtype = trt.nptype(self.engine.get_tensor_dtype(self._output_name))
            self._buffers[shape] = (cupy.empty(shape, cupy.float32), cupy.empty(out_shape, out_dtype))
        return self._buffers[shape]

    def infer(self, batch, stream=None, out=None):
        cupy = self._cupy
        on_device = type(batch).__module__.startswith("cupy")
        shape = tuple(int(d) for d in batch.shape)
        staging, output = self._buffers_for(shape)
        if out is not None:
            output = out
        handle = _stream_handle(stream if stream is not None else self._stream)
        if handle == 0:
            raise ValueError("refusing the CUDA default stream: pass the lane's stream")
        with cupy.cuda.ExternalStream(handle):
            if on_device and batch.dtype == cupy.float32 and batch.flags.c_contiguous:
                source = batch  # zero copy: the engine reads the caller's buffer
            elif on_device:
                staging[...] = batch  # cast/compact on the lane's stream
                source = staging
            else:
                staging.set(np.ascontiguousarray(batch, np.float32))  # host -> preallocated device buffer
                source = staging
            self.context.set_input_shape(self._input_name, shape)
            self.context.set_tensor_address(self._input_name, int(source.data.ptr))
            self.context.set_tensor_address(self._output_name, int(output.data.ptr))
            if not self.context.execute_async_v3(handle):
                raise BackendFailure(f"{self.name} execute_async_v3 failed for input shape {shape}")
            if on_device:
                return output
            result = cupy.asnumpy(output).astype(np.float32, copy=False)
        return result

    def close(self) -> None:
        from holoburn.processing.files import atomic_write

        if self._runtime_cache is not None and self._runtime_cache_path is not None:
            try:
                atomic_write(self._runtime_cache_path, bytes(self._runtime_cache.serialize()))
            except OSError as exc:
                log.warning("could not save the runtime cache %s: %s", self._runtime_cache_path, exc)
        self._buffers.clear()
        self.context = self.engine = None


class EngineCorrupt(BackendFailure):
    """A cached engine could not be deserialized (`open` rebuilds it once)."""


def open(card: ModelCard, precision: str = "fp32", device: str = "cuda", flavour: str = "tensorrt", *, cache_dir=None, profile: str | Profile | None = None, max_batch: int = 1, target: str | None = None, scratch_allocator=None, stream=None, strategy=None, **_):
    """Open (building or taking from the cache) the engine for `card` at `precision` on a CUDA device."""
    from holoburn.engines.cache import EngineCache

    import_trt(flavour)  # BackendUnavailable first when the package is missing
    if not str(device).startswith("cuda") or not cuda_available():
        raise BackendUnavailable(f"{flavour} engines run only on a CUDA GPU (device {device!r}); build them here with `holoburn engine build --backend {flavour}`")
    if flavour == "tensorrt-rtx":
        trt = import_trt(flavour)
        _, capability, _ = device_identity()
        supported = sorted(n[2:] for n in dir(trt.ComputeCapability) if n.startswith("SM"))
        if capability.replace(".", "") not in supported:
            # e.g. the H100 (9.0): RTX builds for it but refuses to run ("compute capability not supported")
            raise BackendUnavailable(f"TensorRT-RTX {trt.__version__} does not run on compute capability {capability} (runs on sm {', '.join(supported)})")
    cache = EngineCache(cache_dir)
    if not isinstance(profile, Profile):
        profile = Profile.parse(profile, card, max_batch)
    build = ensure_engine(card, flavour, precision, profile, cache=cache, strategy=strategy, target=target)
    runtime_cache = None
    if flavour == "tensorrt-rtx":
        runtime_cache = cache.timing_dir() / f"{build.path.stem}.runtime-cache"
    log.info("%s %s engine %s (%s)", flavour, precision, build.path, "cache hit" if build.cache_hit else f"built in {build.seconds:.1f} s")
    for attempt in (1, 2):
        try:
            return TensorRTBackend(build.path.read_bytes(), flavour, card, precision, device, scratch_allocator=scratch_allocator, runtime_cache=runtime_cache, stream=stream)
        except EngineCorrupt as exc:
            if attempt == 2:
                raise
            log.warning("%s: %s; rebuilding", build.path, exc)
            build = ensure_engine(card, flavour, precision, profile, cache=cache, strategy=strategy, target=target, force=True)
