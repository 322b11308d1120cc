"""Which INT8 recipe keeps every burn class of the shipped model within the accuracy gate (issue 12).

Each candidate recipe is a set of overrides of the dermatology strategy (configs/quantization.yaml),
optionally other layers kept in float (the card's int8_float_layers, else its sensitive_layers) and another calibration set.
Every candidate is made by holoburn's own `quantize_int8` and judged by the gate's own `run_gate`
against FP32 on the gate's generated hold-out (`synthetic_sets`: contact + varied scenes of an
unseen seed, one scene per frame, plus the held-out photographs as "no burn"), all through ONNX
Runtime on the CPU. Calibration frames come only from training-like families (varied, clinic,
no_skin, the training photographs), never from the hold-out's families or photographs.

    python3 bench/int8_recipes.py                      # every candidate, the gate's default hold-out
    python3 bench/int8_recipes.py --holdout-frames 160 --candidate baseline --candidate "percentile 99.9999"
    python3 bench/int8_recipes.py --scenes-only       # without the held-out photographs
    python3 bench/int8_recipes.py --calibration-draws 5 --candidate baseline   # 5 draws of calibration frames
    python3 bench/int8_recipes.py --sensitivity       # rank the layers by INT8 sensitivity (training-like frames)
    python3 bench/int8_recipes.py --candidate sensitive-top-2 --independent 7000001   # + 120 independent scenes
    python3 bench/int8_recipes.py --stream-calibration --candidate mixed-256 --calibration-draws 3   # mixed-256@5000001..3
    python3 bench/int8_recipes.py --candidate configured --source-onnx /tmp/qat/burn_unet_v2_qat.onnx --gate-source-fp32
        # quantize another FP32 ONNX of the same network (bench/int8_qat.py); the reference stays the card's FP32

Layer sensitivity (`--sensitivity`, standard mixed-precision practice): every layer quantize_int8
quantizes is made INT8 alone (the rest float) and left alone in float (the rest INT8), and the
output's distance from FP32 is measured on training-like frames (varied, clinic, no_skin scenes of
a calibration seed and the training photographs), never on a hold-out, so the choice is not tuned
on the test. Candidates "sensitive-top-K" keep the K most sensitive layers of the latest ranking
in the results file in float instead of the card's INT8 float layers (on TensorRT they run in
float: FP32 where TensorRT 10 pins them, else the float precision the build allows).

Results (per class Dice and sensitivity deltas in points, verdict, seconds) are written to
bench/results/int8_recipes_cpu.json (one entry per command; a re-run of the same command replaces it).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "int8_recipes_cpu.json"
STEM, HEAD = "/enc1/enc1.0/Conv", "/classifier/Conv"

#: the recipe the gate refused in issue 12 (superficial Dice -1.19 points); candidates change it
BASELINE = {"calibration_method": "percentile", "percentile": 99.999, "per_channel": True, "symmetric_activations": True,
            "activation_type": "int8", "reduce_range": False, "keep_first_conv_fp32": False, "quantize_conv_outputs": True,
            "calibration_frames": 64}

#: name -> (overrides of BASELINE, layers kept in float (None: the card's), calibration set)
#: calibration sets: "gate" = synthetic_sets()' own (32 varied scenes, calibration seed);
#: "gate+photos" = those plus the 6 training photographs (no skin; the model trained on them);
#: "mixed-N" = N frames of the training mix (varied 70 %, clinic 15 %, no_skin 15 %) plus the
#: training photographs; "varied-N" = N varied frames of the calibration seed ("varied-N@SEED": of SEED);
#: "SET+photos": SET plus the training photographs.
CANDIDATES = {
    "configured": ({}, None, "gate"),  # configs/quantization.yaml as it stands (not BASELINE)
    "baseline": ({}, None, "gate"),
    "per-tensor weights": ({"per_channel": False}, None, "gate"),
    "percentile 99.99": ({"percentile": 99.99}, None, "gate"),
    "percentile 99.9999": ({"percentile": 99.9999}, None, "gate"),
    "percentile 99.99999": ({"percentile": 99.99999}, None, "gate"),
    "minmax": ({"calibration_method": "minmax"}, None, "gate"),
    "varied-64": ({"calibration_frames": 64}, None, "varied-64"),
    "mixed-64": ({"calibration_frames": 70}, None, "mixed-64"),
    "mixed-128": ({"calibration_frames": 134}, None, "mixed-128"),
    "stem+head float (card) -> head only": ({}, (HEAD,), "gate"),
    "stem+head float (card) -> stem only": ({}, (STEM,), "gate"),
    "nothing float": ({}, (), "gate"),
    "reduce_range": ({"reduce_range": True}, None, "gate"),
    "asymmetric int8 activations": ({"symmetric_activations": False}, None, "gate"),
    "asymmetric uint8 activations": ({"symmetric_activations": False, "activation_type": "uint8"}, None, "gate"),
    "gate+photos": ({"calibration_frames": 38}, None, "gate+photos"),
    "gate+photos, percentile 99.9999": ({"calibration_frames": 38, "percentile": 99.9999}, None, "gate+photos"),
    "gate+photos, minmax": ({"calibration_frames": 38, "calibration_method": "minmax"}, None, "gate+photos"),
    "conv-inputs-only": ({"quantize_conv_outputs": False}, None, "gate"),
    "conv-inputs-only, percentile 99.99": ({"quantize_conv_outputs": False, "percentile": 99.99}, None, "gate"),
    "conv-inputs-only, percentile 99.9999": ({"quantize_conv_outputs": False, "percentile": 99.9999}, None, "gate"),
    "conv-inputs-only, minmax": ({"quantize_conv_outputs": False, "calibration_method": "minmax"}, None, "gate"),
    "conv-inputs-only, mixed-64": ({"quantize_conv_outputs": False, "calibration_frames": 70}, None, "mixed-64"),
    "conv-inputs-only, nothing float": ({"quantize_conv_outputs": False}, (), "gate"),
    # an int: that many layers of the --sensitivity ranking kept in float, the rest as configured
    **{f"sensitive-top-{k}": ({}, k, "gate") for k in (1, 2, 4, 6, 8)},
    # a larger calibration set of the training mix (+ the 6 training photographs), with the card's
    # float layers or the top-K of the ranking
    "mixed-256": ({"calibration_frames": 262}, None, "mixed-256"),
    **{f"mixed-{n}, sensitive-top-{k}": ({"calibration_frames": n + 6}, k, f"mixed-{n}") for n in (128, 256) for k in (4, 6)},
}
#: frames the sensitivity is measured on: training families at a calibration seed (not the
#: calibration frames themselves: those are varied-32 of seed 5_000_001), + training photographs
SENSITIVITY_FRAMES = "mixed-48@5000002"


def calibration_set(spec: str, gate_calibration: list, size) -> list:
    """Frames (H, W, 3) uint8 RGB for a calibration spec (see CANDIDATES); never hold-out families."""
    from holoburn.app.run.engine_setup import CALIBRATION_SEED
    from holoburn.app.synthesis import photos
    from holoburn.app.synthesis.synth import iter_frames

    if spec.endswith("+photos"):
        return calibration_set(spec[: -len("+photos")], gate_calibration, size) + list(photos.load_photos(photos.TRAINING_PHOTOS).values())
    if spec == "gate":
        return list(gate_calibration)
    kind, count = spec.rsplit("-", 1)
    count, _, seed = count.partition("@")
    count, seed = int(count), int(seed or CALIBRATION_SEED)
    if kind == "varied":
        return [f for f, _ in iter_frames(count, seed, size, 1, family="varied")]
    shares = {"varied": count - 2 * (count * 15 // 100), "clinic": count * 15 // 100, "no_skin": count * 15 // 100}
    frames = [f for family, n in shares.items() for f, _ in iter_frames(n, seed, size, 1, family=family)]
    return frames + list(photos.load_photos(photos.TRAINING_PHOTOS).values())


def streamed_percentile_calibration():
    """Patch ONNX Runtime's HistogramCalibrater.collect_data (symmetric percentile only) to build the same
    histograms without holding every calibration frame's activations in memory: ONNX Runtime keeps all of
    them (about 100 MB a frame here: 13.5 GB peak for 134 frames, ~26 GB for 262, more than this machine
    has). Two passes over the frames: the |x| range of each tensor, then np.histogram with that range and
    the same bin count, summed, which is what np.histogram(all |x|, bins) computes (its edges are the
    |x| min..max). For --stream-calibration. Checked on mixed-128 (134 frames, configured recipe):
    quantize_int8 wrote a byte-identical INT8 model with and without it (peak RSS 0.57 GB vs 13.4 GB).
    Returns a function that undoes the patch."""
    import numpy as np
    from onnxruntime.quantization.calibrate import HistogramCalibrater, HistogramCollector

    original = HistogramCalibrater.collect_data

    def collect_data(self, data_reader):
        if self.method != "percentile" or not self.symmetric or self.collector:
            return original(self, data_reader)
        feeds = []
        while (inputs := data_reader.get_next()):
            feeds.append(inputs)
        if not feeds:
            raise ValueError("No data is collected.")
        output_names = [node_arg.name for node_arg in self.infer_session.get_outputs()]
        names = [n for n in output_names if n in self.tensors_to_calibrate]
        low, high, abs_low, abs_high, dtype = {}, {}, {}, {}, {}
        for inputs in feeds:
            outputs = dict(zip(output_names, self.infer_session.run(None, inputs)))
            for n in names:
                a = outputs[n]
                dtype[n] = a.dtype
                values = (np.nanmin(a), np.nanmax(a), np.min(np.absolute(a)), np.max(np.absolute(a)))
                if n not in low:
                    low[n], high[n], abs_low[n], abs_high[n] = values
                else:
                    low[n], high[n] = min(low[n], values[0]), max(high[n], values[1])
                    abs_low[n], abs_high[n] = min(abs_low[n], values[2]), max(abs_high[n], values[3])
        hists, edges = {}, {}
        for inputs in feeds:
            outputs = dict(zip(output_names, self.infer_session.run(None, inputs)))
            for n in names:
                hist, edges[n] = np.histogram(np.absolute(outputs[n]).ravel(), bins=self.num_bins, range=(abs_low[n], abs_high[n]))
                hists[n] = hist if n not in hists else hists[n] + hist
        self.collector = HistogramCollector(method=self.method, symmetric=self.symmetric, num_bins=self.num_bins,
                                            num_quantized_bins=self.num_quantized_bins, percentile=self.percentile,
                                            scenario=self.scenario)
        self.collector.histogram_dict = {n: (hists[n], edges[n].astype(dtype[n]), low[n], high[n]) for n in names}
        self.clear_collected_data()

    HistogramCalibrater.collect_data = collect_data
    return lambda: setattr(HistogramCalibrater, "collect_data", original)


def int8_infer(path: Path, threads: int, as_tensorrt: bool = True):
    """engines.gate.onnx_infer for a Q/DQ model. ONNX Runtime's graph optimizer (1.32 here) would
    quantize, per tensor, the float weights of a convolution that reads a dequantized tensor: a
    layer kept in float would run with INT8 weights on the CPU, where TensorRT runs it in float.
    as_tensorrt (the default; the gate does the same): without that pass."""
    from holoburn.engines.gate import onnx_infer

    return onnx_infer(path, threads, float_layers_in_float=as_tensorrt)


def layer_sensitivity(card, calibration: list, scoring: list, strategy, workdir: Path, threads: int = 2, as_tensorrt: bool = True) -> dict:
    """Every layer quantize_int8 quantizes, most sensitive first.

    calibration, scoring: frames (H, W, 3) uint8 RGB of training-like families (never a hold-out).
    For each layer, its INT8 model's distance from FP32 on `scoring` when the layer alone is INT8
    (`alone_int8`: the rest float) and when it alone stays float (`alone_float`: the rest INT8):
    mean KL divergence of the class softmax, nats per pixel of the model input (`kl`), and the
    share of those pixels whose class changes (`class_changed_pct`). Ranked by alone_int8 KL, the
    layer's own damage free of the other layers' errors. The card's float layers are ignored.
    Returns {"all_int8": distance, "layers": [{"layer", "op", "alone_int8", "alone_float"}, ...]}.
    """
    import numpy as np
    import onnx

    from holoburn.engines.gate import onnx_infer
    from holoburn.engines.quantize import calibration_batches, quantize_int8, quantized_nodes

    def softmax(logits):
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    batches = [feed[card.input_name] for feed in calibration_batches(scoring, card)]
    fp32 = onnx_infer(card.onnx_path, threads)
    reference = [softmax(fp32(batch)) for batch in batches]
    model = workdir / "sensitivity.onnx"

    def distance(kept_in_float) -> dict:
        quantize_int8(card.onnx_path, model, dataclasses.replace(card, int8_float_layers=tuple(kept_in_float)), calibration, strategy)
        int8 = int8_infer(model, threads, as_tensorrt)
        kl, changed = [], []
        for batch, p in zip(batches, reference):
            q = softmax(int8(batch))
            kl.append(float(np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), axis=1))))
            changed.append(float(np.mean(p.argmax(1) != q.argmax(1))))
        return {"kl": round(float(np.mean(kl)), 7), "class_changed_pct": round(100 * float(np.mean(changed)), 4)}

    all_int8 = distance(())
    quantized = onnx.load(str(model))
    ops = {node.name: node.op_type for node in quantized.graph.node}
    layers = quantized_nodes(quantized)
    rows = [{"layer": name, "op": ops[name], "alone_int8": distance([other for other in layers if other != name]),
             "alone_float": distance([name])} for name in layers]
    rows.sort(key=lambda row: (-row["alone_int8"]["kl"], -row["alone_int8"]["class_changed_pct"]))
    return {"all_int8": all_int8, "layers": rows}


def worst_loss(report) -> dict:
    """The gate's worst drop (Dice or sensitivity, points) over the pooled set and each family, and where."""
    found = []
    for family, sub in {"pooled": report, **report.families}.items():
        for row in sub.rows:
            if row.gated and row.status != "untested":
                found += [(row.dice_delta, family, row.name, "dice"), (row.sensitivity_delta, family, row.name, "sensitivity")]
    value, family, name, metric = min(found)
    largest_dice = max((abs(r.dice_delta), f, r.name) for f, sub in {"pooled": report, **report.families}.items()
                       for r in sub.rows if r.gated and r.status != "untested")
    return {"points": round(100 * value, 4), "family": family, "class": name, "metric": metric,
            "largest_abs_dice_delta": {"points": round(100 * largest_dice[0], 4), "family": largest_dice[1], "class": largest_dice[2]}}


