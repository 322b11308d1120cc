"""Sinks: the overlay video writer and the per-frame results writer (JSON lines, optional masks)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import cv2

from holoburn.media.video import VideoWriter
from holoburn.processing.frame import Frame
from holoburn.processing.records import RunLedger, result_record
from holoburn.operators.stage import StageOp


class OverlayVideoSinkOp(StageOp):
    """Writes one overlay picture per processed frame, then passes the frame on to the results
    writer (a chain, not a fork, so no two operators touch one frame at the same time)."""

    stage = "video_sink"

    def __init__(self, fragment, *args, writer: VideoWriter, **kwargs):
        self.writer = writer
        self.no_signal_written = 0
        super().__init__(fragment, *args, **kwargs)

    def process(self, frame: Frame) -> None:
        if not self.writer.frames_written and frame.source_fps:
            self.writer.fps = frame.source_fps
        self.writer.write(frame.overlay)

    def after(self, frame: Frame) -> None:
        if not frame.ok and frame.overlay is not None:  # NO SIGNAL pictures keep the video's timing
            self.writer.write(frame.overlay)
            self.no_signal_written += 1

    def stop(self):
        self.writer.close()


class ResultsSinkOp(StageOp):
    """Writes a record for every frame that entered the graph, flushed as it goes, and keeps the
    run's accounting. Optionally saves each predicted class mask as an 8-bit PNG."""

    stage = "results"
    has_output = False

    def __init__(self, fragment, *args, results_path: Path, ledger: RunLedger, masks_dir: Path | None = None, progress=None, observers=(), **kwargs):
        self.results_path = Path(results_path)
        self.ledger = ledger
        self.masks_dir = Path(masks_dir) if masks_dir else None
        self.progress = progress  # callable(frames_done) or None
        self.observers = observers  # callables(frame, record) e.g. the validation scorer
        self._file = None
        super().__init__(fragment, *args, **kwargs)

    def start(self):
        self.results_path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.results_path, "w", buffering=1)
        if self.masks_dir:
            self.masks_dir.mkdir(parents=True, exist_ok=True)

    def process(self, frame: Frame) -> None:
        if self.masks_dir is not None:
            path = self.masks_dir / f"{frame.index:06d}.png"
            if not cv2.imwrite(str(path), frame.mask):
                raise OSError(f"cannot write mask {path}")

    def after(self, frame: Frame) -> None:
        latency_ms = (time.monotonic_ns() - frame.entered_ns) / 1e6
        record = result_record(frame, latency_ms)
        self._file.write(json.dumps(record) + "\n")
        self.ledger.add(frame, latency_ms)
        for observe in self.observers:
            observe(frame, record)
        if self.progress:
            self.progress(self.ledger.frames_in)

    def stop(self):
        self.ledger.finished = time.monotonic()
        if self._file:
            self._file.close()
