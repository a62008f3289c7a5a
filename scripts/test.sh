#!/usr/bin/env bash
# Set up (cached) and run the whole test suite offline: ./scripts/test.sh [pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The full stack by default; BEN2_WORKER_TEST_EXTRAS=test gives the slim suite (safety-stack
# tests then skip), e.g. on a Python without a CPU torch wheel at hand.
read -r -a extras <<< "${BEN2_WORKER_TEST_EXTRAS:-test full}"
VENV="$("$ROOT/scripts/bootstrap.sh" "${extras[@]}")"
cd "$ROOT"
# The playground's browser tests drive Debian's chromium (tests/test_playground.py). Installed
# here only where we can (root with apt-get); under CI a missing browser is an error.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    echo "installing Debian's chromium for the browser tests" >&2
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
           DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-liberation > /dev/null; }; then
      echo "error: could not install chromium (apt-get)" >&2
      if [ "${CI:-}" = true ]; then exit 1; fi
    fi
  elif [ "${CI:-}" = true ] && [ -z "${BEN2_TEST_SKIP_BROWSER:-}" ]; then
    echo "error: /usr/bin/chromium is missing and cannot be installed here (not root, or no apt-get)" >&2
    exit 1
  fi
fi
# Tests never reach a model hub: every model they use is built by the tests themselves, and the
# download tests talk to a hub stand-in on loopback (so HF_HUB_OFFLINE must stay unset).
exec "$VENV/bin/python" -m pytest "$@"
