"""Preprocess: letterbox the frame to the model's square input and normalise it."""
from __future__ import annotations

from holoburn.processing.preprocess import prepare_input
from holoburn.processing.frame import Frame
from holoburn.operators.stage import StageOp


class PreprocessOp(StageOp):
    stage = "preprocess"

    def __init__(self, fragment, *args, input_size: int, mean, std, **kwargs):
        self.input_size, self.mean, self.std = input_size, mean, std
        super().__init__(fragment, *args, **kwargs)

    def process(self, frame: Frame) -> None:
        frame.model_input, frame.letterbox = prepare_input(frame.image, self.input_size, self.mean, self.std)
