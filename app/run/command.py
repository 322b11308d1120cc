"""`holoburn run` and `holoburn demo`: replay a video through the pipeline."""
from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path

from holoburn.app.config import load_config
from holoburn.clinical.errors import BadInput
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
    p.add_argument("--model", help="model card YAML (default: the shipped burn_unet_v2)")
    p.add_argument("--max-frames", type=int, help="stop after N frames")
    p.add_argument("--save-masks", metavar="DIR", help="also write each predicted mask as an 8-bit PNG")
    p.add_argument("--record-gxf", metavar="DIR/BASENAME", help="also record the input frames as a Holoscan recording")
    p.add_argument("--source-map", action="store_true", default=None,
                   help="also write which opaque source id (video:1, ...) is which location, to "
                        "source_map.IDENTIFIERS.json (owner-only; it may name patients)")
    p.add_argument("--body-region", help="named body region in view (rule of nines), for %%TBSA")
    p.add_argument("--lane", help="lane of this source: EMERGENCY | URGENT | ROUTINE | BATCH_SCREENING")
    p.add_argument("--realtime", action="store_true", default=None, help="pace frames as a camera would")
    p.add_argument("--isolation", choices=("auto", "process", "none"),
                   help="routine cameras in processes of their own (gpu.isolation; default auto: on a GPU, when "
                        "urgent and routine cameras share the run)")
    p.add_argument("--source-numbers", help=argparse.SUPPRESS)  # a routine process's cameras' run-wide numbers
    d = p.add_argument_group("distributed (Holoscan fragments capture, analysis, display over UCX)")
    d.add_argument("--distributed", action="store_true", help="compose the graph as three fragments")
    d.add_argument("--driver", action="store_true", help="this process runs the Holoscan driver")
    d.add_argument("--worker", action="store_true", help="this process runs fragments")
    d.add_argument("--address", help="driver address HOST:PORT")
    d.add_argument("--worker-address", help="this worker's address HOST:PORT")
    d.add_argument("--fragments", help="fragments for this worker: capture,analysis,display or all")


def add_run_arguments(p):
    p.add_argument("--source", required=True, action="append",
                   help="video:PATH | camera:/dev/videoN | gxf:DIR/BASENAME | dicom:PATH (file, folder or DICOMDIR) | "
                        "image:PATH (a picture, a folder's pictures, or a glob: image:DIR/** takes subfolders too); "
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
        "source.numbers": [int(n) for n in args.source_numbers.split(",")] if args.source_numbers else None,
        "gpu.isolation": args.isolation,
        "inference.backend": args.backend,
        "inference.precision": args.precision,
        "inference.model": args.model,
        "results.save_masks": args.save_masks,
        "results.record_gxf": args.record_gxf,
        "results.source_map": args.source_map,
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


def replay_and_report(config: dict, specs: list[str], out_dir: Path, argv: list[str] | None) -> int:
    from holoburn.app.run.replay import Interrupted, parse_lane_spec, replay
    from holoburn.app.run.sources import parse_source

    if argv and len(specs) > 1:
        raise BadInput("a distributed run takes one --source")
    label = "frames"
    kinds = [parse_source(parse_lane_spec(s, "ROUTINE")[0])[0] for s in specs]
    numbers = config["source"].get("numbers") or range(1, len(kinds) + 1)
    names = ", ".join(f"{kind}:{n}" for n, kind in zip(numbers, kinds))  # opaque ids: paths may name patients
    if config["source"].get("numbers"):  # one of a run's processes (gpu.isolation): whose frames these are
        label = f"frames of {names}"
    print(f"holoburn: {names} -> {out_dir}" + (f" | this process: {' '.join(argv[1:]) or 'driver'}" if argv else ""))
    try:
        summary = replay(config, specs, out_dir, progress=Progress(label, None), argv=argv)
    except Interrupted:  # everything up to the stop is written: show it, then report the stop
        print_summary(json.loads((out_dir / "summary.json").read_text()), out_dir)
        raise
    if summary is None:  # a process without the display fragment has no summary to show
        print("holoburn: this process's fragments finished")
        return 0
    print_summary(summary, out_dir)
    return 0


def print_summary(summary: dict, out_dir: Path) -> None:
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
        ("overlays", ", ".join(str(out_dir / o) for o in summary["outputs"]["overlays"])),
        ("summary", out_dir / "summary.json"),
    ]
    for sid, head in (summary.get("audit_head") or {}).items():
        rows.append((f"audit head {sid}", f"{head} (keep it: holoburn audit verify LOG --expect-head {head})"))
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    if len(summary["sources"]) > 1:
        for sid, per in summary["sources"].items():
            print(f"  {sid}: lane {per['lane']}, {per['frames_in']} in, {per['processed']} processed, "
                  f"dropped {per['dropped'] or 'none'}")
    print("\n  decision support only: the model is a synthetic-data demonstration, not for clinical use")


def run_run(args) -> int:
    from holoburn.app.run.isolation import lane_processes, run_isolated
    from holoburn.app.run.replay import parse_lane_spec

    first, lane = parse_lane_spec(args.source[0], args.lane or "ROUTINE")
    config = _config(args, first)
    argv = holoscan_argv(args)
    plan = None if argv else lane_processes(config, args.source)
    if plan is None:
        return replay_and_report(config, args.source, Path(args.out), argv)

    def run_here(specs, numbers):  # the urgent cameras, in this process, under their run-wide ids
        return replay_and_report({**config, "source": {**config["source"], "numbers": numbers}}, specs, Path(args.out),
                                 None)

    return run_isolated(args, config, plan, Path(args.out), run_here)


def run_demo(args) -> int:
    video = sample_video()
    if not video.is_file():
        raise BadInput(f"bundled sample video missing: {video} (reinstall holoburn)")
    return replay_and_report(_config(args, f"video:{video}"), [f"video:{video}"], Path(args.out), holoscan_argv(args))
