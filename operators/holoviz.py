"""Holoviz on the GPU (headless or in a window): the emergency lane's overlay (already tinted by
depth class on the device) with the depth legend and the frame's numbers as text layers."""
from __future__ import annotations

import numpy as np
from holoscan.core import Operator

from holoburn.clinical.depth import BURN_CLASSES, CLASS_NAMES, LABELS
from holoburn.clinical.overlay import summary_lines
from holoburn.processing.runtime import LaneBatch


LEGEND = [LABELS[CLASS_NAMES[c]] for c in BURN_CLASSES]
LEGEND_XY = np.asarray([(0.01, 0.03 + 0.035 * i, 0.03) for i in range(len(LEGEND))], np.float32)


def holoviz_inputs(batch: LaneBatch) -> tuple[dict, list]:
    """What Holoviz shows for a lane batch (its newest frame): the overlay, the depth legend and
    the frame's numbers as text layers. (tensors for its `receivers`, specs for `input_specs`)."""
    from holoscan.operators import HolovizOp

    frame = batch.live[-1]
    lane = f"{frame.lane}: {frame.extra['lane_reason']}" if frame.extra.get("lane_reason") else frame.lane
    lines = [f"{frame.source} #{frame.index} [{lane}]"] + summary_lines(frame.findings or {})[:3]
    numbers_xy = np.asarray([(0.01, 0.80 + 0.04 * i, 0.03) for i in range(len(lines))], np.float32)
    specs = []
    for name, text, colour in (("legend", LEGEND, (1.0, 1.0, 1.0, 1.0)), ("numbers", lines, (1.0, 1.0, 0.2, 1.0))):
        spec = HolovizOp.InputSpec(name, "text")
        spec.text = list(text)
        spec.color = list(colour)
        spec.priority = 1
        specs.append(spec)
    return {"overlay": frame.overlay, "legend": LEGEND_XY, "numbers": numbers_xy}, specs


class RenderCountOp(Operator):
    """Receives Holoviz's headless render buffer (a GXF video buffer) and counts it."""

    def __init__(self, fragment, *args, **kwargs):
        self.rendered = 0
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec):
        spec.input("in")

    def compute(self, op_input, op_output, context):
        if op_input.receive("in") is not None:
            self.rendered += 1
