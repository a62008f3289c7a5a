#!/usr/bin/env bash
# Set up (cached) and run the whole test suite offline: ./scripts/test.sh [pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The full stack by default; BEN2_WORKER_TEST_EXTRAS=test gives the slim suite (safety-stack
# tests then skip), e.g. on a Python without a CPU torch wheel at hand.
read -r -a extras <<< "${BEN2_WORKER_TEST_EXTRAS:-test full}"
VENV="$("$ROOT/scripts/bootstrap.sh" "${extras[@]}")"
cd "$ROOT"
# Tests never reach a model hub: every model they use is built by the tests themselves, and the
# download tests talk to a hub stand-in on loopback (so HF_HUB_OFFLINE must stay unset).
exec "$VENV/bin/python" -m pytest "$@"
