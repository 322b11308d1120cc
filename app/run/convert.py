"""`holoburn convert video:PATH DIR/BASENAME`: a video file as a Holoscan recording
(`.gxf_entities` / `.gxf_index`), replayable with `--source gxf:DIR/BASENAME` or any Holoscan
VideoStreamReplayerOp."""
from __future__ import annotations

from pathlib import Path

from holoburn.app.graph import GraphPlan, SourceSpec, run_graph
from holoburn.app.run.sources import open_reader, parse_source, source_id
from holoburn.clinical.errors import BadInput
from holoburn.clinical.triage import LaneRouter
from holoburn.operators.gxf_io import recorded_frames


def add_convert_arguments(p):
    p.add_argument("source", help="video:PATH to convert")
    p.add_argument("target", help="DIR/BASENAME of the recording to write")
    p.add_argument("--max-frames", type=int, help="convert only the first N frames")


def run_convert(args) -> int:
    kind, _ = parse_source(args.source)
    if kind != "video":
        raise BadInput(f"convert reads video:PATH sources, not {kind}")
    reader = open_reader(args.source, {})
    target = Path(args.target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # the graph's capture part alone: the source and its recording tap
    source = SourceSpec(source_id(args.source, 1), reader=reader, max_frames=args.max_frames)
    run_graph(GraphPlan(sources=[source], runtimes={}, policies={}, router=LaneRouter({}), results=None,
                        config={"results": {"record_gxf": str(target)}, "scheduler": {"worker_threads": 1, "gc": "default"}},
                        capture_only=True))
    written = recorded_frames(target.parent, target.name)
    expected = min(reader.frames_read, args.max_frames or reader.frames_read)
    if written != expected:
        raise RuntimeError(f"recording {target} holds {written} frames, expected {expected}")  # a defect, not input
    print(f"holoburn: wrote {written} frames to {target}.gxf_entities / .gxf_index")
    return 0
