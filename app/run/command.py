"""`holoburn run` and `holoburn demo`: replay a video through the pipeline."""
from __future__ import annotations

import argparse
import os
from importlib import resources
from pathlib import Path

from holoburn.app.config import load_config
from holoburn.app.run.progress import Progress

SAMPLE = "burn_sample"


def sample_video() -> Path:
    """The bundled sample: a synthetic burn video with its ground-truth masks beside it."""
    return Path(str(resources.files("holoburn.media").joinpath("samples", SAMPLE, "frames.mp4")))


def _common(p: argparse.ArgumentParser, out_default: str | None) -> None:
    p.add_argument("--out", default=out_default, required=out_default is None, help="output directory")
    p.add_argument("--config", help="YAML file merged over the defaults (or a bundled preset name)")
    p.add_argument("--backend", help="auto | onnxruntime | torch | tensorrt | tensorrt-rtx")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"))
    p.add_argument("--model", help="model card YAML (default: the shipped burn_unet_v1)")
    p.add_argument("--max-frames", type=int, help="stop after N frames")
    p.add_argument("--save-masks", metavar="DIR", help="also write each predicted mask as an 8-bit PNG")
    p.add_argument("--record-gxf", metavar="DIR/BASENAME", help="also record the input frames as a Holoscan recording")
    p.add_argument("--body-region", help="named body region in view (rule of nines), for %%TBSA")
    p.add_argument("--lane", help="lane of this source: EMERGENCY | URGENT | ROUTINE | BATCH_SCREENING")
    p.add_argument("--realtime", action="store_true", default=None, help="pace frames as a camera would")
    d = p.add_argument_group("distributed (Holoscan fragments capture, analysis, display over UCX)")
    d.add_argument("--distributed", action="store_true", help="compose the graph as three fragments")
    d.add_argument("--driver", action="store_true", help="this process runs the Holoscan driver")
    d.add_argument("--worker", action="store_true", help="this process runs fragments")
    d.add_argument("--address", help="driver address HOST:PORT")
    d.add_argument("--worker-address", help="this worker's address HOST:PORT")
    d.add_argument("--fragments", help="fragments for this worker: capture,analysis,display or all")


def add_run_arguments(p):
    p.add_argument("--source", required=True, action="append",
                   help="video:PATH | camera:/dev/videoN | gxf:DIR/BASENAME | dicom:PATH (file, folder or DICOMDIR); "
                        "repeat for several sources, each optionally with its lane: video:a.mp4@EMERGENCY")
    _common(p, None)


def add_demo_arguments(p):
    _common(p, "holoburn-demo")


def _config(args, location: str) -> dict:
    return load_config(args.config, {
        "source.location": location,
        "source.max_frames": args.max_frames,
        "source.body_region": args.body_region,
        "source.lane": args.lane,
        "source.realtime": args.realtime,
        "inference.backend": args.backend,
        "inference.precision": args.precision,
        "inference.model": args.model,
        "results.save_masks": args.save_masks,
        "results.record_gxf": args.record_gxf,
    })


def holoscan_argv(args) -> list[str] | None:
    """Holoscan's own distributed flags, or None for a single-process run."""
    if not any(getattr(args, k, None) for k in ("distributed", "driver", "worker", "address", "fragments")):
        return None
    argv = ["holoburn"]
    argv += ["--driver"] if args.driver else []
    argv += ["--worker"] if args.worker else []
    for flag, value in (("--address", args.address), ("--worker-address", args.worker_address),
                        ("--fragments", args.fragments)):
        argv += [flag, value] if value else []
    return argv


def replay_distributed(config: dict, out_dir: Path, argv: list[str]) -> dict | None:
    """Run this process's share of the fragments; the process with `display` writes the summary."""
    from holoburn.app.pipeline import DistributedBurnPipeline, RunPlan, run_pipeline

    # Frames cross between fragments as serialized Python objects, which Holoscan puts in UCX's
    # serialization buffer (127 KiB by default): make room for a 1080p frame and its mask.
    os.environ.setdefault("HOLOSCAN_UCX_SERIALIZATION_BUFFER_SIZE", str(32 << 20))
    plan = RunPlan(config, Path(out_dir), progress=Progress("frames", config["source"]["max_frames"]))
    print(f"holoburn: distributed run, this process: {' '.join(argv[1:]) or 'all fragments'}")
    return run_pipeline(plan, DistributedBurnPipeline(plan, argv))


