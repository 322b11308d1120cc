"""Per-frame result records and the run's accounting (plain Python, no Holoscan)."""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from holoburn.processing.frame import Frame


#: source metadata that results may carry (never patient identifiers: DICOM UIDs are remapped)
ORIGIN_KEYS = ("dicom_source", "frame_in_file", "dicom_file")


def result_record(frame: Frame, latency_ms: float) -> dict:
    """The JSON-lines record of one frame that entered the graph (see README: output contract)."""
    findings = frame.findings or {}
    return {
        "source": frame.source,
        "frame": frame.index,
        "timestamp_s": round(frame.timestamp_s, 6),
        "lane": frame.lane,
        "backend": frame.backend.get("backend"),
        "precision": frame.backend.get("precision"),
        "status": frame.status,
        "pixels": findings.get("pixels"),
        "burn_share_of_skin": findings.get("burn_share_of_skin"),
        "tbsa_share_of_skin": findings.get("tbsa_share_of_skin"),
        "tbsa_pct": findings.get("tbsa_pct"),
        "area_cm2": findings.get("area_cm2"),
        "triage": findings.get("triage"),
        "latency_ms": round(latency_ms, 3),
        "stage_ms": {k: round(v, 3) for k, v in frame.stage_ms.items()},
        # where the frame came from inside its source (DICOM: de-identified instance, frame in file)
        "origin": {k: v for k, v in frame.extra.items() if k in ORIGIN_KEYS} or None,
    }


def percentiles(values, qs=(50, 95, 99)) -> dict:
    if not len(values):
        return {f"p{q}": None for q in qs}
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{q}": round(float(np.percentile(arr, q)), 3) for q in qs}


@dataclass
class RunLedger:
    """Counts every frame that reached the end of the graph; frames in = processed + dropped."""

    frames_in: int = 0
    processed: int = 0
    dropped: Counter = field(default_factory=Counter)
    triage_levels: Counter = field(default_factory=Counter)  # processed frames per triage level
    latencies_ms: list = field(default_factory=list)
    stage_ms: dict = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    first_entered: int | None = None  # monotonic ns when the first frame entered the graph
    last_done: int | None = None  # monotonic ns when the last frame was written
    backend: dict = field(default_factory=dict)  # as reported by the frames
    lane_changes: list = field(default_factory=list)  # as seen in the frames' lanes
    _lanes: dict = field(default_factory=dict)

    def add(self, frame: Frame, latency_ms: float) -> None:
        self.frames_in += 1
        if self.first_entered is None or frame.entered_ns < self.first_entered:
            self.first_entered = frame.entered_ns
        self.last_done = time.monotonic_ns()
        if frame.backend:
            self.backend = frame.backend
        previous = self._lanes.get(frame.source)
        if previous is not None and previous != frame.lane:
            self.lane_changes.append({"source": frame.source, "frame": frame.index, "from": previous, "to": frame.lane})
        self._lanes[frame.source] = frame.lane
        if frame.ok:
            self.processed += 1
            self.latencies_ms.append(latency_ms)
            if frame.findings and frame.findings.get("triage"):
                self.triage_levels[frame.findings["triage"]["level"]] += 1
            for stage, ms in frame.stage_ms.items():
                self.stage_ms.setdefault(stage, []).append(ms)
        else:
            self.dropped[frame.status] += 1

    def check(self) -> None:
        """Fail loudly if any frame went unaccounted for."""
        dropped = sum(self.dropped.values())
        if self.frames_in != self.processed + dropped:
            raise RuntimeError(
                f"frame accounting broken: {self.frames_in} in, {self.processed} processed, {dropped} dropped"
            )

    def summary(self) -> dict:
        self.check()
        wall = (self.finished or time.monotonic()) - self.started
        return {
            "frames_in": self.frames_in,
            "processed": self.processed,
            "dropped": dict(self.dropped),
            "triage_levels": dict(self.triage_levels),
            "latency_ms": percentiles(self.latencies_ms),
            "stage_ms_median": {k: round(float(np.median(v)), 3) for k, v in self.stage_ms.items()},
            "wall_s": round(wall, 3),
            "fps": round(self.frames_in / wall, 2) if wall > 0 else None,
        }


def write_json(path, data) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
