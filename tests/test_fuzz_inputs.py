"""Broken inputs through the real command line: damaged, truncated and foreign video files,
broken config files, and sources that change while a run reads them. Passing means no Python
traceback, an error that names the input, a non-zero exit for input that is wholly bad, every
frame of a source counted once, and every frame of a good source beside a bad one processed.
(DICOM files are fuzzed with the de-identification tests.)"""
from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest

from conftest import write_video
from holoburn.media.video import VideoReader
from test_pipeline import holoburn


def no_traceback(result):
    for stream in (result.stdout, result.stderr):
        assert "Traceback" not in stream and "\nAt:\n" not in stream, stream


def hand_out(reader: VideoReader) -> list[str]:
    """The status of every frame the reader hands out, to its end."""
    statuses = []
    while (status := reader.next_frame()[2]) is not None:
        statuses.append(status)
    return statuses


@pytest.fixture(scope="module")
def noise(tmp_path_factory):
    """What the issue used: OpenCV's MPEG-4 ('mp4v') writer, 64x48 noise, in MP4 and in AVI."""
    folder = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(13)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(90)]
    return {"mp4": write_video(folder / "noise.mp4", frames), "avi": write_video(folder / "noise.avi", frames),
            "short": write_video(folder / "short.mp4", frames[:30])}


def damaged(path, out, seed: int) -> bytes:
    """A copy of `path` with one to three stretches of random bytes (4 to 3000 of them)."""
    rng = np.random.default_rng(seed)
    data = bytearray(path.read_bytes())
    for _ in range(int(rng.integers(1, 4))):
        at, size = int(rng.integers(0, len(data))), int(rng.choice([4, 30, 300, 3000]))
        data[at:at + size] = rng.bytes(size)[:len(data) - at]
    out.write_bytes(bytes(data))
    return out


# --- each frame counted once --------------------------------------------------------------------

def test_an_avi_with_a_damaged_index_counts_each_frame_once(tmp_path, tiny_card, noise):
    """Issue #13's "91 of 90 frames". With its index (idx1) damaged, FFmpeg reads an AVI chunk by
    chunk and takes the index's own entries for video packets: 135 packets for 90 frames. The
    reader counted packets past the container's stated frame count as frames that failed to decode."""
    data = bytearray(noise["avi"].read_bytes())
    at = data.rindex(b"idx1")
    data[at:at + 4] = b"xxxx"
    bad = tmp_path / "bad_index.avi"
    bad.write_bytes(bytes(data))

    reader = VideoReader(bad)
    assert hand_out(reader) == ["ok"] * 90 and reader.frame_count == reader.declared_frames == 90
    out = tmp_path / "out"
    result = holoburn("run", "--source", f"video:{bad}", "--model", tiny_card, "--out", out)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_in"] == summary["processed"] == 90 and summary["dropped"] == {}


@pytest.mark.parametrize("kind", ["mp4", "avi"])
def test_randomly_damaged_videos_count_each_frame_once(tmp_path, noise, kind):
    """Frames handed out (decoded or not) plus frames missing from the file: the 90 listed, never more."""
    from holoburn.media.video import VideoError

    opened = 0
    for seed in range(12):
        path = damaged(noise[kind], tmp_path / f"damaged_{seed}.{kind}", seed)
        try:
            reader = VideoReader(path)
        except VideoError as error:  # damage to the header or index: refused, named
            assert str(path) in str(error)
            continue
        opened += 1
        statuses = hand_out(reader)
        assert reader.frames_read == statuses.count("ok") and reader.decode_errors == statuses.count("decode_error")
        assert len(statuses) + reader.missing_frames == 90, (seed, reader.accounting())
    assert opened >= 6


# --- broken video files ---------------------------------------------------------------------------

def broken_videos(folder, noise) -> dict:
    whole = noise["mp4"].read_bytes()
    made = {
        "truncated.mp4": whole[: len(whole) // 2],  # MPEG-4 writes its index last: none left
        "random.mp4": np.random.default_rng(5).bytes(20_000),
        "zero.mp4": b"",
        "notes.mp4": b"seen at 10:00, burn of the left forearm\n" * 20,
        "header_then_garbage.mp4": whole[:36] + np.random.default_rng(6).bytes(5000),
    }
    for name, data in made.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in made}


