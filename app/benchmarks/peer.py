"""The GPU peer of issue 15 (`holoburn bench --peer --device cuda`): what an engineer writes without holoburn.

    holoburn bench --peer --device cuda --out $OUT          # GPU lab: 1080p cameras, model at 512, fp16
    holoburn bench --peer --device cpu --frame 320x180      # any machine: the same code path, eager

One Python thread per camera. Each thread owns a CUDA stream (the emergency camera's at the highest
priority the device offers, the routine cameras' at the lowest), static device buffers, a CUDA event,
and one CUDA graph of its whole chain, captured once at start-up:

    pinned host frame --upload, non_blocking (outside the graph)--> frame (H, W, 3) uint8
      -> letterbox: bilinear resize (half-pixel centres, rounded to grey levels as processing.preprocess
         does) into the middle of an S x S square (S = card.input_size), normalised with card.mean/std
      -> BurnUNet (engines/unet.py + the card's state dict) in fp16 -> argmax
      -> mask restored to the frame (nearest, processing.preprocess.nearest_indices) -> class counts
      -> tint overlay (clinical.overlay.tint's formula, clinical.depth's colours)
    --> counts to pinned host memory; the thread waits on its own event.

Schedule (the same as `holoburn bench --lanes`, app/benchmarks/lanes.py): one emergency camera at
`emergency_fps` and `routine_streams` routine cameras at `routine_fps`, each showing one of the same
pictures every frame. A camera paces itself by a monotonic clock: frame i is due at t0 + i / fps; a
thread that falls behind takes the newest frame due and counts the ones it skipped as dropped (a
capture queue of depth 1). Every camera offers int(fps * (warm + seconds)) frames.

Latency (ms): from the frame's delivery to the thread seeing its CUDA event complete (after the
overlay and the counts' copy). Delivery is the frame's due time when the thread was late for it (it
waited in the capture queue), else the moment the thread woke up for it (as holoburn's source emits
when its timer fires); `emergency_latency_from_due_ms` counts from the due time itself. Percentiles
(clinical.metrics.percentiles) over frames delivered in the measured window [t0 + warm, t0 + warm +
seconds]; routine fps = routine frames finished in that window / seconds.

On the CPU (device="cpu") the same chain runs eagerly: no streams, graphs or pinned memory
(tests/test_peer_bench.py proves the code path there). torch is imported only when a peer runs.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shlex
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from holoburn.clinical.depth import CLASS_COLOURS_RGB, TINTED
from holoburn.clinical.metrics import percentiles
from holoburn.engines.torch_backend import first_convolution, load_burn_unet
from holoburn.processing.preprocess import letterbox_geometry, nearest_indices

GIL_SWITCH_INTERVAL_S = 0.0005  # the value holoburn's GPU lanes run with (lanes bench: gil_switch_interval_ms 0.5)
ROUTINE_NICE = 5  # routine camera threads yield host cores to the emergency thread
EMERGENCY_NICE = -5  # needs root (CAP_SYS_NICE); left as it is where refused


# ----------------------------------------------------------------------------- one camera's chain


class CameraChain:
    """One camera's static buffers and its chain (module docstring), on `device`.

    frame (H, W, 3) uint8; model_input (1, 3, S, S) in the first convolution's dtype (channels_last
    when asked), padding 0 (the mean colour after normalisation); mask (H, W) uint8 class indices;
    overlay (H, W, 3) uint8; counts (C,) int64 pixels per class, counts_host their host copy (pinned
    on CUDA). On CUDA `capture()` records the chain as one CUDA graph on `stream`; `run()` then
    replays it on the calling thread's current stream, which must be `stream`.
    """

    def __init__(self, model, card, height: int, width: int, *, device: str = "cuda", channels_last: bool = False,
                 alpha: float = 0.45, stream=None):
        import torch

        self.torch, self.model, self.stream = torch, model, stream
        dev = torch.device(device)
        self.cuda = dev.type == "cuda"
        self.box = letterbox_geometry(height, width, card.input_size)
        size, classes = card.input_size, card.num_classes
        self.frame = torch.zeros((height, width, 3), dtype=torch.uint8, device=dev)
        self.model_input = torch.zeros((1, 3, size, size), dtype=first_convolution(model).weight.dtype, device=dev)
        if channels_last:
            self.model_input = self.model_input.contiguous(memory_format=torch.channels_last)
        self.mask = torch.zeros((height, width), dtype=torch.uint8, device=dev)
        self.overlay = torch.zeros((height, width, 3), dtype=torch.uint8, device=dev)
        self.counts = torch.zeros(classes, dtype=torch.int64, device=dev)
        self.counts_host = torch.zeros(classes, dtype=torch.int64, pin_memory=self.cuda)
        self.mean = torch.tensor(card.mean, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
        self.inv_std = 1.0 / torch.tensor(card.std, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
        box = self.box
        self.rows = torch.from_numpy(nearest_indices(np, box.height, height).astype(np.int64)).to(dev)
        self.cols = torch.from_numpy(nearest_indices(np, box.width, width).astype(np.int64)).to(dev)
        self.class_ids = torch.arange(classes, dtype=torch.uint8, device=dev).view(classes, 1)
        colours = np.zeros((classes, 3), np.float32)
        colours[: min(classes, len(CLASS_COLOURS_RGB))] = CLASS_COLOURS_RGB[:classes]
        weights = np.zeros(classes, np.float32)
        weights[: min(classes, len(TINTED))] = TINTED[:classes].astype(np.float32) * np.float32(alpha)
        self.colours = torch.from_numpy(colours).to(dev)
        self.weights = torch.from_numpy(weights).to(dev)
        self.graph = None
        self.done = torch.cuda.Event() if self.cuda else None

    def chain(self) -> None:
        """frame -> model_input -> mask, counts, overlay (every result in the static buffers)."""
        torch, box = self.torch, self.box
        height, width = self.mask.shape
        top, left, bottom, right = box.top, box.left, box.top + box.height, box.left + box.width
        x = self.frame.permute(2, 0, 1).unsqueeze(0).float()  # NCHW view of HWC: channels_last strides, no copy
        scaled = torch.nn.functional.interpolate(x, size=(box.height, box.width), mode="bilinear", align_corners=False)
        grey = torch.floor(scaled + 0.5)  # processing.preprocess resizes to uint8 before normalising
        self.model_input[:, :, top:bottom, left:right].copy_((grey - self.mean) * self.inv_std)
        logits = self.model(self.model_input)
        square = logits[0, :, top:bottom, left:right].argmax(0)  # (h, w) int64
        classes = square.index_select(0, self.rows).index_select(1, self.cols)  # (H, W) int64, nearest
        self.mask.copy_(classes)
        # torch.bincount reads max() back to the host (a sync, and no CUDA graph can hold it): one-hot sum
        self.counts.copy_((self.mask.view(1, -1) == self.class_ids).sum(1))
        flat = classes.view(-1)
        weight = self.weights.index_select(0, flat).view(height, width, 1)  # alpha where the class is tinted
        colour = self.colours.index_select(0, flat).view(height, width, 3)
        blended = self.frame * (1.0 - weight) + colour * weight  # clinical.overlay.tint, float32
        self.overlay.copy_(blended.add_(0.5).clamp_(0, 255))  # float -> uint8 truncates, as astype does

    def capture(self, warm_iterations: int = 3) -> None:
        """Warm up on the camera's stream (cuDNN picks its algorithms), then record the chain as one
        CUDA graph there. thread_local: other threads may launch work meanwhile."""
        torch = self.torch
        with torch.cuda.stream(self.stream), torch.inference_mode():
            for _ in range(warm_iterations):
                self.chain()
        self.stream.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self.graph, stream=self.stream, capture_error_mode="thread_local"):
            self.chain()
        self.stream.synchronize()

    def run(self, host_frame) -> None:
        """One frame through: host_frame (H, W, 3) uint8 torch tensor (pinned on CUDA). Returns when
        the overlay and the counts are done (counts_host holds the counts)."""
        self.frame.copy_(host_frame, non_blocking=self.cuda)
        if self.graph is not None:
            self.graph.replay()
        else:
            self.chain()
        self.counts_host.copy_(self.counts, non_blocking=self.cuda)
        if self.cuda:
            self.done.record(self.stream)
            self.done.synchronize()  # spins without the GIL; lowest wake-up latency


# ----------------------------------------------------------------------------- cameras and their threads


@dataclass
class Camera:
    name: str
    lane: str  # "EMERGENCY" or "ROUTINE"
    fps: float
    picture: object  # (H, W, 3) uint8 torch tensor on the host
    chain: CameraChain
    offered: int = 0
    dropped: int = 0
    done: list = field(default_factory=list)  # (index, due_ns, delivered_ns, done_ns) per processed frame
    nice: int | None = None  # the thread's niceness where it was set


def priority_streams(torch, device):
    """(emergency stream, routine stream factory, priorities, keep-alive): the device's highest and
    lowest priorities. torch's own stream pools stop at priority -3 (c10's
    max_compile_time_stream_priorities); where the device offers more, CuPy makes the stream and
    torch wraps it."""
    from holoburn.processing.runtime import device_priority_range

    least, greatest = device_priority_range(torch.device(device).index or 0)
    keep = []
    emergency = torch.cuda.Stream(device=device, priority=greatest)  # mapped to torch's nearest where beyond it
    if emergency.priority != greatest:
        try:
            import cupy
        except ImportError:  # torch's highest it is (recorded beside the device's range)
            cupy = None
        if cupy is not None:
            with cupy.cuda.Device(torch.device(device).index or 0):
                raw = cupy.cuda.Stream(non_blocking=True, priority=greatest)
            keep.append(raw)
            emergency = torch.cuda.ExternalStream(raw.ptr, device=device)

    def routine():
        return torch.cuda.Stream(device=device, priority=least)

    return emergency, routine, {"device_range": [least, greatest]}, keep


def _set_nice(value: int) -> int | None:
    """This thread's niceness (Linux: per thread); None where refused."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), value)
        return value
    except (OSError, AttributeError):
        return None


