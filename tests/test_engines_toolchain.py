"""`holoburn engine build | list | verify | clear` through its argument parser, as a user runs it."""
from __future__ import annotations

import argparse
import importlib.util
import json

import pytest

from holoburn.engines.cache import EngineCache
from holoburn.engines.toolchain import EXIT_INPUT, EXIT_OK, EXIT_REFUSED, add_engine_arguments, run_engine
from test_engines_support import engine_cache, engine_data, pixel_card, write_labelled_dir  # noqa: F401

HAVE_RTX = importlib.util.find_spec("tensorrt_rtx_bindings") is not None


def cli(*argv) -> int:
    main = argparse.ArgumentParser(prog="holoburn")
    add_engine_arguments(main.add_subparsers(dest="command"))  # as the lead wires it: `holoburn engine ...`
    return run_engine(main.parse_args(["engine", *map(str, argv)]))


@pytest.fixture(scope="module")
def folders(tmp_path_factory, engine_data):
    root = tmp_path_factory.mktemp("sets")
    return {
        "holdout": write_labelled_dir(root / "holdout", engine_data["holdout"]),
        "calib": write_labelled_dir(root / "calib", [(f, f[..., 0] * 0) for f in engine_data["calib"]]) / "frames",
    }


def test_build_fp16_list_verify_clear(engine_cache, pixel_card, folders, capsys):
    assert cli("build", "--model", pixel_card, "--backend", "onnxruntime", "--precision", "fp16", "--holdout", folders["holdout"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "fp16 vs fp32: ACCEPTED" in out and "| any_burn |" in out and "onnxruntime fp16:" in out
    assert list(engine_cache.glob("*.gate.md")) and list(engine_cache.glob("*.gate.json"))
    # second time: from the cache, no held-out set needed
    assert cli("build", "--model", pixel_card, "--backend", "onnxruntime", "--precision", "fp16", "--json") == EXIT_OK
    assert json.loads(capsys.readouterr().out)["cache_hit"] is True
    assert cli("list") == EXIT_OK and "onnx-fp16" in capsys.readouterr().out
    assert cli("verify", "--json") == EXIT_OK
    assert json.loads(capsys.readouterr().out)["bad"] == 0
    assert cli("clear", "--precision", "int8") == EXIT_OK and "removed 0" in capsys.readouterr().out
    assert cli("clear") == EXIT_OK and "removed 1" in capsys.readouterr().out
    assert list(EngineCache(engine_cache).entries()) == []


def test_int8_refused_by_the_gate_caches_nothing(engine_cache, pixel_card, folders, capsys):
    code = cli("build", "--model", pixel_card, "--backend", "onnxruntime", "--precision", "int8",
               "--calib", folders["calib"], "--holdout", folders["holdout"], "--calibration-method", "minmax")
    captured = capsys.readouterr()
    assert code == EXIT_REFUSED
    assert "int8 vs fp32: REFUSED" in captured.out and "| FAIL |" in captured.out
    assert "REFUSED" in captured.err and "nothing was cached" in captured.err
    assert list(EngineCache(engine_cache).entries()) == []  # nothing cached ...
    table = json.loads(next(engine_cache.glob("*.gate.json")).read_text())  # ... but the table is written
    assert table["passed"] is False and table["meta"]["conversion"]["calibration_method"] == "minmax"
    # with a (deliberately) relaxed limit the same build is accepted and cached
    assert cli("build", "--model", pixel_card, "--backend", "onnxruntime", "--precision", "int8", "--calib", folders["calib"],
               "--holdout", folders["holdout"], "--max-drop", "100") == EXIT_OK
    assert len(list(EngineCache(engine_cache).entries())) == 1


def test_bad_input_exits_2_with_a_reason(engine_cache, pixel_card, folders, tmp_path, capsys):
    assert cli("build", "--model", pixel_card, "--backend", "onnxruntime", "--precision", "fp16") == EXIT_INPUT
    assert "--holdout" in capsys.readouterr().err
    assert cli("build", "--model", pixel_card, "--precision", "int8", "--backend", "onnxruntime",
               "--calib", folders["holdout"], "--holdout", folders["holdout"]) == EXIT_INPUT
    assert "same set" in capsys.readouterr().err
    assert cli("build", "--model", tmp_path / "nope.yaml") == EXIT_INPUT
    assert "model card not found" in capsys.readouterr().err
    assert cli("build", "--model", pixel_card, "--backend", "onnxruntime", "--precision", "fp16", "--holdout", tmp_path) == EXIT_INPUT
    assert "masks/" in capsys.readouterr().err


@pytest.mark.skipif(not HAVE_RTX, reason="TensorRT-RTX wheel not installed: pip install tensorrt-rtx-cu13-libs tensorrt-rtx-cu13-bindings")
def test_build_rtx_fp16_engine_with_gate_table_beside_it(engine_cache, pixel_card, folders, capsys):
    assert cli("build", "--model", pixel_card, "--backend", "tensorrt-rtx", "--precision", "fp16", "--holdout", folders["holdout"],
               "--profile", "128:256:768", "--max-batch", "2", "--json") == EXIT_OK
    result = json.loads(capsys.readouterr().out)
    engine = result["artefact"]
    assert engine.endswith(".engine") and result["gate"]["passed"] and "not executed" in result["notes"][0]
    stem = engine.rsplit("/", 1)[1].split(".")[0]
    assert (engine_cache / f"{stem}.gate.md").is_file()
    assert cli("verify") == EXIT_OK
