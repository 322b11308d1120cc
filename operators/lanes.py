"""The lane operators: thin Holoscan shells over the lane runtime (processing/runtime.py).

    triage -> gate -> prepare -> infer -> postprocess -> overlay -> sink -> results
                ^                                                  |
                +---------------- credit (one batch done) ---------+
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from holoscan.core import ConditionType, IOSpec, Operator

from holoburn.clinical.depth import BURN_CLASSES, CLASS_NAMES, LABELS
from holoburn.processing.lanes import UNSERVED_AT_STOP, LaneBoard
from holoburn.clinical.overlay import summary_lines
from holoburn.clinical.triage import Lane, LaneRouter
from holoburn.processing.frame import Frame
from holoburn.processing.runtime import LaneBatch, LaneLedger

log = logging.getLogger("holoburn.lanes")



class FrameFeedOp(Operator):
    """A camera stand-in: emits Frames cycling through images already in memory (pinned host
    memory, as a capture card's DMA buffers, when the caller made them so). Pace it with a
    PeriodicCondition and bound it with a CountCondition."""

    def __init__(self, fragment, *args, source_id: str, images, fps: float | None = None, **kwargs):
        self.source_id = source_id
        self.images = list(images)
        self.fps = fps
        self.emitted = 0
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec):
        spec.output("out")

    def compute(self, op_input, op_output, context):
        image = self.images[self.emitted % len(self.images)]
        ts = self.emitted / self.fps if self.fps else time.monotonic()
        op_output.emit(Frame(source=self.source_id, index=self.emitted, timestamp_s=ts, image=image), "out")
        self.emitted += 1


class LaneTriageOp(Operator):
    """Triage without queues, for an ungated chain (`chain` mode, data-flow tracking): gives each
    frame its lane (the router) and sends it to the chain serving that lane. With lanes, the
    triage is LaneGateOp's first step.

    routes: lane -> output port. A port waits for room downstream (Holoscan's back-pressure): a
    gate drains its ports into its lane queues every time it runs, so a full port means the gate
    is behind, and the camera then waits rather than a frame vanishing uncounted; what a full lane
    queue drops is the gate's to decide and count.
    """

    def __init__(self, fragment, *args, router: LaneRouter, routes: dict, **kwargs):
        self.router = router
        self.routes = dict(routes)
        self.ports = sorted(set(self.routes.values()))
        self.sent = Counter()
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec):
        spec.input("in")
        for port in self.ports:
            spec.output(port)

    def compute(self, op_input, op_output, context):
        frame: Frame = op_input.receive("in")
        lane = self.router.lane_for(frame.source)
        frame.lane = lane.name
        port = self.routes.get(lane) or self.routes[Lane.ROUTINE]
        self.sent[port] += 1
        op_output.emit(frame, port)


@dataclass
class GateLane:
    """One chain as the triage gate sees it: its queues, its accounting, and how lanes map onto
    its queues (the single-lane comparison maps every lane to ROUTINE)."""

    board: LaneBoard
    ledger: LaneLedger
    lane_map: dict = field(default_factory=dict)
    depth: int = 2


class LaneGateOp(Operator):
    """Triage and the lane queues, in one operator: gives each arriving frame its lane (the router:
    the source's default, raised to EMERGENCY while its last result shows a referral-grade burn),
    queues it on the chain serving that lane (clinical.lanes.LaneBoard: bounded, drop-oldest,
    counted) and releases batches, most urgent lane first, whenever a chain has room. Every
    chain's sink returns a credit for each batch done.

    One operator between the cameras and the lanes keeps the emergency path short (each operator
    hop is a wait for Python's GIL when routine lanes keep it busy) and spends one call, not two,
    per routine frame.

    chains: chain name -> GateLane; routes: lane -> chain name; inputs: number of sources (ports
    in0, in1, ...). Outputs `to_<chain>`, credits `credit_<chain>`.
    """

    def __init__(self, fragment, *args, router: LaneRouter, chains: dict, routes: dict, inputs: int,
                 port_capacity: int = 16, **kwargs):
        self.router = router
        # most urgent chain first: its batch leaves first when several are ready
        self.chains = dict(sorted(chains.items(), key=lambda kv: min(kv[1].board.lanes)))
        self.routes = dict(routes)
        self.n_inputs = inputs
        self.port_capacity = port_capacity
        self.received = 0
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec):
        names = [f"in{i}" for i in range(self.n_inputs)] + [f"credit_{c}" for c in self.chains]
        for name in names:
            # drained completely each time the gate runs; a source waits while its port is full
            spec.input(name).connector(IOSpec.ConnectorType.DOUBLE_BUFFER, capacity=self.port_capacity,
                                       policy=1).condition(ConditionType.NONE)
        for name, chain in self.chains.items():
            # a chain never holds more than `depth` batches (credits), so its queue always has room
            spec.output(f"to_{name}").connector(IOSpec.ConnectorType.DOUBLE_BUFFER,
                                                capacity=chain.depth).condition(ConditionType.NONE)
        spec.multi_port_condition(ConditionType.MULTI_MESSAGE_AVAILABLE, names, sampling_mode="SumOfAll", min_sum=1)

    def compute(self, op_input, op_output, context):
        for name, chain in self.chains.items():
            while op_input.receive(f"credit_{name}") is not None:
                chain.board.done()
        for i in range(self.n_inputs):
            port = f"in{i}"
            while True:
                frame = op_input.receive(port)
                if frame is None:
                    break
                self.received += 1
                self.queue(frame)
        for name, chain in self.chains.items():
            while True:
                taken = chain.board.next_batch()
                if taken is None:
                    break
                lane, frames = taken
                now = time.monotonic_ns()
                for frame in frames:
                    frame.extra["dequeued_ns"] = now
                op_output.emit(LaneBatch(lane, frames), f"to_{name}")

    def queue(self, frame: Frame) -> None:
        lane = self.router.lane_for(frame.source)
        frame.lane = lane.name
        chain = self.chains[self.routes.get(lane) or self.routes[Lane.ROUTINE]]
        queue_lane = lane if lane in chain.board.queues else chain.lane_map.get(lane, chain.board.lanes[-1])
        frame.extra["queue_lane"] = queue_lane.name
        frame.extra["queued_ns"] = time.monotonic_ns()
        for dropped, reason in chain.board.push(queue_lane, frame):
            dropped.drop(reason)
            chain.ledger.add(dropped, None)

    def stop(self):
        for chain in self.chains.values():
            for frame in chain.board.drain():
                frame.drop(UNSERVED_AT_STOP)
                chain.ledger.add(frame, None)


class _LaneStageOp(Operator):
    """Receive a batch (or a single frame on an ungated chain), run one stage of its lane's runtime
    on it, pass it on. A stage that fails drops the batch's frames with the stage's name and the
    batch still travels on, so its buffers are released and its credit returns."""

    stage = "stage"

    def __init__(self, fragment, *args, runtimes: dict, depth: int = 2, **kwargs):
        self.runtimes = runtimes  # queue lane -> LaneRuntime
        self.depth = depth
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec):
        spec.input("in").connector(IOSpec.ConnectorType.DOUBLE_BUFFER, capacity=self.depth + 1)
        self.outputs(spec)

    def outputs(self, spec):
        spec.output("out")

    def compute(self, op_input, op_output, context):
        batch = self.to_batch(op_input.receive("in"))
        runtime = self.runtimes[batch.lane]
        started = time.monotonic_ns()
        if not batch.failed:
            try:
                self.run(runtime, batch, context)
            except Exception as exc:  # one bad batch must not stop the lanes
                batch.fail(self.stage, exc)
        ended = time.monotonic_ns()
        batch.trace.append((self.stage, started, ended))
        for frame in batch.frames:
            frame.stage_ms[self.stage] = (ended - started) / 1e6
        self.emit(batch, op_output)

    def to_batch(self, message):
        if isinstance(message, LaneBatch):
            return message
        lane = Lane.parse(message.lane)  # an ungated chain: one frame is one batch of its lane
        if lane not in self.runtimes:
            lane = next(iter(self.runtimes))
        message.extra.setdefault("dequeued_ns", time.monotonic_ns())
        message.extra.setdefault("queue_lane", lane.name)
        return LaneBatch(lane, [message], gated=False)

    def run(self, runtime, batch, context):  # pragma: no cover - interface
        raise NotImplementedError

    def emit(self, batch, op_output):
        op_output.emit(batch, "out")


class LanePrepareOp(_LaneStageOp):
    """Upload (GPU) and letterbox + normalise into the lane's model-input buffer. On a GPU chain it
    takes the lane's stream from Holoscan (the CudaStreamPool given to this operator)."""

    stage = "preprocess"

    def run(self, runtime, batch, context):
        if runtime.device == "cuda" and runtime.stream_ptr is None:
            runtime.bind(context.allocate_cuda_stream(f"lane_{batch.lane.name.lower()}"))
        runtime.prepare(batch)


class LaneInferOp(_LaneStageOp):
    stage = "inference"

    def run(self, runtime, batch, context):
        runtime.infer(batch)


class LanePostprocessOp(_LaneStageOp):
    stage = "postprocess"

    def run(self, runtime, batch, context):
        runtime.postprocess(batch)


class LaneOverlayOp(_LaneStageOp):
    stage = "overlay"

    def run(self, runtime, batch, context):
        runtime.overlay(batch)


class LaneProcessOp(_LaneStageOp):
    """prepare, infer, postprocess and overlay in one operator: the same runtime calls, three
    operator hops (and three waits for Python's GIL among busy routine lanes) fewer. All of it is
    enqueued on the lane's stream; the sink still waits once, on the batch's event."""

    stage = "process"

    def run(self, runtime, batch, context):
        if runtime.device == "cuda" and runtime.stream_ptr is None:
            runtime.bind(context.allocate_cuda_stream(f"lane_{batch.lane.name.lower()}"))
        for step in ("prepare", "infer", "postprocess", "overlay"):
            getattr(runtime, step)(batch)
            if batch.failed:
                break


class LaneSinkOp(_LaneStageOp):
    """End of a lane's GPU work: waits for the batch (one event), computes its clinical numbers,
    feeds escalation, frees its buffer set, returns a credit to the gate and passes it on."""

    stage = "sink"

    def __init__(self, fragment, *args, credit: bool = True, view: bool = False, **kwargs):
        self.credit = credit
        self.view = view
        super().__init__(fragment, *args, **kwargs)

    def outputs(self, spec):
        spec.output("out")
        if self.credit:
            spec.output("credit")
        if self.view:
            spec.output("view").condition(ConditionType.NONE)

    def compute(self, op_input, op_output, context):
        batch = self.to_batch(op_input.receive("in"))
        runtime = self.runtimes[batch.lane]
        started = time.monotonic_ns()
        try:
            runtime.finish(batch)
        except Exception as exc:
            batch.fail(self.stage, exc)
        if batch.done_ns is None:
            batch.done_ns = time.monotonic_ns()
        batch.trace.append((self.stage, started, batch.done_ns))
        for frame in batch.frames:
            frame.stage_ms[self.stage] = (batch.done_ns - started) / 1e6
        # the slot's overlay stays valid until the lane reuses the slot (after `depth` more batches)
        runtime.release(batch)
        if self.view and not batch.failed:
            op_output.emit(batch, "view")
        op_output.emit(batch, "out")
        if self.credit and batch.gated:
            op_output.emit(1, "credit")


class LaneResultsOp(Operator):
    """Leaf of a chain: accounts every frame (processed or dropped), per lane."""

    def __init__(self, fragment, *args, ledger: LaneLedger, on_frame=None, **kwargs):
        self.ledger = ledger
        self.on_frame = on_frame  # optional callable(frame, done_ns), e.g. a results writer
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec):
        spec.input("in").connector(IOSpec.ConnectorType.DOUBLE_BUFFER, capacity=4)

    def compute(self, op_input, op_output, context):
        batch: LaneBatch = op_input.receive("in")
        for frame in batch.frames:
            self.ledger.add(frame, batch.done_ns, batch.trace, batch.gpu_ms)
            if self.on_frame is not None:
                self.on_frame(frame, batch.done_ns)


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
        frame = batch.frames[-1]
        lines = [f"{frame.source} #{frame.index} [{frame.lane}]"] + summary_lines(frame.findings or {})[:3]
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
