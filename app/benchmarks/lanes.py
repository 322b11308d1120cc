"""The priority-lanes benchmark (`holoburn bench --lanes`): build the lane graph, check it, time it, write the results.

    holoburn bench --lanes --device cuda --out $OUT           # GPU lab (torch backend)
    holoburn bench --lanes --device cpu --out bench/results   # any machine (ONNX Runtime); bench/gpu_lanes.py is the same

Steps (each one reported, a failing step does not stop the others):
  checks   GPU only: the fused lane kernels against the reference functions (processing.preprocess,
           clinical.overlay) on the device, bit for bit; GPU masks against CPU (ONNX Runtime) masks
           on the same frames.
  chain    one 1920x1080 camera at 60 fps through the EMERGENCY lane, source-to-overlay latency
           from Holoscan's data-flow tracking log (every message).
  idle     the emergency camera alone through the lane graph: emergency latency, idle.
  lanes    the emergency camera beside N routine 1080p cameras paced faster than the routine
           lane can take them (its queue stays full, the oldest frames are dropped, counted):
           emergency latency with lanes, routine frames per second with batching.
  single   the same cameras, every frame in one ROUTINE lane at the default (lowest) priority.
  pressure GPU only: all free device memory taken by a hog, then `lanes` again: failures per lane.
  holoviz  GPU only: the chain step with headless Holoviz at the end of the emergency lane.
  --variants repeats chain, holoviz, idle, lanes and isolated with configuration variants in the same run (e.g.
  `,_unfused,_fused_all`: the emergency stages as four operators; every lane's stages fused).
Each lane step also reports where the time went (`*_breakdown_ms`, processing.ledger.trace_breakdown).
Latency in the lane steps: from the source's emit to the end of the overlay on the device (the
sink waits on the batch's CUDA event), per frame, after a warm-up; percentiles over one run.
Allocations after warm-up: every CuPy request through each lane's memory (LaneMemory) plus the
torch caching allocator's allocation and cudaMalloc counts, over the lanes and single steps.

The model is the shipped burn_unet_v2 when present, otherwise a BurnUNet of the same architecture
with random weights (timing does not depend on the weights; masks then mean nothing clinically).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from holoburn.app.config import load_config
from holoburn.app.graph import (
    GraphPlan,
    SourceSpec,
    buffer_slack,
    build_runtimes,
    graph_lanes,
    lane_policies,
    lanes_in_use,
    lanes_summary,
    parse_flow_log,
    run_graph,
)
from holoburn.clinical.errors import HoloburnError
from holoburn.clinical.metrics import percentiles
from holoburn.clinical.triage import Lane, LaneRouter, TriagePolicy
from holoburn.media.video import FrameListReader
from holoburn.processing.ledger import Ledger, trace_breakdown
from holoburn.engines.backend import open_backend
from holoburn.engines.card import DEFAULT_CARD, load_card

log = logging.getLogger("holoburn.bench")
LAB_NOTE = "GPU lab, torch backend - TensorRT cannot run there"


# ----------------------------------------------------------------------------- set-up


def environment(device: str) -> dict:
    facts = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
    import holoscan

    facts["holoscan"] = holoscan.__version__
    if device == "cuda":
        import cupy
        import torch

        from holoburn.processing.runtime import device_priority_range, priority_range_source

        props = cupy.cuda.runtime.getDeviceProperties(0)
        facts.update({
            "gpu": props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"]),
            "sm_count": int(props["multiProcessorCount"]),
            "compute_capability": f"{props['major']}.{props['minor']}",
            "cupy": cupy.__version__,
            "torch": torch.__version__,
            "stream_priority_range": list(device_priority_range()),
            "stream_priority_range_from": priority_range_source(),
        })
    return facts


def model_card(args, workdir: Path):
    """The shipped card (run at --input-size when asked: BurnUNet is fully convolutional), else a
    BurnUNet of the same architecture with random weights. Returns (card, description)."""
    import shutil

    import yaml

    wanted = Path(args.model) if args.model else DEFAULT_CARD
    if wanted.is_file():
        card = load_card(wanted)
        pt = card.sibling(card.raw.get("torch_state_dict") or card.onnx_path.stem + ".pt")
        if args.device != "cuda" or pt.is_file():
            size = args.input_size or card.input_size
            if size == card.input_size:
                return card, f"{card.model_id} (shipped weights, {size}x{size})"
            raw = dict(card.raw)
            raw["input"] = dict(raw["input"], size=size)
            raw.pop("sha256", None)
            for name in (raw["onnx"], raw.get("torch_state_dict") or card.onnx_path.stem + ".pt"):
                shutil.copy(card.sibling(name), workdir / name)
            path = workdir / card.path.name
            path.write_text(yaml.safe_dump(raw, sort_keys=False))
            return load_card(path), (f"{card.model_id} (shipped weights) run at {size}x{size}; its card says "
                                     f"{card.input_size}x{card.input_size}")
    from holoburn.app.training.train import WIDTHS, random_weight_card

    size = args.input_size or 256
    path = random_weight_card(workdir, size)
    return load_card(path), f"BurnUNet {WIDTHS} with RANDOM weights at {size}x{size} (shipped model absent)"


def synthetic_frames(width: int, height: int, count: int) -> list[np.ndarray]:
    """Burn scenes from holoburn's synthetic generator."""
    from holoburn.app.synthesis import synth

    frames = []
    for scene in range(count):
        frames += [f for f, _ in synth.scene_frames(7, scene, 1, (width, height))]
    return frames


