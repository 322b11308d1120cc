"""Postprocess: class mask at frame size, burn size, triage level; feeds the lane router."""
from __future__ import annotations

from holoburn.clinical.burn_size import burn_findings, count_pixels
from holoburn.clinical.triage import TriagePolicy, triage_level
from holoburn.processing.preprocess import segment
from holoburn.processing.frame import Frame
from holoburn.operators.stage import StageOp


class PostprocessOp(StageOp):
    stage = "postprocess"

    def __init__(self, fragment, *args, router, region_pct=None, body_region=None, cm2_per_pixel=None,
                 policy: TriagePolicy = TriagePolicy(), keep_logits=False, **kwargs):
        self.router = router
        self.region_pct, self.body_region, self.cm2_per_pixel = region_pct, body_region, cm2_per_pixel
        self.policy = policy
        self.keep_logits = keep_logits  # validation keeps them for AUC
        super().__init__(fragment, *args, **kwargs)

    def process(self, frame: Frame) -> None:
        frame.mask = segment(frame.logits, frame.letterbox)
        if not self.keep_logits:
            frame.logits = None
        findings = burn_findings(count_pixels(frame.mask), region_pct=self.region_pct, cm2_per_pixel=self.cm2_per_pixel)
        findings["triage"] = triage_level(findings, body_region=self.body_region, policy=self.policy)
        frame.findings = findings
        self.router.observe(frame.source, frame.index, findings["triage"])