def replay(config: dict, out_dir: Path, *, observers=(), keep_logits=False, label="frames") -> dict:
    """Plan and run the graph with a progress bar; the one way every command replays a source."""
    from holoburn.app.pipeline import plan_run, run_pipeline

    metrics = None
    if config["metrics"]["enabled"]:
        from holoburn.app.run.metrics_endpoint import PipelineMetrics

        metrics = PipelineMetrics()
        metrics.start(config["metrics"]["host"], config["metrics"]["port"])
        observers = (*observers, metrics.observer)
    plan = plan_run(config, out_dir, observers=observers, keep_logits=keep_logits)
    if metrics:
        metrics.describe(model_id=plan.card.model_id, **plan.backend.describe())
    total = plan.reader.frame_count if plan.reader is not None else recorded_total(config)
    total = total or None
    if config["source"]["max_frames"]:
        total = min(total or config["source"]["max_frames"], config["source"]["max_frames"])
    plan.progress = Progress(label, total)
    print(f"holoburn: {plan.source_id} -> {out_dir} | model {plan.card.model_id} | "
          f"backend {plan.backend.name} ({plan.backend.precision}, {plan.backend.device})")
    try:
        return run_pipeline(plan)
    finally:
        if metrics:
            metrics.stop()


def recorded_total(config: dict) -> int | None:
    from holoburn.operators.gxf_io import recorded_frames
    from holoburn.app.run.sources import gxf_recording, parse_source

    kind, location = parse_source(config["source"]["location"])
    return recorded_frames(*gxf_recording(location)) if kind == "gxf" else None


def print_summary(summary: dict, out_dir: Path, overlays=None) -> None:
    lat = summary["latency_ms"]
    dropped = ", ".join(f"{k}: {v}" for k, v in summary["dropped"].items()) or "none"
    rows = [
        ("frames in", summary["frames_in"]),
        ("processed", summary["processed"]),
        ("dropped", dropped),
        ("backend", f"{summary.get('backend')} {summary.get('backend_version', '')} ({summary.get('precision')}, {summary.get('device')})"),
        ("model", summary["model_id"]),
        ("throughput", f"{summary['fps']} frames/s over {summary['wall_s']} s"),
        ("latency p50/p95/p99", f"{lat['p50']} / {lat['p95']} / {lat['p99']} ms"),
        ("triage levels", ", ".join(f"{k}: {v}" for k, v in sorted(summary["triage_levels"].items())) or "none"),
        ("results", out_dir / "results.jsonl"),
        ("overlay video", ", ".join(str(out_dir / o) for o in overlays) if overlays else out_dir / "overlay.mp4"),
        ("summary", out_dir / "summary.json"),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    print("\n  decision support only: the model is a synthetic-data demonstration, not for clinical use")


def _replay_and_report(args, location: str) -> int:
    out_dir = Path(args.out)
    argv = holoscan_argv(args)
    if argv:
        summary = replay_distributed(_config(args, location), out_dir, argv)
        if summary is None:  # a worker without the display fragment has no summary to show
            print("holoburn: this process's fragments finished")
            return 0
    else:
        summary = replay(_config(args, location), out_dir)
    print_summary(summary, out_dir)
    return 0


def run_run(args) -> int:
    from holoburn.engines.backend import cuda_available

    on_gpu = cuda_available() and (args.backend or "auto") in ("auto", "torch", "tensorrt")
    if len(args.source) == 1 and (not on_gpu or holoscan_argv(args)):
        from holoburn.app.run.multi_source import parse_lane_spec

        location, lane = parse_lane_spec(args.source[0], args.lane or "ROUTINE")
        args.lane = lane.name if location != args.source[0] else args.lane  # `@LANE` given
        return _replay_and_report(args, location)
    # several sources, or one on a GPU: the lanes graph (frames stay on the device there)
    from holoburn.app.run.multi_source import parse_lane_spec, replay_sources

    if holoscan_argv(args):
        raise ValueError("a distributed run takes one --source")
    out_dir = Path(args.out)
    config = _config(args, parse_lane_spec(args.source[0], "ROUTINE")[0])
    summary = replay_sources(config, args.source, out_dir, progress=Progress("frames", None))
    print_summary(summary, out_dir, overlays=summary["outputs"]["overlays"])
    for sid, per in summary["sources"].items():
        print(f"  {sid}: lane {per['lane']}, {per['frames_in']} in, {per['processed']} processed, dropped {per['dropped'] or 'none'}")
    return 0


def run_demo(args) -> int:
    video = sample_video()
    if not video.is_file():
        raise FileNotFoundError(f"bundled sample video missing: {video} (reinstall holoburn)")
    return _replay_and_report(args, f"video:{video}")
