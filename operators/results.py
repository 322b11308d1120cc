"""results: the end of every chain. Hands each frame of a finished batch to the run's results
writer (processing.recorder.RunRecorder: results.jsonl, overlays, masks, observers) or, in a
benchmark, to a bare ledger; then gives the batch's buffer set back to its lane where the
frame's outputs lived there."""
from __future__ import annotations

from holoscan.core import IOSpec, Operator

from holoburn.processing.frame import frame_from_result
from holoburn.processing.runtime import LaneBatch


class ResultsOp(Operator):
    """recorder: anything with add(frame, done_ns, trace, gpu_ms). runtimes: queue lane -> lane
    runtime, whose buffer set this operator releases (None: the sink released it)."""

    def __init__(self, fragment, *args, recorder, runtimes: dict | None = None, remote: bool = False, **kwargs):
        self.recorder = recorder
        self.runtimes = runtimes
        self.remote = remote  # the lanes run in another process: frames come one by one, as tensors
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec):
        spec.input("in").connector(IOSpec.ConnectorType.DOUBLE_BUFFER, capacity=4)

    def compute(self, op_input, op_output, context):
        if self.remote:
            frame = frame_from_result(op_input.receive("in"))
            self.recorder.add(frame, None)
            self._stop_if_full()
            return
        batch: LaneBatch = op_input.receive("in")
        for frame in batch.frames:
            self.recorder.add(frame, batch.done_ns, batch.trace, batch.gpu_ms)
        if self.runtimes is not None:
            self.runtimes[batch.lane].release(batch)
        self._stop_if_full()

    def _stop_if_full(self) -> None:
        """The results writer has no room for more pictures (a full disk): stop the sources, as
        at their end; the frames on their way are recorded without pictures, and the run then
        closes its files and reports the stop."""
        if getattr(self.recorder, "full", None) is None:
            return
        sources = getattr(self.fragment, "feeds", None)  # the source operators, in this process
        for name in [op.name for op in sources] if sources else [""]:  # "": every operator
            self.fragment.stop_execution(name)
