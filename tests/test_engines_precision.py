"""FP16 and INT8 ONNX models and the accuracy gate, all measured with ONNX Runtime on the CPU.

The Dice deltas of every precision are printed (run with -s to see them, or read the gate tables).
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from holoburn.engines.card import ModelCardError, load_card
from holoburn.engines.frames import FrameSetError, iter_frames_rgb
from holoburn.engines.gate import evaluate, load_labelled_set, onnx_infer, run_gate
from holoburn.engines.precision import (
    GateRefused,
    PrecisionModelMissing,
    build_precision_model,
    convert_fp16,
    model_for_precision,
)
from holoburn.engines.quantize import CalibrationError, load_strategy, quantize_int8
from test_engines_support import (  # noqa: F401  (fixtures)
    engine_cache,
    engine_data,
    pixel_card,
    pixel_model_onnx,
    write_card,
    write_labelled_dir,
)


def _types(model):
    """tensor name -> elem type for graph inputs, outputs and value_info."""
    info = list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info)
    return {v.name: v.type.tensor_type.elem_type for v in info}


def test_fp16_keeps_io_and_sensitive_layers_in_fp32(tmp_path, pixel_card):
    card = load_card(pixel_card)
    out = tmp_path / "fp16.onnx"
    provenance = convert_fp16(card.onnx_path, out, card)
    model = onnx.load(str(out))
    assert provenance["kept_in_float"] == ["head"]
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    weights = {i.name: i.data_type for i in model.graph.initializer}
    assert weights["head_w"] == onnx.TensorProto.FLOAT  # sensitive: stays fp32
    assert weights["stem_w"] == onnx.TensorProto.FLOAT16
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 96)).astype(np.float32)
    ref, got = onnx_infer(card.onnx_path)(x), onnx_infer(out)(x)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()


def test_sensitive_layer_missing_from_model_is_an_error(tmp_path, pixel_card):
    card_path = write_card(pixel_card.parent, "pixel_model.onnx", model_id="renamed", sensitive=("decoder_head",))
    card = load_card(card_path)
    with pytest.raises(ModelCardError, match="decoder_head"):
        convert_fp16(card.onnx_path, tmp_path / "x.onnx", card)


def test_int8_is_tensorrt_style_qdq(tmp_path, pixel_card, engine_data):
    card = load_card(pixel_card)
    out = tmp_path / "int8.onnx"
    provenance = quantize_int8(card.onnx_path, out, card, engine_data["calib"][:8], load_strategy())
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 3 and "DequantizeLinear" in ops
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            assert inits[node.input[0]].data_type == onnx.TensorProto.INT8  # no int32 bias (TensorRT rejects it)
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in inits:
            assert not onnx.numpy_helper.to_array(inits[node.input[2]]).any()  # symmetric: zero point 0
    head = next(n for n in model.graph.node if n.name == "head")
    assert head.input[1] == "head_w" and inits["head_w"].data_type == onnx.TensorProto.FLOAT  # kept in float
    assert provenance["kept_in_float"] == ["head"] and provenance["calibration_frames"] == 8
    y = onnx_infer(out)(np.zeros((1, 3, 32, 48), np.float32))
    assert y.shape == (1, 6, 32, 48) and y.dtype == np.float32


def test_int8_keeps_the_cards_int8_float_layers_instead_and_caches_apart(tmp_path, pixel_card, engine_data):
    import dataclasses

    from holoburn.engines.precision import converted_key

    card = load_card(pixel_card)  # sensitive_layers: the head
    assert card.float_layers("int8") == card.float_layers("fp16") == ("head",)
    nothing_float = dataclasses.replace(card, int8_float_layers=())
    assert nothing_float.float_layers("int8") == () and nothing_float.float_layers("fp16") == ("head",)
    provenance = quantize_int8(card.onnx_path, tmp_path / "int8.onnx", nothing_float, engine_data["calib"][:8],
                               load_strategy())
    assert provenance["kept_in_float"] == []
    head = next(n for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node if n.name == "head")
    assert head.input[1] != "head_w"  # its weights quantized now
    # a model built with other float layers is another model: never taken from the cache for this one
    assert converted_key(nothing_float, "int8") != converted_key(card, "int8")
    assert converted_key(nothing_float, "fp16") == converted_key(card, "fp16")


def test_calibration_methods_differ(tmp_path, pixel_card, engine_data):
    card = load_card(pixel_card)
    scales = {}
    for method in ("entropy", "percentile", "minmax"):
        out = tmp_path / f"{method}.onnx"
        quantize_int8(card.onnx_path, out, card, engine_data["calib"][:8], load_strategy().with_overrides(calibration_method=method))
        model = onnx.load(str(out))
        scales[method] = {i.name: float(onnx.numpy_helper.to_array(i).ravel()[0]) for i in model.graph.initializer if i.name == "mix_r_scale"}
    assert scales["entropy"] != scales["minmax"] != scales["percentile"]
    # entropy and percentile clip the long tail: their ranges are below the observed maximum
    assert scales["entropy"]["mix_r_scale"] < scales["minmax"]["mix_r_scale"]
    with pytest.raises(CalibrationError):
        load_strategy().with_overrides(calibration_method="kl")


def test_int8_recipe_options(tmp_path, pixel_card, engine_data):
    """The recipe options bench/int8_recipes.py measures: Q/DQ placement, activation type, and
    that each one changes the cache key (a model made with another recipe is never reused)."""
    from holoburn.engines.precision import converted_key

    card = load_card(pixel_card)
    base = load_strategy()
    assert base.quantize_conv_outputs and base.activation_type == "int8" and not base.reduce_range
    made = {}
    for label, strategy in {"default": base, "inputs_only": base.with_overrides(quantize_conv_outputs=False),
                            "uint8": base.with_overrides(activation_type="uint8", symmetric_activations=False)}.items():
        out = tmp_path / f"{label}.onnx"
        quantize_int8(card.onnx_path, out, card, engine_data["calib"][:4], strategy)
        made[label] = onnx.load(str(out))
    quantized = lambda m: {n.input[0] for n in m.graph.node if n.op_type == "QuantizeLinear"}  # noqa: E731
    assert "mix_y" in quantized(made["default"])  # onnxruntime's placement: a conv's output too
    assert "mix_y" not in quantized(made["inputs_only"]) and "stem_r" in quantized(made["inputs_only"])  # mix reads stem_r
    zero_points = {i.name: i.data_type for i in made["uint8"].graph.initializer if i.name.endswith("_zero_point")}
    assert onnx.TensorProto.UINT8 in zero_points.values()
    keys = {converted_key(card, "int8", s).recipe for s in (base, base.with_overrides(quantize_conv_outputs=False),
                                                             base.with_overrides(activation_type="uint8"), base.with_overrides(reduce_range=True))}
    assert len(keys) == 4
    with pytest.raises(CalibrationError, match="activation type"):
        base.with_overrides(activation_type="int4")


def test_strategies_per_domain():
    derm, radio = load_strategy(), load_strategy("radiology")
    assert derm.domain == "dermatology" and derm.calibration_method == "percentile" and derm.max_drop_points == 1.0
    assert radio.calibration_method == "percentile" and radio.percentile > derm.percentile
    assert radio.keep_first_conv_fp32 and radio.max_drop_points <= derm.max_drop_points
    with pytest.raises(CalibrationError, match="no domain 'cardiology'"):
        load_strategy("cardiology")


def _print_table(title, scores, card):
    print(f"\n{title}")
    ref = scores["fp32"]
    for label, s in scores.items():
        deltas = [(s.dice[i] - ref.dice[i]) * 100 for i in ref.burn_classes]
        print(f"  {label:5s} any-burn Dice {s.any_burn_dice * 100:6.2f} (delta {(s.any_burn_dice - ref.any_burn_dice) * 100:+.2f}); "
              f"burn classes delta {', '.join(f'{card.classes[i]} {d:+.2f}' for i, d in zip(ref.burn_classes, deltas))}; "
              f"agreement {s.agreement * 100:.2f} %")


def test_every_precision_on_the_test_model(engine_cache, pixel_card, engine_data):
    """FP16 passes the gate. This 4-layer colour model is fragile under INT8 (its head amplifies
    small feature errors), so the gate must refuse its INT8 copy at the default limit, and a
    relaxed limit (only to exercise caching) accepts it."""
    card = load_card(pixel_card)
    holdout = engine_data["holdout"]
    fp16 = build_precision_model(card, "fp16", holdout)
    assert fp16.report.passed and not fp16.cache_hit
    with pytest.raises(GateRefused) as refused:
        build_precision_model(card, "int8", holdout, calibration_frames=engine_data["calib"])
    report = refused.value.report
    assert not report.passed and report.failures()
    with pytest.raises(PrecisionModelMissing, match="holoburn engine build"):
        model_for_precision(card, "int8")  # nothing cached
    relaxed = load_strategy().with_overrides(max_drop_points=100.0)
    int8 = build_precision_model(card, "int8", holdout, calibration_frames=engine_data["calib"], strategy=relaxed)
    scores = evaluate({"fp32": onnx_infer(card.onnx_path), "fp16": onnx_infer(fp16.path), "int8": onnx_infer(int8.path)}, holdout, card)
    _print_table("test model (4-layer colour classifier), 24 held-out synth frames:", scores, card)
    assert model_for_precision(card, "fp16") == fp16.path
    assert build_precision_model(card, "fp16", holdout).cache_hit


def test_gate_refuses_a_degraded_model(tmp_path, pixel_card, engine_data):
    card = load_card(pixel_card)
    degraded = pixel_model_onnx(tmp_path / "degraded.onnx", engine_data["train"], degrade=1.5)
    report = run_gate(card, {"fp32": card.onnx_path, "fp16": degraded}, engine_data["holdout"])
    assert not report.passed
    md = report.to_markdown()
    assert "REFUSED" in md and "| any_burn |" in md and "FAIL" in md
    md_path, json_path = report.write(tmp_path / "degraded")
    data = json.loads(json_path.read_text())
    assert data["passed"] is False and {r["class"] for r in data["rows"]} >= {"full_thickness", "any_burn"}
    assert md_path.read_text() == md
    # the same model against itself passes with zero deltas
    same = run_gate(card, {"fp32": card.onnx_path, "copy": card.onnx_path}, engine_data["holdout"][:4], max_drop_points=0.0)
    assert same.passed and same.agreement == 1.0


def test_gate_refuses_an_incomplete_holdout(pixel_card, engine_data):
    card = load_card(pixel_card)
    no_burn = [(frame, np.where(mask >= 2, 1, mask).astype(np.uint8)) for frame, mask in engine_data["holdout"][:3]]
    report = run_gate(card, {"fp32": card.onnx_path, "fp16": card.onnx_path}, no_burn)
    assert not report.passed and "untested" in report.to_markdown()


def test_labelled_set_and_frames_from_folders(tmp_path, engine_data):
    directory = write_labelled_dir(tmp_path / "holdout", engine_data["holdout"][:5])
    pairs = load_labelled_set(directory)
    assert len(pairs) == 5 and pairs[0][0].shape == (240, 320, 3) and pairs[0][1].dtype == np.uint8
    assert np.array_equal(pairs[2][1], engine_data["holdout"][2][1])
    assert len(load_labelled_set(directory, limit=3)) == 3
    assert len(list(iter_frames_rgb(directory / "frames", limit=2))) == 2
    with pytest.raises(FrameSetError, match="nowhere"):
        list(iter_frames_rgb(tmp_path / "nowhere"))


def test_gate_refuses_more_false_burn_on_frames_without_burn():
    """Negatives (truth without burn: real photographs of no burn) weigh little in pooled Dice; the
    gate compares the share of their pixels each model calls burn on its own."""
    from types import SimpleNamespace

    from holoburn.engines.gate import compare

    size, classes = 16, ["background", "healthy_skin", "superficial", "superficial_partial", "deep_partial",
                         "full_thickness"]
    card = SimpleNamespace(classes=classes, num_classes=6, input_size=size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                           path="test-card")

    def model(burn_rows_on_negatives: int):
        def infer(batch):  # class from the picture's red channel; a dark picture is the negative
            logits = np.zeros((1, 6, size, size), np.float32)
            red = batch[0, 0]
            logits[0, 5] = np.where(red > 100, 10.0, 0.0)  # bright: full thickness
            logits[0, 0] = np.where(red <= 100, 5.0, 0.0)
            if red.max() <= 100:  # the negative frame: some rows called superficial
                logits[0, 2, :burn_rows_on_negatives] = 20.0
            return logits
        return infer

    scene = (np.full((size, size, 3), 200, np.uint8), np.full((size, size), 5, np.uint8))
    negative = (np.full((size, size, 3), 20, np.uint8), np.zeros((size, size), np.uint8))
    for rows, refused in ((0, False), (1, True)):  # 1 of 16 rows: 6.25 % of the negative's pixels
        # 20 burn scenes beside one negative: its false burn moves the pooled any-burn Dice by 0.16 points only
        scores = evaluate({"fp32": model(0), "int8": model(rows)}, [scene] * 20 + [negative], card)
        assert scores["fp32"].negative_pixels == size * size and scores["int8"].negative_burn_pixels == rows * size
        # the scenes hold one burn class (the others untested, allowed here): only the negatives can refuse
        report = compare(card, scores["fp32"], scores["int8"], "int8", max_drop_points=1.0, require_all_classes=False)
        assert [r.name for r in report.rows if r.status == "FAIL"] == []
        assert report.passed is not refused
        assert ("false_burn_on_negatives" in report.lost()) is refused
        assert report.to_json()["false_burn_on_negatives_pct"]["candidate"] == pytest.approx(100 * rows / size)
        if refused:
            assert "6.25 points more of the no-burn frames' pixels burn" in report.reason()


def test_gate_judges_each_family_of_the_holdout_on_its_own():
    """A loss in one family of scenes refuses the candidate even where the pooled figures hide it."""
    from types import SimpleNamespace

    size, classes = 16, ["background", "healthy_skin", "superficial", "superficial_partial", "deep_partial",
                         "full_thickness"]
    card = SimpleNamespace(classes=classes, num_classes=6, input_size=size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                           path="test-card")

    def model(miss_rows: int):
        def infer(batch):  # bright red: full thickness; the green-tinted family loses `miss_rows` rows of it
            logits = np.zeros((1, 6, size, size), np.float32)
            logits[0, 5] = np.where(batch[0, 0] > 100, 10.0, 0.0)
            logits[0, 0] = 5.0
            if batch[0, 1].max() > 100:
                logits[0, 5, :miss_rows] = 0.0
            return logits
        return infer

    red = (np.dstack([np.full((size, size), 200, np.uint8), np.zeros((size, size), np.uint8), np.zeros((size, size), np.uint8)]),
           np.full((size, size), 5, np.uint8))
    tinted = (np.dstack([np.full((size, size), 200, np.uint8), np.full((size, size), 150, np.uint8), np.zeros((size, size), np.uint8)]),
              np.full((size, size), 5, np.uint8))
    families = {"plain": [red] * 40, "tinted": [tinted] * 2}
    report = run_gate(card, {"fp32": model(0), "int8": model(1)}, families, max_drop_points=1.0)
    report.require_all_classes = False  # one burn class in this set; the others are not what is tested here
    pooled = {r.name: r.status for r in report.rows if r.gated and r.status != "untested"}
    assert pooled == {"full_thickness": "pass", "any_burn": "pass"}  # 32 of 10,752 burn pixels: -0.15 points pooled
    assert report.families["tinted"].lost() == ["full_thickness", "any_burn"] and not report.families["plain"].lost()
    assert not report.passed and report.failures() == ["tinted: full_thickness", "tinted: any_burn"]
    assert "On the tinted frames alone (2)" in report.reason()
    assert "| tinted | 2 |" in report.to_markdown() and report.to_json()["families"]["tinted"]["passed"] is False
