#!/usr/bin/env bash
# Set up (cached, with rembg) and run the cut-out benchmark: ./scripts/bench.sh [bench args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$("$ROOT/scripts/bootstrap.sh" bench)"
cd "$ROOT"
"$VENV/bin/python" bench/bench_cutout.py "$@"