def test_broken_videos_are_refused_by_name(tmp_path, tiny_card, noise):
    for name, path in broken_videos(tmp_path, noise).items():
        result = holoburn("run", "--source", f"video:{path}", "--model", tiny_card, "--out", tmp_path / f"out_{name}")
        no_traceback(result)
        assert result.returncode == 2 and str(path) in result.stderr, (name, result.stderr)


def test_a_one_pixel_video_fails_named_after_counting_its_frames(tmp_path, tiny_card):
    path = write_video(tmp_path / "dot.avi", [np.full((1, 1, 3), 40 * i, np.uint8) for i in range(4)], fourcc="MJPG")
    out = tmp_path / "out"
    result = holoburn("run", "--source", f"video:{path}", "--model", tiny_card, "--out", out)
    no_traceback(result)
    assert result.returncode == 1 and "source video:1: none of its frames could be processed" in result.stderr
    assert json.loads((out / "summary.json").read_text())["dropped"] == {"frame_too_small": 4}


def test_a_damaged_video_beside_a_good_one_costs_the_good_one_nothing(tmp_path, tiny_card, noise, red_green_video):
    bad = tmp_path / "bad.mp4"
    data = bytearray(noise["short"].read_bytes())
    data[len(data) // 2: len(data) // 2 + 2000] = np.random.default_rng(1).bytes(2000)
    bad.write_bytes(bytes(data))
    reader = VideoReader(bad)
    statuses = hand_out(reader)
    assert "decode_error" in statuses and len(statuses) == 30
    # several sources play at their own pace; queues that hold every frame of these short files (the
    # good one's burn sends it to EMERGENCY, whose queue sheds load beyond two frames)
    roomy = tmp_path / "roomy.yaml"
    roomy.write_text("lanes:\n  EMERGENCY:\n    queue_capacity: 64\n  ROUTINE:\n    queue_capacity: 64\n")
    out = tmp_path / "out"
    result = holoburn("run", "--source", f"video:{red_green_video}", "--source", f"video:{bad}",
                      "--model", tiny_card, "--config", roomy, "--out", out)
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sources"]["video:1"]["processed"] == 12 == summary["sources"]["video:1"]["frames_in"]
    assert summary["sources"]["video:2"]["dropped"] == {"decode_error": statuses.count("decode_error")}
    assert summary["sources"]["video:2"]["frames_in"] == 30
    assert "video:2: the container lists 30 frames" in result.stderr


# --- broken config files --------------------------------------------------------------------------

def laughs(levels: int = 9) -> str:
    """A "billion laughs": 9 ** levels values from a few lines of aliases."""
    text = 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for n in range(1, levels):
        text += f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 9) + "]\n"
    return text + f"source:\n  body_region: *l{levels - 1}\n"