def measure(card, holdouts: dict, frames, strategy, workdir: Path, threads: int, as_tensorrt: bool = True,
            source: Path | None = None) -> dict:
    """Quantize once, gate against FP32 on every held-out set of `holdouts` (name -> pairs or families).
    source: the ONNX to quantize (--source-onnx; default the card's); the FP32 reference is always the card's."""
    from holoburn.engines.quantize import quantize_int8

    model = workdir / "int8.onnx"
    started = time.perf_counter()
    provenance = quantize_int8(source or card.onnx_path, model, card, frames[: strategy.calibration_frames], strategy)
    result = {"quantize_s": round(time.perf_counter() - started, 1), "conversion": provenance,
              "sets": gate_sets(card, holdouts, int8_infer(model, threads, as_tensorrt), strategy, threads)}
    return result


def gate_sets(card, holdouts: dict, candidate, strategy, threads: int, label: str = "int8") -> dict:
    """run_gate of `candidate` (ONNX path or infer function) against the card's FP32 on every set of `holdouts`."""
    from holoburn.engines.gate import run_gate

    found_sets = {}
    for name, holdout in holdouts.items():
        started = time.perf_counter()
        report = run_gate(card, {"fp32": card.onnx_path, label: candidate}, holdout, strategy=strategy, threads=threads)
        data = report.to_json()
        rows = {r["class"]: {"dice_delta": r["dice_delta"], "sensitivity_delta": r["sensitivity_delta"]} for r in data["rows"] if r["gated"]}
        found_sets[name] = {
            "accepted": report.passed,
            "worst_delta_points": round(report.summary()["worst_delta_points"], 4),
            "worst_incl_families": worst_loss(report),
            "failures": report.failures(),
            "pixel_agreement_pct": data["pixel_agreement_pct"],
            "burn_classes": rows,
            "gate_s": round(time.perf_counter() - started, 1),
        }
    return found_sets


