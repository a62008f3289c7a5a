#!/usr/bin/env bash
# Set up (cached), fetch the BEN2 model if it is missing, and cut out the bundled sample photos.
#   ./scripts/demo.sh            outputs in ./out/demo, timings printed
# Models come from $BEN2_WORKER_MODELS (default ./models).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$("$ROOT/scripts/bootstrap.sh")"
cd "$ROOT"
BW="$VENV/bin/ben2-worker"
MODEL="${BEN2_WORKER_MODELS:-models}/ben2_onnx/BEN2_Base.onnx"
if [ ! -f "$MODEL" ]; then
    echo "demo: $MODEL is missing; downloading it" >&2
    "$BW" models download ben2
fi
# remove checks the file against its pinned sha256 (a stand-in needs BEN2_WORKER_ALLOW_CUSTOM_MODELS=1).
exec "$BW" remove samples -o out/demo --overwrite "$@"
