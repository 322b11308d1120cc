"""Training recipe smoke test: a few CPU steps at 64x64, ONNX export, ONNX Runtime, model card."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is an optional extra (pip install 'holoburn[train]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

from holoburn.app.training import train as recipe  # noqa: E402
from holoburn.clinical.depth import CLASS_NAMES, NUM_CLASSES  # noqa: E402
from holoburn.engines.card import REQUIRED_KEYS, file_sha256, load_card  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    card = recipe.train(
        out,
        frames=16,
        seed=3,
        size=(128, 96),
        frames_per_scene=4,
        input_size=64,
        epochs=2,
        batch_size=4,
        lr=3e-3,
        device="cpu",
        heldout_frames=6,
        heldout_seed=1003,
        workers=1,
        model_id="smoke_unet",
        command="test_train.py",
        progress=lambda line: None,
    )
    return out, card


def test_model_shapes_and_size():
    model = recipe.build_model().eval()
    n_params = recipe.count_parameters(model)
    assert 300_000 < n_params < 1_000_000
    with torch.no_grad():
        logits = model(torch.zeros(2, 3, 64, 96))
    assert tuple(logits.shape) == (2, NUM_CLASSES, 64, 96)


def test_training_writes_model_state_card_and_log(trained):
    out, card = trained
    for name in ("smoke_unet.onnx", "smoke_unet.pt", "smoke_unet.yaml", "smoke_unet_train.log", "smoke_unet_metrics.json"):
        assert (out / name).is_file(), name
    for key in (*REQUIRED_KEYS, "sha256", "colours_rgb", "training", "heldout", "sensitive_layers"):
        assert key in card, key
    assert card["sha256"] == file_sha256(out / "smoke_unet.onnx")
    assert card["classes"] == list(CLASS_NAMES)
    assert card["demonstration"] is True  # synthetic scenes: every overlay says "not for clinical use"
    assert card["input"] == card["input"] | {"name": "frames", "layout": "NCHW", "dtype": "float32", "size": 64, "multiple_of": 16, "colour": "RGB"}
    assert card["output"]["name"] == "logits" and card["output"]["channels"] == NUM_CLASSES
    assert card["heldout"]["seed"] == 1003 and card["training"]["seed"] == 3
    for key in ("any_burn_dice", "dice", "mean_depth_dice"):
        assert key in card["heldout"]
    assert "not for clinical use" in card["intended_use"]
    assert len(card["sensitive_layers"]) == 2
    # the card loads through the project's own loader
    loaded = load_card(out / "smoke_unet.yaml")
    assert loaded.input_size == 64 and loaded.mean == tuple(recipe.MEAN_RGB)
    # the state dict loads into a fresh model
    model = recipe.build_model()
    model.load_state_dict(torch.load(out / "smoke_unet.pt", weights_only=True))


def test_onnx_runs_with_dynamic_batch_and_size(trained):
    out, card = trained
    import onnx

    graph = onnx.load(str(out / "smoke_unet.onnx"))
    assert graph.opset_import[0].version == 17
    node_names = {node.name for node in graph.graph.node}
    assert set(card["sensitive_layers"]) <= node_names
    session = ort.InferenceSession(str(out / "smoke_unet.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["frames"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    for shape in ((1, 3, 64, 64), (3, 3, 96, 160), (2, 3, 48, 32)):
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        (logits,) = session.run(["logits"], {"frames": x})
        assert logits.shape == (shape[0], NUM_CLASSES, shape[2], shape[3])
        assert logits.dtype == np.float32
    for diff in card["export"]["onnxruntime_vs_torch_max_abs_diff"].values():
        assert diff < 1e-3


def test_training_set_does_not_depend_on_workers():
    a = recipe.make_training_set(8, 5, (96, 64), 4, 32, workers=1)
    b = recipe.make_training_set(8, 5, (96, 64), 4, 32, workers=1)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    images, labels = a
    assert images.shape == (8, 3, 32, 32) and labels.shape == (8, 32, 32)
    assert images.dtype == np.uint8 and labels.dtype == np.uint8
    # letterbox padding is marked to be ignored, the rest are class indices
    assert set(np.unique(labels)) <= set(range(NUM_CLASSES)) | {recipe.IGNORE}
    assert (labels[:, 0, :] == recipe.IGNORE).all()  # 96x64 frames leave bands top and bottom


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="heldout_seed"):
        recipe.train(tmp_path, frames=4, seed=1, heldout_seed=1, epochs=1, batch_size=2, heldout_frames=2)
    with pytest.raises(ValueError, match="multiple of 16"):
        recipe.train(tmp_path, frames=4, seed=1, input_size=60, epochs=1, batch_size=2, heldout_frames=2)


def test_cli_arguments_round_trip():
    parser = recipe.add_train_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        "--out m --frames 10 --seed 2 --epochs 1 --batch-size 2 --input-size 64 --device cpu "
        "--heldout-frames 3 --heldout-seed 9".split()
    )
    assert (args.frames, args.seed, args.epochs, args.batch_size, args.input_size) == (10, 2, 1, 2, 64)
    assert (args.device, args.heldout_frames, args.heldout_seed) == ("cpu", 3, 9)
    command = recipe._command_line(args)
    assert command.startswith("holoburn train --out m --frames 10 --seed 2")
    assert parser.parse_args(command.split()[2:]) == args
