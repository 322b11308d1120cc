"""Process isolation of the emergency lane (issue 15, item 2), as the lanes benchmark measures it.

The emergency camera's lane graph runs in the benchmark's own process; the routine cameras run in
worker processes, each the same holoburn lane graph with its share of the cameras
(`holoburn bench --lanes --role routine-worker`). No Python thread of a routine lane shares the
emergency process's GIL or scheduler threads. On the GPU:

- under CUDA MPS (a control daemon already running, `nvidia-cuda-mps-control -d`) the processes'
  kernels run side by side on the SMs instead of time-slicing, and each routine worker is held to
  `CUDA_MPS_ACTIVE_THREAD_PERCENTAGE` of the SMs, so some are always free for the emergency lane;
- without MPS the processes time-slice the GPU: that is said in a log line and in the results,
  never silently;
- on a machine with several GPUs the routine workers go to the GPUs other than the emergency
  process's (GPU 0), round robin; with one GPU they share it.

Each camera belongs to one process here: a camera whose frames escalate stays in its worker
process (whose graph has an emergency lane of its own, at the highest priority); handing a
running camera's frames to the emergency process (IPC device memory) is not built.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from holoburn.processing.isolation import mps_control, routine_places, split_streams, stop_processes


@dataclass(frozen=True)
class ProcessSet:
    """One way of placing the routine cameras for the isolated step: `workers` processes, each held
    to `sm_percent` of the SMs under MPS, as MPS clients of `priority`. Written `2x60` (normal
    priority) or `2x60low` (below normal)."""

    workers: int
    sm_percent: int
    priority: str = "normal"

    @property
    def label(self) -> str:
        return f"{self.workers}x{self.sm_percent}{'low' if self.priority == 'below_normal' else ''}"


def process_sets(text: str) -> list[ProcessSet]:
    """`2x60,2x40low` -> the process sets, in order; a clear error for anything else."""
    sets = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        match = re.fullmatch(r"(\d+)x(\d+)(low)?", item)
        if not match or not 1 <= int(match[1]) <= 64 or not 1 <= int(match[2]) <= 100:
            raise ValueError(f"routine process set {item!r}: write WORKERSxSM_PERCENT, 1-64 workers at 1-100 % of "
                             f"the SMs, with 'low' after it for below-normal MPS client priority (e.g. 2x60, 2x40low)")
        sets.append(ProcessSet(int(match[1]), int(match[2]), "below_normal" if match[3] else "normal"))
    if not sets:
        raise ValueError("no routine process set given (e.g. 2x60)")
    return sets


class RoutineWorkers:
    """Routine worker processes for one measurement: start, wait until each is warm, start them
    together, collect their results. A context manager: workers still running on exit are stopped."""

    def __init__(self, base_args: list[str], *, processes: ProcessSet, streams: int, workdir: Path):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.go_file = self.workdir / "go"
        self.go_file.unlink(missing_ok=True)
        counts = split_streams(streams, processes.workers)
        self.mps, places = routine_places(len(counts), processes.sm_percent, processes.priority)
        self.plan = []
        self.procs = []
        for k, (n, (gpu, env)) in enumerate(zip(counts, places)):
            ready = self.workdir / f"ready{k}"
            ready.unlink(missing_ok=True)
            out = self.workdir / f"worker{k}.json"
            cmd = [sys.executable, "-m", "holoburn.app", "bench", "--lanes", *base_args, "--role", "routine-worker",
                   "--routine-streams", str(n), "--ready-file", str(ready), "--go-file", str(self.go_file),
                   "--out", str(self.workdir), "--name", out.name]
            log_file = open(self.workdir / f"worker{k}.log", "w")
            self.procs.append(subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT))
            log_file.close()
            self.plan.append({"worker": k, "cameras": n, "gpu": gpu if gpu is not None else "shared",
                              "sm_percent": processes.sm_percent if self.mps["active"] else None,
                              "mps_client_priority": processes.priority if self.mps["active"] else None,
                              "ready": ready, "out": out})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        stop_processes(self.procs, timeout=20)
        return False

    def log_tail(self, k: int, lines: int = 12) -> str:
        path = self.workdir / f"worker{k}.log"
        text = path.read_text(errors="replace").splitlines() if path.is_file() else []
        return "\n".join(text[-lines:])

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(p["ready"].exists() for p in self.plan):
            for p, proc in zip(self.plan, self.procs):
                if proc.poll() is not None and not p["ready"].exists():
                    raise RuntimeError(f"routine worker {p['worker']} exited ({proc.returncode}) before it was ready; "
                                       f"{self.workdir / ('worker%d.log' % p['worker'])} ends:\n{self.log_tail(p['worker'])}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"routine workers not ready after {timeout:.0f} s")
            time.sleep(0.05)

    def go(self) -> None:
        self.go_file.write_text("go\n")

    def results(self, timeout: float) -> list[dict]:
        reports = []
        for p, proc in zip(self.plan, self.procs):
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"routine worker {p['worker']} still running {timeout:.0f} s after its cameras "
                                   f"stopped") from None
            if not p["out"].is_file():
                raise RuntimeError(f"routine worker {p['worker']} wrote no results (exit {proc.returncode}); "
                                   f"{self.workdir / ('worker%d.log' % p['worker'])} ends:\n{self.log_tail(p['worker'])}")
            reports.append(json.loads(p["out"].read_text()))
        if self.mps["active"]:
            self.mps["server_list_after"] = mps_control("get_server_list")
        return reports

    def describe(self) -> list[dict]:
        return [{k: v for k, v in p.items() if k not in ("ready", "out")} for p in self.plan]


def wait_for_go(ready_file: str, go_file: str, timeout: float = 600.0) -> None:
    """A worker's side: say it is warm, wait for the signal to start its cameras."""
    Path(ready_file).write_text("ready\n")
    deadline = time.monotonic() + timeout
    while not Path(go_file).exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no start signal ({go_file}) within {timeout:.0f} s")
        time.sleep(0.002)
