"""`holoburn bench --cpu`: the whole CPU pipeline against a plain ONNX Runtime loop, side by side.

Both read the same decoded frames from memory and use the same backend session, so the ratio
is the pipeline's own cost (Holoscan scheduling, postprocess, overlay, video encoding, results),
not decoding. Runs alternate (plain, pipeline, plain, ...) so drift on a shared machine hits both.
"""
from __future__ import annotations

import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from holoburn.engines.backend import open_backend
from holoburn.engines.card import load_card
from holoburn.processing.preprocess import prepare_input
from holoburn.media.video import FrameListReader, VideoReader
from holoburn.app.config import load_config


def add_bench_arguments(p):
    import argparse

    p.add_argument("--cpu", action="store_true", help="CPU pipeline vs plain ONNX Runtime loop on the same frames")
    p.add_argument("--lanes", nargs=argparse.REMAINDER, metavar="LANES-ARGS",
                   help="priority lanes benchmark (GPU lab: --lanes --device cuda; CPU: --lanes --device cpu); "
                        "the rest of the line goes to it (--lanes --help)")
    p.add_argument("--source", help="video:PATH (default: the bundled sample)")
    p.add_argument("--frames", type=int, default=60, help="frames per run (default 60)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each (default 3)")
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"))
    p.add_argument("--model", help="model card YAML")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    p.add_argument("--json", metavar="FILE", help="write the full numbers here")
    p.add_argument("--peer", action="store_true",
                   help="with --cpu: also a plain sequential loop doing every stage the pipeline does "
                        "(preprocess, inference, postprocess, overlay, writing video and results)")
    from holoburn.app.benchmarks.soak import add_soak_arguments

    add_soak_arguments(p)


def decode(location: str, limit: int) -> tuple[list, float]:
    with VideoReader(location) as reader:
        frames = []
        for frame, _ in reader:
            frames.append(frame)
            if len(frames) >= limit:
                break
        return frames, reader.fps or 30.0


def plain_loop(frames, backend, card) -> tuple[float, float]:
    """Frames per second of preprocess + inference alone, and CPU milliseconds per frame."""
    started, cpu = time.perf_counter(), time.process_time()
    for frame in frames:
        batch, _ = prepare_input(frame, card.input_size, card.mean, card.std)
        backend.infer(batch)
    return len(frames) / (time.perf_counter() - started), (time.process_time() - cpu) * 1e3 / len(frames)


def peer_loop(frames, fps, backend, card, config, out_dir: Path) -> tuple[float, float]:
    """What an engineer writes without holoburn's graph: one loop, one frame at a time, the same
    stages with the same functions (picture checks, preprocess, inference, postprocess with
    assessability and triage, overlay, then the mp4 and the results line), nothing overlapped.
    Frames per second and CPU milliseconds per frame."""
    import cv2

    from holoburn.app.graph import assess_limits, lane_policies
    from holoburn.clinical.triage import Lane
    from holoburn.processing.frame import Frame
    from holoburn.processing.records import result_record
    from holoburn.processing.runtime import CpuLaneRuntime, LaneBatch

    runtime = CpuLaneRuntime(lane_policies(config)[Lane.ROUTINE], card=card, backend=backend,
                             alpha=config["overlay"]["alpha"], limits=assess_limits(config, card))
    out_dir.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    video = cv2.VideoWriter(str(out_dir / "peer.mp4"), cv2.VideoWriter_fourcc(*config["video_sink"]["fourcc"]), fps,
                            (width, height))
    started, cpu = time.perf_counter(), time.process_time()
    with open(out_dir / "peer.jsonl", "w") as results:
        for index, image in enumerate(frames):
            entered = time.monotonic_ns()
            batch = runtime.run_through(LaneBatch(runtime.lane, [Frame.of("peer", index, index / fps, image)]))
            frame = batch.frames[0]
            video.write(cv2.cvtColor(frame.overlay, cv2.COLOR_RGB2BGR))
            results.write(json.dumps(result_record(frame, (time.monotonic_ns() - entered) / 1e6, backend.describe())) + "\n")
            runtime.release(batch)
    video.release()
    return len(frames) / (time.perf_counter() - started), (time.process_time() - cpu) * 1e3 / len(frames)


