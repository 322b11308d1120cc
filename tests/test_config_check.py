"""`holoburn config check FILE` and the shipped presets: every unknown key and bad value is reported
with its dotted path and line; every preset passes, loads, and runs a real graph (on the CPU with
the reference backend; with its own GPU backend where the GPU lab has one)."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from importlib import resources

import numpy as np
import pytest

from holoburn.app.config import ConfigError, load_config, problems
from holoburn.app.config_check import check_text, run_config

PRESETS = ("bedside-x86.yaml", "jetson-orin.yaml", "replay-validation.yaml")


def preset_text(name: str) -> str:
    return resources.files("holoburn.configs").joinpath(name).read_text()


def check(path, capsys) -> tuple[int, list[str]]:
    code = run_config(argparse.Namespace(file=str(path)))
    return code, capsys.readouterr().out.splitlines()


def holoburn(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "holoburn.app", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


# -- the presets --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PRESETS)
def test_every_shipped_preset_passes_the_check(name, capsys):
    assert check_text(preset_text(name)) == []
    code, out = check(name, capsys)  # by bundled name, as `--config NAME` resolves it
    assert code == 0 and out == [f"{name} (bundled preset): ok"]


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_and_only_sets_known_keys(name):
    import yaml

    data = yaml.safe_load(preset_text(name))
    assert data and problems(data) == []
    config = load_config(name)
    for section, values in data.items():
        for key, value in values.items():
            assert config[section][key] == value


def test_the_defaults_pass_their_own_value_rules():
    assert check_text(resources.files("holoburn.configs").joinpath("holoburn.yaml").read_text()) == []


# -- what the check reports -----------------------------------------------------------------------
BAD = """\
source:
  lane: urgentish
  max_frames: 0
  colour: red
inference:
  backend: tensorrt
  precision: fp8
  threads: 2.5
scheduler:
  worker_threads: "four"
overlay:
  alpha: 1.5
extra_section: 1
video_sink:
  fourcc: null
triage:
  escalate: maybe
  min_share_of_skin: .nan
