"""Holoscan recordings (`.gxf_entities` / `.gxf_index`): frames in from VideoStreamReplayerOp,
frames out to VideoStreamRecorderOp, so footage recorded by any Holoscan device replays here."""
from __future__ import annotations

import numpy as np
from holoscan.core import Operator

from holoburn.processing.frame import IMAGE, Frame, frame_message

INDEX_ENTRY_BYTES = 24  # one entry of a .gxf_index file per recorded frame (seen with Holoscan 4.6)


class TensorToFrameOp(Operator):
    """Replayed tensor (H, W, 3|4) uint8 -> a Frame with source id, index and timestamp (a tensor
    map to another fragment), as every source emits."""

    def __init__(self, fragment, *args, source_id: str, fps: float, as_tensors: bool = False, **kwargs):
        self.source_id, self.fps, self.as_tensors = source_id, fps, as_tensors
        self.count = 0
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec):
        spec.input("in")
        spec.output("out")

    def compute(self, op_input, op_output, context):
        tensors = op_input.receive("in")
        image, status = tensor_to_rgb(tensors)
        frame = Frame.of(self.source_id, self.count, self.count / self.fps, image, status=status, source_fps=self.fps)
        op_output.emit(frame_message(frame) if self.as_tensors else frame, "out")
        self.count += 1


def tensor_to_rgb(tensors) -> tuple:
    """The first tensor of a replayed message as (H, W, 3) uint8 RGB, or (None, reason)."""
    if not tensors:
        return None, "empty_message"
    array = np.asarray(next(iter(tensors.values())))
    if array.ndim == 3 and array.shape[2] in (3, 4) and array.dtype == np.uint8:
        return np.ascontiguousarray(array[..., :3]), "ok"
    return None, f"unsupported_tensor_{'x'.join(map(str, array.shape))}_{array.dtype}"


class FrameToTensorOp(Operator):
    """A source's frame -> {"": (H, W, 3) uint8} for VideoStreamRecorderOp (the picture alone, as
    Holoscan devices record it); frames without a picture are skipped."""

    def setup(self, spec):
        spec.input("in")
        spec.output("out")

    def compute(self, op_input, op_output, context):
        message = op_input.receive("in")
        image = message.image if isinstance(message, Frame) else message.get(IMAGE)
        if image is not None:
            op_output.emit({"": image}, "out")


def recorded_frames(directory, basename) -> int:
    """Frames in a recording, from the size of its index."""
    from pathlib import Path

    return (Path(directory) / f"{basename}.gxf_index").stat().st_size // INDEX_ENTRY_BYTES
