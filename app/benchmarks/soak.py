"""`holoburn bench --soak`: the real pipeline for minutes on end; is its memory flat?

    holoburn bench --soak                                  # CPU, 2 minutes, the bundled sample looped
    holoburn bench --soak --minutes 8 --device cuda        # GPU lab (torch backend)

Runs `holoburn run`'s own path (app.run.replay.replay: the one graph, its results writer and
summary) on a source played in a loop (`source.loop`) and paced as a camera delivers it (`--pace
realtime`, the default; `fast`: as fast as the pipeline takes frames). The source ends `--minutes`
after its first frame, so the graph drains and every frame is accounted as in any run.

Every `--interval` seconds it samples the process's resident memory (RSS, /proc/self/statm), its
open file descriptors and threads, on a GPU the device memory in use (whole device, from CuPy or
torch), and the latency of the frames written since the last sample (source emit to end of
overlay, as results.jsonl gives it). Written to `soak.json` in `--out` (and `--json FILE`):

- the samples;
- the RSS slope, MiB per minute, least squares over the samples after `--warmup` seconds (the
  same for device memory on a GPU);
- latency percentiles of the first and the last minute of frames;
- frames the source delivered, in, processed, dropped by reason, and records in results.jsonl.

Verdict: flat when the RSS (and device memory) slope is below `--max-slope` (2 MiB/min), the
last minute's latency p50 is within 20 % of the first minute's, and nothing was dropped or lost.
Exit status 0 when flat, 1 when not.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from array import array
from collections import deque
from pathlib import Path

import numpy as np

from holoburn.clinical.errors import BackendFailure, BadInput
from holoburn.clinical.metrics import percentiles

MIB = float(1 << 20)
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
MAX_P50_CHANGE_PCT = 20.0


def add_soak_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `holoburn bench --soak` (--source, --backend, --precision, --model, --threads
    and --json are the bench's own)."""
    g = p.add_argument_group("soak (--soak)")
    g.add_argument("--soak", action="store_true", help="the real pipeline for --minutes: is memory flat?")
    g.add_argument("--minutes", type=float, default=2.0, help="minutes of frames (default 2; GPU lab: 8)")
    g.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cpu: ONNX Runtime; cuda: the GPU lanes (torch backend unless --backend)")
    g.add_argument("--pace", choices=("realtime", "fast"), default="realtime",
                   help="realtime: frames at the source's rate, as a camera (default); fast: as fast as taken")
    g.add_argument("--interval", type=float, default=2.0, help="seconds between samples (default 2)")
    g.add_argument("--warmup", type=float, default=20.0,
                   help="seconds left out of the memory slope (default 20)")
    g.add_argument("--max-slope", type=float, default=2.0, help="flat below this many MiB per minute (default 2)")
    g.add_argument("--config", help="YAML merged over the defaults (or a bundled preset name, e.g. bedside-x86)")
    g.add_argument("--out", default="holoburn-soak",
                   help="folder for the run's results, overlay, summary.json and soak.json (default holoburn-soak)")


# ----------------------------------------------------------------------------- what is sampled


def rss_mib() -> float:
    """Resident memory of this process, MiB (Linux /proc: Holoscan runs on Linux only)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_BYTES / MIB


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def native_threads() -> int:
    """Threads of this process, Holoscan's workers included (Python sees only its own)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def device_memory_probe():
    """A function returning the device memory in use, MiB (the whole device: the model, every
    lane's pool, the CUDA context), from CuPy, else torch; None where neither is installed."""
    try:
        import cupy
    except ImportError:
        cupy = None
    if cupy is not None:
        def used() -> float:
            free, total = cupy.cuda.runtime.memGetInfo()
            return (total - free) / MIB
        return used
    try:
        import torch
    except ImportError:
        return None

    def used_torch() -> float:
        free, total = torch.cuda.mem_get_info()
        return (total - free) / MIB
    return used_torch


def slope_per_minute(times_s, values) -> float | None:
    """Least-squares slope of values against time, per minute; None with fewer than 3 points."""
    if len(times_s) < 3:
        return None
    return float(np.polyfit(np.asarray(times_s) / 60.0, np.asarray(values, dtype=np.float64), 1)[0])


# ----------------------------------------------------------------------------- the source's clock


