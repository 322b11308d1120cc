"""Holoviz on the GPU (headless or in a window): the emergency lane's overlay (already tinted by
depth class on the device) with the depth legend and the frame's numbers as text layers."""
from __future__ import annotations

import numpy as np
from holoscan.core import Operator

from holoburn.clinical.depth import BURN_CLASSES, CLASS_NAMES, LABELS
from holoburn.clinical.overlay import summary_lines
from holoburn.processing.runtime import LaneBatch


class HolovizFeedOp(Operator):
    """Feeds Holoviz with the lane's overlay (already tinted by depth class, on the device) and,
    as text layers, the depth legend and the frame's numbers. Connect `outputs` to Holoviz's
    `receivers` and `output_specs` to its `input_specs`."""

    def __init__(self, fragment, *args, **kwargs):
        self.frames_shown = 0
        self._legend = [LABELS[CLASS_NAMES[c]] for c in BURN_CLASSES]
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec):
        spec.input("in")
        spec.output("outputs")
        spec.output("output_specs")

    def compute(self, op_input, op_output, context):
        from holoscan.operators import HolovizOp

        batch: LaneBatch = op_input.receive("in")
        frame = batch.live[-1]
        lane = f"{frame.lane}: {frame.extra['lane_reason']}" if frame.extra.get("lane_reason") else frame.lane
        lines = [f"{frame.source} #{frame.index} [{lane}]"] + summary_lines(frame.findings or {})[:3]
        legend_xy = np.asarray([(0.01, 0.03 + 0.035 * i, 0.03) for i in range(len(self._legend))], np.float32)
        numbers_xy = np.asarray([(0.01, 0.80 + 0.04 * i, 0.03) for i in range(len(lines))], np.float32)
        op_output.emit({"overlay": frame.overlay, "legend": legend_xy, "numbers": numbers_xy}, "outputs")
        specs = []
        for name, text, colour in (("legend", self._legend, (1.0, 1.0, 1.0, 1.0)), ("numbers", lines, (1.0, 1.0, 0.2, 1.0))):
            s = HolovizOp.InputSpec(name, "text")
            s.text = list(text)
            s.color = list(colour)
            s.priority = 1
            specs.append(s)
        op_output.emit(specs, "output_specs")
        self.frames_shown += 1


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
