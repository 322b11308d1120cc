"""`video:PATH` on real files encoded with FFmpeg (through PyAV): every listed codec and pixel
format, frame counts and timestamps checked against what the container says, truncated and
corrupt files, bad input, real-time pacing and looping through the real graph."""
from __future__ import annotations

import json
import time
from fractions import Fraction

import numpy as np
import pytest
import yaml

from holoburn.media.video import DECODE_ERROR, VideoError, VideoReader
from test_pipeline import holoburn

av = pytest.importorskip("av", reason="PyAV (FFmpeg encoders) makes the test videos: pip install av")

BITS = 8  # a frame's index is drawn as 8 bright/dark blocks across the top half


# --- making videos ----------------------------------------------------------------------------------

def pattern(index: int, width: int, height: int, depth: str = "rgb", rng=None) -> np.ndarray:
    """A frame that says which frame it is: bit k of `index` is block k of the top half (bright
    or dark). Colour frames have a red bottom-left and a blue bottom-right (to check RGB order);
    with `rng`, the bottom-right is noise instead (to give packets some bulk)."""
    high, low = {"rgb": (220, 30), "gray": (230, 30), "gray16": (60000, 2000), "rgb48": (60000, 2000)}[depth]
    dtype = np.uint16 if depth in ("gray16", "rgb48") else np.uint8
    channels = () if depth.startswith("gray") else (3,)
    frame = np.full((height, width, *channels), low, dtype)
    block = width // BITS
    for k in range(BITS):
        if index >> k & 1:
            frame[: height // 2, k * block:(k + 1) * block] = high
    if channels:
        frame[height // 2:, : width // 2] = (high, low, low)
        frame[height // 2:, width // 2:] = (low, low, high)
        if rng is not None:
            frame[height // 2:, width // 2:] = rng.integers(0, 255, frame[height // 2:, width // 2:].shape)
    return frame


def encode(path, codec, pix_fmt, count, width=64, height=48, rate=30, depth="rgb", pts_ms=None, noise=False,
           options=None, container_options=None):
    """Encode `count` pattern frames with FFmpeg; pts_ms gives each frame's own time (variable rate)."""
    in_format = {"rgb": "rgb24", "gray": "gray", "gray16": "gray16le", "rgb48": "rgb48le"}[depth]
    rng = np.random.default_rng(7) if noise else None
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=rate, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if pts_ms:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(pattern(i, width, height, depth, rng), format=in_format)
            if pts_ms:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def container_says(path) -> dict:
    """What FFmpeg (through PyAV) says of a file: frames listed (counting them where the container
    does not), each decodable frame's time in seconds from the first, and the picture size."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start = stream.start_time or 0
        times = []
        for packet in container.demux(stream):
            try:
                times += [float((f.pts - start) * stream.time_base) for f in packet.decode()]
            except av.error.FFmpegError:  # a frame that does not decode
                pass
        return {"frames": stream.frames or len(times), "times": times, "size": (stream.width, stream.height),
                "rate": float(stream.average_rate or 0)}


def frame_index(rgb: np.ndarray) -> int:
    """The index drawn by `pattern`, read back from a decoded frame."""
    height, width = rgb.shape[:2]
    block = width // BITS
    strip = rgb[height // 8: 3 * height // 8].astype(np.float32).mean(axis=(0, 2))
    return sum(1 << k for k in range(BITS) if strip[k * block + block // 4: (k + 1) * block - block // 4].mean() > 128)


def decode_all(path_or_reader):
    """Everything a reader hands out: [(rgb or None, timestamp_s, status)], and the reader."""
    reader = path_or_reader if isinstance(path_or_reader, VideoReader) else VideoReader(path_or_reader)
    items = []
    while True:
        item = reader.next_frame()
        if item[2] is None:
            return items, reader
        items.append(item)


def corrupt(path, out, at: float, nbytes: int, seed=1):
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    data[start:start + nbytes] = np.random.default_rng(seed).bytes(nbytes)
    out.write_bytes(bytes(data))
    return out


# --- every codec and pixel format ------------------------------------------------------------------

CODECS = {
    # name: (file name, encoder, pixel format, frames, width, height, rate, depth, extra)
    "h264-mp4": ("h264.mp4", "libx264", "yuv420p", 12, 64, 48, 30, "rgb", {}),
    "h264-444-odd-size": ("h264_444.mp4", "libx264", "yuv444p", 10, 161, 97, 30, "rgb", {}),
    "h264-10bit": ("h264_10bit.mp4", "libx264", "yuv420p10le", 6, 64, 48, 30, "rgb48", {}),
    "mjpeg-avi": ("mjpeg.avi", "mjpeg", "yuvj420p", 10, 64, 48, 30, "rgb", {}),
    "vp9-webm": ("vp9.webm", "libvpx-vp9", "yuv420p", 10, 64, 48, 30, "rgb", {}),
    "mpeg4-12.5fps": ("mpeg4.mp4", "mpeg4", "yuv420p", 10, 64, 48, Fraction(25, 2), "rgb", {}),
    "gray-ffv1": ("gray.mkv", "ffv1", "gray", 8, 64, 48, 30, "gray", {}),
    "gray-h264": ("gray_h264.mp4", "libx264", "gray", 8, 64, 48, 30, "gray", {}),
    "gray16-ffv1": ("gray16.mkv", "ffv1", "gray16le", 8, 64, 48, 30, "gray16", {}),
    "rgb16-ffv1": ("rgb16.mkv", "ffv1", "gbrp16le", 8, 64, 48, 30, "rgb48", {}),
    "variable-rate-mkv": ("vfr.mkv", "libx264", "yuv420p", 8, 64, 48, 25, "rgb",
                          {"pts_ms": [0, 40, 80, 200, 240, 260, 400, 440]}),
}


@pytest.mark.parametrize("case", CODECS, ids=list(CODECS))
def test_every_frame_of_each_codec_with_the_containers_counts_and_times(tmp_path, case):
    name, codec, pix_fmt, count, width, height, rate, depth, extra = CODECS[case]
    path = encode(tmp_path / name, codec, pix_fmt, count, width, height, rate, depth, **extra)
    truth = container_says(path)
    assert truth["frames"] == count

    items, reader = decode_all(path)
    assert [status for _, _, status in items] == ["ok"] * count
    assert reader.frames_read == reader.frame_count == truth["frames"] == count
    assert reader.missing_frames == 0 and reader.decode_errors == 0
    assert (reader.width, reader.height) == truth["size"] == (width, height)
    # order and identity: every frame, each once, in order
    assert [frame_index(rgb) for rgb, _, _ in items] == list(range(count))
    # timestamps: the container's presentation times, within half a frame
    period = 1 / (reader.fps or 30)
    assert [ts for _, ts, _ in items] == pytest.approx(truth["times"], abs=period / 2)
    if "pts_ms" in extra:
        assert [ts for _, ts, _ in items] == pytest.approx([t / 1000 for t in extra["pts_ms"]], abs=1e-3)
    if rate == Fraction(25, 2):
        assert reader.fps == pytest.approx(12.5) and items[-1][1] == pytest.approx(9 * 0.08, abs=1e-3)
    for rgb, _, _ in items:
        assert rgb.shape == (height, width, 3) and rgb.dtype == np.uint8
    first = items[1][0].astype(int)  # frame 1: block 0 bright, block 1 dark
    bright, dark = first[height // 4, width // BITS // 2], first[height // 4, width // BITS * 3 // 2]
    if depth.startswith("gray"):
        assert np.ptp(bright) <= 2 and np.ptp(dark) <= 2, "grey comes out as R = G = B"
    if depth in ("gray16", "rgb48"):
        # 16-bit scaled to 8 (60000 -> ~234, 2000 -> ~8), not wrapped (60000 & 255 = 96, 2000 & 255 = 208)
        assert bright.min() > 200 and dark.max() < 30
    if not depth.startswith("gray"):
        red, blue = first[3 * height // 4, width // 8], first[3 * height // 4, 7 * width // 8]
        assert red[0] > 150 > red[2] and blue[2] > 150 > blue[0], "channels come out in RGB order"
    reader.close()


def test_avi_with_b_frames_is_timed_by_frame_index(tmp_path):
    """AVI stores no times, only a rate; OpenCV reports B-frame AVI times shifted by the
    reordering delay (and none for the last frames): such files are timed by index / fps."""
    path = encode(tmp_path / "bframes.avi", "mpeg4", "yuv420p", 12, options={"bf": "2"})
    items, reader = decode_all(path)
    assert [frame_index(rgb) for rgb, _, _ in items] == list(range(12))
    assert [ts for _, ts, _ in items] == pytest.approx([i / 30 for i in range(12)], abs=1e-6)
    assert reader.frame_count == container_says(path)["frames"] == 12


def test_loop_restarts_the_same_file(tmp_path):
    path = encode(tmp_path / "short.mp4", "libx264", "yuv420p", 6)
    items, reader = decode_all(path)
    again, _ = decode_all(reader.reopen())
    assert [frame_index(f) for f, _, _ in items] == [frame_index(f) for f, _, _ in again] == list(range(6))


# --- truncated and corrupt files -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def bulky(tmp_path_factory):
    """20 frames with a noisy corner (so the frames, not the headers, fill the file): MJPEG in AVI,
    and H.264 in an MP4 with its index first ('faststart', as streaming cameras write)."""
    directory = tmp_path_factory.mktemp("bulky")
    return {
        "avi": encode(directory / "bulky.avi", "mjpeg", "yuvj420p", 20, 96, 64, noise=True),
        "mp4": encode(directory / "bulky.mp4", "libx264", "yuv420p", 20, 96, 64, noise=True,
                      container_options={"movflags": "faststart"}),
        "mp4-index-last": encode(directory / "index_last.mp4", "libx264", "yuv420p", 20, 96, 64, noise=True),
    }


@pytest.mark.parametrize("kind", ["avi", "mp4"])
def test_truncated_file_yields_every_decodable_frame_then_counts_the_missing(tmp_path, bulky, kind):
    whole = bulky[kind]
    cut = tmp_path / f"cut{whole.suffix}"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    decodable = container_says(cut)["times"]
    assert 0 < len(decodable) < 20

    items, reader = decode_all(cut)
    decoded = [(rgb, ts) for rgb, ts, status in items if status == "ok"]
    assert len(decoded) == reader.frames_read == len(decodable), "every frame FFmpeg can decode"
    # the same frames at the same times (with B-frames, a cut in decode order can leave gaps)
    assert [frame_index(rgb) for rgb, _ in decoded] == [round(t * 30) for t in decodable]
    assert [ts for _, ts in decoded] == pytest.approx(decodable, abs=1 / 60)
    assert reader.missing_frames > 0
    assert reader.frames_read + reader.decode_errors + reader.missing_frames == reader.declared_frames == 20
    assert str(cut) in reader.accounting() and "missing" in reader.accounting()


def test_truncated_file_through_the_graph(tmp_path, tiny_card, bulky):
    cut = tmp_path / "cut.avi"
    cut.write_bytes(bulky["avi"].read_bytes()[: int(bulky["avi"].stat().st_size * 0.6)])
    items, reader = decode_all(cut)
    assert reader.missing_frames > 0 and reader.frames_read == len(container_says(cut)["times"])
    out = tmp_path / "out"
    result = holoburn("run", "--source", f"video:{cut}", "--model", tiny_card, "--out", out)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in lines] == list(range(len(items)))
    assert [r["status"] for r in lines] == [status for _, _, status in items]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_in"] == len(items) and summary["processed"] == reader.frames_read
    assert summary["missing_from_container"] == reader.missing_frames > 0
    assert summary["frames_in"] + summary["missing_from_container"] == 20
    assert f"video:1: the container lists 20 frames; {reader.frames_read} decoded" in result.stderr
    assert f"{reader.missing_frames} missing" in result.stderr and "Traceback" not in result.stderr


def test_corrupt_middle_is_read_past_and_its_lost_frames_counted_in_place(tmp_path, tiny_card, bulky):
    """OpenCV's read() stops at the first packet the decoder rejects as if the file ended; the
    reader reads on, and the frames that did not decode come out in their place, counted."""
    import cv2

    bad = corrupt(bulky["mp4"], tmp_path / "bad.mp4", at=0.5, nbytes=2000)
    capture, plain = cv2.VideoCapture(str(bad)), 0
    while capture.read()[0]:
        plain += 1

    items, reader = decode_all(bad)
    statuses = [status for _, _, status in items]
    assert reader.frames_read > plain, "frames after the corrupt stretch are read"
    assert reader.decode_errors == statuses.count(DECODE_ERROR) > 0
    assert reader.frames_read + reader.decode_errors + reader.missing_frames == 20
    assert reader.frames_read == len(container_says(bad)["times"]), "every frame FFmpeg can decode"
    times = [ts for _, ts, _ in items]
    assert times == sorted(times) and times[-1] == pytest.approx(19 / 30, abs=1e-3)
    assert all(rgb is None for rgb, _, status in items if status == DECODE_ERROR)

    out = tmp_path / "out"
    result = holoburn("run", "--source", f"video:{bad}", "--model", tiny_card, "--out", out)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in lines] == statuses
    assert [r["timestamp_s"] for r in lines] == pytest.approx(times, abs=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dropped"] == {DECODE_ERROR: reader.decode_errors} and summary["missing_from_container"] == 0
    assert f"video:1: the container lists 20 frames; {reader.frames_read} decoded, {reader.decode_errors} failed" \
        in result.stderr


def test_variable_rate_is_not_taken_for_missing_frames(tmp_path):
    """Matroska states no frame count: OpenCV estimates duration x rate (12 here). The file holds 8
    frames that run to its end, so nothing is missing and the count becomes 8."""
    path = encode(tmp_path / "vfr.mkv", "libx264", "yuv420p", 8, rate=25, pts_ms=[0, 40, 80, 200, 240, 260, 400, 440])
    items, reader = decode_all(path)
    assert reader.declared_frames != 8 and reader.frame_count == 8 and reader.missing_frames == 0


# --- bad input -----------------------------------------------------------------------------------------

def _audio_only(path):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 8000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _png(path):
    import cv2

    ok, data = cv2.imencode(".png", np.zeros((40, 50, 3), np.uint8))
    path.write_bytes(data.tobytes())
    return path


def _index_cut_off(path, bulky):
    path.write_bytes(bulky["mp4-index-last"].read_bytes()[: int(bulky["mp4-index-last"].stat().st_size * 0.6)])
    return path


def _write(path, data):
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


BAD_INPUT = {
    # case: (make the file in tmp_path, what the message must say)
    "missing": (lambda p, b: p / "nowhere.mp4", "video not found"),
    "directory": (lambda p, b: p, "not a file"),
    "empty": (lambda p, b: _write(p / "empty.mp4", b""), "empty (0 bytes)"),
    "text": (lambda p, b: _write(p / "notes.mp4", "patient seen at 10:00\n"),
             "is a text file, not a video, despite its .mp4 name"),
    "png-renamed": (lambda p, b: _png(p / "photo.mp4"), "is a PNG image, not a video, despite its .mp4 name"),
    "audio-only": (lambda p, b: _audio_only(p / "voice.mp4"), "has no video track (its tracks: audio)"),
    "malformed-header": (lambda p, b: _write(p / "noise.mp4", np.random.default_rng(3).bytes(4096)),
                         "match no video container"),
    "mp4-index-cut-off": (lambda p, b: _index_cut_off(p / "cut.mp4", b), "no index ('moov' box)"),
}


@pytest.mark.parametrize("case", BAD_INPUT, ids=list(BAD_INPUT))
def test_bad_input_has_its_own_message(tmp_path, bulky, case):
    make, message = BAD_INPUT[case]
    path = make(tmp_path, bulky)
    with pytest.raises(VideoError) as raised:
        VideoReader(path)
    assert message in str(raised.value) and str(path) in str(raised.value)
    assert "10:00" not in str(raised.value), "a file's words are never quoted (they could identify a patient)"


@pytest.mark.parametrize("case", ["empty", "png-renamed", "mp4-index-cut-off"])
def test_bad_input_through_the_command_exits_2_without_a_traceback(tmp_path, tiny_card, bulky, case):
    make, message = BAD_INPUT[case]
    path = make(tmp_path, bulky)
    result = holoburn("run", "--source", f"video:{path}", "--model", tiny_card, "--out", tmp_path / "out")
    assert result.returncode == 2
    assert message in result.stderr and str(path) in result.stderr and "Traceback" not in result.stderr


# --- pacing and looping through the real graph ------------------------------------------------------------

def test_realtime_paces_by_timestamps(tmp_path, tiny_card):
    video = encode(tmp_path / "twenty_fps.mp4", "libx264", "yuv420p", 10, rate=20)
    out = tmp_path / "out"
    result = holoburn("run", "--source", f"video:{video}", "--model", tiny_card, "--out", out, "--realtime")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_in"] == 10 and summary["wall_s"] >= 0.45  # 9 frame periods of 50 ms
    lines = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert [r["timestamp_s"] for r in lines] == pytest.approx([i * 0.05 for i in range(10)], abs=1e-3)


def test_as_fast_as_possible_does_not_pace(tmp_path, tiny_card):
    video = encode(tmp_path / "two_fps.mp4", "libx264", "yuv420p", 10, rate=2)  # 4.5 s of video
    out = tmp_path / "out"
    started = time.monotonic()
    result = holoburn("run", "--source", f"video:{video}", "--model", tiny_card, "--out", out, "--max-frames", 8)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_in"] == 8 and summary["wall_s"] < 3.5 and time.monotonic() - started < 30
    assert summary["missing_from_container"] == 0, "stopping early is not a loss"


def test_loop_continues_timestamps_and_indices(tmp_path, tiny_card):
    video = encode(tmp_path / "ten.mp4", "libx264", "yuv420p", 10, rate=20)
    config = tmp_path / "loop.yaml"
    config.write_text(yaml.safe_dump({"source": {"loop": True, "max_frames": 25}}))
    out = tmp_path / "out"
    result = holoburn("run", "--source", f"video:{video}", "--model", tiny_card, "--out", out, "--config", config)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in lines] == list(range(25)) and all(r["status"] == "ok" for r in lines)
    times = [r["timestamp_s"] for r in lines]
    assert times == pytest.approx([i * 0.05 for i in range(25)], abs=1e-3)  # pass 2 starts one period after pass 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_in"] == 25 and summary["missing_from_container"] == 0


def test_loop_over_a_truncated_file_counts_what_each_pass_missed(tmp_path, tiny_card, bulky):
    cut = tmp_path / "cut.avi"
    cut.write_bytes(bulky["avi"].read_bytes()[: int(bulky["avi"].stat().st_size * 0.6)])
    _, reader = decode_all(cut)
    per_pass = reader.frames_read + reader.decode_errors
    config = tmp_path / "loop.yaml"
    config.write_text(yaml.safe_dump({"source": {"loop": True, "max_frames": 2 * per_pass + 1}}))
    out = tmp_path / "out"
    result = holoburn("run", "--source", f"video:{cut}", "--model", tiny_card, "--out", out, "--config", config)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_in"] == 2 * per_pass + 1
    assert summary["missing_from_container"] == 2 * reader.missing_frames  # two passes reached the end
    assert result.stderr.count("video:1: the container lists 20 frames") == 1, "told once, not every pass"
    assert f"over 2 passes, {2 * reader.missing_frames} frames missing" in result.stderr
