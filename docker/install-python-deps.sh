#!/bin/sh
# Install an image's Python dependencies (never the project's code) from pyproject.toml and
# requirements/lock.txt, so this layer only changes when the dependencies do.
#
#   install-python-deps.sh fetcher VENV              huggingface-hub + the CLI's deps + nudenet (model source)
#   install-python-deps.sh simple  VENV              core + worker extra, onnxruntime-gpu + CUDA 12 libraries
#   install-python-deps.sh full    VENV WHEELS_DIR   + transformers, torch, the CUDA llama-cpp-python wheel
#   install-python-deps.sh comfyui PACK_DIR [WHEELS_DIR]
#                                  into ComfyUI's venv ($COMFY_VENV, default /opt/venv): the node pack's
#                                  requirements.txt, our package's deps (ComfyUI keeps its torch),
#                                  onnxruntime-gpu, the CUDA llama-cpp-python wheel (the pack itself
#                                  imports the project from its own src/)
#
# Pins: the lock (minus its CPU-only torch and onnxruntime lines) plus docker/cuda12-pins.txt;
# for comfyui only the lock lines of OUR dependencies (the rest of ComfyUI's venv is left alone).
# onnxruntime and onnxruntime-gpu share one package folder, so a CPU onnxruntime that any
# dependency pulled in is removed and onnxruntime-gpu reinstalled over it.
#
# Environment: PYTHON (interpreter that creates VENV, default python3.12), TORCH_VARIANT (cpu [default]:
# the lock's CPU build from TORCH_CPU_INDEX | cuda: torch 2.10.0 from PyPI, CUDA 12.8), PIP (a pip command to use instead of "VENV/bin/python -m pip"; tests),
# SRC_ROOT (the folder holding pyproject.toml, default: this script's parent folder), SOURCE_MTIME
# (the mtime every venv file gets, default 2024-01-01T00:00:00Z).
set -eu

usage() {
    echo "usage: install-python-deps.sh fetcher|simple|full VENV [WHEELS_DIR] | comfyui PACK_DIR [WHEELS_DIR]" >&2
    exit 64
}
[ "$#" -ge 2 ] || usage
mode=$1
here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
root=${SRC_ROOT:-$(dirname -- "$here")}
python=${PYTHON:-python3.12}
torch_variant=${TORCH_VARIANT:-cpu}
torch_cpu_index=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
lock=$root/requirements/lock.txt
pins=$here/cuda12-pins.txt
deps() { "$python" "$here/pyproject-deps.py" "$root/pyproject.toml" "$@"; }

case $mode in
    fetcher | simple | full) venv=$2; wheels=${3:-} ;;
    comfyui) pack=$2; wheels=${3:-}; venv=${COMFY_VENV:-/opt/venv} ;;
    *) usage ;;
esac
case $torch_variant in
    cuda | cpu) ;;
    *) echo "install-python-deps: TORCH_VARIANT must be cuda or cpu, got '$torch_variant'" >&2; exit 64 ;;
esac
if [ "$mode" = full ] && [ -z "$wheels" ]; then
    echo "install-python-deps: full needs WHEELS_DIR with the CUDA llama-cpp-python wheel (docker/build-llama-wheel.sh)" >&2
    exit 64
fi
for f in "$lock" "$pins" "$root/pyproject.toml"; do
    [ -f "$f" ] || { echo "install-python-deps: missing $f" >&2; exit 66; }
done