class SoakClock:
    """When the soak's first frame was read and when its source ends; frames the source delivered."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.started: float | None = None  # time.monotonic() of the first frame
        self.delivered = 0  # frames handed to the source operator (every status), over all passes
        self.first_frame = threading.Event()

    def elapsed(self) -> float:
        return time.monotonic() - self.started if self.started is not None else 0.0

    def expired(self) -> bool:
        return self.started is not None and self.elapsed() >= self.seconds


class TimedReader:
    """A reader (media.video.VideoReader, FrameListReader) that ends `clock.seconds` after the
    soak's first frame; each loop pass (reopen) shares the clock. Everything else is the reader's."""

    def __init__(self, reader, clock: SoakClock):
        self.reader = reader
        self.clock = clock

    def next_frame(self):
        if self.clock.started is None:
            self.clock.started = time.monotonic()
            self.clock.first_frame.set()
        if self.clock.expired():
            return None, None, None
        image, ts, status = self.reader.next_frame()
        if status is not None:
            self.clock.delivered += 1
        return image, ts, status

    def reopen(self) -> "TimedReader":
        # time is up mid-pass: no next pass (the source operator then sees the end again and stops)
        return self if self.clock.expired() else TimedReader(self.reader.reopen(), self.clock)

    def __getattr__(self, name):
        return getattr(self.reader, name)


# ----------------------------------------------------------------------------- sampling


class Sampler:
    """Samples memory and the latency of the frames written since the last sample, on a thread of
    its own every `interval` seconds while the source runs. Bounded: only the first minute's and
    the last minute's latencies are kept whole."""

    def __init__(self, clock: SoakClock, interval: float, device_used=None):
        self.clock = clock
        self.interval = interval
        self.device_used = device_used
        self.samples: list[dict] = []
        self.first_minute = array("d")
        self.recent: deque = deque(maxlen=int(60.0 / interval) + 2)  # (t_s, latencies) per sample
        self.dropped = 0
        self.written = 0
        self._window = array("d")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)
        self.before_first_frame = self._memory()

    def observe(self, frame, record: dict) -> None:
        """A results observer (processing.recorder): each frame with its record, in order."""
        t = self.clock.elapsed()
        with self._lock:
            self.written += 1
            if record["status"] != "ok":
                self.dropped += 1
                return
            self._window.append(record["latency_ms"])
            if t < 60.0:
                self.first_minute.append(record["latency_ms"])

    def _memory(self) -> dict:
        sample = {"rss_mib": round(rss_mib(), 2), "fds": open_fds(), "threads": native_threads()}
        if self.device_used is not None:
            sample["device_used_mib"] = round(self.device_used(), 2)
        return sample

    def sample(self) -> None:
        t = self.clock.elapsed()
        with self._lock:
            window, self._window = self._window, array("d")
            written = self.written
        self.recent.append((t, window))
        lat = percentiles(window, qs=(50, 95))
        self.samples.append({"t_s": round(t, 2), **self._memory(), "frames_written": written,
                             "latency_ms": {"n": lat["n"], "p50": lat["p50"], "p95": lat["p95"], "max": lat["max"]}})

    def _run(self) -> None:
        self.clock.first_frame.wait()
        self.sample()  # t = 0: the first frame was just read
        while not self._stop.wait(self.interval - (self.clock.elapsed() % self.interval)):
            if self.clock.expired():
                break
            self.sample()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def last_minute(self, end_s: float) -> array:
        """Latencies of frames written in the last 60 s before end_s (whole sampling windows)."""
        out = array("d")
        previous = None
        for t, window in self.recent:
            if previous is not None and previous >= end_s - 60.0 - 1e-6:
                out.extend(window)
            previous = t
        return out


# ----------------------------------------------------------------------------- the soak


def soak_config(args, location: str) -> dict:
    from holoburn.app.config import load_config

    backend = args.backend or "onnxruntime"
    if args.device == "cuda" and backend == "onnxruntime":  # the bench's default backend is the CPU's
        backend = "torch"
    return load_config(args.config, {
        "source.location": location,
        "source.loop": True,
        "source.realtime": args.pace == "realtime",
        "inference.backend": backend,
        "inference.precision": args.precision,
        "inference.model": args.model,
        "inference.threads": args.threads,
    })


