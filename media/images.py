"""Still photographs as a frame source (`image:PATH`) and their overlays out, one picture per frame.

PATH is one of, checked in this order:
- a file: that picture;
- a folder: the pictures directly in it (not in its subfolders), sorted by name;
- a glob (`*`, `?`, `[...]`; `**` for any depth of subfolders): the pictures it matches, sorted by
  their path below the glob's fixed folder. `image:photos/**` is every picture under photos/.
A folder or glob takes files by suffix (IMAGE_SUFFIXES) and passes over hidden files (`.name`, such
as the `._IMG_1.jpg` companions macOS leaves on other file systems) and every other file.

Each picture is decoded by Pillow, turned upright by its EXIF orientation (ImageOps.exif_transpose)
and converted to (H, W, 3) uint8 RGB at its own size (the model letterboxes every frame). Only the
pixels leave this module: no EXIF (GPS, camera, dates), no embedded text, and no file name, which
can name a patient. A picture that cannot be read is handed on without pixels, with its reason
(IMAGE_UNREADABLE, IMAGE_TOO_LARGE, IMAGE_NEEDS_PLUGIN), so that it is counted as a dropped frame;
it is named by its frame index only. `ImageReader.identifiers()` is the one place that ties frame
indices to paths (for source_map.IDENTIFIERS.json, written only on request).

HEIC/HEIF pictures are read when the pillow-heif plugin is installed; without it such a file is
dropped with IMAGE_NEEDS_PLUGIN and a message saying what to install.
"""
from __future__ import annotations

import glob
import logging
import os
import struct
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from holoburn.clinical.errors import BadFrame, BadInput
from holoburn.media.video import to_rgb8

log = logging.getLogger("holoburn.images")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".webp", ".heic", ".heif")
GLOB_CHARACTERS = "*?["

#: Frame.status of a picture that was not read, as results.jsonl and summary.json count it
IMAGE_UNREADABLE = "image_unreadable"  # damaged, truncated, not a picture, or cannot be opened
IMAGE_TOO_LARGE = "image_too_large"  # more pixels than Pillow's decompression-bomb limit
IMAGE_NEEDS_PLUGIN = "image_needs_plugin"  # HEIC/HEIF without pillow-heif

#: what Pillow raises on a damaged file: UnidentifiedImageError and "image file is truncated"
#: (OSError), SyntaxError from header parsers, the rest from damaged chunks, tags and EXIF blocks
DAMAGED_PICTURE = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError)

#: ISO base media brands of HEIF pictures (ftyp box at byte 4)
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


class ImageError(BadInput):
    """An image source names nothing usable (no such path, no pictures in a folder, a glob that
    matches none, a lone picture that cannot be read); the message names the location given."""


class PictureUnreadable(BadFrame):
    """One picture of a source cannot be read; `reason` is the status it is dropped with. The
    message never holds the file's path or name (Pillow's own messages do, so they are not kept)."""


def heif_plugin() -> bool:
    """Whether HEIC/HEIF pictures can be read: pillow-heif is installed (and now registered)."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


# --- which files ------------------------------------------------------------------------------------


def _is_picture(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()


def list_pictures(location: str) -> tuple[Path, list[Path]]:
    """(root, pictures) of an image source's location: a file, a folder or a glob (module doc).
    `root` is the folder the pictures' relative paths start from (a file's own folder, the
    folder, or a glob's fixed leading folders). ImageError naming the location when none is found."""
    path = Path(location)
    if path.is_file():
        return path.parent, [path]
    if path.is_dir():
        found = sorted((p for p in path.iterdir() if _is_picture(p)), key=lambda p: p.name)
        if not found:
            below = any(_is_picture(p) for p in path.rglob("*"))
            hint = (f"; its subfolders hold some: give image:{location.rstrip('/')}/** to take them too" if below
                    else "")
            raise ImageError(f"no pictures in the folder {location} (looked for {', '.join(IMAGE_SUFFIXES)} "
                             f"directly in it{hint})")
        return path, found
    if any(c in location for c in GLOB_CHARACTERS):
        parts = path.parts
        fixed = next(i for i, part in enumerate(parts) if any(c in part for c in GLOB_CHARACTERS))
        root = Path(*parts[:fixed]) if fixed else Path(".")
        found = {Path(p) for p in glob.glob(location, recursive=True)}
        found = sorted((p for p in found if _is_picture(p)), key=lambda p: os.path.relpath(p, root))
        if not found:
            raise ImageError(f"no pictures match {location} (files ending {', '.join(IMAGE_SUFFIXES)}; "
                             "`**` reaches into subfolders, e.g. image:photos/**)")
        return root, found
    raise ImageError(f"image source not found: {location} (give image:FILE, image:FOLDER or a glob such as "
                     "image:FOLDER/** for a folder and its subfolders)")