"""


def test_reports_every_unknown_key_and_bad_value_with_path_and_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    code, out = check(path, capsys)
    assert code == 1
    expected = {
        2: "source.lane: 'urgentish' is not one of EMERGENCY",
        3: "source.max_frames: 0 must be at least 1",
        4: "source.colour: unknown key",
        7: "inference.precision: 'fp8' is not one of fp32, fp16, int8",
        8: "inference.threads: 2.5 must be a whole number",
        10: "scheduler.worker_threads: expected int, got 'four'",
        12: "overlay.alpha: 1.5 must be at most 1",
        13: "extra_section: unknown key",
        15: "video_sink.fourcc: needs a value",
        17: "triage.escalate: expected bool, got 'maybe'",
        18: "triage.min_share_of_skin: nan must be a finite number",
    }
    reported = out[:-1]
    assert len(reported) == len(expected), out
    for line, (number, message) in zip(reported, sorted(expected.items())):
        assert line.startswith(f"{path}:{number}: {message}"), (line, number, message)
    assert out[-1] == f"{path}: {len(expected)} problems"
    # nothing valid is reported: the tensorrt backend is a known one
    assert not [l for l in out if "inference.backend" in l]


def test_type_errors_are_not_reported_twice():
    found = check_text("scheduler:\n  worker_threads: four\n")
    assert found == [(2, "scheduler.worker_threads: expected int, got 'four'")]


def test_settings_whose_default_is_null_are_still_checked():
    found = dict(check_text("source:\n  age_years: old\n  body_region: left_wing\n  cm2_per_pixel: 0\n"))
    assert found[2].startswith("source.age_years: expected a number")
    assert found[3].startswith("source.body_region: 'left_wing' is not one of")
    assert found[4].startswith("source.cm2_per_pixel: 0 must be above 0")


def test_camera_settings_are_checked():
    found = check_text("camera:\n  pixel_format: RGB3\n  fps: 0\n  width: 1280\n")
    assert found == [(2, "camera.pixel_format: 'RGB3' is not one of YUYV, MJPG"), (3, "camera.fps: 0 must be above 0")]


def test_the_metrics_section_is_checked_once_the_defaults_have_it():
    """Before `metrics` is in holoburn.yaml it is an unknown key; after, its port is range-checked."""
    (found,) = check_text("metrics:\n  port: 70000\n")
    assert found[1].startswith("metrics: unknown key") or found == (2, "metrics.port: 70000 must be at most 65535")


def test_a_wrong_section_shape_points_at_the_section():
    assert check_text("# comment\ntriage: 3\n") == [(2, "triage: expected a section (mapping), got int")]


def test_duplicate_keys_are_reported_with_both_lines():
    found = check_text("source:\n  lane: URGENT\n  lane: ROUTINE\n")
    assert found == [(3, "source.lane: duplicate key (first on line 2); YAML keeps only the last")]


def test_invalid_yaml_is_reported_with_its_line(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("source:\n  lane: URGENT\ninference: [1\n")
    code, out = check(path, capsys)
    assert code == 1 and out[0].startswith(f"{path}:4: not valid YAML")


def test_a_file_that_is_not_a_mapping(tmp_path, capsys):
    path = tmp_path / "list.yaml"
    path.write_text("- source\n- inference\n")
    code, out = check(path, capsys)
    assert code == 1 and "must hold a mapping of sections, got list" in out[0]


def test_an_empty_file_is_ok(tmp_path, capsys):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing overridden\n")
    assert check(path, capsys) == (0, [f"{path}: ok"])


def test_a_missing_file_names_itself(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        run_config(argparse.Namespace(file=str(tmp_path / "nope.yaml")))


def test_the_command_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    result = holoburn("config", "check", bad)
    assert result.returncode == 1, result.stderr
    assert f"{bad}:2: source.lane" in result.stdout
    result = holoburn("config", "check", "jetson-orin.yaml")
    assert result.returncode == 0 and result.stdout.strip() == "jetson-orin.yaml (bundled preset): ok", result.stderr
    result = holoburn("config", "check", tmp_path / "nope.yaml")
    assert result.returncode == 2 and "config file not found" in result.stderr


# -- the presets in real runs ---------------------------------------------------------------------
@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_runs_a_real_graph_on_the_cpu(name, tmp_path, tiny_card):
    """`holoburn run --config PRESET`; a preset made for a GPU backend runs here on the CPU reference
    backend (its GPU path is the gpu-marked test below), everything else as the preset says."""
    import yaml

    from conftest import write_video
    from test_lanes import RED, GREEN, colour_frame

    preset = yaml.safe_load(preset_text(name))
    cpu = preset["inference"]["backend"] == "onnxruntime"
    extra = [] if cpu else ["--backend", "onnxruntime", "--precision", "fp32"]
    out = tmp_path / "out"
    # 40 frames, left half red: long enough for the escalation evidence to come back while frames flow
    frame = np.concatenate([colour_frame(RED, (120, 80)), colour_frame(GREEN, (120, 80))], axis=1)
    video = write_video(tmp_path / "red_green_40.mp4", [frame] * 40)
    result = holoburn("run", "--config", name, "--source", f"video:{video}", "--model", tiny_card, "--out", out, *extra)
    assert result.returncode == 0, result.stderr
    records = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 40 and all(r["status"] == "ok" and r["backend"] == "onnxruntime" for r in records)
    first_lane = preset.get("source", {}).get("lane", "ROUTINE")
    assert records[0]["lane"] == first_lane
    # red is full thickness: the source escalates once the evidence has come back (which frame
    # is the first to travel in the emergency lane depends on timing)
    changes = json.loads((out / "summary.json").read_text())["lane_changes"]
    assert [(c["from"], c["to"]) for c in changes][:1] == [(first_lane, "EMERGENCY")]


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["bedside-x86.yaml", "jetson-orin.yaml"])
def test_gpu_presets_run_with_their_own_backend(name, tmp_path, tiny_card, red_green_video):
    import yaml

    from holoburn.engines.backend import cuda_available

    if not cuda_available():
        pytest.skip("no CUDA device: the preset's TensorRT backend needs one")
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed")
    preset = yaml.safe_load(preset_text(name))
    if preset["inference"]["precision"] == "fp16" and not trt.__version__.startswith("10."):
        pytest.skip(f"{name} uses TensorRT 10's FP16 flag (JetPack 6); TensorRT {trt.__version__} takes FP16 "
                    "from a gated FP16 model (holoburn engine build)")
    out = tmp_path / "out"
    result = holoburn("run", "--config", name, "--source", f"video:{red_green_video}", "--model", tiny_card,
                      "--out", out, "--max-frames", 6, timeout=900)
    assert result.returncode == 0, result.stderr
    records = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 6 and all(r["backend"] == "tensorrt" for r in records)


@pytest.mark.parametrize("setting", ["overlay:\n  alpha: 7\n", "scheduler:\n  worker_threads: -2\n",
                                     "scheduler:\n  worker_threads: 100000000\n", "source:\n  max_frames: 0\n",
                                     "metrics:\n  port: 99999\n"])
def test_run_checks_its_config_as_config_check_does(tmp_path, setting, tiny_card, red_green_video):
    """`run --config` goes through the same value checks: it stops at start with the key named
    and exit 2, instead of failing later (bad_alloc, a traceback) or running zero frames."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(setting)
    result = holoburn("run", "--config", bad, "--source", f"video:{red_green_video}", "--model", tiny_card,
                      "--out", tmp_path / "out")
    key = ".".join(line.strip().split(":")[0] for line in setting.splitlines())
    assert result.returncode == 2 and key in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_a_bad_option_value_is_named(tmp_path, tiny_card, red_green_video):
    result = holoburn("run", "--max-frames", 0, "--source", f"video:{red_green_video}", "--model", tiny_card,
                      "--out", tmp_path / "out")
    assert result.returncode == 2 and "source.max_frames" in result.stderr, result.stderr
