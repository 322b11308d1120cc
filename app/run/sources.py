"""Sources by kind: `video:PATH`, `camera:/dev/videoN`, `gxf:DIR/BASENAME`, `dicom:PATH`, `image:PATH`
(a picture, a folder's pictures, or a glob; `**` for subfolders: media/images.py)."""
from __future__ import annotations

from pathlib import Path

from holoburn.clinical.errors import BadInput

KINDS = ("video", "camera", "gxf", "dicom", "image")


def parse_source(spec: str) -> tuple[str, str]:
    """'video:PATH' -> ('video', 'PATH'), with a clear error for anything else."""
    kind, sep, location = str(spec).partition(":")
    if not sep or not location:
        raise BadInput(f"source {spec!r}: give KIND:LOCATION with KIND one of {', '.join(KINDS)} (e.g. video:burns.mp4)")
    if kind not in KINDS:
        raise BadInput(f"source {spec!r}: kind {kind!r} is not supported; use one of {', '.join(KINDS)} "
                       f"(e.g. video:{location})")
    return kind, location


def source_id(spec: str, number: int) -> str:
    """The opaque id of the `number`-th source (1-based) of a run: `video:1`, `dicom:2`, ... Paths
    and file or folder names can hold patient names, so no output names a source by them; the map
    from id to location is written only on request (`--source-map`), to one file marked as such."""
    return f"{parse_source(spec)[0]}:{number}"


def gxf_recording(location: str) -> tuple[Path, str]:
    """'DIR/BASENAME' -> (DIR, BASENAME), checking both files of the recording exist."""
    path = Path(location)
    directory, basename = path.parent, path.name
    for suffix in (".gxf_entities", ".gxf_index"):
        part = directory / f"{basename}{suffix}"
        if not part.is_file():
            raise BadInput(f"Holoscan recording {location}: {part} not found "
                           "(give gxf:DIR/BASENAME without the .gxf_* suffix)")
        if part.stat().st_size == 0:
            raise BadInput(f"Holoscan recording {location}: {part} is empty (re-record or re-convert it)")
    return directory, basename


def open_reader(spec: str, config: dict, source_id: str | None = None):
    """A frame reader for the kinds that have one (video, camera, dicom, image); gxf replays through
    Holoscan's own operator instead. source_id: the opaque id the reader's messages name it by."""
    kind, location = parse_source(spec)
    if kind == "video":
        from holoburn.media.video import VideoReader

        return VideoReader(location)
    if kind == "camera":
        from holoburn.media.camera import Backoff, CameraReader

        cam = config["camera"]
        return CameraReader(location, width=cam["width"], height=cam["height"], fps=cam["fps"],
                            pixel_format=cam["pixel_format"],
                            backoff=Backoff(cam["retry_initial_s"], cam["retry_max_s"]))
    if kind == "dicom":
        from holoburn.app.run.dicom import DicomReader

        return DicomReader(location, config, Path(config["dicom"]["audit_log"]))
    if kind == "image":
        from holoburn.media.images import ImageReader

        return ImageReader(location, fps=config["image"]["fps"], name=source_id or f"{kind}:1")
    return None
