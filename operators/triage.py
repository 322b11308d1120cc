"""Triage: gives each frame its priority lane (the source's configured lane, escalated to
EMERGENCY while the source's last result shows a referral-grade burn)."""
from __future__ import annotations

from holoburn.processing.frame import Frame
from holoburn.operators.stage import StageOp


class TriageOp(StageOp):
    stage = "triage"

    def __init__(self, fragment, *args, router, **kwargs):
        self.router = router  # clinical.triage.LaneRouter, shared with the postprocess stage
        super().__init__(fragment, *args, **kwargs)

    def process(self, frame: Frame) -> None:
        frame.lane = self.router.lane_for(frame.source).name
