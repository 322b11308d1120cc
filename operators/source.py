"""source: one frame per picture a reader delivers (video file, camera, DICOM, frames in memory).
To another fragment it goes as a tensor map (processing.frame.frame_message); see there why not
within one process."""
from __future__ import annotations

import logging
import time

from holoscan.core import Operator

from holoburn.media.video import VideoError
from holoburn.processing.frame import OK, Frame, frame_message

log = logging.getLogger("holoburn.source")


class FrameSourceOp(Operator):
    """Emits the frames of a source (video file, camera, DICOM, memory) in order; stops the
    graph's input at the end. A frame the source could not deliver (a camera gap, a video frame
    that did not decode, an undecodable DICOM file) is still emitted, with its status, so it is
    counted.

    reader: anything with next_frame() -> (rgb, timestamp_s, status), reopen(), close(), fps,
    frames_read and missing_frames (media.video.VideoReader, media.camera.CameraReader, ...).
    realtime: pace frames by their timestamps (as a camera would deliver them); otherwise as fast
    as the pipeline takes them. loop: start again at the end (for demos and soak runs); each pass
    continues the previous one's timestamps and frame indices. max_frames: stop after this many
    frames (None: the whole source). stop_requested: a threading.Event; once it is set the source
    ends where it is, as at the end of its file, and the frames already emitted go on (a stop
    signal).

    `missing`: frames the source listed but never delivered, over all passes: a video's frames
    absent from a truncated file (known when a pass reaches the end of the file, so a file left
    early by max_frames adds none), a camera's frames lost while it was gone.
    """

    def __init__(self, fragment, *args, reader, source_id: str, realtime=False, loop=False, max_frames=None,
                 stop_requested=None, as_tensors: bool = False, **kwargs):
        self.reader = reader
        self.as_tensors = as_tensors  # the next operator is in another process: a tensor map, not a Python object
        self.source_id = source_id
        self.realtime = realtime
        self.loop = loop
        self.max_frames = max_frames
        self.stop_requested = stop_requested  # (not `stop`: that is Operator.stop())
        self.emitted = 0
        self.missing = 0  # frames the source promised but never delivered
        self.decode_errors = 0  # frames in the file that did not decode (emitted with that status)
        self.passes = 0  # passes that reached the end of the source
        self._clock_start = None
        self._loop_offset_s = 0.0  # added to the reader's timestamps: where this pass starts
        self._last_ts = None  # latest timestamp emitted
        self._told = False  # the source's losses were logged
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec):
        spec.output("out")

    def compute(self, op_input, op_output, context):
        if self.reader is None:  # finished; the scheduler may ask once more before it stops
            return
        if self.stop_requested is not None and self.stop_requested.is_set():
            self._finish()
            return
        if self.max_frames is not None and self.emitted >= self.max_frames:
            self.missing += self.reader.missing_frames  # a live source's gaps so far (0 for a file mid-way)
            self._finish()
            return
        image, ts, status = self.reader.next_frame()
        if status is None and self.loop and self.reader.frames_read:
            self._end_of_pass()
            try:
                self.reader = self.reader.reopen()
            except VideoError as exc:  # the file changed or vanished between passes
                log.error("%s: cannot start the next pass: %s", self.source_id, exc)
                self.reader = None
                self.stop_execution()
                return
            image, ts, status = self.reader.next_frame()
        if status is None:
            self._end_of_pass()
            self._finish()
            return
        ts = (ts or 0.0) + self._loop_offset_s
        if self.realtime and status == OK:
            self._pace(ts)
        origin = self.reader.frame_extra() if hasattr(self.reader, "frame_extra") else None  # DICOM: de-identified
        frame = Frame.of(self.source_id, self.emitted, ts, image, status=status, source_fps=self.reader.fps or 0.0,
                         origin=origin)
        op_output.emit(frame_message(frame) if self.as_tensors else frame, "out")
        self.emitted += 1
        self._last_ts = ts if self._last_ts is None else max(self._last_ts, ts)

    def _pace(self, ts: float) -> None:
        now = time.monotonic()
        if self._clock_start is None:
            self._clock_start = now - ts
        wait = self._clock_start + ts - now
        if wait > 0:
            time.sleep(wait)

    def _end_of_pass(self) -> None:
        """The reader reached the end of its source: count what the pass lost (told once, for the
        first pass that lost anything) and start the next pass one frame period after this one."""
        reader = self.reader
        self.passes += 1
        errors = getattr(reader, "decode_errors", 0)
        self.missing += reader.missing_frames
        self.decode_errors += errors
        if (reader.missing_frames or errors) and hasattr(reader, "accounting") and not self._told:
            log.warning("%s", reader.accounting(self.source_id))
            self._told = True
        if self._last_ts is not None:
            self._loop_offset_s = self._last_ts + 1.0 / (reader.fps or 30.0)

    def _finish(self) -> None:
        if self.reader is not None:
            if self.passes > 1 and (self.missing or self.decode_errors):
                log.warning("%s: over %d passes, %d frames missing from the file and %d failed to decode",
                            self.source_id, self.passes, self.missing,
                            self.decode_errors)
            self.reader.close()
            self.reader = None
        self.stop_execution()