def _camera_loop(camera: Camera, t0_ns: int, total_frames: int, stop: threading.Event, errors: list, nice: int) -> None:
    torch = camera.chain.torch
    try:
        camera.nice = _set_nice(nice)
        if camera.chain.cuda:
            torch.cuda.set_stream(camera.chain.stream)  # the thread's current stream: upload, replay, copies
        camera.offered = total_frames
        period_ns = 1e9 / camera.fps
        run, picture, record, clock = camera.chain.run, camera.picture, camera.done.append, time.monotonic_ns
        index = 0
        with torch.inference_mode():
            while index < total_frames and not stop.is_set():
                due = t0_ns + int(index * period_ns)
                now = clock()
                if now < due:  # early: wait for the frame; it is delivered when the thread wakes
                    time.sleep((due - now) / 1e9)
                    delivered = clock()
                else:  # late: the newest frame due replaces those waiting (queue of depth 1)
                    newest = min(total_frames - 1, int((now - t0_ns) / period_ns))
                    if newest > index:
                        camera.dropped += newest - index
                        index = newest
                        due = t0_ns + int(index * period_ns)
                    delivered = due
                run(picture)
                record((index, due, delivered, clock()))
                index += 1
        camera.dropped += total_frames - index  # only where stopped early
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which raises it
        errors.append(exc)
        stop.set()


