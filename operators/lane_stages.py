"""The lane's stages: preprocess -> inference -> postprocess -> overlay -> sink, thin Holoscan
shells over the lane runtime (processing.runtime). Each receives a batch, calls one method of its
lane's runtime, and passes the batch on; `ProcessOp` runs the four device stages in one operator
(three operator hops fewer, each a wait for Python's GIL when routine lanes keep it busy).

A frame that cannot be processed (processing raises BadFrame) leaves its batch's work with its
reason; a backend failure drops the whole batch's frames, named by stage. Either way the batch
travels on, so its frames are counted, its buffer set is released and its credit returns.
Anything else is a defect in holoburn and stops the graph with its traceback.
"""
from __future__ import annotations

import time

from holoscan.core import ConditionType, IOSpec, Operator

from holoburn.clinical.errors import BackendFailure
from holoburn.processing.frame import result_message
from holoburn.processing.lanes import Feedback
from holoburn.processing.recorder import to_host
from holoburn.processing.runtime import LaneBatch


class LaneStageOp(Operator):
    """Subclasses name their `stage` and the lane runtime's `steps` they run, in order."""

    stage = "stage"
    steps: tuple = ()

    def __init__(self, fragment, *args, runtimes: dict, depth: int = 2, **kwargs):
        self.runtimes = runtimes  # queue lane -> lane runtime
        self.depth = depth
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec):
        spec.input("in").connector(IOSpec.ConnectorType.DOUBLE_BUFFER, capacity=self.depth + 1)
        self.outputs(spec)

    def outputs(self, spec):
        spec.output("out")

    def compute(self, op_input, op_output, context):
        batch: LaneBatch = op_input.receive("in")
        runtime = self.runtimes[batch.lane]
        started = time.monotonic_ns()
        if not batch.failed:
            try:
                self.run(runtime, batch, context)
            except BackendFailure as exc:
                batch.fail(self.stage, exc)
        ended = time.monotonic_ns()
        batch.trace.append((self.stage, started, ended))
        for frame in batch.live:
            frame.stage_ms[self.stage] = (ended - started) / 1e6
        op_output.emit(batch, "out")

    def run(self, runtime, batch, context):
        if self.steps and self.steps[0] == "prepare" and runtime.device == "cuda" and runtime.stream_ptr is None:
            # a GPU lane takes its CUDA stream from this operator's CudaStreamPool (its lane's priority)
            runtime.bind(context.allocate_cuda_stream(f"lane_{batch.lane.name.lower()}"))
        for step in self.steps:
            getattr(runtime, step)(batch)


class PreprocessOp(LaneStageOp):
    """Upload (GPU), letterbox and normalise into the lane's model-input buffer."""

    stage, steps = "preprocess", ("prepare",)


class InferenceOp(LaneStageOp):
    stage, steps = "inference", ("infer",)


class PostprocessOp(LaneStageOp):
    stage, steps = "postprocess", ("postprocess",)


class OverlayOp(LaneStageOp):
    stage, steps = "overlay", ("overlay",)


class ProcessOp(LaneStageOp):
    """preprocess, inference, postprocess and overlay in one operator, all enqueued on the lane's
    stream; the sink still waits once, on the batch's event."""

    stage, steps = "process", ("prepare", "infer", "postprocess", "overlay")


class SinkOp(LaneStageOp):
    """End of a lane's device work: waits for the batch (one event), computes its clinical
    numbers, sends triage its feedback (triage levels; a credit when gated), passes it on.

    release: give the batch's buffer set back here (True), or leave that to the results
    operator (False: the outputs live in the buffer set until they are written). hand_off:
    copy the outputs to the host first (the results are written in another process)."""

    stage = "sink"

    def __init__(self, fragment, *args, release: bool = True, hand_off: bool = False, view: bool = False,
                 escalation: bool = True, **kwargs):
        self.release = release
        self.escalation = escalation  # triage escalates on results: send it each frame's triage level
        self.hand_off = hand_off
        self.batch_size = max(r.policy.batch_size for r in kwargs["runtimes"].values() if r is not None) \
            if hand_off else 1
        self.view = view
        self.frames_shown = 0  # batches given to Holoviz (view)
        super().__init__(fragment, *args, **kwargs)

    def outputs(self, spec):
        # across processes a batch leaves as one message per frame: room for a whole batch
        spec.output("out").connector(IOSpec.ConnectorType.DOUBLE_BUFFER, capacity=max(1, self.batch_size))
        spec.output("feedback")
        if self.view:  # straight to Holoviz (receivers, input_specs): no operator between
            spec.output("view").condition(ConditionType.NONE)
            spec.output("view_specs").condition(ConditionType.NONE)

    def compute(self, op_input, op_output, context):
        batch: LaneBatch = op_input.receive("in")
        runtime = self.runtimes[batch.lane]
        started = time.monotonic_ns()
        try:
            runtime.finish(batch)
        except BackendFailure as exc:
            batch.fail(self.stage, exc)
        if batch.done_ns is None:
            batch.done_ns = time.monotonic_ns()
        batch.trace.append((self.stage, started, batch.done_ns))
        for frame in batch.live:
            frame.stage_ms[self.stage] = (batch.done_ns - started) / 1e6
        if self.hand_off:  # the results writer is in another process: each frame as tensors, on the host
            for frame in batch.frames:
                frame.mask, frame.overlay = to_host(frame.mask), to_host(frame.overlay)
                op_output.emit(result_message(frame, runtime.backend_info), "out")
        if self.release:
            runtime.release(batch)
        # a frame that is not assessable changes no lane (it has no triage)
        outcomes = tuple((f.source, f.index, f.findings["triage"]) for f in batch.live
                         if f.ok and f.findings and f.findings.get("triage")) if self.escalation else ()
        op_output.emit(Feedback(credit=batch.gated, outcomes=outcomes), "feedback")
        if self.view and not batch.failed and batch.live:
            from holoburn.operators.holoviz import holoviz_inputs

            tensors, specs = holoviz_inputs(batch)
            op_output.emit(tensors, "view")
            op_output.emit(specs, "view_specs")
            self.frames_shown += 1
        if not self.hand_off:
            op_output.emit(batch, "out")