def check_device(args, config: dict) -> None:
    """Fail before the run where the run would not be on the device asked for."""
    from holoburn.engines.backend import cuda_available

    backend = config["inference"]["backend"]
    if args.device == "cuda" and not cuda_available():
        raise BackendFailure("holoburn bench --soak --device cuda: no CUDA device here; run it in the GPU lab, "
                             "or use --device cpu")
    if args.device == "cuda" and backend not in ("auto", "torch", "tensorrt"):
        raise BadInput(f"--device cuda runs a GPU backend (torch, tensorrt or auto), not --backend {backend}")
    if args.device == "cpu" and backend in ("auto", "torch", "tensorrt") and cuda_available():
        raise BadInput(f"--device cpu: --backend {backend} would run on the GPU here; use --backend onnxruntime")


def results_lines(path: Path) -> tuple[int, int]:
    """(records, lines that are not whole JSON) of a results.jsonl."""
    records = broken = 0
    with open(path, "rb") as f:
        for line in f:
            records += 1
            try:
                json.loads(line)
            except ValueError:
                broken += 1
    return records, broken


def figures(sampler: Sampler, clock: SoakClock, summary: dict, out_dir: Path, args) -> dict:
    end_s = min(clock.elapsed(), clock.seconds)
    settled = [s for s in sampler.samples if s["t_s"] >= args.warmup]
    rss_slope = slope_per_minute([s["t_s"] for s in settled], [s["rss_mib"] for s in settled])
    device_slope = (slope_per_minute([s["t_s"] for s in settled], [s["device_used_mib"] for s in settled])
                    if sampler.device_used is not None else None)
    first = percentiles(sampler.first_minute)
    last = percentiles(sampler.last_minute(end_s))
    change = (round((last["p50"] / first["p50"] - 1) * 100, 1)
              if first["p50"] and last["p50"] is not None else None)
    lines, broken = results_lines(out_dir / "results.jsonl")
    frames = {"delivered": clock.delivered, "in": summary["frames_in"], "processed": summary["processed"],
              "dropped": summary["dropped"], "results_lines": lines, "results_lines_broken": broken,
              "lost": clock.delivered - summary["frames_in"]}
    reasons = []
    if rss_slope is None:
        reasons.append(f"too few samples after the {args.warmup:g} s warm-up for a slope: run longer")
    elif rss_slope >= args.max_slope:
        reasons.append(f"RSS grows {rss_slope:.2f} MiB/min (limit {args.max_slope:g})")
    if device_slope is not None and device_slope >= args.max_slope:
        reasons.append(f"device memory grows {device_slope:.2f} MiB/min (limit {args.max_slope:g})")
    if change is None:
        reasons.append("no latency in the first or last minute")
    elif abs(change) > MAX_P50_CHANGE_PCT:
        reasons.append(f"latency p50 {first['p50']} ms in the first minute, {last['p50']} ms in the last "
                       f"({change:+.1f} %, limit {MAX_P50_CHANGE_PCT:g} %)")
    if summary["dropped"] or frames["lost"] or lines != summary["frames_in"] or broken:
        reasons.append(f"frames dropped or lost: {frames}")
    rss = [s["rss_mib"] for s in sampler.samples] or [sampler.before_first_frame["rss_mib"]]
    fds, threads = [s["fds"] for s in settled], [s["threads"] for s in settled]
    return {
        "rss_mib": {"before_first_frame": sampler.before_first_frame["rss_mib"], "first_sample": rss[0],
                    "after_warmup": settled[0]["rss_mib"] if settled else None, "end": rss[-1], "max": max(rss)},
        "rss_slope_mib_per_min": round(rss_slope, 3) if rss_slope is not None else None,
        "device_used_slope_mib_per_min": round(device_slope, 3) if device_slope is not None else None,
        "fds_after_warmup": [min(fds), max(fds)] if fds else None,
        "threads_after_warmup": [min(threads), max(threads)] if threads else None,
        "latency_ms": {"first_minute": first, "last_minute": last, "p50_change_pct": change},
        "frames": frames,
        "verdict": {"flat": not reasons, "reasons": reasons,
                    "limits": {"max_slope_mib_per_min": args.max_slope, "max_p50_change_pct": MAX_P50_CHANGE_PCT}},
    }


