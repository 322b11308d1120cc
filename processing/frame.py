"""One frame on its way through the graph: an immutable record of where it came from
(`FrameInfo`) and the working state its lane fills in (`Frame`).

Every frame that enters the graph reaches the results writer, processed or not: a stage that
cannot process a frame sets `status` to the reason and passes it on, so frames in = processed +
dropped always holds and nothing is lost silently.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

OK = "ok"
NO_SIGNAL = "no_signal"  # a live source delivered no picture (camera lost); shown, counted as dropped

#: source metadata that results may carry (never patient identifiers: DICOM UIDs are remapped)
ORIGIN_KEYS = ("dicom_source", "frame_in_file", "dicom_file", "modality", "photometric")


class FrameInfo(NamedTuple):
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
    entered_ns: int = 0
    origin: tuple = ()


@dataclass(slots=True)
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
        origin = tuple((k, v) for k, v in origin.items() if k in ORIGIN_KEYS) if origin else ()
        # a tuple, not a frozen dataclass: made for every frame of every camera (a frozen
        # dataclass cost the sources several microseconds a frame under load)
        return cls(FrameInfo(source, int(index), float(timestamp_s), float(source_fps or 0.0), time.monotonic_ns(),
                             origin), image=image, status=status, lane=lane)

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


# ----------------------------------------------------------------------------- messages
#
# From one fragment (process, host) to another a frame travels as a Holoscan tensor map: its
# pixels as a tensor (host or device, no copy) and its record as a small tensor of UTF-8 JSON
# bytes, never as a pickled Python object. (Holoscan's metadata would be the natural place for
# the record, but metadata set from Python does not cross fragments: seen with Holoscan 4.6.)
# Within one process a frame stays a Python object whose pixels are NumPy or CuPy arrays (no
# copy either): making and reading the tensor map costs about 90 us of CPU per frame (2-core CI
# machine), and in the GPU lab (one H200, 8 routine cameras at 240 fps) it took routine
# throughput from 1,270 to about 1,100 fps and the emergency p99 under load from 7 to 12-16 ms.

IMAGE, RECORD, MASK, OVERLAY = "image", "record", "mask", "overlay"


def _json_tensor(value) -> np.ndarray:
    return np.frombuffer(bytearray(json.dumps(value, separators=(",", ":")).encode()), np.uint8)  # writable: DLPack


def _from_json_tensor(tensor):
    return json.loads(np.asarray(tensor).tobytes().decode())


def _info_record(frame: "Frame") -> dict:
    info = frame.info
    return {"source": info.source, "index": info.index, "timestamp_s": info.timestamp_s,
            "source_fps": info.source_fps, "entered_ns": info.entered_ns, "origin": [list(p) for p in info.origin],
            "status": frame.status}


def _info_of(record: dict) -> FrameInfo:
    return FrameInfo(record["source"], record["index"], record["timestamp_s"], record["source_fps"],
                     record["entered_ns"], tuple(tuple(p) for p in record["origin"]))


def frame_message(frame: "Frame") -> dict:
    """A source's frame as a tensor map: `image` (H, W, 3) uint8 when there is a picture, `record`."""
    message = {RECORD: _json_tensor(_info_record(frame))}
    if frame.image is not None:
        message[IMAGE] = frame.image
    return message


def frame_from_message(message) -> "Frame":
    """The Frame a source's tensor map describes (its pixels are the tensor's, not a copy)."""
    record = _from_json_tensor(message[RECORD])
    image = message[IMAGE] if IMAGE in message else None
    if image is not None and not isinstance(image, np.ndarray) and hasattr(image, "__array_interface__"):
        image = np.asarray(image)  # a host tensor: a NumPy view of its memory
    elif image is not None and hasattr(image, "__cuda_array_interface__") and not type(image).__module__.startswith("cupy"):
        import cupy

        image = cupy.asarray(image)  # a device tensor: a CuPy view of its memory
    return Frame(_info_of(record), image=image, status=record["status"])


def result_message(frame: "Frame", backend: dict) -> dict:
    """A finished frame as a tensor map for a results writer in another process: `record`
    (record, lane, findings, stage times, backend), `mask` and `overlay` (host tensors)."""
    record = {**_info_record(frame), "lane": frame.lane, "findings": frame.findings, "stage_ms": frame.stage_ms,
              "backend": backend, "queue_lane": frame.extra.get("queue_lane")}
    message = {RECORD: _json_tensor(record)}
    for name, array in ((MASK, frame.mask), (OVERLAY, frame.overlay)):
        if array is not None:
            message[name] = array
    return message


def frame_from_result(message) -> "Frame":
    record = _from_json_tensor(message[RECORD])
    frame = Frame(_info_of(record), status=record["status"], lane=record["lane"], findings=record["findings"],
                  stage_ms=record["stage_ms"], extra={"backend": record["backend"], "queue_lane": record["queue_lane"]})
    frame.mask = np.asarray(message[MASK]) if MASK in message else None
    frame.overlay = np.asarray(message[OVERLAY]) if OVERLAY in message else None
    return frame
