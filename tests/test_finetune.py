"""Fine-tuning on a clinic's own images (issue 14): annotated photos -> import -> split -> train
--data -> the model used by `holoburn run --model`. Tiny sizes: the figures are the benchmark's."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="holoburn train needs PyTorch (the train extra)")

from holoburn.app.synthesis.coco import write_coco
from holoburn.app.synthesis.independent import independent_frames
from holoburn.app.training import finetune as ft
from holoburn.clinical.depth import FULL_THICKNESS, HEALTHY_SKIN, NUM_CLASSES
from test_pipeline import holoburn


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """18 annotated photos of 6 patients, imported and split (seeded)."""
    root = tmp_path_factory.mktemp("own")
    write_coco(root / "export", independent_frames(18, 77, (160, 120)))
    assert holoburn("dataset", "import", "--format", "coco", root / "export", root / "data",
                    "--case-pattern", r"^(patient\d+)_").returncode == 0
    assert holoburn("dataset", "split", root / "data", "--seed", "1").returncode == 0
    return root / "data"


def test_partial_labels_teach_burn_without_a_depth():
    logits = torch.zeros(1, NUM_CLASSES, 1, 3, requires_grad=True)
    labels = torch.tensor([[[ft.BURN_UNSPECIFIED, 255, HEALTHY_SKIN]]])
    loss = ft.partial_label_loss(logits, labels)
    loss.backward()
    grad = logits.grad[0, :, 0]
    # burn of unknown depth: pushed towards the four depths alike, away from background and skin
    assert (grad[2:, 0] < 0).all() and torch.allclose(grad[2:, 0], grad[2, 0].expand(4)) and (grad[:2, 0] > 0).all()
    assert (grad[:, 1] == 0).all()  # unknown: no loss at all


def test_scores_count_burn_of_unknown_depth_as_burn_and_skip_unknown():
    truth = np.array([[ft.BURN_UNSPECIFIED, 255, HEALTHY_SKIN, FULL_THICKNESS]], np.uint8)
    said = np.array([[FULL_THICKNESS, FULL_THICKNESS, HEALTHY_SKIN, FULL_THICKNESS]], np.uint8)
    confusions, burn = ft.frame_confusions([said], [truth])
    assert confusions.sum() == 2 and burn.tolist() == [[2, 0, 0]]
    assert ft.scores(confusions, burn)["any_burn_dice"] == 1.0


def test_finetune_writes_a_card_the_pipeline_runs(dataset, tmp_path):
    out = tmp_path / "model"
    result = holoburn("train", "--data", dataset, "--out", out, "--epochs", "1", "--input-size", "64",
                      "--device", "cpu", "--model-id", "ward3", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 1/1" in result.stdout and "validation any-burn Dice" in result.stdout
    import yaml

    card = yaml.safe_load((out / "ward3.yaml").read_text())
    info = json.loads((dataset / "dataset.json").read_text())
    assert card["training"]["dataset_fingerprint"] == info["fingerprint"]["sha256"]
    assert card["training"]["split"]["images"]["train"] > 0 and card["demonstration"] is False
    test = card["test"]
    assert test["images"] > 0 and len(test["any_burn_dice_ci95"]) == 2
    assert test["any_burn_dice_ci95"][0] <= test["any_burn_dice"] <= test["any_burn_dice_ci95"][1]
    assert card["test_of_the_initial_model"]["any_burn_dice"] is not None
    assert 0 < card["assessability"]["min_skin_confidence"] < 1
    assert not (out / "ward3_checkpoint.pt").exists()
    run = holoburn("run", "--source", f"image:{dataset / 'images'}", "--model", out / "ward3.yaml", "--out", tmp_path / "run")
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["model_id"] == "ward3" and summary["processed"] == 18


def test_a_killed_run_resumes_to_the_same_model(dataset, tmp_path):
    common = dict(epochs=2, batch_size=4, input_size=64, device="cpu", patience=10, progress=lambda line: None)
    whole = ft.finetune(dataset, tmp_path / "whole", **common)
    assert ft.finetune(dataset, tmp_path / "cut", stop_after_epochs=1, **common) == {}
    assert (tmp_path / "cut" / "burn_unet_finetuned_checkpoint.pt").exists()
    resumed = ft.finetune(dataset, tmp_path / "cut", resume=True, **common)
    assert resumed["test"]["any_burn_dice"] == pytest.approx(whole["test"]["any_burn_dice"], abs=1e-6)
    assert resumed["validation"] == whole["validation"]
    assert resumed["sha256"] == whole["sha256"]  # the very same weights


def test_bad_data_is_named(tmp_path):
    from holoburn.clinical.errors import BadInput

    with pytest.raises(BadInput, match="dataset import"):
        ft.finetune(tmp_path, tmp_path / "out")