if [ "$mode" != comfyui ] && [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
[ -x "$venv/bin/python" ] || { echo "install-python-deps: no Python at $venv/bin/python" >&2; exit 66; }
pip() {
    if [ -n "${PIP:-}" ]; then
        # shellcheck disable=SC2086  # PIP is a command line
        $PIP "$@"
    else
        "$venv/bin/python" -m pip "$@"
    fi
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pin_of() { grep -i -E "^$1==" "$pins" | head -n 1; }
ort_gpu=$(pin_of onnxruntime-gpu)
# The CUDA 12 libraries onnxruntime-gpu's CUDA provider links (cuDNN 9, cuBLAS, cuFFT, cuRAND,
# cudart, NVRTC); torch requires the same versions, so the full image keeps ONE copy.
ort_cuda_libs="nvidia-cuda-runtime-cu12 nvidia-cuda-nvrtc-cu12 nvidia-cublas-cu12 nvidia-cudnn-cu12 nvidia-cufft-cu12 nvidia-curand-cu12"

# --- constraints
if [ "$mode" = comfyui ]; then
    deps full --without torch --without onnxruntime --lock "$lock" \
        --also tokenizers,safetensors,hf-xet,pydantic-core > "$work/constraints.txt"
    echo "$ort_gpu" >> "$work/constraints.txt"
else
    grep -v -i -E '^(torch|onnxruntime)==' "$lock" > "$work/constraints.txt"
    if [ "$torch_variant" = cpu ]; then
        grep -v -i -E '^torch==' "$pins" >> "$work/constraints.txt"
        grep -i -E '^torch==' "$lock" >> "$work/constraints.txt"
    else
        cat "$pins" >> "$work/constraints.txt"
    fi
fi

set -- --no-compile --constraint "$work/constraints.txt"
[ -n "$wheels" ] && set -- "$@" --find-links "$wheels" --only-binary llama-cpp-python
[ "$torch_variant" = cpu ] && [ "$mode" = full ] && set -- "$@" --extra-index-url "$torch_cpu_index"

# --- requirements
case $mode in
    fetcher)
        printf '%s\n' huggingface-hub typer rich > "$work/requirements.txt"
        pip install "$@" --requirement "$work/requirements.txt"
        # Only its 320n.onnx is used (the store copies it out); its dependencies are not needed.
        pip install "$@" --no-deps nudenet
        ;;
    simple | full)
        extras=worker
        [ "$mode" = full ] && extras="worker full"
        # shellcheck disable=SC2086  # word splitting of the extras list is intended
        deps $extras --without onnxruntime --without nudenet > "$work/requirements.txt"
        echo onnxruntime-gpu >> "$work/requirements.txt"
        # shellcheck disable=SC2086  # one name a line
        printf '%s\n' $ort_cuda_libs >> "$work/requirements.txt"
        pip install "$@" --requirement "$work/requirements.txt"
        ;;
    comfyui)
        if [ -f "$pack/requirements.txt" ]; then
            pip install "$@" --requirement "$pack/requirements.txt"
        else
            echo "install-python-deps: note: $pack has no requirements.txt; installing the package's own dependencies only"
        fi
        deps full --without torch --without onnxruntime > "$work/requirements.txt"
        echo onnxruntime-gpu >> "$work/requirements.txt"
        pip install "$@" --requirement "$work/requirements.txt"
        ;;
esac

# --- one onnxruntime: the GPU build
if [ "$mode" != fetcher ]; then
    if pip show onnxruntime >/dev/null 2>&1; then
        echo "install-python-deps: removing the CPU onnxruntime a dependency pulled in (it shares a folder with onnxruntime-gpu)"
        pip uninstall --yes onnxruntime
        pip install --no-compile --force-reinstall --no-deps "$ort_gpu"
    fi
fi

# --- mode-specific finish
case $mode in
    full)
        # torch needs triton only for torch.compile (inductor); inference here never compiles. 670 MB.
        if [ "$torch_variant" = cuda ] && pip show triton >/dev/null 2>&1; then
            pip uninstall --yes triton
        fi
        ;;
esac

if [ "$mode" != comfyui ]; then
    # Byte-code once, at build time, with hashes instead of timestamps, and one fixed mtime for
    # every file: the same wheels give a byte-identical layer (nothing re-pushed after a rebuild
    # from a cold cache), and a non-root worker never tries to write __pycache__ at a cold start.
    "$venv/bin/python" -m compileall -q -j 0 --invalidation-mode unchecked-hash "$venv/lib" >/dev/null \
        || echo "install-python-deps: note: some files did not byte-compile (they are compiled on import)"
    find "$venv" -exec touch -h -d "@${SOURCE_MTIME:-1704067200}" {} +
fi
echo "install-python-deps: $mode done ($venv)"