def run_soak(args) -> int:
    from holoburn.app.run.command import sample_video
    from holoburn.app.run.replay import Interrupted, replay
    from holoburn.app.run.sources import open_reader, parse_source

    if args.minutes <= 0 or args.interval <= 0:
        raise BadInput(f"--minutes and --interval must be positive, got {args.minutes:g} and {args.interval:g}")
    spec = args.source or f"video:{sample_video()}"
    if parse_source(spec)[0] != "video":
        raise BadInput(f"--soak --source {spec}: give video:PATH, a file it can play in a loop")
    config = soak_config(args, spec)
    check_device(args, config)
    out_dir = Path(args.out)
    clock = SoakClock(args.minutes * 60.0)
    sampler = Sampler(clock, args.interval, device_memory_probe() if args.device == "cuda" else None)
    reader = TimedReader(open_reader(spec, config), clock)
    print(f"holoburn bench --soak: {args.minutes:g} min on {args.device}, {parse_source(spec)[0]} source looped, "
          f"pace {args.pace}, a sample every {args.interval:g} s -> {out_dir}", file=sys.stderr)
    started = time.time()
    sampler.start()
    interrupted = None
    try:
        summary = replay(config, [spec], out_dir, observers=[sampler.observe], readers={spec: reader})
    except Interrupted as exc:  # Ctrl-C: the run wrote its summary; report what was measured, then stop
        interrupted = exc
        summary = json.loads((out_dir / "summary.json").read_text())
    finally:
        clock.first_frame.set()  # a run that failed before its first frame: let the sampler end
        sampler.stop()
    result = {
        "command": "holoburn " + " ".join(sys.argv[1:]) if sys.argv[0].endswith(("holoburn", "cli.py", "__main__.py"))
        else "holoburn bench --soak",
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": os.cpu_count(),
        "device": summary.get("device"),
        "backend": summary.get("backend"),
        "backend_version": summary.get("backend_version"),
        "precision": summary.get("precision"),
        "model_id": summary.get("model_id"),
        "minutes": args.minutes,
        "pace": args.pace,
        "interval_s": args.interval,
        "warmup_s": args.warmup,
        "frames_per_s": summary.get("fps"),
        "stopped": summary.get("stopped"),
        **figures(sampler, clock, summary, out_dir, args),
        "samples": sampler.samples,
    }
    write_result(result, out_dir / "soak.json", args.json)
    print_verdict(result, out_dir)
    if interrupted is not None:
        raise interrupted
    return 0 if result["verdict"]["flat"] else 1


def write_result(result: dict, path: Path, extra: str | None) -> None:
    text = json.dumps(result, indent=2) + "\n"
    path.write_text(text)
    if extra:
        Path(extra).parent.mkdir(parents=True, exist_ok=True)
        Path(extra).write_text(text)


def print_verdict(result: dict, out_dir: Path) -> None:
    rss, lat, frames = result["rss_mib"], result["latency_ms"], result["frames"]
    slope = result["rss_slope_mib_per_min"]
    rows = [
        ("device", f"{result['device']}, {result['backend']} {result['backend_version']} ({result['precision']}), "
                   f"{result['cpus']} CPUs"),
        ("frames", f"{frames['in']} in, {frames['processed']} processed, dropped {frames['dropped'] or 'none'}, "
                   f"{frames['lost']} lost; {result['frames_per_s']} frames/s"),
        ("RSS", f"{rss['first_sample']} MiB at the first frame, {rss['after_warmup']} after warm-up, "
                f"{rss['end']} at the end (max {rss['max']})"),
        ("RSS slope", f"{slope if slope is not None else '?'} MiB/min after {result['warmup_s']:g} s "
                      f"(limit {result['verdict']['limits']['max_slope_mib_per_min']:g})"),
    ]
    if result["device_used_slope_mib_per_min"] is not None:
        rows.append(("device memory slope", f"{result['device_used_slope_mib_per_min']} MiB/min"))
    rows += [
        ("latency first minute", f"p50 {lat['first_minute']['p50']} / p95 {lat['first_minute']['p95']} / "
                                 f"p99 {lat['first_minute']['p99']} ms"),
        ("latency last minute", f"p50 {lat['last_minute']['p50']} / p95 {lat['last_minute']['p95']} / "
                                f"p99 {lat['last_minute']['p99']} ms (p50 {lat['p50_change_pct']:+} %)"
         if lat["p50_change_pct"] is not None else "none"),
        ("written to", out_dir / "soak.json"),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    verdict = result["verdict"]
    print("\n  verdict: " + ("FLAT" if verdict["flat"] else "NOT FLAT: " + "; ".join(verdict["reasons"])))
