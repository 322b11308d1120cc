"""The shape every pipeline stage shares: receive a frame, work on it if it is still good,
time the work, pass the frame on. A failure on one frame drops that frame with its reason and
the pipeline goes on."""
from __future__ import annotations

import logging
import time

from holoscan.core import Operator

from holoburn.processing.frame import Frame

log = logging.getLogger("holoburn.pipeline")


class StageOp(Operator):
    """Subclasses set `stage` and implement `process(frame)`; sinks set `has_output = False`."""

    stage = "stage"
    has_output = True

    def setup(self, spec):
        spec.input("in")
        if self.has_output:
            spec.output("out")

    def compute(self, op_input, op_output, context):
        frame: Frame = op_input.receive("in")
        if frame.ok:
            started = time.perf_counter()
            try:
                self.process(frame)
            except Exception as exc:  # one bad frame must not stop the pipeline
                log.warning("%s failed on %s frame %d: %s", self.stage, frame.source, frame.index, exc)
                frame.drop(f"{self.stage}_failed")
            frame.stage_ms[self.stage] = (time.perf_counter() - started) * 1e3
        self.after(frame)
        if self.has_output:
            op_output.emit(frame, "out")

    def process(self, frame: Frame) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def after(self, frame: Frame) -> None:
        """Runs for every frame, processed or dropped (sinks use it for accounting)."""
