"""Several sources at once, each with its lane, through the priority-lanes graph on the CPU."""
from __future__ import annotations

import json

from test_pipeline import count_frames, holoburn


def test_two_sources_each_with_its_lane(tmp_path, tiny_card):
    for name, seed, frames in (("a", 7000001, 12), ("b", 7000002, 10)):
        made = holoburn("synth", "--out", tmp_path / name, "--frames", frames, "--seed", seed, "--size", "160x120",
                        "--fps", 10)
        assert made.returncode == 0, made.stderr
    out = tmp_path / "out"
    result = holoburn("run", "--source", f"video:{tmp_path / 'a' / 'frames.mp4'}@EMERGENCY",
                      "--source", f"video:{tmp_path / 'b' / 'frames.mp4'}", "--model", tiny_card, "--out", out)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    by_source = {}
    for line in lines:
        by_source.setdefault(line["source"], []).append(line)
    assert sorted(len(v) for v in by_source.values()) == [10, 12]  # every frame of both, dropped or not
    for records in by_source.values():
        assert [r["frame"] for r in records] == list(range(len(records)))  # each source in frame order
        assert all(r["backend"] == "onnxruntime" for r in records)
    first = by_source["video:1"]
    assert first[0]["lane"] == "EMERGENCY"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_in"] == 22 == summary["processed"] + sum(summary["dropped"].values())
    for sid, per in summary["sources"].items():
        assert per["frames_in"] == per["processed"] + sum(per["dropped"].values())
        assert count_frames(out / per["overlay"]) == per["processed"] == per["overlay_frames"]
    assert summary["sources"]["video:1"]["lane"] == "EMERGENCY" and summary["write_errors"] == []


def test_the_same_source_twice_is_refused(tmp_path, tiny_card, red_green_video):
    result = holoburn("run", "--source", f"video:{red_green_video}", "--source", f"video:{red_green_video}@URGENT",
                      "--model", tiny_card, "--out", tmp_path / "o")
    assert result.returncode == 2 and "given twice" in result.stderr


def test_one_source_gives_the_same_results_every_time(tmp_path, tiny_card, red_green_video):
    """One source straight through its lane: the run contract, and results that never depend on
    thread timing (a frame's mask and numbers; its lane may, see operators/triage.py). The lane
    chain pipelines batches on several worker threads, so five runs are five interleavings."""
    from holoburn.app.config import load_config
    from holoburn.app.run.replay import replay

    from conftest import TIMING_FIELDS

    keep = lambda r: {k: v for k, v in r.items() if k not in TIMING_FIELDS}
    runs = []
    for attempt in range(5):
        out = tmp_path / f"out{attempt}"
        config = load_config(None, {"inference.model": str(tiny_card), "results.save_masks": str(out / "masks")})
        summary = replay(config, [f"video:{red_green_video}"], out)
        assert summary["frames_in"] == summary["processed"] == 12 and summary["dropped"] == {}
        lines = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
        assert [l["frame"] for l in lines] == list(range(12))
        assert lines[0]["triage"]["level"] == "refer" and lines[0]["burn_share_of_skin"] > 0.4
        assert count_frames(out / "overlay.mp4") == 12 == summary["overlay_frames"]
        assert len(list((out / "masks").glob("*.png"))) == 12
        runs.append(([keep(l) for l in lines], [(out / "masks" / f"{i:06d}.png").read_bytes() for i in range(12)]))
    assert all(r == runs[0] for r in runs[1:])


def test_sources_are_named_by_opaque_ids_and_mapped_only_on_request(tmp_path, tiny_card, red_green_video):
    """A folder named like a patient never reaches results, summary, overlays or the console;
    `--source-map` writes the one file that ties ids to paths, readable by its owner only."""
    import shutil
    import stat

    patient = tmp_path / "Doe_John_MRN123456"
    patient.mkdir()
    video = patient / "Doe_John_left_arm.mp4"
    shutil.copy(red_green_video, video)
    out = tmp_path / "out"
    result = holoburn("run", "--source", f"video:{video}", "--model", tiny_card, "--out", out)
    assert result.returncode == 0, result.stderr
    for text in (result.stdout, result.stderr, *(p.read_bytes().decode("latin-1") for p in out.rglob("*") if p.is_file())):
        assert "Doe_John" not in text and "MRN123456" not in text
    assert not (out / "source_map.IDENTIFIERS.json").exists()
    lines = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert {l["source"] for l in lines} == {"video:1"}

    mapped = tmp_path / "mapped"
    result = holoburn("run", "--source", f"video:{video}", "--model", tiny_card, "--out", mapped, "--source-map")
    assert result.returncode == 0, result.stderr
    source_map = mapped / "source_map.IDENTIFIERS.json"
    assert json.loads(source_map.read_text())["sources"] == {"video:1": f"video:{video}"}
    assert stat.S_IMODE(source_map.stat().st_mode) == 0o600
    summary = json.loads((mapped / "summary.json").read_text())
    assert "Doe_John" not in json.dumps(summary) and summary["outputs"]["source_map"] == source_map.name


def test_a_source_too_small_to_judge_fails_alone(tmp_path, tiny_card, red_green_video):
    """A 16x16 video beside a healthy one: its frames are refused with their reason, the healthy
    source loses nothing, everything is written, and the run still ends in failure, naming it."""
    import numpy as np

    from conftest import write_video

    tiny = write_video(tmp_path / "tiny.mp4", [np.full((16, 16, 3), 120, np.uint8)] * 6)
    out = tmp_path / "out"
    result = holoburn("run", "--source", f"video:{red_green_video}", "--source", f"video:{tiny}", "--model", tiny_card,
                      "--out", out)
    assert result.returncode == 1 and "source video:2: none of its frames could be processed (frame_too_small)" \
        in result.stderr, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sources"]["video:2"]["dropped"] == {"frame_too_small": 6}
    healthy = summary["sources"]["video:1"]
    assert healthy["frames_in"] == 12 and healthy["processed"] + sum(healthy["dropped"].values()) == 12
    assert "frame_too_small" not in healthy["dropped"]