# ----------------------------------------------------------------------------- the run


def run_peer(frames, card, *, emergency_fps, routine_streams, routine_fps, seconds, warm, precision="fp16",
             routine_batch=None, device="cuda", alpha: float = 0.45) -> dict:
    """Run the peer for warm + seconds: one emergency camera showing frames[0] and `routine_streams`
    routine cameras showing frames[1 + i % (len(frames) - 1)] (as the lanes bench's cameras do).

    frames: (H, W, 3) uint8 RGB NumPy arrays, all one size (on CUDA in page-locked memory; others
    are pinned here). card: a holoburn ModelCard of a BurnUNet with its torch state dict.
    routine_batch: the lanes' routine batch, recorded only: the peer runs each camera at batch 1.
    Returns latencies (ms), frame counts, routine fps and `tuning` (module docstring)."""
    import torch

    cuda = torch.device(device).type == "cuda"
    height, width = frames[0].shape[:2]
    if any(f.shape != (height, width, 3) or f.dtype != np.uint8 for f in frames):
        raise ValueError("the peer's frames must all be (H, W, 3) uint8 of one size")
    started = time.monotonic()
    tuning = [
        "one thread per camera, batch 1; each thread paces itself by the monotonic clock"
        + ("; it waits on its own CUDA event (cudaEventSynchronize spins without the GIL: no wake-up delay)" if cuda else ""),
        "the model as holoburn's torch backend loads it (engines.torch_backend.load_burn_unet): BatchNorm folded into "
        f"the convolutions, {precision} weights with the card's sensitive layers "
        f"({', '.join(card.sensitive_layers) or 'none'}) in float32; the first layer's input written in its dtype, "
        "logits read by argmax uncast",
        "letterbox, normalisation, argmax, nearest restore, class counts and the tint overlay in torch on the device, "
        "into static buffers; class counts by a one-hot sum (torch.bincount syncs with the host and breaks graph capture)",
    ]
    saved = {"switch": sys.getswitchinterval(), "benchmark": torch.backends.cudnn.benchmark}
    keep_alive = []
    result = {"what": "GPU peer (issue 15): one Python thread per camera, plain PyTorch, CUDA graphs, priority streams"
                      if cuda else "peer on the CPU: one Python thread per camera, plain PyTorch, eager",
              "device": device, "precision": precision, "frame": f"{width}x{height}", "model_input": card.input_size,
              "model": card.model_id, "routine_batch": 1,
              "routine_batch_lanes": routine_batch}
    try:
        if cuda:
            torch.backends.cudnn.benchmark = True
            tuning.append("torch.backends.cudnn.benchmark on during warm-up: cuDNN times its algorithms per shape, the "
                          "graphs keep the fastest")
            emergency_stream, routine_stream, priorities, keep = priority_streams(torch, device)
            keep_alive += keep
            layout, layout_ms = pick_layout(card, device, precision, height, width, alpha, emergency_stream)
            result["layout_graph_ms"] = layout_ms
            tuning.append(f"memory layout timed at start-up, whole graph replayed on an idle GPU: {layout_ms} ms per "
                          f"frame; {layout} kept")
            channels_last = layout == "channels_last"
        else:
            channels_last = False
        model = load_burn_unet(card, device, precision, channels_last=channels_last)
        pictures = []
        for frame in frames:
            host = torch.from_numpy(np.ascontiguousarray(frame))
            pictures.append(host.pin_memory() if cuda and not host.is_pinned() else host)
        cameras = []
        for i in range(1 + routine_streams):
            emergency = i == 0
            picture = pictures[0] if emergency or len(pictures) == 1 else pictures[1 + (i - 1) % (len(pictures) - 1)]
            stream = (emergency_stream if emergency else routine_stream()) if cuda else None
            chain = CameraChain(model, card, height, width, device=device, channels_last=channels_last, alpha=alpha,
                                stream=stream)
            if cuda:
                chain.capture()
            cameras.append(Camera("camera:emergency" if emergency else f"camera:routine{i - 1}",
                                  "EMERGENCY" if emergency else "ROUTINE",
                                  float(emergency_fps if emergency else routine_fps), picture, chain))
        if cuda:
            tuning.append("each camera's whole chain after the upload (preprocess .. overlay, counts) is one CUDA graph, "
                          "captured at start-up camera after camera (capture_error_mode='thread_local': other threads "
                          "of the process may still launch work); its own stream, static buffers and event: no "
                          "allocation and one launch per frame")
            result["stream_priorities"] = {**priorities, "EMERGENCY": cameras[0].chain.stream.priority,
                                           "ROUTINE": cameras[1].chain.stream.priority if routine_streams else None}
            tuning.append(f"emergency stream at priority {result['stream_priorities']['EMERGENCY']}, routine at "
                          f"{result['stream_priorities']['ROUTINE']} (device range {priorities['device_range']})")
            tuning.append("frames uploaded from page-locked host memory with non_blocking copies on the camera's stream")
            for cam in cameras:  # one frame each before the clock starts: first replays out of the way
                with torch.cuda.stream(cam.chain.stream), torch.inference_mode():
                    cam.chain.run(cam.picture)
            torch.cuda.synchronize()
        result["start_up_s"] = round(time.monotonic() - started, 2)

        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        tuning.append(f"sys.setswitchinterval({GIL_SWITCH_INTERVAL_S}) (holoburn's GPU lanes' value; Python's default "
                      "is 0.005): a thread waiting for the GIL gets it sooner")
        tuning.append(f"routine threads at niceness {ROUTINE_NICE}, the emergency thread at {EMERGENCY_NICE} where allowed")
        tuning.append("gc.freeze() after start-up: the collector does not walk the start-up objects during the run")
        gc.collect()
        gc.freeze()
        before = _torch_allocations(torch) if cuda else None
        stop, errors = threading.Event(), []
        total_s = warm + seconds
        t0 = time.monotonic_ns() + 20_000_000  # every thread started before the first frame is due
        threads = [threading.Thread(target=_camera_loop, name=cam.name, daemon=True,
                                    args=(cam, t0, max(1, int(cam.fps * total_s)), stop, errors,
                                          EMERGENCY_NICE if cam.lane == "EMERGENCY" else ROUTINE_NICE))
                   for cam in cameras]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        if cuda:
            torch.cuda.synchronize()
            after = _torch_allocations(torch)
            result["allocations_after_warmup"] = {k: after[k] - before[k] for k in after}
    finally:
        gc.unfreeze()
        sys.setswitchinterval(saved["switch"])
        torch.backends.cudnn.benchmark = saved["benchmark"]
    result.update(summarise(cameras, t0, warm, seconds))
    result["tuning"] = tuning
    result["wall_s"] = round(time.monotonic() - started, 2)
    if cuda:
        _tear_down(torch, cameras, keep_alive)
    return result