def pinned_copies(frames):
    """The frames in page-locked host memory, as a capture card would deliver them."""
    import cupyx

    out = []
    for frame in frames:
        pinned = cupyx.empty_pinned(frame.shape, frame.dtype)
        pinned[...] = frame
        out.append(pinned)
    return out


# ----------------------------------------------------------------------------- helpers


def run_direct(runtime, frames, lane: Lane = Lane.EMERGENCY):
    """One batch straight through a runtime's stages (no Holoscan), for checks and warm-up."""
    from holoburn.processing.frame import Frame
    from holoburn.processing.runtime import LaneBatch

    return runtime.run_through(LaneBatch(runtime.lane, [Frame.of("check", i, 0.0, f, lane=lane.name)
                                                        for i, f in enumerate(frames)]))


def lane_latency(trips, lane: str, t0_ns: int, t1_ns: int) -> dict:
    return percentiles([(r.done_ns - r.entered_ns) / 1e6 for r in trips
                        if r.lane == lane and r.done_ns is not None and t0_ns <= r.entered_ns <= t1_ns])


def throughput(records, lane: str, t0_ns: int, t1_ns: int) -> float:
    done = [r.done_ns for r in records if r.lane == lane and r.done_ns is not None and t0_ns <= r.done_ns <= t1_ns]
    return round(len(done) / ((t1_ns - t0_ns) / 1e9), 1)


def window(summary, records, warm_s: float, measure_s: float):
    starts = [r.entered_ns for r in records]
    t0 = min(starts) + int(warm_s * 1e9)
    return t0, t0 + int(measure_s * 1e9)


def alloc_snapshot(runtimes) -> dict:
    snap = {}
    for lane, rt in runtimes.items():
        mem = getattr(rt, "memory", None)
        if mem is not None:
            snap[lane.name] = (mem.requests_after_freeze, mem.device_mallocs_after_freeze, mem.failures)
    try:
        import torch

        if torch.cuda.is_available():
            stats = torch.cuda.memory_stats()
            snap["torch"] = (stats.get("allocation.all.allocated", 0), stats.get("segment.all.allocated", 0),
                             stats.get("num_alloc_retries", 0))
    except ImportError:
        pass
    return snap


def alloc_delta(before, after) -> dict:
    out = {}
    for key in after:
        b = before.get(key, (0, 0, 0))
        a = after[key]
        if key == "torch":
            out["torch"] = {"allocations": a[0] - b[0], "cudaMalloc_segments": a[1] - b[1], "alloc_retries": a[2] - b[2]}
        else:
            out[key] = {"cupy_requests": a[0] - b[0], "device_mallocs": a[1] - b[1], "failures": a[2] - b[2]}
    return out


# ----------------------------------------------------------------------------- steps


def gpu_checks(args, card, frames, policies, workdir) -> dict:
    """Fused kernels vs reference on the device; GPU masks vs ONNX Runtime masks on the CPU."""
    import cupy as cp
    import torch

    from holoburn.clinical.overlay import tint
    from holoburn.processing.preprocess import prepare_input
    from holoburn.processing.runtime import CpuLaneRuntime, GpuLaneRuntime, masks_of

    out = {}
    policy = policies[Lane.EMERGENCY]
    h, w = frames[0].shape[:2]
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32 for this comparison
    try:
        gpu_backend = open_backend(card, "torch", "fp32", device="cuda")
        runtime = GpuLaneRuntime(policy, card=card, backend=gpu_backend, frame_sizes=((h, w),), slots=2)
        cpu = CpuLaneRuntime(policy, card=card, backend=open_backend(card, "onnxruntime", "fp32", device="cpu"),
                             render=False)
        runtime.bind(None, "cupy stream (checks)")
        same_input = same_mask = same_overlay = 0
        max_input_diff = 0.0
        agreement = []
        for frame in frames[:3]:
            batch = run_direct(runtime, [frame])
            got_mask = cp.asnumpy(batch.live[0].mask)
            got_overlay = cp.asnumpy(batch.live[0].overlay)
            got_input = cp.asnumpy(runtime.model_input[batch.slot if batch.slot is not None else 0][0])
            runtime.release(batch)
            ref_input, box = prepare_input(cp.asarray(frame), card.input_size, card.mean, card.std)
            diff = float(np.abs(cp.asnumpy(ref_input[0]) - got_input).max())
            max_input_diff = max(max_input_diff, diff)
            same_input += diff == 0.0
            cp.cuda.Device().synchronize()
            logits = cp.asarray(gpu_backend.infer(ref_input))
            cp.cuda.Device().synchronize()  # the backend ran on its own stream
            ref_mask, ref_shown, _ = masks_of(cp.asnumpy(logits)[0], box, runtime.limits)
            same_mask += bool((ref_mask == got_mask).all())
            ref_overlay = cp.asnumpy(tint(cp.asarray(frame), cp.asarray(ref_shown), runtime.alpha))
            same_overlay += bool((ref_overlay == got_overlay).all())
            cpu_batch = run_direct(cpu, [frame])
            agreement.append(float((cpu_batch.live[0].mask == got_mask).mean()))
            cpu.release(cpu_batch)
        runtime.unbind()
        out = {
            "frames": 3,
            "fused_vs_reference_model_input_identical": same_input,
            "fused_vs_reference_max_abs_diff": max_input_diff,
            "fused_vs_reference_masks_identical": same_mask,
            "fused_vs_reference_overlays_identical": same_overlay,
            "gpu_torch_fp32_vs_cpu_onnxruntime_mask_agreement": [round(a, 6) for a in agreement],
            "note": "one resampling on both sides: bilinear with half-pixel centres (OpenCV's fixed-point "
                    "weights on the CPU, float on the GPU) and the same nearest gather for masks; agreement < 1 "
                    "comes from that and from conv arithmetic",
        }
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    return out