def source_provenance(source: Path) -> dict:
    """How a --source-onnx was made, where bench/int8_qat.py left its summary beside it (<stem>.json)."""
    summary = source.with_suffix(".json")
    try:
        made = json.loads(summary.read_text())
    except (OSError, ValueError):
        return {}
    keep = ("command", "frames", "steps", "batch_size", "crop", "lr", "schedule", "loss", "fake_quant",
            "batch_norm_statistics_unchanged", "train_seconds", "loss_first_25", "loss_last_25", "torch_threads")
    return {"made_by": {k: made[k] for k in keep if k in made}}


def print_verdicts(name: str, spec: str, sets: dict) -> None:
    """One line per set measured: the verdict, the worst drop and the Dice deltas per burn class."""
    for set_name, found in sets.items():
        deltas = ", ".join(f"{k} {v['dice_delta']:+.2f}" for k, v in found["burn_classes"].items())
        worst = found["worst_incl_families"]
        print(f"{name:38s} {spec:18s} {set_name:22s} {'ACCEPTED' if found['accepted'] else 'refused ':8s} "
              f"worst {worst['points']:+.2f} ({worst['family']} {worst['class']} {worst['metric']})  Dice: {deltas}", flush=True)


def latest_ranking(results: Path) -> list[str]:
    """Layer names of the latest --sensitivity ranking in the results file, most sensitive first."""
    runs = json.loads(results.read_text())["runs"] if results.is_file() else []
    ranked = [run["sensitivity"]["layers"] for run in runs if "sensitivity" in run]
    return [row["layer"] for row in ranked[-1]] if ranked else []


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--holdout-frames", type=int, default=None, help="synthetic scenes in the hold-out (default: the gate's own, synthetic_sets())")
    parser.add_argument("--candidate", action="append", default=None, help=f"one name, repeatable (default all): {'; '.join(CANDIDATES)}")
    parser.add_argument("--scenes-only", action="store_true", help="leave the held-out photographs out (to see their share of a delta)")
    parser.add_argument("--calibration-draws", type=int, default=1,
                        help="for candidates calibrated on the gate's frames (+photos): also K-1 other draws of 32 varied frames "
                             "(calibration seed + 1 ..), to see how much a verdict depends on the draw; for mixed-N / varied-N "
                             "sets: the same N frames of seeds calibration seed + 1 ..")
    parser.add_argument("--sensitivity", action="store_true",
                        help=f"only rank the layers by INT8 sensitivity on {SENSITIVITY_FRAMES} (module doc) and write the ranking")
    parser.add_argument("--independent", type=int, action="append", default=[], metavar="SEED",
                        help="also gate every candidate on scenes of the independent generator of this seed (repeatable)")
    parser.add_argument("--independent-frames", type=int, default=120, help="scenes per --independent set")
    parser.add_argument("--ort-weight-quantization", action="store_true",
                        help="let ONNX Runtime quantize the weights of layers kept in float, as the gate did before "
                             "2026-12-01 (default: they run in float, as on TensorRT and in the gate)")
    parser.add_argument("--stream-calibration", action="store_true",
                        help="build the percentile histograms in two passes over the calibration frames instead of holding "
                             "every frame's activations (streamed_percentile_calibration; needed for mixed-256 on 23 GB)")
    parser.add_argument("--source-onnx", type=Path, default=None, metavar="PATH",
                        help="quantize this FP32 ONNX (e.g. a QAT fine-tune of the card's network, same node names) instead "
                             "of the card's; the gate's FP32 reference stays the card's model")
    parser.add_argument("--gate-source-fp32", action="store_true",
                        help="with --source-onnx: also gate that ONNX itself, unquantized, against the card's FP32 on every set "
                             "(how far the source moved FP32)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import inspect

    import onnxruntime

    from holoburn.app.run.engine_setup import CALIBRATION_SEED, synthetic_sets
    from holoburn.app.synthesis.independent import independent_frames
    from holoburn.engines.card import DEFAULT_CARD, load_card
    from holoburn.engines.quantize import load_strategy

    if args.gate_source_fp32 and not args.source_onnx:
        parser.error("--gate-source-fp32 needs --source-onnx")
    if args.source_onnx and not args.source_onnx.is_file():
        parser.error(f"--source-onnx {args.source_onnx}: no such file")
    names = args.candidate or list(CANDIDATES)
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        parser.error(f"unknown candidates {unknown}; choose from {list(CANDIDATES)}")
    ranking = latest_ranking(args.out)
    if not args.sensitivity and not ranking and any(isinstance(CANDIDATES[n][1], int) for n in names):
        parser.error(f"the sensitive-top-K candidates need a ranking in {args.out}: run with --sensitivity first")
    card = load_card(DEFAULT_CARD)
    size = inspect.signature(synthetic_sets).parameters["size"].default
    configured = load_strategy()
    command = "python3 bench/int8_recipes.py" + "".join(f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:]))
    run = {
        "command": command,
        "model": card.model_id,
        "onnxruntime": onnxruntime.__version__,
        "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores, {args.threads} threads",
        "date": time.strftime("%Y-%m-%d"),
        "float_layers_run": "with INT8 weights (ONNX Runtime's WeightBiasQuantization on)"
                            if args.ort_weight_quantization else "in float, as on TensorRT and in engines.gate (ONNX Runtime's "
                                                                 "WeightBiasQuantization off)",
    }

    if args.source_onnx:
        from holoburn.engines.card import file_sha256

        run["source_onnx"] = {"path": str(args.source_onnx), "sha256": file_sha256(args.source_onnx),
                              "what": "quantized instead of the card's ONNX; FP32 reference: the card's "
                                      f"{card.onnx_path.name} (sha256 {card.model_sha256()})",
                              **source_provenance(args.source_onnx)}

    if args.stream_calibration:
        streamed_percentile_calibration()
        run["calibration_collection"] = "streamed (bench streamed_percentile_calibration: same histograms, two passes)"

    if args.sensitivity:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="holoburn-int8-sensitivity-") as tmp:
            found = layer_sensitivity(card, calibration_set("varied-32", [], size), calibration_set(SENSITIVITY_FRAMES, [], size),
                                      configured, Path(tmp), args.threads, not args.ort_weight_quantization)
        for rank, row in enumerate(found["layers"], 1):
            print(f"{rank:2d} {row['layer']:34s} {row['op']:13s} alone INT8: KL {row['alone_int8']['kl']:.6f} "
                  f"changed {row['alone_int8']['class_changed_pct']:.3f} %  alone float: KL {row['alone_float']['kl']:.6f} "
                  f"changed {row['alone_float']['class_changed_pct']:.3f} %", flush=True)
        run["sensitivity"] = {
            "what": "each layer quantize_int8 quantizes, INT8 alone (rest float) and float alone (rest INT8), vs FP32; "
                    "ranked by alone_int8 KL (layer_sensitivity)",
            "calibration": f"varied-32 (seed {CALIBRATION_SEED}): the gate's calibration frames (synthetic_sets)",
            "scored_on": f"{SENSITIVITY_FRAMES}: varied/clinic/no_skin scenes of a calibration seed + the training photographs "
                         "(training families only; no hold-out family, seed or photograph)",
            "int8_recipe": configured.int8_recipe(),
            "seconds": round(time.perf_counter() - started, 1),
            **found,
        }
        record(args.out, run)
        return 0

    holdout, gate_calibration = synthetic_sets(args.holdout_frames) if args.holdout_frames else synthetic_sets()
    if args.scenes_only:
        holdout = {name: pairs for name, pairs in holdout.items() if name != "photographs"}
    scenes = sum(len(pairs) for name, pairs in holdout.items() if name != "photographs")
    families = {name: len(pairs) for name, pairs in holdout.items()}
    holdouts = {"holdout": holdout, **{f"independent-{args.independent_frames}@{seed}": independent_frames(args.independent_frames, seed, size)
                                       for seed in args.independent}}
    base = configured.with_overrides(**BASELINE)
    rows = []
    runs = []
    for name in names:
        overrides, float_layers, spec = CANDIDATES[name]
        other = [f"varied-{len(gate_calibration)}@{CALIBRATION_SEED + i}" for i in range(1, args.calibration_draws)]
        if spec.startswith("gate"):
            draws = [spec] + [spec.replace("gate", draw, 1) for draw in other]
        elif spec.split("-")[0] in ("mixed", "varied") and "@" not in spec:  # "mixed-N": seed CALIBRATION_SEED, then + 1 ..
            count = spec.split("+")[0]
            draws = [spec] + [spec.replace(count, f"{count}@{CALIBRATION_SEED + i}", 1) for i in range(1, args.calibration_draws)]
        else:
            draws = [spec]
        runs += [(name, overrides, float_layers, draw) for draw in draws]
    if args.gate_source_fp32:
        started = time.perf_counter()
        sets = gate_sets(card, holdouts, args.source_onnx, configured, args.threads, label="source_fp32")
        row = {"candidate": "source fp32 (not quantized)", "onnx": str(args.source_onnx), **sets.pop("holdout"),
               **({"independent_sets": sets} if sets else {}), "seconds": round(time.perf_counter() - started, 1)}
        rows.append(row)
        print_verdicts("source fp32", "-", {"holdout": row, **sets})
    for name, overrides, float_layers, spec in runs:
        ranked = isinstance(float_layers, int)
        strategy = (configured if name == "configured" or ranked else base).with_overrides(**overrides)
        float_layers = ranking[:float_layers] if ranked else float_layers
        candidate_card = card if float_layers is None else dataclasses.replace(card, int8_float_layers=tuple(float_layers))
        frames = calibration_set(spec, gate_calibration, size)
        with tempfile.TemporaryDirectory(prefix="holoburn-int8-recipe-") as tmp:
            result = measure(candidate_card, holdouts, frames, strategy, Path(tmp), args.threads, not args.ort_weight_quantization,
                             args.source_onnx)
        sets = result.pop("sets")
        row = {"candidate": name, "int8_recipe": strategy.int8_recipe(), "kept_in_float_layers": list(candidate_card.float_layers("int8")),
               **({"kept_in_float_share": f"{len(float_layers)} of {len(ranking)} quantizable layers"} if ranked else {}),
               "calibration_set": spec, **sets.pop("holdout"), **result, **({"independent_sets": sets} if sets else {})}
        rows.append(row)
        print_verdicts(name, spec, {"holdout": row, **sets})

    run.update({
        "holdout": {"frames": sum(families.values()), "synthetic_scenes": scenes, "families": families,
                    "what": "app.run.engine_setup.synthetic_sets: contact, varied and independent-generator scenes "
                            "(hold-out seed, one scene per frame), judged pooled and family by family"
                            + ("" if args.scenes_only else ", + held-out photographs as no burn")},
        **({"independent_sets": {name: f"app.synthesis.independent.independent_frames({args.independent_frames}, {name.split('@')[1]}, {size})"
                                 for name in holdouts if name != "holdout"}} if args.independent else {}),
        "limit_points": base.max_drop_points,
        "gate": "holoburn.engines.gate.run_gate (Dice and sensitivity per burn class and any-burn vs fp32)",
        "rows": rows,
    })
    record(args.out, run)
    return 0


def record(results: Path, run: dict) -> None:
    """Add `run` to the results file (a run of the same command replaces its earlier entry)."""
    previous = json.loads(results.read_text()) if results.is_file() else {"runs": []}
    previous["runs"] = [r for r in previous["runs"] if r["command"] != run["command"]] + [run]
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(previous, indent=1) + "\n")
    print(f"results: {results}")


if __name__ == "__main__":
    sys.exit(main())
