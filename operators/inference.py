"""Inference: runs the segmentation network through whichever backend was opened at start-up."""
from __future__ import annotations

from holoburn.processing.frame import Frame
from holoburn.operators.stage import StageOp


class InferenceOp(StageOp):
    stage = "inference"

    def __init__(self, fragment, *args, backend, model_id: str = "", **kwargs):
        self.backend = backend  # engines.backend.Backend, opened (and checked) before the graph runs
        self.backend_info = {**backend.describe(), "model_id": model_id}
        super().__init__(fragment, *args, **kwargs)

    def process(self, frame: Frame) -> None:
        frame.backend = self.backend_info
        frame.logits = self.backend.infer(frame.model_input)
        frame.model_input = None