def camera(source_id: str, image, lane: Lane, fps: float, seconds: float) -> SourceSpec:
    """A camera stand-in: one picture (pinned host memory on a GPU, as a capture card's DMA
    buffers) delivered `fps` times a second for `seconds`."""
    count = max(1, int(fps * seconds))
    return SourceSpec(source_id, reader=FrameListReader([image] * count, fps, source_id), lane=lane, fps=fps,
                      max_frames=count)


def sources_for(args, frames_gpu, emergency_fps, routine, routine_fps, seconds, emergency=True) -> list[SourceSpec]:
    sources = [camera("camera:emergency", frames_gpu[0], Lane.EMERGENCY, emergency_fps, seconds)] if emergency else []
    for i in range(routine):
        image = (frames_gpu[1 + i % (len(frames_gpu) - 1):][:1] or frames_gpu[:1])[0]
        sources.append(camera(f"camera:routine{i}", image, Lane.ROUTINE, routine_fps, seconds))
    return sources


def main(argv=None):
    p = argparse.ArgumentParser(prog="holoburn bench --lanes", description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), required=True)
    p.add_argument("--out", default="bench/results")
    p.add_argument("--name", default=None, help="results file name (default gpu_lanes_<device>.json)")
    p.add_argument("--model", default=None, help="model card (default: shipped burn_unet_v2, else random weights)")
    p.add_argument("--input-size", type=int, default=None, help="random model's input side (default 512 GPU, 256 CPU)")
    p.add_argument("--frame", default=None, help="WxH of the cameras (default 1920x1080 GPU, 640x360 CPU)")
    p.add_argument("--precision", default="fp16")
    p.add_argument("--seconds", type=float, default=None, help="measured seconds per step (after warm-up)")
    p.add_argument("--warm", type=float, default=None, help="warm-up seconds per step")
    p.add_argument("--routine-streams", type=int, default=None)
    p.add_argument("--routine-fps", type=float, default=None)
    p.add_argument("--emergency-fps", type=float, default=None)
    p.add_argument("--chain-fps", type=float, default=None, help="the chain step's camera (default 60 GPU, 4 CPU)")
    p.add_argument("--steps", default="checks,chain,idle,lanes,single,pressure,holoviz")
    p.add_argument("--variants", default="", help="comma list of config variants for chain/idle/lanes, side by "
                   "side in one run: '' (configs/holoburn.yaml as it is), _unfused, _fused, _fused_all, _fused_gil01, "
                   "_nofreeze, _green, _noassess, _noregions, _graph, _stages, _graph_green")
    p.add_argument("--lanes-config", default=None)
    p.add_argument("--routine-processes", default="2x60low",
                   help="isolated step: comma list of routine process sets, each WORKERSxSM_PERCENT (the workers' "
                        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE under MPS), 'low' after it for below-normal MPS client "
                        "priority; one isolated step per set, side by side (default 2x60low: measured best, README)")
    p.add_argument("--role", choices=("all", "routine-worker"), default="all", help=argparse.SUPPRESS)
    p.add_argument("--ready-file", default=None, help=argparse.SUPPRESS)
    p.add_argument("--go-file", default=None, help=argparse.SUPPRESS)
    p.add_argument("--routine-batch", type=int, default=None,
                   help="ROUTINE batch size (default: the lanes section of configs/holoburn.yaml on the GPU, 2 on the CPU, where batching "
                        "buys no throughput and a long routine batch is what an urgent frame waits behind)")
    args = p.parse_args(argv)
    gpu = args.device == "cuda"
    args.input_size = args.input_size or (512 if gpu else None)  # the 512 on the GPU; the card's own on the CPU
    args.chain_fps = args.chain_fps or (60.0 if gpu else 4.0)
    args.frame = args.frame or ("1920x1080" if gpu else "640x360")
    seconds = args.seconds or (8.0 if gpu else 15.0)
    warm = args.warm if args.warm is not None else (2.0 if gpu else 4.0)
    routine = args.routine_streams if args.routine_streams is not None else (8 if gpu else 3)
    routine_fps = args.routine_fps or (120.0 if gpu else 6.0)
    emergency_fps = args.emergency_fps or (30.0 if gpu else 1.5)
    steps = set(args.steps.split(","))
    from holoburn.app.benchmarks.isolation import process_sets

    try:
        routine_sets = process_sets(args.routine_processes)
    except ValueError as exc:
        p.error(str(exc))
    worker = args.role == "routine-worker"  # one of the isolated step's routine processes
    if worker:
        steps = {"lanes"}
    width, height = (int(v) for v in args.frame.lower().split("x"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_name = args.name or f"gpu_lanes_{args.device}.json"
    workdir = Path(tempfile.mkdtemp(prefix="holoburn_bench_"))
    command = "python3 bench/gpu_lanes.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    result = {"command": command, "device": None, "backend": None, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    errors = {}
    started = time.monotonic()

    def step(name, fn):
        if name not in steps:
            return None
        t = time.monotonic()
        print(f"== {name}", flush=True)
        try:
            value = fn()
            print(f"== {name} done in {time.monotonic() - t:.1f} s", flush=True)
            result[name] = value
            # what is measured so far, in case a later step takes the process down
            (out_dir / results_name).write_text(json.dumps(result, indent=2, default=str) + "\n")
            return value
        except (HoloburnError, RuntimeError, MemoryError) as exc:  # a failing backend, CUDA or memory:
            # report it and go on with the other steps (a defect in holoburn stops the benchmark)
            errors[name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
            return None

    env = environment(args.device)
    result["environment"] = env
    result["device"] = env.get("gpu", "cpu") + (f" ({LAB_NOTE})" if gpu else f" ({env['cpus']} CPU cores)")
    card, model_note = model_card(args, workdir)
    result["model"] = model_note
    result["input_size"] = card.input_size
    result["frame"] = f"{width}x{height}"
    frames = synthetic_frames(width, height, 4)
    feed_frames = pinned_copies(frames) if gpu else frames
    cfg = load_config(args.lanes_config)
    if gpu:  # the GPU lanes' settings (configs/bedside-x86.yaml)
        cfg["scheduler"]["worker_threads"] = max(8, cfg["scheduler"]["worker_threads"])
        cfg["scheduler"]["gil_switch_interval_ms"] = cfg["scheduler"]["gil_switch_interval_ms"] or 0.5
    routine_batch = args.routine_batch or (None if gpu else 2)
    if routine_batch:
        cfg["lanes"]["ROUTINE"]["batch_size"] = routine_batch
    policies = lane_policies(cfg)
    triage_cfg = {"escalate": False, "calm_frames": 30}  # lanes fixed while timing; escalation is tested in tests/
    result["lanes_config"] = {l.name: vars(p) | {"lane": l.name} for l, p in policies.items()}
    result["scheduler"] = cfg.get("scheduler")

    if gpu:
        result["backend"] = f"torch {args.precision} CUDA graphs ({LAB_NOTE})"
        result["checks"] = step("checks", lambda: gpu_checks(args, card, frames, policies, workdir))
    if gpu and not worker:
        from holoburn.processing.isolation import mps_state

        result["mps"] = mps_state()
    if gpu:
        def open_for(lane):
            return open_backend(card, "torch", args.precision, device="cuda")
    else:
        result["backend"] = "onnxruntime fp32 CPU"

        def open_for(lane, _shared={}):
            if "b" not in _shared:
                _shared["b"] = open_backend(card, "onnxruntime", "fp32", device="cpu", threads=os.cpu_count())
            return _shared["b"]

    import copy

    variants = {"": {}, "_unfused": {"gpu": {"fuse_stages": []}},
                "_fused": {"gpu": {"fuse_stages": ["EMERGENCY"]}},
                "_fused_all": {"gpu": {"fuse_stages": ["EMERGENCY", "ROUTINE"]}},
                "_fused_gil01": {"gpu": {"fuse_stages": ["EMERGENCY"]}, "scheduler": {"gil_switch_interval_ms": 0.1}},
                "_nofreeze": {"scheduler": {"gc": "default"}},
                "_green": {"gpu": {"fuse_stages": ["EMERGENCY"], "emergency_green_context_sms": 16}},
                # the emergency lane's device work for a frame as one CUDA graph replay
                "_graph": {"gpu": {"fuse_stages": ["EMERGENCY"], "cuda_graph_lanes": ["EMERGENCY"]}},
                # the emergency lane's device work stage by stage (the default before it was one graph)
                "_stages": {"gpu": {"fuse_stages": ["EMERGENCY"], "cuda_graph_lanes": []}},
                "_graph_green": {"gpu": {"fuse_stages": ["EMERGENCY"], "cuda_graph_lanes": ["EMERGENCY"],
                                         "emergency_green_context_sms": 16}},
                # what the assessability checks cost: the picture checks and the out-of-domain kernel off
                "_noassess": {"assess": {"picture_checks": False}},
                # what the small-region kernels cost: no region is too small, only unsure pixels are marked
                "_noregions": {"assess": {"min_region_px": 0}}}

    for v in args.variants.split(","):
        if v not in variants:
            raise SystemExit(f"unknown variant {v!r}; known: {', '.join(repr(k) for k in variants)}")
    graphed = set().union(graph_lanes(cfg), *(graph_lanes(variants[v]) for v in args.variants.split(",")))
    # one set of runtimes for every step: buffers and CUDA graphs made once, at start-up
    all_sources = sources_for(args, feed_frames, emergency_fps, routine, routine_fps, seconds, emergency=not worker)
    router = LaneRouter({s.source_id: s.lane for s in all_sources}, escalate=triage_cfg["escalate"],
                        calm_frames=triage_cfg["calm_frames"])
    used = lanes_in_use(all_sources, router)
    t = time.monotonic()
    runtimes, priorities = build_runtimes(used, policies, device=args.device, card=card, open_backend_for=open_for,
                                          triage=TriagePolicy(), sources=all_sources,
                                          frame_sizes=((height, width),),
                                          # the chain step runs the emergency lane straight through
                                          extra_slots={lane: buffer_slack("chain" if lane == Lane.EMERGENCY else "lanes",
                                                                          args.device) for lane in used}, render=True,
                                          cuda_graph_lanes=graphed)  # GPU: warmed up, every variant's graphs captured
    result["start_up_s"] = round(time.monotonic() - t, 2)
    result["stream_priorities"] = {l.name: p for l, p in priorities.items()}
    for lane, rt in runtimes.items():
        if not gpu:  # the CPU lanes: the first batches through each, then count what is allocated
            for _ in range(2):
                rt.release(run_direct(rt, frames[: rt.policy.batch_size], lane))
            rt.freeze()

    def config_for(variant):
        out = copy.deepcopy(cfg)
        for section, values in variants[variant].items():
            out[section].update(values)
        return out

    def plan(sources, mode, variant="", **kw):
        config = config_for(variant)
        assess = config.get("assess") or {}
        for rt in runtimes.values():
            rt.limits = dataclasses.replace(rt.limits, picture_checks=assess.get("picture_checks", True),
                                            min_region_px=assess.get("min_region_px", rt.limits.min_region_px))
        config["holoviz_size"] = (height, width)
        return GraphPlan(sources=sources, policies=policies, runtimes=runtimes, router=router, results=Ledger(),
                         device=args.device, mode=mode, config=config, priorities=priorities, **kw)

    def run(graph_plan):
        """Run one step's graph; its ledger's trips and a summary of the run."""
        changes_before = len(router.changes)
        summary = lanes_summary(run_graph(graph_plan))
        summary["lane_changes"] = summary["lane_changes"][changes_before:]
        return graph_plan.results.trips, summary

    def chain_step(holoviz=False, variant=""):
        n = int(args.chain_fps * (seconds + warm))
        src = [camera("camera:emergency", feed_frames[0], Lane.EMERGENCY, args.chain_fps, seconds + warm)]
        log_path = workdir / f"flow{variant}{'_holoviz' if holoviz else ''}.log"
        records, summary = run(plan(src, "chain", variant, holoviz=holoviz, track_log=log_path, skip_tracked=0))
        skip_ns = min(r.entered_ns for r in records) + int(warm * 1e9)
        breakdown = trace_breakdown([r for r in records if r.entered_ns >= skip_ns])
        paths = parse_flow_log(log_path)
        skip = int(args.chain_fps * warm)
        out = {"fps": args.chain_fps, "frames": n, "warm_up_frames_left_out": skip, "paths": {}}
        for name, values in paths.items():
            if len(values) > skip:
                out["paths"][name] = percentiles(values[skip:])
        out["breakdown_ms"] = breakdown
        out["summary"] = summary
        return out

    def lanes_step(mode, sources, label, variant="", measure_s=None):
        before = alloc_snapshot(runtimes)
        records, summary = run(plan(sources, mode, variant))
        after = alloc_snapshot(runtimes)
        t0, t1 = window(summary, records, warm, measure_s or seconds)
        out = {
            "emergency_latency_ms": lane_latency(records, "EMERGENCY", t0, t1),
            "routine_latency_ms": lane_latency(records, "ROUTINE", t0, t1),
            "routine_fps": throughput(records, "ROUTINE", t0, t1),
            # every emergency frame the camera gave, processed or not (dropped by reason)
            "emergency_frames": {"offered": sum(v["emitted"] for k, v in summary["sources"].items() if v["lane"] == "EMERGENCY"),
                                 **{k: v for k, v in (summary["by_frame_lane"].get("EMERGENCY") or {}).items()
                                    if k in ("processed", "dropped")}},
            "emergency_fps": throughput(records, "EMERGENCY", t0, t1),
            "allocations": alloc_delta(before, after),
            "emergency_breakdown_ms": trace_breakdown([r for r in records if r.lane == "EMERGENCY" and t0 <= r.entered_ns <= t1]),
            "routine_breakdown_ms": trace_breakdown([r for r in records if r.lane == "ROUTINE" and t0 <= r.entered_ns <= t1]),
            "summary": summary,
        }
        print(f"   {label}: emergency {out['emergency_latency_ms']}  routine fps {out['routine_fps']}", flush=True)
        return out

    total = seconds + warm

    def loaded():  # new cameras for each step: a source's reader is spent by the run that plays it
        return sources_for(args, feed_frames, emergency_fps, routine, routine_fps, total, emergency=not worker)

    if worker:  # warm: say so, wait for the start signal, play the routine cameras, write, end
        from holoburn.app.benchmarks.isolation import wait_for_go

        wait_for_go(args.ready_file, args.go_file)
        result["lanes"] = lanes_step("lanes", loaded(), "routine worker")
        result["runtimes"] = {l.name: rt.report() for l, rt in runtimes.items()}
        result["allocations_after_warmup"] = allocation_count(result["lanes"].get("allocations") or {})
        (out_dir / results_name).write_text(json.dumps(result, indent=2, default=str) + "\n")
        return 0

    def isolated_step(processes, name, variant):
        """The emergency camera alone in this process, the routine cameras in worker processes
        (holoburn.app.benchmarks.isolation) placed as `processes` says, all cameras playing at once."""
        from holoburn.app.benchmarks.isolation import RoutineWorkers

        base = ["--device", args.device, "--frame", args.frame, "--input-size", str(card.input_size), "--precision",
                args.precision, "--routine-fps", str(routine_fps), "--seconds", str(seconds + 3),
                "--warm", str(2 * warm), "--steps", "lanes"]  # 3 s more: the emergency graph's start-up
        base += ["--model", args.model] if args.model else []
        base += ["--routine-batch", str(args.routine_batch)] if args.routine_batch else []
        base += ["--lanes-config", args.lanes_config] if args.lanes_config else []
        with RoutineWorkers(base, processes=processes, streams=routine,
                            workdir=out_dir / f"{Path(results_name).stem}_workers_{name.replace('@', '_')}") as workers:
            workers.wait_ready(timeout=240)
            workers.go()
            time.sleep(warm)  # the routine lanes fill up; their cameras play for 2 warm-ups + seconds
            out = lanes_step("lanes", sources_for(args, feed_frames, emergency_fps, 0, 0, total), name, variant)
            reports = workers.results(timeout=120)
        out["routine_fps"] = round(sum(r["lanes"]["routine_fps"] for r in reports), 1)
        out["routine_latency_ms_per_worker"] = [r["lanes"]["routine_latency_ms"] for r in reports]
        out["routine_accounting_per_worker"] = [r["lanes"]["summary"]["by_frame_lane"] for r in reports]
        out["worker_allocations_after_warmup"] = [r.get("allocations_after_warmup") for r in reports]
        out["workers"] = workers.describe()
        out["mps"] = workers.mps
        out["processes"], out["variant"] = processes.label, variant
        print(f"   {name}: routine fps over {len(reports)} workers {out['routine_fps']}", flush=True)
        return out

    for v in args.variants.split(","):
        steps |= {f"{base}{v}" for base in ("chain", "idle", "lanes") + (("holoviz",) if gpu else ()) if base in steps}
        result[f"chain{v}"] = step(f"chain{v}", lambda: chain_step(variant=v))
        result[f"holoviz{v}"] = step(f"holoviz{v}", lambda: chain_step(holoviz=True, variant=v))
        result[f"idle{v}"] = step(f"idle{v}", lambda: lanes_step(
            "lanes", sources_for(args, feed_frames, emergency_fps, 0, 0, total), f"idle{v}", v))
        result[f"lanes{v}"] = step(f"lanes{v}", lambda: lanes_step("lanes", loaded(), f"lanes{v}", v))
        for processes in routine_sets:  # one set: isolated<variant>; several: isolated<variant>@<set>
            name = f"isolated{v}" + (f"@{processes.label}" if len(routine_sets) > 1 else "")
            steps |= {name} if "isolated" in steps else set()
            result[name] = step(name, lambda: isolated_step(processes, name, v))
    result["single"] = step("single", lambda: lanes_step("single_lane", loaded(), "single lane"))

    def peer_step():
        """What an engineer would write without holoburn (app/benchmarks/peer.py): the same frames,
        cameras, schedule and percentiles, in a process of its own (`holoburn bench --peer`), so
        that neither side's threads, GIL or CUDA state touch the other's."""
        import subprocess

        peer_out = out_dir / f"{Path(results_name).stem}_peer.json"
        peer_log = peer_out.with_suffix(".log")
        cmd = [sys.executable, "-m", "holoburn.app", "bench", "--peer", "--device", args.device, "--frame", args.frame,
               "--seconds", str(seconds), "--warm", str(warm), "--routine-streams", str(routine), "--routine-fps",
               str(routine_fps), "--emergency-fps", str(emergency_fps), "--out", str(out_dir), "--name", peer_out.name]
        cmd += ["--input-size", str(args.input_size)] if args.input_size else []
        cmd += ["--model", args.model] if args.model else []
        cmd += ["--precision", args.precision] if gpu else []
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        peer_log.write_text(done.stdout + done.stderr)
        if done.returncode != 0 or not peer_out.is_file():
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-8:])
            raise RuntimeError(f"the peer exited {done.returncode} without results ({peer_log}):\n{tail}")
        out = json.loads(peer_out.read_text())
        print(f"   peer: emergency {out['emergency_latency_ms']}  routine fps {out['routine_fps']}", flush=True)
        return out

    result["peer"] = step("peer", peer_step)
    if gpu:
        result["pressure"] = step("pressure", lambda: pressure_step(lanes_step, args, feed_frames, emergency_fps,
                                                                      routine, routine_fps, min(total, 6.0), warm))
    result["runtimes"] = {l.name: rt.report() for l, rt in runtimes.items()}
    result["errors"] = errors
    result["wall_s"] = round(time.monotonic() - started, 1)
    headline(result, gpu)
    (out_dir / results_name).write_text(json.dumps(result, indent=2, default=str) + "\n")
    table(result)
    print(f"written {out_dir / results_name}")
    return 0 if not errors else 1


def pressure_step(lanes_step, args, feed_frames, emergency_fps, routine, routine_fps, seconds, warm=2.0):
    """Take every free byte of device memory, then run the lanes: who fails?"""
    import cupy as cp

    headroom = 256 << 20  # left for the CUDA runtime itself (streams and events of a new application)
    hog, taken = [], 0
    chunk = 1 << 30
    while chunk >= (1 << 20):
        free, _ = cp.cuda.runtime.memGetInfo()
        if free - chunk < headroom:
            chunk //= 2
            continue
        try:
            hog.append(cp.cuda.Memory(chunk))
            taken += chunk
        except (cp.cuda.memory.OutOfMemoryError, cp.cuda.runtime.CUDARuntimeError):
            chunk //= 2
    free, total = cp.cuda.runtime.memGetInfo()
    try:
        out = lanes_step("lanes", sources_for(args, feed_frames, emergency_fps, routine, routine_fps, seconds), "pressure",
                         measure_s=max(1.0, seconds - warm))
    finally:
        del hog
    out["hog_gib"] = round(taken / 2**30, 2)
    out["device_free_mib_during"] = round(free / 2**20, 1)
    return out


def allocation_count(delta: dict) -> int:
    """Every device allocation in an alloc_delta(): CuPy requests and mallocs per lane, torch's."""
    return sum(v.get("cupy_requests", 0) + v.get("device_mallocs", 0) + v.get("allocations", 0)
               + v.get("cudaMalloc_segments", 0) for v in delta.values())


def headline(result, gpu) -> None:
    """The issue's fields, from the steps above."""
    def get(path, default=None):
        node = result
        for key in path:
            if not isinstance(node, dict) or node.get(key) is None:
                return default
            node = node[key]
        return node

    chain_paths = get(("chain", "paths"), {}) or {}
    e2e = next((v for k, v in chain_paths.items() if k.endswith("_results")), None)
    result["e2e_p50_ms"] = e2e and e2e["p50"]
    result["e2e_p99_ms"] = e2e and e2e["p99"]
    result["e2e_ms_by_step"] = {}  # source-to-overlay (chain*) and source-to-Holoviz (holoviz*), each variant
    for name in [k for k in result if k.startswith(("chain", "holoviz")) and isinstance(result[k], dict)]:
        end = ",holoviz," if name.startswith("holoviz") else "_results"  # through Holoviz to its render count
        path = next((v for k, v in (result[name].get("paths") or {}).items() if end in k + ","), None)
        if path:
            result["e2e_ms_by_step"][name] = {"p50": path["p50"], "p99": path["p99"]}
    result["emergency_p50_ms_idle"] = get(("idle", "emergency_latency_ms", "p50"))
    result["emergency_p99_ms_idle"] = get(("idle", "emergency_latency_ms", "p99"))
    result["emergency_p50_ms_lanes"] = get(("lanes", "emergency_latency_ms", "p50"))
    result["emergency_p99_ms_lanes"] = get(("lanes", "emergency_latency_ms", "p99"))
    result["emergency_p50_ms_single_lane"] = get(("single", "emergency_latency_ms", "p50"))
    result["emergency_p99_ms_single_lane"] = get(("single", "emergency_latency_ms", "p99"))
    result["routine_fps"] = get(("lanes", "routine_fps"))
    for name in [k for k in result if k.startswith("isolated") and isinstance(result[k], dict)]:
        p99 = get((name, "emergency_latency_ms", "p99"))
        idle = get(("idle" + result[name]["variant"], "emergency_latency_ms", "p99"))  # same variant
        result[f"emergency_p99_ms_{name}"] = p99
        result[f"emergency_p99_{name}_over_idle"] = round(p99 / idle, 2) if p99 and idle else None
        result[f"routine_fps_{name}"] = get((name, "routine_fps"))
    result["routine_fps_single_lane"] = get(("single", "routine_fps"))
    lanes_p99, idle_p99, single_p99 = (result["emergency_p99_ms_lanes"], result["emergency_p99_ms_idle"],
                                       result["emergency_p99_ms_single_lane"])
    result["emergency_p99_lanes_over_idle"] = round(lanes_p99 / idle_p99, 2) if lanes_p99 and idle_p99 else None
    result["emergency_p99_single_over_lanes"] = round(single_p99 / lanes_p99, 2) if lanes_p99 and single_p99 else None
    peer_p99, peer_fps = get(("peer", "emergency_latency_ms", "p99")), get(("peer", "routine_fps"))
    if peer_p99:  # > 1: holoburn ahead (lower emergency p99; more routine frames per second)
        versus = {}
        for name in [k for k in result if k.startswith(("lanes", "isolated")) and isinstance(result[k], dict)]:
            p99, fps = get((name, "emergency_latency_ms", "p99")), get((name, "routine_fps"))
            if p99:
                versus[name] = {"emergency_p99_ms": p99, "peer_emergency_p99_ms": peer_p99,
                                "peer_p99_over_holoburn_p99": round(peer_p99 / p99, 2),
                                "routine_fps": fps, "peer_routine_fps": peer_fps,
                                "holoburn_fps_over_peer_fps": round(fps / peer_fps, 2) if peer_fps and fps else None}
        result["versus_peer"] = versus
    allocations = {}
    total = 0
    for stepname in ("lanes", "single"):
        delta = get((stepname, "allocations"), {}) or {}
        allocations[stepname] = delta
        total += allocation_count(delta)
    result["allocations_after_warmup"] = total if gpu else None
    result["allocations_after_warmup_detail"] = allocations
    result["memory_per_lane"] = {l: {k: r.get(k) for k in ("memory", "engine_mb", "pinned_host_mb", "stream_priority", "buffer_sets")}
                                 for l, r in (result.get("runtimes") or {}).items()}
    if gpu:
        result["goals"] = {
            "e2e_p99_le_10ms": result["e2e_p99_ms"] is not None and result["e2e_p99_ms"] <= 10.0,
            "emergency_p99_lanes_le_1_5x_idle": result["emergency_p99_lanes_over_idle"] is not None and result["emergency_p99_lanes_over_idle"] <= 1.5,
            "emergency_p99_5x_lower_than_single_lane": result["emergency_p99_single_over_lanes"] is not None and result["emergency_p99_single_over_lanes"] >= 5.0,
            "routine_fps_ge_480": (result["routine_fps"] or 0) >= 480,
            "allocations_after_warmup_zero": total == 0,
        }


def table(result) -> None:
    rows = [
        ("device", result.get("device")),
        ("backend", result.get("backend")),
        ("model", result.get("model")),
        ("source->overlay p50 / p99 ms (tracker)", f"{result.get('e2e_p50_ms')} / {result.get('e2e_p99_ms')}"),
        *[(f"{k}: source->end p50 / p99 ms", f"{v['p50']} / {v['p99']}") for k, v in (result.get("e2e_ms_by_step") or {}).items()],
        ("emergency idle p50 / p99 ms", f"{result.get('emergency_p50_ms_idle')} / {result.get('emergency_p99_ms_idle')}"),
        ("emergency loaded, lanes p50 / p99 ms", f"{result.get('emergency_p50_ms_lanes')} / {result.get('emergency_p99_ms_lanes')}"),
        ("emergency loaded, one lane p50 / p99 ms", f"{result.get('emergency_p50_ms_single_lane')} / {result.get('emergency_p99_ms_single_lane')}"),
        ("p99 lanes/idle, single/lanes", f"{result.get('emergency_p99_lanes_over_idle')}, {result.get('emergency_p99_single_over_lanes')}"),
        ("routine fps (lanes / one lane)", f"{result.get('routine_fps')} / {result.get('routine_fps_single_lane')}"),
        *[(f"{k[len('emergency_p99_ms_'):]}: emergency p99 ms, x idle, routine fps",
           f"{result[k]}, {result.get('emergency_p99_' + k[len('emergency_p99_ms_'):] + '_over_idle')}, "
           f"{result.get('routine_fps_' + k[len('emergency_p99_ms_'):])}")
          for k in result if k.startswith("emergency_p99_ms_isolated")],
        ("allocations after warm-up", result.get("allocations_after_warmup")),
        ("errors", ", ".join(result.get("errors") or {}) or "none"),
    ]
    width = max(len(r[0]) for r in rows)
    print("\n" + "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows))


if __name__ == "__main__":
    sys.exit(main())