def pipeline_run(frames, fps, backend, card, config, out_dir: Path) -> dict:
    """Frames per second of the whole Holoscan graph (app.graph, the graph every command runs),
    first frame in to last result written."""
    from holoburn.app.graph import GraphPlan, SourceSpec, assess_limits, buffer_slack, build_runtimes, lane_policies, run_graph
    from holoburn.clinical.triage import Lane, LaneRouter
    from holoburn.processing.recorder import RunRecorder, SourceOutput

    source = SourceSpec("bench", reader=FrameListReader(frames, fps, "bench"), lane=Lane.ROUTINE)
    policies = lane_policies(config)
    runtimes, _ = build_runtimes([Lane.ROUTINE], policies, device="cpu", card=card, sources=[source],
                                 alpha=config["overlay"]["alpha"], open_backend_for=lambda lane: backend,
                                 extra_slots=buffer_slack("chain", "cpu"), limits=assess_limits(config, card))
    recorder = RunRecorder(out_dir, [SourceOutput("bench", fps)], fourcc=config["video_sink"]["fourcc"],
                           backend=backend.describe(), picture_threads=False)  # as replay does for one CPU source
    plan = GraphPlan(sources=[source], runtimes=runtimes, policies=policies, router=LaneRouter({"bench": Lane.ROUTINE}),
                     results=recorder, config=config)
    cpu = time.process_time()
    try:
        run_graph(plan)
    finally:
        recorder.close()
    cpu_ms = (time.process_time() - cpu) * 1e3 / len(frames)
    summary = recorder.ledger.summary()
    if summary["processed"] != len(frames):
        raise RuntimeError(f"the pipeline processed {summary['processed']} of {len(frames)} frames: {summary['dropped']}")
    ledger = recorder.ledger
    return {"fps": len(frames) / ((ledger.last_done - ledger.first_entered) / 1e9), "cpu_ms_per_frame": cpu_ms,
            "wall_s": summary["wall_s"], "latency_ms": summary["latency_ms"], "stage_ms_median": summary["stage_ms_median"]}


