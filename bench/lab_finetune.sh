#!/usr/bin/env bash
# GPU lab, one call (issue 14, "Your own data"): fine-tune on 1,000 annotated photographs at 512 px
# for 30 epochs and say how long each phase took and what the test split's any-burn Dice is.
#   synth     holoburn synth --coco --family independent (a scene generator the shipped model never saw)
#   import    holoburn dataset import --format coco, a case per patient (3 photographs each)
#   split     holoburn dataset split (train/validation/test by case, seed 1)
#   train     holoburn train --data --init shipped (bfloat16 autocast on CUDA; every epoch unless
#             PATIENCE is set below EPOCHS)
#   validate  holoburn validate --truth --split test, with the fine-tuned card and the shipped one
# Run from the repo root on the lab machine (torch with CUDA, holoburn installed editable, the
# recipe in ../shared/GPU-LAB.md). Results under $OUT: one log per phase, data/ (the dataset),
# model/ (card, ONNX, state dict, train log), val_tuned/ and val_shipped/ (metrics.json,
# report.html), summary.txt (the table printed at the end).
# Sizes: IMAGES (1000), SIZE (512, or WIDTHxHEIGHT), EPOCHS (30); DEVICE (cuda); RUN (the run's
# name and model id); FRACTIONS (0.7,0.15,0.15); INPUT_SIZE (256, the shipped model's); BACKEND
# (validate's; default auto). A CPU smoke run (4 cases: every split needs one):
#   IMAGES=12 SIZE=128 EPOCHS=1 DEVICE=cpu FRACTIONS=0.5,0.25,0.25 bash bench/lab_finetune.sh
set -uo pipefail
out=${OUT:-/tmp/out}
images=${IMAGES:-1000}
size=${SIZE:-512}
[[ $size == *x* ]] || size=${size}x${size}
epochs=${EPOCHS:-30}
device=${DEVICE:-cuda}
run=${RUN:-lab_finetune_${images}x${size}_e${epochs}}
hb=(python3 -m holoburn.app)
mkdir -p "$out"
rm -rf "$out/export" "$out/data" "$out/model" "$out/val_tuned" "$out/val_shipped"
: > "$out/phases.tsv"
if [ "$device" != cpu ]; then
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
fi

phase() {  # phase NAME COMMAND...: runs it, logs to $out/NAME.log, records the wall time; stops on failure
  local name=$1 started ended rc
  shift
  echo "== $name: $*"
  started=$(date +%s%N)
  "$@" > "$out/$name.log" 2>&1
  rc=$?
  ended=$(date +%s%N)
  printf '%s\t%s\t%s\n' "$name" "$(( (ended - started) / 1000000 ))" "$rc" >> "$out/phases.tsv"
  tail -4 "$out/$name.log"
  if [ $rc -ne 0 ]; then
    echo "$name failed (exit $rc): $out/$name.log"
    exit $rc
  fi
}

phase synth "${hb[@]}" synth --coco --family independent --frames "$images" --seed "${SEED:-4242}" --size "$size" \
  --out "$out/export"
phase import "${hb[@]}" dataset import --format coco "$out/export" "$out/data" --case-pattern '^(patient\d+)_'
phase split "${hb[@]}" dataset split "$out/data" --seed 1 --fractions "${FRACTIONS:-0.7,0.15,0.15}"
phase train "${hb[@]}" train --data "$out/data" --out "$out/model" --init shipped --device "$device" \
  --epochs "$epochs" --patience "${PATIENCE:-$epochs}" --input-size "${INPUT_SIZE:-256}" --model-id "$run"
backend=(); [ -n "${BACKEND:-}" ] && backend=(--backend "$BACKEND")
phase validate_tuned "${hb[@]}" validate --truth "$out/data" --split test --model "$out/model/$run.yaml" \
  "${backend[@]}" --out "$out/val_tuned"
phase validate_shipped "${hb[@]}" validate --truth "$out/data" --split test "${backend[@]}" --out "$out/val_shipped"

python3 - "$out" "$run" "$images" "$size" "$epochs" "$device" <<'EOF' | tee "$out/summary.txt"
import json, sys
from pathlib import Path

import yaml

out, run, images, size, epochs, device = sys.argv[1:]
out = Path(out)
card = yaml.safe_load((out / "model" / f"{run}.yaml").read_text())
training = card["training"]
phases = [(name, int(ms) / 1000) for name, ms, _ in (line.split("\t") for line in (out / "phases.tsv").read_text().splitlines())]
print(f"\nrun {run}: {images} images {size}, {epochs} epochs planned, {training['epochs_completed']} completed "
      f"(best {training['best_epoch']}), device {training['device']}, torch {training['torch_version']}")
print(f"  {'phase':<18} {'wall s':>8}")
for name, seconds in phases:
    print(f"  {name:<18} {seconds:>8.1f}")
print(f"  {'total':<18} {sum(s for _, s in phases):>8.1f}")


def pct(value):
    return "n/a" if value is None else f"{value:.4f}"


print(f"  {'test split':<18} {'any-burn Dice':>13} {'mean depth Dice':>15} {'images':>6} {'cases':>5} backend")
for name, folder in (("fine-tuned", "val_tuned"), ("shipped", "val_shipped")):
    metrics = json.loads((out / folder / "metrics.json").read_text())
    per_class = metrics["pixel_pooled"]["per_class"]
    depth = [per_class[metrics["classes"][c]]["dice"] for c in metrics["burn_classes"]]
    depth = [d for d in depth if d is not None]  # mean over the depths present, as the card's figure
    print(f"  {name:<18} {pct(metrics['pixel_pooled']['any_burn']['dice']):>13} "
          f"{pct(sum(depth) / len(depth) if depth else None):>15} {metrics['dataset']['images_scored']:>6} "
          f"{metrics['dataset']['cases']:>5} {metrics['run']['backend']} {metrics['run']['precision']}")
test = card.get("test") or {}
print(f"  (the card's own test figure, torch on the CPU: any-burn Dice {pct(test.get('any_burn_dice'))} "
      f"{test.get('any_burn_dice_ci95')}, the initial model "
      f"{pct((card.get('test_of_the_initial_model') or {}).get('any_burn_dice'))})")
EOF