def _tear_down(torch, cameras, keep_alive) -> None:
    """Graphs, events and buffers before the CuPy-made stream they were captured on. In the GPU lab
    the process aborted (c10 cudaErrorContextIsDestroyed) as run_peer returned, with the caller's
    line on top of the stack: objects were being freed then, in no set order. Never run since."""
    torch.cuda.synchronize()
    for camera in cameras:
        camera.chain.graph = None
    cameras.clear()
    gc.collect()
    torch.cuda.synchronize()
    keep_alive.clear()


def pick_layout(card, device, precision, height, width, alpha, stream) -> tuple[str, dict]:
    """Time the whole captured chain in both memory layouts on an idle GPU; the faster one wins."""
    import torch

    timings = {}
    for layout in ("channels_first", "channels_last"):
        model = load_burn_unet(card, device, precision, channels_last=layout == "channels_last")
        chain = CameraChain(model, card, height, width, device=device, channels_last=layout == "channels_last",
                            alpha=alpha, stream=stream)
        chain.capture()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.cuda.stream(stream):
            for _ in range(10):
                chain.graph.replay()
            start.record(stream)
            for _ in range(50):
                chain.graph.replay()
            end.record(stream)
        end.synchronize()
        timings[layout] = round(start.elapsed_time(end) / 50, 4)
        del chain, model
    return min(timings, key=timings.get), timings


