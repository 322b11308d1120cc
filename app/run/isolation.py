"""`holoburn run` with the routine cameras in processes of their own (`gpu.isolation`).

Under saturation the emergency lane waits on what it shares with routine lanes: the GPU's SMs and,
in one process, Python's GIL and the scheduler's threads. Measured in the GPU lab (README,
"Priority lanes"): with 8 routine cameras in two worker processes under CUDA MPS, below-normal
MPS clients at 60 % of the SMs, the emergency p99 was 3.2-3.7 ms at 1,689-1,696 routine fps,
against 8.2-9.4 ms at 1,116-1,180 fps with every camera in one process (three runs,
bench/results/lanes_h200_saturated.json). So a run whose cameras are of an urgent lane (EMERGENCY, URGENT) and of a
routine one (ROUTINE, BATCH_SCREENING) keeps the urgent cameras here and gives the routine
cameras to `gpu.routine_processes` worker processes, each `holoburn run` with its cameras, their
run-wide ids (`source.numbers`) and the options of this run, writing into `OUT/routine<k>/`:

    OUT/results.jsonl, summary.json, ...      the urgent cameras
    OUT/routine0/results.jsonl, summary.json  the first routine process's cameras
    OUT/summary.json "processes"              each routine process: cameras, exit code, counts

`auto` splits only on a GPU whose CUDA MPS daemon is running: without MPS the processes would
time-slice the GPU, which the lab's probe of a plain design measured slower for the emergency
camera than priority streams in one process (issue 15: p99 6.1 against 3.5 ms), so every
camera then stays in one process, said in a warning. `process` splits anyway.

A camera stays in its process: one whose frames escalate moves to that process's own emergency
lane (highest stream priority there, within that process's share of SMs), not to the urgent
process. A stop signal to this process is passed on to the routine processes; each writes what
it has, as any run does.
"""
from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from pathlib import Path

from holoburn.app.run.replay import Interrupted, parse_lane_spec, run_device
from holoburn.clinical.triage import Lane
from holoburn.processing.isolation import mps_state, routine_places, split_streams, stop_processes

log = logging.getLogger("holoburn")

URGENT_LANES = (Lane.EMERGENCY, Lane.URGENT)


def lane_processes(config: dict, specs: list[str]) -> tuple[list, list] | None:
    """(urgent [(number, spec)], routine groups [[(number, spec)], ...]) when this run splits its
    cameras over processes, else None. Numbers are the cameras' 1-based places in the run."""
    gpu = config.get("gpu") or {}
    mode = gpu.get("isolation", "none")  # one of auto, process, none (app.config checks it)
    if mode == "none" or len(specs) < 2 or (mode == "auto" and run_device(config) != "cuda"):
        return None
    numbered = list(enumerate(specs, 1))
    urgent = [(n, s) for n, s in numbered if parse_lane_spec(s, config["source"]["lane"])[1] in URGENT_LANES]
    routine = [(n, s) for n, s in numbered if (n, s) not in urgent]
    if not urgent or not routine:
        return None
    if mode == "auto":
        mps = mps_state()
        if not mps["active"]:  # processes would time-slice the GPU: worse than lanes in one process
            log.warning("gpu.isolation auto: every camera stays in this process, because %s. Processes without "
                        "CUDA MPS time-slice the GPU (in the GPU lab a plain design's emergency p99 was 6.1 ms so, "
                        "3.5 ms on a priority stream in one process); with a daemon running, routine cameras get "
                        "processes of their own (gpu.isolation: process forces them)", mps["why"])
            return None
    counts = split_streams(len(routine), max(1, int(gpu.get("routine_processes") or 1)))
    groups, start = [], 0
    for count in counts:
        groups.append(routine[start : start + count])
        start += count
    return urgent, groups


def worker_command(args, group: list, out_dir: Path) -> list[str]:
    """`holoburn run` for one routine process: its cameras, their numbers, this run's options."""
    cmd = [sys.executable, "-m", "holoburn.app", "run"]
    for _, spec in group:
        cmd += ["--source", spec]
    cmd += ["--out", str(out_dir), "--isolation", "none", "--source-numbers", ",".join(str(n) for n, _ in group)]
    for flag, value in (("--config", args.config), ("--backend", args.backend), ("--precision", args.precision),
                        ("--model", args.model), ("--max-frames", args.max_frames), ("--body-region", args.body_region),
                        ("--lane", args.lane)):
        if value is not None:
            cmd += [flag, str(value)]
    if args.save_masks:
        cmd += ["--save-masks", str(Path(args.save_masks) / out_dir.name)]
    cmd += ["--realtime"] if args.realtime else []
    cmd += ["--source-map"] if args.source_map else []
    return cmd


def run_isolated(args, config: dict, plan: tuple, out_dir: Path, run_here) -> int:
    """Start the routine processes, run the urgent cameras here (`run_here(specs, numbers)`),
    wait for the routine processes, add them to summary.json. Returns the exit code."""
    urgent, groups = plan
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gpu = config.get("gpu") or {}
    if run_device(config) == "cuda":
        mps, places = routine_places(len(groups), gpu.get("routine_sm_percent"),
                                     gpu.get("routine_mps_priority") or "normal")
    else:  # MPS and GPUs are not asked about: the processes inherit this one's environment
        mps, places = None, [(None, None)] * len(groups)
    procs = []
    for k, (group, (device, env)) in enumerate(zip(groups, places)):
        target = out_dir / f"routine{k}"
        # the routine process's console: its warnings and errors, not its progress or summary table
        procs.append(subprocess.Popen(worker_command(args, group, target), env=env, stdout=subprocess.DEVNULL))
    log.info("routine cameras in %d processes: %s", len(procs),
             "; ".join(f"routine{k}: {len(g)} camera(s)" for k, g in enumerate(groups)))
    try:
        code = run_here([s for _, s in urgent], [n for n, _ in urgent])
    except BaseException:
        stop_processes(procs, timeout=60)  # this run stops (a signal, a bad input, a defect): so do its routine processes
        raise
    codes, signals = _wait(procs)
    _add_to_summary(out_dir, groups, codes, mps, [device for device, _ in places])
    for k, rc in enumerate(codes):
        state = "finished" if rc == 0 else f"exit {rc}"
        print(f"  routine{k}: {state}; results in {out_dir / f'routine{k}'}")
    if signals:  # stopped while only routine cameras were still running: each wrote what it had
        raise Interrupted(signals[0], out_dir)
    return code or next((rc for rc in codes if rc), 0)


def _wait(procs) -> tuple[list[int], list[int]]:
    """Wait for the routine processes; a stop signal meanwhile is passed on to them."""
    received: list[int] = []

    def forward(number, _frame):
        received.append(number)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(number)

    previous = {n: signal.signal(n, forward) for n in (signal.SIGINT, signal.SIGTERM)}
    try:
        return [proc.wait() for proc in procs], received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _add_to_summary(out_dir: Path, groups: list, codes: list, mps: dict | None, placement: list) -> None:
    path = out_dir / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    processes = []
    for k, (group, rc, device) in enumerate(zip(groups, codes, placement)):
        folder = out_dir / f"routine{k}"
        theirs = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").is_file() else {}
        processes.append({"process": f"routine{k}", "sources": sorted(theirs.get("sources") or {}),
                          "cameras": len(group), "exit_code": rc, "gpu": device if device is not None else "shared",
                          **{key: theirs.get(key) for key in ("frames_in", "processed", "dropped", "not_assessable")}})
    summary["isolation"] = {"mode": "process", "mps": mps, "processes": processes}
    path.write_text(json.dumps(summary, indent=2) + "\n")
