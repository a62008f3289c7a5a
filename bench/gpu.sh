#!/usr/bin/env bash
# GPU benchmark for a machine with an NVIDIA GPU and no network (see bench/gpu_bench.py).
#
#   bash bench/gpu.sh [OUT_DIR] [--tiny] [--budget-s 420] [--runs 20]
#
# Needs only what is already installed there: python3 with numpy, opencv, pillow and
# onnxruntime (CPU or GPU build); torch (CPU is enough) and onnx to build the stand-in; torch
# with CUDA for the proxy when onnxruntime has no GPU provider. Nothing is downloaded. The whole
# run stays within 8 minutes: the Python side stops starting measurements at --budget-s, and
# this wrapper kills it at 470 s, writing what it has. Writes OUT_DIR/gpu-table.md and
# gpu-bench.json (OUT_DIR defaults to $OUT, else bench/results/gpu).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
out="${OUT:-$root/bench/results/gpu}"
if [[ $# -gt 0 && "$1" != --* ]]; then
  out="$1"
  shift
fi
mkdir -p "$out"
py="${PYTHON:-$(command -v python3 || command -v python)}"
echo "gpu.sh: python $py, output $out" >&2
nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || echo "nvidia-smi: not available" >"$out/nvidia-smi.txt"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
export BEN2_WORKER_BENCH_CACHE="${BEN2_WORKER_BENCH_CACHE:-$out/standins}"
status=0
timeout --signal=TERM --kill-after=10 470 "$py" "$here/gpu_bench.py" --out "$out" "$@" | tee "$out/gpu-bench.log" || status=$?
if [[ ! -s "$out/gpu-table.md" ]]; then
  echo "# GPU benchmark (bench/gpu.sh)" >"$out/gpu-table.md"
  echo "" >>"$out/gpu-table.md"
  echo "NOT COMPLETED: gpu_bench.py exited with status $status before writing its table; see gpu-bench.log." >>"$out/gpu-table.md"
fi
exit "$status"
