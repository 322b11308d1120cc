"""Frame source: emits one Frame per picture a reader delivers (video file, camera, DICOM)."""
from __future__ import annotations

import logging
import time

from holoscan.core import Operator

from .frame import OK, Frame

log = logging.getLogger("holoburn.source")


class FrameSourceOp(Operator):
    """Emits the frames of a source (video file, camera, DICOM, memory) in order; stops the
    graph's input at the end. A frame the source could not deliver (a camera gap, an undecodable
    DICOM file) is still emitted, with its status, so it is counted.

    reader: anything with next_frame() -> (rgb, timestamp_s, status), reopen(), close(), fps,
    frames_read and missing_frames (media.video.VideoReader, media.camera.CameraReader, ...).
    realtime: pace frames by their timestamps (as a camera would deliver them); otherwise as fast
    as the pipeline takes them. loop: start again at the end (for demos and soak runs).
    max_frames: stop after this many frames (None: the whole file).
    """

    def __init__(self, fragment, *args, reader, source_id: str, realtime=False, loop=False, max_frames=None, **kwargs):
        self.reader = reader
        self.source_id = source_id
        self.realtime = realtime
        self.loop = loop
        self.max_frames = max_frames
        self.emitted = 0
        self.missing = 0  # frames the container promised but that did not decode
        self._clock_start = None
        self._loop_offset_s = 0.0
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec):
        spec.output("out")

    def compute(self, op_input, op_output, context):
        if self.reader is None:  # finished; the scheduler may ask once more before it stops
            return
        if self.max_frames is not None and self.emitted >= self.max_frames:
            self._finish()
            return
        image, ts, status = self.reader.next_frame()
        if status is None and self.loop and self.reader.frames_read:
            self._loop_offset_s += ts_or_duration(self.reader)
            self.missing += self.reader.missing_frames
            self.reader = self.reader.reopen()
            image, ts, status = self.reader.next_frame()
        if status is None:
            self._finish()
            return
        ts = (ts or 0.0) + self._loop_offset_s
        if self.realtime and status == OK:
            self._pace(ts)
        frame = Frame(source=self.source_id, index=self.emitted, timestamp_s=ts, source_fps=self.reader.fps or 0.0,
                      image=image, status=status)
        if hasattr(self.reader, "frame_extra"):  # e.g. a DICOM frame's de-identified header
            frame.extra = dict(self.reader.frame_extra())
        op_output.emit(frame, "out")
        self.emitted += 1

    def _pace(self, ts: float) -> None:
        now = time.monotonic()
        if self._clock_start is None:
            self._clock_start = now - ts
        wait = self._clock_start + ts - now
        if wait > 0:
            time.sleep(wait)

    def _finish(self) -> None:
        if self.reader is not None:
            self.missing += self.reader.missing_frames
            if self.reader.missing_frames and self.reader.frame_count:
                log.warning(
                    "%s: the container lists %d frames but only %d decoded; %d missing (truncated or corrupt file)",
                    self.reader.path, self.reader.frame_count, self.reader.frames_read, self.reader.missing_frames,
                )
            self.reader.close()
            self.reader = None
        self.stop_execution()


def ts_or_duration(reader) -> float:
    return reader.frames_read / reader.fps if reader.fps else float(reader.frames_read)
