"""Overlay (CPU renderer): depth colours, burn outlines, legend and numbers on the frame."""
from __future__ import annotations

from holoburn.clinical.overlay import annotate, no_signal, summary_lines, tint
from holoburn.processing.frame import NO_SIGNAL, Frame
from holoburn.operators.stage import StageOp


class OverlayOp(StageOp):
    stage = "overlay"

    def __init__(self, fragment, *args, alpha: float = 0.45, **kwargs):
        self.alpha = alpha
        super().__init__(fragment, *args, **kwargs)

    def process(self, frame: Frame) -> None:
        overlay = tint(frame.image, frame.mask, self.alpha)
        frame.overlay = annotate(overlay, frame.mask, summary_lines(frame.findings), frame.lane)
        self._size = frame.overlay.shape[:2]

    def after(self, frame: Frame) -> None:
        """A camera gap is shown, not hidden: NO SIGNAL at the last picture's size."""
        if frame.status == NO_SIGNAL:
            frame.overlay = no_signal(*getattr(self, "_size", (480, 640)))
