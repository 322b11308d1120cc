"""`holoburn convert video:PATH DIR/BASENAME`: a video file as a Holoscan recording
(`.gxf_entities` / `.gxf_index`), replayable with `--source gxf:DIR/BASENAME` or any Holoscan
VideoStreamReplayerOp."""
from __future__ import annotations

from pathlib import Path

from holoscan.core import Application
from holoscan.operators import VideoStreamRecorderOp

from holoburn.operators.frame_source import FrameSourceOp
from holoburn.operators.gxf_io import FrameToTensorOp, recorded_frames
from holoburn.app.run.sources import open_reader, parse_source, source_id


def add_convert_arguments(p):
    p.add_argument("source", help="video:PATH to convert")
    p.add_argument("target", help="DIR/BASENAME of the recording to write")
    p.add_argument("--max-frames", type=int, help="convert only the first N frames")


class _Convert(Application):
    def __init__(self, reader, spec, target: Path, max_frames, *args, **kwargs):
        self.reader, self.spec, self.target, self.max_frames = reader, spec, target, max_frames
        super().__init__(*args, **kwargs)

    def compose(self):
        source = FrameSourceOp(self, reader=self.reader, source_id=source_id(self.spec), max_frames=self.max_frames,
                               name="source")
        to_tensor = FrameToTensorOp(self, name="to_tensor")
        recorder = VideoStreamRecorderOp(self, directory=str(self.target.parent), basename=self.target.name,
                                         name="recorder")
        self.add_flow(source, to_tensor)
        self.add_flow(to_tensor, recorder)


def run_convert(args) -> int:
    kind, _ = parse_source(args.source)
    if kind != "video":
        raise ValueError(f"convert reads video:PATH sources, not {kind}")
    reader = open_reader(args.source, {})
    target = Path(args.target)
    target.parent.mkdir(parents=True, exist_ok=True)
    app = _Convert(reader, args.source, target, args.max_frames)
    app.run()
    written = recorded_frames(target.parent, target.name)
    expected = min(reader.frames_read, args.max_frames or reader.frames_read)
    if written != expected:
        raise RuntimeError(f"recording {target} holds {written} frames, expected {expected}")
    print(f"holoburn: wrote {written} frames to {target}.gxf_entities / .gxf_index")
    return 0
