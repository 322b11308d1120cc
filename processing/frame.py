"""One frame on its way through the graph: an immutable record of where it came from
(`FrameInfo`) and the working state its lane fills in (`Frame`).

Every frame that enters the graph reaches the results writer, processed or not: a stage that
cannot process a frame sets `status` to the reason and passes it on, so frames in = processed +
dropped always holds and nothing is lost silently.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

OK = "ok"
NO_SIGNAL = "no_signal"  # a live source delivered no picture (camera lost); shown, counted as dropped

#: source metadata that results may carry (never patient identifiers: DICOM UIDs are remapped)
ORIGIN_KEYS = ("dicom_source", "frame_in_file", "dicom_file")


@dataclass(frozen=True)
class FrameInfo:
    """Where a frame came from; set once by its source, never changed.

    source: opaque source id (never a path). index: 0-based within the source. timestamp_s:
    capture or presentation time, seconds from the source's start. source_fps: the source's
    nominal rate (0 when unknown). entered_ns: monotonic time the frame entered the graph.
    origin: (key, value) pairs from ORIGIN_KEYS (DICOM: de-identified instance, frame in file).
    """

    source: str
    index: int
    timestamp_s: float
    source_fps: float = 0.0
    entered_ns: int = field(default_factory=time.monotonic_ns)
    origin: tuple = ()


@dataclass
class Frame:
    """A frame's pixels and what its lane makes of them.

    image: (H, W, 3) uint8 RGB, NumPy or CuPy; None when it could not be read. mask: (H, W)
    uint8 class indices at frame size. overlay: (H, W, 3) uint8 RGB. logits: (1, C, S, S)
    float32, kept only for validation (probabilities for AUC). findings: the clinical numbers.
    """

    info: FrameInfo
    image: Any = None
    status: str = OK  # "ok" or why the frame was not processed (e.g. "decode_error")
    lane: str = "ROUTINE"
    letterbox: Any = None
    logits: Any = None
    mask: Any = None
    findings: dict | None = None
    overlay: Any = None
    stage_ms: dict = field(default_factory=dict)  # time spent in each stage, milliseconds
    extra: dict = field(default_factory=dict)  # the lane's timing marks (queued_ns, dequeued_ns, queue_lane)

    @classmethod
    def of(cls, source: str, index: int, timestamp_s: float, image=None, *, status: str = OK, lane: str = "ROUTINE",
           source_fps: float = 0.0, origin: dict | None = None) -> "Frame":
        origin = tuple((k, v) for k, v in (origin or {}).items() if k in ORIGIN_KEYS)
        return cls(FrameInfo(source, int(index), float(timestamp_s), float(source_fps or 0.0), origin=origin),
                   image=image, status=status, lane=lane)

    source = property(lambda self: self.info.source)
    index = property(lambda self: self.info.index)
    timestamp_s = property(lambda self: self.info.timestamp_s)
    entered_ns = property(lambda self: self.info.entered_ns)

    @property
    def ok(self) -> bool:
        return self.status == OK

    def drop(self, reason: str) -> "Frame":
        """Mark the frame as not processed, keeping it in the stream for accounting."""
        if self.ok:
            self.status = reason
        self.image = self.logits = self.overlay = None
        return self
