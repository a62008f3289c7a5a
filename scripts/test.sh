#!/usr/bin/env bash
# Set up (cached) and run the whole test suite offline: ./scripts/test.sh [pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$("$ROOT/scripts/bootstrap.sh" test full)"
cd "$ROOT"
# Tests never reach a model hub: every model they use is built by the tests themselves.
export HF_HUB_OFFLINE=1
exec "$VENV/bin/python" -m pytest "$@"
