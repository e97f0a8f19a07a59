#!/usr/bin/env bash
# Every GPU figure of docs/benchmarks.md in one run (< 8 minutes on one H100/H200): FT images/s with AMP vs
# fp32, FE images/s vs a bare forward, the QUANTA step ratio, and four FT points packed on one GPU with
# --gpus-per-run 0.25 vs one after another. Each part has its own time limit, so one slow part cannot take
# the others' time; the output goes to stdout and $OUT/gpu.txt when $OUT is set.
#   bench/gpu.sh            # on the GPU machine, from the repository root
#   bench/gpu.sh --small    # on a CPU: checks that every part runs (tiny sizes), no figure worth quoting
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DEVICE=cuda
SMALL=()
if [ "${1:-}" = "--small" ]; then DEVICE=cpu; SMALL=(--small); fi
LOG=${OUT:-/tmp}/gpu.txt
: > "$LOG"

part() {  # part SECONDS TITLE COMMAND...
  local limit=$1 title=$2; shift 2
  echo "== $title" | tee -a "$LOG"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | grep -v -E "INFO|WARNING|Token authentication" | tee -a "$LOG"
  echo "   ($((SECONDS - t0)) s, exit ${PIPESTATUS[0]})" | tee -a "$LOG"
}

"$PY" - <<'EOF' | tee -a "$LOG"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
EOF
if [ ${#SMALL[@]} -eq 0 ]; then
  part 120 "FT images/s, AMP vs fp32 (224 px)" "$PY" bench/gpu.py amp --device "$DEVICE" --repeats 2
  part 100 "FE pipeline vs bare forward (224 px)" "$PY" bench/feature_extraction.py throughput --device "$DEVICE" \
    --resolution 224 --images 2048 --batch-size 128 --repeats 3
  part 60 "QUANTA step vs plain step (efficientnet_lite0, 224 px)" "$PY" bench/quanta_step.py --device "$DEVICE" \
    --architecture efficientnet_lite0 --resolution 224 --batch 64 --reps 10
  part 150 "4 FT points packed on one GPU (0.25 each) vs one after another" "$PY" bench/gpu.py pack \
    --device "$DEVICE" --repeats 2
else
  part 300 "FT AMP vs fp32 (check)" "$PY" bench/gpu.py amp --device cpu --small
  part 300 "FE pipeline (check)" "$PY" bench/feature_extraction.py throughput --device cpu --resolution 32 \
    --images 128 --repeats 1
  part 300 "QUANTA step (check)" "$PY" bench/quanta_step.py --device cpu --reps 2 --warmup 1
  part 300 "packing (check)" "$PY" bench/gpu.py pack --device cpu --small
fi
