"""The run's accounting: every frame that entered the graph, processed or dropped with its
reason, by source and by lane. frames in = processed + dropped always holds; `check()` fails
loudly when it does not. One ledger serves the results writer, the summaries and the benchmarks."""
from __future__ import annotations

import threading
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from holoburn.clinical.metrics import percentiles
from holoburn.processing.frame import Frame


class FrameTrip(NamedTuple):
    """One frame's trip, monotonic nanoseconds: entered (source emit), queued (at triage's lane
    queue), dequeued (taken into a batch), done (its overlay finished; None when dropped)."""

    lane: str  # clinical lane of the frame (after escalation)
    queue_lane: str  # the lane queue that served it
    source: str
    index: int
    entered_ns: int
    queued_ns: int | None
    dequeued_ns: int | None
    done_ns: int | None
    status: str
    trace: tuple = ()  # (stage, start ns, end ns) of each operator its batch went through
    gpu_ms: float | None = None  # device time of its batch (CUDA events), GPU lanes


class AccountingError(RuntimeError):
    """Frames went missing between the sources and the results: a defect, never expected."""


def frame_latency_ms(frame: Frame, done_ns: int | None, now_ns: int) -> float:
    """From the frame's entry into the graph to the end of its overlay (processed) or to now."""
    end = done_ns if (done_ns is not None and frame.ok) else now_ns
    return (end - frame.entered_ns) / 1e6


