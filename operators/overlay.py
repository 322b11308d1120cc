"""Overlay (CPU renderer): depth colours, burn outlines, legend and numbers on the frame."""
from __future__ import annotations

from ..clinical.overlay import annotate, summary_lines, tint
from .frame import Frame
from .stage import StageOp


class OverlayOp(StageOp):
    stage = "overlay"

    def __init__(self, fragment, *args, alpha: float = 0.45, **kwargs):
        self.alpha = alpha
        super().__init__(fragment, *args, **kwargs)

    def process(self, frame: Frame) -> None:
        overlay = tint(frame.image, frame.mask, self.alpha)
        frame.overlay = annotate(overlay, frame.mask, summary_lines(frame.findings), frame.lane)