def _torch_allocations(torch) -> dict:
    stats = torch.cuda.memory_stats()
    return {"allocations": stats.get("allocation.all.allocated", 0),
            "cudaMalloc_segments": stats.get("segment.all.allocated", 0),
            "alloc_retries": stats.get("num_alloc_retries", 0)}


def summarise(cameras, t0_ns: int, warm: float, seconds: float) -> dict:
    """Latency percentiles, frame counts and routine fps of a finished run (module docstring)."""
    w0, w1 = t0_ns + int(warm * 1e9), t0_ns + int((warm + seconds) * 1e9)
    emergency, routine = cameras[0], cameras[1:]

    def latencies(cams, start=2):
        return [(r[3] - r[start]) / 1e6 for c in cams for r in c.done if w0 <= r[2] <= w1]

    period_ns = 1e9 / emergency.fps
    due_in_window = [i for i in range(emergency.offered) if w0 <= t0_ns + int(i * period_ns) <= w1]
    processed_in_window = sum(1 for r in emergency.done if w0 <= r[1] <= w1)
    routine_done = sum(1 for c in routine for r in c.done if w0 <= r[3] <= w1)
    return {
        "seconds": seconds, "warm": warm, "window_s": [warm, warm + seconds],
        "emergency_fps": emergency.fps,
        "emergency_latency_ms": percentiles(latencies([emergency])),
        "emergency_latency_from_due_ms": percentiles(latencies([emergency], start=1)),
        "emergency_frames": {"offered": emergency.offered, "processed": len(emergency.done), "lost": emergency.dropped},
        "emergency_frames_window": {"offered": len(due_in_window), "processed": processed_in_window,
                                    "lost": len(due_in_window) - processed_in_window},
        "routine_streams": len(routine),
        "routine_fps_offered": routine[0].fps if routine else 0.0,
        "routine_fps": round(routine_done / seconds, 1) if seconds > 0 else None,
        "routine_latency_ms": percentiles(latencies(routine)),
        "routine_frames": {"offered": sum(c.offered for c in routine), "processed": sum(len(c.done) for c in routine),
                           "dropped": sum(c.dropped for c in routine)},
        "per_camera": [{"camera": c.name, "lane": c.lane, "fps": c.fps, "offered": c.offered,
                        "processed": len(c.done), "dropped": c.dropped, "nice": c.nice} for c in cameras],
    }