CONFIGS = {  # name: (bytes, what the message says)
    "binary": (np.random.default_rng(3).bytes(2000) + b"\x00", "binary file"),
    "latin1": ("source:\n  body_region: bras_gauche_\xe9\n".encode("latin-1"), "not UTF-8"),
    "utf16": ("source:\n  realtime: true\n".encode("utf-16"), "binary file"),
    "laughs": (laughs().encode(), "expand to more than"),
    "itself": (b"source: &s\n  lane: *s\n", "contain itself"),
    "deep_lists": (b"source: " + b"[" * 20_000 + b"]" * 20_000 + b"\n", "nested too deeply"),
    "deep_maps": ("".join("  " * i + f"k{i}:\n" for i in range(2000)).encode(), "nested too deeply"),
    "huge_number": (b"source:\n  max_frames: " + b"9" * 5000 + b"\n", "cannot be read"),
    "no_such_date": (b"source:\n  body_region: 2020-13-45\n", "cannot be read"),
    "python_tag": (b"source: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
    "wrong_types": (b"source:\n  max_frames: lots\n  realtime: [1, 2]\noverlay:\n  alpha: {a: 1}\n",
                    "source.max_frames"),
    "a_list": (b"- 1\n- 2\n", "mapping of sections"),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_broken_configs_are_named_not_tracebacks(tmp_path, name, red_green_video):
    data, says = CONFIGS[name]
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(data)
    checked = holoburn("config", "check", path, timeout=60)
    no_traceback(checked)
    assert checked.returncode in (1, 2) and str(path) in checked.stdout + checked.stderr
    assert says in checked.stdout + checked.stderr, checked.stdout + checked.stderr
    ran = holoburn("run", "--source", f"video:{red_green_video}", "--config", path, "--out", tmp_path / "out",
                   timeout=60)
    no_traceback(ran)
    assert ran.returncode == 2 and str(path) in ran.stderr and says in ran.stderr, ran.stderr
    assert not (tmp_path / "out" / "results.jsonl").exists()


# --- sources that change while they are read ------------------------------------------------------

def test_a_video_removed_or_cut_short_while_it_is_read(tmp_path, noise):
    removed = tmp_path / "removed.mp4"
    removed.write_bytes(noise["mp4"].read_bytes())
    reader = VideoReader(removed)
    reader.next_frame()
    removed.unlink()  # the open file stays readable to the end
    assert ["ok"] + hand_out(reader) == ["ok"] * 90
    assert "changed or was removed while it was read" in reader.accounting("video:1")

    cut = tmp_path / "cut.mp4"
    cut.write_bytes(noise["mp4"].read_bytes())
    reader = VideoReader(cut)
    first = [reader.next_frame()[2] for _ in range(10)]
    with open(cut, "r+b") as f:
        f.truncate(cut.stat().st_size // 3)
    statuses = first + hand_out(reader)
    assert len(statuses) + reader.missing_frames == 90 and reader.missing_frames > 0
    assert statuses.count("ok") == reader.frames_read and statuses[:10] == ["ok"] * 10
    assert "changed or was removed while it was read" in reader.accounting("video:1")


def test_a_video_cut_short_during_a_run(tmp_path, tiny_card, noise):
    """A real-time run (90 frames over 3 s); a third of the way through its file is cut to a third."""
    import subprocess
    import sys

    video = tmp_path / "growing_shorter.mp4"
    video.write_bytes(noise["mp4"].read_bytes())
    out = tmp_path / "out"
    run = subprocess.Popen([sys.executable, "-m", "holoburn.app", "run", "--source", f"video:{video}", "--realtime",
                            "--model", str(tiny_card), "--out", str(out)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and run.poll() is None:
        if results.exists() and results.read_text().count("\n") >= 3:
            break
        time.sleep(0.02)
    with open(video, "r+b") as f:
        f.truncate(video.stat().st_size // 3)
    stdout, stderr = run.communicate(timeout=120)
    assert "Traceback" not in stderr and run.returncode == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_in"] + summary["missing_from_container"] == 90
    assert summary["frames_in"] == summary["processed"] + sum(summary["dropped"].values()) == len(
        results.read_text().splitlines())
    assert summary["missing_from_container"] > 0
    assert "video:1: the container lists 90 frames" in stderr and "changed or was removed" in stderr
    assert str(video) not in stderr  # sources are named by their opaque ids


def test_a_dicom_folder_emptied_during_a_run(tmp_path):
    pytest.importorskip("pydicom", reason="DICOM tests need pydicom: pip install -e '.[test]'")
    from test_deid import identified_dataset, save, with_rgb_pixels

    from holoburn.app.config import load_config
    from holoburn.app.run.dicom import DicomReader

    folder = tmp_path / "study"
    folder.mkdir()
    picture = np.full((64, 80, 3), 90, np.uint8)
    for n in range(4):
        save(with_rgb_pixels(identified_dataset(n + 1), picture), folder / f"image_{n}.dcm")
    reader = DicomReader(str(folder), load_config(None), tmp_path / "audit.jsonl")
    first = reader.next_frame()[2]
    for path in folder.iterdir():
        path.unlink()
    rest = []
    while (status := reader.next_frame()[2]) is not None:
        rest.append(status)
    assert first == "ok" and rest == ["dicom_missing"] * 3
    assert len(reader.skipped) == 3 and all("not found" in why for why in reader.skipped)
