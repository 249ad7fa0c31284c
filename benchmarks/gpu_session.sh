#!/usr/bin/env bash
# The GPU figures that benchmarks/RESULTS.md still lacks, in as few device calls as possible.
#
# A session that has a GPU machine (the `device` tool; 30 minutes of device time, 10 per call)
# first fetches the wheels the machine's image lacks, here:
#
#     bash benchmarks/gpu_session.sh fetch            # -> .whl/ (git-ignored through .git/info/exclude)
#
# then runs steps there, each call well inside 10 minutes, with `.whl` carried:
#
#     ROTOREC_COMMIT=<git rev-parse --short HEAD here> bash benchmarks/gpu_session.sh run tests scan model
#     ROTOREC_COMMIT=<same> bash benchmarks/gpu_session.sh run training service
#
# (the copy on the device may have no .git, so the benchmarks' JSON takes the commit from
# ROTOREC_COMMIT).
#
# Steps: tests (kernel, mixer and model tests compiled on the GPU), scan (bench_scan.py at the
# GPU shapes of docs/mixers.md, "Scan benchmarks"), model (bench_model.py), training
# (bench_training.py), service (trains a small run, then bench_service.py against it). Every
# JSON and log lands in $OUT (or benchmarks/out).
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=.whl
# What the GPU machine's image lacks (from the device tool's package list), at the versions our CI environment resolved
# (2026-11-23).
MISSING=(fastapi==0.165.0 annotated-doc==0.0.7 starlette==1.10.0 pydantic==2.14.3 pydantic_core==2.50.4
         annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0 uvicorn==0.54.0 orjson==3.13.0
         tzdata==2026.6)

fetch() {
  grep -qx "/$WHEELS/" .git/info/exclude 2>/dev/null || echo "/$WHEELS/" >> .git/info/exclude
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WHEELS" "${MISSING[@]}"
  python3 -m pip wheel --quiet --no-deps -w "$WHEELS" .  # rotorec itself: its packages exist only once installed
  ls "$WHEELS"
}

run_step() {
  local out=$1 step=$2
  case "$step" in
    tests) python3 -m pytest -q -p no:cacheprovider tests/test_scan.py tests/test_mixers.py tests/test_model.py ;;
    scan) python3 benchmarks/bench_scan.py --device cuda --json "$out/scan_gpu.json" ;;
    model) python3 benchmarks/bench_model.py --device cuda --json "$out/model_gpu.json" ;;
    training) python3 benchmarks/bench_training.py --json "$out/training_gpu.json" ;;
    service)  # chained with &&: `set -e` is off inside a function called left of `||`
      local work=/tmp/rotorec-service
      rm -rf "$work" &&
        python3 -m rotorec --log-level WARNING synth --out "$work/synth" --preset small --seed 0 --users 1000 &&
        python3 -m rotorec --log-level WARNING prepare --input "$work/synth" --out "$work/prepared" --max-len 100 \
          --windows all &&
        python3 -m rotorec --log-level WARNING train --data "$work/prepared" --config configs/tiny.yaml --out "$work/run" &&
        python3 benchmarks/bench_service.py --run "$work/run" --json "$out/service_gpu.json" ;;
    *) echo "unknown step '$step' (tests, scan, model, training, service)" >&2; return 2 ;;
  esac
}

run() {
  # No default: one call brings back at most 8 files, and each step writes a log (+ a JSON).
  [ $# -gt 0 ] || { echo "name the steps, e.g. 'run tests scan model', then 'run training service'" >&2; return 2; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
  # Only the installed rotorec holds rotorec.model and the other packages, so the checkout's rotorec/ folder must
  # not shadow it: PYTHONSAFEPATH (inherited by every subprocess) keeps the working directory and the script's
  # folder off sys.path, and benchmarks/ is named instead, for the scripts' helpers beside them.
  export PYTHONPATH="/tmp/site:$PWD/benchmarks" PYTHONSAFEPATH=1 PYTHONUNBUFFERED=1
  local out=${OUT:-benchmarks/out}
  mkdir -p "$out"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/device.txt"
  local step status=0
  for step in "$@"; do
    echo "== $step"
    run_step "$out" "$step" 2>&1 | tee "$out/$step.log" || status=1
  done
  return "$status"
}

case "${1:-}" in
  fetch) fetch ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 fetch | run STEP... (tests, scan, model, training, service)" >&2; exit 2 ;;
esac
