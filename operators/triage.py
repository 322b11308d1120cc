"""triage: gives each frame its lane and sends it to the chain serving that lane.

The lane is the source's configured one, raised to EMERGENCY while the source's recent results
show referral-grade burn (clinical.triage.LaneRouter). Those results come back as a flow: each
chain's sink sends a `Feedback` (its triage levels and, with queues, a credit) to this operator's
`feedback_<chain>` port. A frame is triaged with the results that have come back by then, so in
a pipelined graph the lane of a frame can depend on timing; its mask and numbers never do.

Two ways to hand frames on, chosen per graph:
- gated (several sources, live cameras): frames wait in bounded lane queues
  (processing.lanes.LaneBoard: drop-oldest or refuse-newest, every drop counted) and leave in
  batches, most urgent lane first, while their chain holds fewer than `depth` batches; each
  batch done returns a credit. One operator does triage and queueing: each operator hop is a
  wait for Python's GIL when routine lanes keep it busy.
- ungated (one recording or camera): each frame goes straight on as a batch of one; Holoscan's
  back-pressure makes the source wait, so nothing is dropped.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from holoscan.core import ConditionType, IOSpec, Operator

from holoburn.clinical.triage import Lane, LaneRouter
from holoburn.processing.frame import Frame, frame_from_message
from holoburn.processing.lanes import UNSERVED_AT_STOP, Feedback, LaneBoard
from holoburn.processing.runtime import LaneBatch

log = logging.getLogger("holoburn.triage")


@dataclass
class ChainRoute:
    """One chain as triage sees it: its lane queues (None: ungated), how lanes map onto them
    (the single-lane comparison maps every lane to ROUTINE), and its depth in batches."""

    board: LaneBoard | None
    lane_map: dict = field(default_factory=dict)
    depth: int = 2
    lanes: tuple = ()


class TriageOp(Operator):
    """inputs in0..in{n-1} (one per source), feedback_<chain>; outputs to_<chain>.

    router: the lanes of the sources; chains: chain name -> ChainRoute; routes: lane -> chain
    name. dropped(frame): called for every frame a full queue drops (it is accounted there).
    """

    def __init__(self, fragment, *args, router: LaneRouter, chains: dict, routes: dict, inputs: int,
                 dropped=None, port_capacity: int = 16, **kwargs):
        self.router = router
        self.chains = dict(sorted(chains.items(), key=lambda kv: min(kv[1].lanes or (Lane.ROUTINE,))))
        self.gated = any(c.board is not None for c in self.chains.values())
        self.routes = dict(routes)
        self.n_inputs = inputs
        self.port_capacity = port_capacity
        self.dropped = dropped
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec):
        inputs = [f"in{i}" for i in range(self.n_inputs)]
        feedback = [f"feedback_{c}" for c in self.chains]
        for name in feedback:  # results never make triage run: they are read when a frame comes
            spec.input(name).connector(IOSpec.ConnectorType.DOUBLE_BUFFER, capacity=64,
                                       policy=1).condition(ConditionType.NONE)
        if self.gated:
            for name in inputs:  # drained whole each time; a source waits while its port is full
                spec.input(name).connector(IOSpec.ConnectorType.DOUBLE_BUFFER, capacity=self.port_capacity,
                                           policy=1).condition(ConditionType.NONE)
            for name, chain in self.chains.items():  # a chain holds at most `depth` batches: room guaranteed
                spec.output(f"to_{name}").connector(IOSpec.ConnectorType.DOUBLE_BUFFER,
                                                    capacity=chain.depth).condition(ConditionType.NONE)
            spec.multi_port_condition(ConditionType.MULTI_MESSAGE_AVAILABLE, inputs + feedback,
                                      sampling_mode="SumOfAll", min_sum=1)
        else:
            for name in inputs:
                spec.input(name)
            for name in self.chains:
                spec.output(f"to_{name}")

    def compute(self, op_input, op_output, context):
        for name, chain in self.chains.items():
            while (feedback := op_input.receive(f"feedback_{name}")) is not None:
                self.take_feedback(feedback, chain)
        for i in range(self.n_inputs):
            while (message := op_input.receive(f"in{i}")) is not None:
                self.route(message if isinstance(message, Frame) else frame_from_message(message), op_output)
                if not self.gated:
                    break
        if self.gated:
            self.release(op_output)

    def take_feedback(self, feedback: Feedback, chain: ChainRoute) -> None:
        if feedback.credit and chain.board is not None:
            chain.board.done()
        before = len(self.router.changes)
        for source, index, triage in feedback.outcomes:
            self.router.observe(source, index, triage)
        for change in self.router.changes[before:]:
            log.info("lane change: %s frame %d %s -> %s (%s)", change["source"], change["frame"], change["from"],
                     change["to"], change["reason"])

    def route(self, frame: Frame, op_output) -> None:
        lane = self.router.lane_for(frame.source)
        frame.lane = lane.name
        if lane is Lane.EMERGENCY and (reason := self.router.reason_for(frame.source)):
            frame.extra["lane_reason"] = reason  # the overlay says why, beside the lane
        name = self.routes.get(lane) or self.routes[Lane.ROUTINE]
        chain = self.chains[name]
        if chain.board is None:
            frame.extra["queue_lane"] = chain.lanes[0].name
            frame.extra["dequeued_ns"] = time.monotonic_ns()
            op_output.emit(LaneBatch(chain.lanes[0], [frame], gated=False), f"to_{name}")
            return
        queue_lane = lane if lane in chain.board.queues else chain.lane_map.get(lane, chain.board.lanes[-1])
        frame.extra["queue_lane"] = queue_lane.name
        frame.extra["queued_ns"] = time.monotonic_ns()
        for dropped, reason in chain.board.push(queue_lane, frame):
            dropped.drop(reason)
            self.dropped(dropped)

    def release(self, op_output) -> None:
        for name, chain in self.chains.items():
            while (taken := chain.board.next_batch()) is not None:
                lane, frames = taken
                now = time.monotonic_ns()
                for frame in frames:
                    frame.extra["dequeued_ns"] = now
                op_output.emit(LaneBatch(lane, frames), f"to_{name}")

    def stop(self):
        for chain in self.chains.values():
            for frame in chain.board.drain() if chain.board is not None else ():
                frame.drop(UNSERVED_AT_STOP)
                self.dropped(frame)