@dataclass
class Ledger:
    """Counts per source and per lane; latencies are milliseconds from a frame's entry into the
    graph to the end of its overlay (or to its record being written, where no overlay was made)."""

    keep_trips: int = 200_000  # per-frame trips kept for benchmarks' breakdowns
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    frames_in: int = 0
    processed: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> frames
    triage_levels: Counter = field(default_factory=Counter)
    not_assessable: Counter = field(default_factory=Counter)  # processed frames given no numbers, by reason
    # per-frame values behind the percentiles, as 8-byte doubles (a list of floats took 32 bytes
    # a value: on a camera run of hours that was most of the run's memory growth, bench --soak)
    latencies_ms: array = field(default_factory=lambda: array("d"))
    stage_ms: dict = field(default_factory=dict)  # stage -> array of ms
    first_entered: int | None = None
    last_done: int | None = None
    by_source: dict = field(default_factory=dict)  # source -> {"frames_in", "processed", "dropped"}
    lane_processed: Counter = field(default_factory=Counter)
    lane_dropped: Counter = field(default_factory=Counter)  # (lane, reason) -> frames
    lane_latencies_ms: dict = field(default_factory=dict)
    trips: list = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, frame: Frame, done_ns: int | None = None, trace=(), gpu_ms=None, now_ns: int | None = None) -> float:
        """Account one frame; returns its latency in milliseconds. now_ns: when its record was
        written (default: now)."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        latency_ms = frame_latency_ms(frame, done_ns, now)
        with self._lock:
            self.frames_in += 1
            if self.first_entered is None or frame.entered_ns < self.first_entered:
                self.first_entered = frame.entered_ns
            self.last_done = now
            per = self.by_source.get(frame.source)
            if per is None:  # (no eager defaults: this runs for every frame of every camera)
                per = self.by_source[frame.source] = {"frames_in": 0, "processed": 0, "dropped": Counter()}
            per["frames_in"] += 1
            if frame.ok:
                self.processed += 1
                per["processed"] += 1
                self.lane_processed[frame.lane] += 1
                self.latencies_ms.append(latency_ms)
                lane_latencies = self.lane_latencies_ms.get(frame.lane)
                if lane_latencies is None:
                    lane_latencies = self.lane_latencies_ms[frame.lane] = array("d")
                lane_latencies.append(latency_ms)
                if frame.findings and frame.findings.get("triage"):
                    self.triage_levels[frame.findings["triage"]["level"]] += 1
                if frame.findings and frame.findings.get("assessable") is False:
                    self.not_assessable[frame.findings["not_assessable_reason"]] += 1
                for stage, ms in frame.stage_ms.items():
                    times = self.stage_ms.get(stage)
                    if times is None:
                        times = self.stage_ms[stage] = array("d")
                    times.append(ms)
            else:
                self.dropped[frame.status] += 1
                per["dropped"][frame.status] += 1
                self.lane_dropped[(frame.lane, frame.status)] += 1
            if len(self.trips) < self.keep_trips:
                self.trips.append(FrameTrip(frame.lane, frame.extra.get("queue_lane", frame.lane), frame.source,
                                            frame.index, frame.entered_ns, frame.extra.get("queued_ns"),
                                            frame.extra.get("dequeued_ns"), done_ns if frame.ok else None,
                                            frame.status, tuple(trace), gpu_ms))
        return latency_ms

    def check(self) -> None:
        dropped = sum(self.dropped.values())
        if self.frames_in != self.processed + dropped:
            raise AccountingError(f"frame accounting broken: {self.frames_in} in, {self.processed} processed, "
                                  f"{dropped} dropped")

    def summary(self) -> dict:
        """The run's totals, as summary.json gives them."""
        self.check()
        wall = (self.finished or time.monotonic()) - self.started
        return {
            "frames_in": self.frames_in,
            "processed": self.processed,
            "dropped": dict(self.dropped),
            "triage_levels": dict(self.triage_levels),
            "not_assessable": dict(self.not_assessable),
            # share of processed frames that got numbers (reported next to every accuracy figure)
            "coverage": round(1 - sum(self.not_assessable.values()) / self.processed, 4) if self.processed else None,
            "latency_ms": percentiles(self.latencies_ms),
            "stage_ms_median": {k: round(float(np.median(v)), 3) for k, v in self.stage_ms.items()},
            "wall_s": round(wall, 3),
            "fps": round(self.frames_in / wall, 2) if wall > 0 else None,
        }

    def source_summary(self, source: str) -> dict:
        per = self.by_source.get(source) or {"frames_in": 0, "processed": 0, "dropped": Counter()}
        return {"frames_in": per["frames_in"], "processed": per["processed"], "dropped": dict(per["dropped"])}

    def lane_summary(self) -> dict:
        """Per clinical lane: processed, dropped by reason, latency percentiles."""
        with self._lock:
            lanes = sorted(set(self.lane_processed) | {l for l, _ in self.lane_dropped} | set(self.lane_latencies_ms))
            return {lane: {"processed": self.lane_processed[lane],
                           "dropped": {r: n for (l, r), n in self.lane_dropped.items() if l == lane},
                           "latency_ms": percentiles(self.lane_latencies_ms.get(lane, []))}
                    for lane in lanes}


def trace_breakdown(trips) -> dict:
    """Where processed frames spent their time, ms percentiles: `to_gate` (source emit to the
    triage queue), `queue` (waiting in the lane queue), per operator `wait:<op>` (from the
    previous operator's end to this one's start: scheduling and Python's GIL) and `run:<op>`
    (inside the operator; the sink's run is mostly waiting for the device), and `gpu` (device
    time of the batch, CUDA events)."""
    parts: dict[str, list] = {}

    def put(name, ns):
        parts.setdefault(name, []).append(ns / 1e6)

    for r in trips:
        if r.done_ns is None or not r.trace:
            continue
        if r.queued_ns is not None:
            put("to_gate", r.queued_ns - r.entered_ns)
            if r.dequeued_ns is not None:
                put("queue", r.dequeued_ns - r.queued_ns)
        previous = r.dequeued_ns or r.entered_ns
        for stage, start, end in r.trace:
            put(f"wait:{stage}", start - previous)
            put(f"run:{stage}", end - start)
            previous = end
        if r.gpu_ms is not None:
            parts.setdefault("gpu", []).append(r.gpu_ms)
    return {name: percentiles(values, qs=(50, 99)) for name, values in parts.items()}
