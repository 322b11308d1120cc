#!/usr/bin/env bash
# GPU lab, one call (issue 15): the GPU tests first; then the saturated lanes benchmark, RUNS times
# (default 3), each run side by side: emergency idle; the emergency lane beside 8 routine 1080p
# cameras at 240 fps in one process (lanes); the same with the routine cameras in worker processes
# under CUDA MPS (isolated); the plain peer (peer); each step in the config variants named
# (VARIANTS, app/benchmarks/lanes.py). Results under $OUT (saturated_<run>.json, logs; lanes_h200_saturated.json
# with every run, bench/saturated_summary.py).
# Run from the repo root on the lab machine after the recipe in ../shared/GPU-LAB.md.
# Env: RUNS ("1 2 3"), VARIANTS ("": the default config; e.g. ",_stages"), STEPS (idle,lanes,isolated,peer), SECONDS_PER_STEP (4),
# WARM (1.5), PROCESSES (2x60low: routine process sets, see --routine-processes), MPS (1: start the MPS control daemon for the runs),
# EXTRA_ARGS (more options of holoburn bench --lanes, e.g. "--routine-batch 4").
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
# the GPU tests first, each named (a crash names its test), without MPS
# (TESTS: which, e.g. "tests/test_peer_bench.py --runxfail"; default every GPU test)
[ "${GPU_TESTS:-1}" = 0 ] || (timeout "${TESTS_TIMEOUT:-80}" python3 -X faulthandler -m pytest -v -rxX -m gpu -p no:cacheprovider \
  ${TESTS:-} > "$out/pytest_gpu.txt" 2>&1; grep -E "PASSED|FAILED|ERROR|SKIPPED|XPASS|XFAIL|passed|failed|Fatal" "$out/pytest_gpu.txt" | head -30)
started_mps=0
if [ "${MPS:-1}" = 1 ] && command -v nvidia-cuda-mps-control >/dev/null; then
  if nvidia-cuda-mps-control -d; then started_mps=1; echo "MPS control daemon started"; fi
fi
for run in ${RUNS:-1 2 3}; do
  (cd /tmp && timeout "${RUN_TIMEOUT:-170}" python3 -m holoburn.app bench --lanes --device cuda \
     --steps "${STEPS:-idle,lanes,isolated,peer}" --variants "${VARIANTS:-}" \
     --routine-streams 8 --routine-fps 240 --seconds "${SECONDS_PER_STEP:-4}" --warm "${WARM:-1.5}" \
     --routine-processes "${PROCESSES:-2x60low}" ${EXTRA_ARGS:-} \
     --out "$out" --name "saturated_$run.json") > "$out/saturated_$run.log" 2>&1
  echo "run $run rc $?"
  grep -E "^   |errors" "$out/saturated_$run.log" | tail -20
done
if [ $started_mps = 1 ]; then echo quit | nvidia-cuda-mps-control; echo "MPS control daemon stopped"; fi
# every run in one file: figures per run, their spread, the goals judged on the worst run
python3 bench/saturated_summary.py "$out"/saturated_[0-9].json --out "$out/lanes_h200_saturated.json" | tail -12
# the lab returns only a few files: each run's results, logs and worker folders go back packed (runs.tgz)
(cd "$out" && tar czf runs.tgz saturated_* && rm -rf saturated_*)
