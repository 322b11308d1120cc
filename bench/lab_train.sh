#!/usr/bin/env bash
# GPU lab, one call: the GPU tests, then training the shipped model with domain randomisation.
# Run from the repo root on the lab machine after the recipe in ../shared/GPU-LAB.md, with the
# training photographs in .photos/ (`python3 -c "from holoburn.app.synthesis.photos import
# export_photos; export_photos('.photos')"` on a machine that has scikit-image and scikit-learn).
# Results under $OUT: pytest_gpu.txt, model/ (ONNX, state dict, card, log).
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out/model"
export HOLOBURN_PHOTOS=$PWD/.photos
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
[ "${GPU_TESTS_S:-120}" = 0 ] || timeout ${GPU_TESTS_S:-120} python3 -m pytest -q -m gpu -p no:cacheprovider 2>&1 | tail -40 > "$out/pytest_gpu.txt"
tail -3 "$out/pytest_gpu.txt"
timeout ${TRAIN_S:-420} python3 -m holoburn.app train --out "$out/model" --frames ${FRAMES:-20000} --seed 1 \
  --frames-per-scene ${PER_SCENE:-6} --epochs ${EPOCHS:-24} --batch-size 48 --lr 0.004 --input-size 256 --device cuda \
  --heldout-frames 450 --heldout-seed 1000001 --model-id ${MODEL_ID:-burn_unet_v2} \
  --max-train-minutes ${TRAIN_MINUTES:-4.5} 2>&1 | grep -v "^\[.*data: " | tail -60
