"""The message that travels between holoburn's operators: one frame and everything known about it.

Every frame that enters the graph reaches the results sink, processed or not: an operator that
cannot process a frame sets `status` to the reason and passes it on, so frames in = processed +
dropped always holds and nothing is lost silently.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

OK = "ok"
NO_SIGNAL = "no_signal"  # a live source delivered no picture (camera lost); shown, counted as dropped


@dataclass
class Frame:
    source: str  # source id, e.g. "video:burns.mp4" or "camera:/dev/video0"
    index: int  # 0-based frame index within the source
    timestamp_s: float  # capture / presentation time of the frame, seconds from the source's start
    source_fps: float = 0.0  # the source's nominal frame rate (for writing video); 0 when unknown
    image: Any = None  # (H, W, 3) uint8 RGB, NumPy or CuPy; None when the frame could not be read
    status: str = OK  # "ok" or why the frame was not processed (e.g. "decode_error")
    lane: str = "ROUTINE"
    backend: dict = field(default_factory=dict)  # backend, version, precision, device that ran the model
    entered_ns: int = field(default_factory=time.monotonic_ns)  # when the frame entered the graph
    # filled in along the pipeline
    model_input: Any = None  # (1, 3, S, S) float32
    letterbox: Any = None
    logits: Any = None  # (1, C, S, S) float32
    mask: Any = None  # (H, W) uint8 class indices at frame size
    findings: dict | None = None  # clinical numbers from postprocess
    overlay: Any = None  # (H, W, 3) uint8 RGB
    stage_ms: dict = field(default_factory=dict)  # time spent in each stage, milliseconds
    extra: dict = field(default_factory=dict)  # source-specific metadata (never patient identifiers)

    @property
    def ok(self) -> bool:
        return self.status == OK

    def drop(self, reason: str) -> "Frame":
        """Mark the frame as not processed, keeping it in the stream for accounting."""
        if self.ok:
            self.status = reason
        self.image = self.model_input = self.logits = self.overlay = None
        return self
