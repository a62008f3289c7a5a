#!/usr/bin/env bash
# Create (once) and print the path of a virtualenv for this checkout.
#
#   scripts/bootstrap.sh [EXTRA ...]      e.g. scripts/bootstrap.sh test
#
# The venv lives outside the clone, keyed by the lock file, the extras and the Python
# version, so CI and fresh clones reuse it; pip's wheel cache sits beside it. The project itself
# is (re)installed editable on every call, which is cheap and keeps a shared venv pointing at
# the clone that is running now.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
CACHE="${BEN2_WORKER_CACHE:-$HOME/.cache/ben2-worker}"
LOCK="$ROOT/requirements/lock.txt"
EXTRAS="$(IFS=,; echo "$*")"

pyver="$("$PY" -c 'import sys; print("py%d%d" % sys.version_info[:2])')"
key="$( (cat "$LOCK"; grep -v '^version' "$ROOT/pyproject.toml"; echo "$EXTRAS") | sha256sum | cut -c1-16)"
VENV="$CACHE/venv-$pyver-$key"
export PIP_CACHE_DIR="$CACHE/pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1

# pip -q still prints one warning per unusable index location some machines configure.
quiet_pip() { "$VENV/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2) >&2; }

# llama-cpp-python ships no wheels on PyPI: compile it once (~5-7 min on 2 cores) into a wheel
# cached beside the venvs, so new venvs (and CI runs) install it in seconds.
WHEELS="$CACHE/wheels"
ensure_llama_wheel() {
    local version
    version="$(sed -n 's/^llama[-_]cpp[-_]python==\(.*\)$/\1/p' "$LOCK")"
    [ -n "$version" ] || { echo "bootstrap: llama-cpp-python is not pinned in $LOCK" >&2; exit 1; }
    if ! ls "$WHEELS"/llama_cpp_python-"$version"-*.whl >/dev/null 2>&1; then
        echo "bootstrap: compiling llama-cpp-python $version (CPU, portable) into $WHEELS; this takes minutes once" >&2
        mkdir -p "$WHEELS"
        CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" "$PY" -m pip wheel -q --no-deps "llama-cpp-python==$version" -w "$WHEELS" \
            2> >(grep -v "is ignored: it is neither a file nor a directory" >&2) >&2
    fi
}

if [ ! -f "$VENV/.complete" ]; then
    echo "bootstrap: creating $VENV (extras: ${EXTRAS:-none})" >&2
    rm -rf "$VENV"
    mkdir -p "$CACHE"
    "$PY" -m venv "$VENV"
    quiet_pip install -q --upgrade "pip>=24"
    spec="$ROOT"
    [ -n "$EXTRAS" ] && spec="$ROOT[$EXTRAS]"
    # The lock pins every transitive version; -c applies it without installing unused pins.
    case ",$EXTRAS," in *,full,*) ensure_llama_wheel ;; esac
    # /opt/wheels (where present) holds the CPU build of torch; the lock pins that build.
    links=(--find-links "$WHEELS")
    [ -d /opt/wheels ] && links+=(--find-links /opt/wheels)
    quiet_pip install -q -c "$LOCK" "${links[@]}" "$spec"
    touch "$VENV/.complete"
fi
quiet_pip install -q --no-deps -e "$ROOT"
echo "$VENV"