# --- one picture ------------------------------------------------------------------------------------


def read_picture(path: Path, heif: bool = False) -> np.ndarray:
    """The picture at `path`, upright by its EXIF orientation, as (H, W, 3) uint8 RGB.
    The first picture of a multi-page TIFF or an animated WebP/PNG. PictureUnreadable with a
    message free of the path when it cannot be read."""
    try:
        with open(path, "rb") as stream, Image.open(stream) as picture:
            return _rgb8(ImageOps.exif_transpose(picture))
    except Image.DecompressionBombError:
        raise PictureUnreadable(IMAGE_TOO_LARGE, f"more than {2 * Image.MAX_IMAGE_PIXELS} pixels (Pillow's "
                                "decompression-bomb limit): scale the picture down") from None
    except UnidentifiedImageError:
        if not heif and _looks_like_heif(path):
            raise PictureUnreadable(IMAGE_NEEDS_PLUGIN, "a HEIC/HEIF picture: install the pillow-heif plugin "
                                    "(pip install pillow-heif) or convert it to JPEG") from None
        raise PictureUnreadable(IMAGE_UNREADABLE, "not a picture Pillow recognises (a damaged header, "
                                "or another kind of file)") from None
    except FileNotFoundError:
        raise PictureUnreadable(IMAGE_UNREADABLE, "the file is gone (removed since the folder was listed)") from None
    except PermissionError:
        raise PictureUnreadable(IMAGE_UNREADABLE, "the file cannot be opened (no permission to read it)") from None
    except DAMAGED_PICTURE as exc:
        truncated = isinstance(exc, OSError) and "truncated" in str(exc).lower()
        raise PictureUnreadable(IMAGE_UNREADABLE, "the file is truncated" if truncated
                                else "its picture data is damaged") from None


def picture_size(path: Path) -> tuple[int, int] | None:
    """(height, width) of the picture as it will be shown (EXIF orientation applied), from its
    header alone; None when the header cannot be read."""
    try:
        with open(path, "rb") as stream, Image.open(stream) as picture:
            width, height = picture.size
            turned = picture.getexif().get(0x0112) in (5, 6, 7, 8)  # Orientation: a quarter turn
    except (Image.DecompressionBombError, *DAMAGED_PICTURE):
        return None
    return (width, height) if turned else (height, width)


def _rgb8(picture: Image.Image) -> np.ndarray:
    if picture.mode in _SIXTEEN_BIT:
        return to_rgb8(np.asarray(picture).astype(np.uint16))
    if picture.mode in ("I", "F"):
        return to_rgb8(np.asarray(picture))
    if picture.mode != "RGB":
        picture = picture.convert("RGB")
    return np.ascontiguousarray(np.array(picture, dtype=np.uint8))


def _looks_like_heif(path: Path) -> bool:
    try:
        with open(path, "rb") as stream:
            head = stream.read(16)
    except OSError:
        return False
    return head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


# --- the reader ---------------------------------------------------------------------------------------