def run_bench(args) -> int:
    from holoburn.app.run.command import sample_video

    if args.lanes is not None:
        from holoburn.app.benchmarks.lanes import main as lanes_main

        return lanes_main(args.lanes)
    if args.soak:
        from holoburn.app.benchmarks.soak import run_soak

        return run_soak(args)
    if not args.cpu:
        print("holoburn bench: choose --cpu (pipeline vs plain loop), --soak (memory over minutes) "
              "or --lanes --device cuda|cpu", file=sys.stderr)
        return 2
    location = args.source.partition(":")[2] if args.source else str(sample_video())
    frames, fps = decode(location, args.frames)
    card = load_card(args.model)
    config = load_config(None, {"source.location": f"video:{location}", "inference.backend": args.backend, "inference.precision": args.precision,
                                "inference.threads": args.threads})
    backend = open_backend(card, args.backend, args.precision, "cpu", threads=args.threads)
    plain_loop(frames[:5], backend, card)  # warm-up: session allocations, caches
    plain, piped, runs, plain_cpu, peer, peer_cpu = [], [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="holoburn-bench-") as tmp:
        for r in range(args.repeats):
            fps_plain, cpu_plain = plain_loop(frames, backend, card)
            plain.append(fps_plain)
            plain_cpu.append(cpu_plain)
            if args.peer:
                fps_peer, cpu_peer = peer_loop(frames, fps, backend, card, config, Path(tmp) / f"peer{r}")
                peer.append(fps_peer)
                peer_cpu.append(cpu_peer)
                print(f"run {r + 1}/{args.repeats}: peer loop {fps_peer:.2f} fps ({cpu_peer:.1f} CPU ms/frame)",
                      file=sys.stderr)
            run = pipeline_run(frames, fps, backend, card, config, Path(tmp) / f"run{r}")
            piped.append(run["fps"])
            runs.append(run)
            print(f"run {r + 1}/{args.repeats}: plain loop {plain[-1]:.2f} fps ({cpu_plain:.1f} CPU ms/frame), "
                  f"pipeline {piped[-1]:.2f} fps ({run['cpu_ms_per_frame']:.1f} CPU ms/frame)", file=sys.stderr)
    ratios = [p / q for p, q in zip(plain, piped)]
    cpu_ratios = [r["cpu_ms_per_frame"] / c for r, c in zip(runs, plain_cpu)]
    result = {
        "command": "holoburn " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith(("holoburn", "cli.py", "__main__.py")) else "holoburn bench --cpu",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": __import__("os").cpu_count(),
        **backend.describe(),
        "model_id": card.model_id,
        "frames": len(frames),
        "frame_size": [frames[0].shape[1], frames[0].shape[0]],
        "model_input": card.input_size,
        "repeats": args.repeats,
        "plain_fps": [round(v, 3) for v in plain],
        "pipeline_fps": [round(v, 3) for v in piped],
        "plain_fps_median": round(statistics.median(plain), 3),
        "pipeline_fps_median": round(statistics.median(piped), 3),
        "overhead_pct_median": round((statistics.median(ratios) - 1) * 100, 2),
        "overhead_pct_range": [round((min(ratios) - 1) * 100, 2), round((max(ratios) - 1) * 100, 2)],
        # CPU time (all threads of this process) per frame: less disturbed than wall time by other
        # work on a shared machine, and it counts what the pipeline adds even where it overlaps
        "plain_cpu_ms_per_frame": [round(v, 2) for v in plain_cpu],
        "pipeline_cpu_ms_per_frame": [round(r["cpu_ms_per_frame"], 2) for r in runs],
        "cpu_overhead_pct_median": round((statistics.median(cpu_ratios) - 1) * 100, 2),
        "cpu_overhead_pct_range": [round((min(cpu_ratios) - 1) * 100, 2), round((max(cpu_ratios) - 1) * 100, 2)],
        "peer": {
            "what": "one sequential loop, the same stages and functions as the pipeline (picture checks, "
                    "preprocess, inference, postprocess with assessability and triage, overlay, mp4 and results "
                    "line), nothing overlapped; alternated with the other two in each run",
            "fps": [round(v, 3) for v in peer],
            "fps_median": round(statistics.median(peer), 3),
            "cpu_ms_per_frame": [round(v, 2) for v in peer_cpu],
            "pipeline_vs_peer_pct_median": round((statistics.median(q / p for p, q in zip(peer, piped)) - 1) * 100, 2),
        } if peer else None,
        "pipeline_stage_ms_median": runs[-1]["stage_ms_median"],
        "pipeline_latency_ms": runs[-1]["latency_ms"],
    }
    print(f"\n  frames {len(frames)} at {result['frame_size'][0]}x{result['frame_size'][1]}, model input {card.input_size}, "
          f"{result['backend']} {result['backend_version']} ({result['precision']}), {result['cpus']} CPUs")
    print(f"  plain loop  median {result['plain_fps_median']:.2f} fps  (runs {result['plain_fps']})")
    print(f"  pipeline    median {result['pipeline_fps_median']:.2f} fps  (runs {result['pipeline_fps']})")
    print(f"  overhead    median {result['overhead_pct_median']:.1f}%  (range {result['overhead_pct_range'][0]:.1f} .. {result['overhead_pct_range'][1]:.1f}%; goal <= 15%)")
    print(f"  CPU time    plain {statistics.median(plain_cpu):.1f} ms/frame, pipeline "
          f"{statistics.median(r['cpu_ms_per_frame'] for r in runs):.1f} ms/frame: overhead median "
          f"{result['cpu_overhead_pct_median']:.1f}% (range {result['cpu_overhead_pct_range'][0]:.1f} .. {result['cpu_overhead_pct_range'][1]:.1f}%)")
    if peer:
        print(f"  peer loop   median {result['peer']['fps_median']:.2f} fps  (runs {result['peer']['fps']}): the pipeline "
              f"is {result['peer']['pipeline_vs_peer_pct_median']:+.1f}% against it (goal: >= 0)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"  written to {args.json}")
    return 0
