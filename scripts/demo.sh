#!/usr/bin/env bash
# Set up (cached), fetch the BEN2 model if it is missing, and cut out the bundled sample photos.
#   ./scripts/demo.sh            outputs in ./out/demo, timings printed
# Models come from $BEN2_WORKER_MODELS (default ./models).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$("$ROOT/scripts/bootstrap.sh")"
cd "$ROOT"
BW="$VENV/bin/ben2-worker"
if ! "$BW" models verify ben2 >/dev/null 2>&1; then
    echo "demo: BEN2 model not present in ${BEN2_WORKER_MODELS:-./models}; downloading it" >&2
    "$BW" models download ben2
fi
exec "$BW" remove samples -o out/demo --overwrite "$@"