# ----------------------------------------------------------------------------- command line


def environment(device: str) -> dict:
    import torch

    facts = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
             "torch": torch.__version__}
    if torch.device(device).type == "cuda":
        from holoburn.processing.runtime import device_priority_range

        props = torch.cuda.get_device_properties(torch.device(device))
        facts.update({"gpu": props.name, "sm_count": props.multi_processor_count,
                      "compute_capability": f"{props.major}.{props.minor}", "torch_cuda": torch.version.cuda,
                      "stream_priority_range": list(device_priority_range(torch.device(device).index or 0))})
    return facts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="holoburn bench --peer", description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), required=True)
    p.add_argument("--out", default="bench/results")
    p.add_argument("--name", default=None, help="results file name (default gpu_peer_<device>.json)")
    p.add_argument("--model", default=None, help="model card (default: shipped burn_unet_v2, else random weights)")
    p.add_argument("--input-size", type=int, default=None, help="model input side (default 512 GPU, the card's on the CPU)")
    p.add_argument("--frame", default=None, help="WxH of the cameras (default 1920x1080 GPU, 640x360 CPU)")
    p.add_argument("--precision", default=None, choices=("fp16", "fp32"),
                   help="default fp16 on the GPU, fp32 on the CPU (where torch has no fast fp16 convolutions)")
    p.add_argument("--seconds", type=float, default=None, help="measured seconds (after warm-up)")
    p.add_argument("--warm", type=float, default=None, help="warm-up seconds")
    p.add_argument("--routine-streams", type=int, default=None)
    p.add_argument("--routine-fps", type=float, default=None)
    p.add_argument("--emergency-fps", type=float, default=None)
    args = p.parse_args(argv)
    from holoburn.app.benchmarks.lanes import model_card, pinned_copies, synthetic_frames

    gpu = args.device == "cuda"  # the lanes bench's defaults, so that the two runs compare
    args.input_size = args.input_size or (512 if gpu else None)
    precision = args.precision or ("fp16" if gpu else "fp32")
    width, height = (int(v) for v in (args.frame or ("1920x1080" if gpu else "640x360")).lower().split("x"))
    seconds = args.seconds or (8.0 if gpu else 15.0)
    warm = args.warm if args.warm is not None else (2.0 if gpu else 4.0)
    routine = args.routine_streams if args.routine_streams is not None else (8 if gpu else 3)
    routine_fps = args.routine_fps or (120.0 if gpu else 6.0)
    emergency_fps = args.emergency_fps or (30.0 if gpu else 1.5)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    card, model_note = model_card(args, Path(tempfile.mkdtemp(prefix="holoburn_peer_")))
    frames = synthetic_frames(width, height, 4)
    result = {"command": "holoburn bench --peer " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
              "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "environment": environment(args.device), "model_note": model_note}
    result.update(run_peer(pinned_copies(frames) if gpu else frames, card, emergency_fps=emergency_fps,
                           routine_streams=routine, routine_fps=routine_fps, seconds=seconds, warm=warm,
                           precision=precision, device=args.device))
    name = args.name or f"gpu_peer_{args.device}.json"
    (out_dir / name).write_text(json.dumps(result, indent=2, default=str) + "\n")
    e, r = result["emergency_latency_ms"], result["routine_frames"]
    print(f"device            {result['environment'].get('gpu', 'cpu')} (torch {result['environment']['torch']})\n"
          f"model             {model_note}\n"
          f"emergency p50/p99 {e['p50']} / {e['p99']} ms  (from due: p99 {result['emergency_latency_from_due_ms']['p99']} ms)\n"
          f"emergency frames  {result['emergency_frames']}\n"
          f"routine fps       {result['routine_fps']} ({routine} cameras at {routine_fps} fps; "
          f"{r['dropped']} of {r['offered']} dropped)\n"
          f"allocations       {result.get('allocations_after_warmup')}\n"
          f"written {out_dir / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
