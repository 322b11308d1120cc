"""The lanes' runtime: what each lane owns and does, on the GPU (frames stay on the device from
upload to overlay) and on the CPU. The Holoscan operators that call it are in operators/lane_stages.py.

Each lane (processing/lanes.py) is a chain of thin operators (app/graph.py):

    triage -> preprocess -> inference -> postprocess -> overlay -> sink -> results
       ^                                                            |
       +------- feedback (triage levels; a credit per batch) -------+

The operators only receive, call one method of a `LaneRuntime` and emit. The runtime holds what a
lane owns:

- on a CUDA device (`GpuLaneRuntime`): the lane's stream (allocated by Holoscan from the lane's
  `CudaStreamPool`, whose priority comes from the device's range), its memory (`LaneMemory`: for a
  `dedicated` lane one preallocated device arena; for a `shared` lane a capped CuPy pool of its
  own), and every buffer a batch needs (device staging, model input, mask, overlay, class counts;
  pinned host staging and counts), made once at start-up. Letterbox and normalisation, the
  picture checks' sums, class votes and uncertain burn, mask restore, class counts and the colour
  overlay are CuPy kernels (processing/kernels.py) that write into those buffers, on the lane's
  stream, and compute what the host reference functions compute (`processing.preprocess.prepare_input`,
  `masks_of`, `clinical.assessability.picture_stats`, `clinical.overlay.tint`):
  tests/test_gpu_pipeline.py holds them to it. Inference runs on the same stream; the host waits
  once per batch, in the sink, on an event. A lane in `gpu.cuda_graph_lanes` captures one frame's
  device work as one CUDA graph and replays it.
- on the CPU (`CpuLaneRuntime`): the reference functions themselves, NumPy and OpenCV, with the
  CPU renderer for the overlay (legend, outline and numbers).

Every CuPy allocation a GPU lane makes while frames flow goes through that lane's `LaneMemory`,
which counts it: after `freeze()` (end of warm-up) the count should stay 0. A dedicated lane cannot
take memory from anywhere else: if its arena were ever exhausted the frame fails, counted, and
the other lanes never touch it.

CuPy is imported only on the GPU path, so this module imports on machines without CUDA.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from holoburn.clinical.assessability import (
    AssessLimits,
    PictureStats,
    UNCERTAIN,
    check_frame_shape,
    image_problem,
    modality_problem,
    model_problem,
    not_assessable_findings,
    picture_problem,
    pixel_votes,
    skin_confidence,
    thumbnail_step,
    uncertain_burn,
)
from holoburn.clinical.burn_size import burn_findings, count_pixels
from holoburn.clinical.depth import BURN_CLASSES, SKIN_CLASSES
from holoburn.processing.lanes import LanePolicy
from holoburn.clinical.overlay import COLOUR_TABLE, DEMONSTRATION, TINT_TABLE, annotate, summary_lines, tint
from holoburn.clinical.errors import BackendFailure, BadFrame
from holoburn.clinical.triage import Lane, TriagePolicy, triage_level
from holoburn.processing.preprocess import letterbox_geometry, nearest_indices, prepare_input, restore_mask, segment
from holoburn.processing.frame import Frame
from holoburn.processing.kernels import bilinear_tables, fused_kernels

log = logging.getLogger("holoburn.lanes")


# ----------------------------------------------------------------------------- device facts


def device_priority_range(device_id: int = 0) -> tuple[int, int]:
    """(least, greatest) CUDA stream priority of the device, as cudaDeviceGetStreamPriorityRange
    reports it (cuda-python; CuPy's binding of the same call where cuda-python is absent).
    Lower numbers are more urgent, e.g. (0, -5) on an H100."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python layout
        except ImportError:
            cudart = None
    if cudart is not None:
        (err,) = cudart.cudaSetDevice(device_id)
        if err != cudart.cudaError_t.cudaSuccess:
            raise RuntimeError(f"cudaSetDevice({device_id}) failed: {err}")
        err, least, greatest = cudart.cudaDeviceGetStreamPriorityRange()
        if err != cudart.cudaError_t.cudaSuccess:
            raise RuntimeError(f"cudaDeviceGetStreamPriorityRange failed: {err}")
        return int(least), int(greatest)
    import cupy

    with cupy.cuda.Device(device_id):
        least, greatest = cupy.cuda.runtime.deviceGetStreamPriorityRange()
    return int(least), int(greatest)


def priority_range_source() -> str:
    import importlib.util

    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            if importlib.util.find_spec(name) is not None:
                return "cuda-python cudaDeviceGetStreamPriorityRange"
        except ModuleNotFoundError:
            continue
    return "cupy.cuda.runtime.deviceGetStreamPriorityRange"


# ----------------------------------------------------------------------------- lane memory


class LaneMemoryExhausted(BackendFailure):
    """A lane's own memory cannot serve a request (the lane, the bytes and what is left)."""


class LaneMemory:
    """One lane's device memory and its allocation count.

    dedicated: one cudaMalloc of `nbytes` at start-up, handed out in 512-byte aligned pieces and
    never given back (buffers live as long as the lane); nothing else can draw on it.
    shared: a CuPy MemoryPool of its own, capped at `nbytes`; freed blocks are reused.
    `malloc` is a CuPy allocator (`cupy.cuda.using_allocator(memory.malloc)`): every request is
    counted, and those after `freeze()` (end of warm-up) separately; `device_mallocs` counts the
    requests that took new memory from the device (cudaMalloc), `failures` those that could not be
    served.
    """

    ALIGN = 512

    def __init__(self, lane: str, kind: str, nbytes: int):
        import cupy

        self._cp = cupy
        self.lane, self.kind, self.capacity = lane, kind, int(nbytes)
        self.requests = 0
        self.requests_after_freeze = 0
        self.device_mallocs = 0
        self.device_mallocs_after_freeze = 0
        self.failures = 0
        self.frozen = False
        self._lock = threading.Lock()
        if kind == "dedicated":
            self._arena = cupy.cuda.Memory(self.capacity)  # the one cudaMalloc of this lane
            self._offset = 0
            self.device_mallocs = 1
            self._pool = None
        else:
            self._arena = None
            self._pool = cupy.cuda.MemoryPool()
            self._pool.set_limit(size=self.capacity)

    def malloc(self, nbytes: int):
        with self._lock:
            self.requests += 1
            if self.frozen:
                self.requests_after_freeze += 1
            if self._arena is not None:
                size = max(self.ALIGN, -(-int(nbytes) // self.ALIGN) * self.ALIGN)
                if self._offset + size > self.capacity:
                    self.failures += 1
                    raise LaneMemoryExhausted(
                        f"lane {self.lane}: dedicated pool of {self.capacity >> 20} MiB cannot hold {nbytes} more bytes "
                        f"({(self.capacity - self._offset) >> 20} MiB left); raise lanes.{self.lane}.pool_mb in configs/holoburn.yaml"
                    )
                pointer = self._cp.cuda.MemoryPointer(self._arena, self._offset)
                self._offset += size
                return pointer
            before = self._pool.total_bytes()
            try:
                pointer = self._pool.malloc(nbytes)
            except self._cp.cuda.memory.OutOfMemoryError as exc:
                self.failures += 1
                raise LaneMemoryExhausted(f"lane {self.lane}: shared pool capped at {self.capacity >> 20} MiB: {exc}") from None
            if self._pool.total_bytes() > before:
                self.device_mallocs += 1
                if self.frozen:
                    self.device_mallocs_after_freeze += 1
            return pointer

    def array(self, shape, dtype):
        """A CuPy array of `shape` and `dtype` from this lane's memory."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        return self._cp.ndarray(tuple(shape), dtype, memptr=self.malloc(max(nbytes, 1)))

    def freeze(self) -> None:
        """End of warm-up: from now on every request is counted as a run-time allocation."""
        self.frozen = True

    def used_bytes(self) -> int:
        return self._offset if self._arena is not None else self._pool.used_bytes()

    def held_bytes(self) -> int:
        return self.capacity if self._arena is not None else self._pool.total_bytes()

    def report(self) -> dict:
        return {
            "kind": self.kind,
            "capacity_mb": round(self.capacity / 2**20, 1),
            "device_held_mb": round(self.held_bytes() / 2**20, 1),
            "buffers_mb": round(self.used_bytes() / 2**20, 1),
            "requests": self.requests,
            "requests_after_warmup": self.requests_after_freeze,
            "device_mallocs": self.device_mallocs,
            "device_mallocs_after_warmup": self.device_mallocs_after_freeze,
            "failures": self.failures,
        }


# ----------------------------------------------------------------------------- batches


@dataclass
class LaneBatch:
    """Frames of one lane travelling the chain together, and where their data lives.

    lane: the queue (and runtime) that serves them; each frame keeps its own clinical lane in
    `frame.lane`. slot: the buffer set of the lane holding this batch's outputs.
    """

    lane: Lane
    frames: list
    gated: bool = True
    slot: int | None = None
    groups: list = field(default_factory=list)  # GPU: (geometry, first row, frames)
    logits: Any = None
    failed: str | None = None
    started_ns: int = field(default_factory=time.monotonic_ns)
    done_ns: int | None = None
    trace: list = field(default_factory=list)  # (stage, start ns, end ns) per operator, monotonic
    gpu_ms: float | None = None  # device time of the batch's work, from CUDA events
    chained: bool = False  # GPU: its device work was one CUDA graph replay, enqueued in prepare
    live: list = field(default_factory=list)  # frames still being processed (not dropped)

    def __post_init__(self):
        self.live = [f for f in self.frames if f.ok]

    def drop(self, frame, reason: str) -> None:
        """One frame cannot be processed: it leaves the batch's work, keeps its place in the results."""
        frame.drop(reason)
        self.live = [f for f in self.live if f is not frame]

    def fail(self, stage: str, exc: Exception) -> None:
        log.warning("lane %s: %s failed on %d frame(s) (%s: %s)", self.lane.name, stage, len(self.frames),
                    type(exc).__name__, exc)
        self.failed = f"{stage}_failed"
        for frame in self.frames:
            frame.drop(f"{stage}_failed")


class LaneBusy(BackendFailure):
    """Every buffer set of the lane is in use (more batches in flight than the lane holds)."""


# ----------------------------------------------------------------------------- runtimes


@dataclass
class SourceFacts:
    """What the clinical numbers of one source need besides its mask."""

    region_pct: float | None = None
    body_region: str | None = None
    cm2_per_pixel: float | None = None


class LaneRuntime:
    """What one lane's operators call. Subclasses: CpuLaneRuntime, GpuLaneRuntime."""

    device = "cpu"

    #: True where a batch's outputs (mask, overlay) live in the lane's buffer set until it is released
    outputs_in_slots = False

    def __init__(self, policy: LanePolicy, *, card, backend, triage_policy: TriagePolicy = TriagePolicy(),
                 sources: dict | None = None, alpha: float = 0.45, slots: int | None = None, keep_logits: bool = False,
                 limits: AssessLimits = AssessLimits()):
        self.policy = policy
        self.lane = policy.lane
        self.card, self.backend = card, backend
        self.keep_logits = keep_logits  # validation: each frame keeps its logits (probabilities for AUC)
        self.limits = limits  # when a frame is assessable (clinical.assessability)
        describe = getattr(backend, "describe", None)  # engines.backend.Backend; test stand-ins may lack it
        self.backend_info = {"model_id": card.model_id, **(describe() if describe else {})}
        self.triage_policy = triage_policy
        self.sources = sources or {}
        self.alpha = alpha
        self.slots = slots or policy.depth
        self._free = list(range(self.slots))
        self._slot_lock = threading.Lock()
        self.batches = 0
        self.frames = 0

    #: what the lane's operators call, in their order (ProcessOp fuses the first four, SinkOp calls finish)
    STAGES = ("prepare", "infer", "postprocess", "overlay", "finish")

    def run_through(self, batch: "LaneBatch") -> "LaneBatch":
        """Every stage on `batch`, in order, outside the graph (warm-up, checks, plain loops)."""
        for stage in self.STAGES:
            getattr(self, stage)(batch)
        return batch

    # slots: each batch in flight holds one buffer set until the sink releases it
    def take_slot(self) -> int:
        with self._slot_lock:
            if not self._free:
                raise LaneBusy(f"lane {self.lane.name}: all {self.slots} buffer sets are in use")
            return self._free.pop(0)

    def release_slot(self, slot: int | None) -> None:
        if slot is None:
            return
        with self._slot_lock:
            if slot not in self._free:
                self._free.append(slot)

    def release(self, batch: "LaneBatch") -> None:
        """The sink is done with the batch: its buffer set may take the next one."""
        self.release_slot(batch.slot)

    #: where the picture checks (exposure, colour, sharpness) run: on the host before the model
    #: (CPU lanes), or on the device beside it, decided when the batch ends (GPU lanes)
    picture_checks_on_host = True

    def check_picture(self, frame: Frame) -> None:
        """Before the picture goes further: a frame the lane can take (else BadFrame), and is it a
        colour photograph? Only its shape and its DICOM facts are looked at where the picture
        checks run on the device."""
        origin = dict(frame.info.origin)
        problem = modality_problem(origin.get("modality"), origin.get("photometric"))
        if not problem:  # (a DICOM that is not a photograph is not judged by its pixels at all)
            if self.picture_checks_on_host:
                problem = image_problem(frame.image, self.limits)
            else:  # the picture checks run on the device, beside the model
                check_frame_shape(frame.image, self.limits)
        if problem:
            frame.extra["not_assessable"] = problem

    def findings_for(self, frame: Frame, pixels: list[int], confidence: float | None, uncertain: int) -> dict:
        """Clinical numbers of an assessable frame; only the reason for one that is not.
        pixels: per class, as shown (uncertain burn left out); confidence: mean top-class
        probability over skin pixels (None: not measured); uncertain: burn pixels shown uncertain."""
        total = sum(pixels)
        skin_share = sum(pixels[c] for c in SKIN_CLASSES) / total if total else 0.0
        reason = frame.extra.get("not_assessable") or model_problem(skin_share, confidence, self.limits)
        if reason:
            return not_assessable_findings(reason, confidence)
        facts = self.sources.get(frame.source) or SourceFacts()
        findings = burn_findings(pixels, region_pct=facts.region_pct, cm2_per_pixel=facts.cm2_per_pixel)
        findings["triage"] = triage_level(findings, body_region=facts.body_region, policy=self.triage_policy)
        return {"assessable": True, "not_assessable_reason": None, "skin_confidence": confidence, **findings,
                "uncertain_pixels": uncertain}

    stream_ptr = None

    def bind(self, stream_ptr, origin: str = "") -> None:
        """Called by the prepare operator once per application run (GPU: the lane's stream)."""

    def unbind(self) -> None:
        pass

    def freeze(self) -> None:
        """End of warm-up."""

    def report(self) -> dict:
        return {"lane": self.lane.name, "device": self.device, "batch_size": self.policy.batch_size,
                "batches": self.batches, "frames": self.frames}


class CpuLaneRuntime(LaneRuntime):
    """The reference path: NumPy/OpenCV preprocessing, the backend on host arrays, CPU renderer.
    Each batch in flight has its own model-input buffer (its slot): the next batch is prepared
    while this one is inferred."""

    def __init__(self, *args, render: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        size = self.card.input_size
        self.render = render  # legend, outlines and numbers (the CPU renderer); off: tint only
        self.model_input = np.zeros((self.slots, self.policy.batch_size, 3, size, size), np.float32)

    def prepare(self, batch: LaneBatch) -> None:
        if not batch.live:
            return
        batch.slot = self.take_slot()
        inputs = self.model_input[batch.slot]
        for frame in list(batch.live):
            row = batch.live.index(frame)
            try:
                self.check_picture(frame)
                _, frame.letterbox = prepare_input(frame.image, self.card.input_size, self.card.mean, self.card.std,
                                                   out=inputs[row : row + 1])
            except BadFrame as exc:
                log.warning("%s frame %d: %s", frame.source, frame.index, exc)
                batch.drop(frame, exc.reason)

    def infer(self, batch: LaneBatch) -> None:
        if batch.live:
            batch.logits = np.asarray(self.backend.infer(self.model_input[batch.slot][: len(batch.live)]))

    def postprocess(self, batch: LaneBatch) -> None:
        for i, frame in enumerate(batch.live):
            frame.mask, shown, confidence = masks_of(batch.logits[i], frame.letterbox, self.limits)
            frame.findings = self.findings_for(frame, count_pixels(shown), confidence,
                                               int(np.count_nonzero(shown == UNCERTAIN)))
            frame.extra["shown_mask"] = shown
            if self.keep_logits:
                frame.logits = batch.logits[i : i + 1].copy()
        batch.logits = None

    def overlay(self, batch: LaneBatch) -> None:
        for frame in batch.live:
            assessed = frame.findings.get("assessable", True)
            # a frame that is not assessable shows the picture as it is, and says why
            shown = frame.extra.pop("shown_mask", frame.mask)
            overlay = tint(frame.image, shown, self.alpha) if assessed else frame.image.copy()
            if self.render:
                lane = f"{frame.lane}: {frame.extra['lane_reason']}" if frame.extra.get("lane_reason") else frame.lane
                lines = summary_lines(frame.findings) + ([DEMONSTRATION] if self.card.demonstration else [])
                overlay = annotate(overlay, shown if assessed else None, lines, lane)
            frame.overlay = overlay

    def finish(self, batch: LaneBatch) -> None:
        batch.done_ns = time.monotonic_ns()
        self.batches += 1
        self.frames += len(batch.frames)


def masks_of(logits: np.ndarray, box, limits: AssessLimits):
    """One frame's (C, S, S) logits on the host -> (class mask at frame size, the mask as shown
    and counted: burn the model is unsure of UNCERTAIN, mean top-class probability over skin
    pixels or None). The reference the GPU lanes' kernels are held to."""
    mask = segment(logits[None], box)
    picture = logits[:, box.top : box.top + box.height, box.left : box.left + box.width]
    classes, top = pixel_votes(picture)
    _, confidence = skin_confidence(classes, top)
    unsure = np.zeros((box.size, box.size), np.uint8)
    unsure[box.top : box.top + box.height, box.left : box.left + box.width] = uncertain_burn(classes, top, limits)
    shown = np.where(restore_mask(unsure, box).view(bool), UNCERTAIN, mask).astype(np.uint8)
    return mask, shown, confidence


@dataclass
class FrameGeometry:
    """Device buffers and lookup tables of one frame size in one lane (all made at start-up).
    Lists hold one buffer per buffer set (slot): a batch owns its slot from prepare to sink."""

    height: int
    width: int
    box: Any
    frames: list  # per slot (B, H, W, 3) uint8: device staging of the uploaded frames
    host_staging: list  # per slot (B, H, W, 3) uint8 pinned: for frames not already in pinned memory
    masks: list  # per slot (B, H, W) uint8: the class mask
    shown: list  # per slot (B, H, W) uint8: the class mask as shown and counted (uncertain burn: UNCERTAIN)
    overlays: list  # per slot (B, H, W, 3) uint8
    tables: dict  # letterbox resize: row0/row1/roww, col0/col1/colw; mask restore: rowi, coli


class GpuLaneRuntime(LaneRuntime):
    """A lane on a CUDA device: its stream, its memory, its buffers, fused kernels, the backend
    replaying its CUDA graph on the lane's stream. See the module docstring.

    Ops of one lane run on different worker threads and may enqueue work for two batches in any
    interleaving; every buffer a batch writes is therefore its slot's own, and the class indices
    are taken from the engine's output in the same stage that runs the engine (the engine's
    output buffer is shared by all batches of the lane).
    """

    outputs_in_slots = True

    device = "cuda"

    picture_checks_on_host = False

    def __init__(self, policy: LanePolicy, *, frame_sizes=((1080, 1920),), stream_priority: int = 0, **kwargs):
        import cupy as cp
        import cupyx

        super().__init__(policy, **kwargs)
        self._cp, self._cpx = cp, cupyx
        self.stream_priority = stream_priority
        self.memory = LaneMemory(policy.lane.name, policy.memory, policy.pool_mb << 20)
        self.kernels = fused_kernels()
        self.stream_ptr = None
        self.stream_origin = None
        self._stream = None
        self.pinned_bytes = 0
        self.late_geometries = 0  # frame sizes first seen after start-up (their buffers came late)
        self.host_copies = Counter()  # host<->device copies by kind
        # one frame's device work as one CUDA graph (gpu.cuda_graph_lanes; app.graph sets it)
        self.chain_graph = False
        self.chain_graph_refused = False
        self.chain_replays = 0
        self._chains: dict = {}  # (slot, height, width, limits) -> replay(stream_ptr)
        self._chains_warm: set = set()
        B, S, C, n = policy.batch_size, self.card.input_size, self.card.num_classes, self.slots
        self.model_input = [self._zeros((B, 3, S, S), np.float32) for _ in range(n)]
        self.square_mask = [self.memory.array((B, S, S), np.uint8) for _ in range(n)]
        # pixels per class, and in the last column the uncertain ones (UNCERTAIN)
        self.counts = [self.memory.array((B, C + 1), np.int32) for _ in range(n)]
        self.counts_host = [self._pinned((B, C + 1), np.int32) for _ in range(n)]
        # uncertain burn: the pixels the model is unsure of, and the burn regions (labels, areas)
        self.unsure = [self.memory.array((B, S, S), np.uint8) for _ in range(n)]
        self.square_shown = [self.memory.array((B, S, S), np.uint8) for _ in range(n)]
        self.region_label = [self.memory.array((B, S, S), np.int32) for _ in range(n)]
        self.region_area = [self.memory.array((B, S, S), np.int32) for _ in range(n)]
        # the picture checks' sums per frame (clinical.assessability.PictureStats.from_sums)
        self.picture = [self.memory.array((B, 7), np.float64) for _ in range(n)]
        self.picture_host = [self._pinned((B, 7), np.float64) for _ in range(n)]
        # per frame: sum of the top-class probability over skin pixels, and their number (out_of_domain)
        self.confidence = [self.memory.array((B, 2), np.float32) for _ in range(n)]
        self.confidence_host = [self._pinned((B, 2), np.float32) for _ in range(n)]
        # timed events: the batch's device time is reported beside its wall-clock latency
        self.start_events = [cp.cuda.Event() for _ in range(n)]
        self.done_events = [cp.cuda.Event() for _ in range(n)]
        self.mean = self._constant(np.asarray(self.card.mean, np.float32))
        self.inv_std = self._constant(1.0 / cp.asarray(self.card.std, dtype=cp.float32))  # as prepare_input has it
        self.tinted = self._constant(np.asarray(TINT_TABLE, np.bool_))  # per mask value 0..255
        self.colours = self._constant(np.asarray(COLOUR_TABLE, np.float32))
        self.geometries: dict[tuple, FrameGeometry] = {}
        for height, width in frame_sizes:
            self.geometry(int(height), int(width))
        cp.cuda.Device().synchronize()
        self.engine_bytes = self._reserve_engine()

    # -- start-up

    def _pinned(self, shape, dtype):
        array = self._cpx.empty_pinned(shape, dtype)
        self.pinned_bytes += array.nbytes
        return array

    def _zeros(self, shape, dtype):
        array = self.memory.array(shape, dtype)
        array.fill(0)
        return array

    def _constant(self, values):
        array = self.memory.array(values.shape, values.dtype)
        array[...] = values if type(values).__module__.startswith("cupy") else self._cp.asarray(values)
        return array

    def _reserve_engine(self) -> int:
        """Capture the backend's CUDA graph for this lane's batch now; returns the device bytes the
        engine keeps (its I/O and scratch: the graph's private pool), as torch counts them allocated."""
        reserve = getattr(self.backend, "reserve", None)
        if reserve is None:
            return 0
        try:
            import gc

            import torch

            gc.collect()
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
        except ImportError:
            torch, before = None, 0
        S = self.card.input_size
        reserve(self.policy.batch_size, S, S)
        if torch is None:
            return 0
        torch.cuda.synchronize()
        return int(torch.cuda.memory_allocated() - before)

    def geometry(self, height: int, width: int) -> FrameGeometry:
        """Buffers for one frame size; made at start-up for the configured sizes, else on first use
        (counted in `late_geometries` and in the lane's allocations after warm-up)."""
        key = (height, width)
        found = self.geometries.get(key)
        if found is not None:
            return found
        B, S, n = self.policy.batch_size, self.card.input_size, self.slots
        if self.memory.frozen:
            self.late_geometries += 1
            log.warning("lane %s: frame size %dx%d was not reserved at start-up; its buffers are made now",
                        self.lane.name, width, height)
        box = letterbox_geometry(height, width, S)
        row0, row1, roww = bilinear_tables(height, box.height)
        col0, col1, colw = bilinear_tables(width, box.width)
        rowi, coli = nearest_indices(self._cp, box.height, height), nearest_indices(self._cp, box.width, width)
        tables = {name: self._constant(value) for name, value in (
            ("row0", row0), ("row1", row1), ("roww", roww), ("col0", col0), ("col1", col1), ("colw", colw),
            ("rowi", rowi), ("coli", coli))}
        geometry = FrameGeometry(
            height, width, box,
            frames=[self.memory.array((B, height, width, 3), np.uint8) for _ in range(n)],
            host_staging=[self._pinned((B, height, width, 3), np.uint8) for _ in range(n)],
            masks=[self.memory.array((B, height, width), np.uint8) for _ in range(n)],
            shown=[self.memory.array((B, height, width), np.uint8) for _ in range(n)],
            overlays=[self.memory.array((B, height, width, 3), np.uint8) for _ in range(n)],
            tables=tables,
        )
        self.geometries[key] = geometry
        return geometry

    def bind(self, stream_ptr, origin: str = "holoscan CudaStreamPool") -> None:
        """Use this CUDA stream (a cudaStream_t address) for everything the lane does."""
        cp = self._cp
        if not stream_ptr:
            # no Holoscan stream (checks, warm-up, or no pool on the operator): one of our own,
            # non-blocking, at the lane's priority
            self._own_stream = cp.cuda.Stream(non_blocking=True, priority=self.stream_priority)
            stream_ptr = self._own_stream.ptr
            if origin == "holoscan CudaStreamPool":
                log.warning("lane %s: no Holoscan stream pool reached the operator; a CuPy stream of priority %d "
                            "serves the lane", self.lane.name, self.stream_priority)
                origin = "cupy (no CudaStreamPool on the operator)"
        self.stream_ptr = int(stream_ptr)
        self.stream_origin = origin
        self._stream = cp.cuda.ExternalStream(self.stream_ptr) if not hasattr(cp.cuda.Stream, "from_external") \
            else _external_stream(cp, self.stream_ptr)

    def unbind(self) -> None:
        """Forget the stream (the application that owned it has ended)."""
        self.stream_ptr = None
        self._stream = None

    def freeze(self) -> None:
        self.memory.freeze()

    def warm_up(self, chain_graph: bool = False) -> None:
        """Before the first real frame, on a grey frame of every size the lane was built for: each
        buffer set through the stages twice, one frame at a time (kernels compiled, the backend's
        algorithms picked and, with `chain_graph`, one frame's device work captured per buffer set
        and size, gpu.cuda_graph_lanes), then one full batch; then the lane's memory is frozen, so
        an allocation from here on is counted. Without it the first frames of a run pay for all
        that, an emergency frame among them."""
        self.chain_graph = chain_graph
        self.bind(None, "warm-up stream")
        for height, width in list(self.geometries):
            grey = self._cpx.empty_pinned((height, width, 3), np.uint8)
            grey[...] = 128
            for frames in [[grey]] * (2 * self.slots) + [[grey] * self.policy.batch_size]:
                self.release(self.run_through(LaneBatch(self.lane, [Frame.of("warm-up", i, 0.0, f, lane=self.lane.name)
                                                                    for i, f in enumerate(frames)])))
        self._cp.cuda.Device().synchronize()
        self.unbind()
        self.freeze()

    # -- stages (all on the lane's stream, all allocations through the lane's memory)

    def _on_lane(self):
        return _LaneContext(self)

    def prepare(self, batch: LaneBatch) -> None:
        if self._stream is None:
            self.bind(None)
        for frame in list(batch.live):
            try:  # a frame the lane can take? a colour photograph by its DICOM facts? (no pixel read)
                self.check_picture(frame)
            except BadFrame as exc:
                log.warning("%s frame %d: %s", frame.source, frame.index, exc)
                batch.drop(frame, exc.reason)
        if not batch.live:
            return
        batch.slot = slot = self.take_slot()
        frames = sorted(batch.live, key=lambda f: tuple(f.image.shape[:2]))  # one launch per frame size
        batch.live = frames  # row order of the model input, masks and counts
        with self._on_lane():
            self.start_events[slot].record(self._stream)
            row = 0
            groups = []
            for shape in sorted({tuple(f.image.shape[:2]) for f in frames}):
                members = [f for f in frames if tuple(f.image.shape[:2]) == shape]
                g = self.geometry(*shape)
                for j, frame in enumerate(members):
                    self._upload(frame, g, slot, j)
                groups.append((g, row, members))
                row += len(members)
            batch.groups = groups
            chain = self._chain_for(batch)
            if chain is not None:  # the rest of the lane's device work: one launch
                chain(self.stream_ptr)
                batch.chained = True
                self.chain_replays += 1
            else:
                self._enqueue_prepare(slot, groups)

    def _upload(self, frame, g: FrameGeometry, slot: int, j: int) -> None:
        staging = g.frames[slot]
        image = frame.image
        if type(image).__module__.startswith("cupy"):
            staging[j][...] = image
            self.host_copies["frame_already_on_device"] += 1
        elif _is_pinned(image):
            staging[j].set(image, stream=self._stream)
            self.host_copies["upload_from_pinned"] += 1
        else:
            # the slot is free, so its previous batch (and its upload) has finished
            host = g.host_staging[slot][j]
            np.copyto(host, image)
            staging[j].set(host, stream=self._stream)
            self.host_copies["upload_via_pinned_staging"] += 1
        frame.image = None  # from here on the lane's device copy is the frame
        frame.letterbox = g.box

    # -- the device work of a batch, enqueued on the current CuPy stream: stage by stage, or once
    #    into a CUDA graph that later frames replay (`_chain_for`)

    def _enqueue_prepare(self, slot: int, groups) -> None:
        """Picture sums (judged in finish) and letterbox + normalise into the slot's model input."""
        for g, row, members in groups:
            staging = g.frames[slot]
            if self.limits.picture_checks:  # exposure, colour, sharpness
                sums = self.picture[slot][row : row + len(members)]
                sums.fill(0)
                step = thumbnail_step(g.width)
                th, tw = -(-g.height // step), -(-g.width // step)
                self.kernels["picture_sums"](
                    (max(1, min(32, -(-th * tw // 1024))), len(members)), (256,),
                    (staging, np.int32(g.height), np.int32(g.width), np.int32(th), np.int32(tw),
                     np.float64(1.0 / (th / g.height)), np.float64(1.0 / (tw / g.width)), sums))
            t = g.tables
            self.kernels["preprocess"](
                staging, t["row0"], t["row1"], t["roww"], t["col0"], t["col1"], t["colw"], self.mean,
                self.inv_std, np.int32(g.height), np.int32(g.width), np.int32(g.box.size), np.int32(g.box.top),
                np.int32(g.box.left), np.int32(g.box.height), np.int32(g.box.width),
                self.model_input[slot][row : row + len(members)])

    def _enqueue_votes(self, slot: int, groups, n: int, logits) -> None:
        """From the engine's output (shared by the lane's batches, so read in the stage that ran
        it): class indices, uncertain burn, and the out-of-domain sums."""
        S, C = self.card.input_size, self.card.num_classes
        if not logits.flags.c_contiguous:
            raise RuntimeError(f"lane {self.lane.name}: the backend returned non-contiguous logits")
        self.kernels["argmax"](logits, np.int32(C), np.int32(S * S), np.float32(self.limits.min_pixel_confidence),
                               np.int32(min(BURN_CLASSES)), np.int32(max(BURN_CLASSES)),
                               self.square_mask[slot][:n], self.unsure[slot][:n])
        self._mark_uncertain(slot, groups)
        confidence = self.confidence[slot]
        confidence[:n].fill(0)
        kernel = self.kernels.get(f"confidence_{logits.dtype.name}") if self.limits.picture_checks else None
        for g, row, members in groups if kernel is not None else ():  # else: not measured
            box = g.box
            blocks_x = max(1, min(64, -(-(box.height * box.width) // (256 * 16))))
            kernel((blocks_x, len(members)), (256,),
                   (logits[row:], np.int32(C), np.int32(S), np.int32(box.top), np.int32(box.left),
                    np.int32(box.height), np.int32(box.width), confidence[row:]))

    def _mark_uncertain(self, slot: int, groups) -> None:
        """The square masks as shown and counted: burn pixels the model is unsure of, and burn
        regions of one depth smaller than `min_region_px`, UNCERTAIN (clinical.assessability.uncertain_burn)."""
        k, S = self.kernels, self.card.input_size
        burn = (np.int32(min(BURN_CLASSES)), np.int32(max(BURN_CLASSES)))
        for g, row, members in groups:
            box = g.box
            geometry = (np.int32(S), np.int32(box.top), np.int32(box.left), np.int32(box.height), np.int32(box.width))
            grid = (max(1, min(256, -(-(box.height * box.width) // 256))), len(members))
            cls, label, area = self.square_mask[slot][row:], self.region_label[slot][row:], self.region_area[slot][row:]
            if self.limits.min_region_px > 1:  # else no region is too small: only the unsure pixels are marked
                k["regions_init"](grid, (256,), (label, area, *geometry))
                k["regions_merge"](grid, (256,), (cls, label, *geometry, *burn))
                k["regions_area"](grid, (256,), (cls, label, area, *geometry, *burn))
            k["regions_mark"](grid, (256,), (cls, self.unsure[slot][row:], label, area, self.square_shown[slot][row:],
                                             *geometry, *burn, np.int32(self.limits.min_region_px)))

    def _enqueue_masks(self, slot: int, groups, n: int) -> None:
        """Masks at frame size, class counts; counts and sums back to pinned host memory."""
        k = self.kernels
        S, C = self.card.input_size, self.card.num_classes
        counts = self.counts[slot]
        counts[:n].fill(0)
        for g, row, members in groups:
            masks, shown = g.masks[slot][: len(members)], g.shown[slot][: len(members)]
            for square, out in ((self.square_mask[slot][row:], masks), (self.square_shown[slot][row:], shown)):
                k["restore"](square, g.tables["rowi"], g.tables["coli"], np.int32(g.height), np.int32(g.width),
                             np.int32(S), np.int32(g.box.top), np.int32(g.box.left), out)
            pixels = g.height * g.width
            blocks_x = max(1, min(128, -(-pixels // (256 * 32))))
            k["histogram"]((blocks_x, len(members)), (256,),
                           (shown, np.int64(pixels), np.int32(C), counts[row:]), shared_mem=4 * (C + 1))
        copies = [(counts, self.counts_host), (self.confidence[slot], self.confidence_host)]
        copies += [(self.picture[slot], self.picture_host)] if self.limits.picture_checks else []
        for device, host in copies:
            _copy_to_host(self._cp, device[:n], host[slot][:n])

    def _enqueue_overlay(self, slot: int, groups) -> None:
        for g, row, members in groups:
            self.kernels["tint"](g.frames[slot][: len(members)], g.shown[slot], self.tinted, self.colours,
                                 np.float32(self.alpha), g.overlays[slot][: len(members)])

    def _chain_for(self, batch: LaneBatch):
        """The batch's device work as one CUDA graph (lanes in `gpu.cuda_graph_lanes`): for one
        frame of a size seen before in this buffer set, captured on its second frame (the first
        compiles the kernels and lets the backend pick its algorithms), then replayed. None: run
        the stages one by one."""
        if not self.chain_graph or len(batch.live) != 1 or self.keep_logits:
            return None
        capture = getattr(self.backend, "capture", None)
        if capture is None:
            if not self.chain_graph_refused:
                log.warning("lane %s: gpu.cuda_graph_lanes names it, but the %s backend cannot be captured into a "
                            "CUDA graph (torch can); its stages run one by one", self.lane.name,
                            getattr(self.backend, "name", "?"))
                self.chain_graph_refused = True
            return None
        g = batch.groups[0][0]
        key = (batch.slot, g.height, g.width, self.limits)
        chain = self._chains.get(key)
        if chain is None and key in self._chains_warm:
            groups = [(g, 0, [None])]

            def work(forward):
                self._enqueue_prepare(batch.slot, groups)
                self._enqueue_votes(batch.slot, groups, 1, forward(self.model_input[batch.slot]))
                self._enqueue_masks(batch.slot, groups, 1)
                self._enqueue_overlay(batch.slot, groups)

            try:
                chain = self._chains[key] = capture(work, self.stream_ptr, self.memory.malloc)
            except RuntimeError as exc:  # CUDA, CuPy or torch refused the capture: stage by stage, said once
                log.warning("lane %s: its device work could not be captured as one CUDA graph (%s); its stages run "
                            "one by one", self.lane.name, exc)
                self.chain_graph, self.chain_graph_refused = False, True
                return None
            log.info("lane %s: one frame's device work captured as one CUDA graph (%dx%d, buffer set %d)",
                     self.lane.name, g.width, g.height, batch.slot)
        self._chains_warm.add(key)
        return chain

    # -- stages (all on the lane's stream, all allocations through the lane's memory)

    def infer(self, batch: LaneBatch) -> None:
        """The engine on the whole (padded) batch: one captured graph per lane, whatever the fill;
        then the class index of every model-input pixel, into the slot's square mask."""
        if batch.slot is None or batch.chained:
            return
        with self._on_lane():
            logits = self._cp.asarray(self.backend.infer(self.model_input[batch.slot], stream=self.stream_ptr))
            if self.keep_logits:  # validation only: a copy to the host per frame, in postprocess
                batch.logits = logits
            self._enqueue_votes(batch.slot, batch.groups, len(batch.live), logits)

    def postprocess(self, batch: LaneBatch) -> None:
        """Masks at frame size and class counts (the counts go back to pinned host memory)."""
        slot = batch.slot
        if slot is None:
            return
        if batch.logits is not None:
            for i, frame in enumerate(batch.live):
                frame.logits = batch.logits[i : i + 1].get(stream=self._stream)
            batch.logits = None
        if not batch.chained:
            with self._on_lane():
                self._enqueue_masks(slot, batch.groups, len(batch.live))
        self.host_copies["counts_to_host"] += 1
        for g, row, members in batch.groups:
            for j, frame in enumerate(members):
                frame.mask = g.masks[slot][j]

    def overlay(self, batch: LaneBatch) -> None:
        slot = batch.slot
        if slot is None:
            return
        with self._on_lane():
            if not batch.chained:
                self._enqueue_overlay(slot, batch.groups)
            for g, row, members in batch.groups:
                for j, frame in enumerate(members):
                    frame.overlay = g.overlays[slot][j]
            self.done_events[slot].record(self._stream)

    def finish(self, batch: LaneBatch) -> None:
        """Wait for the batch's GPU work (one event), then the clinical numbers and escalation."""
        ready = batch.slot is not None and not batch.failed
        if ready:
            self.done_events[batch.slot].synchronize()
        batch.done_ns = time.monotonic_ns()
        if ready:
            batch.gpu_ms = self._cp.cuda.get_elapsed_time(self.start_events[batch.slot], self.done_events[batch.slot])
            counts, confidence = self.counts_host[batch.slot], self.confidence_host[batch.slot]
            C = self.card.num_classes
            for i, frame in enumerate(batch.live):
                if self.limits.picture_checks and "not_assessable" not in frame.extra:
                    problem = picture_problem(PictureStats.from_sums(self.picture_host[batch.slot][i]), self.limits)
                    if problem:
                        frame.extra["not_assessable"] = problem
                skin_sum, skin_pixels = float(confidence[i, 0]), float(confidence[i, 1])
                frame.findings = self.findings_for(frame, [int(c) for c in counts[i, :C]],
                                                   skin_sum / skin_pixels if skin_pixels else None, int(counts[i, C]))
            for g, row, members in batch.groups:
                for j, frame in enumerate(members):
                    if frame.findings["assessable"] is False:  # shown as it is, never tinted
                        frame.overlay = g.frames[batch.slot][j]
        elif batch.slot is not None and self._stream is not None:
            self.done_events[batch.slot].record(self._stream)  # whatever was enqueued must end before reuse
            self.done_events[batch.slot].synchronize()
        self.batches += 1
        self.frames += len(batch.frames)

    def report(self) -> dict:
        out = super().report()
        out.update({
            "stream_priority": self.stream_priority,
            "stream_from": self.stream_origin,
            "memory": self.memory.report(),
            "engine_mb": round(self.engine_bytes / 2**20, 1),
            "pinned_host_mb": round(self.pinned_bytes / 2**20, 1),
            "buffer_sets": self.slots,
            "frame_sizes": [f"{w}x{h}" for h, w in self.geometries],
            "late_frame_sizes": self.late_geometries,
            "host_device_copies": dict(self.host_copies),
            "cuda_graph_chain": {"enabled": self.chain_graph, "graphs": len(self._chains), "replays": self.chain_replays},
        })
        return out


class _LaneContext:
    """`with`: CuPy on the lane's stream, CuPy allocations from the lane's memory."""

    def __init__(self, runtime: GpuLaneRuntime):
        self.runtime = runtime

    def __enter__(self):
        self._alloc = self.runtime._cp.cuda.using_allocator(self.runtime.memory.malloc)
        self._alloc.__enter__()
        self._stream = self.runtime._stream
        self._stream.__enter__()
        return self

    def __exit__(self, *exc):
        self._stream.__exit__(*exc)
        self._alloc.__exit__(*exc)
        return False


def _copy_to_host(cp, device, host) -> None:
    """An asynchronous copy of a contiguous device array into pinned host memory on the current
    stream, through the runtime API itself: CuPy's `get()` refuses while the stream is being
    captured into a CUDA graph, cudaMemcpyAsync is captured as a node."""
    cp.cuda.runtime.memcpyAsync(host.ctypes.data, device.data.ptr, device.nbytes,
                                cp.cuda.runtime.memcpyDeviceToHost, cp.cuda.get_current_stream().ptr)


def _external_stream(cp, ptr: int):
    """A CuPy stream object for a stream CuPy did not create (Holoscan's)."""
    import warnings

    with warnings.catch_warnings():  # CuPy 14 prefers Stream.from_external(obj with __cuda_stream__)
        warnings.simplefilter("ignore", DeprecationWarning)
        return cp.cuda.ExternalStream(ptr)


def _is_pinned(array) -> bool:
    """True when a NumPy array lives in page-locked (pinned) host memory."""
    if not isinstance(array, np.ndarray) or not array.flags.c_contiguous:
        return False
    import cupy as cp

    try:
        attrs = cp.cuda.runtime.pointerGetAttributes(array.ctypes.data)
    except cp.cuda.runtime.CUDARuntimeError:
        return False
    return int(getattr(attrs, "type", 0)) == int(getattr(cp.cuda.runtime, "memoryTypeHost", 1))