class ImageReader:
    """The pictures of `image:PATH` as frames, one per picture, in the listed order.

    next_frame() -> (rgb (H, W, 3) uint8 or None, timestamp_s, status): status "ok", or why the
    picture was not read (no pixels); (None, None, None) after the last. Frame i's timestamp is
    i / fps: pictures have no capture clock the pipeline may use (EXIF dates are not read), and
    `fps` paces them when sources run side by side (`image.fps`).

    name: the source's opaque id (`image:1`), the only name messages give it. A picture given as a
    file must be readable (ImageError naming it otherwise). Of a folder or glob, an unreadable
    picture is dropped with its reason and the rest are read; an ImageError when not one header reads.
    """

    stills = True  # its overlays are pictures, one per frame, not a video

    def __init__(self, location: str, fps: float = 1.0, name: str = "image", *, listed=None):
        self.location, self.fps, self.name = str(location), float(fps), name
        self.root, self.files = listed or list_pictures(self.location)
        self.heif = heif_plugin()
        self.frame_count = len(self.files)
        self.frames_read = 0
        self.missing_frames = 0
        self.skipped: list[str] = []
        self._next = 0
        self._first = None  # a picture given alone, read at opening
        if listed is None and Path(self.location).is_file():
            try:
                self._first = read_picture(self.files[0], self.heif)
            except PictureUnreadable as exc:
                raise ImageError(f"cannot read the picture {self.location}: {exc}") from None
            self.height, self.width = self._first.shape[:2]
        else:
            size = next(filter(None, map(picture_size, self.files)), None)
            if size is None and listed is None:
                heif = not self.heif and any(map(_looks_like_heif, self.files))
                raise ImageError(f"none of the {len(self.files)} pictures of {self.location} can be read ("
                                 + ("HEIC/HEIF pictures need the pillow-heif plugin: pip install pillow-heif"
                                    if heif else "damaged files, or not pictures") + ")")
            self.height, self.width = size or (0, 0)

    def next_frame(self):
        """(rgb uint8 (H, W, 3) or None, timestamp_s, status); (None, None, None) at the end."""
        if self._next >= len(self.files):
            return None, None, None
        index = self._next
        self._next += 1
        timestamp = index / self.fps
        image, self._first = self._first, None
        if image is None:
            try:
                image = read_picture(self.files[index], self.heif)
            except PictureUnreadable as exc:
                note = f"{self.name} frame {index}: picture not read ({exc.reason}): {exc}"
                log.warning("%s", note)
                self.skipped.append(note)
                return None, timestamp, exc.reason
        self.frames_read += 1
        return image, timestamp, "ok"

    def identifiers(self) -> dict[str, str]:
        """Frame index (six digits, as overlays are named) -> the picture's path. Paths can name
        patients: this goes only to the identifiers map written on request."""
        return {f"{i:06d}": os.path.abspath(path) for i, path in enumerate(self.files)}

    def relative_names(self) -> list[str]:
        """Each picture's path below the source's root, without its suffix (`ward3/burn_07`): what
        its ground-truth mask is named by (`MASKS/ward3/burn_07.png`)."""
        return [Path(os.path.relpath(path, self.root)).with_suffix("").as_posix() for path in self.files]

    def reopen(self) -> "ImageReader":
        """The same pictures again (a looping source); one gone since is dropped when its turn comes."""
        return ImageReader(self.location, self.fps, self.name, listed=(self.root, self.files))

    def close(self) -> None:
        self._first = None


# --- overlays out -----------------------------------------------------------------------------------


class StillWriter:
    """The overlays of a still-image source: FOLDER/<prefix>_<frame:06d>.png, one PNG per processed
    frame at the picture's own size. Named by the source's opaque id (`image-1`) and the frame index,
    never by the input's file name; written from pixels alone (no EXIF, no text chunks), and whole or
    not at all (written beside, then renamed). The same calls as media.video.VideoWriter."""

    def __init__(self, folder: str | os.PathLike, prefix: str):
        self.path = Path(folder)
        self.prefix = prefix
        self.frames_written = 0
        self.size = None  # (width, height) of the last picture written
        self._written: list[Path] = []

    def name_of(self, index: int) -> str:
        return f"{self.prefix}_{index:06d}.png"

    def write(self, frame_rgb: np.ndarray, index: int | None = None) -> None:
        """Write frame `index`'s overlay (RGB uint8); OSError when it cannot be written."""
        index = self.frames_written if index is None else index
        target = self.path / self.name_of(index)
        ok, data = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(frame_rgb), cv2.COLOR_RGB2BGR))
        if not ok:
            raise OSError(f"cannot encode the overlay {target.name} as PNG")
        self.path.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        try:
            with open(partial, "wb") as stream:
                stream.write(data.tobytes())
            os.replace(partial, target)
        except OSError:
            partial.unlink(missing_ok=True)
            raise
        self.frames_written += 1
        self.size = (frame_rgb.shape[1], frame_rgb.shape[0])
        self._written.append(target)

    def close(self) -> None:
        pass

    def readable_frames(self) -> int:
        """Overlays written that are still there, whole (a PNG ends with its IEND chunk)."""
        whole = 0
        for path in self._written:
            try:
                with open(path, "rb") as stream:
                    stream.seek(-12, os.SEEK_END)
                    whole += stream.read(12)[4:8] == b"IEND"
            except OSError:
                continue
        return whole
